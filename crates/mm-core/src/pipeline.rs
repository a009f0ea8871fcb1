//! Pipeline stages: commands a runner passes each entry through (seed 001).
//!
//! A stage runs `sh -c CMD` with the message on standard input and the entry's
//! envelope in the environment (`MM_ID`, `MM_QUEUE`, `MM_SENDER`,
//! `MM_RECIPIENTS` space-separated, `MM_LIST`, `MM_STAGE`, `MM_ATTEMPTS`).
//! `--exec` stages only act; a `--filter` stage's standard output becomes the
//! new message. Exit 0 goes on, 75 (`EX_TEMPFAIL`) defers the entry, anything
//! else sends it to shunt/ with the tail of the command's standard error as
//! the reason. A command killed from outside (SIGTERM, SIGINT, SIGHUP, SIGKILL,
//! SIGPIPE: a stop sent to the whole process group, the OOM killer) defers the
//! entry (so does a shell reporting such a death as exit 128+N); one that
//! crashes by itself (SIGSEGV, SIGABRT, ...) shunts it. The index of the first
//! stage not yet done is saved in the entry after each stage, so a deferred or crashed
//! entry resumes there and a stage that succeeded is not run again.
//!
//! **Processes.** Each stage runs in a process group of its own. The stage is
//! over when its shell exits; whatever it left running (a background child)
//! is killed then, so no process of a stage outlives it or holds its pipes
//! open. A stage still running after the stage timeout (`--stage-timeout`,
//! 1000 s by default like Postfix pipe(8)'s `command_time_limit`), or at a
//! stop once the stop grace has passed, gets SIGTERM, and SIGKILL
//! [`KILL_GRACE`] later, sent to its whole group. A timeout defers the entry
//! with the reason; the [`MAX_TIMEOUTS`]-th timeout in a row shunts it (the
//! count is kept in the entry, `Meta::stage_timeouts`, and starts again when
//! a run of the stage ends by itself).
//!
//! **Dying with the runner.** A runner killed with SIGKILL cannot kill its
//! stages, so a binary may name a *guard* ([`set_guard`]): the runner starts
//! `GUARD --stage-guard RUNNER_PID -- /bin/sh -c CMD` instead of the shell.
//! The guard (mm-runq itself in a hidden mode) asks the kernel for a signal
//! when its parent dies (`PR_SET_PDEATHSIG`), then checks that its parent is
//! still the runner (closing the race with a runner that died first), runs
//! the shell in its own process group with the same standard input, output
//! and error, and exits as the shell did (the same code, or the same signal).
//! When the runner dies, the guard kills the whole group, itself included.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

use crate::entry::Entry;

/// Longest stderr tail kept as a reason.
const TAIL: usize = 1024;

/// The default stage timeout (Postfix pipe(8)'s `command_time_limit`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1000);

/// Between the SIGTERM and the SIGKILL sent to a stage's process group.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Timeouts in a row after which an entry is shunted rather than deferred.
pub const MAX_TIMEOUTS: u32 = 3;

/// The first argument of a guard's command line (see the module notes).
pub const GUARD_FLAG: &str = "--stage-guard";

static GUARD: OnceLock<OsString> = OnceLock::new();

/// Makes every later stage of this process start under the guard `program`
/// (`program --stage-guard RUNNER_PID -- /bin/sh -c CMD`). Set once, by the
/// binary, before the runner starts; a later call is ignored. Without a guard
/// a stage's processes still die at a timeout and at a stop, but not with a
/// runner killed by SIGKILL.
pub fn set_guard(program: impl Into<OsString>) {
    let _ = GUARD.set(program.into());
}

/// What a stage does with the command's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StageKind {
    /// Runs the command; its output is ignored.
    Exec,
    /// Runs the command; its standard output replaces the message.
    Filter,
}

/// One stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// Exec or filter.
    pub kind: StageKind,
    /// The shell command.
    pub command: String,
}

impl Stage {
    /// How the stage is named in logs and reasons.
    pub fn label(&self, index: usize) -> String {
        let kind = match self.kind {
            StageKind::Exec => "exec",
            StageKind::Filter => "filter",
        };
        format!("stage {} ({kind} {:?})", index + 1, self.command)
    }
}

/// What a stage decided.
#[derive(Debug, PartialEq, Eq)]
pub enum StageOutcome {
    /// Go on; a filter gives the new message.
    Continue(Option<Vec<u8>>),
    /// Exit 75: defer the entry, with the reason.
    Defer(String),
    /// Anything else: shunt the entry, with the reason.
    Shunt(String),
}

/// Why the runner ended a stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// It ran longer than the stage timeout.
    Timeout,
    /// The runner was stopping and the grace ran out.
    Stop,
}

/// How long a stage may run, and when a stop ends it.
struct Limits<'a> {
    stop: &'a AtomicBool,
    grace: Duration,
    timeout: Duration,
}

/// Runs stage `index` on `entry` in `queue`. The command's process group is
/// killed if it runs longer than `timeout`, or if `stop` is still set when
/// `grace` has passed after it was set. Only the entry's count of timeouts in
/// a row (`meta.stage_timeouts`) is changed; the caller saves it.
pub fn run_stage(
    stage: &Stage,
    index: usize,
    entry: &mut Entry,
    queue: &str,
    stop: &AtomicBool,
    grace: Duration,
    timeout: Duration,
) -> StageOutcome {
    let limits = Limits {
        stop,
        grace,
        timeout,
    };
    let label = stage.label(index);
    let (ended, outcome) = match run_command(stage, index, &label, entry, queue, &limits) {
        Ok(run) => run,
        // Not started: nothing is known of the stage, the count stays.
        Err(outcome) => return outcome,
    };
    match (ended, outcome) {
        (Some(Ended::Timeout), StageOutcome::Defer(reason)) => {
            entry.meta.stage_timeouts += 1;
            let n = entry.meta.stage_timeouts;
            if n >= MAX_TIMEOUTS {
                // A fresh count if an admin sends it back (mm-unbad).
                entry.meta.stage_timeouts = 0;
                StageOutcome::Shunt(format!("{reason} ({n} times in a row)"))
            } else {
                StageOutcome::Defer(reason)
            }
        }
        // A stop says nothing about the stage: the count stays as it was.
        (Some(_), outcome) => outcome,
        (None, outcome) => {
            entry.meta.stage_timeouts = 0;
            outcome
        }
    }
}

/// `1000s`, or humantime's form for a duration with a fraction of a second.
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// Runs the command: why the runner ended it, if it did, and the outcome;
/// `Err` with the outcome if it could not be started.
fn run_command(
    stage: &Stage,
    index: usize,
    label: &str,
    entry: &Entry,
    queue: &str,
    limits: &Limits<'_>,
) -> Result<(Option<Ended>, StageOutcome), StageOutcome> {
    let rcpts: Vec<&str> = entry
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    let mut cmd = match GUARD.get() {
        Some(guard) => {
            let mut c = Command::new(guard);
            c.arg(GUARD_FLAG)
                .arg(std::process::id().to_string())
                .arg("--")
                .arg("/bin/sh");
            c
        }
        None => Command::new("/bin/sh"),
    };
    cmd.arg("-c")
        .arg(&stage.command)
        .env("MM_ID", &entry.id)
        .env("MM_QUEUE", queue)
        .env("MM_SENDER", &entry.sender)
        .env("MM_RECIPIENTS", rcpts.join(" "))
        .env("MM_LIST", entry.meta.list.as_deref().unwrap_or(""))
        .env("MM_STAGE", (index + 1).to_string())
        .env("MM_ATTEMPTS", entry.meta.attempts.to_string())
        // Its own group: a timeout or a stop kills all of it, and a signal
        // to the runner's group (Ctrl-C) is the runner's to handle.
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(if stage.kind == StageKind::Filter {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // Cannot even start a shell: a local, probably passing problem.
        Err(e) => {
            return Err(StageOutcome::Defer(format!("{label}: cannot start: {e}")));
        }
    };
    let started = Instant::now();
    let group = Pid::from_child(&child);
    let message = entry.message.clone();
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A command that does not read its input is fine.
            let _ = s.write_all(&message);
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let mut stop_seen: Option<Instant> = None;
    let mut ended: Option<(Ended, Instant)> = None;
    loop {
        // NOWAIT: the exited leader stays a zombie, so its pid still names
        // the group when the rest of it is killed below.
        match rustix::process::waitid(
            WaitId::Pid(group),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ) {
            Ok(Some(_)) => break,
            Ok(None) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(_) => break,
        }
        match ended {
            Some((_, at)) => {
                if at.elapsed() >= KILL_GRACE {
                    let _ = rustix::process::kill_process_group(group, Signal::KILL);
                }
            }
            None => {
                let why = if started.elapsed() >= limits.timeout {
                    Some(Ended::Timeout)
                } else if limits.stop.load(Ordering::Relaxed) {
                    let t = *stop_seen.get_or_insert_with(Instant::now);
                    (t.elapsed() >= limits.grace).then_some(Ended::Stop)
                } else {
                    None
                };
                if let Some(why) = why {
                    let _ = rustix::process::kill_process_group(group, Signal::TERM);
                    ended = Some((why, Instant::now()));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The stage is over: what it left running goes too, so that nothing of it
    // outlives it and its pipes close.
    let _ = rustix::process::kill_process_group(group, Signal::KILL);
    let status = child.wait();
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let tail = stderr_tail(&err);
    let ended = ended.map(|(why, _)| why);
    let outcome = match (ended, status) {
        (Some(Ended::Timeout), _) => StageOutcome::Defer(format!(
            "{label} timed out after {}{tail}",
            format_duration(limits.timeout)
        )),
        (Some(Ended::Stop), _) => {
            StageOutcome::Defer(format!("{label} stopped by runner shutdown"))
        }
        (None, Err(e)) => StageOutcome::Defer(format!("{label}: cannot wait: {e}")),
        (None, Ok(st)) => match st.code() {
            Some(0) => StageOutcome::Continue((stage.kind == StageKind::Filter).then_some(out)),
            Some(75) => StageOutcome::Defer(format!("{label} deferred (exit 75){tail}")),
            Some(c) if c > 128 && is_outside_kill(c - 128) => StageOutcome::Defer(format!(
                "{label} killed by signal {} (exit {c}){tail}",
                c - 128
            )),
            Some(c) => StageOutcome::Shunt(format!("{label} failed with exit {c}{tail}")),
            // Killed from outside (a stop sent to the whole process group, the
            // OOM killer, an admin): nothing is wrong with the message, so it
            // waits; a command that crashes by itself (SIGSEGV, SIGABRT) shunts it.
            None => match st.signal() {
                Some(sig) if is_outside_kill(sig) => {
                    StageOutcome::Defer(format!("{label} killed by signal {sig}{tail}"))
                }
                Some(sig) => StageOutcome::Shunt(format!("{label} killed by signal {sig}{tail}")),
                None => StageOutcome::Shunt(format!("{label} ended without a status{tail}")),
            },
        },
    };
    Ok((ended, outcome))
}

/// Signals that come from outside the command rather than from a bug in it.
fn is_outside_kill(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGTERM | libc::SIGINT | libc::SIGHUP | libc::SIGKILL | libc::SIGPIPE
    )
}

fn stderr_tail(err: &[u8]) -> String {
    let text = String::from_utf8_lossy(err);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text.len().saturating_sub(TAIL);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    format!(
        ": {}",
        text[start..]
            .split(['\n', '\r'])
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" / ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryId;

    fn entry() -> Entry {
        Entry::new(
            &EntryId::from_parts(1, [1; 20]),
            "s@example.org",
            &["r@example.org".into()],
            b"hello\n".to_vec(),
            "in",
        )
    }

    fn run(kind: StageKind, cmd: &str) -> StageOutcome {
        run_on(&mut entry(), kind, cmd, Duration::from_secs(10))
    }

    fn run_on(e: &mut Entry, kind: StageKind, cmd: &str, timeout: Duration) -> StageOutcome {
        let stop = AtomicBool::new(false);
        run_stage(
            &Stage {
                kind,
                command: cmd.into(),
            },
            1,
            e,
            "in",
            &stop,
            Duration::from_secs(1),
            timeout,
        )
    }

    fn alive(pid: i32) -> bool {
        // A zombie is dead for this purpose: it runs nothing.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    /// Whether `pid` is gone within a few seconds (SIGKILL is sure, not instant).
    fn gone(pid: i32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    fn pids(path: &std::path::Path) -> Vec<i32> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    #[test]
    fn a_hanging_stage_times_out_with_its_children_and_the_third_time_shunts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pids");
        let cmd = format!(
            "sleep 1000 & echo $! >> {f}; echo $$ >> {f}; echo waiting >&2; sleep 1000",
            f = file.display()
        );
        let mut e = entry();
        let t = Duration::from_millis(300);
        for n in 1..=MAX_TIMEOUTS {
            let started = Instant::now();
            let out = run_on(&mut e, StageKind::Filter, &cmd, t);
            assert!(started.elapsed() < Duration::from_secs(5), "{out:?}");
            let recorded = pids(&file);
            assert_eq!(recorded.len() as u32, 2 * n, "{recorded:?}");
            for p in recorded {
                assert!(gone(p), "pid {p} of the stage is still running");
            }
            match (n, out) {
                (n, StageOutcome::Defer(r)) if n < MAX_TIMEOUTS => {
                    assert!(
                        r.contains("stage 2") && r.contains("timed out after 300ms"),
                        "{r}"
                    );
                    assert!(r.contains("waiting"), "the stderr tail is kept: {r}");
                    assert_eq!(e.meta.stage_timeouts, n);
                }
                (_, StageOutcome::Shunt(r)) => {
                    assert!(
                        r.contains("timed out") && r.contains("3 times in a row"),
                        "{r}"
                    );
                    assert_eq!(e.meta.stage_timeouts, 0, "a fresh count after the shunt");
                }
                (n, o) => panic!("run {n}: {o:?}"),
            }
        }
        // A run that ends by itself starts the count again.
        e.meta.stage_timeouts = 2;
        assert_eq!(
            run_on(&mut e, StageKind::Exec, "true", t),
            StageOutcome::Continue(None)
        );
        assert_eq!(e.meta.stage_timeouts, 0);
    }

    #[test]
    fn what_a_stage_leaves_running_dies_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pids");
        // The background child keeps stdout open: without the group kill the
        // runner would wait for it forever.
        let cmd = format!("sleep 1000 & echo $! > {}; echo done", file.display());
        let started = Instant::now();
        let out = run_on(
            &mut entry(),
            StageKind::Filter,
            &cmd,
            Duration::from_secs(30),
        );
        assert_eq!(out, StageOutcome::Continue(Some(b"done\n".to_vec())));
        assert!(started.elapsed() < Duration::from_secs(5));
        let recorded = pids(&file);
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        for p in recorded {
            assert!(gone(p), "pid {p} outlived its stage");
        }
    }

    #[test]
    fn a_stop_kills_the_stage_and_keeps_the_count() {
        let stop = AtomicBool::new(true);
        let mut e = entry();
        e.meta.stage_timeouts = 1;
        let out = run_stage(
            &Stage {
                kind: StageKind::Exec,
                command: "sleep 1000".into(),
            },
            0,
            &mut e,
            "in",
            &stop,
            Duration::from_millis(100),
            Duration::from_secs(100),
        );
        match out {
            StageOutcome::Defer(r) => assert!(r.contains("stopped by runner shutdown"), "{r}"),
            o => panic!("{o:?}"),
        }
        assert_eq!(e.meta.stage_timeouts, 1);
    }

    #[test]
    fn exit_codes_decide_the_outcome() {
        assert_eq!(
            run(StageKind::Exec, "cat >/dev/null"),
            StageOutcome::Continue(None)
        );
        assert_eq!(
            run(StageKind::Filter, "tr a-z A-Z"),
            StageOutcome::Continue(Some(b"HELLO\n".to_vec()))
        );
        match run(StageKind::Exec, "echo busy >&2; exit 75") {
            StageOutcome::Defer(r) => assert!(r.contains("stage 2") && r.contains("busy"), "{r}"),
            o => panic!("{o:?}"),
        }
        match run(
            StageKind::Exec,
            "echo first >&2; echo 'spam score 99' >&2; exit 3",
        ) {
            StageOutcome::Shunt(r) => {
                assert!(r.contains("exit 3") && r.contains("spam score 99"), "{r}")
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn a_stage_killed_from_outside_defers_and_one_that_crashes_shunts() {
        assert!(matches!(
            run(StageKind::Exec, "kill -TERM $$"),
            StageOutcome::Defer(_)
        ));
        // A shell reporting its child's death as 128+N. KILL, because the
        // test may run with HUP ignored (nohup) and INT is ignored by `&` jobs.
        assert!(matches!(
            run(StageKind::Exec, "sleep 5 & kill -KILL $!; wait $!"),
            StageOutcome::Defer(_)
        ));
        match run(StageKind::Exec, "kill -SEGV $$") {
            StageOutcome::Shunt(r) => assert!(r.contains("signal 11"), "{r}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn the_envelope_is_in_the_environment() {
        let out = run(
            StageKind::Filter,
            "printf '%s|%s|%s|%s' \"$MM_SENDER\" \"$MM_RECIPIENTS\" \"$MM_QUEUE\" \"$MM_STAGE\"",
        );
        assert_eq!(
            out,
            StageOutcome::Continue(Some(b"s@example.org|r@example.org|in|2".to_vec()))
        );
    }
}
