//! `cargo xtask bench`: our figures beside the physical floor, measured in
//! the same run.
//!
//! Everything is built in release mode first: the six tools and `mm-floor`
//! (`src/bin/mm-floor.rs`), the minimal programs that make only the system
//! calls a workload needs. For each workload the benchmark alternates ours
//! and the floor run by run (A B, then B A, ...): on this kind of disk
//! (ext4 without a journal) rates swing many-fold with what was deleted in
//! the last minutes, so only the ratio of neighbouring runs means anything.
//! Each figure is the median of its repetitions.
//!
//! Workloads (issue 6): enqueue one process per message; bulk enqueue;
//! drain with a no-op action at 1,000, 100,000 and 1,000,000 entries with
//! mm-runq's peak memory; SMTP delivery to Postfix's smtp-sink against
//! smtp-source; mm-showq's summary and mm-recover over the largest backlog.
//! Issue 14 added peers and costs: CPU per delivered message (getrusage of
//! the finished child) beside smtp-source's (`cpu`); a backlog held and
//! then released, drained by mm and by a private Postfix relaying to the
//! same smtp-sink (`postfix`); delivery through a relay that delays each
//! direction by 1 ms (`DelayRelay`), mm against smtp-source and against
//! Postfix's smtp client (`rtt`); each binary's size and start-up time
//! (`startup`). The delivery floor (`mm-floor deliver`, and `deliver-ahead`
//! with the next envelope behind the data) runs beside the CPU row and the
//! 1-recipient, 4-connection SMTP row: what any queue that claims a file per
//! message could reach there. The tools are the `cargo xtask dist` binaries, each built
//! alone with only what it uses. The table is printed and written to
//! `target/bench.json`.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::json;

/// What to run, from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// Largest backlog drained (1,000,000 by default).
    pub max_backlog: usize,
    /// Repetitions of the small workloads (the largest backlog runs once).
    pub reps: usize,
    /// Only these workloads (names as printed), or all.
    pub only: Vec<String>,
}

/// One line of the table.
struct Row {
    workload: String,
    unit: &'static str,
    ours: f64,
    floor: f64,
    floor_what: &'static str,
    /// ours/floor must be at least this.
    target: Option<f64>,
    /// Or: ours must be at most this (a cost, such as CPU per message).
    at_most: Option<f64>,
    note: String,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.ours / self.floor
    }

    /// Whether the row meets its target, if it has one.
    fn met(&self) -> Option<bool> {
        match (self.target, self.at_most) {
            (Some(t), _) => Some(self.ratio() >= t),
            (None, Some(m)) => Some(self.ours <= m),
            (None, None) => None,
        }
    }
}

/// The message every workload uses: about 4 KiB of ordinary text.
fn message() -> Vec<u8> {
    let mut m = String::from(
        "From: owner@example.org\r\nTo: list@example.org\r\nSubject: benchmark\r\nMessage-ID: <bench@example.org>\r\n\r\n",
    );
    let mut i = 0;
    while m.len() < 4096 - 80 {
        let _ = write!(
            m,
            "Line {i:04} of the benchmark message, some ordinary text for the body.\r\n"
        );
        i += 1;
    }
    m.into_bytes()
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("bench: building each tool alone (cargo xtask dist) and mm-floor");
    let bins = crate::dist::build(root, true)?;
    let st = Command::new(&cargo)
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "xtask",
            "--bin",
            "mm-floor",
        ])
        .status()
        .context("cannot run cargo build")?;
    ensure!(
        st.success(),
        "cargo build --release -p xtask --bin mm-floor failed"
    );
    let floor_bin = bins.with_file_name("release").join("mm-floor");
    // Under target/, on the disk a spool would be on, never a tmpfs.
    let work = tempfile::Builder::new()
        .prefix("bench-")
        .tempdir_in(root.join("target"))
        .context("cannot make the work directory")?;
    let b = Bench {
        bins,
        floor_bin,
        work: work.path().to_path_buf(),
        msg: work.path().join("message.eml"),
        reps: opts.reps.max(1),
    };
    fs::write(&b.msg, message())?;
    let want = |name: &str| opts.only.is_empty() || opts.only.iter().any(|o| name.starts_with(o));

    let mut rows = Vec::new();
    if want("enqueue") {
        rows.push(b.enqueue_per_process(300)?);
        rows.push(b.enqueue_bulk(2000)?);
    }
    if want("drain") {
        let mut sizes = vec![1_000, 100_000, 1_000_000];
        sizes.retain(|&n| n <= opts.max_backlog);
        if sizes.is_empty() {
            sizes.push(opts.max_backlog);
        }
        let largest = *sizes.last().unwrap_or(&1_000);
        let mut rate_at = Vec::new();
        for &n in &sizes {
            let reps = if n >= 1_000_000 { 1 } else { b.reps };
            let (row, views) = b.drain(n, reps, n == largest)?;
            rate_at.push((n, row.ours));
            rows.push(row);
            rows.extend(views);
        }
        if let (Some(&(n0, r0)), Some(&(n1, r1))) = (rate_at.first(), rate_at.last())
            && n1 > n0
        {
            rows.push(Row {
                workload: format!("drain rate at {} vs at {}", thousands(n1), thousands(n0)),
                unit: "entries/s",
                ours: r1,
                floor: r0,
                floor_what: "ours at the smallest backlog",
                target: Some(0.8),
                at_most: None,
                note: String::new(),
            });
        }
    }
    if want("startup") {
        rows.extend(b.startup()?);
    }
    let smtp_rows = ["smtp", "cpu", "postfix", "rtt"];
    if smtp_rows.iter().any(|w| want(w)) {
        match Peers::find() {
            Err(why) => eprintln!("bench: {why}; SMTP workloads skipped"),
            Ok(peers) => {
                if want("smtp") {
                    rows.extend(b.smtp(&peers)?);
                }
                if want("cpu") {
                    rows.extend(b.cpu(&peers)?);
                }
                // One private Postfix for both groups, when we may run one.
                let postfix = if want("postfix") || want("rtt") {
                    b.private_postfix()?
                } else {
                    None
                };
                if want("postfix") {
                    rows.extend(b.postfix_backlog(&peers, postfix.as_ref())?);
                }
                if want("rtt") {
                    rows.extend(b.rtt(&peers, postfix.as_ref())?);
                }
            }
        }
    }
    print_table(&rows);
    let json_path = root.join("target/bench.json");
    let doc = json!({
        "schema": 1,
        "machine": machine(),
        "rows": rows.iter().map(|r| json!({
            "workload": r.workload,
            "unit": r.unit,
            "ours": r.ours,
            "floor": r.floor,
            "floor_is": r.floor_what,
            "ratio": r.ratio(),
            "target": r.target,
            "at_most": r.at_most,
            "met": r.met(),
            "note": r.note,
        })).collect::<Vec<_>>(),
    });
    fs::write(&json_path, serde_json::to_vec_pretty(&doc)?)?;
    eprintln!("bench: wrote {}", json_path.display());
    Ok(())
}

struct Bench {
    /// The tools (`target/dist`).
    bins: PathBuf,
    /// `mm-floor` (`target/release`).
    floor_bin: PathBuf,
    work: PathBuf,
    msg: PathBuf,
    reps: usize,
}

/// A finished run: its wall time, peak resident memory and CPU time.
struct Timed {
    secs: f64,
    max_rss_kib: u64,
    /// User plus system time of the process and its threads (getrusage).
    cpu_secs: f64,
}

impl Bench {
    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(self.bins.join(name));
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c
    }

    fn floor(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.floor_bin);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c.args(args);
        c
    }

    fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.work.join(name);
        if d.exists() {
            fs::remove_dir_all(&d)?;
        }
        fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Ours and the floor (or peer), A B then B A ...: their medians.
    fn alternate(
        &self,
        reps: usize,
        mut ours: impl FnMut() -> anyhow::Result<f64>,
        mut floor: impl FnMut() -> anyhow::Result<f64>,
    ) -> anyhow::Result<(f64, f64)> {
        let m = self.rotate(reps, &mut [&mut ours, &mut floor])?;
        Ok((m[0], m[1]))
    }

    /// Runs each side `reps` times, repetition `r` starting with side
    /// `r % n` and going round (two sides: A B, then B A, ...), so that no
    /// side always runs first or right after the same neighbour. The
    /// medians, in order.
    fn rotate(
        &self,
        reps: usize,
        sides: &mut [&mut dyn FnMut() -> anyhow::Result<f64>],
    ) -> anyhow::Result<Vec<f64>> {
        let n = sides.len();
        let mut got: Vec<Vec<f64>> = vec![Vec::new(); n];
        for r in 0..reps {
            for k in 0..n {
                let i = (r + k) % n;
                got[i].push(sides[i]()?);
            }
        }
        let medians: Vec<f64> = got.into_iter().map(median).collect();
        eprintln!("bench:   ours, then the others: {medians:.1?}");
        Ok(medians)
    }

    /// The MTA-pipe case: one mm-enqueue process per message, against one
    /// minimal process per durable file.
    fn enqueue_per_process(&self, n: usize) -> anyhow::Result<Row> {
        eprintln!("bench: enqueue, one process per message ({n} messages per run)");
        let spool = self.fresh_dir("pipe-spool")?;
        let flat = self.fresh_dir("pipe-floor")?;
        // Create the queue and its buckets first: steady state, as on a live spool.
        self.enqueue_files(&spool, "in", 512, &[])?;
        let (ours, floor) = self.alternate(
            self.reps,
            || {
                let t = Instant::now();
                for _ in 0..n {
                    let st = self
                        .tool("mm-enqueue")
                        .args(["--spool"])
                        .arg(&spool)
                        .args(["-q", "in", "-f", "owner@example.org", "bob@example.org"])
                        .stdin(fs::File::open(&self.msg)?)
                        .status()?;
                    ensure!(st.success(), "mm-enqueue failed: {st}");
                }
                Ok(n as f64 / t.elapsed().as_secs_f64())
            },
            || {
                let t = Instant::now();
                for _ in 0..n {
                    let st = self
                        .floor(&["enqueue-one"])
                        .arg(&flat)
                        .stdin(fs::File::open(&self.msg)?)
                        .status()?;
                    ensure!(st.success(), "mm-floor failed: {st}");
                }
                Ok(n as f64 / t.elapsed().as_secs_f64())
            },
        )?;
        Ok(Row {
            workload: "enqueue, one process per message".into(),
            unit: "msg/s",
            ours,
            floor,
            floor_what: "one process: tmp, write, fdatasync, rename, fsync dir",
            target: Some(0.8),
            at_most: None,
            note: String::new(),
        })
    }

    /// `mm-enqueue --file` × n in one process, against n durable files in one process.
    fn enqueue_bulk(&self, n: usize) -> anyhow::Result<Row> {
        eprintln!("bench: enqueue in bulk ({n} files per run)");
        let flat = self.fresh_dir("bulk-floor")?;
        let size = message().len().to_string();
        let (ours, floor) = self.alternate(
            self.reps,
            || {
                let spool = self.fresh_dir("bulk-spool")?;
                let t = Instant::now();
                self.enqueue_files(&spool, "in", n, &[])?;
                let rate = n as f64 / t.elapsed().as_secs_f64();
                ensure!(count_entries(&spool.join("in"))? == n, "entries missing");
                Ok(rate)
            },
            || {
                let t = Instant::now();
                let st = self
                    .floor(&["durable-files"])
                    .arg(&flat)
                    .args([n.to_string(), size.clone()])
                    .status()?;
                ensure!(st.success(), "mm-floor failed: {st}");
                Ok(n as f64 / t.elapsed().as_secs_f64())
            },
        )?;
        Ok(Row {
            workload: "enqueue in bulk (--file, one process)".into(),
            unit: "msg/s",
            ours,
            floor,
            floor_what: "one durable file per entry, in-process",
            target: Some(5.0),
            at_most: None,
            note: "every entry durable before exit 0 (group commit)".into(),
        })
    }

    /// Enqueues `n` copies of the message into `queue` with `mm-enqueue
    /// --file`, in processes of at most 5,000 files.
    fn enqueue_files(
        &self,
        spool: &Path,
        queue: &str,
        n: usize,
        rcpts: &[String],
    ) -> anyhow::Result<()> {
        let mut left = n;
        while left > 0 {
            let k = left.min(5000);
            let mut c = self.tool("mm-enqueue");
            c.arg("--spool")
                .arg(spool)
                .args(["-q", queue, "-f", "owner@example.org"]);
            if rcpts.is_empty() {
                c.args(["--to", "bob@example.org"]);
            }
            for r in rcpts {
                c.args(["--to", r]);
            }
            for _ in 0..k {
                c.arg("--file").arg(&self.msg);
            }
            let st = c.status().context("cannot run mm-enqueue")?;
            ensure!(st.success(), "mm-enqueue --file failed: {st}");
            left -= k;
        }
        Ok(())
    }

    /// Drains a backlog of `n` entries with `mm-runq --discard`, against
    /// rename + read + unlink of as many files of the same size in a flat
    /// directory. With `views`, also times mm-showq's summary and mm-recover
    /// on the full backlog first.
    fn drain(&self, n: usize, reps: usize, views: bool) -> anyhow::Result<(Row, Vec<Row>)> {
        eprintln!(
            "bench: drain {} entries ({reps} run{})",
            thousands(n),
            if reps == 1 { "" } else { "s" }
        );
        // Shared by the two closures below.
        let peak = Cell::new(0u64);
        let view_rows = RefCell::new(Vec::new());
        let entry_size = Cell::new(0u64);
        let first = Cell::new(true);
        let (ours, floor) = self.alternate(
            reps,
            || {
                let spool = self.fresh_dir("drain-spool")?;
                self.enqueue_files(&spool, "in", n, &[])?;
                sync_fs(&spool)?;
                entry_size.set(entry_size.get().max(any_entry_size(&spool.join("in"))?));
                if views && first.replace(false) {
                    *view_rows.borrow_mut() = self.views(&spool, n)?;
                }
                let t = self.discard_drain(&spool)?;
                peak.set(peak.get().max(t.max_rss_kib));
                fs::remove_dir_all(&spool)?;
                Ok(n as f64 / t.secs)
            },
            || {
                let t = self.floor_drain("drain-floor", n, entry_size.get().max(4096))?;
                Ok(n as f64 / t.secs)
            },
        )?;
        let row = Row {
            workload: format!("drain {} entries, no-op action", thousands(n)),
            unit: "entries/s",
            ours,
            floor,
            floor_what: "rename + read + unlink, flat directory",
            target: Some(0.9),
            at_most: None,
            note: format!("mm-runq peak RSS {:.1} MiB", peak.get() as f64 / 1024.0),
        };
        Ok((row, view_rows.into_inner()))
    }

    /// mm-showq's summary and mm-recover over a full backlog, warm cache,
    /// against reading every directory of the queue.
    fn views(&self, spool: &Path, n: usize) -> anyhow::Result<Vec<Row>> {
        eprintln!(
            "bench: mm-showq and mm-recover over {} entries",
            thousands(n)
        );
        let queue = spool.join("in");
        // Warm the cache, and check that a summary opens no entry file.
        let opened = entries_opened_by(&self.bins.join("mm-showq"), spool)?;
        let list = || -> anyhow::Result<f64> {
            Ok(n as f64 / self.timed(self.floor(&["list"]).arg(&queue))?.secs)
        };
        let (showq, floor_s) = self.alternate(
            self.reps,
            || {
                Ok(n as f64
                    / self
                        .timed(self.tool("mm-showq").arg("--spool").arg(spool))?
                        .secs)
            },
            list,
        )?;
        let (recover, floor_r) = self.alternate(
            self.reps,
            || {
                Ok(n as f64
                    / self
                        .timed(
                            self.tool("mm-recover")
                                .arg("--spool")
                                .arg(spool)
                                .args(["-q", "in"]),
                        )?
                        .secs)
            },
            list,
        )?;
        ensure!(
            count_entries(&queue)? == n,
            "mm-recover changed the queued entries"
        );
        Ok(vec![
            Row {
                workload: format!("mm-showq summary, {} entries", thousands(n)),
                unit: "entries/s",
                ours: showq,
                floor: floor_s,
                floor_what: "readdir of every directory of the queue",
                target: None,
                at_most: None,
                note: format!(
                    "{:.2} s (target < 1 s){}",
                    n as f64 / showq,
                    match opened {
                        Some(k) => format!("; entry files opened: {k}"),
                        None => String::new(),
                    }
                ),
            },
            Row {
                workload: format!("mm-recover, {} entries", thousands(n)),
                unit: "entries/s",
                ours: recover,
                floor: floor_r,
                floor_what: "readdir of every directory of the queue",
                target: None,
                at_most: None,
                note: format!("{:.2} s", n as f64 / recover),
            },
        ])
    }

    /// SMTP to smtp-sink: 1 and 50 recipients, over 1 and 4 connections,
    /// against smtp-source sending the same to the same sink.
    fn smtp(&self, peers: &Peers) -> anyhow::Result<Vec<Row>> {
        let port = peers.sink.port();
        let mut rows = Vec::new();
        let size = self.entry_size()?;
        for (rcpts, msgs) in [(1usize, 2000usize), (50, 1000)] {
            for conns in [1usize, 4] {
                eprintln!(
                    "bench: SMTP, {rcpts} recipient(s), {conns} connection(s), {msgs} messages"
                );
                let rate = |t: Timed| msgs as f64 / t.secs;
                let mut ours = || Ok(rate(self.mm_smtp(msgs, conns, rcpts, port)?));
                let mut source = || Ok(rate(peers.source(msgs, conns, rcpts, port)?));
                // With one recipient over four connections (CPU-bound on
                // two cores) the delivery floor runs beside them: what any
                // queue that claims a file per message could reach here.
                let floors = rcpts == 1 && conns > 1;
                let mut floor = || Ok(rate(self.floor_deliver(msgs, conns, port, false, size)?));
                let mut ahead = || Ok(rate(self.floor_deliver(msgs, conns, port, true, size)?));
                let got = if floors {
                    self.rotate(
                        self.reps,
                        &mut [&mut ours, &mut source, &mut floor, &mut ahead],
                    )?
                } else {
                    self.rotate(self.reps, &mut [&mut ours, &mut source])?
                };
                let (ours, floor) = (got[0], got[1]);
                rows.push(Row {
                    workload: format!(
                        "SMTP to smtp-sink, {rcpts} rcpt{}, {conns} connection{}",
                        plural(rcpts),
                        plural(conns)
                    ),
                    unit: "msg/s",
                    ours,
                    floor,
                    floor_what: "smtp-source (Postfix's load generator), same sink",
                    // Issue 14: over 4 connections on 2 cores, CPU per
                    // message decides; 0.7 of a client with no queue.
                    target: Some(match (rcpts, conns) {
                        (1, 1) => 0.9,
                        (1, _) => 0.7,
                        _ => 0.8,
                    }),
                    at_most: None,
                    note: if floors {
                        format!(
                            "CPU-bound (2 cores); the delivery floor reaches {:.2} of smtp-source, {:.2} with the next envelope behind the data",
                            got[2] / got[1],
                            got[3] / got[1]
                        )
                    } else {
                        "per-recipient outcomes recorded".into()
                    },
                });
                if floors {
                    rows.push(Row {
                        workload: format!(
                            "SMTP to smtp-sink, 1 rcpt, {conns} connections, vs the delivery floor"
                        ),
                        unit: "msg/s",
                        ours,
                        floor: got[2],
                        floor_what: "mm-floor deliver: rename, read, pipelined envelope, data, unlink",
                        target: None,
                        at_most: None,
                        note: format!(
                            "deliver-ahead (the next envelope behind the data): {:.0} msg/s",
                            got[3]
                        ),
                    });
                }
            }
        }
        Ok(rows)
    }

    /// CPU time per delivered message (user plus system, all threads, from
    /// getrusage of the finished process): mm-runq draining 2,000 entries of
    /// one recipient to smtp-sink over one connection, against smtp-source
    /// sending as many. A second row splits off the queue's share: the same
    /// drain with `--discard` (claim, read, remove; no SMTP) against
    /// mm-floor's rename + read + unlink of as many files of the same size.
    /// smtp-source's figure plus that floor is what a queued message's
    /// delivery cannot do without.
    fn cpu(&self, peers: &Peers) -> anyhow::Result<Vec<Row>> {
        let (msgs, port) = (2000usize, peers.sink.port());
        eprintln!("bench: CPU per message, 1 recipient, 1 connection, {msgs} messages");
        let us = |t: Timed| t.cpu_secs * 1e6 / msgs as f64;
        let size = self.entry_size()?;
        let got = self.rotate(
            self.reps,
            &mut [
                &mut || Ok(us(self.mm_smtp(msgs, 1, 1, port)?)),
                &mut || Ok(us(peers.source(msgs, 1, 1, port)?)),
                &mut || Ok(us(self.floor_deliver(msgs, 1, port, false, size)?)),
                &mut || Ok(us(self.floor_deliver(msgs, 1, port, true, size)?)),
            ],
        )?;
        let smtp = Row {
            workload: "CPU per message, SMTP, 1 rcpt, 1 connection".into(),
            unit: "µs/msg",
            ours: got[0],
            floor: got[1],
            floor_what: "smtp-source (Postfix's load generator), same sink",
            target: None,
            at_most: Some(60.0),
            note: "user+sys of the process (getrusage), 4 KiB; ratio: lower is better".into(),
        };
        let delivery = Row {
            workload: "CPU per message, SMTP, 1 rcpt, 1 connection, vs the delivery floor".into(),
            unit: "µs/msg",
            ours: got[0],
            floor: got[2],
            floor_what: "mm-floor deliver: rename, read, pipelined envelope, data, unlink",
            target: None,
            at_most: None,
            note: format!(
                "deliver-ahead (the next envelope behind the data, one wait per message): {:.0} µs",
                got[3]
            ),
        };
        eprintln!("bench: CPU per message, the queue's share: a no-op drain of {msgs}");
        let entry_size = Cell::new(4096u64);
        let (ours, floor) = self.alternate(
            self.reps,
            || {
                let spool = self.fresh_dir("cpu-drain-spool")?;
                self.enqueue_files(&spool, "in", msgs, &[])?;
                sync_fs(&spool)?;
                entry_size.set(any_entry_size(&spool.join("in"))?.max(4096));
                let t = self.discard_drain(&spool)?;
                fs::remove_dir_all(&spool)?;
                Ok(us(t))
            },
            || {
                let t = self.floor_drain("cpu-drain-floor", msgs, entry_size.get())?;
                Ok(us(t))
            },
        )?;
        let disk = Row {
            workload: "CPU per message, no-op drain (the queue's share)".into(),
            unit: "µs/msg",
            ours,
            floor,
            floor_what: "rename + read + unlink of as many files (mm-floor drain)",
            target: None,
            at_most: None,
            note: "user+sys (getrusage); smtp-source + this floor = what a queued delivery cannot do without".into(),
        };
        Ok(vec![smtp, delivery, disk])
    }

    /// A private Postfix relaying to a smarthost (set per workload), or
    /// `None` (said why) where we may not run one.
    fn private_postfix(&self) -> anyhow::Result<Option<mm_e2e::postfix::Postfix>> {
        if !mm_e2e::is_root() {
            eprintln!("bench: not root; the Postfix peer rows are skipped");
            return Ok(None);
        }
        if let Err(why) = mm_e2e::postfix::program("postfix") {
            eprintln!("bench: {why:#}; the Postfix peer rows are skipped");
            return Ok(None);
        }
        // Postfix's daemons (user postfix) must reach their queue directory.
        set_mode(&self.work, 0o755)?;
        let spool = self.fresh_dir("postfix-spool")?;
        let mut pf = mm_e2e::postfix::Postfix::configure(&mm_e2e::postfix::Settings {
            dir: &self.work.join("postfix"),
            port: mm_e2e::free_port(),
            // The pipe into mm is configured but unused here: the
            // benchmark's mail goes to example.org, out through smtp(8).
            domain: "lists.example",
            user: "nobody",
            group: "nogroup",
            enqueue: &self.bins.join("mm-enqueue"),
            spool: &spool,
        })?;
        pf.set(&[
            // Everything else out through smtp(8) to the relayhost...
            "default_transport=smtp",
            "relay_transport=smtp",
            // ...but each message submitted is put on hold, so that a
            // backlog builds up (the smarthost "down") until released.
            "smtpd_data_restrictions=check_client_access inline:{127.0.0.1=HOLD}",
            "smtp_destination_recipient_limit=1000",
        ])?;
        pf.start()?;
        eprintln!(
            "bench: private Postfix {} (smtpd on 127.0.0.1:{})",
            pf.version, pf.port
        );
        Ok(Some(pf))
    }

    /// The same backlog (3,000 messages of 4 KiB, one recipient) drained by
    /// mm and by Postfix, over 1 and 4 connections to smtp-sink.
    fn postfix_backlog(
        &self,
        peers: &Peers,
        pf: Option<&mm_e2e::postfix::Postfix>,
    ) -> anyhow::Result<Vec<Row>> {
        let Some(pf) = pf else {
            return Ok(Vec::new());
        };
        let (msgs, port) = (3000usize, peers.sink.port());
        let mut rows = Vec::new();
        for conns in [1usize, 4] {
            eprintln!("bench: backlog of {msgs}, {conns} connection(s): mm and Postfix");
            let (ours, floor) = self.alternate(
                self.reps,
                || Ok(msgs as f64 / self.mm_smtp(msgs, conns, 1, port)?.secs),
                || postfix_drain(peers, pf, msgs, conns, 1, port),
            )?;
            rows.push(Row {
                workload: format!(
                    "backlog of 3,000 to smtp-sink, {conns} connection{}",
                    plural(conns)
                ),
                unit: "msg/s",
                ours,
                floor,
                floor_what: "a private Postfix relaying the same backlog, released at once",
                target: Some(1.0),
                at_most: None,
                note: format!("Postfix {}; mm: mm-runq --until-empty", pf.version),
            });
        }
        Ok(rows)
    }

    /// Delivery through a relay that holds each direction's bytes for 1 ms
    /// (a round trip of about 2 ms, measured), one connection, 1 and 50
    /// recipients per message: mm against smtp-source and against Postfix's
    /// smtp client.
    fn rtt(
        &self,
        peers: &Peers,
        pf: Option<&mm_e2e::postfix::Postfix>,
    ) -> anyhow::Result<Vec<Row>> {
        let one_way = Duration::from_millis(1);
        let measured = mm_e2e::DelayRelay::measure_round_trip(one_way, 50)?;
        let relay = mm_e2e::DelayRelay::start(
            std::net::SocketAddr::from(([127, 0, 0, 1], peers.sink.port())),
            one_way,
        )?;
        let port = relay.port();
        let rtt_ms = measured.as_secs_f64() * 1e3;
        let mut rows = Vec::new();
        // Messages per run: each run takes a few seconds at most.
        for (rcpts, ours_n, source_n, postfix_n) in
            [(1usize, 500usize, 300usize, 500usize), (50, 300, 30, 200)]
        {
            eprintln!("bench: {rtt_ms:.2} ms round trip, {rcpts} recipient(s), 1 connection");
            let round_trips = |rate: f64| 1.0 / (rate * measured.as_secs_f64());
            let (ours, floor) = self.alternate(
                self.reps,
                || Ok(ours_n as f64 / self.mm_smtp(ours_n, 1, rcpts, port)?.secs),
                || Ok(source_n as f64 / peers.source(source_n, 1, rcpts, port)?.secs),
            )?;
            rows.push(Row {
                workload: format!(
                    "SMTP at {rtt_ms:.1} ms RTT, {rcpts} rcpt{}, vs smtp-source",
                    plural(rcpts)
                ),
                unit: "msg/s",
                ours,
                floor,
                floor_what: "smtp-source (one reply waited for per command), same relay",
                target: (rcpts > 1).then_some(3.0),
                at_most: None,
                note: format!(
                    "1 connection; round trips per message: ours {:.1}, smtp-source {:.1}",
                    round_trips(ours),
                    round_trips(floor)
                ),
            });
            let Some(pf) = pf else { continue };
            let (ours, floor) = self.alternate(
                self.reps,
                || Ok(ours_n as f64 / self.mm_smtp(ours_n, 1, rcpts, port)?.secs),
                || postfix_drain(peers, pf, postfix_n, 1, rcpts, port),
            )?;
            rows.push(Row {
                workload: format!(
                    "SMTP at {rtt_ms:.1} ms RTT, {rcpts} rcpt{}, vs Postfix",
                    plural(rcpts)
                ),
                unit: "msg/s",
                ours,
                floor,
                floor_what: "a private Postfix relaying the same backlog, released at once",
                target: (rcpts > 1).then_some(1.0),
                at_most: None,
                note: format!(
                    "1 connection; round trips per message: ours {:.1}, Postfix {:.1}",
                    round_trips(ours),
                    round_trips(floor)
                ),
            });
        }
        Ok(rows)
    }

    /// Each shipped binary's size and start-up time (`--version`, 300
    /// times), against /bin/true.
    fn startup(&self) -> anyhow::Result<Vec<Row>> {
        let n = 300;
        let truth = which("true").context("no true(1)")?;
        let starts = |c: &mut Command| -> anyhow::Result<f64> {
            let t = Instant::now();
            for _ in 0..n {
                let st = c.status()?;
                ensure!(st.success(), "{c:?} failed: {st}");
            }
            Ok(n as f64 / t.elapsed().as_secs_f64())
        };
        let mut rows = Vec::new();
        for name in ["mm-enqueue", "mm-runq", "mm-showq"] {
            eprintln!("bench: start-up of {name}");
            let size = fs::metadata(self.bins.join(name))?.len();
            let (ours, floor) = self.alternate(
                self.reps,
                || starts(self.tool(name).arg("--version")),
                || starts(Command::new(&truth).stdout(Stdio::null())),
            )?;
            rows.push(Row {
                workload: format!("start-up, {name} --version"),
                unit: "starts/s",
                ours,
                floor,
                floor_what: "/bin/true",
                target: None,
                at_most: None,
                note: format!(
                    "{} KiB binary (dist); {:.2} ms per start, /bin/true {:.2} ms",
                    size / 1024,
                    1e3 / ours,
                    1e3 / floor
                ),
            });
        }
        Ok(rows)
    }

    /// mm's side of an SMTP workload: `msgs` entries of `rcpts` recipients
    /// enqueued into out/ (`--file`), then drained by `mm-runq --until-empty`
    /// over `conns` connections to 127.0.0.1:`port`; the drain timed.
    fn mm_smtp(&self, msgs: usize, conns: usize, rcpts: usize, port: u16) -> anyhow::Result<Timed> {
        let to: Vec<String> = (0..rcpts).map(|i| format!("user{i}@example.org")).collect();
        let spool = self.fresh_dir("smtp-spool")?;
        self.enqueue_files(&spool, "out", msgs, &to)?;
        sync_fs(&spool)?;
        let t = self.timed(
            self.tool("mm-runq")
                .arg("--spool")
                .arg(&spool)
                .args(["-q", "out", "--until-empty", "--quiet"])
                .args(["--smtp", &format!("smtp://127.0.0.1:{port}")])
                .args(["--connections", &conns.to_string()]),
        )?;
        ensure!(
            count_entries(&spool.join("out"))? == 0,
            "mm-runq left entries behind (deferred?)"
        );
        Ok(t)
    }

    /// `mm-runq --until-empty --discard` over the `in` queue of `spool`,
    /// checked to leave it empty.
    fn discard_drain(&self, spool: &Path) -> anyhow::Result<Timed> {
        let t = self.timed(self.tool("mm-runq").arg("--spool").arg(spool).args([
            "-q",
            "in",
            "--until-empty",
            "--discard",
            "--quiet",
        ]))?;
        ensure!(
            count_entries(&spool.join("in"))? == 0,
            "mm-runq left entries behind"
        );
        Ok(t)
    }

    /// The drain's floor: `mm-floor drain` over `n` files of `size` bytes
    /// in a fresh directory named after `name`.
    fn floor_drain(&self, name: &str, n: usize, size: u64) -> anyhow::Result<Timed> {
        let dir = self.floor_files(name, n, size)?;
        let t = self.timed(self.floor(&["drain"]).arg(&dir))?;
        fs::remove_dir_all(&dir)?;
        Ok(t)
    }

    /// A fresh directory named after `name` with `n` files of `size` bytes
    /// (`mm-floor fill`). Like a real backlog (and ours), the files are on
    /// disk, not only in the page cache: removing them then costs what it
    /// costs on disk (this file system discards freed blocks).
    fn floor_files(&self, name: &str, n: usize, size: u64) -> anyhow::Result<PathBuf> {
        let dir = self.fresh_dir(name)?;
        let st = self
            .floor(&["fill"])
            .arg(&dir)
            .args([n.to_string(), size.to_string()])
            .status()?;
        ensure!(st.success(), "mm-floor fill failed");
        sync_fs(&dir)?;
        Ok(dir)
    }

    /// The size of one of our entries of the benchmark's message with one
    /// recipient: what the delivery floor's files are given.
    fn entry_size(&self) -> anyhow::Result<u64> {
        let spool = self.fresh_dir("entry-size")?;
        self.enqueue_files(&spool, "out", 1, &[])?;
        let size = any_entry_size(&spool.join("out"))?;
        fs::remove_dir_all(&spool)?;
        Ok(size)
    }

    /// The delivery floor: `mm-floor deliver` (or `deliver-ahead`) of `n`
    /// files of `size` bytes, on disk like our entries, to the sink at
    /// `port` over `conns` connections.
    fn floor_deliver(
        &self,
        n: usize,
        conns: usize,
        port: u16,
        ahead: bool,
        size: u64,
    ) -> anyhow::Result<Timed> {
        let dir = self.floor_files("deliver-floor", n, size)?;
        let mode = if ahead { "deliver-ahead" } else { "deliver" };
        let t = self.timed(
            self.floor(&[mode])
                .arg(&dir)
                .args([port.to_string(), conns.to_string()]),
        )?;
        ensure!(
            fs::read_dir(&dir)?.next().is_none(),
            "mm-floor {mode} left files behind"
        );
        fs::remove_dir_all(&dir)?;
        Ok(t)
    }

    /// Runs a command to completion, with its wall time, peak RSS and CPU.
    fn timed(&self, cmd: &mut Command) -> anyhow::Result<Timed> {
        timed(cmd)
    }
}

/// Runs a command to completion, with its wall time, peak RSS and CPU time.
/// The CPU time is what getrusage(RUSAGE_CHILDREN) gained over the wait:
/// the children waited for meanwhile are this one only (the benchmark
/// starts one command at a time; smtp-sink is waited for at the end).
fn timed(cmd: &mut Command) -> anyhow::Result<Timed> {
    let before = children_cpu()?;
    let t = Instant::now();
    let child = cmd.spawn().context("cannot start a benchmark command")?;
    let (status, rss) = wait_sampling_rss(child)?;
    let secs = t.elapsed().as_secs_f64();
    let cpu_secs = children_cpu()? - before;
    ensure!(status.success(), "{cmd:?} failed: {status}");
    Ok(Timed {
        secs,
        max_rss_kib: rss,
        cpu_secs,
    })
}

/// User plus system time of every child waited for so far, in seconds.
fn children_cpu() -> anyhow::Result<f64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(u.user_time()) + secs(u.system_time()))
}

/// What the SMTP workloads compare with: smtp-sink (the server) and
/// smtp-source (Postfix's load generator), both from Postfix.
struct Peers {
    sink: mm_e2e::SmtpSink,
    source_bin: PathBuf,
}

impl Peers {
    /// Starts the sink, or says what is missing.
    fn find() -> anyhow::Result<Peers> {
        mm_e2e::SmtpSink::binary().map_err(anyhow::Error::msg)?;
        let source_bin = which("smtp-source").context("smtp-source not found")?;
        let sink = mm_e2e::SmtpSink::start_with(&mm_e2e::SinkOptions {
            backlog: 256,
            ..Default::default()
        })
        .map_err(anyhow::Error::msg)?;
        Ok(Peers { sink, source_bin })
    }

    /// smtp-source: `msgs` messages of 4 KiB, `rcpts` recipients each, over
    /// `conns` connections kept open (`-d`), to 127.0.0.1:`port`.
    fn source(&self, msgs: usize, conns: usize, rcpts: usize, port: u16) -> anyhow::Result<Timed> {
        timed(
            Command::new(&self.source_bin)
                .args(["-d", "-s", &conns.to_string()])
                .args(["-m", &msgs.to_string(), "-l", "4096"])
                .args(["-r", &rcpts.to_string()])
                .args(["-f", "owner@example.org", "-t", "user@example.org"])
                .arg(format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )
    }
}

/// Postfix's side of a backlog: `msgs` messages of 4 KiB and `rcpts`
/// recipients submitted to its smtpd (by smtp-source) and put on hold (an
/// access rule), as a backlog waits while a smarthost is down; then all
/// released at once (`postsuper -H ALL`, `postqueue -f`) to the relayhost
/// 127.0.0.1:`port` over at most `conns` connections, timed from the
/// release until its queue is empty. Returns messages per second.
/// (`defer_transports` would be the other way to hold it, but every
/// deferral costs a delivery agent and a log write per recipient, and this
/// instance retries deferred mail every second.)
fn postfix_drain(
    peers: &Peers,
    pf: &mm_e2e::postfix::Postfix,
    msgs: usize,
    conns: usize,
    rcpts: usize,
    port: u16,
) -> anyhow::Result<f64> {
    let limit = conns.to_string();
    pf.set(&[
        &format!("relayhost=[127.0.0.1]:{port}"),
        &format!("smtp_destination_concurrency_limit={limit}"),
        &format!("smtp_initial_destination_concurrency={limit}"),
    ])?;
    pf.reload()?;
    let wait = |what: &str, secs: u64, done: &dyn Fn() -> anyhow::Result<bool>| {
        mm_e2e::poll_for(
            what,
            Duration::from_secs(secs),
            || Ok(done()?.then_some(())),
        )
    };
    wait("Postfix's queue to be empty before a run", 120, &|| {
        Ok(pf.queued()? == 0)
    })?;
    let st = Command::new(&peers.source_bin)
        .args(["-s", "4", "-m", &msgs.to_string(), "-l", "4096"])
        .args(["-r", &rcpts.to_string()])
        .args(["-f", "owner@example.org", "-t", "user@example.org"])
        .arg(format!("127.0.0.1:{}", pf.port))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .context("cannot run smtp-source")?;
    ensure!(st.success(), "smtp-source into Postfix failed: {st}");
    wait("Postfix to hold the whole backlog", 300, &|| {
        Ok(pf.queued_in(&["hold"])? == msgs && pf.queued()? == msgs)
    })?;
    let t = Instant::now();
    pf.postsuper(&["-H", "ALL"])?;
    pf.flush()?;
    mm_e2e::poll_for(
        "Postfix to drain its queue",
        Duration::from_secs(600),
        || Ok((pf.queued()? == 0).then_some(())),
    )?;
    Ok(msgs as f64 / t.elapsed().as_secs_f64())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Waits for the child while a thread samples its peak resident memory
/// (VmHWM: a high-water mark, so the last sample before exit is the peak)
/// every 10 ms; the wait itself is not delayed by the sampling.
fn wait_sampling_rss(mut child: Child) -> anyhow::Result<(ExitStatus, u64)> {
    let status_file = format!("/proc/{}/status", child.id());
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0u64;
            while !done.load(Ordering::Relaxed) {
                if let Ok(text) = fs::read_to_string(&status_file)
                    && let Some(kib) = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                {
                    peak = peak.max(kib);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let status = child.wait();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0);
    Ok((status?, peak))
}

/// Runs a summary under strace (when installed) and counts the entry files
/// it opened: a summary must list names only. `None` without strace.
fn entries_opened_by(showq: &Path, spool: &Path) -> anyhow::Result<Option<usize>> {
    let Some(strace) = which("strace") else {
        let st = Command::new(showq)
            .arg("--spool")
            .arg(spool)
            .stdout(Stdio::null())
            .status()?;
        ensure!(st.success(), "mm-showq failed");
        return Ok(None);
    };
    let log = spool.with_extension("strace");
    let st = Command::new(strace)
        .args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
        .arg(&log)
        .arg(showq)
        .arg("--spool")
        .arg(spool)
        .stdout(Stdio::null())
        .status()?;
    ensure!(st.success(), "mm-showq under strace failed");
    let text = fs::read_to_string(&log)?;
    let _ = fs::remove_file(&log);
    Ok(Some(
        text.lines()
            .filter(|l| [".pck\"", ".bak\"", ".psv\""].iter().any(|s| l.contains(s)))
            .count(),
    ))
}

/// `sync -f DIR`: syncfs(2) on the file system holding DIR.
fn sync_fs(dir: &Path) -> anyhow::Result<()> {
    let st = Command::new("sync").arg("-f").arg(dir).status()?;
    ensure!(st.success(), "sync -f {} failed", dir.display());
    Ok(())
}

fn count_entries(queue: &Path) -> anyhow::Result<usize> {
    if !queue.exists() {
        return Ok(0);
    }
    let mut n = 0;
    for e in walkdir::WalkDir::new(queue) {
        let e = e?;
        if e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(".pck") {
            n += 1;
        }
    }
    Ok(n)
}

fn any_entry_size(queue: &Path) -> anyhow::Result<u64> {
    for e in walkdir::WalkDir::new(queue) {
        let e = e?;
        if e.file_type().is_file() {
            return Ok(e.metadata()?.len());
        }
    }
    bail!("no entry in {}", queue.display())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if !n.is_multiple_of(2) => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn machine() -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({ "cpus": cpus, "kernel": kernel.trim() })
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<46} {:>12} {:>12} {:>7} {:>8}  note",
        "workload", "ours", "floor", "ratio", "target"
    );
    for r in rows {
        let mark = |met: Option<bool>| if met == Some(true) { "ok" } else { "MISS" };
        let target = match (r.target, r.at_most) {
            (Some(t), _) => format!("{t:.1} {}", mark(r.met())),
            (None, Some(m)) => format!("<={m:.0} {}", mark(r.met())),
            (None, None) => "-".into(),
        };
        println!(
            "{:<46} {:>12.0} {:>12.0} {:>7.2} {:>8}  {} {}",
            r.workload,
            r.ours,
            r.floor,
            r.ratio(),
            target,
            r.unit,
            r.note
        );
    }
    println!("\nratio = ours / floor, medians of runs alternated with the floor's. Floors:");
    let mut seen = Vec::new();
    for r in rows {
        if !seen.contains(&r.floor_what) {
            seen.push(r.floor_what);
            println!("  {}", r.floor_what);
        }
    }
}
