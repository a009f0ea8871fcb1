//! The hand-written part of mm-delete(1), from `crates/mm-delete/src/lib.rs`,
//! `mm_core::delete`, `mm_core::bounce` and `mm_core::admin`.

use super::common::admin_page;
use super::{Block::Text, Page};

pub const PAGE: Page = admin_page(
    &[Text(
        "`mm-delete` removes entries, as `postsuper -d` and `exim -Mrm` do, or with \
         `--bounce` gives up on them, as `exim -Mg` does. It takes the queued, deferred, held \
         and quarantined entries of one queue (`-q`, default `out`; `bad` and `shunt` too) \
         given by their ids or, with `--all` (which must be spelled out), every one the \
         selection flags (`--sender`, `--rcpt`, `--domain`, `--list`, `--older-than`, \
         `--younger-than`, `--error`, `--slice`) select, in buckets and in the queue's top \
         directory alike.

         Each entry is claimed by one rename before it is removed, so a runner that holds it \
         is never raced: a claim whose holder is alive is refused (`busy`). Since the entry \
         and its history go, its line is the record: `deleted ID QUEUE (from=<S> to=<A>,<B> \
         by USER)`.

         With `--bounce`, the pending recipients fail with the reply `given up by mm-delete \
         (USER); last reply: …`, one bounce record for them is published in `bounces` (the \
         runner's own record, with the reason `given up`; its id is in the line), and then \
         the entry is removed. Recipients already delivered or already bounced get nothing \
         more.

         `RESULT` is one of `deleted` (`bounced` with `--bounce`), `busy`, `not-found`, \
         `skipped` and `failed` (`--json`: one object per line). `--dry-run` only reports.",
    )],
    mm_delete::EXAMPLES,
    mm_delete::EXIT_STATUS,
    "`mm-delete` registers itself in *.runners* while it runs, claims the entry by renaming \
     it to *QUEUE/BB/ID.TOKEN.bak* and removes it; with `--bounce` it first writes \
     *bounces/BB/NEWID.pck*.",
    &[("postsuper", "1"), ("sysexits", "3")],
);
