//! `mm-unbad`: return quarantined entries to work once the cause is fixed.

use std::io::Write;

use clap::Parser;
use mm_core::claim::{self, Registration};
use mm_core::cli::{SelectArgs, SpoolArgs};
use mm_core::unbad::{self, Released, UnbadOptions};
use mm_core::{EntryId, Error, QueueName};

const AFTER_HELP: &str = "\
Examples:
  mm-showq bad                                  what is quarantined, and why
  mm-unbad 1795540798.713350+e408…2089           return one entry where it came from
  mm-unbad --from shunt --all --dry-run         what releasing all of shunt/ would do
  mm-unbad --all --older-than 1d --to retry     everything enqueued over a day ago, into retry/
  mm-unbad --from shunt --all --error 'spam'    what a stage refused as spam

One line per id: RESULT ID QUEUE (DETAIL), RESULT being released, busy,
not-found, skipped or failed. The recovery count is reset; the history stays.
Exit 0, 66 if an id was not found, 75 if one was busy or failed.";

/// Return quarantined entries (bad/, shunt/) to work.
#[derive(Debug, Parser)]
#[command(name = "mm-unbad", version, after_help = AFTER_HELP)]
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
