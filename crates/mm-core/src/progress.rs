//! A runner's progress, next to its record: `.runners/TOKEN.progress`.
//!
//! A queue runner says what it is doing, so that an admin can tell a busy
//! runner from a stuck one (seed 004: Mailman's admin could not tell a busy
//! OutgoingRunner from one waiting forever on an SMTP reply). The file holds
//! its queue and slice, the entries in hand and since when, when it last made
//! progress (claimed an entry, ran a stage, recorded a transaction, finished
//! an entry), when its last pass ended, and the last reply it got.
//!
//! **Writing.** Only the runner writes its progress file, by
//! write-rename (`TOKEN.progress.tmp`, then a rename): a reader sees the old
//! content or the new, never a part. It is not synced: it is advice for
//! people and monitoring, never a basis for a change to an entry, and a
//! machine crash makes its runner dead anyway. It is written at most once a
//! second while something changes (a pass that took entries included), and
//! every 30 seconds otherwise; it is removed with the record.
//!
//! **Reading.** [`runners`] lists every runner record with its liveness
//! (claim.rs) and its progress, and decides whether a live runner is
//! *stalled*: due entries are waiting (in its queue and slice, or in its
//! hands) and it made no progress and ended no pass for longer than a
//! threshold. A progress file that vanishes or does not decode while read
//! is simply absent: the runner is shown without progress.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::claim::{self, Holder, Liveness};
use crate::clock;
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::id::EntryId;
use crate::report::SCHEMA;
use crate::slice::Slice;
use crate::spool::{QueueName, Spool};

/// How often an unchanged progress file is written again anyway, so that
/// the end of each idle pass shows.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// The default `--stalled-after`.
pub const DEFAULT_STALLED_AFTER: Duration = Duration::from_secs(300);

/// An entry a runner holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InHand {
    /// Its id.
    pub id: String,
    /// Since when (Unix seconds).
    pub since: u64,
}

/// What a runner's progress file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The runner's token (the record's name).
    pub token: String,
    /// The queue it runs.
    pub queue: String,
    /// Its slice, `K/N`.
    pub slice: String,
    /// When it started (Unix seconds).
    pub started: u64,
    /// When this was written (Unix seconds).
    pub updated: u64,
    /// When it last made progress: claimed an entry, ran a stage, recorded
    /// a transaction or was done with an entry (its start, before any).
    pub last_progress: u64,
    /// When its last pass ended (a look that found nothing due included).
    pub last_pass: Option<u64>,
    /// Passes ended.
    pub passes: u64,
    /// The entries in hand, oldest claim first.
    pub in_hand: Vec<InHand>,
    /// The last reply it got from a server (or the local reason).
    pub last_reply: Option<String>,
}

/// The path of a runner's progress file.
pub fn path(spool: &Spool, token: &str) -> PathBuf {
    spool
        .root()
        .join(".runners")
        .join(format!("{token}.progress"))
}

/// Writes a progress file: write-rename, not synced (see the module doc).
pub fn write(spool: &Spool, p: &Progress) -> Result<()> {
    let dest = path(spool, &p.token);
    let tmp = dest.with_extension("progress.tmp");
    let json = serde_json::to_vec_pretty(p).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("cannot encode the progress of runner {}: {e}", p.token),
        )
    })?;
    // A temporary file left by a write that died half-way is ours to replace.
    let _ = std::fs::remove_file(&tmp);
    fsx::write_and_rename(&tmp, &dest, &json, false)
}

/// Reads a runner's progress file; `None` if it is not there (any more) or
/// does not decode.
pub fn read(spool: &Spool, token: &str) -> Option<Progress> {
    let f = fsx::open_nofollow(&path(spool, token)).ok()?;
    serde_json::from_reader(std::io::BufReader::new(f)).ok()
}

/// Removes a runner's progress file, if any.
pub fn remove(spool: &Spool, token: &str) {
    let p = path(spool, token);
    let _ = std::fs::remove_file(&p);
    let _ = std::fs::remove_file(p.with_extension("progress.tmp"));
}

/// The runner's side: what it is doing, in memory, written by [`flush`].
/// What changes per message is kept as it comes (ids, the raw reply) and
/// made into the file's text only when the file is written.
///
/// [`flush`]: Tracker::flush
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<Live>,
    /// Bumped by every change worth writing at once.
    generation: AtomicU64,
    /// The generation last written, when, and under which token.
    written: Mutex<Option<(u64, Instant, String)>>,
}

/// A [`Tracker`]'s state: the file's fields, but the entries in hand and
/// the last reply as they come.
#[derive(Debug)]
struct Live {
    /// Everything else (`in_hand` empty, `last_reply` unset).
    fixed: Progress,
    /// The entries in hand and since when, oldest claim first.
    in_hand: Vec<(EntryId, u64)>,
    /// The last reply, as received.
    last_reply: Option<String>,
}

impl Tracker {
    /// A runner of `queue`'s `slice` that starts now.
    pub fn new(token: &str, queue: &QueueName, slice: Slice) -> Tracker {
        let now = clock::now_secs();
        Tracker {
            state: Mutex::new(Live {
                fixed: Progress {
                    token: token.to_string(),
                    queue: queue.to_string(),
                    slice: slice.to_string(),
                    started: now,
                    updated: now,
                    last_progress: now,
                    last_pass: None,
                    passes: 0,
                    in_hand: Vec::new(),
                    last_reply: None,
                },
                in_hand: Vec::new(),
                last_reply: None,
            }),
            generation: AtomicU64::new(1),
            written: Mutex::new(None),
        }
    }

    fn change(&self, f: impl FnOnce(&mut Live)) {
        if let Ok(mut p) = self.state.lock() {
            f(&mut p);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// An entry was claimed.
    pub fn took(&self, id: EntryId) {
        self.change(|p| {
            let now = clock::now_secs();
            p.fixed.last_progress = now;
            p.in_hand.push((id, now));
        });
    }

    /// The runner is done with an entry (whatever became of it).
    pub fn done(&self, id: EntryId) {
        self.change(|p| {
            p.fixed.last_progress = clock::now_secs();
            p.in_hand.retain(|(held, _)| *held != id);
        });
    }

    /// A stage ran, or a transaction's outcome was recorded (with its last
    /// reply).
    pub fn advanced(&self, reply: Option<&str>) {
        self.change(|p| {
            p.fixed.last_progress = clock::now_secs();
            if let Some(r) = reply {
                // The buffer of the last one, reused.
                let buf = p.last_reply.get_or_insert_with(String::new);
                buf.clear();
                buf.push_str(r);
            }
        });
    }

    /// A pass ended. Only one that took entries is a change worth writing
    /// at once; an idle look shows at the next heartbeat.
    pub fn pass_ended(&self, took_entries: bool) {
        if let Ok(mut p) = self.state.lock() {
            p.fixed.last_pass = Some(clock::now_secs());
            p.fixed.passes += 1;
        }
        if took_entries {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A copy of the progress as it is now.
    pub fn snapshot(&self) -> Option<Progress> {
        self.state.lock().ok().map(|p| Progress {
            in_hand: p
                .in_hand
                .iter()
                .map(|(id, since)| InHand {
                    id: id.to_string(),
                    since: *since,
                })
                .collect(),
            last_reply: p.last_reply.as_deref().map(crate::report::one_line),
            ..p.fixed.clone()
        })
    }

    /// Writes the progress file under `token` if it changed since the last
    /// write and that write is a second old, or the last write is a
    /// [`HEARTBEAT`] old, or `force`. A token that changed (the runner
    /// registered again) takes the file with it.
    pub fn flush(&self, spool: &Spool, token: &str, force: bool) -> Result<()> {
        let Ok(mut written) = self.written.lock() else {
            return Ok(());
        };
        let generation = self.generation.load(Ordering::SeqCst);
        let due = match &*written {
            None => true,
            Some((_, _, t)) if t != token => true,
            Some((g, at, _)) => {
                force
                    || (*g != generation && at.elapsed() >= Duration::from_secs(1))
                    || at.elapsed() >= HEARTBEAT
            }
        };
        if !due {
            return Ok(());
        }
        let Some(mut p) = self.snapshot() else {
            return Ok(());
        };
        if let Some((_, _, old)) = &*written
            && old != token
        {
            remove(spool, old);
        }
        p.token = token.to_string();
        p.updated = clock::now_secs();
        write(spool, &p)?;
        *written = Some((generation, Instant::now(), token.to_string()));
        Ok(())
    }
}

/// How a runner is, as shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerState {
    /// Alive, and moving (or with nothing to do).
    Alive,
    /// Alive, due entries waiting, and no progress for longer than the threshold.
    Stalled,
    /// Gone (its claims may be taken back).
    Dead,
}

impl RunnerState {
    /// Every state, in the order shown.
    pub const ALL: [RunnerState; 3] = [RunnerState::Alive, RunnerState::Stalled, RunnerState::Dead];

    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerState::Alive => "alive",
            RunnerState::Stalled => "stalled",
            RunnerState::Dead => "dead",
        }
    }
}

/// An entry in a runner's hands, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct InHandView {
    /// The entry id.
    pub id: String,
    /// Since when (RFC 3339).
    pub since: String,
    /// Seconds since then.
    pub for_secs: u64,
}

/// One runner record, with its liveness and progress: `mm-showq --runners`.
#[derive(Clone, Debug, Serialize)]
pub struct RunnerView {
    /// Schema version.
    pub schema: u32,
    /// Its token.
    pub token: String,
    /// The queue it runs (from its progress file); null for a record
    /// without one (mm-recover, mm-unbad, a runner of an older version).
    pub queue: Option<String>,
    /// Its slice, `K/N`.
    pub slice: Option<String>,
    /// alive, stalled or dead.
    pub state: RunnerState,
    /// Host, when the record is readable.
    pub host: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// What it is: `mm-runq out 1/1`.
    pub what: Option<String>,
    /// When it started (RFC 3339).
    pub since: Option<String>,
    /// Why it is considered dead.
    pub dead_because: Option<String>,
    /// When it last made progress (RFC 3339).
    pub last_progress: Option<String>,
    /// Seconds since its last progress or the end of its last pass,
    /// whichever is later: what "stalled" is judged by.
    pub idle_secs: Option<u64>,
    /// When its last pass ended (RFC 3339).
    pub last_pass: Option<String>,
    /// Passes ended.
    pub passes: Option<u64>,
    /// Due entries waiting in its queue and slice (not counting those in hand).
    pub due: Option<u64>,
    /// The entries in its hands.
    pub in_hand: Vec<InHandView>,
    /// The last reply it got.
    pub last_reply: Option<String>,
    /// When its progress file was last written (RFC 3339).
    pub updated: Option<String>,
}

/// The runner records of the spool, in (queue, slice, token) order, each with
/// its liveness and progress; `stalled_after` is the threshold of
/// [`RunnerState::Stalled`]. With `of` not empty, only the runners of those
/// queues; otherwise every record, those of other tools (mm-recover) too,
/// without a queue. Reads only: nothing is written or locked for long (a
/// liveness test takes a record's lock and gives it back at once).
pub fn runners(
    spool: &Spool,
    of: &[crate::spool::Queue],
    now: u64,
    stalled_after: Duration,
) -> Result<Vec<RunnerView>> {
    let dir = spool.root().join(".runners");
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", &dir, e)),
    };
    let mut tokens: Vec<String> = rd
        .flatten()
        .filter_map(|de| de.file_name().to_str().map(str::to_string))
        .filter(|t| crate::id::is_token(t.as_bytes()))
        .collect();
    tokens.sort();
    // Due entries per (queue, slice), counted once whatever the runners.
    let mut due: BTreeMap<(String, String), Option<u64>> = BTreeMap::new();
    let mut out = Vec::new();
    for token in tokens {
        let (holder, dead_because): (Option<Holder>, Option<String>) =
            match claim::liveness(spool, &token, claim::DEFAULT_LEASE) {
                Liveness::Alive(h) => (Some(h), None),
                Liveness::Dead(why) => (claim::read_record(spool, &token), Some(why)),
            };
        // A record removed meanwhile (its runner ended): not a runner any more.
        if holder.is_none() && !dir.join(&token).exists() {
            continue;
        }
        let progress = read(spool, &token);
        if !of.is_empty()
            && !progress
                .as_ref()
                .is_some_and(|p| of.iter().any(|q| q.name().as_str() == p.queue))
        {
            continue;
        }
        let waiting = progress.as_ref().and_then(|p| {
            *due.entry((p.queue.clone(), p.slice.clone()))
                .or_insert_with(|| due_in(spool, &p.queue, &p.slice, now))
        });
        let idle = progress
            .as_ref()
            .map(|p| now.saturating_sub(p.last_progress.max(p.last_pass.unwrap_or(0))));
        let in_hand = progress.as_ref().map_or(0, |p| p.in_hand.len() as u64);
        let state = if dead_because.is_some() {
            RunnerState::Dead
        } else if idle.is_some_and(|i| i > stalled_after.as_secs())
            && waiting.unwrap_or(0) + in_hand > 0
        {
            RunnerState::Stalled
        } else {
            RunnerState::Alive
        };
        out.push(RunnerView {
            schema: SCHEMA,
            token: token.clone(),
            queue: progress.as_ref().map(|p| p.queue.clone()),
            slice: progress.as_ref().map(|p| p.slice.clone()),
            state,
            host: holder.as_ref().map(|h| h.host.clone()),
            pid: holder.as_ref().map(|h| h.pid),
            what: holder.as_ref().map(|h| h.what.clone()),
            since: holder.as_ref().map(|h| clock::rfc3339(h.since)),
            dead_because,
            last_progress: progress.as_ref().map(|p| clock::rfc3339(p.last_progress)),
            idle_secs: idle,
            last_pass: progress
                .as_ref()
                .and_then(|p| p.last_pass.map(clock::rfc3339)),
            passes: progress.as_ref().map(|p| p.passes),
            due: waiting,
            in_hand: progress
                .as_ref()
                .map(|p| {
                    p.in_hand
                        .iter()
                        .map(|h| InHandView {
                            id: h.id.clone(),
                            since: clock::rfc3339(h.since),
                            for_secs: now.saturating_sub(h.since),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            last_reply: progress.as_ref().and_then(|p| p.last_reply.clone()),
            updated: progress.as_ref().map(|p| clock::rfc3339(p.updated)),
        });
    }
    out.sort_by(|a, b| (&a.queue, &a.slice, &a.token).cmp(&(&b.queue, &b.slice, &b.token)));
    Ok(out)
}

/// The slices no live runner runs, per queue, among the slicings its runners
/// use: with runners of `out` for 1/3 and 2/3 only, `out` 3/3. A queue that
/// one slicing covers whole (a live runner for each of its slices, `1/1`
/// included) misses nothing, whatever the dead records of other slicings
/// say; slicings of more than 256 slices are left out (they would be listed
/// slice by slice).
pub fn missing_slices(rows: &[RunnerView]) -> Vec<(String, String)> {
    let mut run: BTreeMap<String, std::collections::BTreeSet<(u32, u32)>> = BTreeMap::new();
    let mut slicings: BTreeMap<String, std::collections::BTreeSet<u32>> = BTreeMap::new();
    for r in rows {
        let (Some(q), Some(slice)) = (&r.queue, &r.slice) else {
            continue;
        };
        let Ok(slice) = slice.parse::<Slice>() else {
            continue;
        };
        slicings.entry(q.clone()).or_default().insert(slice.n());
        if r.state != RunnerState::Dead {
            run.entry(q.clone())
                .or_default()
                .insert((slice.k(), slice.n()));
        }
    }
    let mut out = Vec::new();
    for (q, ns) in slicings {
        let live = run.get(&q);
        let covered = |n: u32| (1..=n).all(|k| live.is_some_and(|s| s.contains(&(k, n))));
        if ns.iter().any(|&n| covered(n)) {
            continue;
        }
        for n in ns.into_iter().filter(|n| *n <= 256) {
            for k in 1..=n {
                if !run.get(&q).is_some_and(|s| s.contains(&(k, n))) {
                    out.push((q.clone(), format!("{k}/{n}")));
                }
            }
        }
    }
    out
}

/// Due entries of a queue's slice, from names alone; `None` if the names in
/// the progress file are not a queue and a slice, or the queue cannot be read.
fn due_in(spool: &Spool, queue: &str, slice: &str, now: u64) -> Option<u64> {
    let q = spool.queue(&QueueName::new(queue).ok()?);
    let slice: Slice = slice.parse().ok()?;
    crate::runner::due_now(&q, slice, now, 0)
        .ok()
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool() -> (tempfile::TempDir, Spool) {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        (d, s)
    }

    #[test]
    fn a_progress_file_round_trips_and_goes_with_remove() {
        let (_d, spool) = spool();
        std::fs::create_dir(spool.root().join(".runners")).unwrap();
        let t = Tracker::new("aaaaaaaaaaaa", &QueueName::new("out").unwrap(), Slice::ALL);
        let id = EntryId::generate(1_000_000, &[b"x"]);
        t.took(id);
        t.advanced(Some("250 2.0.0 Ok\r\nmore"));
        t.flush(&spool, "aaaaaaaaaaaa", false).unwrap();
        let p = read(&spool, "aaaaaaaaaaaa").unwrap();
        assert_eq!(p.in_hand.len(), 1);
        assert_eq!(p.in_hand[0].id, id.to_string());
        assert_eq!(p.last_reply.as_deref(), Some("250 2.0.0 Ok / more"));
        assert_eq!(p.slice, "1/1");
        t.done(id);
        // Changed, but written less than a second ago: not yet; forced: now.
        t.flush(&spool, "aaaaaaaaaaaa", false).unwrap();
        assert_eq!(read(&spool, "aaaaaaaaaaaa").unwrap().in_hand.len(), 1);
        t.flush(&spool, "aaaaaaaaaaaa", true).unwrap();
        assert!(read(&spool, "aaaaaaaaaaaa").unwrap().in_hand.is_empty());
        // A new token takes the file with it.
        t.flush(&spool, "bbbbbbbbbbbb", false).unwrap();
        assert!(read(&spool, "aaaaaaaaaaaa").is_none());
        assert!(read(&spool, "bbbbbbbbbbbb").is_some());
        remove(&spool, "bbbbbbbbbbbb");
        assert!(read(&spool, "bbbbbbbbbbbb").is_none());
    }

    #[test]
    fn a_garbled_or_vanished_progress_file_is_no_progress() {
        let (_d, spool) = spool();
        std::fs::create_dir(spool.root().join(".runners")).unwrap();
        assert!(read(&spool, "cccccccccccc").is_none());
        std::fs::write(path(&spool, "cccccccccccc"), b"{\"token\":").unwrap();
        assert!(read(&spool, "cccccccccccc").is_none());
    }

    #[test]
    fn runners_judge_alive_dead_and_stalled() {
        let (_d, spool) = spool();
        let me =
            claim::Registration::register(&spool, "mm-runq out 1/1", claim::DEFAULT_LEASE).unwrap();
        let out = QueueName::new("out").unwrap();
        let t = Tracker::new(me.token(), &out, Slice::ALL);
        t.took(EntryId::generate(1_000_000, &[b"y"]));
        t.flush(&spool, me.token(), true).unwrap();
        let now = clock::now_secs();
        let rows = runners(&spool, &[], now, Duration::from_secs(60)).unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].state, RunnerState::Alive);
        assert_eq!(rows[0].queue.as_deref(), Some("out"));
        assert_eq!(rows[0].in_hand.len(), 1);
        // Two minutes on, with an entry in hand and nothing done: stalled.
        let rows = runners(&spool, &[], now + 120, Duration::from_secs(60)).unwrap();
        assert_eq!(rows[0].state, RunnerState::Stalled, "{rows:?}");
        // With nothing in hand and nothing due: alive, however idle.
        let id = EntryId::parse(&rows[0].in_hand[0].id).unwrap();
        t.done(id);
        t.flush(&spool, me.token(), true).unwrap();
        let rows = runners(&spool, &[], now + 120, Duration::from_secs(60)).unwrap();
        assert_eq!(rows[0].state, RunnerState::Alive, "{rows:?}");
        // A record whose lock is free: dead (a record left by a killed runner).
        let token = me.token().to_string();
        let record = std::fs::read(spool.root().join(".runners").join(&token)).unwrap();
        me.unregister();
        assert!(
            read(&spool, &token).is_none(),
            "unregister left the progress"
        );
        std::fs::write(spool.root().join(".runners").join(&token), record).unwrap();
        t.flush(&spool, &token, true).unwrap();
        let rows = runners(&spool, &[], now, Duration::from_secs(60)).unwrap();
        assert_eq!(rows[0].state, RunnerState::Dead, "{rows:?}");
        assert!(rows[0].dead_because.is_some());
        assert_eq!(rows[0].pid, Some(std::process::id()));
        // Its slice is now run by nobody.
        assert_eq!(
            missing_slices(&rows),
            [("out".to_string(), "1/1".to_string())]
        );
    }

    #[test]
    fn a_sweep_removes_dead_runners_progress_and_orphans_but_not_the_living() {
        let (_d, spool) = spool();
        let me = claim::Registration::register(&spool, "mm-recover", claim::DEFAULT_LEASE).unwrap();
        let other =
            claim::Registration::register(&spool, "mm-runq out 1/1", claim::DEFAULT_LEASE).unwrap();
        let out = QueueName::new("out").unwrap();
        for token in [me.token(), other.token(), "dddddddddddd"] {
            Tracker::new(token, &out, Slice::ALL)
                .flush(&spool, token, true)
                .unwrap();
        }
        // A dead record (its lock free) that holds nothing, with progress.
        let dead = "eeeeeeeeeeee";
        let record = std::fs::read(spool.root().join(".runners").join(other.token())).unwrap();
        std::fs::write(spool.root().join(".runners").join(dead), record).unwrap();
        Tracker::new(dead, &out, Slice::ALL)
            .flush(&spool, dead, true)
            .unwrap();
        let removed = crate::recover::prune_records(
            &spool,
            &me,
            &std::collections::BTreeSet::new(),
            claim::DEFAULT_LEASE,
        );
        assert_eq!(removed, [dead.to_string()]);
        assert!(
            read(&spool, dead).is_none(),
            "the dead runner's progress stayed"
        );
        assert!(read(&spool, "dddddddddddd").is_none(), "the orphan stayed");
        assert!(read(&spool, me.token()).is_some());
        assert!(
            read(&spool, other.token()).is_some(),
            "a live runner's progress went"
        );
    }

    #[test]
    fn missing_slices_are_those_of_a_slicing_no_live_runner_runs() {
        let row = |q: &str, slice: &str, state| RunnerView {
            schema: SCHEMA,
            token: "t".into(),
            queue: Some(q.into()),
            slice: Some(slice.into()),
            state,
            host: None,
            pid: None,
            what: None,
            since: None,
            dead_because: None,
            last_progress: None,
            idle_secs: None,
            last_pass: None,
            passes: None,
            due: None,
            in_hand: Vec::new(),
            last_reply: None,
            updated: None,
        };
        let rows = [
            row("out", "1/3", RunnerState::Alive),
            row("out", "2/3", RunnerState::Stalled),
            row("out", "3/3", RunnerState::Dead),
            row("in", "1/1", RunnerState::Alive),
        ];
        assert_eq!(
            missing_slices(&rows),
            [("out".to_string(), "3/3".to_string())]
        );
        // A dead record of an old slicing, while a live one covers the
        // queue whole: nothing is missing.
        let rows = [
            row("out", "1/1", RunnerState::Dead),
            row("out", "1/2", RunnerState::Alive),
            row("out", "2/2", RunnerState::Stalled),
        ];
        assert_eq!(missing_slices(&rows), []);
    }
}
