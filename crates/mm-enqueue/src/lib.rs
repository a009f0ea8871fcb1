//! `mm-enqueue`: put a message into a queue, durably.
//!
//! The message comes from standard input (an MTA's pipe) or from each
//! `--file` (one entry per file, committed in groups). Exit 0 only once every
//! entry is on stable storage; 65 for bad data (an address, a message over a
//! limit); 66 for a `--file` that cannot be read; 75 for everything else, a
//! bad command line included: a typo in master.cf's argv is the
//! installation's mistake, and on 75 the MTA keeps the mail and retries until
//! it is fixed, where on 64 it would bounce every message.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mm_core::cli::{SpoolArgs, parse_size};
use mm_core::enqueue::{Enqueuer, Limits, Submission};
use mm_core::{Error, ErrorKind, QueueName};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "A Postfix transport in *master.cf*: *pipe*(8) runs `mm-enqueue` as the \
                   user `mm` (route a list's addresses to the transport `mm` in \
                   *transport*(5)). `null_sender=` (empty) keeps the null sender `<>` \
                   as it is; without it *pipe*(8) passes MAILER-DAEMON, which is refused:",
        lines: &[
            "mm  unix  -  n  n  -  -  pipe",
            "  flags=Rq user=mm:mm null_sender=",
            "  argv=/usr/bin/mm-enqueue -q in -f ${sender} -- ${recipient}",
        ],
    },
    mm_core::cli::Example {
        what: "A script handing in a message for the list `dev`:",
        lines: &["mm-enqueue -f list-bounces@example.org --list dev alice@example.org < msg.eml"],
    },
    mm_core::cli::Example {
        what: "A bulk load of many files straight into `out`, in one process, with group \
                   commits:",
        lines: &[
            "mm-enqueue -q out -f owner@example.org --to bob@example.org \\",
            "    --file a.eml --file b.eml",
        ],
    },
    mm_core::cli::Example {
        what: "Metadata for the pipeline stages, and a lower size limit:",
        lines: &[
            "mm-enqueue -f owner@example.org --meta campaign=spring --max-size 10M \\",
            "    carol@example.com < msg.eml",
        ],
    },
];

/// Exit statuses and what each means for this tool, in `--help` and in the
/// man page.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Every entry is on stable storage; their ids are on standard output.",
    ),
    (
        65,
        "Bad data, which the MTA should bounce: an invalid address, no recipient, a message \
             over `--max-size`, more than `--max-rcpts` recipients, metadata over \
             `--max-meta`.",
    ),
    (66, "A `--file` does not exist."),
    (
        75,
        "A temporary failure: a usage error (an unknown option, a missing or malformed \
             value, a `--meta` without `=`: a typo in the MTA's command line); the spool is \
             missing (not mounted), not a directory, or not writable by this user; the queue \
             name in `-q` is wrong; it has less free space than `--min-free`; a write failed; \
             or a bug. The message on standard error names what is wrong. Nothing was \
             acknowledged, so the MTA keeps the message and tries again later: a mistake in \
             the installation defers mail, it never bounces it (Postfix bounces on 64, 70, 77 \
             and 78, which mm-enqueue therefore never uses). `--help` and `--version` exit 0.",
    ),
];

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str = "\
In short: 75 try again later, for every error but bad data (65) and an
unreadable --file (66). An MTA keeps the message and retries on 75 (it would
bounce it on 64), so a typo in master.cf defers mail, never bounces it.";

/// Put a message into an mm queue, durably.
#[derive(Debug, Parser)]
#[command(name = "mm-enqueue", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// The queue to put the message into.
    #[arg(short, long, default_value = "in", value_name = "NAME")]
    pub queue: String,
    /// Envelope sender; empty ("" or "<>") for the null sender of bounces.
    #[arg(short = 'f', long = "from", value_name = "ADDR", default_value = "")]
    pub from: String,
    /// Envelope recipient (repeatable); also taken from the positional arguments.
    #[arg(long = "to", value_name = "ADDR")]
    pub to: Vec<String>,
    /// Envelope recipients.
    #[arg(value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// The mailing list the message belongs to.
    #[arg(long, value_name = "NAME")]
    pub list: Option<String>,
    /// Free-form metadata (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// Read the message from PATH instead of standard input (repeatable: one entry per file).
    #[arg(long = "file", value_name = "PATH")]
    pub files: Vec<PathBuf>,
    /// Read and check everything (addresses, limits, free space), print what
    /// would be enqueued, and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Largest message accepted (bytes, or with K, M, G).
    #[arg(long, value_name = "SIZE", default_value = "32M", value_parser = parse_size)]
    pub max_size: u64,
    /// Most recipients per message.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_rcpts: usize,
    /// Largest metadata (list name and --meta) in bytes.
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size)]
    pub max_meta: u64,
    /// Refuse mail (exit 75) when the spool has less free space than this.
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_size)]
    pub min_free: u64,
}

/// The exit status of a failure: bad data (65) and an unreadable `--file`
/// (66) stay; everything else, usage errors (64) and bugs (70) included, is
/// 75, so that an MTA defers.
pub fn exit_status(code: u8) -> u8 {
    use mm_core::error::exit;
    match code {
        exit::OK | exit::DATAERR | exit::NOINPUT => code,
        _ => exit::TEMPFAIL,
    }
}

fn usage(msg: String) -> anyhow::Error {
    anyhow::Error::new(Error::new(ErrorKind::Usage, msg))
}

fn data(msg: String) -> anyhow::Error {
    anyhow::Error::new(Error::new(ErrorKind::Invalid, msg))
}

/// A problem of this installation rather than of the message (a spool the
/// MTA's user may not write, a queue name that is wrong in master.cf, a spool
/// path that is not a directory) is a temporary failure: Postfix and Exim
/// keep the mail and retry on 75, but bounce it on 77 or 78. The message
/// still names the path and what is missing, for the admin.
fn local(e: Error) -> Error {
    match e.kind() {
        ErrorKind::Permission | ErrorKind::Config | ErrorKind::NotFound => {
            e.with_kind(ErrorKind::Temporary)
        }
        _ => e,
    }
}

/// Runs mm-enqueue.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    // A bad -q is the installation's mistake, not the message's: 75, so the
    // MTA keeps the mail until the transport is fixed.
    let queue_name = QueueName::new(&cli.queue).map_err(|e| e.with_kind(ErrorKind::Temporary))?;
    let limits = Limits {
        max_size: cli.max_size,
        max_rcpts: cli.max_rcpts,
        max_meta: cli.max_meta as usize,
        min_free: cli.min_free,
    };
    let mut kv = BTreeMap::new();
    for m in &cli.meta {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| usage(format!("bad --meta {m:?}: want KEY=VALUE")))?;
        kv.insert(k.to_string(), v.to_string());
    }
    let mut recipients = cli.to.clone();
    recipients.extend(cli.recipients.iter().cloned());
    let template = Submission {
        sender: cli.from.clone(),
        recipients,
        list: cli.list.clone(),
        kv,
        message: Vec::new(),
    };
    // Check the envelope before reading anything, so a bad address fails fast.
    let mut probe = template.clone();
    probe.validate(&limits)?;

    let spool = cli.spool.open().map_err(local)?;
    let queue = spool.queue(&queue_name);
    let mut stdout = std::io::stdout().lock();
    if cli.dry_run {
        return dry_run(&cli, &spool, &limits, template, &mut stdout);
    }
    if cli.files.is_empty() {
        let message = read_limited(std::io::stdin().lock(), limits.max_size)
            .context("cannot read standard input")?;
        let sub = Submission {
            message,
            ..template
        };
        let id = mm_core::enqueue::enqueue(&spool, queue, limits, sub).map_err(local)?;
        writeln!(stdout, "{id}")?;
        return Ok(0);
    }
    let mut q = Enqueuer::grouped(&spool, queue, limits).map_err(local)?;
    // Read a group, write it (in parallel), commit it, print its ids.
    let mut group: Vec<Submission> = Vec::new();
    let mut group_bytes = 0u64;
    let mut flush = |group: &mut Vec<Submission>, out: &mut dyn Write| -> anyhow::Result<()> {
        if !group.is_empty() {
            let n = group.len();
            q.add_all(std::mem::take(group))
                .map_err(local)
                .with_context(|| format!("a group of {n} files"))?;
        }
        for id in q.commit().map_err(local)? {
            writeln!(out, "{id}")?;
        }
        Ok(())
    };
    // The envelope was validated above and each size by read_file; add_all
    // validates again, so nothing is checked here.
    for path in &cli.files {
        let message = read_file(path, limits.max_size)?;
        group_bytes += message.len() as u64;
        group.push(Submission {
            message,
            ..template.clone()
        });
        if mm_core::enqueue::group_is_full(group.len(), group_bytes) {
            flush(&mut group, &mut stdout)?;
            group_bytes = 0;
        }
    }
    flush(&mut group, &mut stdout)?;
    Ok(0)
}

/// Reads one `--file`: 66 if it cannot be opened, 65 if it is over `max`.
fn read_file(path: &std::path::Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path)
        .map_err(|e| Error::io("cannot open", path, e).with_kind(ErrorKind::NotFound))?;
    read_limited(f, max).with_context(|| format!("cannot read {}", path.display()))
}

/// `--dry-run`: reads and checks each message as a real run would, writes nothing.
fn dry_run(
    cli: &Cli,
    spool: &mm_core::Spool,
    limits: &Limits,
    template: Submission,
    out: &mut impl Write,
) -> anyhow::Result<u8> {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    if cli.files.is_empty() {
        let message = read_limited(std::io::stdin().lock(), limits.max_size)
            .context("cannot read standard input")?;
        inputs.push(("standard input".into(), message));
    }
    for path in &cli.files {
        inputs.push((
            path.display().to_string(),
            read_file(path, limits.max_size)?,
        ));
    }
    for (what, message) in inputs {
        let mut sub = Submission {
            message,
            ..template.clone()
        };
        mm_core::enqueue::check(spool, limits, &mut sub)
            .map_err(local)
            .with_context(|| what.clone())?;
        writeln!(
            out,
            "would enqueue {what} into {}: {} bytes, from <{}> to {} recipient(s)",
            cli.queue,
            sub.message.len(),
            sub.sender,
            sub.recipients.len()
        )?;
    }
    Ok(0)
}

/// Reads at most `max + 1` bytes, refusing more than `max` without reading it all.
fn read_limited(r: impl Read, max: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(8192);
    r.take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| {
            anyhow::Error::new(Error::new(
                ErrorKind::Temporary,
                format!("read failed: {e}"),
            ))
        })?;
    if buf.len() as u64 > max {
        return Err(data(format!(
            "message exceeds the limit of {max} bytes (--max-size)"
        )));
    }
    Ok(buf)
}
