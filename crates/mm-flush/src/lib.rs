//! `mm-flush`: make deferred entries due now (postqueue -f/-s/-i, exim -qff/-M).

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::flush::Flush;

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "Every deferred entry of `out`, due now (postqueue -f):",
        lines: &["mm-flush --all"],
    },
    mm_core::cli::Example {
        what: "Mail for one destination, once it is back (postqueue -s example.net):",
        lines: &["mm-flush --all --domain example.net"],
    },
    mm_core::cli::Example {
        what: "Every deferred entry due now, but a smarthost's remembered back-off left as it is \
               (mm-showq --destinations; its entries wait until it ends, then one probes):",
        lines: &["mm-flush --all --keep-destinations"],
    },
    mm_core::cli::Example {
        what: "One entry (postqueue -i, exim -M):",
        lines: &["mm-flush 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089"],
    },
    mm_core::cli::Example {
        what: "What flushing the deferred mail of `in` older than an hour would do:",
        lines: &["mm-flush -q in --all --older-than 1h --dry-run"],
    },
];

/// Exit statuses, in `--help` and in the man page: those of every admin tool.
pub const EXIT_STATUS: &[(u8, &str)] = mm_core::admin_cli::EXIT_STATUS;

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str = "One line per entry: RESULT ID QUEUE (DETAIL), RESULT being flushed, busy,
not-found, skipped or failed. A flushed entry keeps its progress; the next
runner pass takes it, and the remembered back-off of its destination
(mm-showq --destinations) is cleared unless --keep-destinations. Entries in buckets and in the queue's top directory are
found alike; a claim whose runner is alive is never touched.";

/// Make deferred entries due now.
#[derive(Debug, Parser)]
#[command(name = "mm-flush", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    /// Keep the remembered back-off of the flushed entries' destinations
    /// (by default a flush clears it, so that they are tried at once).
    #[arg(long)]
    pub keep_destinations: bool,
    #[command(flatten)]
    pub args: AdminArgs,
}

/// Runs mm-flush.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let flush = Flush {
        actor: actor(),
        keep_destinations: cli.keep_destinations,
    };
    admin_cli::run("mm-flush", &cli.args, &flush)
}
