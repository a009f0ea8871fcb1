//! Pipeline stages that hang, and the processes they leave: a stage is killed
//! with everything it started at `--stage-timeout`, at a stop, and when the
//! runner is killed with SIGKILL; a timeout defers, the third in a row
//! shunts. And the refusal of a runner whose stages lead nowhere.
//!
//! Server: none in all of them (`--then` another queue, or nothing at all).
//! Each stage writes the pids of its shell, a background child and its
//! foreground child into a file; the tests also look for any process whose
//! environment holds the entry's `MM_ID`, which every process of the stage
//! (and its guard) inherits.

use std::path::Path;
use std::time::{Duration, Instant};

use mm_core::EntryId;
use mm_e2e::{TestSpool, Tool, read_entry};

use crate::runq::{enqueue, entries_in, only_entry_in, poll_until, runq};

/// A stage that hangs with a child in the background and one in the
/// foreground, after writing the three pids (shell, background, foreground)
/// to `pids`.
fn hanging_stage(pids: &Path) -> String {
    let f = pids.display();
    format!(
        "sleep 1000 & echo $! >> '{f}'; echo $$ >> '{f}'; \
         sh -c 'echo $$ >> \"$0\"; exec sleep 1000' '{f}'"
    )
}

/// The pids recorded so far.
fn recorded(pids: &Path) -> Vec<i32> {
    std::fs::read_to_string(pids)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` runs (a zombie runs nothing: it only waits to be reaped).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// Every running process whose environment says it works on entry `id`.
fn processes_of(id: &EntryId) -> Vec<i32> {
    let needle = format!("MM_ID={id}");
    let mut out = Vec::new();
    for d in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = d.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(d.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) && running(pid) {
            out.push(pid);
        }
    }
    out
}

/// Waits (a bounded time) until no process of the stage is left.
#[track_caller]
fn assert_none_left(id: &EntryId, pids: &Path, when: &str) {
    let recorded = recorded(pids);
    assert!(!recorded.is_empty(), "{when}: the stage recorded no pid");
    let mut left = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        left = recorded.iter().copied().filter(|&p| running(p)).collect();
        left.extend(processes_of(id));
        left.sort_unstable();
        left.dedup();
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Do not leave them to the next test.
    for p in &left {
        let _ = std::process::Command::new("kill")
            .args(["-9", &p.to_string()])
            .status();
    }
    panic!("{when}: processes of the stage still running after 5 s: {left:?}");
}

#[test]
fn a_hanging_stage_times_out_with_all_its_processes_and_the_third_timeout_shunts() {
    let s = TestSpool::new();
    let pids = s.work().join("pids");
    let stage = hanging_stage(&pids);
    let id = enqueue(&s, "in", &["r@example.com"], b"Subject: hang\n\nhello\n");
    for (n, offset) in [(1u32, "0"), (2, "3600"), (3, "7200")] {
        let started = Instant::now();
        let out = runq(&s)
            .env("MM_TEST_CLOCK_OFFSET", offset)
            .args([
                "-q",
                "in",
                "--once",
                "--then",
                "out",
                "--stage-timeout",
                "3s",
            ])
            .args(["--exec", &stage])
            .run();
        out.assert_code(0);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "run {n} took {took:?}\n{out}"
        );
        assert_eq!(
            recorded(&pids).len() as u32,
            3 * n,
            "run {n} ran the stage once"
        );
        assert_none_left(&id, &pids, &format!("after timeout {n}"));
        let err = out.stderr_str();
        assert!(
            err.contains("stage 1 (exec") && err.contains("timed out after 3s"),
            "run {n}: the log does not give the reason\n{out}"
        );
        assert!(entries_in(&s, "out").is_empty(), "run {n} passed it on");
        if n < 3 {
            assert!(err.contains(&format!("{id} deferred until")), "{out}");
            let e = read_entry(&only_entry_in(&s, "in"));
            assert_eq!(
                e.meta.stage_timeouts, n,
                "run {n}: the count of timeouts in a row"
            );
            assert!(
                e.meta
                    .last_error
                    .as_deref()
                    .is_some_and(|r| r.contains("timed out after 3s")),
                "run {n}: {:?}",
                e.meta.last_error
            );
        } else {
            assert!(err.contains(&format!("{id} shunted")), "{out}");
            assert!(entries_in(&s, "in").is_empty(), "{out}");
            let e = read_entry(&only_entry_in(&s, "shunt"));
            let reason = e.meta.quarantine.map(|q| q.reason).unwrap_or_default();
            assert!(
                reason.contains("timed out after 3s") && reason.contains("3 times in a row"),
                "{reason:?}"
            );
            assert_eq!(e.meta.stage, 0, "it resumes at the stage that timed out");
        }
    }
}

#[test]
fn sigterm_to_the_runner_kills_every_process_of_a_hanging_stage() {
    let s = TestSpool::new();
    let pids = s.work().join("pids");
    let stage = hanging_stage(&pids);
    let id = enqueue(&s, "in", &["r@example.com"], b"Subject: hang\n\nhello\n");
    let mut bg = Tool::new("mm-runq")
        .spool(&s)
        .args([
            "-q",
            "in",
            "--then",
            "out",
            "--stop-timeout",
            "1s",
            "--poll",
            "100ms",
            "--exec",
            &stage,
        ])
        .spawn();
    poll_until("the stage's three pids", Duration::from_secs(20), || {
        recorded(&pids).len() == 3
    });
    assert!(
        !processes_of(&id).is_empty(),
        "no process of the stage found"
    );
    bg.signal("TERM");
    let st = bg.wait_within(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "{}", bg.output());
    assert_none_left(&id, &pids, "after SIGTERM");
    // Put back, not lost, not passed on, not shunted.
    assert_eq!(entries_in(&s, "in").len(), 1, "{}", bg.output());
    assert!(entries_in(&s, "out").is_empty() && entries_in(&s, "shunt").is_empty());
}

#[test]
fn sigkill_of_the_runner_kills_every_process_of_a_hanging_stage() {
    let s = TestSpool::new();
    let pids = s.work().join("pids");
    let stage = hanging_stage(&pids);
    let id = enqueue(&s, "in", &["r@example.com"], b"Subject: hang\n\nhello\n");
    let mut bg = Tool::new("mm-runq")
        .spool(&s)
        .args([
            "-q", "in", "--then", "out", "--poll", "100ms", "--exec", &stage,
        ])
        .spawn();
    poll_until("the stage's three pids", Duration::from_secs(20), || {
        recorded(&pids).len() == 3
    });
    assert!(
        !processes_of(&id).is_empty(),
        "no process of the stage found"
    );
    bg.kill();
    assert_none_left(&id, &pids, "after kill -9 of the runner");
    // The claim is left for recovery, as after any SIGKILL: nothing is lost.
    assert_eq!(entries_in(&s, "in").len(), 1);
}

#[test]
fn a_runner_with_stages_but_no_transport_and_no_then_refuses_to_start_with_64() {
    let s = TestSpool::new();
    let marker = s.work().join("ran");
    let stage = format!("touch '{}'", marker.display());
    enqueue(&s, "in", &["r@example.com"], b"Subject: x\n\nhello\n");
    let before = s.snapshot();
    for mode in ["--once", "--until-empty"] {
        let out = runq(&s).args(["-q", "in", mode, "--exec", &stage]).run();
        out.assert_code(64);
        let line = out.stderr_one_line();
        assert!(
            line.starts_with("mm-runq: ")
                && line.contains("--then")
                && line.contains("--smtp")
                && line.contains("--deliver-to")
                && line.contains("--discard"),
            "{line}"
        );
        assert!(out.stdout.is_empty(), "{out}");
    }
    assert!(!marker.exists(), "a stage ran");
    before.assert_same(&s.snapshot(), "a refused runner changed the spool");
    // Each way out is accepted: a transport, --discard, or --then.
    runq(&s)
        .args(["-q", "in", "--once", "--then", "out", "--exec", "true"])
        .run()
        .assert_code(0);
    assert_eq!(entries_in(&s, "out").len(), 1);
}
