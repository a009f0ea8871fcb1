//! The hand-written part of mm-delete(1), from `crates/mm-delete/src/lib.rs`,
//! `mm_core::delete`, `mm_core::bounce` and `mm_core::admin`.

use super::common::admin_page;
use super::{Block::Text, Example, Page};

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
    &[
        Example {
            what: "Keep a copy, then remove one entry:",
            lines: &[
                "mm-dumpdb --raw 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089 > /root/copy.eml",
                "mm-delete 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089",
            ],
        },
        Example {
            what: "What removing a spammer's mail would do:",
            lines: &["mm-delete --all --sender spammer@example.com --dry-run"],
        },
        Example {
            what: "Give up on mail for a dead domain, telling the senders:",
            lines: &["mm-delete --bounce --all --domain gone.example"],
        },
        Example {
            what: "Quarantined entries more than a month old:",
            lines: &["mm-delete -q bad --all --older-than 30d"],
        },
    ],
    "`mm-delete` registers itself in *.runners* while it runs, claims the entry by renaming \
     it to *QUEUE/BB/ID.TOKEN.bak* and removes it; with `--bounce` it first writes \
     *bounces/BB/NEWID.pck*.",
    &[("postsuper", "1"), ("sysexits", "3")],
);
