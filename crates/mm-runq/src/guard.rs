//! The stage guard: `mm-runq --stage-guard RUNNER_PID -- PROGRAM ARGS...`, a
//! hidden mode in which mm-runq runs one pipeline stage for a runner and makes
//! sure the stage dies with it (see mm_core::pipeline for the protocol).
//!
//! The runner starts the guard as the leader of a new process group. The
//! guard asks for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), installs
//! its handlers, and only then checks that its parent is still the runner:
//! a runner that died before the request was made is seen here, and one that
//! dies later sends the signal. It then runs PROGRAM in the same group with
//! the same standard input, output and error (the stage reads and writes the
//! runner's pipes directly, nothing is copied) and exits as PROGRAM did: the
//! same code, or the same signal (with core dumps off, so a stage's crash
//! leaves no core of mm-runq). A SIGTERM, SIGINT or SIGHUP while the runner
//! lives is the runner's own timeout or stop, sent to the whole group: the
//! guard waits for PROGRAM to end, as the runner wants. One that comes when
//! the parent is no longer the runner means the runner died: the guard kills
//! its group with SIGKILL, itself included.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};

use mm_core::pipeline::GUARD_FLAG;
use rustix::process::{Pid, Resource, Rlimit, Signal};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// Runs the guard if the command line asks for it (`--stage-guard` first);
/// `None` for a normal mm-runq command line.
pub fn from_args() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_none_or(|a| a != GUARD_FLAG) {
        return None;
    }
    Some(match guard(&args[1..]) {
        Ok(code) => code,
        Err(e) => {
            mm_core::cli::say(&format!("mm-runq --stage-guard: {e}"));
            // Like a stage that cannot start: the entry is deferred.
            ExitCode::from(mm_core::error::exit::TEMPFAIL)
        }
    })
}

fn guard(args: &[OsString]) -> Result<ExitCode, String> {
    let usage = || format!("usage: mm-runq {GUARD_FLAG} RUNNER_PID -- PROGRAM [ARG...]");
    let [runner, dashes, program, rest @ ..] = args else {
        return Err(usage());
    };
    if dashes != "--" {
        return Err(usage());
    }
    let runner = runner
        .to_str()
        .and_then(|p| p.parse::<i32>().ok())
        .and_then(Pid::from_raw)
        .ok_or_else(usage)?;

    // 1. A signal when the parent dies, then handlers, then the check: in
    //    this order no death of the runner goes unseen.
    rustix::process::set_parent_process_death_signal(Some(Signal::TERM))
        .map_err(|e| format!("cannot ask for a signal at the runner's death: {e}"))?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| format!("cannot handle signals: {e}"))?;
    let runner_gone = move || rustix::process::getppid() != Some(runner);
    if runner_gone() {
        return Err("the runner is gone".into());
    }
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if runner_gone() {
                // The runner died: the stage and this guard go with it.
                let _ = rustix::process::kill_current_process_group(Signal::KILL);
            }
        }
    });

    // 2. The stage, in this group, on these descriptors.
    let mut child = Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.to_string_lossy()))?;
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for the stage: {e}"))?;

    // 3. Its status, as it was.
    if let Some(code) = status.code() {
        return Ok(ExitCode::from(code as u8));
    }
    if let Some(sig) = status.signal() {
        let maximum = rustix::process::getrlimit(Resource::Core).maximum;
        let _ = rustix::process::setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum,
            },
        );
        let _ = signal_hook::low_level::emulate_default_handler(sig);
        // Not reached for a signal that terminates; the shell's convention otherwise.
        return Ok(ExitCode::from((128 + sig) as u8));
    }
    Err("the stage ended without a status".into())
}
