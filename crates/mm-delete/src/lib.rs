//! `mm-delete`: remove entries, or give up on them with a bounce record
//! (postsuper -d, exim -Mrm; with --bounce, exim -Mg).

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::delete::Delete;

const AFTER_HELP: &str = "\
Examples:
  mm-delete 1795540798.713350+e408…2089                  remove one entry (postsuper -d)
  mm-delete --all --sender spammer@example.com --dry-run what would be removed
  mm-delete --bounce 1795540798.713350+e408…2089         give up: a bounce record for its pending recipients
  mm-delete -q bad --all --older-than 30d                quarantined entries over a month old

One line per entry: RESULT ID QUEUE (from=<S> to=<A>,<B> by USER), RESULT being
deleted (or bounced), busy, not-found, skipped or failed. Queued, deferred,
held and quarantined entries can be removed; a claim whose runner is alive is
never touched. Keep a copy first if in doubt: mm-dumpdb --raw ID > ID.eml.
Exit 0, 66 if an id was not found, 75 if one was busy or failed.";

/// Remove entries, or give up on them (--bounce).
#[derive(Debug, Parser)]
#[command(name = "mm-delete", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Give up instead: the pending recipients fail ("given up by mm-delete")
    /// and get one bounce record in bounces/, then the entry is removed.
    #[arg(long)]
    pub bounce: bool,
    #[command(flatten)]
    pub args: AdminArgs,
}

/// Runs mm-delete.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let action = Delete {
        actor: actor(),
        bounce: cli.bounce,
    };
    admin_cli::run("mm-delete", &cli.args, &action)
}
