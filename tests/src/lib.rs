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
//!   .stdin(bytes).run()`, and [`Out`] checks its exit status and output,
//!   printing everything on failure.
//! * [`golden`] compares an output with `tests/fixtures/golden/NAME`
//!   (`MM_BLESS=1` rewrites the file).

/// A scripted SMTP server that misbehaves on purpose.
pub mod smtp_script;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::SystemTime;

use mm_core::{Entry, EntryId, FileName};

/// The tools whose binaries the tests run.
pub const TOOLS: &[&str] = &[
    "mm-enqueue",
    "mm-runq",
    "mm-showq",
    "mm-dumpdb",
    "mm-recover",
    "mm-unbad",
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

/// Whether the tests run as root: `id -u` is 0 (or, without id(1), the real
/// uid in /proc/self/status).
pub fn is_root() -> bool {
    if let Ok(o) = Command::new("id").arg("-u").output()
        && o.status.success()
    {
        return o.stdout.trim_ascii() == b"0";
    }
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// For a test that needs root (mounts, setpriv): true when root; otherwise prints a
/// notice saying which test is skipped, and returns false.
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("NOTICE: skipping {what}: it needs root, and `id -u` is not 0");
    false
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
    /// `size=256k`). Returns `None`, with a notice, when not root; panics if
    /// root and the mount fails, so a broken setup never passes silently.
    pub fn tmpfs(what: &str, options: &str) -> Option<TestSpool> {
        if !require_root(&format!("{what} (it mounts a tmpfs)")) {
            return None;
        }
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
        Some(s)
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
        map.insert(PathBuf::from("."), Stat::of(&root_meta));
        for (p, m) in walk(&self.root) {
            let rel = p
                .strip_prefix(&self.root)
                .expect("under root")
                .to_path_buf();
            map.insert(rel, Stat::of(&m));
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
    /// `d`, `f`, `l` or `?`.
    pub kind: char,
    /// Size in bytes (files).
    pub len: u64,
    /// Permission bits, with setgid and friends.
    pub mode: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Inode number (a rewrite-by-rename changes it).
    pub ino: u64,
}

impl Stat {
    fn of(m: &std::fs::Metadata) -> Stat {
        let kind = if m.is_dir() {
            'd'
        } else if m.is_file() {
            'f'
        } else if m.is_symlink() {
            'l'
        } else {
            '?'
        };
        Stat {
            kind,
            len: if m.is_file() { m.len() } else { 0 },
            mode: m.permissions().mode() & 0o7777,
            mtime: m.modified().expect("mtime"),
            ino: m.ino(),
        }
    }
}

/// The state of a spool tree at one moment, for "nothing changed" checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot(pub BTreeMap<PathBuf, Stat>);

impl Snapshot {
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
                    "  changed: {}\n    before {s:?}\n    after  {a:?}\n",
                    p.display()
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

/// One command of a tool, to build and run.
#[derive(Clone, Debug)]
pub struct Tool {
    name: String,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    umask: Option<u32>,
    user: Option<(u32, u32)>,
}

impl Tool {
    /// A command of tool `name` (`mm-enqueue`, …), with a clean environment as
    /// far as mm is concerned: no `MM_SPOOL`, no test clock.
    pub fn new(name: &str) -> Tool {
        Tool {
            name: name.to_string(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            umask: None,
            user: None,
        }
    }

    /// Uses the spool `s` (through `MM_SPOOL`, so argument order is free).
    pub fn spool(self, s: &TestSpool) -> Tool {
        self.spool_path(s.root())
    }

    /// Uses the spool root `p`, which need not exist.
    pub fn spool_path(self, p: &Path) -> Tool {
        self.env("MM_SPOOL", p)
    }

    /// Pins the tool's clock to `secs` (`MM_TEST_NOW`).
    pub fn now(self, secs: u64) -> Tool {
        self.env("MM_TEST_NOW", secs.to_string())
    }

    /// Sets an environment variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Tool {
        self.env
            .push((k.as_ref().to_owned(), v.as_ref().to_owned()));
        self
    }

    /// Adds an argument.
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Tool {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, A>(mut self, args: I) -> Tool
    where
        I: IntoIterator<Item = A>,
        A: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Feeds `bytes` on standard input (otherwise stdin is /dev/null).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Tool {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs the tool under this umask (through `sh -c 'umask …; exec "$0" "$@"'`,
    /// as Postfix's pipe(8) would).
    pub fn umask(mut self, mask: u32) -> Tool {
        self.umask = Some(mask);
        self
    }

    /// Runs the tool as user `uid` and group `gid`, with no supplementary
    /// groups (through setpriv(1); the tests must run as root to use it).
    pub fn as_user(mut self, uid: u32, gid: u32) -> Tool {
        self.user = Some((uid, gid));
        self
    }

    /// A short rendering of the command line, for messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(m) = self.umask {
            s.push_str(&format!("(umask {m:03o}) "));
        }
        if let Some((u, g)) = self.user {
            s.push_str(&format!("(as {u}:{g}) "));
        }
        for (k, v) in &self.env {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
        s.push_str(&self.name);
        for a in self.args.iter().take(12) {
            s.push_str(&format!(" {:?}", a.to_string_lossy()));
        }
        if self.args.len() > 12 {
            s.push_str(&format!(" … ({} arguments in all)", self.args.len()));
        }
        s
    }

    fn command(&self) -> Command {
        let mut argv: Vec<OsString> = vec![bin(&self.name).into_os_string()];
        argv.extend(self.args.iter().cloned());
        if let Some(m) = self.umask {
            let sh = [
                "sh".into(),
                "-c".into(),
                format!("umask {m:03o}; exec \"$0\" \"$@\"").into(),
            ];
            argv.splice(0..0, sh);
        }
        if let Some((u, g)) = self.user {
            let sp = [
                "setpriv".into(),
                format!("--reuid={u}").into(),
                format!("--regid={g}").into(),
                "--clear-groups".into(),
                "--".into(),
            ];
            argv.splice(0..0, sp);
        }
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for k in ["MM_SPOOL", "MM_TEST_NOW", "MM_TEST_CLOCK_OFFSET", "MM_HOST"] {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Starts the tool without waiting for it (for concurrency tests).
    pub fn spawn(&self) -> Running {
        let mut child = self
            .command()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.describe()));
        let feeder = self.stdin.clone().map(|bytes| {
            let mut pipe = child.stdin.take().expect("piped stdin");
            std::thread::spawn(move || {
                // A tool that fails before reading closes the pipe: not our error.
                let _ = pipe.write_all(&bytes);
            })
        });
        Running {
            cmd: self.describe(),
            tool: self.name.clone(),
            child,
            feeder,
        }
    }

    /// Runs the tool to completion.
    pub fn run(&self) -> Out {
        self.spawn().wait()
    }
}

/// A tool started by [`Tool::spawn`].
#[derive(Debug)]
pub struct Running {
    cmd: String,
    tool: String,
    child: Child,
    feeder: Option<JoinHandle<()>>,
}

impl Running {
    /// Waits for the tool and collects its output.
    pub fn wait(self) -> Out {
        let out = self
            .child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.cmd));
        if let Some(f) = self.feeder {
            f.join().expect("stdin feeder thread");
        }
        Out {
            cmd: self.cmd,
            tool: self.tool,
            status: out.status,
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

/// What a tool did.
#[derive(Clone, Debug)]
pub struct Out {
    /// The command, as described by [`Tool::describe`].
    pub cmd: String,
    /// The tool's name.
    pub tool: String,
    /// Its exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.cmd)?;
        writeln!(f, "status:  {}", self.status)?;
        writeln!(
            f,
            "--- stdout ({} bytes) ---\n{}",
            self.stdout.len(),
            String::from_utf8_lossy(&self.stdout)
        )?;
        write!(
            f,
            "--- stderr ({} bytes) ---\n{}",
            self.stderr.len(),
            String::from_utf8_lossy(&self.stderr)
        )
    }
}

impl Out {
    /// The exit code (panics if the tool was killed by a signal).
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("the tool died of a signal\n{self}"))
    }

    /// Panics, showing everything, unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Out {
        assert!(
            self.code() == code,
            "expected exit code {code}, got {}\n{self}",
            self.code()
        );
        self
    }

    /// [`assert_code`](Out::assert_code)`(0)` with an empty standard error.
    #[track_caller]
    pub fn assert_ok(&self) -> &Out {
        self.assert_code(0);
        assert!(
            self.stderr.is_empty(),
            "success, but something on stderr\n{self}"
        );
        self
    }

    /// Standard output as text.
    pub fn stdout_str(&self) -> String {
        String::from_utf8(self.stdout.clone())
            .unwrap_or_else(|_| panic!("stdout is not UTF-8\n{self}"))
    }

    /// Standard error as text.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Checks that standard error is exactly one line, `mm-TOOL: …\n`, and
    /// returns it without the newline.
    #[track_caller]
    pub fn stderr_one_line(&self) -> String {
        let s = self.stderr_str();
        let prefix = format!("{}: ", self.tool);
        assert!(
            s.ends_with('\n') && s.matches('\n').count() == 1 && !s.contains('\r'),
            "stderr is not exactly one line\n{self}"
        );
        assert!(
            s.starts_with(&prefix),
            "stderr does not start with {prefix:?}\n{self}"
        );
        assert!(
            s.len() > prefix.len() + 1,
            "stderr has no message after {prefix:?}\n{self}"
        );
        s.trim_end_matches('\n').to_string()
    }

    /// The ids printed on standard output, one per line.
    #[track_caller]
    pub fn ids(&self) -> Vec<EntryId> {
        self.stdout_str()
            .lines()
            .map(|l| {
                EntryId::parse(l)
                    .unwrap_or_else(|e| panic!("stdout line {l:?} is not an id: {e}\n{self}"))
            })
            .collect()
    }

    /// The single id printed on standard output.
    #[track_caller]
    pub fn id(&self) -> EntryId {
        let ids = self.ids();
        assert!(ids.len() == 1, "expected one id, got {}\n{self}", ids.len());
        ids[0]
    }

    /// Standard output as JSON Lines.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_str()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}\n{self}"))
            })
            .collect()
    }
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
