//! Faults of the spool's file system in the middle of a delivery: a real
//! small file system (a tmpfs, so these tests need root) filled to the last
//! block, or to the last inode, at each point where the runner must write
//! what it has done, and during start-up recovery.
//!
//! What must hold at every point, counted from the SMTP server's own record
//! of what it accepted (mailin-embedded): after space returns and the queue
//! drains, each recipient the server accepted got exactly one copy, nothing
//! is lost (every recipient is delivered, bounced, or still pending in a
//! queued entry), and nothing stays claimed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mm_core::EntryId;
use mm_core::State;
use mm_e2e::{TestSpool, Tool};

use crate::runq::{dump, enqueue_many, entries_in, name_of, poll_until, rcpt_states, runq};
use crate::smtp::MailServer;

/// What runs out.
#[derive(Clone, Copy, Debug)]
enum Resource {
    /// Free blocks.
    Blocks,
    /// Free inodes.
    Inodes,
}

/// Which write meets the full file system.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// The record of transaction 1 (of 3), and of 2 after it.
    AfterFirstTransaction,
    /// The bounce record for a recipient refused with 550.
    BounceRecord,
    /// The pass-on to the next queue (`--then`).
    PassOn,
    /// The release of an entry with a recipient deferred by 451.
    Release,
}

const RCPTS: [&str; 3] = ["a@example.com", "b@example.com", "c@example.com"];

/// Eight recipients, for the case where the record grows across a page.
const RCPTS8: [&str; 8] = [
    "a@example.com",
    "b@example.com",
    "c@example.com",
    "d@example.com",
    "e@example.com",
    "f@example.com",
    "g@example.com",
    "h@example.com",
];

/// A message for `rcpts` whose entry file is 40 bytes short of two pages:
/// eight transactions' replies then grow the record across the page
/// boundary, so a save needs more blocks than the file had, and only a
/// reservation renewed after every save keeps that from a full disk.
fn page_straddling_message(s: &TestSpool, rcpts: &[&str]) -> Vec<u8> {
    let body = |n: usize| format!("Subject: fault\n\n{}\n", "x".repeat(n)).into_bytes();
    let probe = enqueue(s, "probe", rcpts, &body(1000));
    let dir = s.root().join("probe");
    let size = walkdir::WalkDir::new(&dir)
        .into_iter()
        .flatten()
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&probe.to_string())
        })
        .map(|e| e.metadata().unwrap().len())
        .expect("the probe entry");
    std::fs::remove_dir_all(&dir).unwrap();
    let target = 2 * 4096 - 40;
    body(1000 + target - size as usize)
}

/// A spool on its own small tmpfs.
fn small_spool(what: &str) -> TestSpool {
    TestSpool::tmpfs(what, "size=8m,nr_inodes=400,mode=0755")
}

/// mm-enqueue into `queue` (its free-space minimum off: the whole small
/// file system is for the test).
fn enqueue(s: &TestSpool, queue: &str, rcpts: &[&str], message: &[u8]) -> EntryId {
    let out = Tool::new("mm-enqueue")
        .spool(s)
        .args([
            "--min-free",
            "0",
            "-q",
            queue,
            "-f",
            "owner@example.org",
            "--",
        ])
        .args(rcpts)
        .stdin(message)
        .run();
    out.assert_ok();
    out.id()
}

/// Fills the file system of `s` (blocks or inodes) until it refuses; the
/// filler lives in `.fill/` and [`unfill`] removes it.
fn fill(s: &TestSpool, what: Resource) {
    fill_leaving(s, what, 0);
}

/// [`fill`], then gives back `pages` pages (4 KiB each) or `pages` inodes.
fn fill_leaving(s: &TestSpool, what: Resource, pages: u64) {
    let dir = s.root().join(".fill");
    std::fs::create_dir_all(&dir).expect("cannot create .fill");
    match what {
        Resource::Blocks => {
            use std::io::Write;
            let mut f = std::fs::File::create(dir.join("blocks")).expect("filler file");
            let chunk = vec![0x55u8; 64 * 1024];
            while f.write_all(&chunk).is_ok() {}
            let small = [0u8; 512];
            while f.write_all(&small).is_ok() {}
        }
        Resource::Inodes => {
            for i in 0.. {
                if std::fs::File::create(dir.join(format!("i{i}"))).is_err() {
                    break;
                }
            }
        }
    }
    // stat -f: %a free blocks for a user, %d free inodes.
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%a %d"])
        .arg(s.root())
        .output()
        .expect("cannot run stat -f");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(v.len(), 2, "stat -f said {text:?}");
    match what {
        Resource::Blocks => assert!(v[0] < 2, "not full: {} blocks free", v[0]),
        Resource::Inodes => assert!(v[1] < 2, "not full: {} inodes free", v[1]),
    }
    if pages > 0 {
        match what {
            Resource::Blocks => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(dir.join("blocks"))
                    .expect("filler file");
                let len = f.metadata().unwrap().len();
                f.set_len(len.saturating_sub(pages * 4096) & !4095).unwrap();
            }
            Resource::Inodes => {
                for i in 0..pages {
                    std::fs::remove_file(dir.join(format!("i{i}"))).unwrap();
                }
            }
        }
    }
}

fn unfill(s: &TestSpool) {
    std::fs::remove_dir_all(s.root().join(".fill")).expect("cannot remove the filler");
}

/// Every file of the spool's queues that is a claim or a runner's temporary.
fn claimed_files(s: &TestSpool) -> Vec<PathBuf> {
    s.entry_files()
        .into_iter()
        .filter(|p| !p.starts_with(s.root().join(".fill")))
        .filter(|p| {
            let n = name_of(p);
            n.state == State::Claimed || n.state == State::Writing
        })
        .collect()
}

fn only_entry(s: &TestSpool, queue: &str) -> PathBuf {
    let v = entries_in(s, queue);
    assert_eq!(v.len(), 1, "expected one entry in {queue}/: {v:#?}");
    v[0].clone()
}

fn log_has(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains(needle))
}

/// One cell of the matrix: an entry for three recipients, one transaction
/// each; the server holds the reply to transaction 1 while the test fills
/// the file system, then everything goes on; space returns once the runner
/// has met the full disk (or has finished without needing any).
fn case(what: Resource, point: Point) {
    let name = format!("fault matrix {what:?} at {point:?}");
    let s = small_spool(&name);
    let server = MailServer::start();
    match point {
        Point::BounceRecord => server.refuse_always("b@example.com", 550, "5.1.1 no such user"),
        Point::Release => server.refuse_always("c@example.com", 451, "4.2.0 try later"),
        _ => {}
    }
    server.stall(Duration::from_secs(60));
    let rcpts: &[&str] = match point {
        Point::AfterFirstTransaction => &RCPTS8,
        _ => &RCPTS,
    };
    let message = match point {
        Point::AfterFirstTransaction => page_straddling_message(&s, rcpts),
        _ => b"Subject: fault\n\nthe disk fills\n".to_vec(),
    };
    let id = enqueue(&s, "out", rcpts, &message);
    let log = s.work().join("runq.log");
    let mut args = vec![
        "--until-empty".to_string(),
        "--smtp".into(),
        server.url(),
        "--max-rcpts".into(),
        "1".into(),
        "--write-retry".into(),
        "60s".into(),
        "--log".into(),
        log.display().to_string(),
    ];
    if let Point::PassOn = point {
        args.extend(["--then".to_string(), "sent".into()]);
    }
    let mut runner = Tool::new("mm-runq").spool(&s).args(&args).spawn();
    server.wait_stalled(1, Duration::from_secs(20));
    fill(&s, what);
    server.release();
    // Space returns once the runner says it is waiting for it, or once it
    // is done (the reservation made the full disk a non-event).
    poll_until(
        &format!("{name}: the runner meets the full disk or finishes"),
        Duration::from_secs(30),
        || log_has(&log, "keeping the claim") || runner.try_status().is_some(),
    );
    let waited = log_has(&log, "keeping the claim");
    unfill(&s);
    let status = runner.wait_within(Duration::from_secs(60));
    assert!(status.success(), "{name}: {status}\n{}", runner.output());
    if let Point::AfterFirstTransaction = point {
        // The record's space was reserved before each transaction: the
        // full disk never stopped a save.
        assert!(
            !waited,
            "{name}: a save met the full disk despite the reservation\n{}",
            runner.output()
        );
    }
    if waited {
        assert!(
            log_has(&log, "done after retrying"),
            "{name}: the write was not retried to success\n{}",
            runner.output()
        );
    }

    // The server's account: each accepted recipient once, and only those
    // the runner could deliver.
    let copies = server.copies();
    let expected: Vec<&str> = match point {
        Point::BounceRecord => vec!["a@example.com", "c@example.com"],
        Point::Release => vec!["a@example.com", "b@example.com"],
        _ => rcpts.to_vec(),
    };
    for r in &expected {
        assert_eq!(
            copies.get(*r),
            Some(&1),
            "{name}: copies {copies:?}\n{}",
            runner.output()
        );
    }
    assert_eq!(copies.len(), expected.len(), "{name}: copies {copies:?}");
    assert!(
        claimed_files(&s).is_empty(),
        "{name}: left claimed: {:#?}",
        claimed_files(&s)
    );

    // Nothing lost: where the rest is.
    match point {
        Point::AfterFirstTransaction => {
            assert!(entries_in(&s, "out").is_empty(), "{name}");
        }
        Point::BounceRecord => {
            assert!(entries_in(&s, "out").is_empty(), "{name}");
            let b = only_entry(&s, "bounces");
            let v = dump(&s, &name_of(&b).id);
            let states = rcpt_states(&v);
            assert_eq!(states.len(), 1, "{name}: {v:#}");
            let (state, reply) = &states["b@example.com"];
            assert_eq!(state, "failed", "{name}");
            assert!(reply.contains("550"), "{name}: {reply}");
        }
        Point::PassOn => {
            assert!(entries_in(&s, "out").is_empty(), "{name}");
            let e = only_entry(&s, "sent");
            assert_eq!(name_of(&e).id, id);
            let states = rcpt_states(&dump(&s, &id));
            assert!(
                states.values().all(|(st, _)| st == "delivered"),
                "{name}: {states:?}"
            );
        }
        Point::Release => {
            let e = only_entry(&s, "out");
            assert_eq!(name_of(&e).state, State::Queued, "{name}");
            let states = rcpt_states(&dump(&s, &id));
            assert_eq!(states["a@example.com"].0, "delivered", "{name}: {states:?}");
            assert_eq!(states["b@example.com"].0, "delivered", "{name}: {states:?}");
            assert_eq!(states["c@example.com"].0, "pending", "{name}: {states:?}");
        }
    }
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_after_the_first_transaction_sends_nothing_twice() {
    case(Resource::Blocks, Point::AfterFirstTransaction);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn no_free_inodes_after_the_first_transaction_sends_nothing_twice() {
    case(Resource::Inodes, Point::AfterFirstTransaction);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_at_the_bounce_record_keeps_the_claim_until_it_is_written() {
    case(Resource::Blocks, Point::BounceRecord);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn no_free_inodes_at_the_bounce_record_keeps_the_claim_until_it_is_written() {
    case(Resource::Inodes, Point::BounceRecord);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_at_the_pass_on_sends_nothing_twice() {
    case(Resource::Blocks, Point::PassOn);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn no_free_inodes_at_the_pass_on_sends_nothing_twice() {
    case(Resource::Inodes, Point::PassOn);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_at_the_release_sends_nothing_twice() {
    case(Resource::Blocks, Point::Release);
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn no_free_inodes_at_the_release_sends_nothing_twice() {
    case(Resource::Inodes, Point::Release);
}

/// Start-up recovery on a full file system: the dead runner's claim is
/// taken back and put back as queued (never stranded under the new
/// runner's token), the run claims nothing below the free-space floor and
/// ends with 75; once space returns, the next run delivers each recipient
/// once.
#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn startup_recovery_on_a_full_disk_strands_nothing_and_the_next_run_delivers_once() {
    for what in [Resource::Blocks, Resource::Inodes] {
        let s = small_spool(&format!("start-up recovery, {what:?}"));
        let server = MailServer::start();
        // A first run on the empty queue makes the runner's directories and
        // lock file, as on any spool that has seen a runner.
        runq(&s)
            .args(["--until-empty", "--discard"])
            .run()
            .assert_code(0);
        let id = enqueue(&s, "out", &RCPTS, b"Subject: recovered\n\nfull disk\n");
        // A claim of a runner that died (its record is gone).
        let pck = only_entry(&s, "out");
        let dead = pck.with_file_name(format!("{id}.0123456789ab.bak"));
        std::fs::rename(&pck, &dead).unwrap();
        // Room for the new runner's record, not for rewriting the entry.
        fill_leaving(&s, what, 1);
        let out = runq(&s)
            .args(["--until-empty", "--smtp", &server.url()])
            .run();
        out.assert_code(75);
        assert!(
            out.stderr_str().contains("below the floor"),
            "{what:?}: the reason is not said\n{out}"
        );
        let e = only_entry(&s, "out");
        let n = name_of(&e);
        assert_eq!(n.state, State::Queued, "{what:?}: stranded as {e:?}\n{out}");
        assert!(n.holder.is_none(), "{what:?}: {e:?}");
        assert!(server.copies().is_empty(), "{what:?}: sent on a full disk");

        unfill(&s);
        runq(&s)
            .args(["--until-empty", "--smtp", &server.url()])
            .run()
            .assert_code(0);
        let copies = server.copies();
        for r in RCPTS {
            assert_eq!(copies.get(r), Some(&1), "{what:?}: {copies:?}");
        }
        assert!(
            s.entry_files()
                .iter()
                .all(|p| p.starts_with(s.root().join(".fill")))
        );
    }
}

/// A due entry that cannot be claimed (here its bucket is a plain file, so
/// the claim's rename cannot land): a cron run does not spin on it; it ends
/// with 75 after a pass that made no progress, with one line for the entry.
#[test]
fn an_entry_that_cannot_be_claimed_ends_a_cron_run_with_75_and_one_line() {
    let s = TestSpool::new();
    let id = enqueue(&s, "out", &RCPTS, b"Subject: stuck\n\nunclaimable\n");
    let path = only_entry(&s, "out");
    let top = s.root().join("out").join(path.file_name().unwrap());
    std::fs::rename(&path, &top).unwrap();
    let bucket = path.parent().unwrap();
    std::fs::remove_dir(bucket).unwrap();
    std::fs::write(bucket, b"not a directory\n").unwrap();
    let started = std::time::Instant::now();
    let out = runq(&s).args(["--until-empty", "--discard"]).run();
    out.assert_code(75);
    let lines: Vec<String> = out
        .stderr_str()
        .lines()
        .filter(|l| l.contains(&id.to_string()))
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line for the entry, not a flood:\n{out}"
    );
    assert!(
        out.stderr_str().contains("made no progress"),
        "the run says why it ends\n{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{out}");
    assert!(top.exists(), "the entry moved: {out}");
}

/// A smarthost that accepts connections but never greets, in front of 500
/// entries: the first connection times out, the destination is remembered
/// as failed in the spool, and the other entries are deferred without
/// trying, each with the reason, so the backlog costs about one timeout,
/// not 500. The next run honours the back-off: entries made due again
/// while it lasts (`mm-flush --keep-destinations`) are deferred without a
/// connection; once it is over, one entry probes (one connection, and the
/// back-off doubles). A flush that clears it says so. Every entry is
/// accounted for after each run: deferred, with a reason, none lost, none
/// delivered.
#[test]
fn a_smarthost_that_never_greets_costs_one_timeout_for_500_entries_and_the_next_run_none() {
    const N: usize = 500;
    let s = TestSpool::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for c in silent.incoming().flatten() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(c);
            }
        });
    }
    let connections = || accepted.load(std::sync::atomic::Ordering::SeqCst);
    // Group commits of mm-enqueue.
    enqueue_many(&s, "out", &["r@example.com"], N, |i| {
        format!("Subject: {i}\n\nwait\n").into_bytes()
    });
    let dest = format!("127.0.0.1:{port}");
    let url = format!("smtp://{dest}");
    let drain = |offset: &str| {
        let started = std::time::Instant::now();
        let out = runq(&s)
            .env("MM_TEST_CLOCK_OFFSET", offset)
            .args(["--until-empty", "--connect-timeout", "1s"])
            .args(["--command-timeout", "1s", "--smtp", &url])
            .run();
        out.assert_code(0);
        (out, started.elapsed())
    };
    let showq = |args: &[&str]| {
        let out = Tool::new("mm-showq").spool(&s).args(args).run();
        out.assert_ok();
        out.json_lines()
    };
    // Every entry deferred, with a reason, none lost, none delivered.
    let accounted = |after: &str, reason: &str| {
        let rows = showq(&["--json", "out"]);
        assert_eq!(rows.len(), N, "{after}: entries lost");
        for r in &rows {
            assert_eq!(r["state"], "deferred", "{after}: {r}");
            let why = r["last_error"].as_str().unwrap_or_default();
            assert!(why.contains(reason), "{after}: {r}");
        }
        assert_eq!(s.entry_files().len(), N, "{after}: entries elsewhere");
    };

    let (out, took) = drain("0");
    let tried = connections();
    eprintln!("run 1: {N} entries in {took:?}, {tried} connection(s)");
    assert!(
        took < Duration::from_secs(20),
        "{N} entries took {took:?}: a timeout each?\n{out}"
    );
    assert_eq!(tried, 1, "{tried} connections for {N} entries\n{out}");
    assert!(out.stderr_str().contains("backed off"), "{out}");
    accounted("run 1", "");
    let backed_off = showq(&["--json", "out"])
        .iter()
        .filter(|r| {
            r["last_error"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("{dest} is backed off"))
        })
        .count();
    assert_eq!(
        backed_off,
        N - 1,
        "all but the one tried say why they were not tried"
    );
    let d = showq(&["--destinations", "--json"]);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0]["destination"], dest.as_str());
    assert_eq!(d[0]["failures"], 1);
    assert_eq!(d[0]["backed_off"], true);
    let summary = Tool::new("mm-showq").spool(&s).run();
    assert!(
        summary
            .stdout_str()
            .contains(&format!("backed off: {dest}")),
        "{summary}"
    );

    // Due again while the back-off lasts: the second run connects to nobody.
    let kept = Tool::new("mm-flush")
        .spool(&s)
        .args(["--all", "--keep-destinations", "--json"])
        .run();
    kept.assert_ok();
    assert!(kept.json_lines().iter().all(|r| r["result"] == "flushed"
        && r["destinations_cleared"] == serde_json::json!([])));
    let (out, took) = drain("0");
    eprintln!(
        "run 2: {N} entries in {took:?}, {} connection(s)",
        connections() - tried
    );
    assert_eq!(connections(), tried, "the back-off was not honoured\n{out}");
    assert!(took < Duration::from_secs(20), "{took:?}\n{out}");
    accounted("run 2", &format!("{dest} is backed off"));

    // Once it is over, all are due: one probe, one connection, back-off doubled.
    let (out, took) = drain("600");
    eprintln!(
        "run 3: {N} entries in {took:?}, {} connection(s)",
        connections() - tried
    );
    assert_eq!(connections(), tried + 1, "one probe\n{out}");
    accounted("run 3", "");
    let d = Tool::new("mm-showq")
        .spool(&s)
        .env("MM_TEST_CLOCK_OFFSET", "600")
        .args(["--destinations", "--json"])
        .run()
        .json_lines();
    assert_eq!(
        (d[0]["failures"].as_u64(), d[0]["backed_off"].as_bool()),
        (Some(2), Some(true))
    );

    // A flush clears it, and its first row says so.
    let flushed = Tool::new("mm-flush")
        .spool(&s)
        .env("MM_TEST_CLOCK_OFFSET", "600")
        .args(["--all", "--json"])
        .run();
    flushed.assert_ok();
    let rows = flushed.json_lines();
    assert_eq!(rows.len(), N);
    let cleared: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["destinations_cleared"] != serde_json::json!([]))
        .collect();
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert_eq!(
        cleared[0]["destinations_cleared"],
        serde_json::json!([dest])
    );
    assert!(showq(&["--destinations", "--json"]).is_empty());
}

/// Server: a TCP listener that accepts and never greets. Mail that waits on
/// a destination remembered as failing still gives up at its deadline: the
/// entries deferred untried (all but the probe) carry the give-up clock too,
/// and when it runs out every one of them bounces, none stays deferred.
#[test]
fn entries_waiting_on_a_dead_destination_give_up_at_their_deadline_untried_or_not() {
    const N: usize = 20;
    let s = TestSpool::new();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c);
        }
    });
    enqueue_many(&s, "out", &["r@example.com"], N, |i| {
        format!("Subject: {i}\n\nwait\n").into_bytes()
    });
    let drain = |offset: &str| {
        runq(&s)
            .env("MM_TEST_CLOCK_OFFSET", offset)
            .args(["--until-empty", "--connect-timeout", "1s"])
            .args(["--command-timeout", "1s", "--give-up-after", "1h"])
            .args(["--smtp", &url])
            .run()
    };
    drain("0").assert_code(0);
    let rows = Tool::new("mm-showq")
        .spool(&s)
        .args(["--json", "--give-up-after", "1h", "out"])
        .run()
        .json_lines();
    assert_eq!(rows.len(), N);
    for r in &rows {
        assert_eq!(r["state"], "deferred", "{r}");
        assert!(r["give_up_at"].is_string(), "no deadline: {r}");
    }
    // Two hours on: past the deadline, and past the back-off.
    let out = drain("7200");
    out.assert_code(0);
    assert!(
        entries_in(&s, "out").is_empty(),
        "entries still waiting past their deadline\n{out}"
    );
    assert_eq!(entries_in(&s, "bounces").len(), N, "{out}");
}
