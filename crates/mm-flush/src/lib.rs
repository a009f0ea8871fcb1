//! `mm-flush`: make deferred entries due now (postqueue -f/-s/-i, exim -qff/-M).

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::flush::Flush;

const AFTER_HELP: &str = "\
Examples:
  mm-flush 1795540798.713350+e408…2089           one entry, due now
  mm-flush --all                                 every deferred entry of out/ (postqueue -f)
  mm-flush --all --domain example.net            mail for example.net (postqueue -s)
  mm-flush -q in --all --older-than 1h --dry-run what flushing would do

One line per entry: RESULT ID QUEUE (DETAIL), RESULT being flushed, busy,
not-found, skipped or failed. A flushed entry keeps its progress; the next
runner pass takes it. Entries in buckets and in the queue's top directory are
found alike; a claim whose runner is alive is never touched.
Exit 0, 66 if an id was not found, 75 if one was busy or failed.";

/// Make deferred entries due now.
#[derive(Debug, Parser)]
#[command(name = "mm-flush", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub args: AdminArgs,
}

/// Runs mm-flush.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    admin_cli::run("mm-flush", &cli.args, &Flush { actor: actor() })
}
