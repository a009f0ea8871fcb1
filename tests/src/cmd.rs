//! The one command builder of the tests (ripgrep's `TestCommand`, uutils'
//! `UCommand`): [`Tool`] builds a command of one tool; [`Tool::run`] runs it
//! to completion under a timeout, [`Tool::spawn`] starts it in the background
//! as a [`Running`] with a pid that can be signalled, killed and waited for.
//!
//! Every child gets its own process group, so that a timeout kills the tool
//! and whatever it started (a wrapper such as strace or setpriv, a shell, a
//! stage). Its standard output and error go to files (never a pipe nobody
//! drains: a grandchild that outlives the tool would keep a pipe open), which
//! can be read while it runs.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mm_core::EntryId;

/// The environment variables of mm that a test never inherits.
const MM_ENV: [&str; 5] = [
    "MM_SPOOL",
    "MM_TEST_NOW",
    "MM_TEST_CLOCK_OFFSET",
    "MM_TEST_CRASH_AT",
    "MM_HOST",
];

/// How long [`Tool::run`] waits unless told otherwise ([`Tool::timeout`]):
/// long enough for a loaded machine, short enough that a hang fails the
/// test instead of the whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// What a child gets on standard input.
#[derive(Clone, Debug)]
enum Input {
    /// `/dev/null`.
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// `y\n` forever, until the child closes the pipe (like `yes |`).
    Endless,
}

/// The user a tool runs as (through setpriv(1); the tests must be root).
#[derive(Clone, Copy, Debug)]
struct User {
    uid: u32,
    gid: u32,
    /// Supplementary groups from /etc/group, or none.
    init_groups: bool,
}

/// One command of a tool, to build and run.
#[derive(Clone, Debug)]
pub struct Tool {
    name: String,
    /// A program that is not one of the tools ([`Tool::program`]).
    program: Option<PathBuf>,
    wrap: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    input: Input,
    umask: Option<u32>,
    user: Option<User>,
    cwd: Option<PathBuf>,
    stderr_to: Option<PathBuf>,
    timeout: Duration,
}

impl Tool {
    /// A command of tool `name` (`mm-enqueue`, …), with a clean environment as
    /// far as mm is concerned: no `MM_SPOOL`, no test clock.
    pub fn new(name: &str) -> Tool {
        Tool {
            name: name.to_string(),
            program: None,
            wrap: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            input: Input::Null,
            umask: None,
            user: None,
            cwd: None,
            stderr_to: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A command of any other program (`postfix`, `getent`, …): the same
    /// timeout, process group, input and output handling as a tool's. A
    /// bare name is looked up in `$PATH`.
    pub fn program(path: impl AsRef<Path>) -> Tool {
        let path = path.as_ref();
        let name = path
            .file_name()
            .map_or_else(|| path.to_string_lossy(), |n| n.to_string_lossy())
            .into_owned();
        Tool {
            program: Some(path.to_path_buf()),
            ..Tool::new(&name)
        }
    }

    /// Uses the spool `s` (through `MM_SPOOL`, so argument order is free).
    pub fn spool(self, s: &crate::TestSpool) -> Tool {
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

    /// Sets environment variables.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Tool {
        for (k, v) in vars {
            self = self.env(k, v);
        }
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
        self.input = Input::Bytes(bytes.into());
        self
    }

    /// Feeds `y\n` on standard input until the tool closes it.
    pub fn endless_stdin(mut self) -> Tool {
        self.input = Input::Endless;
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
    /// The binary is then a copy that every user can run ([`crate::bin_for_all`]):
    /// the build's own may sit in a home directory of mode 0700.
    pub fn as_user(mut self, uid: u32, gid: u32) -> Tool {
        self.user = Some(User {
            uid,
            gid,
            init_groups: false,
        });
        self
    }

    /// [`as_user`](Tool::as_user) with the user's supplementary groups from
    /// /etc/group (`setpriv --init-groups`).
    pub fn as_user_with_groups(mut self, uid: u32, gid: u32) -> Tool {
        self.user = Some(User {
            uid,
            gid,
            init_groups: true,
        });
        self
    }

    /// Runs the tool behind `wrap` (e.g. `strace … --`).
    pub fn wrap(mut self, wrap: Vec<OsString>) -> Tool {
        self.wrap = wrap;
        self
    }

    /// Runs the tool in directory `dir`.
    pub fn cwd(mut self, dir: &Path) -> Tool {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Sends standard error to `file` (opened for writing, not truncated).
    pub fn stderr_to(mut self, file: &Path) -> Tool {
        self.stderr_to = Some(file.to_path_buf());
        self
    }

    /// Fails (after killing the process group) if the tool runs longer than `d`.
    pub fn timeout(mut self, d: Duration) -> Tool {
        self.timeout = d;
        self
    }

    /// The whole argument vector: user switch, umask, wrapper, tool, arguments.
    fn argv(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(u) = self.user {
            argv.extend(
                [
                    "setpriv".to_string(),
                    format!("--reuid={}", u.uid),
                    format!("--regid={}", u.gid),
                    if u.init_groups {
                        "--init-groups"
                    } else {
                        "--clear-groups"
                    }
                    .to_string(),
                    "--".into(),
                ]
                .map(OsString::from),
            );
        }
        if let Some(m) = self.umask {
            argv.extend(
                [
                    "sh".to_string(),
                    "-c".into(),
                    format!("umask {m:03o}; exec \"$0\" \"$@\""),
                ]
                .map(OsString::from),
            );
        }
        argv.extend(self.wrap.iter().cloned());
        argv.push(if let Some(p) = &self.program {
            p.clone().into_os_string()
        } else if self.user.is_some() {
            crate::bin_for_all(&self.name).into_os_string()
        } else {
            crate::bin(&self.name).into_os_string()
        });
        argv.extend(self.args.iter().cloned());
        argv
    }

    /// A short rendering of the command line, for messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.env {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
        let argv = self.argv();
        for a in argv.iter().take(16) {
            let a = a.to_string_lossy();
            if a.len() > 80 {
                s.push_str(&format!("{:?}… ", &a[..a.floor_char_boundary(80)]));
            } else {
                s.push_str(&format!("{a:?} "));
            }
        }
        if argv.len() > 16 {
            s.push_str(&format!("… ({} arguments in all) ", argv.len()));
        }
        if let Some(d) = &self.cwd {
            s.push_str(&format!("(in {})", d.display()));
        }
        s.trim_end().to_string()
    }

    /// Starts the tool without waiting for it (concurrency tests, signals).
    #[track_caller]
    pub fn spawn(&self) -> Running {
        self.try_spawn().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`spawn`](Tool::spawn), with a failure to start as an error (for
    /// callers that report rather than panic: xtask).
    pub fn try_spawn(&self) -> Result<Running, String> {
        let argv = self.argv();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        for k in MM_ENV {
            cmd.env_remove(k);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        cmd.stdin(match self.input {
            Input::Null => Stdio::null(),
            _ => Stdio::piped(),
        });
        let stdout = Capture::new();
        cmd.stdout(stdout.writer());
        let stderr = match &self.stderr_to {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(p)
                    .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
                cmd.stderr(f);
                None
            }
            None => {
                let c = Capture::new();
                cmd.stderr(c.writer());
                Some(c)
            }
        };
        // Its own process group, so that a timeout kills the wrapper and the tool.
        cmd.process_group(0);
        let describe = self.describe();
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {describe}: {e}"))?;
        let feeder = child.stdin.take().map(|mut pipe| {
            let input = self.input.clone();
            std::thread::spawn(move || -> u64 {
                match input {
                    Input::Null => 0,
                    Input::Bytes(b) => {
                        // A tool that refuses before reading closes the pipe: not our error.
                        let _ = pipe.write_all(&b);
                        b.len() as u64
                    }
                    Input::Endless => {
                        let chunk = b"y\n".repeat(32 * 1024);
                        let mut n = 0u64;
                        while pipe.write_all(&chunk).is_ok() {
                            n += chunk.len() as u64;
                        }
                        n
                    }
                }
            })
        });
        Ok(Running {
            cmd: describe,
            tool: self.name.clone(),
            child,
            reaped: None,
            feeder,
            stdout,
            stderr,
            started,
            timeout: self.timeout,
        })
    }

    /// Runs the tool to completion; panics (after killing its process group)
    /// if it takes longer than the timeout.
    #[track_caller]
    pub fn run(&self) -> Out {
        self.spawn().wait()
    }

    /// [`run`](Tool::run), with a failure to start or a timeout (the
    /// process group killed) as an error instead of a panic; any exit
    /// status is a result.
    pub fn try_run(&self) -> Result<Out, String> {
        let mut running = self.try_spawn()?;
        let left = running.timeout.saturating_sub(running.started.elapsed());
        running.try_wait_within(left)?;
        Ok(running.wait())
    }

    /// [`try_run`](Tool::try_run), and an error unless it exits 0; the
    /// error names the command, its status and its standard error.
    pub fn run_ok(&self) -> Result<Out, String> {
        let out = self.try_run()?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                out.cmd,
                out.status,
                crate::one_line(&out.stderr_str())
            ));
        }
        Ok(out)
    }

    /// [`run`](Tool::run), also telling how long it took and how much of
    /// its standard input it took.
    pub fn run_timed(&self) -> Ran {
        self.spawn().wait_timed()
    }
}

/// An output file of a child: written by the child through its own open
/// file description, read through another, so reading never moves the
/// child's offset.
#[derive(Debug)]
struct Capture(tempfile::NamedTempFile);

impl Capture {
    fn new() -> Capture {
        Capture(
            tempfile::Builder::new()
                .prefix("mm-e2e-out-")
                .tempfile()
                .expect("cannot create a temporary file"),
        )
    }

    fn writer(&self) -> std::fs::File {
        self.0.reopen().expect("cannot reopen a temporary file")
    }

    fn read(&self) -> Vec<u8> {
        std::fs::read(self.0.path()).unwrap_or_default()
    }
}

/// A tool started by [`Tool::spawn`]: killed (with its process group) on
/// drop if it is still running.
#[derive(Debug)]
pub struct Running {
    cmd: String,
    tool: String,
    child: Child,
    reaped: Option<ExitStatus>,
    feeder: Option<JoinHandle<u64>>,
    stdout: Capture,
    stderr: Option<Capture>,
    started: Instant,
    timeout: Duration,
}

/// What [`Tool::run_timed`] tells.
#[derive(Debug)]
pub struct Ran {
    /// What the tool did.
    pub out: Out,
    /// Bytes written to its standard input before it closed it.
    pub fed: u64,
    /// How long it ran.
    pub took: Duration,
}

impl Running {
    /// The process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends signal `sig` (`TERM`, `KILL`, …) to the tool alone, with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -s {sig} {} failed", self.pid());
    }

    /// SIGKILL to the tool alone (not its process group: what a tool leaves
    /// behind when killed is what some tests look at), and reap it.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.reaped {
            return st;
        }
        let _ = self.child.kill();
        let st = self.child.wait().expect("wait for a killed child");
        self.reaped = Some(st);
        st
    }

    /// SIGKILL to the whole process group, then reap the tool.
    fn kill_group(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pid())])
            .status();
        self.kill();
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().expect("try_wait");
        }
        self.reaped
    }

    /// Waits at most `within` for it to exit; kills its process group and
    /// fails after that.
    #[track_caller]
    pub fn wait_within(&mut self, within: Duration) -> ExitStatus {
        self.try_wait_within(within)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`wait_within`](Running::wait_within), with the hang as an error.
    pub fn try_wait_within(&mut self, within: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.try_status() {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                self.kill_group();
                return Err(format!(
                    "{} did not finish within {within:?} and was killed: it hangs\n{}",
                    self.cmd,
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits (at most the command's timeout) and collects its output.
    #[track_caller]
    pub fn wait(self) -> Out {
        self.wait_timed().out
    }

    /// [`wait`](Running::wait), also telling how long it ran and how much
    /// of its standard input it took.
    #[track_caller]
    pub fn wait_timed(mut self) -> Ran {
        let left = self.timeout.saturating_sub(self.started.elapsed());
        let status = self.wait_within(left);
        let took = self.started.elapsed();
        let fed = self
            .feeder
            .take()
            .map_or(0, |f| f.join().expect("stdin feeder thread"));
        Ran {
            out: Out {
                cmd: self.cmd.clone(),
                tool: self.tool.clone(),
                status,
                stdout: self.stdout.read(),
                stderr: self.stderr.as_ref().map(Capture::read).unwrap_or_default(),
            },
            fed,
            took,
        }
    }

    /// Its standard error so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.as_ref().map(Capture::read).unwrap_or_default())
            .into_owned()
    }

    /// Its command line, standard output and standard error so far, for messages.
    pub fn output(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.cmd,
            String::from_utf8_lossy(&self.stdout.read()),
            self.stderr()
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            self.kill_group();
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
