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
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::claim::{Claim, Claimed, Registration};
use crate::clock;
use crate::delivery::{RcptResult, Verdict, local};
use crate::entry::{Bounce, Entry, RcptState};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
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
}

/// Where log lines go; the library never prints.
pub trait Log: Send + Sync {
    /// One line (no newline).
    fn line(&self, line: &str);
    /// Progress of an `--until-empty` run: done so far, and still due.
    fn progress(&self, _done: u64, _left: u64) {}
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
    current: Option<(Queue, EntryId, PathBuf)>,
    abandoned: bool,
}

type SlotRef = Arc<Mutex<Slot>>;

fn abandoned() -> Error {
    Error::new(ErrorKind::Temporary, "abandoned at shutdown")
}

/// Runs `f` on the claim's file only if the slot was not abandoned and our
/// lease is still good (a runner that could not renew it fences itself, so a
/// recovery on another host never races with its writes).
fn guarded<T>(me: &Registration, slot: &SlotRef, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let s = slot.lock().map_err(|_| abandoned())?;
    if s.abandoned {
        return Err(abandoned());
    }
    if !me.lease_ok() {
        return Err(Error::new(
            ErrorKind::Temporary,
            "lease not renewed in time; not writing (mm-recover will take the entry back)",
        ));
    }
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
    me: Arc<Registration>,
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
    /// Removes finished entries.
    finisher: Finisher,
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
}

impl Finisher {
    /// `threads` removers (one per worker: each unlink waits for the device).
    fn start(log: Arc<dyn Log>, threads: usize) -> Finisher {
        // Small: a runner killed with removals pending delivers those again.
        let (tx, rx) = std::sync::mpsc::sync_channel::<PathBuf>(8);
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..threads.max(1))
            .map(|_| {
                let (rx, log) = (Arc::clone(&rx), Arc::clone(&log));
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
                        }
                    }
                })
            })
            .collect();
        Finisher {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        }
    }

    /// Removes the claimed file, through the finisher thread while it runs.
    fn finish(&self, c: Claim) -> Result<()> {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        match tx {
            Some(tx) => {
                if let Err(std::sync::mpsc::SendError(path)) = tx.send(c.finish_later()) {
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io("cannot remove", &path, e))?;
                }
                Ok(())
            }
            None => c.finish(),
        }
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
    // One runner per queue and slice (the cron singleton of seed 002).
    let locks = spool.private_dir(".locks")?;
    let lock_path = locks.join(format!(
        "{}.{}-{}.lock",
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

    let what = format!("mm-runq {} {}", cfg.queue, cfg.slice);
    let me = Registration::register(spool, &what, crate::claim::DEFAULT_LEASE)?;
    // Renews the lease every quarter of it; dropping `renewer_stop` ends it at
    // once (a sleeping loop would hold up the exit of a short cron run).
    let (renewer_stop, stopped) = std::sync::mpsc::channel::<()>();
    let renewer = {
        let me = Arc::clone(&me);
        std::thread::spawn(move || {
            while let Err(RecvTimeoutError::Timeout) =
                stopped.recv_timeout(crate::claim::DEFAULT_LEASE / 4)
            {
                let _ = me.renew();
            }
        })
    };

    // Take back what dead runners left in our slice before anything else.
    let opts = RecoverOptions {
        select: crate::select::Selector {
            slice: Some(cfg.slice),
            ..Default::default()
        },
        max_recoveries: cfg.max_recoveries,
        ..RecoverOptions::default()
    };
    recover::recover_queue(spool, &queue, &me, &opts, &mut |a| {
        if a.action != "busy" {
            log.line(&format!(
                "{} {} {}: {} ({})",
                cfg.queue,
                a.action,
                a.id.as_deref().unwrap_or("-"),
                a.path.display(),
                a.detail
            ));
        }
    })?;

    let shared = Arc::new(Shared {
        spool: spool.clone(),
        queue,
        cfg: cfg.clone(),
        me: Arc::clone(&me),
        signals: signals.clone(),
        log: Arc::clone(&log),
        work: Mutex::new(VecDeque::new()),
        busy: AtomicUsize::new(0),
        wake: Condvar::new(),
        pass: Mutex::new(Stats::default()),
        closing: AtomicBool::new(false),
        finisher: Finisher::start(Arc::clone(&log), cfg.connections),
    });
    let result = run_passes(&shared);
    shared.finisher.close();
    drop(renewer_stop);
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            me.unregister_if_clean(spool, &shared.queue);
            return Err(e);
        }
    };
    if !stats.abandoned {
        let _ = renewer.join();
        me.unregister_if_clean(spool, &shared.queue);
    }
    drop(lock);
    Ok(Outcome::Done(stats))
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

impl Registration {
    /// Removes the record unless a claim of ours is still on disk (then the
    /// record stays, and mm-recover sees a dead holder).
    fn unregister_if_clean(&self, _spool: &Spool, queue: &Queue) {
        let mut ours = false;
        let _ = queue.scan(Slice::ALL, &mut |item| {
            if let Item::Entry { name, .. } = item
                && name.holder.as_deref() == Some(self.token())
            {
                ours = true;
            }
        });
        if !ours {
            self.unregister();
        }
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
        if let Item::Entry { name, place, .. } = item
            && name.state == State::Queued
            && name.due.is_none_or(|d| d <= now)
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
    let mut totals = Stats::default();
    let mut done_so_far = 0u64;
    let result = loop {
        if sh.signals.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let now = clock::now_secs();
        let (batch, total_due) = match due_entries(&sh.queue, cfg.slice, now, cfg.batch) {
            Ok(b) => b,
            Err(e) => break Err(e),
        };
        if batch.is_empty() {
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
        let p = std::mem::take(&mut *sh.pass.lock().map_err(|_| poisoned())?);
        done_so_far += p.entries();
        totals.add(&p);
        if forced {
            // The stuck workers are left behind; their entries are back in the queue.
            totals.abandoned = true;
            return Ok(totals);
        }
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
            if sh.signals.stop.load(Ordering::Relaxed) {
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

/// Puts every busy worker's entry back as queued, as last recorded.
fn abandon(slots: &[SlotRef], log: &dyn Log) {
    for slot in slots {
        let Ok(mut s) = slot.lock() else { continue };
        s.abandoned = true;
        if let Some((queue, id, path)) = s.current.take() {
            let to = queue.path(&FileName::queued(id));
            match std::fs::rename(&path, &to) {
                Ok(()) => log.line(&format!(
                    "{} {id} abandoned at shutdown; put back as queued with its recorded progress",
                    queue.name()
                )),
                Err(e) => log.line(&format!(
                    "{} {id} abandoned at shutdown; cannot put back ({e}); mm-recover will",
                    queue.name()
                )),
            }
        }
    }
}

enum Transporter {
    #[cfg(feature = "smtp")]
    Smtp(Box<crate::delivery::smtp::SmtpClient>),
    Dir(PathBuf),
    Discard,
    None,
}

fn worker(sh: &Shared, slot: &SlotRef) {
    let mut transport = match &sh.cfg.transport {
        #[cfg(feature = "smtp")]
        Transport::Smtp(c) => {
            Transporter::Smtp(Box::new(crate::delivery::smtp::SmtpClient::new(c.clone())))
        }
        Transport::Dir(d) => Transporter::Dir(d.clone()),
        Transport::Discard => Transporter::Discard,
        Transport::None => Transporter::None,
    };
    loop {
        let next = {
            let Ok(mut work) = sh.work.lock() else { break };
            loop {
                if sh.closing.load(Ordering::SeqCst) {
                    break None;
                }
                if !sh.signals.stop.load(Ordering::Relaxed)
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
        if let Ok(mut s) = slot.lock() {
            let held = s.current.take();
            if let Err(e) = result
                && !s.abandoned
            {
                st.errors += 1;
                // A local failure (a full disk, an I/O error): put the entry back,
                // deferred by the shortest delay, as last recorded, rather than
                // keep it claimed until this runner exits.
                let due = clock::now_secs() + sh.cfg.retry.min.as_secs().max(1);
                let put_back = held.map(|(queue, id, path)| {
                    let to = queue.path(&FileName::deferred(id, Some(due)));
                    std::fs::rename(&path, &to)
                });
                let what = match put_back {
                    Some(Ok(())) => format!("put back, due {}", clock::rfc3339(due)),
                    Some(Err(e)) => format!("cannot put back ({e}); mm-recover will"),
                    None => "nothing claimed".into(),
                };
                sh.log.line(&format!(
                    "{} {} error: {e}; {what}",
                    sh.queue.name(),
                    name.id
                ));
            }
        }
        if let Ok(mut p) = sh.pass.lock() {
            p.add(&st);
        }
        let _w = sh.work.lock();
        sh.busy.fetch_sub(1, Ordering::SeqCst);
    }
    #[cfg(feature = "smtp")]
    if let Transporter::Smtp(c) = &mut transport {
        c.close();
    }
}

fn process(
    sh: &Shared,
    slot: &SlotRef,
    transport: &mut Transporter,
    name: &FileName,
    place: Place,
    st: &mut Stats,
) -> Result<()> {
    let started = Instant::now();
    let qname = sh.queue.name().to_string();
    let claimed = guarded(&sh.me, slot, || {
        Claim::take(&sh.spool, &sh.queue, name, place, sh.me.token())
    })?;
    let mut c = match claimed {
        Claimed::Lost => return Ok(()),
        Claimed::Quarantined(reason) => {
            st.quarantined += 1;
            sh.log
                .line(&format!("{qname} {} quarantined in bad: {reason}", name.id));
            return Ok(());
        }
        Claimed::Entry(c) => *c,
    };
    crate::crashpoint::here("runner-after-claim");
    if let Ok(mut s) = slot.lock() {
        s.current = Some((sh.queue.clone(), c.id(), c.path().to_path_buf()));
    }
    let now = clock::now_secs();
    let id = c.id();

    // 1. Pipeline stages not yet done.
    let stages = &sh.cfg.stages;
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
                c.entry.meta.stage += 1;
                if (c.entry.meta.stage as usize) < stages.len() {
                    guarded(&sh.me, slot, || c.save())?;
                }
            }
            StageOutcome::Defer(reason) => {
                c.entry.meta.attempts += 1;
                let first = *c.entry.meta.first_attempt.get_or_insert(now);
                if sh.cfg.retry.expired(first, now) {
                    // A stage that keeps deferring must not hold mail forever.
                    let why = format!(
                        "gave up after {} of deferrals: {reason}",
                        humantime::format_duration(sh.cfg.retry.give_up)
                    );
                    guarded(&sh.me, slot, || {
                        c.quarantine(&sh.spool, queues::SHUNT, &why).map(|_| ())
                    })?;
                    st.shunted += 1;
                    sh.log.line(&format!("{qname} {id} shunted: {why}"));
                    return Ok(());
                }
                let due = sh.cfg.retry.next_due(c.entry.meta.attempts, now);
                c.entry.meta.next_attempt = Some(due);
                c.entry.meta.last_error = Some(reason.clone());
                guarded(&sh.me, slot, || c.release(Some(due)))?;
                st.deferred += 1;
                sh.log.line(&format!(
                    "{qname} {id} deferred until {}: {reason}",
                    clock::rfc3339(due)
                ));
                return Ok(());
            }
            StageOutcome::Shunt(reason) => {
                guarded(&sh.me, slot, || {
                    c.quarantine(&sh.spool, queues::SHUNT, &reason).map(|_| ())
                })?;
                st.shunted += 1;
                sh.log.line(&format!("{qname} {id} shunted: {reason}"));
                return Ok(());
            }
        }
    }

    // 2. Delivery to the pending recipients.
    let positions: Vec<usize> = (0..c.entry.recipients.len())
        .filter(|&i| c.entry.recipients[i].state == RcptState::Pending)
        .collect();
    let pending: Vec<String> = positions
        .iter()
        .map(|&i| c.entry.recipients[i].address.clone())
        .collect();
    let mut summary = AttemptSummary::default();
    if !matches!(transport, Transporter::None) && !pending.is_empty() {
        c.entry.meta.attempts += 1;
        c.entry.meta.first_attempt.get_or_insert(now);
        let total = pending.len();
        let mut seen = 0usize;
        let sender = c.entry.sender.clone();
        // A copy for the transport: `record` saves the entry (message and all)
        // after each transaction, so the entry must keep its own.
        let message = c.entry.message.clone();
        let mut record = |results: &[RcptResult]| -> Result<()> {
            seen += results.len();
            apply(&mut c.entry, results, &mut summary);
            // The last transaction's outcome is written by the final move below.
            if seen < total {
                guarded(&sh.me, slot, || c.save())?;
                crate::crashpoint::here("runner-after-record");
                Ok(())
            } else {
                Ok(())
            }
        };
        let r = match transport {
            #[cfg(feature = "smtp")]
            Transporter::Smtp(client) => client.deliver(&sender, &pending, &message, &mut record),
            // One copy, then its record, recipient by recipient.
            Transporter::Dir(dir) => pending.iter().zip(&positions).try_for_each(|(rcpt, &i)| {
                record(&[local::deliver_copy(
                    dir,
                    &id.to_string(),
                    i,
                    &sender,
                    rcpt,
                    &message,
                )])
            }),
            Transporter::Discard => record(&local::discard(&pending)),
            Transporter::None => Ok(()),
        };
        r?;
    }

    // 3. What is left decides where the entry goes.
    let now = clock::now_secs();
    let still_pending = c.entry.pending().count();
    if still_pending > 0
        && c.entry
            .meta
            .first_attempt
            .is_some_and(|f| sh.cfg.retry.expired(f, now))
    {
        let horizon = humantime::format_duration(sh.cfg.retry.give_up);
        for r in c
            .entry
            .recipients
            .iter_mut()
            .filter(|r| r.state == RcptState::Pending)
        {
            r.state = RcptState::Failed;
            let last = r.last_reply.take().unwrap_or_else(|| "no reply".into());
            r.last_reply = Some(format!(
                "expired: gave up after {horizon}; last reply: {last}"
            ));
            r.updated = Some(now);
            summary.deferred = summary.deferred.saturating_sub(1);
            summary.failed += 1;
        }
    }
    let new_failures: Vec<usize> = c
        .entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RcptState::Failed && !r.extra.contains_key(BOUNCED))
        .map(|(i, _)| i)
        .collect();
    if !new_failures.is_empty() {
        guarded(&sh.me, slot, || {
            write_bounce(&sh.spool, &qname, &c.entry, &new_failures)
        })?;
        for i in new_failures {
            c.entry.recipients[i]
                .extra
                .insert(BOUNCED.into(), rmpv::Value::Boolean(true));
        }
    }
    st.rcpt_delivered += summary.delivered;
    st.rcpt_deferred += summary.deferred;
    st.rcpt_failed += summary.failed;
    let remaining = c.entry.pending().count();
    let verdict;
    if remaining > 0 && !matches!(transport, Transporter::None) {
        let due = sh.cfg.retry.next_due(c.entry.meta.attempts, now);
        c.entry.meta.next_attempt = Some(due);
        guarded(&sh.me, slot, || c.release(Some(due)))?;
        st.deferred += 1;
        verdict = format!("deferred until {}", clock::rfc3339(due));
    } else if let Some(next) = &sh.cfg.then {
        c.entry.meta.stage = 0;
        c.entry.meta.next_attempt = None;
        c.entry.note(now, format!("passed from {qname} to {next}"));
        let dest = sh.spool.queue(next);
        guarded(&sh.me, slot, || {
            c.move_to(&dest, State::Queued, None).map(|_| ())
        })?;
        st.passed += 1;
        verdict = format!("passed to {next}");
    } else {
        crate::crashpoint::here("runner-before-finish");
        guarded(&sh.me, slot, || sh.finisher.finish(c))?;
        st.finished += 1;
        verdict = "done".into();
    }
    let mut line = format!(
        "{qname} {id} delivered={} deferred={} failed={} {verdict} {}ms",
        summary.delivered,
        summary.deferred,
        summary.failed,
        started.elapsed().as_millis()
    );
    if let Some(reply) = &summary.last_problem {
        let _ = write!(line, " reply=\"{}\"", reply.replace('"', "'"));
    }
    sh.log.line(&line);
    Ok(())
}

/// Marks a failed recipient whose bounce record was written.
const BOUNCED: &str = "bounced";

#[derive(Default)]
struct AttemptSummary {
    delivered: u64,
    deferred: u64,
    failed: u64,
    last_problem: Option<String>,
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

/// Writes a bounce record for the recipients `failed` of `entry` into bounces/.
fn write_bounce(spool: &Spool, queue: &str, entry: &Entry, failed: &[usize]) -> Result<()> {
    let bounces = spool.queue_named(queues::BOUNCES)?;
    let now = clock::now();
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let id = EntryId::generate(micros, &[entry.id.as_bytes(), b"bounce"]);
    let addrs: Vec<String> = failed
        .iter()
        .map(|&i| entry.recipients[i].address.clone())
        .collect();
    let mut b = Entry::new(
        &id,
        &entry.sender,
        &addrs,
        entry.message.clone(),
        queues::BOUNCES,
    );
    for (dst, &i) in b.recipients.iter_mut().zip(failed) {
        let src = &entry.recipients[i];
        dst.state = RcptState::Failed;
        dst.attempts = src.attempts;
        dst.last_reply = src.last_reply.clone();
        dst.updated = src.updated;
        // The record itself must not bounce again when a runner works bounces/.
        dst.extra.insert(BOUNCED.into(), rmpv::Value::Boolean(true));
    }
    let expired = failed.iter().any(|&i| {
        entry.recipients[i]
            .last_reply
            .as_deref()
            .is_some_and(|r| r.starts_with("expired"))
    });
    b.meta.list = entry.meta.list.clone();
    b.meta.kv = entry.meta.kv.clone();
    b.meta.bounce = Some(Bounce {
        original_id: entry.id.clone(),
        original_queue: queue.to_string(),
        reason: if expired {
            "expired".into()
        } else {
            "refused".into()
        },
        extra: Default::default(),
    });
    let bucket = bounces.ensure_bucket(id.bucket())?;
    let tmp = bucket.join(FileName::writing(id, None).to_string());
    let dest = bucket.join(FileName::queued(id).to_string());
    fsx::write_and_rename(&tmp, &dest, &b.encode()?, true)?;
    fsx::sync_dir(&bucket)
}
