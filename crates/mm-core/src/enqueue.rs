//! Putting new entries into a queue, durably.
//!
//! One entry ([`Enqueuer::add`] then [`Enqueuer::commit`], or [`enqueue`]):
//! write `ID.tmp` in the entry's bucket, `fsync` it, rename it to `ID.pck`,
//! `fsync` the bucket directory; only then is the id printed and the exit 0.
//!
//! A batch (`mm-enqueue --file …`) uses group commit: the temporary files of up
//! to [`BATCH`] entries are written, one `syncfs(2)` makes all their data
//! durable, they are renamed, and a second `syncfs` makes the renames durable
//! before any id is printed. (On FUSE and network file systems, where
//! `syncfs` may reach no disk, each file is `fdatasync`ed and each bucket
//! `fsync`ed instead: see [`Enqueuer::grouped`].) A crash inside the window leaves `.tmp` files
//! (never acknowledged, removed by mm-recover) or entries whose ids were not
//! printed (a resend by the caller may duplicate, never lose).
//!
//! Before writing, the free space is checked against `min_free` (Postfix's
//! `queue_minfree`), so a nearly full disk refuses mail with 75 instead of
//! half-writing it; a write that still fails removes its temporary file.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::address;
use crate::clock;
use crate::entry::Entry;
use crate::error::{Error, ErrorKind, Result, io_err};
use crate::fsx;
use crate::id::{EntryId, FileName};
use crate::spool::{Queue, Spool};

/// Submissions from which [`Enqueuer::add_all`] writes in parallel.
const PARALLEL_FROM: usize = 64;

/// Entries per group commit in a batch.
pub const BATCH: usize = 512;

/// Message bytes per group commit in a batch (what a caller holds in memory).
pub const GROUP_BYTES: u64 = 64 << 20;

/// Whether a group of `entries` holding `bytes` of messages is full: commit it.
pub fn group_is_full(entries: usize, bytes: u64) -> bool {
    entries >= BATCH || bytes >= GROUP_BYTES
}

/// Limits on what mm-enqueue accepts.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest message, in bytes.
    pub max_size: u64,
    /// Most recipients per entry.
    pub max_rcpts: usize,
    /// Largest metadata (list name and key/values), in bytes.
    pub max_meta: usize,
    /// Free space below which new mail is refused (temporary failure).
    pub min_free: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_size: 32 << 20,
            max_rcpts: 10_000,
            max_meta: 64 << 10,
            min_free: 64 << 20,
        }
    }
}

/// A message to enqueue, with its envelope.
#[derive(Clone, Debug, Default)]
pub struct Submission {
    /// Envelope sender ("" for `<>`).
    pub sender: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// Mailing list.
    pub list: Option<String>,
    /// Free-form metadata.
    pub kv: BTreeMap<String, String>,
    /// The message bytes.
    pub message: Vec<u8>,
}

impl Submission {
    /// Validates the envelope and metadata against `limits`, normalising the
    /// addresses. Every refusal is [`ErrorKind::Invalid`] (exit 65).
    pub fn validate(&mut self, limits: &Limits) -> Result<()> {
        self.sender = address::sender(&self.sender)?;
        if self.recipients.is_empty() {
            return Err(Error::new(ErrorKind::Invalid, "no recipients"));
        }
        if self.recipients.len() > limits.max_rcpts {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "{} recipients; at most {} allowed (--max-rcpts)",
                    self.recipients.len(),
                    limits.max_rcpts
                ),
            ));
        }
        for r in &mut self.recipients {
            *r = address::recipient(r)?;
        }
        if self.message.len() as u64 > limits.max_size {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "message of {} bytes exceeds the limit of {} bytes (--max-size)",
                    self.message.len(),
                    limits.max_size
                ),
            ));
        }
        let mut meta = 0;
        if let Some(l) = &self.list {
            check_word("list name", l)?;
            meta += l.len();
        }
        for (k, v) in &self.kv {
            check_word("metadata key", k)?;
            if v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(Error::new(
                    ErrorKind::Invalid,
                    format!("metadata value of {k} contains a control character"),
                ));
            }
            meta += k.len() + v.len();
        }
        if meta > limits.max_meta {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "{meta} bytes of metadata exceed the limit of {} (--max-meta)",
                    limits.max_meta
                ),
            ));
        }
        Ok(())
    }
}

fn check_word(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._-+@".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Invalid,
            format!("bad {what} {s:?}: want [A-Za-z0-9._+@-], at most 128"),
        ))
    }
}

struct Pending {
    id: EntryId,
    tmp: PathBuf,
    dest: PathBuf,
    renamed: bool,
}

/// Writes entries into one queue.
pub struct Enqueuer {
    spool: Spool,
    queue: Queue,
    limits: Limits,
    pending: Vec<Pending>,
    pending_bytes: u64,
    group: bool,
    /// Bytes written since free space was last checked.
    unchecked: u64,
    /// Buckets known to exist (a bulk load stats each only once).
    buckets: Buckets,
}

/// A bulk load checks free space again after this many bytes written.
const SPACE_CHECK_EVERY: u64 = 1 << 20;

impl Enqueuer {
    /// An enqueuer for `queue` (created on demand) that makes each entry
    /// durable on its own: `fsync` of the file and of its directory.
    pub fn new(spool: &Spool, queue: Queue, limits: Limits) -> Result<Enqueuer> {
        fsx::create_dir(queue.dir())?;
        Ok(Enqueuer {
            spool: spool.clone(),
            queue,
            limits,
            pending: Vec::new(),
            pending_bytes: 0,
            group: false,
            unchecked: 0,
            buckets: std::array::from_fn(|_| AtomicBool::new(false)),
        })
    }

    /// An enqueuer that commits entries in groups with `syncfs(2)`: for bulk
    /// loads. On a file system where `syncfs` is not known to reach stable
    /// storage (FUSE, NFS, SMB, Ceph: [`fsx::syncfs_is_durable`]; measured on
    /// GlusterFS, whose bricks saw no sync at all), each entry is made
    /// durable on its own instead: `fdatasync` of the file, then `fsync` of
    /// each bucket directory once per group.
    pub fn grouped(spool: &Spool, queue: Queue, limits: Limits) -> Result<Enqueuer> {
        let mut q = Enqueuer::new(spool, queue, limits)?;
        q.group = fsx::syncfs_is_durable(q.queue.dir());
        Ok(q)
    }

    /// Refuses new mail when the spool's file system is nearly full.
    fn check_space(&self, size: u64) -> Result<()> {
        check_space(&self.spool, self.queue.dir(), &self.limits, size)
    }

    /// Validates and writes one submission as a temporary file. It becomes an
    /// entry at the next [`commit`](Enqueuer::commit).
    pub fn add(&mut self, mut sub: Submission) -> Result<EntryId> {
        sub.validate(&self.limits)?;
        // At the first entry, then at least every SPACE_CHECK_EVERY bytes:
        // one statfs per entry would cost a bulk load for nothing.
        let size = sub.message.len() as u64;
        if self.unchecked == 0 || self.unchecked + size >= SPACE_CHECK_EVERY {
            self.check_space(self.unchecked + size)?;
            self.unchecked = 0;
        }
        self.unchecked += size.max(1);
        let (p, size) = write_one(&self.queue, &self.buckets, sub, !self.group)?;
        let id = p.id;
        self.pending_bytes += size;
        self.pending.push(p);
        Ok(id)
    }

    /// Adds several submissions at once: what [`add`](Enqueuer::add) does
    /// for each, in order, but with their temporary files written by up to
    /// four threads. Creating files is most of what a bulk load costs, and
    /// creations in different bucket directories proceed in parallel (about
    /// twice as fast on two cores). On an error every temporary file of the
    /// call is removed and the first error (in submission order) is returned.
    pub fn add_all(&mut self, mut subs: Vec<Submission>) -> Result<Vec<EntryId>> {
        // Threads pay off only for a real bulk load.
        if subs.len() < PARALLEL_FROM {
            return subs.into_iter().map(|sub| self.add(sub)).collect();
        }
        let mut total = 0u64;
        for sub in &mut subs {
            sub.validate(&self.limits)?;
            total += sub.message.len() as u64;
        }
        self.check_space(total)?;
        self.unchecked = 0;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let chunk = subs.len().div_ceil(threads);
        let (queue, buckets, sync) = (&self.queue, &self.buckets, !self.group);
        let mut chunks: Vec<Vec<Submission>> = Vec::new();
        while !subs.is_empty() {
            let rest = subs.split_off(chunk.min(subs.len()));
            chunks.push(std::mem::replace(&mut subs, rest));
        }
        let results: Vec<Vec<Result<(Pending, u64)>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|c| {
                    scope.spawn(move || {
                        c.into_iter()
                            .map(|sub| write_one(queue, buckets, sub, sync))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(Error::new(
                            ErrorKind::Internal,
                            "a writer thread panicked",
                        ))]
                    })
                })
                .collect()
        });
        let mut written = Vec::new();
        let mut first_error = None;
        for r in results.into_iter().flatten() {
            match r {
                Ok(p) => written.push(p),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            for (p, _) in &written {
                let _ = std::fs::remove_file(&p.tmp);
            }
            return Err(e);
        }
        let mut ids = Vec::with_capacity(written.len());
        for (p, size) in written {
            self.pending_bytes += size;
            ids.push(p.id);
            self.pending.push(p);
        }
        Ok(ids)
    }

    /// Makes every pending entry durable and visible; returns their ids in
    /// order. On failure nothing pending is left visible where it can still be
    /// taken back, and the error is returned (exit 75).
    pub fn commit(&mut self) -> Result<Vec<EntryId>> {
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        commit(&self.queue, pending, self.group)
    }

    /// Abandons pending entries (removes their temporary files).
    pub fn abort(&mut self) {
        for p in self.pending.drain(..) {
            let _ = std::fs::remove_file(&p.tmp);
        }
        self.pending_bytes = 0;
    }
}

impl Drop for Enqueuer {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Which buckets of the queue are known to exist.
type Buckets = [AtomicBool; 256];

/// Encodes one validated submission and writes it as a temporary file of
/// its bucket (created if `buckets` does not know it): the work of
/// [`Enqueuer::add`], shared by the threads of [`Enqueuer::add_all`].
fn write_one(
    queue: &Queue,
    buckets: &Buckets,
    sub: Submission,
    sync: bool,
) -> Result<(Pending, u64)> {
    let micros = clock::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let rcpts = sub.recipients.join("\n");
    let id = EntryId::generate(
        micros,
        &[
            &sub.message,
            sub.sender.as_bytes(),
            rcpts.as_bytes(),
            sub.list.as_deref().unwrap_or("").as_bytes(),
        ],
    );
    let mut entry = Entry::new(
        &id,
        &sub.sender,
        &sub.recipients,
        sub.message,
        queue.name().as_str(),
    );
    entry.meta.list = sub.list;
    entry.meta.kv = sub.kv;
    let bytes = entry.encode()?;
    let known = &buckets[usize::from(id.bucket())];
    let bucket = if known.load(Ordering::Relaxed) {
        queue.bucket_dir(id.bucket())
    } else {
        let b = queue.ensure_bucket(id.bucket())?;
        known.store(true, Ordering::Relaxed);
        b
    };
    let tmp = bucket.join(FileName::writing(id, None).to_string());
    let dest = bucket.join(FileName::queued(id).to_string());
    write_tmp(&tmp, &bytes, sync)?;
    Ok((
        Pending {
            id,
            tmp,
            dest,
            renamed: false,
        },
        bytes.len() as u64,
    ))
}

fn write_tmp(tmp: &std::path::Path, bytes: &[u8], sync: bool) -> Result<()> {
    use std::io::Write;
    let r = (|| {
        let mut f = fsx::create_new(tmp)?;
        f.write_all(bytes).map_err(io_err("cannot write", tmp))?;
        crate::crashpoint::here("enqueue-after-write");
        if sync {
            f.sync_data().map_err(io_err("cannot sync", tmp))?;
            crate::crashpoint::here("enqueue-after-fsync");
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    r
}

fn syncfs(dir: &std::path::Path) -> Result<()> {
    let f = File::open(dir).map_err(io_err("cannot open", dir))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("cannot sync file system of", dir, e.into()))
}

fn commit(queue: &Queue, mut pending: Vec<Pending>, group: bool) -> Result<Vec<EntryId>> {
    let single = !group;
    let r = (|| {
        if pending.is_empty() {
            return Ok(());
        }
        if !single {
            syncfs(queue.dir())?;
        }
        for p in &mut pending {
            std::fs::rename(&p.tmp, &p.dest).map_err(|e| {
                Error::io(
                    format_args!("cannot rename {} to", p.tmp.display()),
                    &p.dest,
                    e,
                )
            })?;
            p.renamed = true;
            crate::crashpoint::here("enqueue-after-rename");
        }
        if single {
            let mut dirs: Vec<&std::path::Path> =
                pending.iter().filter_map(|p| p.dest.parent()).collect();
            dirs.sort_unstable();
            dirs.dedup();
            dirs.iter().try_for_each(|d| fsx::sync_dir(d))
        } else {
            syncfs(queue.dir())
        }
    })();
    match r {
        Ok(()) => Ok(pending.into_iter().map(|p| p.id).collect()),
        Err(e) => {
            for p in &pending {
                let _ = std::fs::remove_file(if p.renamed { &p.dest } else { &p.tmp });
            }
            Err(e)
        }
    }
}

/// Refuses new mail when the file system of `dir` has less than the
/// minimum free space plus twice `size` (the entry and its temporary file).
fn check_space(spool: &Spool, dir: &std::path::Path, limits: &Limits, size: u64) -> Result<()> {
    let free = fsx::free_space(dir)?;
    if free < limits.min_free.saturating_add(size.saturating_mul(2)) {
        return Err(Error::new(
            ErrorKind::Temporary,
            format!(
                "spool {} has {} bytes free, below the minimum of {} (--min-free); try again later",
                spool.root().display(),
                free,
                limits.min_free
            ),
        ));
    }
    Ok(())
}

/// What `mm-enqueue --dry-run` checks: the submission against the limits and
/// the free space of the spool. Writes nothing, creates nothing.
pub fn check(spool: &Spool, limits: &Limits, sub: &mut Submission) -> Result<()> {
    sub.validate(limits)?;
    check_space(spool, spool.root(), limits, sub.message.len() as u64)
}

/// Enqueues one submission durably: the MTA pipe case.
pub fn enqueue(spool: &Spool, queue: Queue, limits: Limits, sub: Submission) -> Result<EntryId> {
    let mut q = Enqueuer::new(spool, queue, limits)?;
    q.add(sub)?;
    let ids = q.commit()?;
    ids.into_iter()
        .next()
        .ok_or_else(|| Error::new(ErrorKind::Internal, "commit returned no id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Spool, Queue) {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let queue = spool.queue_named("in").unwrap();
        (d, spool, queue)
    }

    fn subs(n: usize) -> Vec<Submission> {
        (0..n)
            .map(|i| Submission {
                sender: "owner@example.org".into(),
                recipients: vec!["bob@example.org".into()],
                list: None,
                kv: BTreeMap::new(),
                message: format!("Subject: {i}\n\nbody {i}\n").into_bytes(),
            })
            .collect()
    }

    fn limits() -> Limits {
        Limits {
            max_size: 1 << 20,
            max_rcpts: 10,
            max_meta: 1024,
            min_free: 0,
        }
    }

    #[test]
    fn a_parallel_group_commits_every_entry_in_order_with_its_own_message() {
        let (_d, spool, queue) = setup();
        let mut q = Enqueuer::grouped(&spool, queue.clone(), limits()).unwrap();
        let ids = q.add_all(subs(300)).unwrap();
        assert_eq!(q.commit().unwrap(), ids, "committed in submission order");
        for (i, id) in ids.iter().enumerate() {
            let bytes = std::fs::read(queue.path(&FileName::queued(*id))).unwrap();
            let e = Entry::decode(&bytes).unwrap();
            assert_eq!(
                e.message,
                format!("Subject: {i}\n\nbody {i}\n").into_bytes()
            );
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), 300);
    }

    #[test]
    fn a_failing_parallel_group_leaves_no_file_and_nothing_pending() {
        let (_d, spool, queue) = setup();
        fsx::create_dir(queue.dir()).unwrap();
        // Half the buckets are files: about half the entries cannot be
        // written, and the other half's temporary files must go too.
        for b in (0..=255u8).step_by(2) {
            std::fs::write(queue.bucket_dir(b), b"not a directory").unwrap();
        }
        let mut q = Enqueuer::grouped(&spool, queue.clone(), limits()).unwrap();
        assert!(q.add_all(subs(100)).is_err());
        assert!(q.commit().unwrap().is_empty(), "nothing may stay pending");
        let left: Vec<_> = (1..=255u8)
            .step_by(2)
            .filter_map(|b| std::fs::read_dir(queue.bucket_dir(b)).ok())
            .flat_map(|d| d.map(|e| e.unwrap().file_name()))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}
