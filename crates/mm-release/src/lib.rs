//! `mm-release`: put held entries back to work (postsuper -H, exim -Mt).

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::hold::{self, Release};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "Release one entry:",
        lines: &["mm-release 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089"],
    },
    mm_core::cli::Example {
        what: "Release everything held for one destination:",
        lines: &["mm-release --all --domain example.net"],
    },
    mm_core::cli::Example {
        what: "Release everything held in `out` (postsuper -H ALL):",
        lines: &["mm-release --all"],
    },
];

/// Exit statuses, in `--help` and in the man page: those of every admin tool.
pub const EXIT_STATUS: &[(u8, &str)] = mm_core::admin_cli::EXIT_STATUS;

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str =
    "A released entry is queued and due now, with its per-recipient progress; the
time it was held does not count towards --give-up-after. --all --domain D
also ends the hold rule for D, if there is one.
One line per entry: RESULT ID QUEUE (DETAIL), RESULT being released, busy,
not-found, skipped or failed.";

/// Release held entries: queued and due now, with their progress.
#[derive(Debug, Parser)]
#[command(name = "mm-release", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub args: AdminArgs,
}

/// The spool, once the queue named is known to be there: a typo in `-q`
/// must not end a hold rule and then fail.
fn existing(cli: &Cli) -> anyhow::Result<mm_core::Spool> {
    let spool = cli.args.spool.open()?;
    spool.existing_queue(&cli.args.queue)?;
    Ok(spool)
}

/// Runs mm-release.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    if let (true, Some(domain), false) = (
        cli.args.pick.all,
        &cli.args.select.domain,
        cli.args.output.dry_run,
    ) && hold::remove_rule(&existing(&cli)?, domain)?
        && !cli.args.output.json
    {
        println!("removed the hold rule for {domain}");
    }
    admin_cli::run("mm-release", &cli.args, &Release { actor: actor() })
}
