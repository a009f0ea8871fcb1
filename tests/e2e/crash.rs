//! Runners that die, entries that are broken, and the recovery around them:
//! kill -9 at random moments, corrupt and foreign files, recovery next to a
//! live runner, a poison entry that kills its runner, and two hosts sharing
//! one spool.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use mm_core::{Entry, EntryId, FileName, State};
use mm_e2e::{Rng, TestSpool, Tool};

use crate::runq::{
    dump, dump_raw, enqueue, enqueue_many, entries_in, maildir_copies, maildir_copy, name_of,
    only_entry_in, poll_until, recover, runq, unbad,
};
use crate::smtp::MailServer;

/// Server: none (`--deliver-to` a maildir, whose copies are uniquely named, so
/// a copy written twice is two files).
///
/// Each run is killed after it was seen to make progress (a random number,
/// 1 to 40, of new copies in the maildir), never at a moment fixed in wall
/// time: on a loaded machine a runner may take longer to start, and a kill
/// that falls before it did anything only slows the test down. After
/// `KILLS` kills the last run drains the queue undisturbed, so the test is
/// bounded by a count of kills, not by a deadline.
#[test]
fn runners_killed_at_random_moments_lose_nothing_and_duplicate_only_unrecorded_copies() {
    const ENTRIES: usize = 2000;
    const KILLS: usize = 60;
    // How long a runner may go without writing a copy before it is taken
    // to hang (a hang guard, far beyond any honest pause).
    const STALL: Duration = Duration::from_secs(120);
    let s = TestSpool::new();
    let rcpts = ["a@example.com", "b@example.net", "c@example.org"];
    let ids = enqueue_many(&s, "out", &rcpts, ENTRIES, |i| {
        format!("Subject: torture {i}\n\nbody {i}\n").into_bytes()
    });
    let maildir = s.work().join("maildir");
    let dir = maildir.to_str().expect("utf-8 path");
    // Recovery counts are not the subject here: an entry hit by several kills
    // in a row must not be taken for a poison message.
    let runner_args = [
        "--until-empty",
        "--quiet",
        "--connections",
        "2",
        "--max-recoveries",
        "100000",
        "--deliver-to",
        dir,
    ];
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("kill -9 torture: xorshift seed {seed}");
    let mut rng = Rng::new(seed);

    let started = Instant::now();
    let (mut kills, mut runs) = (0usize, 0usize);
    loop {
        runs += 1;
        let mut r = Tool::new("mm-runq").spool(&s).args(runner_args).spawn();
        if kills < KILLS {
            // The moment of the kill: after this many new copies.
            let target = copies_written(&maildir) + 1 + (rng.next_u64() % 40) as usize;
            let mut seen = (copies_written(&maildir), Instant::now());
            let exited = loop {
                if let Some(st) = r.try_status() {
                    break Some(st);
                }
                let n = copies_written(&maildir);
                if n >= target {
                    break None;
                }
                if n > seen.0 {
                    seen = (n, Instant::now());
                }
                assert!(
                    seen.1.elapsed() < STALL,
                    "run {runs} wrote no copy for {STALL:?}: it hangs\n{}",
                    r.output()
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            match exited {
                None => {
                    r.kill();
                    kills += 1;
                }
                Some(st) => assert_eq!(st.code(), Some(0), "{}", r.output()),
            }
        } else {
            let st = r.wait_within(Duration::from_secs(600));
            assert_eq!(st.code(), Some(0), "{}", r.output());
        }
        recover(&s)
            .args(["--max-recoveries", "100000"])
            .run()
            .assert_code(0);
        if entries_in(&s, "out").is_empty() {
            break;
        }
    }
    println!(
        "kill -9 torture: {runs} runs, {kills} kills in {:?}",
        started.elapsed()
    );
    assert_eq!(
        kills, KILLS,
        "the queue drained after only {kills} kills: too few to mean anything"
    );

    let copies = maildir_copies(&maildir);
    let mut missing = Vec::new();
    for id in &ids {
        for r in rcpts {
            if !copies.contains_key(&(id.to_string(), r.to_string())) {
                missing.push(format!("{id} {r}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} recipients never got a copy, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    let extra: usize = copies.values().map(|n| n - 1).sum();
    println!(
        "kill -9 torture: {extra} copies beyond one for {} recipients after {kills} kills",
        ids.len() * rcpts.len()
    );
    assert_eq!(
        copies.len(),
        ids.len() * rcpts.len(),
        "copies for recipients that were never enqueued"
    );
    // Each of a killed runner's two workers has at most one copy written and
    // not yet recorded: more duplicates than that mean a recorded recipient
    // was sent to again.
    assert!(
        extra <= kills * 2,
        "{extra} duplicates from {kills} kills of runners with 2 workers"
    );

    let left: Vec<_> = s
        .entry_files()
        .into_iter()
        .filter(|p| {
            matches!(name_of(p).state, State::Claimed | State::Writing)
                || p.starts_with(s.root().join("bad"))
        })
        .collect();
    assert!(
        left.is_empty(),
        "claims, temporary files or quarantined entries left: {left:#?}"
    );
}

/// How many copies are in maildir `dir` (a count of names, read cheaply: it
/// is polled while a runner writes).
fn copies_written(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("new")).map_or(0, |d| d.count())
}

/// Makes an id for a planted file, unique within the test.
fn planted_id(n: u8) -> EntryId {
    let micros = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    EntryId::generate(micros, &[b"planted", &[n]])
}

/// Server: none (`--deliver-to` a maildir).
///
/// The mode-000 case of the plan only means something for a non-root user:
/// root reads a mode-000 file anyway (CAP_DAC_OVERRIDE), so as root a FIFO
/// and a directory stand in for "an entry name on something that cannot be
/// read as an entry". Those must be reported and left alone, never opened
/// (opening a FIFO would hang) nor moved.
#[test]
fn corrupt_entries_go_to_bad_with_a_reason_while_good_entries_beside_them_are_delivered() {
    let s = TestSpool::new();
    let maildir = s.work().join("maildir");
    let good: Vec<EntryId> = (0..3)
        .map(|i| {
            enqueue(
                &s,
                "out",
                &["r@example.com"],
                format!("Subject: good {i}\n\nfine\n").as_bytes(),
            )
        })
        .collect();

    let valid = |id: &EntryId| {
        Entry::new(
            id,
            "s@example.org",
            &["r@example.com".into()],
            b"Subject: x\n\ny\n".to_vec(),
            "out",
        )
    };
    let plant = |id: &EntryId, bytes: &[u8]| {
        s.put_bytes(
            "out",
            Some(id.bucket()),
            &FileName::queued(*id).to_string(),
            bytes,
        );
    };
    let mut corrupt: BTreeMap<EntryId, (&str, Vec<u8>)> = BTreeMap::new();
    let id = planted_id(1);
    corrupt.insert(id, ("cannot decode", Vec::new()));
    let id = planted_id(2);
    let whole = valid(&id).encode().expect("encode");
    corrupt.insert(id, ("cannot decode", whole[..whole.len() / 2].to_vec()));
    let id = planted_id(3);
    corrupt.insert(id, ("cannot decode", Rng::new(42).bytes(300)));
    let id = planted_id(4);
    let mut future = valid(&id);
    future.format = 99;
    corrupt.insert(id, ("format 99", future.encode().expect("encode")));
    // Nested far deeper than any entry: once aborted the runner (stack overflow in a worker).
    let id = planted_id(8);
    let mut deep = valid(&id).encode().expect("encode");
    assert_eq!(deep[0] & 0xf0, 0x80, "an entry is a fixmap");
    deep[0] += 1;
    deep.extend_from_slice(b"\xa2zz");
    deep.extend(std::iter::repeat_n(0x91u8, 100_000));
    deep.push(0xc0);
    corrupt.insert(id, ("cannot decode", deep));
    for (id, (_, bytes)) in &corrupt {
        plant(id, bytes);
    }

    let fifo_id = planted_id(5);
    let fifo = s
        .root()
        .join("out")
        .join(format!("{:02x}", fifo_id.bucket()))
        .join(FileName::queued(fifo_id).to_string());
    std::fs::create_dir_all(fifo.parent().expect("bucket")).expect("bucket");
    let ok = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|st| st.success());
    assert!(ok, "mkfifo {} failed", fifo.display());
    let dir_id = planted_id(6);
    let dir = s
        .root()
        .join("out")
        .join(format!("{:02x}", dir_id.bucket()))
        .join(FileName::queued(dir_id).to_string());
    std::fs::create_dir_all(&dir).expect("a directory named like an entry");
    let unreadable = (!mm_e2e::is_root()).then(|| {
        let id = planted_id(7);
        plant(&id, &valid(&id).encode().expect("encode"));
        let p = s
            .root()
            .join("out")
            .join(format!("{:02x}", id.bucket()))
            .join(FileName::queued(id).to_string());
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .expect("chmod 000");
        id
    });

    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--once", "--deliver-to", maildir.to_str().expect("utf-8")])
        .spawn();
    let st = r.wait_within(Duration::from_secs(60));
    assert_eq!(st.code(), Some(0), "{}", r.output());

    for id in &good {
        maildir_copy(&maildir, id, "r@example.com");
    }
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--json", "bad"])
        .run();
    out.assert_ok();
    let listed: BTreeMap<String, String> = out
        .json_lines()
        .iter()
        .map(|v| {
            (
                v["id"].as_str().expect("id").to_string(),
                v["last_error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (id, (why, bytes)) in &corrupt {
        let reason = listed
            .get(&id.to_string())
            .unwrap_or_else(|| panic!("{id} is not in bad/: {listed:#?}"));
        assert!(
            reason.contains(why),
            "{id}: reason {reason:?} does not say {why:?}"
        );
        let v = dump(&s, id);
        assert_eq!(v["state"], "preserved", "{v:#}");
        assert!(
            v["quarantine"]["reason"]
                .as_str()
                .unwrap_or("")
                .contains(why),
            "{v:#}"
        );
        assert_eq!(
            &dump_raw(&s, id),
            bytes,
            "the original bytes of {id} are kept"
        );
    }
    if let Some(id) = unreadable {
        assert!(
            s.root()
                .join("bad")
                .join(format!("{:02x}", id.bucket()))
                .join(format!("{id}.psv"))
                .exists()
        );
    }

    // The FIFO and the directory: left where they were, as they were, and reported.
    assert!(
        std::fs::symlink_metadata(&fifo).is_ok_and(|m| m.file_type().is_fifo()),
        "the FIFO was moved"
    );
    assert!(
        std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()),
        "the directory was moved"
    );
    let rec = recover(&s).args(["--dry-run", "--json", "-q", "out"]).run();
    rec.assert_ok();
    let foreign: BTreeSet<String> = rec
        .json_lines()
        .iter()
        .filter(|v| v["action"] == "foreign")
        .map(|v| v["path"].as_str().expect("path").to_string())
        .collect();
    for p in [&fifo, &dir] {
        assert!(
            foreign.contains(&p.display().to_string()),
            "{} not reported as foreign\n{rec}",
            p.display()
        );
    }
    let summary = Tool::new("mm-showq").spool(&s).arg("--json").run();
    summary.assert_ok();
    let out_row = summary
        .json_lines()
        .into_iter()
        .find(|v| v["queue"] == "out")
        .expect("a row for out");
    assert_eq!(out_row["foreign"], 2, "{out_row:#}");
    assert_eq!(out_row["queued"], 0, "{out_row:#}");
}

/// Server: mailin-embedded, stalling in data_end until released.
#[test]
fn recovery_next_to_a_live_delivery_reports_busy_and_a_second_runner_exits_at_once() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(60));
    let id = enqueue(
        &s,
        "out",
        &["a@example.com", "b@example.com"],
        b"Subject: live\n\nslow server\n",
    );

    let mut first = Tool::new("mm-runq")
        .spool(&s)
        .args(["--until-empty", "--smtp", &server.url()])
        .spawn();
    server.wait_stalled(1, Duration::from_secs(20));
    let bak = only_entry_in(&s, "out");
    assert_eq!(name_of(&bak).state, State::Claimed);
    let before = std::fs::metadata(&bak).expect("the claim");

    // A second runner of the same queue and slice, while the first delivers.
    let started = Instant::now();
    let second = runq(&s)
        .args(["--until-empty", "--smtp", &server.url()])
        .run();
    second.assert_code(0);
    assert!(
        second.stderr_one_line().contains("another runner"),
        "{second}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the second runner took {:?}",
        started.elapsed()
    );

    for args in [&["--json"][..], &["--json", "-q", "out"]] {
        let rec = recover(&s).args(args).run();
        rec.assert_ok();
        let lines = rec.json_lines();
        let mine: Vec<_> = lines.iter().filter(|v| v["id"] == id.to_string()).collect();
        assert_eq!(mine.len(), 1, "{rec}");
        assert_eq!(mine[0]["action"], "busy", "{rec}");
        let after = std::fs::metadata(&bak)
            .unwrap_or_else(|e| panic!("the claim {} is gone: {e}", bak.display()));
        assert_eq!(
            (after.ino(), after.mtime()),
            (before.ino(), before.mtime()),
            "the claim was touched"
        );
    }

    server.release();
    let st = first.wait_within(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "{}", first.output());
    assert_eq!(
        server.copies(),
        BTreeMap::from([("a@example.com".into(), 1), ("b@example.com".into(), 1)])
    );
    assert!(entries_in(&s, "out").is_empty());
}

/// Server: none (`--deliver-to` a maildir).
#[test]
fn a_poison_entry_that_kills_its_runner_is_quarantined_and_the_queue_flows_then_unbad_delivers_it()
{
    let s = TestSpool::new();
    let maildir = s.work().join("maildir");
    let dir = maildir.to_str().expect("utf-8");
    let poison = enqueue(
        &s,
        "out",
        &["r@example.com"],
        b"Subject: POISON\n\nkills the runner\n",
    );
    let good: Vec<EntryId> = (0..3)
        .map(|i| {
            enqueue(
                &s,
                "out",
                &["r@example.com"],
                format!("Subject: good {i}\n\nfine\n").as_bytes(),
            )
        })
        .collect();
    // The stage's shell runs under the runner's stage guard: the runner is
    // the parent of its parent (field 4 of /proc/PID/stat).
    let deadly = "grep -q POISON && kill -9 $(cut -d' ' -f4 /proc/$PPID/stat); exit 0";

    let mut killed = 0;
    let mut clean = false;
    for _ in 0..8 {
        let mut r = Tool::new("mm-runq")
            .spool(&s)
            .args([
                "--until-empty",
                "--max-recoveries",
                "2",
                "--deliver-to",
                dir,
                "--exec",
                deadly,
            ])
            .spawn();
        let st = r.wait_within(Duration::from_secs(30));
        if st.success() {
            clean = true;
            break;
        }
        assert_eq!(
            st.code(),
            None,
            "the runner failed otherwise than by being killed\n{}",
            r.output()
        );
        killed += 1;
    }
    assert!(
        clean,
        "the runner kept dying: the poison entry was never quarantined"
    );
    assert_eq!(
        killed, 3,
        "killed once, then recovered twice (--max-recoveries 2), then quarantined"
    );

    let bad = only_entry_in(&s, "bad");
    assert_eq!(name_of(&bad), FileName::preserved(poison));
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--json", "bad"])
        .run();
    out.assert_ok();
    let reason = out.json_lines()[0]["last_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(reason.contains("crashed its runner"), "{reason:?}");
    for id in &good {
        maildir_copy(&maildir, id, "r@example.com");
    }

    let rel = unbad(&s).arg(poison.to_string()).run();
    rel.assert_ok();
    assert!(
        rel.stdout_str()
            .starts_with(&format!("released {poison} out")),
        "{rel}"
    );
    assert_eq!(
        dump(&s, &poison)["recoveries"],
        0,
        "the recovery count is reset"
    );
    runq(&s)
        .args([
            "--until-empty",
            "--max-recoveries",
            "2",
            "--deliver-to",
            dir,
            "--exec",
            "cat >/dev/null",
        ])
        .run()
        .assert_code(0);
    assert!(maildir_copy(&maildir, &poison, "r@example.com").contains("POISON"));
    assert!(entries_in(&s, "bad").is_empty() && entries_in(&s, "out").is_empty());
}

/// Server: none (`--discard`; the runner of host a is held inside an `--exec`
/// stage until a gate file appears).
#[test]
fn a_claim_of_another_hosts_live_runner_is_taken_back_only_after_its_lease_expires() {
    let s = TestSpool::new();
    let gate = s.work().join("gate");
    let id = enqueue(
        &s,
        "out",
        &["r@example.com"],
        b"Subject: lease\n\nshared spool\n",
    );
    let wait_gate = format!("while [ ! -e '{}' ]; do sleep 0.05; done", gate.display());
    let mut host_a = Tool::new("mm-runq")
        .spool(&s)
        .args(["--until-empty", "--discard", "--exec", &wait_gate])
        .envs([("MM_HOST", "a")])
        .spawn();
    poll_until("host a's claim", Duration::from_secs(20), || {
        entries_in(&s, "out")
            .first()
            .is_some_and(|p| name_of(p).state == State::Claimed)
    });
    let bak = only_entry_in(&s, "out");
    let token = name_of(&bak).holder.expect("a holder");
    let record = std::fs::File::options()
        .write(true)
        .open(s.root().join(".runners").join(&token))
        .expect("runner record");
    let recover_on = |host: &str| {
        let out = recover(&s)
            .args(["--json", "-q", "out", "--lease", "5m"])
            .env("MM_HOST", host)
            .run();
        out.assert_ok();
        let lines = out.json_lines();
        let v = lines
            .iter()
            .find(|v| v["id"] == id.to_string())
            .unwrap_or_else(|| panic!("{id} not reported\n{out}"));
        (
            v["action"].as_str().expect("action").to_string(),
            v["detail"].as_str().unwrap_or("").to_string(),
        )
    };

    // A fresh lease: host b leaves the claim alone; so does host a.
    record
        .set_modified(SystemTime::now())
        .expect("touch the runner record");
    for host in ["b", "a"] {
        let (action, detail) = recover_on(host);
        assert_eq!(action, "busy", "host {host}: {detail}");
        assert!(bak.exists(), "host {host} took the claim of a live runner");
    }

    // The lease ran out ten minutes ago: host b takes the entry back.
    record
        .set_modified(SystemTime::now() - Duration::from_secs(600))
        .expect("age the runner record");
    let (action, detail) = recover_on("b");
    assert_eq!(action, "recovered", "{detail}");
    assert!(detail.contains("lease"), "{detail}");
    assert_eq!(name_of(&only_entry_in(&s, "out")), FileName::queued(id));

    // Host a is gone for good; host b delivers.
    host_a.kill();
    runq(&s)
        .args(["--until-empty", "--discard"])
        .env("MM_HOST", "b")
        .run()
        .assert_code(0);
    assert!(entries_in(&s, "out").is_empty());
}
