//! `mm-delete`: remove entries, or give up on them with a bounce record
//! (postsuper -d, exim -Mrm; with --bounce, exim -Mg).

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::delete::Delete;

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "Keep a copy, then remove one entry:",
        lines: &[
            "mm-dumpdb --raw 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089 > /root/copy.eml",
            "mm-delete 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089",
        ],
    },
    mm_core::cli::Example {
        what: "What removing a spammer's mail would do:",
        lines: &["mm-delete --all --sender spammer@example.com --dry-run"],
    },
    mm_core::cli::Example {
        what: "Give up on mail for a dead domain, telling the senders:",
        lines: &["mm-delete --bounce --all --domain gone.example"],
    },
    mm_core::cli::Example {
        what: "Quarantined entries more than a month old:",
        lines: &["mm-delete -q bad --all --older-than 30d"],
    },
];

/// Exit statuses, in `--help` and in the man page: those of every admin tool.
pub const EXIT_STATUS: &[(u8, &str)] = mm_core::admin_cli::EXIT_STATUS;

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str =
    "One line per entry: RESULT ID QUEUE (from=<S> to=<A>,<B> by USER), RESULT being
deleted (or bounced), busy, not-found, skipped or failed. Queued, deferred,
held and quarantined entries can be removed; a claim whose runner is alive is
never touched. Keep a copy first if in doubt: mm-dumpdb --raw ID > ID.eml.";

/// Remove entries, or give up on them (--bounce).
#[derive(Debug, Parser)]
#[command(name = "mm-delete", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
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
