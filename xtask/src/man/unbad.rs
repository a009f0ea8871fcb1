//! The hand-written part of mm-unbad(1), from `crates/mm-unbad/src/lib.rs` and
//! `mm_core::unbad`.

use super::common::ALL_ENV;
use super::{Block::Text, Page};

pub const PAGE: Page = Page {
    description: &[Text(
        "`mm-unbad` returns quarantined entries to work once the cause is fixed. It takes the \
         preserved entries (*ID.psv*) of `bad`, or of the queue named by `--from` (usually \
         `shunt`), given by their ids or, with `--all`, every one of them; the selection \
         flags (`--sender`, `--rcpt`, `--domain`, `--list`, `--older-than`, `--younger-than`, \
         `--error`, `--slice`) narrow either, with the same meaning as in `mm-showq`.

         Each entry is claimed like any other, so two runs cannot both act on it. Its recovery \
         count is reset, its quarantine record cleared and a history line added, and it goes \
         back, queued and due now, to the queue it came from (or to `--to`). Its \
         per-recipient progress and its history stay, so delivery resumes where it stopped. \
         An entry that was kept because it could not be decoded gives back its original bytes \
         exactly, for a newer mm or a fixed decoder.

         Each entry is one line, `RESULT ID QUEUE (DETAIL)`, with `RESULT` one of `released`, \
         `busy`, `not-found`, `skipped` and `failed`. `--dry-run` only reports.",
    )],
    examples: mm_unbad::EXAMPLES,
    exit: mm_unbad::EXIT_STATUS,
    files: "`mm-unbad` registers itself in *.runners* while it runs, claims *QUEUE/BB/ID.psv* \
            by renaming it to *ID.TOKEN.bak*, and renames it into the destination queue as \
            *ID.pck*.",
    environment: ALL_ENV,
    security: "`mm-unbad` runs as the runner's user: it renames and rewrites entries. Ids are \
               validated before use, so only entries of the quarantine queue can be named.",
    see_also: &[("sysexits", "3")],
};
