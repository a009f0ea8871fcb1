//! The hand-written part of mm-showq(1), from `crates/mm-showq/src/lib.rs` and
//! `mm_core::report`.

use super::common::ALL_ENV;
use super::{
    Block::{Item, Text},
    Page,
};

pub const PAGE: Page = Page {
    description: &[
        Text(
            "`mm-showq` shows what is in the queues. Without arguments it prints one line per \
             queue: how many entries are queued (due now), deferred, claimed, preserved and \
             being written, the age of the oldest, and the bytes used. The summary comes from \
             file names alone, no entry is opened, so it is fast at any backlog.

             With queue names it lists those queues entry by entry, oldest first: id, state, \
             age, size, attempts, when the next attempt is due, sender, first recipient (and \
             how many more), the runner holding a claimed entry (or that it is dead), and the \
             last error.

             The selection flags choose entries the same way in `mm-showq`, `mm-recover` and \
             `mm-unbad`; they combine with AND. `--state`, `--older-than`, `--younger-than` and \
             `--slice` are answered from the names alone; `--sender`, `--rcpt`, `--domain`, \
             `--list` and `--error` read each candidate entry. `--by domain|error|age` prints \
             the shape of the queues instead (what Postfix's qshape does, plus grouping by the \
             reason deliveries fail): entries and pending recipients per recipient domain, per \
             last error or quarantine reason, or per age bucket (5, 10, 20 … 1280 minutes).

             It is read-only: it never claims, renames or writes anything, and it is safe to \
             run while runners run. An entry that moves while it is being listed is skipped. \
             The states are:",
        ),
        Item("queued", "Due now (*ID.pck*)."),
        Item("deferred", "Waiting for its next attempt (*ID.DUE.pck*)."),
        Item("claimed", "Held by a runner (*ID.TOKEN.bak*)."),
        Item(
            "preserved",
            "Quarantined in `bad` or `shunt` (*ID.psv*); see *mm-unbad*(1).",
        ),
        Item("writing", "Being written (*ID.tmp*)."),
    ],
    examples: mm_showq::EXAMPLES,
    exit: mm_showq::EXIT_STATUS,
    files: "`mm-showq` lists the queue directories and, for a per-entry listing, reads each \
            entry and the runner records in *.runners*, all read-only.",
    environment: ALL_ENV,
    security: "`mm-showq` needs read access only, so any member of the spool's group can \
               run it; it opens nothing for writing.",
    see_also: &[("jq", "1")],
};
