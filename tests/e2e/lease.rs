//! Claims across hosts, on one machine: two host names (`MM_HOST`) share one
//! spool, so a runner's claims are guarded by its lease, as on a network
//! file system (`cargo xtask cluster` runs the same protocol on GlusterFS).
//!
//! * a runner frozen past its lease fences itself: once recovery elsewhere
//!   took its entry back, it sends and writes nothing more for it (only the
//!   transaction in flight at the freeze can be duplicated);
//! * a runner whose record was removed notices (inode identity) and fences
//!   itself, even within its lease;
//! * a host whose clock is ten minutes ahead does not take a live runner's
//!   claims: lease ages are measured on the file system's clock.
//!
//! Server: mailin-embedded, holding the end-of-data reply of transaction 1
//! until released; copies counted from what it accepted.

use std::time::Duration;

use mm_core::State;
use mm_e2e::{Running, TestSpool, Tool};

use crate::runq::{enqueue, entries_in, name_of, only_entry_in, poll_until, recover, runq};
use crate::smtp::MailServer;

const RCPTS: [&str; 3] = ["a@example.com", "b@example.com", "c@example.com"];

/// Host a's runner: one recipient per transaction, an 8 s lease (renewed
/// every 2 s, fenced at a 4 s gap: room for a busy machine).
fn host_a(s: &TestSpool, server: &MailServer) -> Running {
    Tool::new("mm-runq")
        .spool(s)
        .args([
            "--until-empty",
            "--lease",
            "8s",
            "--max-rcpts",
            "1",
            "--smtp",
            &server.url(),
        ])
        .envs([("MM_HOST", "a")])
        .spawn()
}

/// mm-recover on `host` with an 8 s lease: the action reported for the entry.
fn recover_on(s: &TestSpool, host: &str, env: &[(&str, &str)]) -> (String, String) {
    let mut t = recover(s)
        .args(["--json", "-q", "out", "--lease", "8s"])
        .env("MM_HOST", host);
    for (k, v) in env {
        t = t.env(k, v);
    }
    let out = t.run();
    out.assert_ok();
    let v = out
        .json_lines()
        .into_iter()
        // The claim's verdict, not its spare's (`removed-tmp`).
        .find(|v| v["id"].is_string() && v["action"] != "removed-tmp")
        .unwrap_or_else(|| panic!("no entry reported\n{out}"));
    (
        v["action"].as_str().unwrap_or("").to_string(),
        v["detail"].as_str().unwrap_or("").to_string(),
    )
}

/// Host b's recoveries, until one takes the frozen runner's entry back
/// (once its lease has passed): the detail it gave.
fn recover_after_the_lease(s: &TestSpool) -> String {
    let mut last = (String::new(), String::new());
    poll_until(
        "host b recovers the frozen runner's entry",
        Duration::from_secs(40),
        || {
            last = recover_on(s, "b", &[]);
            last.0 == "recovered"
        },
    );
    last.1
}

/// Host b drains what is left.
fn drain_on_b(s: &TestSpool, server: &MailServer) {
    runq(s)
        .args(["--until-empty", "--smtp", &server.url()])
        .env("MM_HOST", "b")
        .run()
        .assert_code(0);
}

#[track_caller]
fn assert_once_but_in_flight(server: &MailServer, in_flight: &str) {
    let copies = server.copies();
    for r in RCPTS {
        let n = copies.get(r).copied().unwrap_or(0);
        if r == in_flight {
            assert!((1..=2).contains(&n), "{r}: {n} copies ({copies:?})");
        } else {
            assert_eq!(
                n, 1,
                "{r}: {n} copies ({copies:?}); only {in_flight} was in flight"
            );
        }
    }
}

#[test]
fn a_runner_frozen_past_its_lease_sends_nothing_more_once_another_host_took_its_entry() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(120));
    enqueue(&s, "out", &RCPTS, b"Subject: frozen\n\npaused VM\n");
    let mut a = host_a(&s, &server);
    server.wait_stalled(1, Duration::from_secs(20));
    a.signal("STOP");
    // Past the lease (8 s) on the file system's clock: host b takes it back.
    let detail = recover_after_the_lease(&s);
    assert!(detail.contains("lease"), "{detail}");
    server.release();
    drain_on_b(&s, &server);
    let left = entries_in(&s, "out");
    assert!(left.is_empty(), "{left:#?}");
    // Woken: transaction 1 ends, and host a must stop there.
    a.signal("CONT");
    let status = a.wait_within(Duration::from_secs(30));
    assert!(
        a.stderr().contains("fenced itself"),
        "{status}\n{}",
        a.output()
    );
    assert_once_but_in_flight(&server, "a@example.com");
    assert!(
        entries_in(&s, "out").is_empty(),
        "host a wrote a claim back"
    );
}

#[test]
fn a_runner_whose_record_was_removed_fences_itself_and_a_recovery_delivers_once() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(120));
    enqueue(&s, "out", &RCPTS, b"Subject: pruned\n\nrecord removed\n");
    let mut a = host_a(&s, &server);
    server.wait_stalled(1, Duration::from_secs(20));
    let token = name_of(&only_entry_in(&s, "out")).holder.expect("a claim");
    // A sweep elsewhere judged the runner dead and removed its record.
    std::fs::remove_file(s.root().join(".runners").join(&token)).unwrap();
    // A same-host recovery now sees a dead holder and takes the entry back.
    let (action, detail) = recover_on(&s, "a", &[]);
    assert_eq!(action, "recovered", "{detail}");
    server.release();
    let status = a.wait_within(Duration::from_secs(30));
    assert!(
        a.stderr().contains("runner record was removed"),
        "{status}\n{}",
        a.output()
    );
    drain_on_b(&s, &server);
    assert_once_but_in_flight(&server, "a@example.com");
    assert!(entries_in(&s, "out").is_empty());
}

#[test]
fn a_host_whose_clock_is_ten_minutes_ahead_leaves_a_live_runners_claim_alone() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(120));
    enqueue(&s, "out", &RCPTS, b"Subject: skew\n\nclocks disagree\n");
    let mut a = host_a(&s, &server);
    server.wait_stalled(1, Duration::from_secs(20));
    for _ in 0..3 {
        let (action, detail) = recover_on(&s, "b", &[("MM_TEST_CLOCK_OFFSET", "600")]);
        assert_eq!(
            action, "busy",
            "the skewed host took a live claim: {detail}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(name_of(&only_entry_in(&s, "out")).state, State::Claimed);
    server.release();
    let status = a.wait_within(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", a.output());
    let copies = server.copies();
    for r in RCPTS {
        assert_eq!(copies.get(r), Some(&1), "{copies:?}");
    }
}

/// A runner frozen before its first transaction (here while its stage ran)
/// checks its lease before it sends: once host b took the entry back and
/// delivered it, host a sends nothing for it, not even one transaction.
#[test]
fn a_runner_frozen_before_it_sends_sends_nothing_once_another_host_took_its_entry() {
    let s = TestSpool::new();
    let server = MailServer::start();
    enqueue(
        &s,
        "out",
        &["solo@example.com"],
        b"Subject: one\n\nsingle recipient\n",
    );
    let gate = s.work().join("gate");
    let started = s.work().join("started");
    let stage = format!(
        "touch '{}'; while [ ! -e '{}' ]; do sleep 0.05; done; cat >/dev/null",
        started.display(),
        gate.display()
    );
    let mut a = Tool::new("mm-runq")
        .spool(&s)
        .args(["--until-empty", "--lease", "8s", "--exec", &stage])
        .args(["--smtp", &server.url()])
        .envs([("MM_HOST", "a")])
        .spawn();
    poll_until("host a's stage runs", Duration::from_secs(20), || {
        started.exists()
    });
    a.signal("STOP");
    recover_after_the_lease(&s);
    runq(&s)
        .args([
            "--until-empty",
            "--exec",
            "cat >/dev/null",
            "--smtp",
            &server.url(),
        ])
        .env("MM_HOST", "b")
        .run()
        .assert_code(0);
    std::fs::write(&gate, b"").unwrap();
    a.signal("CONT");
    a.wait_within(Duration::from_secs(30));
    assert_eq!(
        server.copies().get("solo@example.com"),
        Some(&1),
        "host a sent after its lease was lost\n{}",
        a.output()
    );
    assert!(
        entries_in(&s, "out").is_empty(),
        "{:#?}",
        entries_in(&s, "out")
    );
}
