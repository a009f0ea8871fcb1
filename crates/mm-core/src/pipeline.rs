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

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::entry::Entry;

/// Longest stderr tail kept as a reason.
const TAIL: usize = 1024;

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

/// Runs stage `index` on `entry` in `queue`. The command is killed if `stop`
/// is still set when `grace` has passed after it was set.
pub fn run_stage(
    stage: &Stage,
    index: usize,
    entry: &Entry,
    queue: &str,
    stop: &AtomicBool,
    grace: Duration,
) -> StageOutcome {
    let label = stage.label(index);
    let rcpts: Vec<&str> = entry
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    let mut child = match Command::new("/bin/sh")
        .arg("-c")
        .arg(&stage.command)
        .env("MM_ID", &entry.id)
        .env("MM_QUEUE", queue)
        .env("MM_SENDER", &entry.sender)
        .env("MM_RECIPIENTS", rcpts.join(" "))
        .env("MM_LIST", entry.meta.list.as_deref().unwrap_or(""))
        .env("MM_STAGE", (index + 1).to_string())
        .env("MM_ATTEMPTS", entry.meta.attempts.to_string())
        .stdin(Stdio::piped())
        .stdout(if stage.kind == StageKind::Filter {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        // Cannot even start a shell: a local, probably passing problem.
        Err(e) => return StageOutcome::Defer(format!("{label}: cannot start: {e}")),
    };
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
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if stop.load(Ordering::Relaxed) {
            let t = *stop_seen.get_or_insert_with(Instant::now);
            if t.elapsed() >= grace {
                let _ = child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    let tail = stderr_tail(&err);
    match status {
        Err(e) => StageOutcome::Defer(format!("{label}: cannot wait: {e}")),
        Ok(st) => match st.code() {
            Some(0) => StageOutcome::Continue((stage.kind == StageKind::Filter).then_some(out)),
            Some(75) => StageOutcome::Defer(format!("{label} deferred (exit 75){tail}")),
            Some(c) if c > 128 && is_outside_kill(c - 128) => StageOutcome::Defer(format!(
                "{label} killed by signal {} (exit {c}){tail}",
                c - 128
            )),
            Some(c) => StageOutcome::Shunt(format!("{label} failed with exit {c}{tail}")),
            None if stop_seen.is_some() => {
                StageOutcome::Defer(format!("{label} stopped by runner shutdown"))
            }
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
    }
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
        let stop = AtomicBool::new(false);
        run_stage(
            &Stage {
                kind,
                command: cmd.into(),
            },
            1,
            &entry(),
            "in",
            &stop,
            Duration::from_secs(1),
        )
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
