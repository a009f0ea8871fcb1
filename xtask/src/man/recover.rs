//! The hand-written part of mm-recover(1), from `crates/mm-recover/src/lib.rs`
//! and `mm_core::recover`.

use super::common::ALL_ENV;
use super::{
    Block::{Item, Text},
    Page,
};

pub const PAGE: Page = Page {
    description: &[
        Text(
            "`mm-recover` takes back the entries whose runner died. For each claimed entry \
             (*ID.TOKEN.bak*) of the queues named with `-q` (every queue by default), within \
             `--slice`:",
        ),
        Item(
            "the holder is alive",
            "The entry is reported `busy` and left alone. So `mm-recover` is safe at any \
             time, by cron or by hand, while runners run.",
        ),
        Item(
            "the holder is dead",
            "The entry is taken over by a rename, so two recoveries cannot both take it; its \
             recovery count is raised, a history line added, and it is put back as queued \
             with its per-recipient progress. Once it has been recovered more than \
             `--max-recoveries` times it goes to `bad` instead, with the reason \"crashed its \
             runner N times\": a message that kills its runner must not stop the queue.",
        ),
        Text(
            "A holder on this host is dead when the *flock*(2) on its record in *.runners* can \
             be taken; one on another host, when its lease (`--lease`) has run out.

             It also removes *ID.tmp* files older than `--tmp-age`, which `mm-enqueue` never \
             acknowledged, and the *ID.TOKEN.tmp* files of dead runners. Files that are not \
             entries are reported as `foreign` and left alone.

             Each action is one line, `ACTION QUEUE ID PATH (DETAIL)`, with `ACTION` one of \
             `recovered`, `quarantined`, `busy`, `removed-tmp`, `foreign` and `failed`; a line \
             of counts follows. `--dry-run` only reports. `mm-runq` does the same for its own \
             queue and slice when it starts.",
        ),
    ],
    examples: mm_recover::EXAMPLES,
    exit: mm_recover::EXIT_STATUS,
    files: "`mm-recover` registers itself in *.runners* while it runs (it takes entries over in \
            its own name), renames claimed entries back to *ID.pck* or into *bad*, and removes \
            stale *.tmp* files.",
    environment: ALL_ENV,
    security: "`mm-recover` runs as the runner's user: it renames and rewrites entries. It \
               never touches an entry whose holder is alive.",
    see_also: &[("flock", "2"), ("sysexits", "3")],
};
