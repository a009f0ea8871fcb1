//! `mm-unbad`: return quarantined entries to work once the cause is fixed.

use std::io::Write;

use clap::Parser;
use mm_core::claim::{self, Registration};
use mm_core::cli::{SelectArgs, SpoolArgs};
use mm_core::unbad::{self, Released, UnbadOptions};
use mm_core::{EntryId, Error, QueueName};

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
    (66, "An id is not in the quarantine queue."),
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
    /// Entry ids to release.
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<String>,
    /// Release every entry of the quarantine queue (must be spelled out).
    #[arg(long)]
    pub all: bool,
    /// Only report what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON Lines output (schema in docs/json.md).
    #[arg(long)]
    pub json: bool,
    // Last: clap puts every flag after it under the selection heading.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Runs mm-unbad.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let from = QueueName::new(&cli.from)?;
    let to = cli.to.as_deref().map(QueueName::new).transpose()?;
    let ids: Vec<EntryId> = cli
        .ids
        .iter()
        .map(|s| EntryId::parse(s))
        .collect::<Result<_, Error>>()?;
    let spool = cli.spool.open()?;
    let me = Registration::register(&spool, "mm-unbad", claim::DEFAULT_LEASE)?;
    let opts = UnbadOptions {
        from,
        to,
        select: cli.select.selector(),
        dry_run: cli.dry_run,
    };
    let mut out = std::io::stdout().lock();
    let mut failures = Vec::new();
    let mut io_err = None;
    let r = unbad::unbad(
        &spool,
        &me,
        if cli.all { None } else { Some(&ids) },
        &opts,
        &mut |r: Released| {
            failures.extend(r.result.failure());
            let w = if cli.json {
                serde_json::to_writer(&mut out, &r)
                    .map_err(std::io::Error::other)
                    .and_then(|_| out.write_all(b"\n"))
            } else {
                writeln!(
                    out,
                    "{} {} {} ({})",
                    r.result,
                    r.id,
                    r.queue.as_deref().unwrap_or("-"),
                    r.detail
                )
            };
            if let Err(e) = w {
                io_err.get_or_insert(e);
            }
        },
    );
    me.unregister();
    r?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    Ok(mm_core::error::batch_exit_code(failures))
}
