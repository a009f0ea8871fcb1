//! The hand-written part of mm-dumpdb(1), from `crates/mm-dumpdb/src/lib.rs`.

use super::common::ALL_ENV;
use super::{Block::Text, Page};

pub const PAGE: Page = Page {
    description: &[Text(
        "`mm-dumpdb` prints entries whole: the envelope; the metadata (queue, state, format \
         version, attempts, next attempt, recoveries, stage, last error, history, the runner \
         holding it or its quarantine record, and for a bounce record the entry it comes \
         from); each recipient with its state, attempts and last reply; then the message.

         An entry is named by its id, looked up in every queue and every state (*.tmp* \
         included), or by the path of its file. `--raw` prints the message alone, byte for \
         byte as received, and `--json` one JSON object per entry.

         The file is only ever read, never renamed, locked or written, so `mm-dumpdb` is safe \
         on an entry a runner holds. A file that cannot be decoded is an error naming the \
         file.",
    )],
    examples: mm_dumpdb::EXAMPLES,
    exit: mm_dumpdb::EXIT_STATUS,
    files: "`mm-dumpdb` reads entry files and the runner records in *.runners*, read-only.",
    environment: ALL_ENV,
    security: "`mm-dumpdb` needs read access only. Given a path rather than an id, it reads \
               that file with the caller's own rights (without following a symbolic link), \
               so it shows nothing the caller could not read anyway.",
    see_also: &[("formail", "1"), ("jq", "1")],
};
