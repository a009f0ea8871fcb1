//! `mm-release`: put held entries back to work (postsuper -H, exim -Mt).

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::hold::{self, Release};

const AFTER_HELP: &str = "\
Examples:
  mm-release 1795540798.713350+e408…2089         one entry, due now
  mm-release --all                               everything held in out/ (postsuper -H ALL)
  mm-release --all --domain example.net          mail for one destination
  mm-release --all --sender spammer --dry-run    what would be released

A released entry is queued and due now, with its per-recipient progress; the
time it was held does not count towards --give-up-after. --all --domain D
also ends the hold rule for D, if there is one.
One line per entry: RESULT ID QUEUE (DETAIL), RESULT being released, busy,
not-found, skipped or failed.
Exit 0, 66 if an id was not found, 75 if one was busy or failed.";

/// Release held entries: queued and due now, with their progress.
#[derive(Debug, Parser)]
#[command(name = "mm-release", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub args: AdminArgs,
}

/// Runs mm-release.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    if let (true, Some(domain), false) = (
        cli.args.pick.all,
        &cli.args.select.domain,
        cli.args.output.dry_run,
    ) && hold::remove_rule(&cli.args.spool.open()?, domain)?
        && !cli.args.output.json
    {
        println!("removed the hold rule for {domain}");
    }
    admin_cli::run("mm-release", &cli.args, &Release { actor: actor() })
}
