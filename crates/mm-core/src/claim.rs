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
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// The lease it renews and fences itself by, in seconds (0 in records
    /// written before this field: the checker's own lease applies).
    #[serde(default)]
    pub lease: u64,
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
///
/// **Fencing.** A lease lost stays lost. The gap between two renewals is
/// measured on `CLOCK_BOOTTIME` (a frozen process, a paused VM, a suspended
/// host all count); once a gap reaches half the lease, or the record at our
/// path is no longer the file we created (a sweep elsewhere judged us dead
/// and removed it), the registration is fenced for good: [`lease_ok`]
/// answers false and [`renew`] refuses, so nothing is written to or sent for
/// any claim taken under this token. The runner then registers again under a
/// new token before it claims anything (runner.rs).
///
/// [`lease_ok`]: Registration::lease_ok
/// [`renew`]: Registration::renew
#[derive(Debug)]
pub struct Registration {
    holder: Holder,
    path: PathBuf,
    file: File,
    /// Device and inode of our record: what "still ours" means.
    ident: (u64, u64),
    /// Last successful renewal, in milliseconds of [`fsx::boottime`].
    renewed_ms: AtomicU64,
    lease: Duration,
    fenced: Mutex<Option<String>>,
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
            lease: lease.as_secs(),
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
            // The lease starts on the file system's clock: a written file's
            // time may be this host's (GlusterFS with features.ctime on).
            fsx::touch_now(&file).map_err(io_err("cannot stamp", &tmp))?;
            file.sync_data().map_err(io_err("cannot sync", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("cannot publish runner record", &path))
        })();
        if let Err(e) = published {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fsx::sync_dir(&dir)?;
        let meta = file.metadata().map_err(io_err("cannot stat", &path))?;
        Ok(Arc::new(Registration {
            holder,
            path,
            file,
            ident: (meta.dev(), meta.ino()),
            renewed_ms: AtomicU64::new(fsx::boottime().as_millis() as u64),
            lease,
            fenced: Mutex::new(None),
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

    /// The lease this registration renews.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn gap(&self) -> Duration {
        let now = fsx::boottime().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.renewed_ms.load(Ordering::Relaxed)))
    }

    /// Why the registration is fenced, if it is.
    pub fn fenced(&self) -> Option<String> {
        self.fenced.lock().ok().and_then(|f| f.clone())
    }

    fn fence(&self, why: String) -> Error {
        if let Ok(mut f) = self.fenced.lock()
            && f.is_none()
        {
            *f = Some(why);
        }
        self.not_ours()
    }

    fn not_ours(&self) -> Error {
        Error::new(
            ErrorKind::NotOurs,
            format!(
                "runner {} fenced itself ({}); not writing or sending for its claims",
                self.token(),
                self.fenced().unwrap_or_default()
            ),
        )
    }

    /// Checks that the record at our path is still the file we created.
    fn check_record(&self) -> Result<()> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.ident => Ok(()),
            Ok(_) => Err(self.fence("its runner record was replaced".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self
                .fence("its runner record was removed, by a recovery that judged it dead".into())),
            // Cannot tell (an I/O error): not a proof of loss; renewal retries.
            Err(e) => Err(Error::io("cannot stat", &self.path, e)),
        }
    }

    /// Renews the lease: touches the record with the file system's clock.
    /// Fails for good (and fences) when the gap since the last renewal
    /// reached half the lease or the record is no longer ours.
    pub fn renew(&self) -> Result<()> {
        self.check()?;
        fsx::touch_now(&self.file).map_err(io_err("cannot renew the lease on", &self.path))?;
        self.renewed_ms
            .store(fsx::boottime().as_millis() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the lease is still safely ours: not fenced, renewed within
    /// half its length, and our record still in place. A runner checks this
    /// before every write to a claimed entry and before every transaction.
    pub fn lease_ok(&self) -> bool {
        self.check().is_ok()
    }

    /// [`lease_ok`](Registration::lease_ok) with the reason.
    pub fn check(&self) -> Result<()> {
        if self.fenced().is_some() {
            return Err(self.not_ours());
        }
        let gap = self.gap();
        if gap >= self.lease / 2 {
            return Err(self.fence(format!(
                "{} passed since its last lease renewal, half its lease of {} or more",
                humantime::format_duration(Duration::from_secs(gap.as_secs())),
                humantime::format_duration(self.lease)
            )));
        }
        self.check_record()
    }

    /// Removes the record (only if it is still ours) and its progress file
    /// (progress.rs); call only when no claim carries the token any more, or
    /// when fenced (its claims are then anybody's to take back).
    pub fn unregister(&self) {
        if let Ok(m) = fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.ident
        {
            let _ = fs::remove_file(&self.path);
        }
        if let Some(dir) = self.path.parent() {
            let progress = dir.join(format!("{}.progress", self.token()));
            let _ = fs::remove_file(&progress);
            let _ = fs::remove_file(progress.with_extension("progress.tmp"));
        }
    }
}

/// The file system's "now" in the runner records' directory: the mtime of
/// a probe file touched just now with `UTIME_NOW` (on a network file system,
/// the server's clock, like the records' own stamps). `None` when the probe
/// cannot be written (a read-only viewer): the caller falls back to its clock.
fn server_now(dir: &Path) -> Option<SystemTime> {
    let probe = dir.join(format!(".probe.{}", host_name()));
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&probe)
        .ok()?;
    fsx::touch_now(&f).ok()?;
    f.metadata().and_then(|m| m.modified()).ok()
}

/// Reads the runner record `token`, without judging whether it is alive;
/// `None` if it is gone or does not decode.
pub fn read_record(spool: &Spool, token: &str) -> Option<Holder> {
    let f = fsx::open_nofollow(&spool.root().join(".runners").join(token)).ok()?;
    serde_json::from_reader(std::io::BufReader::new(f)).ok()
}

/// Decides whether the holder whose token is `token` is alive. `lease` is
/// the checker's; the holder's own, when its record gives one and it is
/// longer, wins (it is what the holder fences itself by).
///
/// On another host the age of a lease is the record's modification time
/// against the file system's "now" (a probe touched in the same directory),
/// never against this host's clock: hosts whose clocks disagree still agree
/// on ages.
pub fn liveness(spool: &Spool, token: &str, lease: Duration) -> Liveness {
    let dir = spool.root().join(".runners");
    let path = dir.join(token);
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
    let lease = lease.max(Duration::from_secs(holder.lease));
    let touched = file
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let now = server_now(&dir).unwrap_or_else(clock::now);
    let age = now.duration_since(touched).unwrap_or_default();
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
    /// Whether a spare (`ID.TOKEN.tmp`) may exist: false only while this
    /// claim is known never to have made one, so that leaving the name
    /// costs no `unlink` of a file that is not there (the hot path of a
    /// drain: one recipient, nothing saved before the removal).
    spare: AtomicBool,
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
        match Claim::open(spool, queue, name.id, token, to.clone()) {
            Ok(Claimed::Entry(c)) => {
                // Just renamed from a name nobody held: no spare of this
                // token can exist (every way a claim of ours leaves its name
                // removes its spare first; one that failed to be removed is
                // a stray temporary file, which mm-recover removes).
                c.spare.store(false, Ordering::Relaxed);
                Ok(Claimed::Entry(c))
            }
            Ok(c) => Ok(c),
            Err(e) => {
                // Not decoded, not quarantined (an I/O error): never left
                // stranded under our token; back under the very name it was
                // found with (held stays held, preserved stays preserved).
                let _ = put_back_as(queue, token, &to, name);
                Err(e)
            }
        }
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
                // A takeover may find a spare of an earlier attempt.
                spare: AtomicBool::new(true),
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

    /// The temporary name of this claim's writes: `ID.TOKEN.tmp`, in the
    /// claim's directory. Between writes it holds the spare (see [`save`]).
    ///
    /// [`save`]: Claim::save
    fn tmp_path(&self) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join(FileName::writing(self.id, Some(&self.token)).to_string())
    }

    /// Reserves the space the coming saves need, before anything is sent
    /// whose outcome they must record: the spare (`ID.TOKEN.tmp`, created if
    /// missing) and the claimed file itself, which saves alternate between,
    /// both get blocks for the current content and `slack` bytes of growth
    /// (`fallocate`, sizes unchanged). Saves never give blocks back, so the
    /// reservation lasts the delivery. On a full file system this fails,
    /// while nothing has been sent yet.
    pub fn reserve(&self, slack: u64) -> Result<()> {
        let tmp = self.tmp_path();
        let len = self.entry.encode()?.len() as u64 + slack;
        self.spare.store(true, Ordering::Relaxed);
        let spare = open_spare(&tmp)?;
        fsx::preallocate(&spare, len).map_err(io_err("cannot reserve space for", &tmp))?;
        let claimed = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(io_err("cannot open", &self.path))?;
        fsx::preallocate(&claimed, len).map_err(io_err("cannot reserve space for", &self.path))
    }

    /// Makes the current content durable in place (the per-recipient record),
    /// but only while the claim is still ours: the content goes to the spare
    /// (`ID.TOKEN.tmp`, reusing blocks reserved earlier), is synced, and
    /// then *exchanges* names with the `.bak` (`RENAME_EXCHANGE`). If
    /// recovery moved the `.bak` away, the exchange fails and nothing is
    /// recreated: [`ErrorKind::NotOurs`]. The old file, now under the
    /// temporary name, is the spare of the next save.
    pub fn save(&self) -> Result<()> {
        self.save_checked(&|| Ok(()))
    }

    /// [`save`](Claim::save), with `check` (is the claim still safely ours:
    /// the runner's lease) run once the new content is on stable storage and
    /// right before it replaces the old: the window between the check and
    /// the replacement is as short as it can be (on a file system without
    /// `RENAME_EXCHANGE` it is what keeps a fenced runner from writing).
    pub fn save_checked(&self, check: &dyn Fn() -> Result<()>) -> Result<()> {
        self.save_bytes(&self.entry.encode()?, check)
    }

    /// A save with these bytes as the content.
    fn save_bytes(&self, bytes: &[u8], check: &dyn Fn() -> Result<()>) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = self.tmp_path();
        self.spare.store(true, Ordering::Relaxed);
        let written = (|| {
            let mut f = open_spare(&tmp)?;
            f.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
            // Only when the old content was longer: a truncation to the
            // same size would give the reserved blocks back.
            if f.metadata().map_err(io_err("cannot stat", &tmp))?.len() != bytes.len() as u64 {
                f.set_len(bytes.len() as u64)
                    .map_err(io_err("cannot write", &tmp))?;
            }
            f.sync_data().map_err(io_err("cannot sync", &tmp))
        })();
        // A spare that could not be written stays (with its blocks): the
        // next try rewrites it from its start.
        written?;
        check()?;
        match fsx::exchange(&tmp, &self.path) {
            Ok(fsx::Exchanged::Swapped | fsx::Exchanged::Replaced) => fsx::sync_dir(dir),
            Ok(fsx::Exchanged::Gone) => {
                let _ = fs::remove_file(&tmp);
                Err(self.gone())
            }
            Err(e) => Err(Error::io(
                format_args!("cannot replace {} with", self.path.display()),
                &tmp,
                e,
            )),
        }
    }

    fn gone(&self) -> Error {
        Error::new(
            ErrorKind::NotOurs,
            format!(
                "{} is no longer claimed by {} (taken back by a recovery?); not written",
                self.path.display(),
                self.token
            ),
        )
    }

    /// Removes the spare, if any (the claim is leaving this name).
    fn drop_spare(&self) {
        if self.spare.load(Ordering::Relaxed) {
            let _ = fs::remove_file(self.tmp_path());
        }
    }

    /// Done with it: removes the entry. Not synced: if the unlink is lost in a
    /// machine crash, the entry comes back as a claim of a dead runner and its
    /// recorded progress prevents a resend to recipients already done.
    pub fn finish(self) -> Result<()> {
        self.drop_spare();
        fs::remove_file(&self.path).map_err(io_err("cannot remove", &self.path))
    }

    /// Removes the entry and syncs its directory: for a removal whose entry
    /// does not record why (mm-delete), which a machine crash must not undo.
    pub fn finish_durably(self) -> Result<()> {
        let dir = self.path.parent().map(Path::to_path_buf);
        self.finish()?;
        match dir {
            Some(d) => fsx::sync_dir(&d),
            None => Ok(()),
        }
    }

    /// Done with it, but the removal is left to the caller (the runner's
    /// finisher): the path of the claimed file to remove.
    pub fn finish_later(self) -> PathBuf {
        self.drop_spare();
        self.path
    }

    /// Puts it back as queued, due at `due` (`None`: now), with its content saved.
    pub fn release(self, due: Option<u64>) -> Result<()> {
        self.save()?;
        self.release_unsaved(due)
    }

    /// Puts it back as queued without rewriting it (its last saved progress
    /// stands): for a claim whose content did not change since it was last
    /// saved. Needs no space on the file system.
    pub fn release_unsaved(self, due: Option<u64>) -> Result<()> {
        put_back(&self.queue, self.id, &self.token, &self.path, due)
    }

    /// Moves it, with its current content, to `dest` as queued (pass-on),
    /// preserved (quarantine) or held (mm-hold). The content is saved in place first, then one
    /// rename moves it, so it is never in two places.
    pub fn move_to(self, dest: &Queue, state: State, due: Option<u64>) -> Result<PathBuf> {
        self.save()?;
        self.move_saved(dest, state, due)
    }

    /// Moves it to `dest` as queued or preserved without rewriting it: for a
    /// claim just saved. One rename (plus making the bucket, if new).
    pub fn move_saved(self, dest: &Queue, state: State, due: Option<u64>) -> Result<PathBuf> {
        let name = match state {
            State::Preserved => FileName::preserved(self.id),
            State::Held => FileName::held(self.id, due),
            _ => FileName::deferred(self.id, due),
        };
        dest.ensure_bucket(self.id.bucket())?;
        let to = dest.path(&name);
        self.drop_spare();
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

    /// Gives a quarantined wrapper's original bytes back, exactly as they
    /// were, as a queued entry of `dest`. One file at every instant: the
    /// claim's content becomes the original bytes where it is (a save in
    /// bad/), then one rename makes it a queued entry of `dest`. A crash in
    /// between leaves a claim in bad/ holding bytes that do not decode, which
    /// recovery wraps and quarantines again: nothing is lost.
    pub fn restore(self, dest: &Queue, original: &[u8]) -> Result<PathBuf> {
        self.save_bytes(original, &|| Ok(()))?;
        self.move_saved(dest, State::Queued, None)
    }

    /// Records in the entry that it is being quarantined in `dest` (bad or
    /// shunt) and why; [`save`](Claim::save) and
    /// [`move_saved`](Claim::move_saved) then put it there.
    pub fn mark_quarantined(&mut self, dest: &str, reason: &str) {
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
    }

    /// Puts it back as preserved (`ID.psv`) in the queue it is in, with its
    /// content saved: what an interrupted release from bad/ or shunt/ becomes.
    pub fn preserve(self) -> Result<()> {
        self.save()?;
        let to = self.queue.path(&FileName::preserved(self.id));
        self.drop_spare();
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
        self.mark_quarantined(dest, reason);
        let dest = spool.queue_named(dest)?;
        self.move_to(&dest, State::Preserved, None)
    }
}

/// Opens (or creates) a claim's spare file for a rewrite from its start.
fn open_spare(tmp: &Path) -> Result<File> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(fsx::FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)
        .map_err(io_err("cannot create", tmp))?;
    f.set_permissions(fs::Permissions::from_mode(fsx::FILE_MODE))
        .map_err(io_err("cannot set the mode of", tmp))?;
    Ok(f)
}

/// Puts the claimed file at `path` (held by `token`) back as queued, due at
/// `due`, without rewriting it: what its last save recorded stands. For a
/// claim whose [`Claim`] is not at hand (a worker abandoned at a stop, an
/// entry that could not be opened, a stray found at exit). Needs no space.
/// Not synced: a lost put-back leaves a claim of a dead runner, which
/// recovery takes back.
pub fn put_back(
    queue: &Queue,
    id: EntryId,
    token: &str,
    path: &Path,
    due: Option<u64>,
) -> Result<()> {
    put_back_as(queue, token, path, &FileName::deferred(id, due))
}

/// Puts a claim at `path` back under `name`, the name it was found with,
/// if it is still there (an operation that failed after its claim): true if
/// it was. A claim that went on (moved, removed) is left alone.
pub fn put_back_found(queue: &Queue, token: &str, path: &Path, name: &FileName) -> Result<bool> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(false);
    }
    put_back_as(queue, token, path, name).map(|()| true)
}

/// [`put_back`] for a claim in bad/ or shunt/: back as preserved (`ID.psv`),
/// where mm-unbad sees it, never as a queued entry no runner of those
/// queues would take.
pub fn put_back_preserved(queue: &Queue, id: EntryId, token: &str, path: &Path) -> Result<()> {
    put_back_as(queue, token, path, &FileName::preserved(id))
}

fn put_back_as(queue: &Queue, token: &str, path: &Path, name: &FileName) -> Result<()> {
    if let Some(dir) = path.parent() {
        let _ = fs::remove_file(dir.join(FileName::writing(name.id, Some(token)).to_string()));
    }
    let to = queue.path(name);
    fs::rename(path, &to).map_err(|e| {
        Error::io(
            format_args!("cannot put back {} as", path.display()),
            &to,
            e,
        )
    })
}

/// Publishes a new entry (a bounce record) in `queue` as queued: written
/// in full under a temporary name, synced, renamed, the directory synced.
/// Writing the same entry again (a retry after a failure, or after a crash:
/// see [`crate::bounce::bounce_record`]) gives the same name, and nothing
/// is written if an entry of that id is already there in any state.
pub fn publish(queue: &Queue, entry: &Entry) -> Result<()> {
    let id: EntryId = entry.id.parse().map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            format!("not an entry id: {}", entry.id),
        )
    })?;
    let bucket = queue.ensure_bucket(id.bucket())?;
    let tmp = bucket.join(FileName::writing(id, None).to_string());
    let dest = bucket.join(FileName::queued(id).to_string());
    let _ = fs::remove_file(&tmp);
    // Written before, in any state (queued, claimed by a runner of the
    // queue, held): it is there, so writing it again would only make a
    // second copy beside a claimed one.
    let prefix = format!("{id}.");
    let exists = fs::read_dir(&bucket)
        .map_err(io_err("cannot read", &bucket))?
        .flatten()
        .any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix)
                && FileName::parse(n.as_bytes()).is_some_and(|f| f.state != State::Writing)
        });
    if exists {
        return Ok(());
    }
    fsx::write_and_rename(&tmp, &dest, &entry.encode()?, true)?;
    fsx::sync_dir(&bucket)
}

/// Moves an entry that cannot be decoded (or read) to bad/ with a reason.
///
/// A readable file becomes a wrapper entry that keeps the original bytes
/// untouched in `original` and the reason in its quarantine record: the
/// claim is renamed into bad/ (still ours), the wrapper replaces its content
/// by write-fsync-rename, and a last rename makes it preserved, so there is
/// one file at every instant. A file that cannot even be read is renamed as
/// it is; its reason is that it cannot be read.
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
            let wrapped = w
                .encode()
                .and_then(|bytes| fsx::write_and_rename(&tmp, &held, &bytes, true));
            if let Err(e) = wrapped {
                // Back where it was claimed, so the caller can put it back.
                let _ = fs::rename(&held, path);
                return Err(e);
            }
            rename(&held, &dest)?;
        }
    }
    fsx::sync_dir(&bucket)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enqueue::{Limits, Submission, enqueue};
    use std::collections::BTreeMap;

    fn setup() -> (tempfile::TempDir, Spool, Queue, EntryId) {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let queue = spool.queue_named("out").unwrap();
        let limits = Limits {
            max_size: 1 << 20,
            max_rcpts: 10,
            max_meta: 1024,
            min_free: 0,
        };
        let sub = Submission {
            sender: "owner@example.org".into(),
            recipients: vec!["a@example.org".into(), "b@example.org".into()],
            list: None,
            kv: BTreeMap::new(),
            message: b"Subject: x\n\nbody\n".to_vec(),
        };
        let id = enqueue(&spool, queue.clone(), limits, sub).unwrap();
        (d, spool, queue, id)
    }

    fn take(spool: &Spool, queue: &Queue, id: EntryId, token: &str) -> Claim {
        let name = FileName::queued(id);
        match Claim::take(spool, queue, &name, Place::Bucket(id.bucket()), token).unwrap() {
            Claimed::Entry(c) => *c,
            other => panic!("not claimed: {other:?}"),
        }
    }

    #[test]
    fn a_save_after_recovery_moved_the_claim_away_recreates_nothing() {
        let (_d, spool, queue, id) = setup();
        let mut c = take(&spool, &queue, id, "aaaaaaaaaaaa");
        c.reserve(4096).unwrap();
        c.entry.recipients[0].state = crate::entry::RcptState::Delivered;
        c.save().unwrap();
        // Recovery takes it back: the .bak is renamed away (and re-queued).
        let queued = queue.path(&FileName::queued(id));
        fs::rename(c.path(), &queued).unwrap();
        let e = c.save().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotOurs, "{e}");
        assert!(!c.path().exists(), "the save recreated the claim");
        assert!(!c.tmp_path().exists(), "the spare was left behind");
        let on_disk = Entry::decode(&fs::read(&queued).unwrap()).unwrap();
        assert_eq!(
            on_disk.recipients[0].state,
            crate::entry::RcptState::Delivered
        );
    }

    #[test]
    fn saves_reuse_the_reserved_spare_and_leave_nothing_at_release() {
        let (_d, spool, queue, id) = setup();
        let mut c = take(&spool, &queue, id, "bbbbbbbbbbbb");
        c.reserve(4096).unwrap();
        let spare = fs::metadata(c.tmp_path()).unwrap().ino();
        c.entry.recipients[0].state = crate::entry::RcptState::Delivered;
        c.save().unwrap();
        // The reserved inode now holds the record; the old one is the spare.
        assert_eq!(fs::metadata(c.path()).unwrap().ino(), spare);
        assert!(c.tmp_path().exists());
        let tmp = c.tmp_path();
        c.release(None).unwrap();
        assert!(!tmp.exists(), "the spare outlived the claim");
        let e = Entry::decode(&fs::read(queue.path(&FileName::queued(id))).unwrap()).unwrap();
        assert_eq!(e.recipients[0].state, crate::entry::RcptState::Delivered);
    }

    #[test]
    fn a_removed_runner_record_fences_the_registration_for_good() {
        let (_d, spool, _queue, _id) = setup();
        let me = Registration::register(&spool, "test", Duration::from_secs(60)).unwrap();
        assert!(me.lease_ok());
        me.renew().unwrap();
        fs::remove_file(spool.root().join(".runners").join(me.token())).unwrap();
        assert!(!me.lease_ok());
        assert_eq!(me.renew().unwrap_err().kind(), ErrorKind::NotOurs);
        assert!(
            me.fenced().unwrap().contains("removed"),
            "{:?}",
            me.fenced()
        );
        // A record put back under the same name is another file: still fenced.
        fs::write(spool.root().join(".runners").join(me.token()), b"{}").unwrap();
        assert!(!me.lease_ok());
    }

    #[test]
    fn a_renewal_gap_of_half_the_lease_fences_the_registration_for_good() {
        let (_d, spool, _queue, _id) = setup();
        let me = Registration::register(&spool, "test", Duration::from_secs(4)).unwrap();
        assert!(me.lease_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(!me.lease_ok());
        assert_eq!(me.renew().unwrap_err().kind(), ErrorKind::NotOurs);
        assert!(me.fenced().unwrap().contains("half its lease"));
        assert!(!me.lease_ok(), "a lease lost came back");
    }
}
