//! Test harness for the cross-tool black-box tests, in the spirit of
//! ripgrep's `tests/util.rs`.
//!
//! * [`bin`] finds a tool: in `$MM_BIN_DIR` when set, else in the profile
//!   directory next to the test executable (`target/debug` for
//!   `target/debug/deps/e2e-…`). In the second case the tools are first built
//!   once with `cargo build`, because `cargo test -p mm-e2e` does not build
//!   the binaries of other packages and a stale binary would test old code.
//!   They are built with the `test-hooks` feature (`MM_TEST_NOW`, …); prebuilt
//!   binaries in `$MM_BIN_DIR` need it too (`cargo build --workspace` has it).
//! * [`TestSpool`] owns a temporary spool root (optionally a tmpfs mount,
//!   unmounted on drop) and a scratch directory beside it, and knows how to
//!   plant fixture entries and to list and snapshot what is on disk.
//! * [`Tool`] builds one command, `Tool::new("mm-enqueue").spool(&s).args([…])
//!   .stdin(bytes).run()` (under a timeout, in its own process group; stdin
//!   as bytes, endless or none; as another user, under a umask, behind a
//!   wrapper such as strace), or `.spawn()`s it in the background as a
//!   [`Running`] (pid, signals, kill, bounded waits); [`Out`] checks its
//!   exit status and output, printing everything on failure.
//! * [`is_root`], [`require_root`], [`strace_works`], [`poll_until`],
//!   [`free_port`]: what tests ask of the machine and of time.
//! * [`DelayRelay`] puts a round-trip time between a client and a server
//!   on the loopback (the benchmark's delay rows).
//! * [`golden`] compares an output with `tests/fixtures/golden/NAME`
//!   (`MM_BLESS=1` rewrites the file).

// The tests measure the real world (seeds, file times): the wall clock is
// theirs to read; only the tools must go through mm_core::clock.
#![allow(clippy::disallowed_methods)]

/// The command builder: run a tool, or start it in the background.
mod cmd;
/// mailin-embedded in this process, scripted per recipient.
mod mail;
/// A private Postfix instance, and the system account of its pipe.
pub mod postfix;
/// A TCP relay that holds each direction's bytes for a fixed delay.
mod relay;
/// Postfix's smtp-sink, started and stopped.
mod sink;
/// A minimal SMTP client that sends exactly the bytes given.
pub mod smtp_client;
/// A scripted SMTP server that misbehaves on purpose.
pub mod smtp_script;

pub use cmd::{DEFAULT_TIMEOUT, Out, Ran, Running, Tool};
pub use mail::{MailServer, Received};
pub use relay::DelayRelay;
pub use sink::{Dump, SinkOptions, SmtpSink, parse_dump};

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use mm_core::{Entry, FileName};

/// The tools whose binaries the tests run.
pub const TOOLS: &[&str] = &[
    "mm-enqueue",
    "mm-runq",
    "mm-showq",
    "mm-dumpdb",
    "mm-recover",
    "mm-unbad",
    "mm-flush",
    "mm-hold",
    "mm-release",
    "mm-delete",
];

/// The directory of this crate (`tests/`).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    crate_dir().join("fixtures")
}

/// The directory holding the tool binaries (built on first use unless
/// `$MM_BIN_DIR` names it).
pub fn bin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("MM_BIN_DIR").filter(|d| !d.is_empty()) {
            let d = PathBuf::from(d);
            for t in TOOLS {
                assert!(
                    d.join(t).is_file(),
                    "MM_BIN_DIR={} has no {t} binary",
                    d.display()
                );
            }
            return d;
        }
        let exe = std::env::current_exe().expect("cannot find the test executable");
        let mut dir = exe
            .parent()
            .expect("test executable has no directory")
            .to_path_buf();
        if dir.ends_with("deps") {
            dir.pop();
        }
        build_tools(&dir);
        dir
    })
}

/// Builds the tools into the profile directory `profile_dir` (`…/target/debug`).
fn build_tools(profile_dir: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from(env!("CARGO")));
    let manifest = crate_dir()
        .parent()
        .expect("tests/ has a parent")
        .join("Cargo.toml");
    let mut cmd = Command::new(&cargo);
    cmd.arg("build")
        .arg("--quiet")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(&manifest);
    for t in TOOLS {
        cmd.arg("-p").arg(t);
    }
    // The tests drive the tools' clock and crash points (MM_TEST_*), which
    // only a build with the test hooks reads.
    let features: Vec<String> = TOOLS.iter().map(|t| format!("{t}/test-hooks")).collect();
    cmd.arg("--features").arg(features.join(","));
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(p) => {
            cmd.arg("--profile").arg(p);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} to build the tools: {e}"));
    assert!(
        out.status.success(),
        "building the tools failed ({:?}; set MM_BIN_DIR to use prebuilt binaries):\n{}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    for t in TOOLS {
        assert!(
            profile_dir.join(t).is_file(),
            "{t} not found in {} after cargo build; set MM_BIN_DIR",
            profile_dir.display()
        );
    }
}

/// The path of tool `name`.
pub fn bin(name: &str) -> PathBuf {
    bin_dir().join(name)
}

/// A copy of tool `name` that every user may run, for tests that run tools
/// as other users: the build's own binaries may be in a checkout in a home
/// directory of mode 0700 (root's is), which those users cannot enter. The
/// copies are made once per test process, in a directory of mode 0755 under
/// the temporary directory, refreshed when the build's binary changed.
pub fn bin_for_all(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // One directory per user and build, so that two checkouts never
        // run each other's binaries.
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bin_dir().hash(&mut h);
        let dir = std::env::temp_dir().join(format!(
            "mm-e2e-bin-{}-{:016x}",
            rustix::process::geteuid().as_raw(),
            h.finish()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("cannot create {}: {e}", dir.display()),
        }
        let m = std::fs::symlink_metadata(&dir).expect("the shared binary directory");
        assert!(
            m.is_dir() && m.uid() == rustix::process::geteuid().as_raw(),
            "{} is not a directory of ours",
            dir.display()
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod 0755 the shared binary directory");
        for t in TOOLS {
            let (from, to) = (bin(t), dir.join(t));
            let tmp = dir.join(format!(".{t}.{}", std::process::id()));
            std::fs::copy(&from, &tmp).unwrap_or_else(|e| {
                panic!("cannot copy {} to {}: {e}", from.display(), tmp.display())
            });
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
                .expect("chmod 0755 a binary copy");
            std::fs::rename(&tmp, &to).expect("rename a binary copy into place");
        }
        dir
    });
    dir.join(name)
}

/// Whether the tests run as root (the effective uid is 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// For a test that needs root (mounts, users, setpriv): such a test is
/// `#[ignore = "needs root: …"]`, so that `cargo test` reports it as not run;
/// `cargo xtask test` runs it where it can. Run anyway without root, it
/// fails here with the reason, never passes.
#[track_caller]
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root, and the effective uid is not 0 (cargo xtask test runs it when root)"
    );
}

/// Whether strace(1) can trace and inject faults here (a container may
/// forbid ptrace): the reason when not. Asked once per process.
pub fn strace_works() -> Result<(), String> {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    OK.get_or_init(|| {
        match Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-o",
                "/dev/null",
                "-e",
                "inject=fsync:error=EIO:when=1",
                "--",
                "true",
            ])
            .output()
        {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(format!(
                "strace cannot trace here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => Err(format!(
                "strace is not installed ({e}; Debian: apt-get install strace)"
            )),
        }
    })
    .clone()
}

/// Polls `cond` every 10 ms until it holds, failing after `within`.
#[track_caller]
pub fn poll_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `within`
/// (for probes that run commands or read logs, where [`poll_until`]'s 10 ms
/// would be a busy loop); an error from `probe` ends the wait at once.
pub fn poll_for<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Held while a test adds or removes system users or groups: useradd and
/// groupadd lock /etc/passwd and /etc/group and give up when they are busy.
pub fn accounts_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A user's or group's numeric id from the system's databases (`getent`,
/// so NSS sources count too), or `None` if there is no such name.
pub fn lookup_id(database: &str, name: &str) -> Result<Option<u32>, String> {
    let done = Tool::program("getent")
        .args([database, name])
        .timeout(Duration::from_secs(10))
        .try_run()?;
    // getent: 2 is "no such key".
    if done.status.code() == Some(2) {
        return Ok(None);
    }
    if !done.status.success() {
        return Err(format!("getent {database} {name} failed ({})", done.status));
    }
    let out = String::from_utf8_lossy(&done.stdout);
    // passwd: name:x:UID:GID:...   group: name:x:GID:members
    out.split(':')
        .nth(2)
        .and_then(|f| f.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| format!("getent {database} {name} printed {out:?}"))
}

/// `text` on one line, for error messages.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The Message-ID of `message` (LF line ends), without angle brackets.
pub fn message_id(message: &[u8]) -> Option<String> {
    message
        .split(|&b| b == b'\n')
        .take_while(|l| !l.is_empty())
        .find_map(|l| {
            let text = String::from_utf8_lossy(l);
            let (name, value) = text.split_once(':')?;
            name.eq_ignore_ascii_case("Message-ID").then(|| {
                value
                    .trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
        })
}

/// Where `got` first differs from `want`: the line number and both lines.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let line_no = got[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let line_of = |data: &[u8]| {
        let start = data[..at.min(data.len())]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let end = data[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| start + p + 1);
        let shown = String::from_utf8_lossy(&data[start..end])
            .escape_debug()
            .to_string();
        if shown.len() > 160 {
            format!(
                "{}... ({} bytes)",
                &shown[..shown.floor_char_boundary(160)],
                end - start
            )
        } else {
            shown
        }
    };
    format!(
        "byte {at} (line {line_no}; {} bytes received, {} sent): got \"{}\", want \"{}\"",
        got.len(),
        want.len(),
        line_of(got),
        line_of(want)
    )
}

/// A loopback port that was free a moment ago (bound, then released:
/// another process may take it before it is used, so a server that cannot
/// bind it should pick another).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A small deterministic pseudo-random generator (xorshift64*), for test data.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `n` pseudo-random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

/// A mounted tmpfs, unmounted on drop.
#[derive(Debug)]
struct Mount {
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds it (a failed test's child): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// A temporary spool root, with a scratch directory beside it.
///
/// ```text
/// $TMP/spool   the root (what --spool / MM_SPOOL names)
/// $TMP/work    scratch: message files, corrupt files outside the spool
/// ```
#[derive(Debug)]
pub struct TestSpool {
    // Declared first so that it is dropped (unmounted) before the directory is removed.
    mount: Option<Mount>,
    root: PathBuf,
    work: PathBuf,
    tmp: tempfile::TempDir,
}

impl Default for TestSpool {
    fn default() -> TestSpool {
        TestSpool::new()
    }
}

impl TestSpool {
    /// A fresh, empty spool root on the ordinary temporary file system.
    pub fn new() -> TestSpool {
        let tmp = tempfile::Builder::new()
            .prefix("mm-e2e-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let root = tmp.path().join("spool");
        let work = tmp.path().join("work");
        std::fs::create_dir(&root).expect("cannot create the spool root");
        std::fs::create_dir(&work).expect("cannot create the scratch directory");
        TestSpool {
            mount: None,
            root,
            work,
            tmp,
        }
    }

    /// A spool root that is a fresh tmpfs mounted with `options` (e.g.
    /// `size=256k`). Panics when not root, or when the mount fails, so a
    /// broken setup never passes silently.
    #[track_caller]
    pub fn tmpfs(what: &str, options: &str) -> TestSpool {
        require_root(&format!("{what} (it mounts a tmpfs)"));
        let mut s = TestSpool::new();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&s.root)
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run mount(8): {e}"));
        assert!(
            out.status.success(),
            "{what}: running as root, but `mount -t tmpfs -o {options} tmpfs {}` failed: {}\n\
             (this test needs CAP_SYS_ADMIN; it does not pass silently)",
            s.root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        s.mount = Some(Mount {
            dir: s.root.clone(),
        });
        s
    }

    /// Remounts the tmpfs root read-only.
    pub fn remount_read_only(&self) {
        assert!(
            self.mount.is_some(),
            "remount_read_only on a spool that is not a mount"
        );
        let out = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.root)
            .output()
            .expect("cannot run mount(8)");
        assert!(
            out.status.success(),
            "mount -o remount,ro {} failed: {}",
            self.root.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The scratch directory (not in the spool).
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// The temporary directory holding both.
    pub fn tmp(&self) -> &Path {
        self.tmp.path()
    }

    /// `text` with the spool root replaced by `$SPOOL`, for golden outputs.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.root.display().to_string(), "$SPOOL")
    }

    /// The mm-core queue `name` of this spool.
    pub fn queue(&self, name: &str) -> mm_core::Queue {
        mm_core::Spool::open(&self.root)
            .expect("spool root")
            .queue_named(name)
            .expect("queue name")
    }

    /// Writes `entry` under `name` in its bucket of `queue` (directories made as needed).
    pub fn put(&self, queue: &str, name: &FileName, entry: &Entry) -> PathBuf {
        let bytes = entry.encode().expect("fixture entry encodes");
        self.put_bytes(queue, Some(name.id.bucket()), &name.to_string(), &bytes)
    }

    /// Writes raw `bytes` as `file_name` in bucket `bucket` of `queue`, or in
    /// the queue's top directory (the drop-in) when `bucket` is `None`.
    pub fn put_bytes(
        &self,
        queue: &str,
        bucket: Option<u8>,
        file_name: &str,
        bytes: &[u8],
    ) -> PathBuf {
        let mut dir = self.root.join(queue);
        if let Some(b) = bucket {
            dir.push(format!("{b:02x}"));
        }
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(file_name);
        std::fs::write(&path, bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// Every regular file under the root, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = walk(&self.root)
            .into_iter()
            .filter(|(_, m)| m.is_file())
            .map(|(p, _)| p)
            .collect();
        out.sort();
        out
    }

    /// Every file under the root whose name ends in `.EXT`.
    pub fn files_with_ext(&self, ext: &str) -> Vec<PathBuf> {
        self.files()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect()
    }

    /// Every entry file (a name mm-core parses, any state) under the root.
    pub fn entry_files(&self) -> Vec<PathBuf> {
        self.files()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| FileName::parse(n.as_encoded_bytes()).is_some())
            })
            .collect()
    }

    /// Names, kinds, sizes, modes and mtimes of everything under the root (and the root).
    pub fn snapshot(&self) -> Snapshot {
        let mut map = BTreeMap::new();
        let root_meta = std::fs::symlink_metadata(&self.root).expect("spool root");
        map.insert(PathBuf::from("."), Stat::of(&self.root, &root_meta));
        for (p, m) in walk(&self.root) {
            let stat = Stat::of(&p, &m);
            let rel = p
                .strip_prefix(&self.root)
                .expect("under root")
                .to_path_buf();
            map.insert(rel, stat);
        }
        Snapshot(map)
    }
}

/// Every path under `dir` (not following links) with its metadata.
fn walk(dir: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .follow_links(false)
        .into_iter()
        .map(|e| {
            let e = e.unwrap_or_else(|e| panic!("cannot walk {}: {e}", dir.display()));
            let m = e
                .metadata()
                .unwrap_or_else(|err| panic!("cannot stat {}: {err}", e.path().display()));
            (e.into_path(), m)
        })
        .collect()
}

/// What a snapshot records of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// `d`, `f`, `l`, `p` (a FIFO) or `?`.
    pub kind: char,
    /// Size in bytes (files).
    pub len: u64,
    /// Permission bits, with setgid and friends.
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Inode number (a rewrite-by-rename changes it).
    pub ino: u64,
    /// Where a symbolic link points.
    pub link: Option<PathBuf>,
    /// A regular file's bytes.
    pub content: Option<Vec<u8>>,
}

impl Stat {
    /// One line for a message (the content as its length).
    fn brief(&self) -> String {
        format!(
            "{} len {} mode {:o} mtime {:?} ino {} link {:?}",
            self.kind, self.len, self.mode, self.mtime, self.ino, self.link
        )
    }

    /// What is at `path` now (not following a link), `m` its metadata.
    fn of(path: &Path, m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::FileTypeExt;
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_fifo() {
            'p'
        } else {
            '?'
        };
        Stat {
            kind,
            len: if m.is_file() { m.len() } else { 0 },
            mode: m.permissions().mode() & 0o7777,
            mtime: m.modified().expect("mtime"),
            ino: m.ino(),
            link: ft.is_symlink().then(|| {
                std::fs::read_link(path)
                    .unwrap_or_else(|e| panic!("cannot read link {}: {e}", path.display()))
            }),
            content: ft.is_file().then(|| {
                std::fs::read(path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            }),
        }
    }
}

/// The state of a spool tree at one moment, for "nothing changed" checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<PathBuf, Stat>);

impl Snapshot {
    /// The state of each of `paths` (anywhere: in a spool or not), by full
    /// path; one that does not exist is left out (and so shows as removed
    /// against an earlier snapshot).
    pub fn of_paths(paths: &[PathBuf]) -> Snapshot {
        Snapshot(
            paths
                .iter()
                .filter_map(|p| {
                    let m = std::fs::symlink_metadata(p).ok()?;
                    Some((p.clone(), Stat::of(p, &m)))
                })
                .collect(),
        )
    }

    /// The same paths as `self`, now.
    pub fn again(&self) -> Snapshot {
        Snapshot::of_paths(&self.0.keys().cloned().collect::<Vec<_>>())
    }

    /// Panics, listing every difference, unless `after` equals `self`.
    pub fn assert_same(&self, after: &Snapshot, what: &str) {
        if self == after {
            return;
        }
        let mut diff = String::new();
        for (p, s) in &self.0 {
            match after.0.get(p) {
                None => diff.push_str(&format!("  removed: {}\n", p.display())),
                Some(a) if a != s => diff.push_str(&format!(
                    "  changed: {}{}\n    before {}\n    after  {}\n",
                    p.display(),
                    if a.content != s.content {
                        " (content differs)"
                    } else {
                        ""
                    },
                    s.brief(),
                    a.brief()
                )),
                Some(_) => {}
            }
        }
        for p in after.0.keys().filter(|p| !self.0.contains_key(*p)) {
            diff.push_str(&format!("  added:   {}\n", p.display()));
        }
        panic!("{what} modified the spool:\n{diff}");
    }
}

/// Decodes the entry file at `path`, panicking with the path and the reason.
pub fn read_entry(path: &Path) -> Entry {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Entry::decode(&bytes).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
}

/// Compares `actual` with the golden file `tests/fixtures/golden/NAME`.
/// With `MM_BLESS=1` the file is (re)written instead.
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    let path = fixtures_dir().join("golden").join(name);
    if std::env::var_os("MM_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("golden dir"))
            .expect("cannot create the golden directory");
        std::fs::write(&path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden file {}: {e}\n(run with MM_BLESS=1 to create it)\n--- actual ---\n{actual}",
            path.display()
        )
    });
    if expected == actual {
        return;
    }
    let mut first_diff = String::new();
    for (i, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        if e != a {
            first_diff = format!(
                "first difference at line {}:\n  expected: {e:?}\n  actual:   {a:?}\n",
                i + 1
            );
            break;
        }
    }
    if first_diff.is_empty() {
        first_diff = format!(
            "one is a prefix of the other ({} vs {} lines, or a final newline)\n",
            expected.lines().count(),
            actual.lines().count()
        );
    }
    panic!(
        "output differs from golden file {} (MM_BLESS=1 rewrites it)\n{first_diff}\
         --- expected ---\n{expected}\n--- actual ---\n{actual}\n--- end ---",
        path.display()
    );
}
