//! The hand-written parts of mm-hold(1) and mm-release(1), from
//! `crates/mm-hold/src/lib.rs`, `crates/mm-release/src/lib.rs`,
//! `mm_core::hold` and `mm_core::admin`.

use super::common::admin_page;
use super::{Block::Text, Page};

pub const HOLD: Page = admin_page(
    &[Text(
        "`mm-hold` holds entries, as `postsuper -h` puts mail on hold and `exim -Mf` \
         freezes it. It takes the queued or deferred entries of one queue (`-q`, default \
         `out`) given by their ids or, with `--all` (which must be spelled out), every one \
         the selection flags (`--sender`, `--rcpt`, `--domain`, `--list`, `--older-than`, \
         `--younger-than`, `--error`, `--slice`) select, in buckets and in the queue's top \
         directory alike.

         A held entry is *ID.hld* in its bucket. Every runner skips it from its name alone, \
         without opening it; its attempts are not counted and it does not expire while held \
         (`mm-release` moves its give-up clock forward by the time it was held). Who held it, \
         when and why (`--reason`) are kept in the entry and shown by `mm-showq` (state \
         `held`, the reason as its error) and `mm-dumpdb` (`held:`), and the history has a \
         line for it. Versions of mm before holds see *ID.hld* as a foreign file, which they \
         never open, move or remove.

         With `--for DUR` the hold ends by itself: the entry is *ID.UNTIL.hld*, and when \
         `UNTIL` comes a runner takes it from its name and delivers it. Each entry's `UNTIL` \
         is the end plus its own share of `--spread` (default 10 minutes), so the mail comes \
         back spread out rather than all at once. With `--all --domain D --for DUR` it also \
         writes a hold rule, *$SPOOL/.holds/D*, durably: until it ends, every runner that \
         claims an entry with a pending recipient at `D` holds it the same way instead of \
         trying it, so no attempt is counted. `mm-release --all --domain D` ends the rule.

         Each entry is claimed by one rename first, so a runner and `mm-hold` never both act \
         on it; a claim whose holder is alive is never touched (`busy`): hold it once its \
         runner put it back. Each entry is one line, `RESULT ID QUEUE (DETAIL)`, with \
         `RESULT` one of `held`, `busy`, `not-found`, `skipped` and `failed` (`--json`: one \
         object per line). `--dry-run` only reports.",
    )],
    mm_hold::EXAMPLES,
    mm_hold::EXIT_STATUS,
    "`mm-hold` registers itself in *.runners* while it runs, claims \
            *QUEUE/BB/ID[.DUE].pck* (or the same in *QUEUE/*) by renaming it to \
            *QUEUE/BB/ID.TOKEN.bak*, rewrites it and renames it to *QUEUE/BB/ID.hld*.",
    &[("postsuper", "1"), ("sysexits", "3")],
);

pub const RELEASE: Page = admin_page(
    &[Text(
        "`mm-release` puts held entries (*ID.hld*, see `mm-hold`) back to work, as \
         `postsuper -H` releases mail from hold and `exim -Mt` thaws it. It takes the held \
         entries of one queue (`-q`, default `out`) given by their ids or, with `--all` \
         (which must be spelled out), every held one the selection flags select.

         Each entry is claimed by one rename, its hold cleared, its give-up clock moved \
         forward by the time it was held (holding never makes mail expire), a history line \
         added, and it goes back to its bucket as *ID.pck*, due now, with its per-recipient \
         progress. Each entry is one line, `RESULT ID QUEUE (DETAIL)`, with `RESULT` one of \
         `released`, `busy`, `not-found`, `skipped` and `failed`. `--dry-run` only reports.",
    )],
    mm_release::EXAMPLES,
    mm_release::EXIT_STATUS,
    "`mm-release` registers itself in *.runners* while it runs, claims \
            *QUEUE/BB/ID.hld* by renaming it to *QUEUE/BB/ID.TOKEN.bak*, rewrites it and \
            renames it to *QUEUE/BB/ID.pck*.",
    &[("postsuper", "1"), ("sysexits", "3")],
);
