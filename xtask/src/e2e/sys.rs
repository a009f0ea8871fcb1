//! System plumbing for the end-to-end run: commands with a time limit,
//! polling, Ctrl-C, and the system user and group of the pipe.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Set by SIGINT or SIGTERM: every wait checks it, so an interrupted run
/// still stops its Postfix and removes what it made (the guards' `Drop`).
static INTERRUPTED: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Set once the cleanup has begun: from then on an interruption no longer
/// cuts waits short (stopping Postfix must be waited for).
static CLEANING: AtomicBool = AtomicBool::new(false);

/// Catches SIGINT and SIGTERM from now on. Without this, Ctrl-C would kill
/// the run at once and leave the private Postfix running (it is a daemon,
/// in its own session, so it does not get the terminal's signal). A second
/// signal still ends the run at once.
pub fn catch_interrupts() -> anyhow::Result<()> {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Order matters: the shutdown check runs before the flag is set.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(flag))
            .context("cannot catch signals")?;
        signal_hook::flag::register(sig, Arc::clone(flag)).context("cannot catch signals")?;
    }
    Ok(())
}

/// Fails if the run was interrupted (and is not cleaning up yet).
pub fn check_interrupted() -> anyhow::Result<()> {
    if CLEANING.load(Ordering::Relaxed) {
        return Ok(());
    }
    match INTERRUPTED.get() {
        Some(flag) if flag.load(Ordering::Relaxed) => bail!("interrupted"),
        _ => Ok(()),
    }
}

/// The cleanup begins: waits and commands run to their end from now on,
/// even after Ctrl-C.
pub fn begin_cleanup() {
    CLEANING.store(true, Ordering::Relaxed);
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `within`.
/// An error from `probe` ends the wait at once.
pub fn wait_until<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + within;
    loop {
        check_interrupted()?;
        if let Some(v) = probe()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {} s waiting for {what}", within.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a command ended, and what it printed.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// Standard output as text (lossy).
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (lossy), trimmed.
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_string()
    }
}

/// Runs `cmd` with `stdin` as its input, killing it (and failing) after
/// `timeout`. A failed exit status is not an error here; see [`run_ok`].
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> anyhow::Result<Finished> {
    let shown = shown(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    // Feed and drain in threads, so a command that writes a lot before it
    // reads (or the other way round) never blocks on a full pipe.
    let input = child.stdin.take().map(|mut w| {
        let data = stdin.to_vec();
        // A command that exits without reading gives EPIPE; its status tells.
        std::thread::spawn(move || {
            let _ = w.write_all(&data);
        })
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("cannot wait for {shown}"))?
        {
            break status;
        }
        let interrupted = check_interrupted();
        if interrupted.is_err() || Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            interrupted?;
            bail!(
                "{shown} did not finish within {} s; killed",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(t) = input {
        let _ = t.join();
    }
    Ok(Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// [`run`], failing unless the command exits 0.
pub fn run_ok(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> anyhow::Result<Finished> {
    let done = run(cmd, stdin, timeout)?;
    if !done.status.success() {
        bail!(
            "{} failed ({}): {}",
            shown(cmd),
            done.status,
            one_line(&done.err())
        );
    }
    Ok(done)
}

/// The command line of `cmd`, for messages (after 12 arguments, only how
/// many more: sendmail gets 120 recipients).
pub fn shown(cmd: &Command) -> String {
    const SHOWN_ARGS: usize = 12;
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    let more = cmd.get_args().len().saturating_sub(SHOWN_ARGS);
    for a in cmd.get_args().take(SHOWN_ARGS) {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$*<>|{}".contains(c)) {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    if more > 0 {
        s.push_str(&format!(" ... ({more} more)"));
    }
    s
}

/// `text` on one line, for error messages.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Reads `r` to its end in a thread.
fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// A program of Postfix's, from `/usr/sbin` (where Debian puts them, and
/// which is not in a non-root `$PATH`) or else from `$PATH`.
pub fn postfix_program(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = vec![Path::new("/usr/sbin").join(name)];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} is not installed (not in /usr/sbin nor in $PATH): install Debian's \
             postfix package (apt-get install postfix), as .ci/run does"
            )
        })
}

/// A user's or group's numeric id from the system's databases (`getent`,
/// so NSS sources count too), or `None` if there is no such name.
pub fn lookup_id(database: &str, name: &str) -> anyhow::Result<Option<u32>> {
    let done = run(
        Command::new("getent").args([database, name]),
        b"",
        Duration::from_secs(10),
    )?;
    // getent: 2 is "no such key".
    if done.status.code() == Some(2) {
        return Ok(None);
    }
    if !done.status.success() {
        bail!("getent {database} {name} failed ({})", done.status);
    }
    let out = done.out();
    // passwd: name:x:UID:GID:...   group: name:x:GID:members
    let id = out
        .split(':')
        .nth(2)
        .and_then(|f| f.trim().parse().ok())
        .with_context(|| format!("getent {database} {name} printed {out:?}"))?;
    Ok(Some(id))
}

/// The pipe's system user and its group, made if missing and removed at the
/// end if this run made them: a second run, or a run after a killed one,
/// finds either nothing or what it can reuse.
pub struct PipeAccount {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    made_user: bool,
    made_group: bool,
}

impl PipeAccount {
    /// Makes sure `user` and `group` exist (a system user with no home and
    /// no login shell, as a package would make it).
    pub fn ensure(user: &str, group: &str) -> anyhow::Result<PipeAccount> {
        let timeout = Duration::from_secs(30);
        let mut made_group = false;
        let gid = match lookup_id("group", group)? {
            Some(gid) => gid,
            None => {
                run_ok(
                    Command::new("groupadd").args(["--system", group]),
                    b"",
                    timeout,
                )?;
                made_group = true;
                lookup_id("group", group)?
                    .with_context(|| format!("groupadd made no group {group}"))?
            }
        };
        // Built before useradd so that a failure there still removes the group.
        let mut account = PipeAccount {
            user: user.to_string(),
            group: group.to_string(),
            uid: 0,
            gid,
            made_user: false,
            made_group,
        };
        account.uid = match lookup_id("passwd", user)? {
            Some(uid) => uid,
            None => {
                run_ok(
                    Command::new("useradd").args([
                        "--system",
                        "--gid",
                        group,
                        "--no-create-home",
                        "--home-dir",
                        "/nonexistent",
                        "--shell",
                        "/usr/sbin/nologin",
                        user,
                    ]),
                    b"",
                    timeout,
                )?;
                account.made_user = true;
                lookup_id("passwd", user)?
                    .with_context(|| format!("useradd made no user {user}"))?
            }
        };
        Ok(account)
    }

    /// Removes the user and group if this run made them.
    pub fn remove(&mut self) -> anyhow::Result<()> {
        begin_cleanup();
        let timeout = Duration::from_secs(30);
        if self.made_user {
            run_ok(Command::new("userdel").arg(&self.user), b"", timeout)?;
            self.made_user = false;
        }
        if self.made_group {
            run_ok(Command::new("groupdel").arg(&self.group), b"", timeout)?;
            self.made_group = false;
        }
        Ok(())
    }
}

impl Drop for PipeAccount {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("e2e: warning: {e:#}");
        }
    }
}
