//! `mm-runq`: a queue runner.
//!
//! Claims the entries of one queue (or one slice of it), runs the pipeline
//! stages, delivers over SMTP (or to a directory), retries with backoff,
//! bounces, and passes entries on. Launched by cron (`--until-empty`,
//! `--once`) or as a service (the default). See mm_core::runner for the model.

pub mod guard;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use mm_core::cli::{SpoolArgs, parse_duration, parse_slice};
use mm_core::delivery::smtp::SmtpConfig;
use mm_core::pipeline::{self, Stage, StageKind};
use mm_core::retry::RetryPolicy;
use mm_core::runner::{self, Event, Level, Log, Mode, Outcome, RunnerConfig, Signals, Transport};
use mm_core::{Error, ErrorKind, QueueName, Slice, clock};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "Deliver `out` through the local MTA until it is empty, from *cron*(8) \
                   every five minutes:",
        lines: &["*/5 * * * *  mm  mm-runq -q out --until-empty --quiet"],
    },
    mm_core::cli::Example {
        what: "A service with four SMTP connections to a smarthost, with STARTTLS and \
                   AUTH (see SECURITY about the password):",
        lines: &[
            "mm-runq -q out --connections 4 \\",
            "    --smtp 'smtp+starttls://user:pass@relay.example.org:587'",
        ],
    },
    mm_core::cli::Example {
        what: "Three machines sharing a spool, one slice each:",
        lines: &[
            "mm-runq -q out --slice 1/3",
            "mm-runq -q out --slice 2/3",
            "mm-runq -q out --slice 3/3",
        ],
    },
    mm_core::cli::Example {
        what: "A pipeline from `in` to `out`: archive, then rewrite, then pass on:",
        lines: &["mm-runq -q in --exec 'archive-msg' --filter 'add-footer' --then out"],
    },
    mm_core::cli::Example {
        what: "No MTA at all: deliver copies into a maildir:",
        lines: &["mm-runq -q out --deliver-to /tmp/delivered --until-empty"],
    },
    mm_core::cli::Example {
        what: "A service that leaves its counters (recipients, transactions, bytes, replies \
                   by class, passes) for node_exporter's textfile collector after each pass:",
        lines: &[
            "mm-runq -q out --smtp smtp://relay.example.org \\",
            "    --metrics-file /var/lib/node_exporter/textfile/mm-runq-out.prom",
        ],
    },
    mm_core::cli::Example {
        what: "Retry sooner and give up after a day, for a list whose readers prefer \
                   late mail to none:",
        lines: &["mm-runq -q out --retry-min 1m --retry-max 1h --give-up-after 1d"],
    },
];

/// Exit statuses and what each means for this tool, in `--help` and in the
/// man page.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Done: no due entry is left (`--until-empty`, `--once`), the service was stopped \
             by a signal, or another runner of this queue and slice was already running. \
             Deferred and failed recipients are outcomes, not errors.",
    ),
    (
        64,
        "A usage error, or stages with nowhere for the entries to go: no `--then`, no \
             `--smtp`, `--deliver-to` or `--discard`.",
    ),
    (65, "A bad queue name in `-q` or `--then`."),
    (70, mm_core::cli::SOFTWARE_STATUS),
    (
        75,
        "Some entries could not be processed (the last log line counts them as errors; \
             they are left for the next run), or the spool is missing, or a write failed.",
    ),
    (77, "Permission denied in the spool or on the `--log` file."),
    (
        78,
        "A configuration error: a bad `--smtp` URL, `--retry-min` longer than \
             `--retry-max`, or `--spool` is not a directory.",
    ),
];

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str =
    "Stages run in command-line order; exit 0 goes on, 75 defers, anything else
shunts the entry. Each stage runs in a process group of its own, which is
killed when the stage ends, at --stage-timeout (the entry is deferred, and
shunted at the third timeout in a row), at a stop, and when the runner dies.
Stages without --then need a transport (--smtp, --deliver-to or --discard).
SIGTERM/SIGINT stop within --stop-timeout (exit 0); a second signal exits at
once; SIGHUP reopens --log.";

/// Run an mm queue: claim entries, pass them through stages, deliver them.
#[derive(Debug, Parser)]
#[command(name = "mm-runq", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// The queue to run.
    #[arg(short, long, default_value = "out", value_name = "NAME")]
    pub queue: String,
    /// Only slice K of N of the queue (numbered from 1).
    #[arg(long, value_name = "K/N", value_parser = parse_slice)]
    pub slice: Option<Slice>,
    /// One pass over the entries due now, then exit.
    #[arg(long, conflicts_with = "until_empty")]
    pub once: bool,
    /// Run until no due entry is left, then exit (for cron); on a terminal,
    /// with a progress bar (entries done of due, rate, time left).
    #[arg(long)]
    pub until_empty: bool,
    /// Deliver over SMTP: smtp://[user:pass@]host[:port], smtp+starttls://…, smtps://…;
    /// parameters ?helo=NAME, ?ca=PEM-FILE (a private CA to trust besides the system's)
    // This is --help's text, where brackets mark what is optional, not links.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_name = "URL", conflicts_with_all = ["deliver_to", "discard"])]
    pub smtp: Option<String>,
    /// Deliver each copy as a file into the maildir DIR (no MTA needed).
    #[arg(long, value_name = "DIR", conflicts_with = "discard")]
    pub deliver_to: Option<PathBuf>,
    /// Accept every recipient and send nothing.
    #[arg(long)]
    pub discard: bool,
    /// Most recipients per SMTP transaction.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_rcpts: usize,
    /// Parallel SMTP connections (workers).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: usize,
    /// Timeout for connecting to the SMTP server.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Timeout for every SMTP command.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// Timeout for the SMTP server's reply to the end of the message data (RFC 5321 4.5.3.2.6).
    #[arg(long, value_name = "DUR", default_value = "10m", value_parser = parse_duration)]
    pub data_timeout: Duration,
    /// First retry delay.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub retry_min: Duration,
    /// Longest retry delay.
    #[arg(long, value_name = "DUR", default_value = "4h", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// Give up on pending recipients this long after the first attempt (they bounce).
    #[arg(long, value_name = "DUR", default_value = mm_core::cli::GIVE_UP_AFTER, value_parser = parse_duration)]
    pub give_up_after: Duration,
    /// Pipe each message to CMD (repeatable; stages run in command-line order).
    #[arg(long = "exec", value_name = "CMD")]
    pub exec: Vec<String>,
    /// Pipe each message through CMD and keep its output as the new message (repeatable).
    #[arg(long = "filter", value_name = "CMD")]
    pub filter: Vec<String>,
    /// Pass entries on to QUEUE after the last stage.
    #[arg(long, value_name = "QUEUE")]
    pub then: Option<String>,
    /// Longest run of one stage; then its whole process group is killed and
    /// the entry deferred (shunted at the third timeout in a row).
    #[arg(long, value_name = "DUR", default_value = "1000s", value_parser = parse_duration)]
    pub stage_timeout: Duration,
    /// How long a stop may take before the current entries are put back.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub stop_timeout: Duration,
    /// Pause between passes when nothing is due (service mode).
    #[arg(long, value_name = "DUR", default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Recoveries of an entry from a dead runner before it goes to bad/.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_recoveries: u32,
    /// The lease on this runner's claims, for runners of other hosts on a
    /// shared spool: renewed every quarter of it; a runner that could not
    /// renew within half of it fences itself. Longer than a host's worst pause.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub lease: Duration,
    /// How long a cron run (--once, --until-empty) retries a write to a
    /// claimed entry that keeps failing (a full disk) before it exits 75 with
    /// the entry left claimed for recovery; a service retries until stopped.
    /// Meanwhile nothing new is claimed.
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = parse_duration)]
    pub write_retry: Duration,
    /// Log to FILE instead of standard error (reopened on SIGHUP).
    #[arg(long, value_name = "FILE", conflicts_with = "syslog")]
    pub log: Option<PathBuf>,
    /// Turn each bounce record into an RFC 3464 delivery status notification
    /// and send it to the envelope sender from the null sender (run on the
    /// bounces queue; never for mail that came from <>). Without it, the
    /// records are left for a list server to read.
    #[arg(long)]
    pub dsn: bool,
    /// Log to syslog (/dev/log, facility mail, tag mm/runq) with priorities
    /// (info: delivered; notice: deferred, bounced; warning; err), so that
    /// `journalctl -p err` finds the errors.
    #[arg(long)]
    pub syslog: bool,
    /// Write the runner's counters (recipients by outcome, transactions,
    /// bytes, replies by class, passes and their duration) to FILE in the
    /// Prometheus text format after each pass (at most once a second) and at
    /// the end, atomically (a temporary file beside it, then a rename): for
    /// node_exporter's textfile collector.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// List the entries a run would take now (due, in this slice, oldest
    /// first) and exit; nothing is claimed or changed.
    #[arg(long)]
    pub dry_run: bool,
    /// More detail.
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Only the lines of mail that did not go through, and problems: no
    /// info lines (delivered recipients, finished entries, start, stop).
    #[arg(long)]
    pub quiet: bool,
}

/// The program name in log lines, in Postfix's `NAME/PROGRAM` form so that
/// its log tools read them (`pflogsumm --syslog-name=mm`).
const TAG: &str = "mm/runq";

struct Logger {
    path: Option<PathBuf>,
    /// `--syslog`.
    syslog: Option<mm_core::syslog::Syslog>,
    /// This host's name, as syslog would write it.
    host: String,
    out: Mutex<Box<dyn Write + Send>>,
    hup: std::sync::Arc<std::sync::atomic::AtomicBool>,
    quiet: bool,
    /// The progress bar of an `--until-empty` run on a terminal
    /// ([`progress_bar`]); log lines are written around it.
    bar: Option<indicatif::ProgressBar>,
}

/// A progress bar for a long drain, on standard error: entries done of
/// those due, the rate and the time left. Only when standard error is a
/// terminal that nothing else writes to (no `--log`, `--syslog` or
/// `--quiet`): off a terminal the output is the log lines alone, byte for
/// byte. indicatif draws it, at most 20 times a second, and keeps it below
/// the log lines ([`Logger::event`] writes them through
/// [`indicatif::ProgressBar::suspend`]).
fn progress_bar() -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} entries, {per_sec:0}, {eta} left",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr())
        .with_style(style)
}

impl Logger {
    fn open(path: &Option<PathBuf>) -> anyhow::Result<Box<dyn Write + Send>> {
        Ok(match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::io("cannot open log", p, e))?,
            ),
            None => Box::new(std::io::stderr()),
        })
    }

    fn clear_bar(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Log for Logger {
    fn event(&self, event: &Event<'_>) {
        if self.quiet && event.level() == Level::Info {
            return;
        }
        if let Some(log) = &self.syslog
            && log.send(event.level().syslog(), &event.to_string())
        {
            return;
        }
        let Ok(mut out) = self.out.lock() else { return };
        if self.hup.swap(false, Ordering::Relaxed)
            && let Ok(w) = Logger::open(&self.path)
        {
            *out = w;
        }
        let line = format!(
            "{} {} {TAG}[{}]: {event}",
            clock::rfc3339(clock::now_secs()),
            self.host,
            std::process::id()
        );
        // A log that cannot be written is not a reason to stop delivering.
        let _ = match &self.bar {
            // The bar is taken off, the line written, the bar drawn again below it.
            Some(bar) => bar.suspend(|| writeln!(out, "{line}")),
            None => writeln!(out, "{line}"),
        };
    }

    fn progress(&self, done: u64, left: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(done + left);
            bar.set_position(done);
        }
    }
}

/// The stages in command-line order: clap keeps each flag's values apart,
/// and tells where each value was (`indices_of`). A `Cli` built otherwise
/// (a unit test) has no positions: execs, then filters.
fn stages(cli: &Cli) -> Vec<Stage> {
    let of = |kind: StageKind, id: &str, cmds: &[String]| -> Vec<(usize, Stage)> {
        let at: Vec<usize> = mm_core::cli::matches()
            .and_then(|m| m.indices_of(id))
            .map(|i| i.collect())
            .unwrap_or_default();
        cmds.iter()
            .enumerate()
            .map(|(n, c)| {
                (
                    at.get(n).copied().unwrap_or(usize::MAX),
                    Stage {
                        kind,
                        command: c.clone(),
                    },
                )
            })
            .collect()
    };
    let mut all = of(StageKind::Exec, "exec", &cli.exec);
    all.extend(of(StageKind::Filter, "filter", &cli.filter));
    // Stable: without positions, execs stay before filters, each in order.
    all.sort_by_key(|(at, _)| *at);
    all.into_iter().map(|(_, s)| s).collect()
}

fn config_error(msg: String) -> anyhow::Error {
    anyhow::Error::new(Error::new(ErrorKind::Config, msg))
}

/// Runs mm-runq.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let queue = QueueName::new(&cli.queue)?;
    let then = cli.then.as_deref().map(QueueName::new).transpose()?;
    let stages = stages(&cli);
    let transport = if let Some(dir) = &cli.deliver_to {
        Transport::Dir(dir.clone())
    } else if cli.discard {
        Transport::Discard
    } else if cli.smtp.is_some() || (stages.is_empty() && then.is_none()) {
        let url = cli.smtp.as_deref().unwrap_or("smtp://localhost:25");
        let mut c =
            SmtpConfig::parse(url).map_err(|e| config_error(format!("--smtp {url}: {e}")))?;
        c.connect_timeout = cli.connect_timeout;
        c.command_timeout = cli.command_timeout;
        c.data_timeout = cli.data_timeout;
        c.max_rcpts = cli.max_rcpts.max(1);
        Transport::Smtp(c)
    } else {
        Transport::None
    };
    if matches!(transport, Transport::None) && then.is_none() {
        // Stages and nothing else: such a runner would take entries out of
        // the queue with their recipients still pending and deliver nothing.
        return Err(anyhow::Error::new(Error::new(
            ErrorKind::Usage,
            "stages but nowhere for the entries to go: give --then QUEUE, \
             a transport (--smtp URL, --deliver-to DIR) or --discard",
        )));
    }
    if cli.retry_min > cli.retry_max {
        return Err(config_error(
            "--retry-min is longer than --retry-max".into(),
        ));
    }
    let mode = if cli.once {
        Mode::Once
    } else if cli.until_empty {
        Mode::UntilEmpty
    } else {
        Mode::Service
    };
    let cfg = RunnerConfig {
        queue,
        slice: cli.slice.unwrap_or(Slice::ALL),
        mode,
        transport,
        stages,
        stage_timeout: cli.stage_timeout,
        then,
        retry: RetryPolicy {
            min: cli.retry_min,
            max: cli.retry_max,
            give_up: cli.give_up_after,
        },
        stop_timeout: cli.stop_timeout,
        connections: cli.connections.max(1),
        poll: cli.poll,
        max_recoveries: cli.max_recoveries,
        batch: 100_000,
        lease: cli.lease.max(Duration::from_secs(4)),
        floor: mm_core::fsx::Floor::default(),
        write_retry: cli.write_retry,
        dsn: cli.dsn,
        metrics_file: cli.metrics_file.clone(),
    };
    if let Some(file) = &cfg.metrics_file {
        mm_core::metrics::check_file(file)?;
    }
    let spool = cli.spool.open()?;
    if cli.dry_run {
        let (ids, total) = runner::due_now(
            &spool.queue(&cfg.queue),
            cfg.slice,
            mm_core::clock::now_secs(),
            usize::MAX,
        )?;
        let mut out = std::io::stdout().lock();
        for id in &ids {
            writeln!(out, "would process {id}")?;
        }
        writeln!(
            out,
            "{total} entr{} due in {} (slice {}), oldest first; nothing was claimed",
            if total == 1 { "y" } else { "ies" },
            cfg.queue,
            cfg.slice
        )?;
        return Ok(0);
    }

    // Stages start under this binary's guard, so they die with the runner
    // even when it is killed with SIGKILL (guard.rs). /proc/self/exe still
    // works when the binary was replaced by an upgrade while running.
    let exe = std::path::Path::new("/proc/self/exe");
    if exe.exists() {
        pipeline::set_guard(exe);
    } else if let Ok(exe) = std::env::current_exe() {
        pipeline::set_guard(exe);
    }

    let signals = Signals::default();
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The second signal exits at once; the claimed entry is left for recovery.
        signal_hook::flag::register_conditional_shutdown(sig, 1, signals.stop.clone())?;
        signal_hook::flag::register(sig, signals.stop.clone())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, signals.hup.clone())?;

    let bar = (mode == Mode::UntilEmpty
        && cli.log.is_none()
        && !cli.syslog
        && !cli.quiet
        && std::io::stderr().is_terminal())
    .then(progress_bar);
    let syslog = cli
        .syslog
        .then(|| mm_core::syslog::Syslog::connect(TAG))
        .transpose()?;
    let log = std::sync::Arc::new(Logger {
        path: cli.log.clone(),
        syslog,
        host: mm_core::claim::host_name(),
        out: Mutex::new(Logger::open(&cli.log)?),
        hup: signals.hup.clone(),
        quiet: cli.quiet,
        bar,
    });

    match runner::run(&spool, &cfg, &signals, log.clone())? {
        Outcome::AlreadyRunning(holder) => {
            // Cron's second launch while the first still runs: said even
            // with --quiet (operations.md), so cron mails it: a run that
            // outlasts its interval is worth knowing about.
            mm_core::cli::say(&format!(
                "mm-runq: another runner of {} {} is running ({holder}); exiting",
                cfg.queue, cfg.slice
            ));
            Ok(0)
        }
        Outcome::Done(stats) => {
            log.clear_bar();
            {
                log.event(&Event::Stop(&format!(
                    "{} {} stopped: {} entries: {} done, {} passed on, {} deferred, {} bounced recipients, {} quarantined, {} shunted, {} errors",
                    cfg.queue,
                    cfg.slice,
                    stats.entries(),
                    stats.finished,
                    stats.passed,
                    stats.deferred,
                    stats.rcpt_failed,
                    stats.quarantined,
                    stats.shunted,
                    stats.errors
                )));
            }
            Ok(stats.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that fails with a temporary error (a pass that made no progress,
    /// a full disk) exits 75: cron's next run tries again. `run` passes the
    /// runner's error up with `?`, and the shared main maps its kind.
    #[test]
    fn a_temporary_error_of_a_run_exits_75_and_a_refusal_64() {
        let temp = anyhow::Error::new(Error::new(ErrorKind::Temporary, "no progress"))
            .context("mm-runq out 1/1");
        assert_eq!(mm_core::cli::exit_code(&temp), 75);
        let cli = Cli::parse_from(["mm-runq", "--spool", "/nonexistent", "--exec", "true"]);
        let refused = run(cli).expect_err("stages with nowhere to go");
        assert_eq!(mm_core::cli::exit_code(&refused), 64);
        assert!(refused.to_string().contains("--then"), "{refused}");
    }
}
