//! The queue runner: list, claim, process, and leave each entry in a defined state.
//!
//! A pass lists the runner's slice, keeps the oldest due entries (at most
//! [`RunnerConfig::batch`] at a time, so memory stays flat at any backlog) and
//! hands them, oldest first, to `connections` workers. A worker claims an
//! entry by rename (a lost race is skipped silently), runs the pipeline stages
//! not yet done, delivers to the pending recipients, and then:
//!
//! * all recipients done, `--then Q`: renames it into Q;
//! * all done: removes it, after writing a bounce record for failures;
//! * some deferred: writes the progress and renames it back as
//!   `ID.DUE.pck`, due after the backoff (a not-yet-due entry costs a
//!   later pass nothing but its name);
//! * undecodable: bad/; a stage refused it: shunt/.
//!
//! **Stopping.** On SIGTERM or SIGINT the runner stops claiming and lets the
//! workers finish their entries for up to `stop_timeout`. A worker still busy
//! then (an SMTP server that stopped answering) is abandoned: its entry is put
//! back as queued with the progress last recorded, and the process exits 0
//! within the bound. Every write to a claimed entry happens under its worker's
//! slot lock after checking that the slot was not abandoned, so an abandoned
//! worker can never write after its entry was put back.

use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::bounce::{self, bounce_record};
use crate::claim::{self, Claim, Claimed, Registration};
use crate::clock;
use crate::delivery::{Deliver, Discard, Mail, Maildir, RcptResult, Verdict};
use crate::destination;
use crate::entry::{BounceReason, Entry, RcptState};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx::{self, Floor};
use crate::hold;
use crate::id::{EntryId, FileName, State};
use crate::pipeline::{self, Stage, StageOutcome};
use crate::recover::{self, RecoverOptions};
use crate::retry::RetryPolicy;
use crate::scan::{Item, Place};
use crate::slice::Slice;
use crate::spool::{Queue, QueueName, Spool, queues};

/// How long the runner goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Until signalled.
    Service,
    /// One pass over the entries due now.
    Once,
    /// Until no due entry is left.
    UntilEmpty,
}

/// Where delivered mail goes.
#[derive(Clone, Debug)]
pub enum Transport {
    /// SMTP to a smarthost.
    #[cfg(feature = "smtp")]
    Smtp(crate::delivery::smtp::SmtpConfig),
    /// A maildir of delivered copies.
    Dir(PathBuf),
    /// Accept everything, send nothing.
    Discard,
    /// No delivery: pipeline stages and `--then` only.
    None,
}

/// Everything a runner needs to know.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// The queue.
    pub queue: QueueName,
    /// The share of it.
    pub slice: Slice,
    /// How long to go on.
    pub mode: Mode,
    /// Delivery.
    pub transport: Transport,
    /// Pipeline stages, in order.
    pub stages: Vec<Stage>,
    /// How long one run of a stage may take (`--stage-timeout`).
    pub stage_timeout: Duration,
    /// Pass entries on to this queue when done.
    pub then: Option<QueueName>,
    /// Retry schedule.
    pub retry: RetryPolicy,
    /// Bound on a graceful stop.
    pub stop_timeout: Duration,
    /// Parallel workers (SMTP connections).
    pub connections: usize,
    /// Pause between passes in service mode when nothing is due.
    pub poll: Duration,
    /// Recoveries allowed before quarantine.
    pub max_recoveries: u32,
    /// Largest number of entries one pass takes on.
    pub batch: usize,
    /// The lease this runner renews (other hosts take its claims back only
    /// after it expired; it fences itself at half of it).
    pub lease: Duration,
    /// Free space and inodes kept in hand: below, nothing is claimed.
    pub floor: Floor,
    /// How long a cron run (`Once`, `UntilEmpty`) retries a write that keeps
    /// failing before it stops with the entry left claimed for recovery. A
    /// service retries until it is stopped.
    pub write_retry: Duration,
    /// Turn bounce records into delivery status notifications to their
    /// senders before delivering (`--dsn`, on the bounces queue; dsn.rs).
    pub dsn: bool,
    /// Write the runner's counters here in the Prometheus text format
    /// after each pass (`--metrics-file`, metrics.rs), atomically.
    pub metrics_file: Option<PathBuf>,
}

/// Signals the runner watches.
#[derive(Clone, Debug, Default)]
pub struct Signals {
    /// SIGTERM/SIGINT: stop.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP: reopen the log.
    pub hup: Arc<AtomicBool>,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Entries finished (all recipients done, removed).
    pub finished: u64,
    /// Entries passed on to another queue.
    pub passed: u64,
    /// Entries put back deferred.
    pub deferred: u64,
    /// Entries moved to bad/.
    pub quarantined: u64,
    /// Entries moved to shunt/.
    pub shunted: u64,
    /// Recipients delivered.
    pub rcpt_delivered: u64,
    /// Recipients deferred.
    pub rcpt_deferred: u64,
    /// Recipients failed (bounced).
    pub rcpt_failed: u64,
    /// Entries that met a local error (put back deferred by the shortest delay).
    pub errors: u64,
    /// Whether the stop was forced (workers abandoned).
    pub abandoned: bool,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.finished += o.finished;
        self.passed += o.passed;
        self.deferred += o.deferred;
        self.quarantined += o.quarantined;
        self.shunted += o.shunted;
        self.rcpt_delivered += o.rcpt_delivered;
        self.rcpt_deferred += o.rcpt_deferred;
        self.rcpt_failed += o.rcpt_failed;
        self.errors += o.errors;
    }

    /// Entries dealt with.
    pub fn entries(&self) -> u64 {
        self.finished + self.passed + self.deferred + self.quarantined + self.shunted
    }

    /// The run's exit status: entries that met a local error were put back
    /// (temporary: 75, cron's next run tries again), else 0.
    pub fn exit_code(&self) -> u8 {
        crate::error::batch_exit_code((self.errors > 0).then_some(crate::ErrorKind::Temporary))
    }
}

/// Where log lines go; the library never prints.
pub trait Log: Send + Sync {
    /// One event: what the logger prints, and at which level, comes from
    /// its kind, never from matching its text.
    fn event(&self, event: &Event<'_>);
    /// A line about something that went wrong or needs an admin
    /// ([`Event::Problem`]).
    fn line(&self, line: &str) {
        self.event(&Event::Problem(line));
    }
    /// Progress of an `--until-empty` run: done so far, and still due.
    fn progress(&self, _done: u64, _left: u64) {}
}

/// How much a log line matters: syslog(3)'s priorities, which `--quiet`
/// and `--syslog` go by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// A local failure (LOG_ERR).
    Error,
    /// Something for an admin: recoveries, fencing, put-backs (LOG_WARNING).
    Warning,
    /// Mail that did not go through: deferred, bounced, shunted,
    /// quarantined; bounce records (LOG_NOTICE).
    Notice,
    /// Routine: delivered, passed on, start and stop (LOG_INFO).
    Info,
}

impl Level {
    /// The syslog priority number.
    pub fn syslog(self) -> u8 {
        match self {
            Level::Error => crate::syslog::ERR,
            Level::Warning => crate::syslog::WARNING,
            Level::Notice => crate::syslog::NOTICE,
            Level::Info => crate::syslog::INFO,
        }
    }
}

/// What became of one recipient in one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RcptStatus {
    /// Accepted by the next hop.
    Sent,
    /// To be retried.
    Deferred,
    /// Refused for good (or expired): a bounce record follows.
    Bounced,
}

/// One recipient's outcome, logged in the form of Postfix's maillog, so
/// that its tools read it: `ID: to=<A>, relay=HOST[ADDR]:PORT, delay=SECS,
/// dsn=X.Y.Z, status=sent (REPLY)`. The remote server's queue id is in its
/// reply (`250 2.0.0 Ok: queued as 4F3K…`), as in Postfix's.
#[derive(Clone, Debug)]
pub struct RcptLine<'a> {
    /// The entry.
    pub id: &'a str,
    /// The recipient.
    pub to: &'a str,
    /// Where it went: `host[address]:port`, `local` (maildir), `none`.
    pub relay: &'a str,
    /// Seconds since the entry was enqueued.
    pub delay: u64,
    /// The outcome.
    pub status: RcptStatus,
    /// The reply, or the local reason.
    pub reply: &'a str,
}

impl RcptLine<'_> {
    /// The enhanced status code: the reply's own (`4.2.0`), else its class.
    pub fn dsn(&self) -> String {
        let mut words = self.reply.split_whitespace();
        let code = words.next().unwrap_or("");
        if let Some(w) = words.next()
            && w.split('.').count() == 3
            && w.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return w.to_string();
        }
        match (code.as_bytes().first(), self.status) {
            (Some(c @ b'2'..=b'5'), _) if code.len() == 3 => format!("{}.0.0", *c as char),
            (_, RcptStatus::Sent) => "2.0.0".into(),
            (_, RcptStatus::Deferred) => "4.0.0".into(),
            (_, RcptStatus::Bounced) => "5.0.0".into(),
        }
    }
}

/// What the runner logs.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// The runner took its lock and starts (what it is, its token).
    Start(&'a str),
    /// The runner stops, with its counts.
    Stop(&'a str),
    /// An entry goes out: its envelope, before its recipients' lines, as
    /// Postfix's qmgr logs it (`ID: from=<S>, size=N, nrcpt=K (queue
    /// active)`; log tools take the message's size from it).
    Envelope {
        /// The entry.
        id: &'a str,
        /// The envelope sender (empty: the null sender).
        from: &'a str,
        /// The message's size in bytes.
        size: usize,
        /// The recipients this attempt is for.
        nrcpt: usize,
    },
    /// One recipient's outcome.
    Rcpt(RcptLine<'a>),
    /// An entry went through: finished or passed on, with no recipient
    /// failed in this attempt.
    Done(&'a str),
    /// An entry that did not go through: deferred, with failures, shunted,
    /// quarantined.
    Entry(&'a str),
    /// A bounce record was written: the entry's queue and id, the record's id.
    Bounce(&'a str, &'a str, &'a str),
    /// Something that went wrong or needs an admin.
    Problem(&'a str),
    /// A local failure.
    Error(&'a str),
}

impl Event<'_> {
    /// Its level.
    pub fn level(&self) -> Level {
        match self {
            Event::Start(_) | Event::Stop(_) | Event::Done(_) | Event::Envelope { .. } => {
                Level::Info
            }
            Event::Rcpt(r) if r.status == RcptStatus::Sent => Level::Info,
            Event::Rcpt(_) | Event::Entry(_) | Event::Bounce(..) => Level::Notice,
            Event::Problem(_) => Level::Warning,
            Event::Error(_) => Level::Error,
        }
    }
}

impl std::fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Envelope {
                id,
                from,
                size,
                nrcpt,
            } => write!(
                f,
                "{id}: from=<{from}>, size={size}, nrcpt={nrcpt} (queue active)"
            ),
            Event::Rcpt(r) => {
                let status = match r.status {
                    RcptStatus::Sent => "sent",
                    RcptStatus::Deferred => "deferred",
                    RcptStatus::Bounced => "bounced",
                };
                write!(
                    f,
                    "{}: to=<{}>, relay={}, delay={}, dsn={}, status={status} ({})",
                    r.id,
                    r.to,
                    r.relay,
                    r.delay,
                    r.dsn(),
                    r.reply
                )
            }
            Event::Bounce(queue, id, record) => {
                write!(
                    f,
                    "{id}: bounce record {record} written in bounces (from {queue})"
                )
            }
            Event::Start(t)
            | Event::Stop(t)
            | Event::Done(t)
            | Event::Entry(t)
            | Event::Problem(t)
            | Event::Error(t) => f.write_str(t),
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Ran and stopped (empty, one pass done, or signalled).
    Done(Stats),
    /// Another runner of this queue and slice holds the lock.
    AlreadyRunning(String),
}

/// A worker's claimed entry, as the stopping main thread sees it.
#[derive(Default)]
struct Slot {
    /// The claim in hand: its queue, id, token and path.
    current: Option<Held>,
    /// The stop ran out of time and left this worker behind.
    abandoned: bool,
    /// The claim's content in memory is ahead of the file (a transaction's
    /// outcome not yet saved, a save that keeps failing): the file must not
    /// be put back, which would resend. Set when memory changes, cleared by
    /// a save, and with `current` when the worker is done with the entry.
    unsaved: bool,
}

#[derive(Clone)]
struct Held {
    queue: Queue,
    id: EntryId,
    token: String,
    path: PathBuf,
}

type SlotRef = Arc<Mutex<Slot>>;

fn abandoned() -> Error {
    Error::new(ErrorKind::NotOurs, "abandoned at shutdown")
}

/// Runs `f` on the claim's file only if the slot was not abandoned and our
/// lease is still good (a runner that could not renew it fences itself, so a
/// recovery on another host never races with its writes).
fn guarded<T>(me: &Registration, slot: &SlotRef, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let s = slot.lock().map_err(|_| abandoned())?;
    if s.abandoned {
        return Err(abandoned());
    }
    me.check()?;
    let r = f();
    drop(s);
    r
}

/// What the main thread and the workers share. Owned, so a worker blocked
/// in I/O can be left behind when a stop runs out of time.
struct Shared {
    spool: Spool,
    queue: Queue,
    cfg: RunnerConfig,
    /// Our registration; replaced by a new one when the old one fenced itself.
    me: RwLock<Arc<Registration>>,
    signals: Signals,
    log: Arc<dyn Log>,
    /// Entries of the current pass not yet taken by a worker.
    work: Mutex<VecDeque<(FileName, Place)>>,
    /// Workers processing an entry; changed only under the `work` lock.
    busy: AtomicUsize,
    /// Wakes idle workers when work arrives or the run closes.
    wake: Condvar,
    /// What the current pass did.
    pass: Mutex<Stats>,
    /// Set when the run ends: idle workers exit.
    closing: AtomicBool,
    /// Workers retrying a write that keeps failing: while any is, nobody
    /// claims new work.
    stalled: AtomicUsize,
    /// Entries left claimed with unsaved progress (never put back).
    unsaved: Mutex<Vec<EntryId>>,
    /// The last free-space check: when, and the reason it failed.
    floor_seen: Mutex<Option<(Instant, Option<String>)>>,
    /// Remembered destination failures (`.destinations/`).
    destinations: destination::Destinations,
    /// The last look at our destination's state: when, and what it was.
    dest_seen: Mutex<Option<(Instant, Option<destination::State>)>>,
    /// Removes finished entries.
    finisher: Finisher,
    /// What the runner is doing, for `.runners/TOKEN.progress` (progress.rs).
    progress: crate::progress::Tracker,
    /// Transactions, bytes and replies, for `--metrics-file`.
    counters: Mutex<crate::metrics::RunCounters>,
    /// The totals of the passes ended, for `--metrics-file`.
    totals: Mutex<Stats>,
    /// When `--metrics-file` was last written, and whether a failure to
    /// write it was said (once, until a write succeeds).
    metrics_written: Mutex<(Option<Instant>, bool)>,
}

impl Shared {
    /// What is remembered of `destination`'s failures, if anything: read
    /// from the spool at most once a second (another host may record it).
    fn remembered(&self, destination: &str) -> Option<destination::State> {
        let Ok(mut seen) = self.dest_seen.lock() else {
            return None;
        };
        let fresh = seen
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < Duration::from_secs(1));
        if !fresh {
            *seen = Some((Instant::now(), self.destinations.get(destination)));
        }
        seen.as_ref().and_then(|(_, s)| s.clone())
    }

    /// Records how a delivery to `destination` went at the connection
    /// level: a failure backs it off (said once per change), a success
    /// forgets a remembered failure.
    fn destination_outcome(&self, destination: &str, trouble: Option<String>) {
        let Ok(mut seen) = self.dest_seen.lock() else {
            return;
        };
        match trouble {
            Some(why) => match self
                .destinations
                .failed(destination, &why, clock::now_secs())
            {
                Ok(state) => {
                    self.log.line(&format!(
                        "{} destination {destination} backed off until {} after {} failure(s) in a row: {why}",
                        self.cfg.queue,
                        clock::rfc3339(state.until),
                        state.failures
                    ));
                    *seen = Some((Instant::now(), Some(state)));
                }
                Err(e) => self.log.line(&format!(
                    "{} cannot remember that {destination} failed: {e}",
                    self.cfg.queue
                )),
            },
            None => {
                if seen.as_ref().is_none_or(|(_, s)| s.is_some()) {
                    self.destinations.succeeded(destination);
                }
                *seen = Some((Instant::now(), None));
            }
        }
    }

    /// Writes the progress file if it is due (progress.rs); a failure is
    /// said once, until a write succeeds again.
    fn write_progress(&self, told: &mut bool) {
        let me = self.me();
        if me.fenced().is_some() {
            return;
        }
        match self.progress.flush(&self.spool, me.token(), false) {
            Ok(()) => *told = false,
            Err(e) if !*told => {
                *told = true;
                self.log.line(&format!(
                    "{} cannot write its progress: {e}",
                    self.cfg.queue
                ));
            }
            Err(_) => {}
        }
    }

    /// Writes `--metrics-file`, if asked for: the totals of the passes
    /// ended and what the current one did so far; only when the last write
    /// is `every` old (or there was none), so that short passes do not
    /// rewrite it per message.
    fn write_metrics(&self, every: Duration) {
        let Some(path) = &self.cfg.metrics_file else {
            return;
        };
        let Ok(mut written) = self.metrics_written.lock() else {
            return;
        };
        if written.0.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        // The pass's lock first, as where a pass's counts move into the
        // totals: the counters never seem to go down.
        let mut totals = Stats::default();
        if let Ok(p) = self.pass.lock() {
            totals = self.totals.lock().map(|t| t.clone()).unwrap_or_default();
            totals.add(&p);
        }
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let text = crate::metrics::runner_metrics(
            self.cfg.queue.as_str(),
            self.cfg.slice,
            &totals,
            &counters,
        );
        written.0 = Some(Instant::now());
        match crate::metrics::write_file(path, &text) {
            Ok(()) => written.1 = false,
            Err(e) if !written.1 => {
                written.1 = true;
                self.log.line(&format!(
                    "{} cannot write --metrics-file: {e}",
                    self.cfg.queue
                ));
            }
            Err(_) => {}
        }
    }

    /// A pass ended: counted; `--metrics-file` written after a pass that
    /// took entries at most once a second, after an idle look at most every
    /// [`crate::progress::HEARTBEAT`] (the progress file: by its thread,
    /// within a second). The run's last counts are written at its end.
    fn pass_ended(&self, started: Instant, took: bool) {
        if let Ok(mut c) = self.counters.lock() {
            c.pass(started.elapsed(), clock::now_secs());
        }
        self.progress.pass_ended(took);
        self.write_metrics(if took {
            Duration::from_secs(1)
        } else {
            crate::progress::HEARTBEAT
        });
    }

    fn me(&self) -> Arc<Registration> {
        match self.me.read() {
            Ok(me) => Arc::clone(&me),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Whether a worker may claim another entry now.
    fn may_claim(&self) -> bool {
        !self.signals.stop.load(Ordering::Relaxed)
            && self.stalled.load(Ordering::SeqCst) == 0
            && self.me().fenced().is_none()
    }

    /// Why the spool's file system is too full to claim, checked at most
    /// once a second.
    fn below_floor(&self) -> Option<String> {
        let Ok(mut seen) = self.floor_seen.lock() else {
            return None;
        };
        if let Some((at, why)) = &*seen
            && at.elapsed() < Duration::from_secs(1)
        {
            return why.clone();
        }
        let why = fsx::below_floor(self.queue.dir(), self.cfg.floor)
            .unwrap_or_else(|e| Some(format!("cannot check the spool's free space: {e}")));
        *seen = Some((Instant::now(), why.clone()));
        why
    }
}

/// Removes finished entries off the workers' path. An unlink costs a
/// synchronous discard of the freed blocks on a file system mounted with
/// `discard` (measured here: about a third of a drain's time); done by this
/// thread, a worker goes straight on to its next entry. Removals are not
/// synced either way: one lost in a crash brings the entry back as a dead
/// runner's claim, whose recorded progress limits the harm to a duplicate.
/// The run drains the queue of removals before it exits or unregisters.
struct Finisher {
    tx: Mutex<Option<std::sync::mpsc::SyncSender<PathBuf>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Removals handed over and not done yet.
    pending: Arc<AtomicUsize>,
    /// Finished entries whose removal failed: never put back (their last
    /// transaction's outcome is not in the file), left for recovery.
    failed: Arc<Mutex<Vec<PathBuf>>>,
}

impl Finisher {
    /// `threads` removers (one per worker: each unlink waits for the device).
    fn start(log: Arc<dyn Log>, threads: usize) -> Finisher {
        // Small: a runner killed with removals pending delivers those again.
        let (tx, rx) = std::sync::mpsc::sync_channel::<PathBuf>(8);
        let rx = Arc::new(Mutex::new(rx));
        let pending = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads.max(1))
            .map(|_| {
                let (rx, log) = (Arc::clone(&rx), Arc::clone(&log));
                let (pending, failed) = (Arc::clone(&pending), Arc::clone(&failed));
                std::thread::spawn(move || {
                    loop {
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(path) = next else { return };
                        if let Err(e) = std::fs::remove_file(&path) {
                            log.line(&format!(
                                "cannot remove finished entry {}: {e}; mm-recover will take it back",
                                path.display()
                            ));
                            if let Ok(mut f) = failed.lock() {
                                f.push(path);
                            }
                        }
                        pending.fetch_sub(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        Finisher {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            pending,
            failed,
        }
    }

    /// Removes the claimed file, through the finisher thread while it runs.
    fn finish(&self, c: Claim) -> Result<()> {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        match tx {
            Some(tx) => {
                self.pending.fetch_add(1, Ordering::SeqCst);
                if let Err(std::sync::mpsc::SendError(path)) = tx.send(c.finish_later()) {
                    self.pending.fetch_sub(1, Ordering::SeqCst);
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io("cannot remove", &path, e))?;
                }
                Ok(())
            }
            None => c.finish(),
        }
    }

    /// Waits (at most a minute) until every removal handed over is done.
    fn flush(&self) {
        let until = Instant::now() + Duration::from_secs(60);
        while self.pending.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the removal of `path` failed.
    fn failed(&self, path: &std::path::Path) -> bool {
        self.failed
            .lock()
            .map(|f| f.iter().any(|p| p == path))
            .unwrap_or(true)
    }

    /// Waits until every removal handed over is done; later ones are synchronous.
    fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let threads = self
            .threads
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Runs a queue runner until its mode says stop.
pub fn run(
    spool: &Spool,
    cfg: &RunnerConfig,
    signals: &Signals,
    log: Arc<dyn Log>,
) -> Result<Outcome> {
    let queue = spool.queue(&cfg.queue);
    fsx::create_dir(queue.dir())?;
    // One runner per queue and slice and host (the cron singleton of seed
    // 002). Per host: on a shared file system whose locks reach every client
    // (GlusterFS), each host still runs its own; their claims keep them apart.
    let locks = spool.private_dir(".locks")?;
    let host: String = crate::claim::host_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let lock_path = locks.join(format!(
        "{}.{}-{}.{host}.lock",
        cfg.queue,
        cfg.slice.k(),
        cfg.slice.n()
    ));
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| Error::io("cannot open lock", &lock_path, e))?;
    let _ = std::fs::set_permissions(
        &lock_path,
        std::os::unix::fs::PermissionsExt::from_mode(fsx::FILE_MODE),
    );
    if lock.try_lock().is_err() {
        let holder = std::fs::read_to_string(&lock_path).unwrap_or_default();
        return Ok(Outcome::AlreadyRunning(holder.trim().to_string()));
    }
    write_lock_owner(&lock, &lock_path);

    let me = Registration::register(spool, &what(cfg), cfg.lease)?;
    let progress = crate::progress::Tracker::new(me.token(), &cfg.queue, cfg.slice);
    if let Err(e) = progress.flush(spool, me.token(), true) {
        log.line(&format!("{} cannot write its progress: {e}", cfg.queue));
    }
    log.event(&Event::Start(&format!(
        "{} started: token {}, pid {}",
        what(cfg),
        me.token(),
        std::process::id()
    )));
    let shared = Arc::new(Shared {
        spool: spool.clone(),
        queue,
        cfg: cfg.clone(),
        me: RwLock::new(me),
        signals: signals.clone(),
        log: Arc::clone(&log),
        work: Mutex::new(VecDeque::new()),
        busy: AtomicUsize::new(0),
        wake: Condvar::new(),
        pass: Mutex::new(Stats::default()),
        closing: AtomicBool::new(false),
        stalled: AtomicUsize::new(0),
        unsaved: Mutex::new(Vec::new()),
        floor_seen: Mutex::new(None),
        destinations: destination::Destinations::open(spool)?,
        dest_seen: Mutex::new(None),
        finisher: Finisher::start(Arc::clone(&log), cfg.connections),
        progress,
        counters: Mutex::new(crate::metrics::RunCounters::default()),
        totals: Mutex::new(Stats::default()),
        metrics_written: Mutex::new((None, false)),
    });
    // Renews the lease every quarter of it; dropping `renewer_stop` ends it at
    // once (a sleeping loop would hold up the exit of a short cron run).
    let (renewer_stop, stopped) = std::sync::mpsc::channel::<()>();
    let renewer = {
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut told = String::new();
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(sh.cfg.lease / 4) {
                let me = sh.me();
                if let Err(e) = me.renew()
                    && told != me.token()
                {
                    told = me.token().to_string();
                    sh.log.line(&format!("{} {e}", sh.cfg.queue));
                }
            }
        })
    };

    // Writes the progress file at most once a second while it changes
    // (progress.rs); dropping `progress_stop` ends it at once.
    let (progress_stop, progress_stopped) = std::sync::mpsc::channel::<()>();
    let progress_writer = {
        let sh = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut told = false;
            while let Err(RecvTimeoutError::Timeout) =
                progress_stopped.recv_timeout(Duration::from_secs(1))
            {
                sh.write_progress(&mut told);
                // A long pass (a big backlog) shows in the metrics file
                // while it runs, not only at its end.
                sh.write_metrics(crate::progress::HEARTBEAT);
            }
        })
    };

    // Take back what dead runners left in our slice before anything else.
    let result = recover_own_slice(&shared).and_then(|()| run_passes(&shared));
    shared.write_metrics(Duration::ZERO);
    shared.finisher.close();
    drop(renewer_stop);
    drop(progress_stop);
    let _ = progress_writer.join();
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            put_back_strays(&shared);
            return Err(e);
        }
    };
    if !stats.abandoned {
        let _ = renewer.join();
        put_back_strays(&shared);
    }
    drop(lock);
    Ok(Outcome::Done(stats))
}

fn what(cfg: &RunnerConfig) -> String {
    format!("mm-runq {} {}", cfg.queue, cfg.slice)
}

/// Takes back what dead runners (an earlier token of ours included) left in
/// our slice.
fn recover_own_slice(sh: &Shared) -> Result<()> {
    let opts = RecoverOptions {
        select: crate::select::Selector {
            slice: Some(sh.cfg.slice),
            ..Default::default()
        },
        max_recoveries: sh.cfg.max_recoveries,
        lease: sh.cfg.lease,
        ..RecoverOptions::default()
    };
    let me = sh.me();
    recover::recover_queue(&sh.spool, &sh.queue, &me, &opts, &mut |a| {
        if a.action != crate::recover::Verdict::Busy {
            // QUEUE ID WHAT, as every other line of the log.
            sh.log.line(&format!(
                "{} {} {}: {} ({})",
                sh.cfg.queue,
                a.id.as_deref().unwrap_or("-"),
                a.action,
                a.path.display(),
                a.detail
            ));
        }
        // Counted in the run's final line, like the quarantines of a pass.
        if a.action == crate::recover::Verdict::Quarantined
            && let Ok(mut p) = sh.pass.lock()
        {
            p.quarantined += 1;
        }
    })?;
    Ok(())
}

/// A lease lost stays lost: the fenced registration is dropped (its record
/// removed, so its claims are anybody's to take back), a new one is made,
/// and the old token's claims are taken back before anything is claimed.
/// A worker still busy under the old token can write nothing: the old
/// registration stays fenced.
fn register_again(sh: &Shared, why: &str) -> Result<()> {
    let old = sh.me();
    // Finished entries of the old token still waiting for their removal
    // must not be taken back as claims of a dead runner.
    sh.finisher.flush();
    let new = Registration::register(&sh.spool, &what(&sh.cfg), sh.cfg.lease)?;
    sh.log.line(&format!(
        "{} runner {} fenced itself ({why}); it writes and sends nothing more for its claims; registered again as {}",
        sh.cfg.queue,
        old.token(),
        new.token()
    ));
    match sh.me.write() {
        Ok(mut me) => *me = new,
        Err(p) => *p.into_inner() = new,
    }
    old.unregister();
    recover_own_slice(sh)
}

fn write_lock_owner(lock: &File, path: &std::path::Path) {
    use std::io::{Seek, Write};
    let mut f = lock;
    let _ = f.set_len(0);
    let _ = f.seek(std::io::SeekFrom::Start(0));
    let _ = writeln!(
        f,
        "pid {} on {}",
        std::process::id(),
        crate::claim::host_name()
    );
    let _ = path;
}

/// At the end of a run: our claims still on disk that no worker holds (a
/// worker's put-back that failed) go back as queued, unless their progress
/// in memory was never saved (then they stay for recovery, which is the
/// honest state: the file is older than what was sent). The record is
/// removed once nothing carries our token.
fn put_back_strays(sh: &Shared) {
    let me = sh.me();
    let unsaved = sh.unsaved.lock().map(|u| u.clone()).unwrap_or_default();
    let mut strays = Vec::new();
    let _ = sh.queue.scan(Slice::ALL, &mut |item| {
        if let Item::Entry { name, place, .. } = item
            && name.holder.as_deref() == Some(me.token())
            && name.state == State::Claimed
        {
            strays.push((name, place));
        }
    });
    let mut ours = false;
    for (name, place) in strays {
        let path = sh.queue.found_path(&name, place);
        if unsaved.contains(&name.id) || sh.finisher.failed(&path) {
            ours = true;
            continue;
        }
        match claim::put_back(&sh.queue, name.id, me.token(), &path, None) {
            Ok(()) => sh.log.line(&format!(
                "{} {} put back as queued at exit, as last recorded",
                sh.cfg.queue, name.id
            )),
            Err(e) => {
                ours = true;
                sh.log.line(&format!(
                    "{} {} {e}; mm-recover will",
                    sh.cfg.queue, name.id
                ));
            }
        }
    }
    if !ours {
        me.unregister();
    }
}

/// The oldest due entries of the slice, at most `max`, oldest first.
/// The entries a pass would take now, oldest first (at most `max`), and how
/// many are due in all: `mm-runq --dry-run`. Claims nothing, opens nothing.
pub fn due_now(queue: &Queue, slice: Slice, now: u64, max: usize) -> Result<(Vec<EntryId>, u64)> {
    let (v, total) = due_entries(queue, slice, now, max)?;
    Ok((v.into_iter().map(|(n, _)| n.id).collect(), total))
}

fn due_entries(
    queue: &Queue,
    slice: Slice,
    now: u64,
    max: usize,
) -> Result<(Vec<(FileName, Place)>, u64)> {
    // A max-heap on the id keeps the `max` smallest ids seen.
    let mut heap: BinaryHeap<(EntryId, FileName, PlaceKey)> = BinaryHeap::new();
    let mut total = 0u64;
    queue.scan(slice, &mut |item| {
        // A timed hold (`ID.UNTIL.hld`) whose time came is due like a deferred entry.
        if let Item::Entry { name, place, .. } = item
            && (name.state == State::Queued && name.due.is_none_or(|d| d <= now)
                || name.state == State::Held && name.due.is_some_and(|d| d <= now))
        {
            total += 1;
            heap.push((name.id, name, PlaceKey(place)));
            if heap.len() > max {
                heap.pop();
            }
        }
    })?;
    let mut v: Vec<_> = heap.into_iter().map(|(_, n, p)| (n, p.0)).collect();
    v.sort_by_key(|a| a.0.id);
    Ok((v, total))
}

/// `Place` ordered only so it can ride in the heap.
#[derive(PartialEq, Eq)]
struct PlaceKey(Place);

impl PartialOrd for PlaceKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PlaceKey {
    fn cmp(&self, _other: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl PartialOrd for FileName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FileName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id).then(self.state.cmp(&other.state))
    }
}

fn run_passes(sh: &Arc<Shared>) -> Result<Stats> {
    let cfg = &sh.cfg;
    let slots: Vec<SlotRef> = (0..cfg.connections.max(1))
        .map(|_| Arc::new(Mutex::new(Slot::default())))
        .collect();
    let workers: Vec<_> = slots
        .iter()
        .map(|slot| {
            let (sh, slot) = (Arc::clone(sh), Arc::clone(slot));
            std::thread::spawn(move || worker(&sh, &slot))
        })
        .collect();
    // What the start-up recovery did (its quarantines) counts in the totals.
    let mut totals = sh
        .pass
        .lock()
        .map(|mut p| {
            let t = std::mem::take(&mut *p);
            if let Ok(mut shown) = sh.totals.lock() {
                *shown = t.clone();
            }
            t
        })
        .unwrap_or_default();
    let mut done_so_far = 0u64;
    let mut idle_backoff = cfg.poll;
    let result = loop {
        if sh.signals.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Some(why) = sh.me().fenced()
            && let Err(e) = register_again(sh, &why)
        {
            break Err(e);
        }
        let now = clock::now_secs();
        let pass_started = Instant::now();
        let (batch, total_due) = match due_entries(&sh.queue, cfg.slice, now, cfg.batch) {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        if batch.is_empty() {
            sh.pass_ended(pass_started, false);
            match cfg.mode {
                Mode::Once | Mode::UntilEmpty => break Ok(()),
                Mode::Service => {
                    sleep_unless_stopped(&sh.signals, cfg.poll);
                    continue;
                }
            }
        }
        sh.log.progress(done_so_far, total_due);
        let taken = batch.len() as u64;
        sh.work.lock().map_err(|_| poisoned())?.extend(batch);
        sh.wake.notify_all();
        let forced = wait_for_pass(sh, &slots, done_so_far, total_due);
        let p = {
            let mut pass = sh.pass.lock().map_err(|_| poisoned())?;
            let p = std::mem::take(&mut *pass);
            totals.add(&p);
            if let Ok(mut t) = sh.totals.lock() {
                *t = totals.clone();
            }
            p
        };
        done_so_far += p.entries();
        sh.pass_ended(pass_started, true);
        if forced {
            // The stuck workers are left behind; their entries are back in the queue.
            totals.abandoned = true;
            return Ok(totals);
        }
        if p.entries() == 0 && p.errors > 0 && sh.me().fenced().is_none() {
            // A pass that moved nothing and met errors: a cron run ends with
            // 75 (EX_TEMPFAIL) rather than spin on the same failures; a
            // service waits longer each time, up to ten polls.
            match cfg.mode {
                Mode::Once | Mode::UntilEmpty => {
                    break Err(Error::new(
                        ErrorKind::Temporary,
                        format!(
                            "{}: a pass made no progress: {} of {} due entries met an error (see above); try again later",
                            cfg.queue, p.errors, total_due
                        ),
                    ));
                }
                Mode::Service => {
                    sleep_unless_stopped(&sh.signals, idle_backoff);
                    idle_backoff = (idle_backoff * 2).min(cfg.poll * 10).max(cfg.poll);
                    continue;
                }
            }
        }
        idle_backoff = cfg.poll;
        // One pass means every entry due when it began, even past one batch.
        if cfg.mode == Mode::Once && total_due <= taken {
            break Ok(());
        }
    };
    sh.closing.store(true, Ordering::SeqCst);
    sh.wake.notify_all();
    for w in workers {
        let _ = w.join();
    }
    result.map(|()| totals)
}

/// Waits until the pass's work is done; on a stop, at most `stop_timeout`,
/// after which busy workers are abandoned. Returns whether it had to.
fn wait_for_pass(sh: &Shared, slots: &[SlotRef], done_so_far: u64, total_due: u64) -> bool {
    let mut stop_seen: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        {
            let Ok(mut work) = sh.work.lock() else {
                return false;
            };
            // Stopping, fenced: nothing more is claimed this pass.
            if sh.signals.stop.load(Ordering::Relaxed) || sh.me().fenced().is_some() {
                work.clear();
            }
            if work.is_empty() && sh.busy.load(Ordering::SeqCst) == 0 {
                return false;
            }
        }
        if sh.signals.stop.load(Ordering::Relaxed) {
            let t = *stop_seen.get_or_insert_with(Instant::now);
            if t.elapsed() >= sh.cfg.stop_timeout {
                abandon(slots, sh.log.as_ref());
                return true;
            }
        }
        if let Ok(p) = sh.pass.lock() {
            sh.log.progress(
                done_so_far + p.entries(),
                total_due.saturating_sub(p.entries()),
            );
        }
    }
}

fn poisoned() -> Error {
    Error::new(ErrorKind::Internal, "a worker panicked")
}

fn sleep_unless_stopped(signals: &Signals, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !signals.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(d));
    }
}

/// Puts every busy worker's entry back as queued, as last recorded, unless
/// its progress in memory is ahead of the file (then it stays claimed, for
/// recovery: putting back an older file would resend).
fn abandon(slots: &[SlotRef], log: &dyn Log) {
    for slot in slots {
        // A worker holds its slot only while it writes to its claim; one
        // stuck there (a hung file system) must not hold up the stop: its
        // entry stays claimed, for recovery.
        let Some(mut s) = lock_within(slot, Duration::from_secs(1)) else {
            log.line("a worker is stuck writing to its entry; left claimed for mm-recover");
            continue;
        };
        s.abandoned = true;
        let Some(h) = s.current.take() else { continue };
        let q = h.queue.name();
        let id = h.id;
        if s.unsaved {
            log.line(&format!(
                "{q} {id} abandoned at shutdown with progress not yet recorded; left claimed for mm-recover"
            ));
            continue;
        }
        match claim::put_back(&h.queue, h.id, &h.token, &h.path, None) {
            Ok(()) => log.line(&format!(
                "{q} {id} abandoned at shutdown; put back as queued with its recorded progress"
            )),
            Err(e) => log.line(&format!(
                "{q} {id} abandoned at shutdown; {e}; mm-recover will"
            )),
        }
    }
}

/// The slot's lock, if it can be had within `wait`.
fn lock_within(slot: &SlotRef, wait: Duration) -> Option<std::sync::MutexGuard<'_, Slot>> {
    let until = Instant::now() + wait;
    loop {
        match slot.try_lock() {
            Ok(s) => return Some(s),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

fn transport(t: &Transport) -> Option<Box<dyn Deliver>> {
    match t {
        #[cfg(feature = "smtp")]
        Transport::Smtp(c) => Some(Box::new(crate::delivery::smtp::SmtpClient::new(c.clone()))),
        Transport::Dir(d) => Some(Box::new(Maildir(d.clone()))),
        Transport::Discard => Some(Box::new(Discard)),
        Transport::None => None,
    }
}

fn worker(sh: &Shared, slot: &SlotRef) {
    let mut transport = transport(&sh.cfg.transport);
    loop {
        let next = {
            let Ok(mut work) = sh.work.lock() else { break };
            loop {
                if sh.closing.load(Ordering::SeqCst) {
                    break None;
                }
                if sh.may_claim()
                    && let Some(item) = work.pop_front()
                {
                    sh.busy.fetch_add(1, Ordering::SeqCst);
                    break Some(item);
                }
                match sh.wake.wait_timeout(work, Duration::from_millis(100)) {
                    Ok((w, _)) => work = w,
                    Err(_) => return,
                }
            }
        };
        let Some((name, place)) = next else { break };
        let mut st = Stats::default();
        let result = process(sh, slot, &mut transport, &name, place, &mut st);
        if let Err(e) = result {
            st.errors += 1;
            failed(sh, slot, &name, &e);
        }
        sh.progress.done(name.id);
        if let Ok(mut s) = slot.lock() {
            s.current = None;
            s.unsaved = false;
        }
        if let Ok(mut p) = sh.pass.lock() {
            p.add(&st);
        }
        let _w = sh.work.lock();
        sh.busy.fetch_sub(1, Ordering::SeqCst);
    }
    if let Some(t) = transport.as_mut() {
        t.close();
    }
}

/// An entry met an error: one line, and its claim (if any) put back as last
/// recorded, due after the shortest delay; except when the claim is no
/// longer ours, or its progress in memory could not be saved (then it stays
/// claimed: an older file put back would resend).
fn failed(sh: &Shared, slot: &SlotRef, name: &FileName, e: &Error) {
    let Ok(mut s) = slot.lock() else { return };
    if s.abandoned {
        return;
    }
    let what = match s.current.take() {
        None => "nothing claimed".to_string(),
        Some(_) if e.kind() == ErrorKind::NotOurs => "the claim is left alone".to_string(),
        Some(h) if s.unsaved => {
            if let Ok(mut u) = sh.unsaved.lock() {
                u.push(h.id);
            }
            "its progress could not be recorded; left claimed for mm-recover".to_string()
        }
        Some(h) => {
            let due = clock::now_secs() + sh.cfg.retry.min.as_secs().max(1);
            match claim::put_back(&h.queue, h.id, &h.token, &h.path, Some(due)) {
                Ok(()) => format!("put back as last recorded, due {}", clock::rfc3339(due)),
                Err(e) => format!("{e}; mm-recover will"),
            }
        }
    };
    sh.log.event(&Event::Error(&format!(
        "{} {} error: {e}; {what}",
        sh.queue.name(),
        name.id
    )));
}

/// What a write to a claimed entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    /// A save of the entry: once done, the file is as current as memory.
    Save,
    /// Anything else (a bounce record, a bucket): memory stays as far
    /// ahead of the file as it was.
    Other,
}

/// Marks the slot's claim as ahead of its file (see [`Slot::unsaved`]).
fn mark_unsaved(slot: &SlotRef) {
    if let Ok(mut s) = slot.lock() {
        s.unsaved = true;
    }
}

/// Runs a write to a claimed entry until it is durable. A write that fails
/// (a full disk, no inodes, an I/O error) is never given up while the runner
/// lives: progress known in memory is never thrown away. The worker keeps
/// the claim, every worker stops claiming, and the write is retried with a
/// growing delay until it succeeds, the claim is no longer ours, or a stop
/// abandons the worker (a cron run gives up after `write_retry`).
///
/// Only failures that time can cure (a full file system, an I/O error, a
/// permission an admin can fix) are retried; anything else (a planted
/// symbolic link, a claim no longer ours) ends it at once.
fn durably<T>(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    (id, write): (EntryId, Write),
    what: &str,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut delay = Duration::from_millis(100);
    let mut stalled = false;
    let started = Instant::now();
    let result = loop {
        match guarded(me, slot, &mut f) {
            Ok(v) => {
                if write == Write::Save
                    && let Ok(mut s) = slot.lock()
                {
                    s.unsaved = false;
                }
                break Ok(v);
            }
            Err(e) if !matches!(e.kind(), ErrorKind::Temporary | ErrorKind::Permission) => {
                break Err(e);
            }
            Err(e) if sh.cfg.mode != Mode::Service && started.elapsed() >= sh.cfg.write_retry => {
                break Err(Error::new(
                    e.kind(),
                    format!(
                        "cannot {what} after retrying for {}: {e}",
                        humantime::format_duration(Duration::from_secs(
                            started.elapsed().as_secs()
                        ))
                    ),
                ));
            }
            Err(e) => {
                if !stalled {
                    stalled = true;
                    sh.stalled.fetch_add(1, Ordering::SeqCst);
                    sh.log.line(&format!(
                        "{} {id} cannot {what}: {e}; keeping the claim and its progress, retrying (nothing new is claimed meanwhile)",
                        sh.queue.name()
                    ));
                }
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if slot.lock().map(|s| s.abandoned).unwrap_or(true) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    if stalled {
        sh.stalled.fetch_sub(1, Ordering::SeqCst);
        sh.wake.notify_all();
        if result.is_ok() {
            sh.log.line(&format!(
                "{} {id} {what}: done after retrying",
                sh.queue.name()
            ));
        }
    }
    result
}

/// One entry's way through the runner: take, run stages, deliver, expire,
/// dispose. Each step's result is a type; every write goes through
/// [`durably`], every change of state through claim.rs.
fn process(
    sh: &Shared,
    slot: &SlotRef,
    transport: &mut Option<Box<dyn Deliver>>,
    name: &FileName,
    place: Place,
    st: &mut Stats,
) -> Result<()> {
    let started = Instant::now();
    let me = sh.me();
    let Some(mut c) = take(sh, &me, slot, name, place, st)? else {
        return Ok(());
    };
    // Holds (hold.rs): a timed hold whose time came ends here; an entry for
    // a destination a hold rule holds is held instead of tried.
    let now = clock::now_secs();
    if name.state == State::Held {
        hold::end(&mut c.entry, now, "its hold time");
        // The end is on disk before anything is tried: a put-back or a stop
        // later never leaves a queued file with a hold record, whose held
        // time would then be missing from the give-up clock.
        durably(
            sh,
            &me,
            slot,
            (c.id(), Write::Save),
            "record the end of its hold",
            || c.save_checked(&|| me.check()),
        )?;
    } else if c.entry.meta.hold.take().is_some() {
        // A hold that never took effect (an mm-hold that failed after its
        // save and put the entry back): not a hold, and not shown as one.
        c.entry.note(
            now,
            "hold record dropped: the entry was not held".to_string(),
        );
    }
    // A rule holds mail whose timed hold just ended too (a rule made or
    // extended meanwhile).
    if let Some(rule) = hold::rule_for(&sh.spool, &c.entry, now) {
        let line = guarded(&me, slot, || hold::hold_by_rule(c, &rule, now))?;
        sh.log.event(&Event::Entry(&line));
        return Ok(());
    }
    if sh.cfg.dsn {
        match crate::dsn::prepare(&mut c.entry, &claim::host_name(), now) {
            crate::dsn::Prepared::Report(to) => sh.log.event(&Event::Entry(&format!(
                "{} {}: bounce record turned into a delivery status notification to <{to}>",
                sh.queue.name(),
                c.id()
            ))),
            crate::dsn::Prepared::NullSender => sh.log.event(&Event::Entry(&format!(
                "{} {}: no delivery status notification for mail from <>",
                sh.queue.name(),
                c.id()
            ))),
            crate::dsn::Prepared::Nothing => {}
        }
    }
    let disposal = match run_stages(sh, &me, slot, &mut c)? {
        Staged::Ready => {
            let mut summary = match transport {
                Some(t) => deliver(sh, &me, slot, t.as_mut(), &mut c)?,
                None => AttemptSummary::default(),
            };
            let id = c.id().to_string();
            let delay = clock::now_secs().saturating_sub(c.id().secs());
            for (to, reply) in expire(&sh.cfg.retry, &mut c.entry, &mut summary) {
                sh.log.event(&Event::Rcpt(RcptLine {
                    id: &id,
                    to: &to,
                    relay: "none",
                    delay,
                    status: RcptStatus::Bounced,
                    reply: &reply,
                }));
            }
            Disposal::Attempted(summary)
        }
        Staged::Defer(reason) => Disposal::Defer(reason),
        Staged::Shunt(reason) => Disposal::Shunt(reason),
    };
    let before = (st.finished + st.passed, st.rcpt_failed);
    let line = dispose(sh, &me, slot, c, disposal, st)?;
    let line = format!("{line} {}ms", started.elapsed().as_millis());
    // Through (finished or passed on) with nothing failed: routine.
    if st.finished + st.passed > before.0 && st.rcpt_failed == before.1 {
        sh.log.event(&Event::Done(&line));
    } else {
        sh.log.event(&Event::Entry(&line));
    }
    Ok(())
}

/// Step 1: claim the entry (a lost race is `None`, silently).
fn take(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    name: &FileName,
    place: Place,
    st: &mut Stats,
) -> Result<Option<Claim>> {
    if let Some(why) = sh.below_floor() {
        return Err(Error::new(
            ErrorKind::Temporary,
            format!("not claimed: {why}"),
        ));
    }
    let claimed = guarded(me, slot, || {
        Claim::take(&sh.spool, &sh.queue, name, place, me.token())
    })?;
    let c = match claimed {
        Claimed::Lost => return Ok(None),
        Claimed::Quarantined(reason) => {
            st.quarantined += 1;
            sh.log.line(&format!(
                "{} {} quarantined in bad: {reason}",
                sh.queue.name(),
                name.id
            ));
            return Ok(None);
        }
        Claimed::Entry(c) => *c,
    };
    crate::crashpoint::here("runner-after-claim");
    sh.progress.took(c.id());
    if let Ok(mut s) = slot.lock() {
        s.current = Some(Held {
            queue: sh.queue.clone(),
            id: c.id(),
            token: me.token().to_string(),
            path: c.path().to_path_buf(),
        });
    }
    Ok(Some(c))
}

/// What the stages said.
enum Staged {
    /// All done: deliver.
    Ready,
    /// A stage asked to try again later.
    Defer(String),
    /// A stage refused the entry.
    Shunt(String),
}

/// Step 2: the pipeline stages not yet done, each one's progress saved.
fn run_stages(sh: &Shared, me: &Registration, slot: &SlotRef, c: &mut Claim) -> Result<Staged> {
    let stages = &sh.cfg.stages;
    let qname = sh.queue.name().to_string();
    // `stage` counts the stages of the queue that passed the entry on, until
    // a runner of this queue starts on it (see `Next::PassOn`).
    c.entry.meta.stage = c.entry.stage_in(&qname);
    c.entry.meta.stage_queue = None;
    while (c.entry.meta.stage as usize) < stages.len() {
        let i = c.entry.meta.stage as usize;
        match pipeline::run_stage(
            &stages[i],
            i,
            &mut c.entry,
            &qname,
            &sh.signals.stop,
            sh.cfg.stop_timeout,
            sh.cfg.stage_timeout,
        ) {
            StageOutcome::Continue(new_message) => {
                if let Some(m) = new_message {
                    c.entry.message = m;
                }
                // Not marked unsaved: a stage's result lost with an older
                // file put back costs a rerun of the stage, never a copy,
                // and is better than a claim stranded under a live runner.
                c.entry.meta.stage += 1;
                sh.progress.advanced(None);
                if (c.entry.meta.stage as usize) < stages.len() {
                    durably(
                        sh,
                        me,
                        slot,
                        (c.id(), Write::Save),
                        "record a stage's result",
                        || c.save_checked(&|| me.check()),
                    )?;
                }
            }
            StageOutcome::Defer(reason) => return Ok(Staged::Defer(reason)),
            StageOutcome::Shunt(reason) => return Ok(Staged::Shunt(reason)),
        }
    }
    Ok(Staged::Ready)
}

/// Step 3: delivery to the pending recipients, each transaction's outcome
/// recorded before the next begins.
fn deliver(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    transport: &mut dyn Deliver,
    c: &mut Claim,
) -> Result<AttemptSummary> {
    let mut summary = AttemptSummary::default();
    let positions: Vec<usize> = (0..c.entry.recipients.len())
        .filter(|&i| c.entry.recipients[i].state == RcptState::Pending)
        .collect();
    if positions.is_empty() {
        return Ok(summary);
    }
    let pending: Vec<String> = positions
        .iter()
        .map(|&i| c.entry.recipients[i].address.clone())
        .collect();
    // Nothing is sent for a claim that is no longer safely ours (a runner
    // frozen since it claimed, or during a stage).
    guarded(me, slot, || Ok(()))?;
    // A destination that failed at the connection level is not tried again
    // for every entry: one probe at a time, the others deferred untried.
    let dest = transport.destination();
    if dest.is_some() {
        // So that a flush of this entry knows whose back-off to clear.
        c.entry.meta.destination.clone_from(&dest);
    }
    let mut probing = false;
    if let Some(d) = &dest
        && let Some(mut state) = sh.remembered(d)
    {
        // While the back-off lasts nobody tries; once it is over, one entry
        // at a time probes, and the others wait another minute.
        if clock::now_secs() >= state.until && sh.destinations.try_probe(d) {
            probing = true;
        } else {
            state.until = state.until.max(clock::now_secs() + 60);
            // The give-up clock runs for mail that waits on a dead
            // destination too: without it, the entries that never get to
            // probe would never expire (and never bounce).
            c.entry.meta.first_attempt.get_or_insert(clock::now_secs());
            summary.deferred = pending.len() as u64;
            summary.backed_off = Some(state);
            return Ok(summary);
        }
    }
    // More than one transaction may follow, each recorded before the next:
    // reserve the records' space while nothing is sent, with room for a
    // reply of 512 bytes per recipient (both files a save alternates
    // between get it, and saves never give blocks back).
    if pending.len() > 1 {
        let slack = 4096 + 512 * pending.len() as u64;
        guarded(me, slot, || c.reserve(slack)).map_err(|e| {
            Error::new(
                e.kind(),
                format!("not sent: no space to record the outcome: {e}"),
            )
        })?;
    }
    let now = clock::now_secs();
    c.entry.meta.attempts += 1;
    c.entry.meta.first_attempt.get_or_insert(now);
    let total = pending.len();
    let mut seen = 0usize;
    let (id, sender) = (c.id().to_string(), c.entry.sender.clone());
    // A copy for the transport: `record` saves the entry (message and all)
    // after each transaction, so the entry must keep its own.
    let message = c.entry.message.clone();
    let mut outcomes: Vec<RcptResult> = Vec::new();
    let mut record = |results: &[RcptResult]| -> Result<()> {
        seen += results.len();
        outcomes.extend_from_slice(results);
        if let Ok(mut counters) = sh.counters.lock() {
            counters.transaction(results, message.len());
        }
        sh.progress
            .advanced(results.last().map(|r| r.reply.as_str()));
        apply(&mut c.entry, results, &mut summary);
        mark_unsaved(slot);
        // The last transaction's outcome is written by the disposal.
        if seen < total {
            durably(
                sh,
                me,
                slot,
                (c.id(), Write::Save),
                "record a transaction's outcome",
                || c.save_checked(&|| me.check()),
            )?;
            crate::crashpoint::here("runner-after-record");
        }
        // Nothing more is sent for a claim that is no longer safely ours
        // (a passing stat error of the record is not a proof of that).
        // After the last transaction nothing more is sent, and the
        // disposal's every write checks the lease itself: no check here.
        if seen >= total {
            return Ok(());
        }
        match me.check() {
            Err(e) if e.kind() == ErrorKind::NotOurs => Err(e),
            _ => Ok(()),
        }
    };
    let mail = Mail {
        id: &id,
        sender: &sender,
        recipients: &pending,
        positions: &positions,
        message: &message,
    };
    sh.log.event(&Event::Envelope {
        id: &id,
        from: &sender,
        size: message.len(),
        nrcpt: pending.len(),
    });
    let delivered = transport.deliver(&mail, &mut record);
    let relay = transport.relay();
    let delay = now.saturating_sub(c.id().secs());
    for o in &outcomes {
        let status = match o.verdict {
            Verdict::Delivered => RcptStatus::Sent,
            Verdict::Deferred => RcptStatus::Deferred,
            Verdict::Failed => RcptStatus::Bounced,
        };
        sh.log.event(&Event::Rcpt(RcptLine {
            id: &id,
            to: &o.address,
            relay: &relay,
            delay,
            status,
            reply: &o.reply,
        }));
    }
    if let Some(d) = &dest {
        sh.destination_outcome(d, transport.trouble());
        if probing {
            sh.destinations.end_probe(d);
        }
    }
    delivered?;
    Ok(summary)
}

/// Step 4: recipients still pending past the give-up time fail ("expired").
/// Returns each expired recipient and its new last reply, for the log.
fn expire(
    retry: &RetryPolicy,
    entry: &mut Entry,
    summary: &mut AttemptSummary,
) -> Vec<(String, String)> {
    let now = clock::now_secs();
    let mut expired = Vec::new();
    if entry.pending().count() == 0
        || !entry
            .meta
            .first_attempt
            .is_some_and(|f| retry.expired(f, now))
    {
        return expired;
    }
    let horizon = humantime::format_duration(retry.give_up);
    for r in entry
        .recipients
        .iter_mut()
        .filter(|r| r.state == RcptState::Pending)
    {
        r.state = RcptState::Failed;
        let last = r.last_reply.take().unwrap_or_else(|| "no reply".into());
        r.last_reply = Some(BounceReason::expired_reply(&format!(
            "gave up after {horizon}; last reply: {last}"
        )));
        r.updated = Some(now);
        summary.deferred = summary.deferred.saturating_sub(1);
        summary.failed += 1;
        expired.push((r.address.clone(), r.last_reply.clone().unwrap_or_default()));
    }
    expired
}

/// Where an entry goes once its attempt is over.
enum Disposal {
    /// Stages deferred it: back to the queue, due after the backoff.
    Defer(String),
    /// A stage refused it: shunt/.
    Shunt(String),
    /// Delivery was tried (or there is none here): by what is left, back
    /// to the queue, on to the next one, or removed.
    Attempted(AttemptSummary),
}

/// Step 5: write the bounce record for new failures, then put the entry
/// where the disposal says, each write until durable. Returns the log line.
fn dispose(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    mut c: Claim,
    disposal: Disposal,
    st: &mut Stats,
) -> Result<String> {
    let qname = sh.queue.name().to_string();
    let id = c.id();
    let now = clock::now_secs();
    let summary = match disposal {
        Disposal::Defer(reason) => {
            c.entry.meta.attempts += 1;
            let first = *c.entry.meta.first_attempt.get_or_insert(now);
            if !sh.cfg.retry.expired(first, now) {
                let due = sh.cfg.retry.next_due(c.entry.meta.attempts, now);
                c.entry.meta.next_attempt = Some(due);
                c.entry.meta.last_error = Some(reason.clone());
                release_durably(sh, me, slot, c, due)?;
                st.deferred += 1;
                return Ok(format!(
                    "{qname} {id} deferred until {}: {reason}",
                    clock::rfc3339(due)
                ));
            }
            // A stage that keeps deferring must not hold mail forever.
            let why = format!(
                "gave up after {} of deferrals: {reason}",
                humantime::format_duration(sh.cfg.retry.give_up)
            );
            return shunt(sh, me, slot, c, &why, st);
        }
        Disposal::Shunt(reason) => return shunt(sh, me, slot, c, &reason, st),
        Disposal::Attempted(s) => s,
    };
    let new_failures = bounce::unbounced(&c.entry);
    if !new_failures.is_empty() {
        let record = bounce_record(&qname, &c.entry, &new_failures);
        let bounces = sh.spool.queue_named(queues::BOUNCES)?;
        durably(
            sh,
            me,
            slot,
            (id, Write::Other),
            "write its bounce record",
            || claim::publish(&bounces, &record),
        )?;
        sh.log
            .event(&Event::Bounce(&qname, &id.to_string(), &record.id));
        bounce::mark_bounced(&mut c.entry, &new_failures);
    }
    st.rcpt_delivered += summary.delivered;
    st.rcpt_deferred += summary.deferred;
    st.rcpt_failed += summary.failed;
    let verdict = match next(&sh.cfg, &c.entry) {
        Next::Retry => {
            let due = match &summary.backed_off {
                // Not tried, no attempt counted: due once the back-off ends,
                // spread over the minute after it.
                Some(state) => destination::spread_due(state, u64::from(id.bucket())),
                None => sh.cfg.retry.next_due(c.entry.meta.attempts, now),
            };
            c.entry.meta.next_attempt = Some(due);
            // An entry deferred untried says why, as one that was tried does.
            let why = summary.backed_off.as_ref().map(|state| {
                format!(
                    "{} is backed off after {} failure(s) ({})",
                    state.destination, state.failures, state.last_error
                )
            });
            if why.is_some() {
                c.entry.meta.last_error.clone_from(&why);
            }
            release_durably(sh, me, slot, c, due)?;
            st.deferred += 1;
            match why {
                Some(why) => format!("deferred until {}: {why}", clock::rfc3339(due)),
                None => format!("deferred until {}", clock::rfc3339(due)),
            }
        }
        Next::PassOn(next) => {
            // The stages of this queue stay done here (a pass-on that fails
            // and is put back must not run them again); the next queue's
            // runner starts its own from 0.
            c.entry.meta.stage_queue = Some(qname.clone());
            c.entry.meta.next_attempt = None;
            c.entry.note(now, format!("passed from {qname} to {next}"));
            let dest = sh.spool.queue(&next);
            move_durably(sh, me, slot, c, &dest, State::Queued)?;
            st.passed += 1;
            format!("passed to {next}")
        }
        Next::Finish => {
            crate::crashpoint::here("runner-before-finish");
            guarded(me, slot, || sh.finisher.finish(c))?;
            st.finished += 1;
            "done".into()
        }
    };
    let mut line = format!(
        "{qname} {id} delivered={} deferred={} failed={} {verdict}",
        summary.delivered, summary.deferred, summary.failed,
    );
    if let Some(reply) = &summary.last_problem {
        let _ = write!(line, " reply=\"{}\"", reply.replace('"', "'"));
    }
    Ok(line)
}

/// Where a delivered (or not deliverable here) entry goes.
enum Next {
    /// Recipients left: back to the queue, due after the backoff.
    Retry,
    /// All done, `--then`: on to that queue.
    PassOn(QueueName),
    /// All done: removed.
    Finish,
}

fn next(cfg: &RunnerConfig, entry: &Entry) -> Next {
    if entry.pending().count() > 0 && !matches!(cfg.transport, Transport::None) {
        Next::Retry
    } else if let Some(next) = &cfg.then {
        Next::PassOn(next.clone())
    } else {
        Next::Finish
    }
}

/// Saves the claim until durable and puts it back, due at `due`.
fn release_durably(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    c: Claim,
    due: u64,
) -> Result<()> {
    durably(
        sh,
        me,
        slot,
        (c.id(), Write::Save),
        "record its outcome",
        || c.save_checked(&|| me.check()),
    )?;
    guarded(me, slot, || c.release_unsaved(Some(due)))
}

/// Saves the claim and moves it into `dest` (queued or preserved): the
/// save, and the bucket in `dest` (a new directory needs an inode), each
/// until durable; then one rename.
fn move_durably(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    c: Claim,
    dest: &Queue,
    state: State,
) -> Result<()> {
    let id = c.id();
    durably(
        sh,
        me,
        slot,
        (id, Write::Save),
        "record its outcome",
        || c.save_checked(&|| me.check()),
    )?;
    durably(sh, me, slot, (id, Write::Other), "make its bucket", || {
        dest.ensure_bucket(id.bucket()).map(|_| ())
    })?;
    guarded(me, slot, || c.move_saved(dest, state, None).map(|_| ()))
}

fn shunt(
    sh: &Shared,
    me: &Registration,
    slot: &SlotRef,
    mut c: Claim,
    reason: &str,
    st: &mut Stats,
) -> Result<String> {
    let (qname, id) = (sh.queue.name().to_string(), c.id());
    c.mark_quarantined(queues::SHUNT, reason);
    let dest = sh.spool.queue_named(queues::SHUNT)?;
    move_durably(sh, me, slot, c, &dest, State::Preserved)?;
    st.shunted += 1;
    Ok(format!("{qname} {id} shunted: {reason}"))
}

#[derive(Default)]
struct AttemptSummary {
    delivered: u64,
    deferred: u64,
    failed: u64,
    last_problem: Option<String>,
    /// Not tried: its destination is backed off (see crate::destination).
    backed_off: Option<destination::State>,
}

fn apply(entry: &mut Entry, results: &[RcptResult], s: &mut AttemptSummary) {
    let now = clock::now_secs();
    for res in results {
        let Some(r) = entry
            .recipients
            .iter_mut()
            .find(|r| r.address == res.address && r.state == RcptState::Pending)
        else {
            continue;
        };
        r.attempts += 1;
        r.last_reply = Some(res.reply.clone());
        r.updated = Some(now);
        match res.verdict {
            Verdict::Delivered => {
                r.state = RcptState::Delivered;
                s.delivered += 1;
            }
            Verdict::Deferred => {
                s.deferred += 1;
                s.last_problem = Some(res.reply.clone());
                entry.meta.last_error = Some(format!("{}: {}", res.address, res.reply));
            }
            Verdict::Failed => {
                r.state = RcptState::Failed;
                s.failed += 1;
                s.last_problem = Some(res.reply.clone());
            }
        }
    }
}
