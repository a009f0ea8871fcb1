//! The hand-written part of mm-flush(1), from `crates/mm-flush/src/lib.rs`,
//! `mm_core::flush` and `mm_core::admin`.

use super::common::admin_page;
use super::{Block::Text, Page};

pub const PAGE: Page = admin_page(
    &[Text(
        "`mm-flush` makes deferred entries (*ID.DUE.pck* with `DUE` in the future) due now, \
         as `postqueue -f`, `postqueue -s` and `postqueue -i` or `exim -qff` and `exim -M` do. \
         It takes the entries of one queue (`-q`, default `out`) given by their ids or, with \
         `--all` (which must be spelled out), every deferred one; the selection flags \
         (`--sender`, `--rcpt`, `--domain`, `--list`, `--older-than`, `--younger-than`, \
         `--error`, `--slice`) narrow either, with the same meaning as in `mm-showq`. Entries \
         are found wherever the layout keeps them: in their buckets and in the queue's top \
         directory, where an admin's `mv` puts them.

         Each entry is claimed like a runner claims it, by one rename, so a runner and \
         `mm-flush` never both act on it; a claim whose holder is alive is never touched \
         (`busy`). The entry's next-attempt time is cleared, a history line names who flushed \
         it, and it goes back to its bucket as *ID.pck*, due now, with its per-recipient \
         progress: the next pass of any runner takes it.

         Each entry is one line, `RESULT ID QUEUE (DETAIL)`, with `RESULT` one of `flushed`, \
         `busy`, `not-found`, `skipped` and `failed` (`--json`: one object per line). \
         `--dry-run` only reports, each line starting with `would be`.",
    )],
    mm_flush::EXAMPLES,
    mm_flush::EXIT_STATUS,
    "`mm-flush` registers itself in *.runners* while it runs, claims \
            *QUEUE/BB/ID.DUE.pck* (or *QUEUE/ID.DUE.pck*) by renaming it to \
            *QUEUE/BB/ID.TOKEN.bak*, rewrites it and renames it to *QUEUE/BB/ID.pck*.",
    &[("postqueue", "1"), ("sysexits", "3")],
);
