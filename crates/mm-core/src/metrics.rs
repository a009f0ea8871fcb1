//! Metrics in the Prometheus text format (version 0.0.4), for
//! node_exporter's textfile collector: the spool's (`mm-showq --metrics`)
//! and a runner's own counters (`mm-runq --metrics-file`).
//!
//! The writer is small and ours ([`render`]): a family is a name, a help
//! line, a type and samples; label values are escaped as the format says
//! (`\\`, `\"`, `\n`), names are constants of this module. The tests feed the
//! output to Prometheus' own parser (`promtool check metrics`).
//!
//! **Every series is there, with 0 when empty**: each queue (the well-known
//! ones even before they exist) has every state, each quarantine queue every
//! reason class, each queue and slice every runner state, so that an alert
//! on a series never fires or stays silent because the series is missing.
//! Only the per-runner series (one per live or dead runner record) come and
//! go with their runners.
//!
//! The spool's metrics come from file names (one `stat` per entry for the
//! bytes), the runner records and their progress files; only the entries of
//! bad/ and shunt/ are opened, read-only, for their reason class.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::claim::{self, Liveness};
use crate::error::{Error, Result};
use crate::id::State;
use crate::progress::{self, RunnerState};
use crate::report::{self, ShownState};
use crate::runner::Stats;
use crate::scan::Item;
use crate::slice::Slice;
use crate::spool::{Queue, Spool, queues};

/// A family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A value that goes up and down.
    Gauge,
    /// A value that only goes up (from 0 at the start of its process).
    Counter,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A count.
    Int(u64),
    /// A measure (seconds).
    Float(f64),
}

/// One metric family and its samples.
#[derive(Clone, Debug)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// The help text, one line.
    pub help: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Label sets and values.
    pub samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Family {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, labels: &[(&'static str, &str)], v: Value) {
        self.samples
            .push((labels.iter().map(|(k, v)| (*k, v.to_string())).collect(), v));
    }
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders families in the text format: `# HELP`, `# TYPE`, then one line
/// per sample.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        out.push_str("# HELP ");
        out.push_str(f.name);
        out.push(' ');
        escape_help(f.help, &mut out);
        let _ = writeln!(out, "\n# TYPE {} {}", f.name, f.kind.as_str());
        for (labels, v) in &f.samples {
            out.push_str(f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, val)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(val, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            match v {
                Value::Int(n) => {
                    let _ = writeln!(out, " {n}");
                }
                Value::Float(x) if x.is_finite() => {
                    let _ = writeln!(out, " {x}");
                }
                Value::Float(_) => out.push_str(" NaN\n"),
            }
        }
    }
    out
}

/// The directory `path` is written in.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Whether [`write_file`] can write `path`: a file name in an existing
/// directory, not a directory itself (said at a runner's start, not after
/// its first pass: a typo in a unit file).
pub fn check_file(path: &Path) -> Result<()> {
    if path.file_name().is_none() || !dir_of(path).is_dir() || path.is_dir() {
        return Err(Error::new(
            crate::ErrorKind::Config,
            format!(
                "--metrics-file {}: not a file in an existing directory",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Writes `text` to `path` atomically: a temporary file beside it (a hidden
/// name that does not end in `.prom`, which the textfile collector skips),
/// then a rename. A reader sees the old file or the new, never a part.
pub fn write_file(path: &Path, text: &str) -> Result<()> {
    let dir = dir_of(path);
    let name = path.file_name().ok_or_else(|| {
        Error::new(
            crate::ErrorKind::Config,
            format!("not a file name: {}", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let result = std::fs::write(&tmp, text.as_bytes())
        .map_err(|e| Error::io("cannot write", &tmp, e))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(|e| Error::io(format_args!("cannot rename {} to", tmp.display()), path, e))
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The class of a server's reply, by its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyClass {
    /// 2xx: accepted.
    Positive,
    /// 4xx: try again later.
    Transient,
    /// 5xx: refused.
    Permanent,
    /// No SMTP reply: a connection failure, a local delivery, a local reason.
    None,
}

impl ReplyClass {
    /// Every class, in the order written.
    pub const ALL: [ReplyClass; 4] = [
        ReplyClass::Positive,
        ReplyClass::Transient,
        ReplyClass::Permanent,
        ReplyClass::None,
    ];

    /// The class of `reply`: its first three characters as an SMTP code.
    pub fn of(reply: &str) -> ReplyClass {
        let code = reply.get(..3).and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(200..=299) => ReplyClass::Positive,
            Some(400..=499) => ReplyClass::Transient,
            Some(500..=599) => ReplyClass::Permanent,
            _ => ReplyClass::None,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyClass::Positive => "2xx",
            ReplyClass::Transient => "4xx",
            ReplyClass::Permanent => "5xx",
            ReplyClass::None => "none",
        }
    }
}

/// What a runner counts for its metrics file, besides its [`Stats`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunCounters {
    /// Transactions whose message the server accepted (a recipient delivered).
    pub accepted: u64,
    /// Transactions in which no recipient was delivered.
    pub not_accepted: u64,
    /// Message bytes (as stored) of the accepted transactions.
    pub bytes: u64,
    /// Recipient replies by class, in [`ReplyClass::ALL`]'s order.
    pub replies: [u64; 4],
    /// Passes ended.
    pub passes: u64,
    /// Their total duration.
    pub pass_seconds: f64,
    /// The last one's duration.
    pub last_pass_seconds: f64,
    /// When the last one ended (Unix seconds).
    pub last_pass_end: u64,
}

impl RunCounters {
    /// Counts one transaction's recipient results.
    pub fn transaction(&mut self, results: &[crate::delivery::RcptResult], bytes: usize) {
        let delivered = results
            .iter()
            .any(|r| r.verdict == crate::delivery::Verdict::Delivered);
        if delivered {
            self.accepted += 1;
            self.bytes += bytes as u64;
        } else {
            self.not_accepted += 1;
        }
        for r in results {
            let class = ReplyClass::of(&r.reply);
            if let Some(i) = ReplyClass::ALL.iter().position(|c| *c == class) {
                self.replies[i] += 1;
            }
        }
    }

    /// Counts a pass that ended now, after `took`.
    pub fn pass(&mut self, took: Duration, now: u64) {
        self.passes += 1;
        self.pass_seconds += took.as_secs_f64();
        self.last_pass_seconds = took.as_secs_f64();
        self.last_pass_end = now;
    }
}

/// A runner's metrics: its counters since it started, labelled with its
/// queue and slice.
pub fn runner_metrics(queue: &str, slice: Slice, stats: &Stats, c: &RunCounters) -> String {
    let slice = slice.to_string();
    let l = [("queue", queue), ("slice", slice.as_str())];
    // A family of one sample, labelled with the queue and slice.
    let one = |name, kind, help, v: Value| {
        let mut f = Family::new(name, kind, help);
        f.push(&l, v);
        f
    };
    // A counter with one more label, `key`, one sample per value.
    let by = |name, help, key: &'static str, values: &[(&str, u64)]| {
        let mut f = Family::new(name, Kind::Counter, help);
        for (v, n) in values {
            f.push(&[l[0], l[1], (key, v)], Value::Int(*n));
        }
        f
    };
    let rcpts = by(
        "mm_runq_recipients_total",
        "Recipients by outcome of their attempt: delivered, deferred, bounced (refused or expired).",
        "outcome",
        &[
            ("delivered", stats.rcpt_delivered),
            ("deferred", stats.rcpt_deferred),
            ("bounced", stats.rcpt_failed),
        ],
    );
    let entries = by(
        "mm_runq_entries_total",
        "Entries dealt with, by what became of them.",
        "outcome",
        &[
            ("finished", stats.finished),
            ("passed", stats.passed),
            ("deferred", stats.deferred),
            ("quarantined", stats.quarantined),
            ("shunted", stats.shunted),
            ("error", stats.errors),
        ],
    );
    let tx = by(
        "mm_runq_transactions_total",
        "SMTP transactions (or local deliveries): accepted when a recipient was delivered.",
        "result",
        &[("accepted", c.accepted), ("not_accepted", c.not_accepted)],
    );
    let classes: Vec<(&str, u64)> = ReplyClass::ALL
        .iter()
        .zip(c.replies)
        .map(|(class, n)| (class.as_str(), n))
        .collect();
    let replies = by(
        "mm_runq_replies_total",
        "Recipient replies by class: 2xx, 4xx, 5xx, none (no SMTP reply: a connection failure, a local delivery).",
        "class",
        &classes,
    );
    render(&[
        rcpts,
        entries,
        tx,
        one(
            "mm_runq_bytes_total",
            Kind::Counter,
            "Message bytes (as stored) of the accepted transactions.",
            Value::Int(c.bytes),
        ),
        replies,
        one(
            "mm_runq_passes_total",
            Kind::Counter,
            "Passes ended.",
            Value::Int(c.passes),
        ),
        one(
            "mm_runq_pass_duration_seconds_total",
            Kind::Counter,
            "Time spent in passes.",
            Value::Float(c.pass_seconds),
        ),
        one(
            "mm_runq_last_pass_duration_seconds",
            Kind::Gauge,
            "How long the last pass took.",
            Value::Float(c.last_pass_seconds),
        ),
        one(
            "mm_runq_last_pass_end_timestamp_seconds",
            Kind::Gauge,
            "When the last pass ended (Unix time).",
            Value::Int(c.last_pass_end),
        ),
    ])
}

/// Why an entry sits in bad/ or shunt/, as a class (the reason itself is
/// free text: `mm-showq --by error` shows it whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonClass {
    /// Killed its runner too often (taken back more than `--max-recoveries`).
    Crashed,
    /// Its bytes do not decode: kept in a wrapper.
    Undecodable,
    /// It cannot be read or decoded now.
    Unreadable,
    /// Refused by a pipeline stage (shunt/).
    Stage,
    /// Anything else (an interrupted release).
    Other,
}

impl ReasonClass {
    /// Every class, in the order written.
    pub const ALL: [ReasonClass; 5] = [
        ReasonClass::Crashed,
        ReasonClass::Undecodable,
        ReasonClass::Unreadable,
        ReasonClass::Stage,
        ReasonClass::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonClass::Crashed => "crashed",
            ReasonClass::Undecodable => "undecodable",
            ReasonClass::Unreadable => "unreadable",
            ReasonClass::Stage => "stage",
            ReasonClass::Other => "other",
        }
    }

    /// The class of a quarantined entry of `queue`, from what it records.
    pub fn of(queue: &str, entry: &std::result::Result<crate::Entry, String>) -> ReasonClass {
        match entry {
            Err(_) => ReasonClass::Unreadable,
            Ok(e) if e.original.is_some() => ReasonClass::Undecodable,
            Ok(_) if queue == queues::SHUNT => ReasonClass::Stage,
            Ok(e) if e.meta.recoveries > 0 => ReasonClass::Crashed,
            Ok(_) => ReasonClass::Other,
        }
    }
}

/// Per state of one queue: entries, bytes, the oldest enqueue time.
#[derive(Clone, Copy, Debug, Default)]
struct StateCount {
    entries: u64,
    bytes: u64,
    oldest: Option<u64>,
}

/// What one queue's scan gave.
#[derive(Debug, Default)]
struct QueueCount {
    states: [StateCount; 6],
    /// How late the oldest due entry is (seconds).
    late: u64,
    dead_claims: u64,
    foreign: u64,
    reasons: [u64; 5],
}

fn count_queue(
    spool: &Spool,
    queue: &Queue,
    now: u64,
    alive: &mut HashMap<String, bool>,
) -> Result<QueueCount> {
    let mut c = QueueCount::default();
    let quarantine = [queues::BAD, queues::SHUNT].contains(&queue.name().as_str());
    let mut preserved = Vec::new();
    queue.scan_with(Slice::ALL, true, &mut |item| match item {
        Item::Entry { name, place, size } => {
            let shown = ShownState::of(&name, now);
            if let Some(i) = ShownState::ALL.iter().position(|s| *s == shown) {
                let s = &mut c.states[i];
                s.entries += 1;
                s.bytes += size.unwrap_or(0);
                let t = name.id.secs();
                s.oldest = Some(s.oldest.map_or(t, |o| o.min(t)));
            }
            let due = match name.state {
                State::Queued if name.due.is_none_or(|d| d <= now) => {
                    Some(name.due.unwrap_or(name.id.secs()))
                }
                State::Held => name.due.filter(|d| *d <= now),
                _ => None,
            };
            if let Some(d) = due {
                c.late = c.late.max(now.saturating_sub(d));
            }
            if name.state == State::Claimed
                && let Some(token) = &name.holder
            {
                let live = *alive.entry(token.clone()).or_insert_with(|| {
                    matches!(
                        claim::liveness(spool, token, claim::DEFAULT_LEASE),
                        Liveness::Alive(_)
                    )
                });
                if !live {
                    c.dead_claims += 1;
                }
            }
            if quarantine && name.state == State::Preserved {
                preserved.push(queue.found_path(&name, place));
            }
        }
        Item::Foreign { .. } => c.foreign += 1,
    })?;
    for path in preserved {
        // Moved away meanwhile (released): not counted.
        let Ok((_, entry)) = report::read_unless_gone(&path) else {
            continue;
        };
        let class = ReasonClass::of(queue.name().as_str(), &entry);
        if let Some(i) = ReasonClass::ALL.iter().position(|r| *r == class) {
            c.reasons[i] += 1;
        }
    }
    Ok(c)
}

/// The spool's metrics at time `now`: the queues named (every queue, and
/// the well-known ones, if none), the runners, with `stalled_after` the
/// threshold of a stalled runner.
pub fn spool_metrics(
    spool: &Spool,
    named: &[Queue],
    now: u64,
    stalled_after: Duration,
) -> Result<String> {
    let mut list: BTreeMap<String, Queue> = BTreeMap::new();
    if named.is_empty() {
        for q in spool.queues()? {
            list.insert(q.name().to_string(), q);
        }
        for n in [
            queues::IN,
            queues::OUT,
            queues::BOUNCES,
            queues::BAD,
            queues::SHUNT,
        ] {
            if !list.contains_key(n) {
                list.insert(n.to_string(), spool.queue_named(n)?);
            }
        }
    } else {
        for q in named {
            list.insert(q.name().to_string(), q.clone());
        }
    }
    let mut alive = HashMap::new();
    let mut entries = Family::new(
        "mm_queue_entries",
        Kind::Gauge,
        "Entries per queue and state (from file names).",
    );
    let mut bytes = Family::new(
        "mm_queue_bytes",
        Kind::Gauge,
        "Size of the entry files per queue and state.",
    );
    let mut oldest = Family::new(
        "mm_queue_oldest_age_seconds",
        Kind::Gauge,
        "Age of the oldest entry per queue and state, since it was enqueued (0: none).",
    );
    let mut late = Family::new(
        "mm_queue_due_late_seconds",
        Kind::Gauge,
        "How late the oldest due entry is: time since it became due (its due time, else its enqueue time); 0 when nothing is due.",
    );
    let mut dead = Family::new(
        "mm_queue_dead_claims",
        Kind::Gauge,
        "Claims (.bak) whose runner is dead: mm-recover or a runner start takes them back.",
    );
    let mut foreign = Family::new(
        "mm_queue_foreign_files",
        Kind::Gauge,
        "Files in a queue that are not entries (left alone; mm-recover --dry-run lists them).",
    );
    let mut reasons = Family::new(
        "mm_quarantined_entries",
        Kind::Gauge,
        "Quarantined entries of bad/ and shunt/ by reason class: crashed, undecodable, unreadable, stage, other.",
    );
    for (name, q) in &list {
        let c = count_queue(spool, q, now, &mut alive)?;
        for (i, st) in ShownState::ALL.iter().enumerate() {
            let l = [("queue", name.as_str()), ("state", st.as_str())];
            let s = c.states[i];
            entries.push(&l, Value::Int(s.entries));
            bytes.push(&l, Value::Int(s.bytes));
            oldest.push(
                &l,
                Value::Int(s.oldest.map_or(0, |o| now.saturating_sub(o))),
            );
        }
        let l = [("queue", name.as_str())];
        late.push(&l, Value::Int(c.late));
        dead.push(&l, Value::Int(c.dead_claims));
        foreign.push(&l, Value::Int(c.foreign));
        if [queues::BAD, queues::SHUNT].contains(&name.as_str()) {
            for (i, r) in ReasonClass::ALL.iter().enumerate() {
                reasons.push(
                    &[("queue", name.as_str()), ("reason", r.as_str())],
                    Value::Int(c.reasons[i]),
                );
            }
        }
    }
    let rows = progress::runners(spool, named, now, stalled_after)?;
    // Every queue has its slices' runner counts; a queue with no runner the
    // whole queue's, "1/1", at 0.
    let mut slices: BTreeMap<(String, String), [u64; 3]> = BTreeMap::new();
    for name in list.keys() {
        slices.insert((name.clone(), Slice::ALL.to_string()), [0; 3]);
    }
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for r in &rows {
        if let (Some(q), Some(s)) = (&r.queue, &r.slice) {
            seen.insert(q.clone());
            let counts = slices.entry((q.clone(), s.clone())).or_insert([0; 3]);
            if let Some(i) = RunnerState::ALL.iter().position(|st| *st == r.state) {
                counts[i] += 1;
            }
        }
    }
    // A slice of a slicing in use that nobody runs: its series, at 0.
    for (q, s) in progress::missing_slices(&rows) {
        if list.contains_key(&q) {
            slices.entry((q, s)).or_insert([0; 3]);
        }
    }
    let mut runners = Family::new(
        "mm_runners",
        Kind::Gauge,
        "Queue runners per queue, slice and state: alive, stalled (due entries waiting, no progress past the threshold), dead (a record left behind).",
    );
    for ((q, s), counts) in &slices {
        // The "1/1" placeholder of a queue whose runners run slices.
        if s == "1/1" && seen.contains(q) && counts.iter().all(|n| *n == 0) {
            continue;
        }
        for (i, st) in RunnerState::ALL.iter().enumerate() {
            runners.push(
                &[("queue", q), ("slice", s), ("state", st.as_str())],
                Value::Int(counts[i]),
            );
        }
    }
    let mut progress_ts = Family::new(
        "mm_runner_last_progress_timestamp_seconds",
        Kind::Gauge,
        "When each runner last made progress (Unix time): claimed, ran a stage, recorded a transaction, finished an entry, or ended a pass.",
    );
    let mut in_hand = Family::new(
        "mm_runner_in_hand_entries",
        Kind::Gauge,
        "Entries each runner holds.",
    );
    let mut up = Family::new(
        "mm_runner_up",
        Kind::Gauge,
        "1 if the runner is alive (stalled or not), 0 if it is dead (its record left behind).",
    );
    let mut stalled = Family::new(
        "mm_runner_stalled",
        Kind::Gauge,
        "1 if the runner is stalled, else 0.",
    );
    for r in &rows {
        let (Some(q), Some(s)) = (&r.queue, &r.slice) else {
            continue;
        };
        let host = r.host.clone().unwrap_or_default();
        // No state label: a runner's series stay one series when it stalls.
        let l = [
            ("queue", q.as_str()),
            ("slice", s.as_str()),
            ("token", r.token.as_str()),
            ("host", host.as_str()),
        ];
        if let Some(idle) = r.idle_secs {
            progress_ts.push(&l, Value::Int(now.saturating_sub(idle)));
        }
        in_hand.push(&l, Value::Int(r.in_hand.len() as u64));
        up.push(&l, Value::Int(u64::from(r.state != RunnerState::Dead)));
        stalled.push(&l, Value::Int(u64::from(r.state == RunnerState::Stalled)));
    }
    let mut stamp = Family::new(
        "mm_showq_timestamp_seconds",
        Kind::Gauge,
        "When these metrics were made (Unix time).",
    );
    stamp.push(&[], Value::Int(now));
    Ok(render(&[
        entries,
        bytes,
        oldest,
        late,
        dead,
        foreign,
        reasons,
        runners,
        progress_ts,
        in_hand,
        up,
        stalled,
        stamp,
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_escapes_label_values_and_help() {
        let mut f = Family::new("mm_x", Kind::Gauge, "a \\ help\nline");
        f.push(&[("a", "q\"u\\o\nte")], Value::Int(3));
        f.push(&[], Value::Float(0.25));
        f.push(&[], Value::Float(f64::NAN));
        assert_eq!(
            render(&[f]),
            "# HELP mm_x a \\\\ help\\nline\n# TYPE mm_x gauge\n\
             mm_x{a=\"q\\\"u\\\\o\\nte\"} 3\nmm_x 0.25\nmm_x NaN\n"
        );
    }

    #[test]
    fn replies_are_classed_by_their_code() {
        assert_eq!(ReplyClass::of("250 2.0.0 Ok"), ReplyClass::Positive);
        assert_eq!(ReplyClass::of("451 4.3.0 later"), ReplyClass::Transient);
        assert_eq!(ReplyClass::of("550 no"), ReplyClass::Permanent);
        assert_eq!(ReplyClass::of("connection refused"), ReplyClass::None);
        assert_eq!(ReplyClass::of("2"), ReplyClass::None);
        assert_eq!(ReplyClass::of("é50"), ReplyClass::None);
        assert_eq!(ReplyClass::of("999 odd"), ReplyClass::None);
    }

    #[test]
    fn an_empty_spool_has_every_series_at_zero() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let text = spool_metrics(&spool, &[], 1_000, Duration::from_secs(60)).unwrap();
        for q in ["in", "out", "bounces", "bad", "shunt"] {
            for st in ShownState::ALL {
                let line = format!(
                    "mm_queue_entries{{queue=\"{q}\",state=\"{}\"}} 0",
                    st.as_str()
                );
                assert!(text.contains(&line), "no {line} in\n{text}");
            }
            let line = format!("mm_runners{{queue=\"{q}\",slice=\"1/1\",state=\"stalled\"}} 0");
            assert!(text.contains(&line), "no {line} in\n{text}");
        }
        assert!(text.contains("mm_quarantined_entries{queue=\"bad\",reason=\"crashed\"} 0"));
        // Read-only: the well-known queues are not made.
        assert!(!d.path().join("out").exists());
    }

    #[test]
    fn a_metrics_file_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("mm.prom");
        write_file(&p, "a 1\n").unwrap();
        write_file(&p, "b 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b 2\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
