//! The command line shared by the admin tools (mm-flush, mm-hold,
//! mm-release, mm-delete): the queue, ids or `--all`, `--dry-run`, `--json`,
//! the selection flags; and the body that runs an [`Action`] and prints one
//! line per entry.

use std::io::Write;

use crate::admin::{self, Action, Done, Outcome, Target};
use crate::claim::{self, Registration};
use crate::cli::{SelectArgs, SpoolArgs};
use crate::error::Error;
use crate::id::EntryId;
use crate::spool::QueueName;

/// The exit statuses of the admin tools (mm-flush, mm-hold, mm-release,
/// mm-delete), in `--help` and in their man pages ([`crate::admin::Outcome::failure`]).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Every entry named or selected was acted on, skipped, or (with `--dry-run`) would be.",
    ),
    (64, crate::cli::USAGE_STATUS),
    (65, "A malformed id or queue name."),
    (
        66,
        "An id is not in the queue, or the queue is not there (a typo, not an empty queue).",
    ),
    (70, crate::cli::SOFTWARE_STATUS),
    (
        75,
        "An entry was busy (claimed by a live process, or by a dead one: run `mm-recover`) or \
         could not be changed, or the spool is missing. This status wins over 66.",
    ),
    (77, "Permission denied in the spool."),
    (78, "`--spool` is not a directory."),
];

/// The arguments every admin tool takes.
#[derive(Clone, Debug, clap::Args)]
pub struct AdminArgs {
    /// The spool.
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// The queue.
    #[arg(short, long, value_name = "QUEUE", default_value = "out")]
    pub queue: String,
    /// The ids, or `--all`.
    #[command(flatten)]
    pub pick: PickArgs,
    /// `--dry-run`, `--json`.
    #[command(flatten)]
    pub output: OutputArgs,
    /// The selection flags (last: clap puts every flag after it under their heading).
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Entry ids, or `--all`: what a repair tool acts on (mm-unbad too).
#[derive(Clone, Debug, clap::Args)]
pub struct PickArgs {
    /// Entry ids.
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub ids: Vec<String>,
    /// Every entry of the queue that the selection matches (must be spelled out).
    #[arg(long)]
    pub all: bool,
}

impl PickArgs {
    /// The ids, checked; `None` for `--all`.
    pub fn ids(&self) -> crate::Result<Option<Vec<EntryId>>> {
        let ids: Vec<EntryId> = self
            .ids
            .iter()
            .map(|s| EntryId::parse(s))
            .collect::<Result<_, Error>>()?;
        Ok((!self.all).then_some(ids))
    }
}

/// `--dry-run` and `--json`, as the repair tools take them.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct OutputArgs {
    /// Only report what would be done.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON Lines output (schema in docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// One result per line on stdout, as JSON or as text; the first write
/// error is kept for the end, so the work is never cut short by it.
pub struct Lines {
    json: bool,
    out: std::io::StdoutLock<'static>,
    err: Option<std::io::Error>,
}

impl Lines {
    /// Lines in JSON (`json`) or text.
    pub fn new(json: bool) -> Lines {
        Lines {
            json,
            out: std::io::stdout().lock(),
            err: None,
        }
    }

    /// Writes `value`, or its text form `text()`.
    pub fn put<T: serde::Serialize>(&mut self, value: &T, text: impl FnOnce() -> String) {
        let out = &mut self.out;
        let w = if self.json {
            crate::cli::json_line(out, value)
        } else {
            writeln!(out, "{}", text())
        };
        if let Err(e) = w {
            self.err.get_or_insert(e);
        }
    }

    /// The first write error, if any.
    pub fn finish(self) -> std::io::Result<()> {
        self.err.map_or(Ok(()), Err)
    }
}

impl AdminArgs {
    /// The target of the operation, checked.
    pub fn target(&self) -> crate::Result<Target> {
        Ok(Target {
            queue: QueueName::new(&self.queue)?,
            ids: self.pick.ids()?,
            select: self.select.selector(),
            dry_run: self.output.dry_run,
        })
    }
}

/// Runs `action` for `tool` and prints one line (or JSON object) per entry:
/// exit 0, 66 if an id was not found, 75 if an entry was busy or failed.
pub fn run(tool: &str, args: &AdminArgs, action: &dyn Action) -> anyhow::Result<u8> {
    let target = args.target()?;
    let spool = args.spool.open()?;
    spool.existing_queue(&args.queue)?;
    let me = Registration::register(&spool, tool, claim::DEFAULT_LEASE)?;
    let mut lines = Lines::new(args.output.json);
    // Each change also goes to the system log, like postsuper's: for a
    // deletion it is the only record left. Best effort: no syslog daemon is
    // not a reason to refuse an admin's command.
    let syslog = (!target.dry_run)
        .then(|| crate::syslog::Syslog::connect(&tool.replacen('-', "/", 1)).ok())
        .flatten();
    let mut failures = Vec::new();
    let r = admin::run(&spool, &me, &target, action, &mut |d: Done| {
        failures.extend(d.result.failure());
        if let Some(log) = &syslog {
            let priority = match d.result {
                Outcome::Did(_) => crate::syslog::NOTICE,
                Outcome::Failed => crate::syslog::WARNING,
                Outcome::Busy | Outcome::NotFound | Outcome::Skipped => crate::syslog::INFO,
            };
            log.send(priority, &d.line());
        }
        lines.put(&d, || d.line());
    });
    me.unregister();
    r?;
    lines.finish()?;
    Ok(crate::error::batch_exit_code(failures))
}
