//! `mm-showq`: what is in the queues, at a glance and entry by entry.
//!
//! Read-only: it never claims, renames or writes, and it works while runners
//! run. The summary comes from file names alone (no entry is opened); the
//! per-entry listing opens each entry read-only, and an entry that moves while
//! being listed is simply skipped.

use std::io::Write;

use clap::Parser;
use mm_core::cli::{SpoolArgs, parse_slice};
use mm_core::report::{self, EntryView, QueueSummary};
use mm_core::scan::Item;
use mm_core::{Slice, clock};

const AFTER_HELP: &str = "\
Examples:
  mm-showq                      summary of every queue
  mm-showq out                  one line per entry of out/
  mm-showq --slice 2/4 out      only the second quarter of out/
  mm-showq --json bad | jq -r 'select(.last_error|test(\"crashed\")) | .id'

States: queued (due now), deferred (waiting for its next attempt), claimed (held
by a runner: .bak), preserved (quarantined: .psv), writing (.tmp).
The JSON schema is documented in docs/json.md.";

/// Show what is in the mm queues.
#[derive(Debug, Parser)]
#[command(name = "mm-showq", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub spool: SpoolArgs,
    /// Queues to list entry by entry; without any, a summary of every queue.
    #[arg(value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Only slice K of N (numbered from 1).
    #[arg(long, value_name = "K/N", value_parser = parse_slice)]
    pub slice: Option<Slice>,
    /// JSON Lines output (schema in docs/json.md).
    #[arg(long)]
    pub json: bool,
}

/// Runs mm-showq.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let spool = cli.spool.open()?;
    let slice = cli.slice.unwrap_or(Slice::ALL);
    let now = clock::now_secs();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if cli.queues.is_empty() {
        let mut rows = Vec::new();
        for q in spool.queues()? {
            rows.push(report::summarize(&q, slice, now)?);
        }
        if cli.json {
            for r in &rows {
                serde_json::to_writer(&mut out, r)?;
                out.write_all(b"\n")?;
            }
        } else {
            print_summary(&mut out, &rows, now)?;
        }
        out.flush()?;
        return Ok(0);
    }
    for name in &cli.queues {
        let q = spool.queue_named(name)?;
        let mut found = Vec::new();
        q.scan(slice, &mut |item| {
            if let Item::Entry { name, place, .. } = item {
                found.push((name, place));
            }
        })?;
        found.sort_by_key(|a| a.0.id);
        for (name, place) in found {
            let path = q.found_path(&name, place);
            let (size, entry) = report::read_for_view(&path);
            if entry
                .as_ref()
                .err()
                .is_some_and(|e| e.contains("No such file"))
            {
                continue; // moved on while we listed
            }
            let mut v = report::view(
                &spool,
                q.name().as_str(),
                &name,
                &path,
                size,
                entry.as_ref().map_err(Clone::clone),
                now,
                false,
            );
            if let Some(s) = cli.slice {
                v.slice = Some(s.to_string());
            }
            if cli.json {
                serde_json::to_writer(&mut out, &v)?;
                out.write_all(b"\n")?;
            } else {
                print_line(&mut out, &v, now)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn print_summary(out: &mut impl Write, rows: &[QueueSummary], now: u64) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>8} {:>9} {:>7} {:>12} {:>10}",
        "QUEUE", "QUEUED", "DEFERRED", "CLAIMED", "PRESERVED", "WRITING", "OLDEST", "BYTES"
    )?;
    for r in rows {
        let oldest = r
            .oldest
            .map(|o| short_age(now.saturating_sub(o)))
            .unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>8} {:>9} {:>7} {:>12} {:>10}",
            r.queue, r.queued, r.deferred, r.claimed, r.preserved, r.writing, oldest, r.bytes
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
