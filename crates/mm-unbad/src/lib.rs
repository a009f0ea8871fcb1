//! `mm-unbad`: return quarantined entries to work once the cause is fixed.

use clap::Parser;
use mm_core::QueueName;
use mm_core::admin_cli::{Lines, OutputArgs, PickArgs};
use mm_core::claim::{self, Registration};
use mm_core::cli::{SelectArgs, SpoolArgs};
use mm_core::unbad::{self, Released, UnbadOptions};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "What is quarantined, and why:",
        lines: &["mm-showq bad"],
    },
    mm_core::cli::Example {
        what: "Return one entry to the queue it came from:",
        lines: &["mm-unbad 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089"],
    },
    mm_core::cli::Example {
        what: "What releasing all of `shunt` would do:",
        lines: &["mm-unbad --from shunt --all --dry-run"],
    },
    mm_core::cli::Example {
        what: "Everything enqueued more than a day ago, into `retry`:",
        lines: &["mm-unbad --all --older-than 1d --to retry"],
    },
    mm_core::cli::Example {
        what: "Everything that crashed its runner, after the fix:",
        lines: &["mm-unbad --all --error 'crashed its runner'"],
    },
];

/// Exit statuses and what each means for this tool, in `--help` and in the
/// man page.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Every entry was released (or, with `--dry-run`, would be).",
    ),
    (64, mm_core::cli::USAGE_STATUS),
    (
        65,
        "A malformed id, or a bad queue name in `--from` or `--to`.",
    ),
    (
        66,
        "An id is not in the quarantine queue, or `--from` names a queue that is not there.",
    ),
    (70, mm_core::cli::SOFTWARE_STATUS),
    (
        75,
        "An entry was busy (claimed by another process; if that process died, run \
             `mm-recover` on the quarantine queue) or could not be released, or the spool is \
             missing. This status wins over 66.",
    ),
    (77, "Permission denied in the spool."),
    (78, "`--spool` is not a directory."),
];

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str = "One line per id: RESULT ID QUEUE (DETAIL), RESULT being released, busy,
not-found, skipped or failed. The recovery count is reset; the history stays.";

/// Return quarantined entries (bad/, shunt/) to work.
#[derive(Debug, Parser)]
#[command(name = "mm-unbad", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// The quarantine queue to release from.
    #[arg(long, value_name = "QUEUE", default_value = "bad")]
    pub from: String,
    /// Return entries to QUEUE instead of the queue each came from.
    #[arg(long, value_name = "QUEUE")]
    pub to: Option<String>,
    #[command(flatten)]
    pub pick: PickArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    // Last: clap puts every flag after it under the selection heading.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Runs mm-unbad.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let from = QueueName::new(&cli.from)?;
    let to = cli.to.as_deref().map(QueueName::new).transpose()?;
    let ids = cli.pick.ids()?;
    let spool = cli.spool.open()?;
    spool.existing_queue(&cli.from)?;
    let me = Registration::register(&spool, "mm-unbad", claim::DEFAULT_LEASE)?;
    let opts = UnbadOptions {
        from,
        to,
        select: cli.select.selector(),
        dry_run: cli.output.dry_run,
    };
    let mut lines = Lines::new(cli.output.json);
    let mut failures = Vec::new();
    let r = unbad::unbad(&spool, &me, ids.as_deref(), &opts, &mut |r: Released| {
        failures.extend(r.result.failure());
        lines.put(&r, || {
            format!(
                "{} {} {} ({})",
                r.result,
                r.id,
                r.queue.as_deref().unwrap_or("-"),
                r.detail
            )
        });
    });
    me.unregister();
    r?;
    lines.finish()?;
    Ok(mm_core::error::batch_exit_code(failures))
}
