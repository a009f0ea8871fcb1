//! System plumbing for `cargo xtask cluster`: commands with a time limit
//! that a Ctrl-C cuts short (so the run still unmounts and stops glusterd),
//! polling, and the build of the tools. The other chores run commands with
//! the test kit's `Tool` (`mm_e2e`); the cluster keeps this runner because it
//! builds `std::process::Command`s (faketime wrappers, a runner's log as its
//! output) and its children must get the terminal's Ctrl-C, which `Tool`'s
//! own process groups keep from them.

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

/// Builds `tools` with the cargo that runs us; returns their directory.
pub fn build(root: &Path, tools: &[&str]) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).args(["build", "--quiet"]);
    for t in tools {
        cmd.args(["-p", t]);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", shown(&cmd)))?;
    check_interrupted()?;
    if !status.success() {
        bail!("{} failed ({status})", shown(&cmd));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug"))
}
