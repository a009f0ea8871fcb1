//! Claims: who holds an entry, and the moves of a claimed entry.
//!
//! **Invariant.** At every instant an entry exists under exactly one name, in
//! exactly one state, and every change of state is a single `rename(2)`. A
//! runner claims a queued entry by renaming `ID[.DUE].pck` to `ID.TOKEN.bak`;
//! of two runners racing for it, the kernel lets exactly one rename succeed and
//! the other gets `ENOENT`, which is a silent skip (seed 000). The claim is
//! taken before the file is opened, never after (Mailman opened first).
//!
//! **Ownership.** `TOKEN` names a runner record, `$SPOOL/.runners/TOKEN`,
//! written when the runner starts: host, pid, process start time, boot id and
//! start time. Whether the holder is alive is decidable:
//!
//! * on the same host, the runner holds an exclusive `flock` on its record for
//!   its whole life; the lock dies with the process, whatever kills it, so a
//!   lock that can be taken means a dead holder (no pid-reuse guesswork);
//! * on another host (a spool shared over a network file system), the runner
//!   renews a lease by touching the record; a claim is taken back only after
//!   the lease has expired. A runner that cannot renew in time stops writing
//!   (it fences itself) before its lease can expire.
//!
//! Recovery never touches an entry whose holder is alive (seed 004: Mailman
//! recovered every `.bak` at any runner start, and a second runner delivered
//! them twice). Taking back a dead holder's entry is itself a claim by rename,
//! so two recoveries cannot both take it.
//!
//! **Progress.** A claimed entry is rewritten in place (write `ID.TOKEN.tmp`,
//! `fsync`, rename over the `.bak`, `fsync` the directory) each time a
//! recipient's outcome must be durable before going on.

use std::fs::{self, File, TryLockError};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::entry::{Entry, Quarantine};
use crate::error::{Error, ErrorKind, Result, io_err};
use crate::fsx;
use crate::id::{EntryId, FileName, State};
use crate::scan::Place;
use crate::spool::{Queue, Spool, queues};

/// Default lease of a claim held by a runner of another host.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(300);

/// The name of this host: `$MM_HOST` (tests simulate several hosts on one
/// machine with it), else the kernel's host name.
pub fn host_name() -> String {
    if let Some(h) = std::env::var_os("MM_HOST").filter(|h| !h.is_empty()) {
        return h.to_string_lossy().into_owned();
    }
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn process_start_ticks(pid: u32) -> u64 {
    // Field 22 of /proc/PID/stat, after the parenthesised command name.
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    s.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A runner record: who holds the claims that carry its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The token in the names of its claims.
    pub token: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Process start time, in clock ticks since boot (with `pid`, names the process).
    pub start_ticks: u64,
    /// Boot id of the host.
    pub boot_id: String,
    /// When the runner started (Unix seconds).
    pub since: u64,
    /// What it is: "mm-runq out 1/2", "mm-recover".
    pub what: String,
}

/// Whether the holder of a claim is alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Alive: leave its claims alone.
    Alive(Holder),
    /// Dead (or its lease expired): its claims may be taken back.
    Dead(String),
}

/// This process's runner record, locked for the life of the process.
#[derive(Debug)]
pub struct Registration {
    holder: Holder,
    path: PathBuf,
    file: File,
    /// Last successful lease renewal, Unix seconds.
    renewed: AtomicU64,
    lease: Duration,
}

impl Registration {
    /// Writes and locks a new runner record.
    pub fn register(spool: &Spool, what: &str, lease: Duration) -> Result<Arc<Registration>> {
        let dir = spool.private_dir(".runners")?;
        let rnd = fsx::random_bytes();
        let token: String = rnd[..6].iter().map(|b| format!("{b:02x}")).collect();
        let pid = std::process::id();
        let holder = Holder {
            token: token.clone(),
            host: host_name(),
            pid,
            start_ticks: process_start_ticks(pid),
            boot_id: boot_id(),
            since: clock::now_secs(),
            what: what.to_string(),
        };
        let path = dir.join(&token);
        let json = serde_json::to_vec_pretty(&holder).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot encode runner record: {e}"),
            )
        })?;
        // Lock the record before it is visible under its name: a recovery that
        // sees the record must never find its lock free while we live (the lock
        // follows the file through the rename).
        let tmp = dir.join(format!("{token}.tmp"));
        let mut file = fsx::create_new(&tmp)?;
        let published = (|| {
            file.try_lock().map_err(|e| {
                Error::new(
                    ErrorKind::Temporary,
                    format!("cannot lock runner record {}: {e}", tmp.display()),
                )
            })?;
            std::io::Write::write_all(&mut file, &json).map_err(io_err("cannot write", &tmp))?;
            file.sync_data().map_err(io_err("cannot sync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("cannot publish runner record", &path))
        })();
        if let Err(e) = published {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fsx::sync_dir(&dir)?;
        Ok(Arc::new(Registration {
            holder,
            path,
            file,
            renewed: AtomicU64::new(clock::now_secs()),
            lease,
        }))
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.holder.token
    }

    /// The record.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Renews the lease (touches the record).
    pub fn renew(&self) -> Result<()> {
        self.file
            .set_modified(clock::now())
            .map_err(io_err("cannot renew the lease on", &self.path))?;
        self.renewed.store(clock::now_secs(), Ordering::Relaxed);
        Ok(())
    }

    /// Whether the lease is still safely ours: renewed within half its length.
    /// A runner checks this before every write to a claimed entry.
    pub fn lease_ok(&self) -> bool {
        clock::now_secs().saturating_sub(self.renewed.load(Ordering::Relaxed))
            < self.lease.as_secs() / 2 + 1
    }

    /// Removes the record; call only when no claim carries the token any more.
    pub fn unregister(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Decides whether the holder whose token is `token` is alive.
pub fn liveness(spool: &Spool, token: &str, lease: Duration) -> Liveness {
    let path = spool.root().join(".runners").join(token);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(_) => return Liveness::Dead("its runner record is gone".into()),
    };
    let mut text = String::new();
    let holder: Option<Holder> = (&file)
        .read_to_string(&mut text)
        .ok()
        .and_then(|_| serde_json::from_str(&text).ok());
    let Some(holder) = holder else {
        return Liveness::Dead("its runner record is unreadable".into());
    };
    if holder.host == host_name() {
        if holder.boot_id != boot_id() && !holder.boot_id.is_empty() {
            return Liveness::Dead(format!(
                "its runner (pid {}) ran before a reboot",
                holder.pid
            ));
        }
        return match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                Liveness::Dead(format!("its runner (pid {}) is gone", holder.pid))
            }
            Err(TryLockError::WouldBlock) => Liveness::Alive(holder),
            // Cannot tell: treat as alive, never steal.
            Err(TryLockError::Error(_)) => Liveness::Alive(holder),
        };
    }
    let touched = file
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let age = clock::now().duration_since(touched).unwrap_or_default();
    if age > lease {
        Liveness::Dead(format!(
            "the lease of its runner on {} expired {} ago",
            holder.host,
            humantime::format_duration(Duration::from_secs((age - lease).as_secs()))
        ))
    } else {
        Liveness::Alive(holder)
    }
}

/// A claimed entry: the `.bak` file and its decoded content.
#[derive(Debug)]
pub struct Claim {
    queue: Queue,
    id: EntryId,
    token: String,
    path: PathBuf,
    /// The decoded entry.
    pub entry: Entry,
}

/// What a claim attempt gave.
#[derive(Debug)]
pub enum Claimed {
    /// Ours, decoded.
    Entry(Box<Claim>),
    /// Another runner took it first, or it was moved away: skip silently.
    Lost,
    /// Ours, but not decodable or not readable: quarantined in bad/ with this reason.
    Quarantined(String),
}

/// Serialises the writes of one claim against a stop that abandons it (see runner.rs).
pub type WriteGuard = Arc<Mutex<bool>>;

impl Claim {
    /// Claims the entry `name` found at `place` in `queue` for `token`, then
    /// opens and decodes it. An undecodable or unreadable entry is moved to
    /// bad/ with the reason and reported as such.
    pub fn take(
        spool: &Spool,
        queue: &Queue,
        name: &FileName,
        place: Place,
        token: &str,
    ) -> Result<Claimed> {
        let from = queue.found_path(name, place);
        let claimed = FileName::claimed(name.id, token);
        // Found in its own bucket, the bucket exists: no stat on the hot path.
        let bucket = if place == Place::Bucket(name.id.bucket()) {
            queue.bucket_dir(name.id.bucket())
        } else {
            queue.ensure_bucket(name.id.bucket())?
        };
        let to = bucket.join(claimed.to_string());
        if let Err(e) = fs::rename(&from, &to) {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Ok(Claimed::Lost);
            }
            return Err(Error::io(
                format_args!("cannot claim {} as", from.display()),
                &to,
                e,
            ));
        }
        Claim::open(spool, queue, name.id, token, to)
    }

    /// Opens a file this token already holds (after a claim or a takeover).
    pub fn open(
        spool: &Spool,
        queue: &Queue,
        id: EntryId,
        token: &str,
        path: PathBuf,
    ) -> Result<Claimed> {
        let bytes = match fsx::read_entry_file(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::Permission => {
                let reason = format!("unreadable: {e}");
                quarantine_raw(spool, queue, id, token, &path, None, &reason)?;
                return Ok(Claimed::Quarantined(reason));
            }
            Err(e) => return Err(e),
        };
        match Entry::decode(&bytes) {
            Ok(entry) => Ok(Claimed::Entry(Box::new(Claim {
                queue: queue.clone(),
                id,
                token: token.to_string(),
                path,
                entry,
            }))),
            Err(e) => {
                let reason = format!("cannot decode: {e}");
                quarantine_raw(spool, queue, id, token, &path, Some(bytes), &reason)?;
                Ok(Claimed::Quarantined(reason))
            }
        }
    }

    /// The entry's id.
    pub fn id(&self) -> EntryId {
        self.id
    }

    /// The queue it is in.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The `.bak` path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the current content durable in place (the per-recipient record).
    pub fn save(&self) -> Result<()> {
        let bytes = self.entry.encode()?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(FileName::writing(self.id, Some(&self.token)).to_string());
        fsx::write_and_rename(&tmp, &self.path, &bytes, true)?;
        fsx::sync_dir(dir)
    }

    /// Done with it: removes the entry. Not synced: if the unlink is lost in a
    /// machine crash, the entry comes back as a claim of a dead runner and its
    /// recorded progress prevents a resend to recipients already done.
    pub fn finish(self) -> Result<()> {
        fs::remove_file(&self.path).map_err(io_err("cannot remove", &self.path))
    }

    /// Done with it, but the removal is left to the caller (the runner's
    /// finisher): the path of the claimed file to remove.
    pub fn finish_later(self) -> PathBuf {
        self.path
    }

    /// Puts it back as queued, due at `due` (`None`: now), with its content saved.
    pub fn release(self, due: Option<u64>) -> Result<()> {
        self.save()?;
        self.release_unsaved(due)
    }

    /// Puts it back as queued without rewriting it (its last saved progress stands).
    pub fn release_unsaved(self, due: Option<u64>) -> Result<()> {
        let to = self.queue.path(&FileName::deferred(self.id, due));
        fs::rename(&self.path, &to).map_err(|e| {
            Error::io(
                format_args!("cannot release {} as", self.path.display()),
                &to,
                e,
            )
        })?;
        // Not synced either: a lost release leaves a claim of a dead runner, recovered later.
        Ok(())
    }

    /// Moves it, with its current content, to `dest` as queued (pass-on) or
    /// preserved (quarantine). The content is saved in place first, then one
    /// rename moves it, so it is never in two places.
    pub fn move_to(self, dest: &Queue, state: State, due: Option<u64>) -> Result<PathBuf> {
        self.save()?;
        let name = match state {
            State::Preserved => FileName::preserved(self.id),
            _ => FileName::deferred(self.id, due),
        };
        dest.ensure_bucket(self.id.bucket())?;
        let to = dest.path(&name);
        fs::rename(&self.path, &to).map_err(|e| {
            Error::io(
                format_args!("cannot move {} to", self.path.display()),
                &to,
                e,
            )
        })?;
        if let Some(dir) = to.parent() {
            fsx::sync_dir(dir)?;
        }
        Ok(to)
    }

    /// Puts it back as preserved (`ID.psv`) in the queue it is in, with its
    /// content saved: what an interrupted release from bad/ or shunt/ becomes.
    pub fn preserve(self) -> Result<()> {
        self.save()?;
        let to = self.queue.path(&FileName::preserved(self.id));
        fs::rename(&self.path, &to).map_err(|e| {
            Error::io(
                format_args!("cannot preserve {} as", self.path.display()),
                &to,
                e,
            )
        })
    }

    /// Quarantines it in `dest` (bad or shunt) with a reason.
    pub fn quarantine(mut self, spool: &Spool, dest: &str, reason: &str) -> Result<PathBuf> {
        let now = clock::now_secs();
        self.entry.meta.quarantine = Some(Quarantine {
            reason: reason.to_string(),
            at: now,
            from_queue: self.queue.name().to_string(),
            extra: Default::default(),
        });
        self.entry.note(
            now,
            format!("quarantined in {dest} from {}: {reason}", self.queue.name()),
        );
        let dest = spool.queue_named(dest)?;
        self.move_to(&dest, State::Preserved, None)
    }
}

/// Moves an entry that cannot be decoded (or read) to bad/ with a reason.
///
/// A readable file becomes a wrapper entry that keeps the original bytes
/// untouched in `original` and the reason in its quarantine record; the wrapper
/// is written in full before the claimed file is removed. A file that cannot
/// even be read is renamed as it is; its reason is that it cannot be read.
#[allow(clippy::too_many_arguments)]
fn quarantine_raw(
    spool: &Spool,
    queue: &Queue,
    id: EntryId,
    token: &str,
    path: &Path,
    bytes: Option<Vec<u8>>,
    reason: &str,
) -> Result<()> {
    let bad = spool.queue_named(queues::BAD)?;
    let bucket = bad.ensure_bucket(id.bucket())?;
    let dest = bad.path(&FileName::preserved(id));
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|e| {
            Error::io(
                format_args!("cannot quarantine {} as", from.display()),
                to,
                e,
            )
        })
    };
    match bytes {
        None => rename(path, &dest)?,
        Some(raw) => {
            // One file at every instant: move the claim into bad/ (still ours),
            // replace its content by the wrapper, then make it preserved.
            let held = bad.path(&FileName::claimed(id, token));
            rename(path, &held)?;
            let now = clock::now_secs();
            let mut w = Entry::new(&id, "", &[], Vec::new(), queue.name().as_str());
            w.meta.received = id.secs();
            w.meta.quarantine = Some(Quarantine {
                reason: reason.to_string(),
                at: now,
                from_queue: queue.name().to_string(),
                extra: Default::default(),
            });
            w.note(
                now,
                format!("quarantined in bad from {}: {reason}", queue.name()),
            );
            w.original = Some(serde_bytes::ByteBuf::from(raw));
            let tmp = bucket.join(FileName::writing(id, Some(token)).to_string());
            fsx::write_and_rename(&tmp, &held, &w.encode()?, true)?;
            rename(&held, &dest)?;
        }
    }
    fsx::sync_dir(&bucket)
}
