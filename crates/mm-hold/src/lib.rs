//! `mm-hold`: keep entries from every runner until mm-release (postsuper -h, exim -Mf).

use std::time::Duration;

use clap::Parser;
use mm_core::admin::actor;
use mm_core::admin_cli::{self, AdminArgs};
use mm_core::cli::parse_duration;
use mm_core::hold::{self, Hold, Rule};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "Hold a poison message while the cause is found:",
        lines: &[
            "mm-hold -r 'crashes the archiver' 1795540798.713350+e4084f621e8cb8a67ab859e49cebb10950ff2089",
        ],
    },
    mm_core::cli::Example {
        what: "Hold everything for one destination (postsuper -h):",
        lines: &["mm-hold --all --domain example.net -r 'their MX refuses us'"],
    },
    mm_core::cli::Example {
        what: "Hold everything for a destination for two hours, mail that comes later too:",
        lines: &["mm-hold --all --domain example.net --for 2h -r 'their maintenance'"],
    },
    mm_core::cli::Example {
        what: "What is held, by whom and why:",
        lines: &["mm-showq --state held out"],
    },
];

/// Exit statuses, in `--help` and in the man page: those of every admin tool.
pub const EXIT_STATUS: &[(u8, &str)] = mm_core::admin_cli::EXIT_STATUS;

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str = "A held entry (ID.hld) is skipped by every runner, from its name alone; it
does not expire while held, and mm-release puts it back with its progress.
With --for, the hold ends by itself (ID.UNTIL.hld), the mail coming back
spread over --spread; with --all --domain D --for, a rule ($SPOOL/.holds/D)
also holds what runners meet for D until then, without counting attempts.
One line per entry: RESULT ID QUEUE (DETAIL), RESULT being held, busy,
not-found, skipped or failed. A claim whose runner is alive is never touched.";

/// Hold entries: no runner takes them until mm-release.
#[derive(Debug, Parser)]
#[command(name = "mm-hold", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    /// Why (shown by mm-showq and mm-dumpdb, kept in the history).
    #[arg(short, long, value_name = "TEXT", default_value = "no reason given")]
    pub reason: String,
    /// Hold for DUR only (e.g. 2h); with --all --domain D, also a durable
    /// rule that holds what runners meet for D until then.
    #[arg(long = "for", value_name = "DUR", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// When a timed hold ends, bring the mail back spread over DUR.
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration, requires = "for_")]
    pub spread: Duration,
    #[command(flatten)]
    pub args: AdminArgs,
}

/// Runs mm-hold.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let now = mm_core::clock::now_secs();
    let hold = Hold {
        actor: actor(),
        reason: mm_core::cli::one_line(&cli.reason),
        until: cli.for_.map(|d| now + d.as_secs()),
        spread: cli.spread.as_secs(),
    };
    if let (Some(until), true, Some(domain), false) = (
        hold.until,
        cli.args.pick.all,
        &cli.args.select.domain,
        cli.args.output.dry_run,
    ) {
        // The rule first: what a runner claims while we hold the rest is held too.
        hold::write_rule(
            &cli.args.spool.open()?,
            &Rule {
                domain: domain.trim_start_matches('@').to_ascii_lowercase(),
                until,
                spread: hold.spread,
                by: format!("mm-hold ({})", hold.actor),
                reason: hold.reason.clone(),
                at: now,
            },
        )?;
    }
    admin_cli::run("mm-hold", &cli.args, &hold)
}
