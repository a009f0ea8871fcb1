//! `mm-recover`: take back entries whose runner died; quarantine those that
//! keep killing runners; remove never-acknowledged temporary files.
//!
//! Entries held by a live runner are reported as busy and left alone, so it
//! is safe to run at any time, by cron or by hand, while runners run.

use std::io::Write;
use std::time::Duration;

use clap::Parser;
use mm_core::admin_cli::{Lines, OutputArgs};
use mm_core::claim::{self, Registration};
use mm_core::cli::{SelectArgs, SpoolArgs, parse_duration};
use mm_core::recover::{self, Action, RecoverOptions, Verdict};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "What would be done, in every queue:",
        lines: &["mm-recover --dry-run"],
    },
    mm_core::cli::Example {
        what: "Take back the claims of dead runners in `out`:",
        lines: &["mm-recover -q out"],
    },
    mm_core::cli::Example {
        what: "Only the slice this host runs, of a spool shared by three hosts:",
        lines: &["mm-recover -q out --slice 2/3"],
    },
    mm_core::cli::Example {
        what: "The entries that were quarantined, as JSON:",
        lines: &["mm-recover --json | jq -c 'select(.action==\"quarantined\")'"],
    },
];

/// Exit statuses and what each means for this tool, in `--help` and in the
/// man page.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Done. Busy entries are not errors: their runner is alive.",
    ),
    (64, mm_core::cli::USAGE_STATUS),
    (65, "A bad queue name in `-q`."),
    (
        66,
        "A queue named in `-q` is not there (a typo, not an empty queue).",
    ),
    (70, mm_core::cli::SOFTWARE_STATUS),
    (
        75,
        "An action failed (it is reported, and the others were done), or the spool is \
             missing, or a write failed.",
    ),
    (77, "Permission denied in the spool."),
    (78, "`--spool` is not a directory."),
];

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str =
    "Each action is one line: ACTION QUEUE ID PATH (DETAIL). ACTION is recovered,
quarantined (recovered more than --max-recoveries times: crashed its runner),
busy (held by a live runner: left alone), removed-tmp, foreign (not an entry:
left alone) or failed.";

/// Bring back entries whose runner died.
#[derive(Debug, Parser)]
#[command(name = "mm-recover", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// Queues to recover (repeatable); default every queue.
    #[arg(short, long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,
    /// The same as `-q QUEUE` (the form mm-showq takes).
    #[arg(value_name = "QUEUE")]
    pub queue_args: Vec<String>,
    /// Recoveries of one entry before it goes to bad/.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_recoveries: u32,
    /// Remove orphaned .tmp files older than this.
    #[arg(long, value_name = "DUR", default_value = "1h", value_parser = parse_duration)]
    pub tmp_age: Duration,
    /// Lease of claims held by runners on other hosts.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub lease: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
    // Last: clap puts every flag after it under the selection heading.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Runs mm-recover.
pub fn run(mut cli: Cli) -> anyhow::Result<u8> {
    cli.queues.append(&mut cli.queue_args);
    let spool = cli.spool.open()?;
    let queues = if cli.queues.is_empty() {
        spool.queues()?
    } else {
        cli.queues
            .iter()
            .map(|q| spool.existing_queue(q))
            .collect::<Result<_, _>>()?
    };
    let me = Registration::register(&spool, "mm-recover", claim::DEFAULT_LEASE)?;
    let opts = RecoverOptions {
        select: cli.select.selector(),
        max_recoveries: cli.max_recoveries,
        tmp_age: cli.tmp_age,
        lease: cli.lease,
        dry_run: cli.output.dry_run,
    };
    let mut lines = Lines::new(cli.output.json);
    let mut summary = recover::Summary::default();
    let sweep =
        cli.queues.is_empty() && cli.select.selector() == Default::default() && !cli.output.dry_run;
    let mut live = std::collections::BTreeSet::new();
    let result = (|| -> anyhow::Result<()> {
        for q in &queues {
            live.extend(recover::recover_queue(
                &spool,
                q,
                &me,
                &opts,
                &mut |a: Action| {
                    summary.count(a.action);
                    lines.put(&a, || {
                        format!(
                            "{} {} {} {} ({})",
                            a.action,
                            a.queue,
                            a.id.as_deref().unwrap_or("-"),
                            a.path.display(),
                            a.detail
                        )
                    });
                },
            )?);
        }
        Ok(())
    })();
    if sweep && result.is_ok() {
        // Every queue was swept: records of dead runners that hold nothing go.
        recover::prune_records(&spool, &me, &live, cli.lease);
    }
    me.unregister();
    result?;
    lines.finish()?;
    if !cli.output.json {
        let mut out = std::io::stdout().lock();
        let counts: Vec<String> = Verdict::ALL
            .iter()
            .map(|&v| format!("{} {v}", summary.get(v)))
            .collect();
        writeln!(
            out,
            "{}{}",
            if cli.output.dry_run { "dry run: " } else { "" },
            counts.join(", ")
        )?;
    }
    Ok(summary.exit_code())
}
