//! `mm-showq`: what is in the queues, at a glance and entry by entry.
//!
//! Read-only: it never claims, renames or writes, and it works while runners
//! run. The summary comes from file names alone (no entry is opened); the
//! per-entry listing opens each entry read-only, and an entry that moves while
//! being listed is simply skipped.

use std::io::Write;

use clap::Parser;
use mm_core::cli::{SelectArgs, SpoolArgs, words};
use mm_core::clock;
use mm_core::destination::{self, Destinations};
use mm_core::report::{self, EntryView, QueueSummary};
use mm_core::shape::{AGE_COLUMNS, ShapeBy, ShapeRow, shape};

/// Examples, in `--help` and in the man page (xtask renders it).
pub const EXAMPLES: &[mm_core::cli::Example] = &[
    mm_core::cli::Example {
        what: "A summary of every queue:",
        lines: &["mm-showq"],
    },
    mm_core::cli::Example {
        what: "The shape of out/: pending recipients per domain, then entries per reason:",
        lines: &["mm-showq --by domain out", "mm-showq --by error out"],
    },
    mm_core::cli::Example {
        what: "Postfix's qshape: pending recipients per domain and age (T 5 10 20 … 1280+ minutes):",
        lines: &["mm-showq --by domain --age out | head"],
    },
    mm_core::cli::Example {
        what: "The smarthosts remembered as failing, and how long their back-off lasts:",
        lines: &["mm-showq --destinations"],
    },
    mm_core::cli::Example {
        what: "Entries for one domain, stuck for more than an hour:",
        lines: &["mm-showq --domain example.net --older-than 1h out"],
    },
    mm_core::cli::Example {
        what: "One line per entry of `out`:",
        lines: &["mm-showq out"],
    },
    mm_core::cli::Example {
        what: "Only the second quarter of `out`, as the runner of that slice sees it:",
        lines: &["mm-showq --slice 2/4 out"],
    },
    mm_core::cli::Example {
        what: "The ids of the entries quarantined because they crashed their runner:",
        lines: &["mm-showq --json bad | jq -r 'select(.last_error|test(\"crashed\")) | .id'"],
    },
    mm_core::cli::Example {
        what: "Watch a backlog drain:",
        lines: &["watch -n 10 mm-showq"],
    },
    mm_core::cli::Example {
        what: "Metrics for node_exporter's textfile collector, from *cron*(8) every minute \
               (written to a temporary name, then renamed):",
        lines: &[
            "* * * * *  mm  mm-showq --metrics > /var/lib/node_exporter/textfile/mm.prom.$$ && \\",
            "    mv /var/lib/node_exporter/textfile/mm.prom.$$ /var/lib/node_exporter/textfile/mm.prom",
        ],
    },
    mm_core::cli::Example {
        what: "Each runner: alive, stalled (due entries waiting, no progress for 10 \
               minutes) or dead, with what it holds and its last reply:",
        lines: &["mm-showq --runners --stalled-after 10m"],
    },
];

/// Exit statuses and what each means for this tool, in `--help` and in the
/// man page.
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "Shown, also when the reader of the output went away early (`| head`).",
    ),
    (64, mm_core::cli::USAGE_STATUS),
    (65, "A bad queue name."),
    (
        66,
        "A queue named is not there (not a directory of the spool, nor a well-known queue): \
         a typo, not an empty queue.",
    ),
    (70, mm_core::cli::SOFTWARE_STATUS),
    (
        75,
        "The spool is missing (not mounted), or a directory could not be read.",
    ),
    (
        77,
        "Permission denied: the user is not in the spool's group.",
    ),
    (78, "`--spool` is not a directory."),
];

/// The rest of `--help`, after the examples and exit statuses.
const HELP_NOTES: &str =
    "States: queued (due now), deferred (waiting for its next attempt), claimed (taken
by a runner: .bak), preserved (quarantined: .psv), held (by mm-hold: .hld),
writing (.tmp).
The JSON schema is documented in docs/json.md.";

/// Show what is in the mm queues.
#[derive(Debug, Parser)]
#[command(name = "mm-showq", version, after_help = mm_core::cli::after_help(EXAMPLES, EXIT_STATUS, HELP_NOTES))]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// Queues to list entry by entry; without any, a summary of every queue.
    #[arg(value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// The same as a QUEUE argument (repeatable): the form the other tools take.
    #[arg(short = 'q', long = "queue", value_name = "QUEUE")]
    pub queue_flags: Vec<String>,
    /// The shape of the queues: entries grouped by recipient domain, by error, or by age.
    #[arg(long, value_name = "KEY", value_parser = words::<ShapeBy, 3>(ShapeBy::ALL.map(ShapeBy::as_str)))]
    pub by: Option<ShapeBy>,
    /// With `--by domain` or `--by error`: crossed with qshape's geometric
    /// age buckets (columns T 5 10 20 … 1280 1280+ minutes).
    #[arg(long, requires = "by")]
    pub age: bool,
    /// The destinations remembered as failing (`$SPOOL/.destinations/`):
    /// failures in a row, since, until, the last error, probing or not.
    #[arg(long, conflicts_with_all = ["queues", "queue_flags", "by"])]
    pub destinations: bool,
    /// Add up the size of the entry files in the summary (a stat of every
    /// entry: several times slower on a big queue).
    #[arg(long)]
    pub bytes: bool,
    /// JSON Lines output (schema in docs/json.md).
    #[arg(long, conflicts_with = "metrics")]
    pub json: bool,
    /// Metrics in the Prometheus text format, for node_exporter's textfile
    /// collector: per queue and state the entries, bytes and oldest age; how
    /// late the oldest due entry is; dead runners' claims; quarantined
    /// entries by reason class; runners per queue, slice and state. Every
    /// series is there, 0 when empty (see operations.md, "Watching the queue").
    #[arg(long, conflicts_with_all = ["by", "runners", "bytes", "destinations"])]
    pub metrics: bool,
    /// The runners: each runner record with its queue and slice, whether it
    /// is alive, stalled or dead, the entries in its hands and since when,
    /// its last progress, its last pass and its last reply.
    #[arg(long, conflicts_with_all = ["by", "bytes", "destinations"])]
    pub runners: bool,
    /// A live runner is stalled when due entries are waiting (in its queue
    /// and slice, or in its hands) and it made no progress and ended no
    /// pass for longer than this (--runners, --metrics).
    #[arg(long, value_name = "DUR", default_value = "5m", value_parser = mm_core::cli::parse_duration)]
    pub stalled_after: std::time::Duration,
    /// The runner's give-up period, for the entries' `give_up_at`
    /// (mm-runq's --give-up-after).
    #[arg(long, value_name = "DUR", default_value = mm_core::cli::GIVE_UP_AFTER, value_parser = mm_core::cli::parse_duration)]
    pub give_up_after: std::time::Duration,
    // Last: clap puts every flag after it under the selection heading.
    #[command(flatten)]
    pub select: SelectArgs,
}

/// Runs mm-showq.
pub fn run(mut cli: Cli) -> anyhow::Result<u8> {
    cli.queues.append(&mut cli.queue_flags);
    let spool = cli.spool.open()?;
    let sel = cli.select.selector();
    let now = clock::now_secs();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let queues = if cli.queues.is_empty() {
        spool.queues()?
    } else {
        cli.queues
            .iter()
            .map(|q| spool.existing_queue(q))
            .collect::<Result<Vec<_>, _>>()?
    };
    if cli.metrics || cli.runners {
        if sel != mm_core::select::Selector::default() {
            return Err(anyhow::Error::new(mm_core::Error::new(
                mm_core::ErrorKind::Usage,
                "--metrics and --runners take no selection flags: they show whole queues",
            )));
        }
        let named = if cli.queues.is_empty() {
            Vec::new()
        } else {
            queues
        };
        if cli.metrics {
            let text = mm_core::metrics::spool_metrics(&spool, &named, now, cli.stalled_after)?;
            out.write_all(text.as_bytes())?;
        } else {
            let rows = mm_core::progress::runners(&spool, &named, now, cli.stalled_after)?;
            if cli.json {
                for r in &rows {
                    mm_core::cli::json_line(&mut out, r)?;
                }
            } else {
                print_runners(&mut out, &rows)?;
                for (q, s) in mm_core::progress::missing_slices(&rows) {
                    writeln!(
                        out,
                        "{q:<12} {s:<7} none     (no live runner runs this slice)"
                    )?;
                }
            }
        }
    } else if cli.destinations {
        let rows = Destinations::view(&spool).views(now);
        print_destinations(&mut out, &rows, cli.json, now)?;
    } else if let Some(by) = cli.by {
        let rows = shape(&queues, &sel, by, cli.age, now)?;
        if cli.age && !cli.json {
            print_qshape(&mut out, by, &rows)?;
        } else {
            print_shape(&mut out, by, &rows, cli.json)?;
        }
    } else if cli.queues.is_empty() {
        let mut rows = Vec::new();
        for q in &queues {
            rows.push(report::summarize(q, &sel, now, cli.bytes)?);
        }
        if cli.json {
            for r in &rows {
                mm_core::cli::json_line(&mut out, r)?;
            }
        } else {
            print_summary(&mut out, &rows, now)?;
            let off: Vec<String> = Destinations::view(&spool)
                .views(now)
                .into_iter()
                .filter(|d| d.backed_off)
                .map(|d| d.destination)
                .collect();
            if !off.is_empty() {
                writeln!(
                    out,
                    "backed off: {} (their entries are deferred untried; see mm-showq --destinations)",
                    off.join(", ")
                )?;
            }
        }
    } else {
        for q in &queues {
            for found in report::select_entries(q, &sel, now)? {
                let mut v = report::view(
                    &spool,
                    q.name().as_str(),
                    &found.name,
                    &found.path,
                    found.size,
                    found.entry.as_ref().map_err(Clone::clone),
                    now,
                    cli.give_up_after,
                    false,
                );
                if let Some(s) = sel.slice {
                    v.slice = Some(s.to_string());
                }
                if cli.json {
                    mm_core::cli::json_line(&mut out, &v)?;
                } else {
                    print_line(&mut out, &v, now)?;
                }
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn print_runners(
    out: &mut impl Write,
    rows: &[mm_core::progress::RunnerView],
) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:<7} {:<8} {:<12} {:<24} {:>7} {:>7} {:>12}",
        "QUEUE", "SLICE", "STATE", "TOKEN", "HOST:PID", "IN-HAND", "DUE", "NO-PROGRESS"
    )?;
    for r in rows {
        let who = match (&r.host, r.pid) {
            (Some(h), Some(p)) => format!("{}:{p}", mm_core::cli::one_line(h)),
            _ => "?".into(),
        };
        let count = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        writeln!(
            out,
            "{:<12} {:<7} {:<8} {:<12} {:<24} {:>7} {:>7} {:>12}",
            r.queue.as_deref().unwrap_or("-"),
            r.slice.as_deref().unwrap_or("-"),
            r.state.as_str(),
            r.token,
            who,
            r.in_hand.len(),
            count(r.due),
            r.idle_secs.map_or("-".to_string(), short_age),
        )?;
        if r.queue.is_none()
            && let Some(w) = &r.what
        {
            writeln!(out, "{:<12} {w}", "")?;
        }
        if let Some(why) = &r.dead_because {
            writeln!(out, "{:<12} dead: {why}", "")?;
        }
        for h in &r.in_hand {
            writeln!(
                out,
                "{:<12} holds {} for {}",
                "",
                h.id,
                short_age(h.for_secs)
            )?;
        }
        if let Some(reply) = &r.last_reply {
            writeln!(
                out,
                "{:<12} last reply: {}",
                "",
                mm_core::cli::one_line(reply)
            )?;
        }
    }
    Ok(())
}

fn print_shape(
    out: &mut impl Write,
    by: ShapeBy,
    rows: &[ShapeRow],
    json: bool,
) -> std::io::Result<()> {
    if json {
        for r in rows {
            mm_core::cli::json_line(out, r)?;
        }
        return Ok(());
    }
    let head = match by {
        ShapeBy::Domain => "DOMAIN",
        ShapeBy::Error => "ERROR",
        ShapeBy::Age => "AGE",
    };
    writeln!(out, "{:>8} {:>10}  {head}", "ENTRIES", "PENDING")?;
    for r in rows {
        writeln!(out, "{:>8} {:>10}  {}", r.entries, r.recipients, r.key)?;
    }
    Ok(())
}

/// qshape's table: a row per key (and TOTAL first), the count T, then the
/// count of each age bucket; the counts are pending recipients for
/// domains (qshape's), entries for errors.
fn print_qshape(out: &mut impl Write, by: ShapeBy, rows: &[ShapeRow]) -> std::io::Result<()> {
    let count = |r: &ShapeRow| r.counted(by);
    let mut total = (0, [0; AGE_COLUMNS.len()]);
    for r in rows {
        let (t, b) = count(r);
        total.0 += t;
        total.1.iter_mut().zip(b).for_each(|(s, n)| *s += n);
    }
    let mut table: Vec<(String, u64, [u64; AGE_COLUMNS.len()])> =
        vec![("TOTAL".into(), total.0, total.1)];
    table.extend(rows.iter().map(|r| {
        let (t, b) = count(r);
        (mm_core::cli::one_line(&r.key), t, b)
    }));
    let key_w = table
        .iter()
        .map(|(k, ..)| k.chars().count())
        .max()
        .unwrap_or(0);
    let t_w = total.0.to_string().len();
    let widths: Vec<usize> = AGE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, h)| h.len().max(total.1[i].to_string().len()))
        .collect();
    write!(out, "{:>key_w$} {:>t_w$}", "", "T")?;
    for (h, w) in AGE_COLUMNS.iter().zip(&widths) {
        write!(out, " {h:>w$}")?;
    }
    writeln!(out)?;
    for (k, t, b) in &table {
        write!(out, "{k:>key_w$} {t:>t_w$}")?;
        for (n, w) in b.iter().zip(&widths) {
            write!(out, " {n:>w$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn print_destinations(
    out: &mut impl Write,
    rows: &[destination::View],
    json: bool,
    now: u64,
) -> std::io::Result<()> {
    if json {
        return rows
            .iter()
            .try_for_each(|r| mm_core::cli::json_line(out, r));
    }
    writeln!(
        out,
        "{:<24} {:>8} {:<20} {:<20} {:<16} LAST ERROR",
        "DESTINATION", "FAILURES", "SINCE", "UNTIL", "STATE"
    )?;
    for r in rows {
        let state = match (r.probing, r.backed_off) {
            (true, _) => "probing".to_string(),
            (false, true) => format!("{} left", short_age(r.until_secs - now)),
            (false, false) => "probe due".to_string(),
        };
        writeln!(
            out,
            "{:<24} {:>8} {:<20} {:<20} {:<16} {}",
            r.destination,
            r.failures,
            r.since,
            r.until,
            state,
            mm_core::cli::one_line(&r.last_error)
        )?;
    }
    Ok(())
}

fn print_summary(out: &mut impl Write, rows: &[QueueSummary], now: u64) -> std::io::Result<()> {
    let bytes = |b: Option<u64>| b.map(|b| format!(" {b:>10}")).unwrap_or_default();
    writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>12}{}",
        "QUEUE",
        "QUEUED",
        "DEFERRED",
        "CLAIMED",
        "PRESERVED",
        "HELD",
        "WRITING",
        "OLDEST",
        if rows.iter().any(|r| r.bytes.is_some()) {
            format!(" {:>10}", "BYTES")
        } else {
            String::new()
        }
    )?;
    for r in rows {
        let oldest = r
            .oldest
            .map(|o| short_age(now.saturating_sub(o)))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>8} {:>9} {:>6} {:>7} {:>12}{}",
            r.queue,
            r.queued,
            r.deferred,
            r.claimed,
            r.preserved,
            r.held,
            r.writing,
            oldest,
            bytes(r.bytes)
        )?;
        if r.foreign > 0 {
            writeln!(
                out,
                "{:<12} {} foreign file(s) left alone (see mm-recover --dry-run)",
                "", r.foreign
            )?;
        }
    }
    Ok(())
}

/// An age with at most two units: "3h 2m", "5d 1h", "42s".
pub fn short_age(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (len, u) in units {
        if rest >= len || (parts.is_empty() && len == 1) {
            parts.push(format!("{}{u}", rest / len));
            rest %= len;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

fn print_line(out: &mut impl Write, v: &EntryView, now: u64) -> std::io::Result<()> {
    let next = match v.due {
        Some(d) if d > now => format!("in {}", short_age(d - now)),
        _ => "-".into(),
    };
    let rcpts = match (&v.first_recipient, v.recipient_count) {
        (Some(f), Some(n)) if n > 1 => format!("{f} (+{})", n - 1),
        (Some(f), _) => f.clone(),
        _ => "?".into(),
    };
    let sender = match v.sender.as_deref() {
        Some("") => "<>".to_string(),
        Some(s) => s.to_string(),
        None => "?".into(),
    };
    write!(
        out,
        "{} {:<9} {:>7} {:>7} {:>3} {:>9} {} -> {}",
        v.id,
        v.state,
        short_age(v.age_secs),
        v.size,
        v.attempts
            .map(|a| a.to_string())
            .unwrap_or_else(|| "?".into()),
        next,
        sender,
        rcpts
    )?;
    if let Some(h) = &v.claim_holder {
        match (h.alive, &h.host, h.pid) {
            (true, Some(host), Some(pid)) => write!(out, " [held by {host}:{pid}]")?,
            _ => write!(out, " [holder {} dead]", h.token)?,
        }
    }
    if let Some(e) = &v.last_error {
        write!(out, " | {}", mm_core::cli::one_line(e))?;
    }
    writeln!(out)
}
