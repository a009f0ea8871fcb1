//! The hand-written part of mm-dumpdb(1), from `crates/mm-dumpdb/src/lib.rs`.

use super::common::{ALL_ENV, SOFTWARE, USAGE};
use super::{Block::Text, Example, Page};

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
    examples: &[
        Example {
            what: "An entry by its id, wherever it is:",
            lines: &["mm-dumpdb 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089"],
        },
        Example {
            what: "A file, for instance one in `bad`:",
            lines: &[
                "mm-dumpdb /var/spool/mm/bad/e4/\\",
                "1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089.psv",
            ],
        },
        Example {
            what: "The exact message bytes, to another tool:",
            lines: &["mm-dumpdb --raw ID | formail -X Subject:"],
        },
        Example {
            what: "The recipients and their outcomes, as JSON:",
            lines: &["mm-dumpdb --json ID | jq .recipients"],
        },
        Example {
            what: "Every entry of `out` that waits for a retry:",
            lines: &[
                "mm-showq --json out | jq -r 'select(.state==\"deferred\") | .id' |",
                "    xargs mm-dumpdb",
            ],
        },
    ],
    exit: &[
        (0, "Shown."),
        (64, USAGE),
        (
            65,
            "The file is corrupt, is a symbolic link, or is not a regular file.",
        ),
        (66, "No entry has this id, or no file has this path."),
        (70, SOFTWARE),
        (75, "The spool is missing (not mounted), or a read failed."),
        (77, "Permission denied."),
        (78, "`--spool` is not a directory."),
    ],
    files: "`mm-dumpdb` reads entry files and the runner records in *.runners*, read-only.",
    environment: ALL_ENV,
    security: "`mm-dumpdb` needs read access only. Given a path rather than an id, it reads \
               that file with the caller's own rights (without following a symbolic link), \
               so it shows nothing the caller could not read anyway.",
    see_also: &[("formail", "1"), ("jq", "1")],
};
