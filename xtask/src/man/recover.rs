//! The hand-written part of mm-recover(1), from `crates/mm-recover/src/lib.rs`
//! and `mm_core::recover`.

use super::common::{ALL_ENV, SOFTWARE, USAGE};
use super::{
    Block::{Item, Text},
    Example, Page,
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
    examples: &[
        Example {
            what: "What would be done, in every queue:",
            lines: &["mm-recover --dry-run"],
        },
        Example {
            what: "Take back the claims of dead runners in `out`:",
            lines: &["mm-recover -q out"],
        },
        Example {
            what: "Only the slice this host runs, of a spool shared by three hosts:",
            lines: &["mm-recover -q out --slice 2/3"],
        },
        Example {
            what: "The entries that were quarantined, as JSON:",
            lines: &["mm-recover --json | jq -c 'select(.action==\"quarantined\")'"],
        },
    ],
    exit: &[
        (
            0,
            "Done. Busy entries are not errors: their runner is alive.",
        ),
        (64, USAGE),
        (65, "A bad queue name in `-q`."),
        (70, SOFTWARE),
        (
            75,
            "An action failed (it is reported, and the others were done), or the spool is \
             missing, or a write failed.",
        ),
        (77, "Permission denied in the spool."),
        (78, "`--spool` is not a directory."),
    ],
    files: "`mm-recover` registers itself in *.runners* while it runs (it takes entries over in \
            its own name), renames claimed entries back to *ID.pck* or into *bad*, and removes \
            stale *.tmp* files.",
    environment: ALL_ENV,
    security: "`mm-recover` runs as the runner's user: it renames and rewrites entries. It \
               never touches an entry whose holder is alive.",
    see_also: &[("flock", "2"), ("sysexits", "3")],
};
