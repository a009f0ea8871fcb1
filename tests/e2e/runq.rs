//! mm-runq against real SMTP servers and maildirs: per-recipient outcomes,
//! retries, bounces, exact bytes, dropped and stalled connections, stopping,
//! concurrent and sliced runners, pipeline stages, give-up.
//!
//! Each test says which server it uses: mailin-embedded in the test process
//! or Postfix's smtp-sink (see `smtp.rs`), or none (`--deliver-to`,
//! `--discard`). The helpers at the top are shared with `crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mm_core::{EntryId, FileName, State};
pub(crate) use mm_e2e::poll_until;
use mm_e2e::{Running, TestSpool, Tool};
use serde_json::Value;

use crate::smtp::{MailServer, SmtpSink, crlf_to_lf, has_bare_lf};

/// The envelope sender of the test messages (mailin refuses `<>`).
pub(crate) const SENDER: &str = "owner@example.org";

/// The path of a tool binary (built by the harness), checked to exist.
fn require_bin(tool: &str) -> PathBuf {
    let p = mm_e2e::bin(tool);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build` before `cargo test -p mm-e2e`",
        p.display()
    );
    p
}

/// `mm-runq` on spool `s`.
pub(crate) fn runq(s: &TestSpool) -> Tool {
    require_bin("mm-runq");
    Tool::new("mm-runq").spool(s)
}

/// `mm-recover` on spool `s`.
pub(crate) fn recover(s: &TestSpool) -> Tool {
    require_bin("mm-recover");
    Tool::new("mm-recover").spool(s)
}

/// `mm-unbad` on spool `s`.
pub(crate) fn unbad(s: &TestSpool) -> Tool {
    require_bin("mm-unbad");
    Tool::new("mm-unbad").spool(s)
}

/// Enqueues `message` for `rcpts` into `queue` with mm-enqueue.
pub(crate) fn enqueue(s: &TestSpool, queue: &str, rcpts: &[&str], message: &[u8]) -> EntryId {
    let out = Tool::new("mm-enqueue")
        .spool(s)
        .args(["-q", queue, "-f", SENDER, "--"])
        .args(rcpts)
        .stdin(message)
        .run();
    out.assert_ok();
    out.id()
}

/// Enqueues `n` messages (`body(i)`) for `rcpts` into `queue`, a thousand
/// files per mm-enqueue run; returns the ids in enqueue order.
pub(crate) fn enqueue_many(
    s: &TestSpool,
    queue: &str,
    rcpts: &[&str],
    n: usize,
    body: impl Fn(usize) -> Vec<u8>,
) -> Vec<EntryId> {
    let dir = s.work().join(format!("messages-{queue}"));
    std::fs::create_dir_all(&dir).expect("cannot create the message directory");
    let files: Vec<PathBuf> = (0..n)
        .map(|i| {
            let p = dir.join(format!("{i}.eml"));
            std::fs::write(&p, body(i)).expect("cannot write a message file");
            p
        })
        .collect();
    let mut ids = Vec::with_capacity(n);
    for chunk in files.chunks(1000) {
        let mut t = Tool::new("mm-enqueue")
            .spool(s)
            .args(["-q", queue, "-f", SENDER]);
        for r in rcpts {
            t = t.args(["--to", r]);
        }
        for f in chunk {
            t = t.arg("--file").arg(f);
        }
        let out = t.run();
        out.assert_ok();
        ids.extend(out.ids());
    }
    assert_eq!(
        ids.len(),
        n,
        "mm-enqueue printed {} ids for {n} files",
        ids.len()
    );
    ids
}

/// The parsed name of an entry file.
pub(crate) fn name_of(path: &Path) -> FileName {
    let n = path.file_name().expect("a file name");
    FileName::parse(n.as_encoded_bytes())
        .unwrap_or_else(|| panic!("{} is not an entry name", path.display()))
}

/// The entry files (any state) of `queue`.
pub(crate) fn entries_in(s: &TestSpool, queue: &str) -> Vec<PathBuf> {
    let dir = s.root().join(queue);
    s.entry_files()
        .into_iter()
        .filter(|p| p.starts_with(&dir))
        .collect()
}

/// The runner lock of `queue_slice` (`out.1-1`) of this host, if made:
/// `.locks/out.1-1.HOST.lock`.
pub(crate) fn lock_file(s: &TestSpool, queue_slice: &str) -> Option<PathBuf> {
    std::fs::read_dir(s.root().join(".locks"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{queue_slice}.")) && n.ends_with(".lock"))
        })
}

/// The single entry file of `queue`.
#[track_caller]
pub(crate) fn only_entry_in(s: &TestSpool, queue: &str) -> PathBuf {
    // A live claim may have its runner's spare beside it (`ID.TOKEN.tmp`,
    // the space reserved for its next save): not a second entry.
    let v: Vec<PathBuf> = entries_in(s, queue)
        .into_iter()
        .filter(|p| {
            let n = name_of(p);
            !(n.state == State::Writing && n.holder.is_some())
        })
        .collect();
    assert!(v.len() == 1, "expected one entry in {queue}/, found {v:#?}");
    v.into_iter().next().expect("one entry")
}

/// `mm-dumpdb --json ID`, parsed.
#[track_caller]
pub(crate) fn dump(s: &TestSpool, id: &EntryId) -> Value {
    let out = Tool::new("mm-dumpdb")
        .spool(s)
        .args(["--json", &id.to_string()])
        .run();
    out.assert_ok();
    let mut v = out.json_lines();
    assert!(v.len() == 1, "mm-dumpdb printed {} objects\n{out}", v.len());
    v.remove(0)
}

/// `mm-dumpdb --raw ID`: the stored message bytes.
#[track_caller]
pub(crate) fn dump_raw(s: &TestSpool, id: &EntryId) -> Vec<u8> {
    let out = Tool::new("mm-dumpdb")
        .spool(s)
        .args(["--raw", &id.to_string()])
        .run();
    out.assert_ok();
    out.stdout
}

/// The recipients of an mm-dumpdb object: address -> (state, last reply).
#[track_caller]
pub(crate) fn rcpt_states(v: &Value) -> BTreeMap<String, (String, String)> {
    let rcpts = v["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {v:#}"));
    rcpts
        .iter()
        .map(|r| {
            (
                r["address"].as_str().expect("address").to_string(),
                (
                    r["state"].as_str().expect("state").to_string(),
                    r["last_reply"].as_str().unwrap_or("").to_string(),
                ),
            )
        })
        .collect()
}

/// One delivered copy's file name, `ID.INDEX.RCPT.PID.SEQ.RANDOM` (see
/// delivery/local.rs): (id, index, recipient).
pub(crate) fn parse_copy_name(name: &str) -> (String, String, String) {
    let odd = || panic!("maildir name {name:?} is not ID.INDEX.RCPT.PID.SEQ.RANDOM");
    let (id, rest) = name
        .split_at_checked(mm_core::id::ID_LEN)
        .unwrap_or_else(odd);
    let (index, rest) = rest
        .strip_prefix('.')
        .and_then(|r| r.split_once('.'))
        .unwrap_or_else(odd);
    let parts: Vec<&str> = rest.rsplitn(4, '.').collect();
    if parts.len() != 4 {
        odd();
    }
    (id.to_string(), index.to_string(), parts[3].to_string())
}

/// The file names in `dir/new`.
pub(crate) fn maildir_names(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir.join("new")) else {
        return Vec::new();
    };
    rd.map(|de| {
        de.expect("maildir listing")
            .file_name()
            .to_string_lossy()
            .into_owned()
    })
    .collect()
}

/// The copies in maildir `dir`: (entry id, recipient) -> number of files.
pub(crate) fn maildir_copies(dir: &Path) -> BTreeMap<(String, String), usize> {
    let mut out = BTreeMap::new();
    for name in maildir_names(dir) {
        let (id, _, rcpt) = parse_copy_name(&name);
        *out.entry((id, rcpt)).or_default() += 1;
    }
    out
}

/// The content of the one copy for (`id`, `rcpt`) in maildir `dir`.
#[track_caller]
pub(crate) fn maildir_copy(dir: &Path, id: &EntryId, rcpt: &str) -> String {
    let names: Vec<String> = maildir_names(dir)
        .into_iter()
        .filter(|n| {
            let (i, _, r) = parse_copy_name(n);
            i == id.to_string() && r == rcpt
        })
        .collect();
    assert!(
        names.len() == 1,
        "expected one copy of {id} for {rcpt}, found {names:?}"
    );
    std::fs::read_to_string(dir.join("new").join(&names[0])).expect("read a copy")
}

/// Server: mailin-embedded, refusing one RCPT with 550.
#[test]
fn one_recipient_refused_with_550_among_fifty_bounces_alone_and_the_rest_arrive_once() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let refused = "user17@example.com";
    server.refuse_always(refused, 550, "5.1.1 no such user");
    let rcpts: Vec<String> = (0..50).map(|i| format!("user{i}@example.com")).collect();
    let rcpt_refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let id = enqueue(&s, "out", &rcpt_refs, b"Subject: fifty\n\nHello, fifty.\n");

    runq(&s)
        .args(["--once", "--smtp", &server.url()])
        .run()
        .assert_code(0);

    let copies = server.copies();
    for r in &rcpts {
        let want = usize::from(r != refused);
        assert_eq!(
            copies.get(r).copied().unwrap_or(0),
            want,
            "copies for {r}: {copies:?}"
        );
    }
    let got = server.received();
    assert_eq!(got.len(), 1, "one transaction for one domain");
    assert_eq!(got[0].from, SENDER);
    assert!(
        entries_in(&s, "out").is_empty(),
        "the entry is finished: {:?}",
        entries_in(&s, "out")
    );

    let bounce = name_of(&only_entry_in(&s, "bounces")).id;
    let v = dump(&s, &bounce);
    assert_eq!(v["queue"], "bounces", "{v:#}");
    let states = rcpt_states(&v);
    assert_eq!(
        states,
        BTreeMap::from([(
            refused.to_string(),
            ("failed".to_string(), "550 5.1.1 no such user".to_string())
        )]),
        "the bounce record names the refused recipient and the reply"
    );
    let text = Tool::new("mm-dumpdb")
        .spool(&s)
        .arg(bounce.to_string())
        .run();
    text.assert_ok();
    assert!(
        text.stdout_str()
            .contains(&format!("bounce of:    {id} in out: refused")),
        "{text}"
    );
}

/// Server: mailin-embedded, answering 450 to one RCPT once, then accepting it.
#[test]
fn a_recipient_deferred_with_450_is_retried_alone_after_the_retry_delay() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let slow = "slow@example.com";
    server.refuse_once(slow, 450, "4.2.0 mailbox busy, try later");
    let id = enqueue(
        &s,
        "out",
        &["a@example.com", slow, "b@example.com"],
        b"Subject: retry\n\nonce each\n",
    );
    let run = |offset: &str| {
        runq(&s)
            .args(["--once", "--retry-min", "10m", "--smtp", &server.url()])
            .env("MM_TEST_CLOCK_OFFSET", offset)
            .run()
            .assert_code(0);
    };

    run("0");
    let name = name_of(&only_entry_in(&s, "out"));
    assert!(
        name.state == State::Queued && name.due.is_some(),
        "deferred with a due time: {name:?}"
    );
    let v = dump(&s, &id);
    assert_eq!(v["state"], "deferred", "{v:#}");
    let states = rcpt_states(&v);
    assert_eq!(states["a@example.com"].0, "delivered", "{v:#}");
    assert_eq!(states["b@example.com"].0, "delivered", "{v:#}");
    assert_eq!(
        states[slow],
        (
            "pending".to_string(),
            "450 4.2.0 mailbox busy, try later".to_string()
        ),
        "{v:#}"
    );
    assert_eq!(server.received().len(), 1);

    // Not yet due: nothing is sent.
    run("0");
    assert_eq!(
        server.received().len(),
        1,
        "a deferred entry was tried before it was due"
    );

    // Past the 10 min delay: only the deferred recipient is sent to.
    run("660");
    let got = server.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].rcpts, ["a@example.com", "b@example.com"]);
    assert_eq!(got[1].rcpts, [slow]);
    assert!(entries_in(&s, "out").is_empty(), "the entry is finished");
    assert!(entries_in(&s, "bounces").is_empty(), "nothing bounced");
}

/// Server: mailin-embedded, recording the DATA it receives.
#[test]
fn bare_lf_a_lone_dot_nul_and_8bit_bytes_arrive_intact() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let message: &[u8] = b"Subject: dots and bytes\n\nfirst line\n.\n..\n.leading dot\n\
        NUL \x00 in a line\n8-bit \xe9t\xe9 \xff\xfe\n\nlast line\n";
    let id = enqueue(&s, "out", &["r@example.com"], message);
    assert_eq!(
        dump_raw(&s, &id),
        message,
        "the spool keeps the exact bytes"
    );

    runq(&s)
        .args(["--once", "--smtp", &server.url()])
        .run()
        .assert_code(0);

    let got = server.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        !has_bare_lf(&got[0].data),
        "a bare LF went out on the wire: {:?}",
        String::from_utf8_lossy(&got[0].data)
    );
    assert_eq!(
        crlf_to_lf(&got[0].data),
        message,
        "received (modulo CRLF):\n{:?}\nsent:\n{:?}",
        String::from_utf8_lossy(&got[0].data),
        String::from_utf8_lossy(message)
    );
    assert!(entries_in(&s, "out").is_empty());
}

/// Server: Postfix smtp-sink with `-q .` (hangs up without a reply after the
/// end of DATA).
#[test]
fn a_connection_dropped_after_data_defers_every_recipient_and_loses_nothing() {
    let s = TestSpool::new();
    let sink = SmtpSink::start(&["-q", "."]);
    let message = b"Subject: dropped\n\nwill it arrive?\n";
    let rcpts = ["a@example.com", "b@example.com", "c@example.net"];
    let id = enqueue(&s, "out", &rcpts, message);

    runq(&s)
        .args(["--once", "--smtp", &sink.url()])
        .run()
        .assert_code(0);

    let name = name_of(&only_entry_in(&s, "out"));
    assert!(
        name.state == State::Queued && name.due.is_some(),
        "the entry is deferred: {name:?}"
    );
    let v = dump(&s, &id);
    for (addr, (state, reply)) in rcpt_states(&v) {
        assert_eq!(state, "pending", "{addr} in {v:#}");
        assert!(
            reply.contains("end of DATA"),
            "{addr}: reply {reply:?} does not say where it broke"
        );
    }
    let reason = v["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("end of DATA"),
        "the entry's reason: {reason:?}"
    );
    assert_eq!(dump_raw(&s, &id), message, "the message is kept whole");
    assert!(
        entries_in(&s, "bounces").is_empty(),
        "a dropped connection is not a bounce"
    );
}

/// Server: mailin-embedded, stalling 30 s in data_end (the end-of-data
/// reply, bounded by --data-timeout).
#[test]
fn a_server_stalling_past_the_data_timeout_defers_with_a_timeout_reason_in_bounded_time() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(30));
    let id = enqueue(
        &s,
        "out",
        &["a@example.com", "b@example.com"],
        b"Subject: stall\n\nslow\n",
    );

    let started = Instant::now();
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--once", "--data-timeout", "2s", "--smtp", &server.url()])
        .spawn();
    let st = r.wait_within(Duration::from_secs(25));
    let took = started.elapsed();
    assert_eq!(st.code(), Some(0), "{}", r.output());
    assert!(
        took < Duration::from_secs(8),
        "a 2 s data timeout took {took:?} in all\n{}",
        r.output()
    );

    let name = name_of(&only_entry_in(&s, "out"));
    assert!(name.due.is_some(), "deferred: {name:?}");
    let v = dump(&s, &id);
    for (addr, (state, reply)) in rcpt_states(&v) {
        assert_eq!(state, "pending", "{addr}");
        assert!(reply.contains("timeout"), "{addr}: {reply:?}");
    }
    assert!(
        v["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("timeout"),
        "{v:#}"
    );
}

/// Servers: mailin-embedded stalling 30 s, then a second mailin-embedded that
/// accepts at once.
#[test]
fn sigterm_during_a_stalled_delivery_exits_0_within_the_stop_timeout_and_puts_the_entry_back() {
    let s = TestSpool::new();
    let stalled = MailServer::start();
    stalled.stall(Duration::from_secs(30));
    let message = b"Subject: stop\n\nput me back\n";
    let id = enqueue(&s, "out", &["a@example.com", "b@example.com"], message);

    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--stop-timeout", "2s", "--smtp", &stalled.url()])
        .spawn();
    stalled.wait_stalled(1, Duration::from_secs(20));
    assert_eq!(name_of(&only_entry_in(&s, "out")).state, State::Claimed);

    let signalled = Instant::now();
    r.signal("TERM");
    let st = r.wait_within(Duration::from_secs(15));
    let took = signalled.elapsed();
    assert_eq!(st.code(), Some(0), "{}", r.output());
    assert!(
        took < Duration::from_secs(4),
        "exit took {took:?} after SIGTERM with --stop-timeout 2s\n{}",
        r.output()
    );

    let name = name_of(&only_entry_in(&s, "out"));
    assert_eq!(
        name,
        FileName::queued(id),
        "back as queued (.pck, not .bak)"
    );
    let v = dump(&s, &id);
    assert!(
        rcpt_states(&v).values().all(|(st, _)| st == "pending"),
        "{v:#}"
    );
    assert_eq!(dump_raw(&s, &id), message);

    let fixed = MailServer::start();
    runq(&s)
        .args(["--until-empty", "--smtp", &fixed.url()])
        .run()
        .assert_code(0);
    let copies = fixed.copies();
    assert_eq!(
        copies,
        BTreeMap::from([("a@example.com".into(), 1), ("b@example.com".into(), 1)])
    );
    assert!(entries_in(&s, "out").is_empty());
}

/// Lines of an `--exec 'echo "$MM_ID" >> FILE'` counter, counted per id.
fn count_lines(path: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut m = BTreeMap::new();
    for l in text.lines() {
        *m.entry(l.to_string()).or_default() += 1;
    }
    m
}

/// Asserts that every id in `ids` was processed exactly once by the counter.
#[track_caller]
fn assert_each_once(ids: &[EntryId], counts: &BTreeMap<String, usize>) {
    let want: BTreeSet<String> = ids.iter().map(ToString::to_string).collect();
    let missing: Vec<&String> = want.iter().filter(|i| !counts.contains_key(*i)).collect();
    let twice: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let strange: Vec<&String> = counts.keys().filter(|i| !want.contains(*i)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && strange.is_empty(),
        "{} of {} ids never processed (first: {:?}); {} processed more than once (first: {:?}); {} unknown",
        missing.len(),
        want.len(),
        missing.first(),
        twice.len(),
        twice.first(),
        strange.len()
    );
}

/// Server: none (`--discard`; an `--exec` stage appends each id to a file with
/// O_APPEND, which counts the deliveries). Unsliced runners share one lock, so
/// one of them works (with 4 workers) and the others exit at once; the next
/// test has runners that really race.
#[test]
fn four_runners_started_at_once_process_each_of_5000_entries_exactly_once() {
    let s = TestSpool::new();
    let ids = enqueue_many(&s, "out", &["r@example.com"], 5000, |i| {
        format!("Subject: {i}\n\nbody {i}\n").into_bytes()
    });
    let counter = s.work().join("processed");
    let exec = format!("echo \"$MM_ID\" >> '{}'", counter.display());

    let mut runners: Vec<Running> = (0..4)
        .map(|_| {
            Tool::new("mm-runq")
                .spool(&s)
                .args([
                    "--until-empty",
                    "--quiet",
                    "--connections",
                    "4",
                    "--discard",
                    "--exec",
                    &exec,
                ])
                .spawn()
        })
        .collect();
    let mut worked = 0;
    for r in &mut runners {
        let st = r.wait_within(Duration::from_secs(120));
        assert_eq!(st.code(), Some(0), "{}", r.output());
        let err = r.stderr();
        if err.contains("another runner") {
            // The loser of the queue's lock: one line, at once.
            assert_eq!(err.lines().count(), 1, "{}", r.output());
        } else {
            worked += 1;
        }
    }
    assert!(worked >= 1, "no runner did the work");
    assert_each_once(&ids, &count_lines(&counter));
    assert!(
        entries_in(&s, "out").is_empty(),
        "{} entries left",
        entries_in(&s, "out").len()
    );
}

/// Server: none (`--discard` with a counting `--exec`). Runners of different
/// slicings of one queue (1/1, 1/2, 2/2: the lock is per slicing) really race
/// for the same entries, unlike four unsliced runners that take turns on the
/// queue's lock; the claim by rename must still give each entry to one of them.
#[test]
fn runners_of_overlapping_slicings_race_for_the_same_entries_and_process_each_once() {
    let s = TestSpool::new();
    let ids = enqueue_many(&s, "out", &["r@example.com"], 2000, |i| {
        format!("Subject: {i}\n\nbody {i}\n").into_bytes()
    });
    let counter = s.work().join("processed");
    let exec = format!("echo \"$MM_ID\" >> '{}'", counter.display());

    let mut runners: Vec<Running> = ["1/1", "1/2", "2/2", "2/4"]
        .iter()
        .map(|sl| {
            Tool::new("mm-runq")
                .spool(&s)
                .args([
                    "--until-empty",
                    "--quiet",
                    "--slice",
                    sl,
                    "--discard",
                    "--exec",
                    &exec,
                ])
                .spawn()
        })
        .collect();
    for r in &mut runners {
        let st = r.wait_within(Duration::from_secs(120));
        assert_eq!(st.code(), Some(0), "{}", r.output());
    }
    assert_each_once(&ids, &count_lines(&counter));
    assert!(entries_in(&s, "out").is_empty());
}

/// Server: none (one `--deliver-to` maildir per slice).
#[test]
fn three_sliced_runners_split_a_queue_without_overlap_and_miss_nothing() {
    let s = TestSpool::new();
    let ids = enqueue_many(&s, "out", &["r@example.com"], 600, |i| {
        format!("Subject: {i}\n\nbody {i}\n").into_bytes()
    });
    let all: BTreeSet<String> = ids.iter().map(ToString::to_string).collect();

    // What mm-showq says each slice holds, before the run.
    let listed: Vec<BTreeSet<String>> = (1..=3)
        .map(|k| {
            let out = Tool::new("mm-showq")
                .spool(&s)
                .args(["--json", "--slice", &format!("{k}/3"), "out"])
                .run();
            out.assert_ok();
            out.json_lines()
                .iter()
                .map(|v| v["id"].as_str().expect("id").to_string())
                .collect()
        })
        .collect();

    let dirs: Vec<PathBuf> = (1..=3)
        .map(|k| s.work().join(format!("slice{k}")))
        .collect();
    let mut runners: Vec<Running> = (1..=3)
        .map(|k| {
            let d = dirs[k - 1].to_str().expect("utf-8 path");
            Tool::new("mm-runq")
                .spool(&s)
                .args([
                    "--until-empty",
                    "--quiet",
                    "--slice",
                    &format!("{k}/3"),
                    "--deliver-to",
                    d,
                ])
                .spawn()
        })
        .collect();
    for r in &mut runners {
        let st = r.wait_within(Duration::from_secs(120));
        assert_eq!(st.code(), Some(0), "{}", r.output());
    }

    let mut union = BTreeSet::new();
    for (k, d) in dirs.iter().enumerate() {
        let copies = maildir_copies(d);
        assert!(copies.values().all(|n| *n == 1));
        let got: BTreeSet<String> = copies.keys().map(|(id, _)| id.clone()).collect();
        assert!(!got.is_empty(), "slice {}/3 delivered nothing", k + 1);
        assert_eq!(
            got,
            listed[k],
            "slice {}/3 delivered other entries than mm-showq lists for it",
            k + 1
        );
        for id in &got {
            assert!(union.insert(id.clone()), "{id} was delivered by two slices");
        }
    }
    assert_eq!(union, all, "some entries were delivered by no slice");
    assert!(entries_in(&s, "out").is_empty());
}

/// Server: none (`--deliver-to` a maildir).
#[test]
fn a_pipeline_deferred_at_stage_2_resumes_there_without_rerunning_stage_1() {
    let s = TestSpool::new();
    let w = s.work();
    let (runs1, mark, runs3) = (
        w.join("stage1.runs"),
        w.join("stage2.mark"),
        w.join("stage3.runs"),
    );
    let maildir = w.join("maildir");
    let stage1 = format!("echo \"$MM_ID\" >> '{}'", runs1.display());
    let stage2 = format!(
        "if [ ! -e '{m}' ]; then touch '{m}'; echo 'greylisted by the archive, later' >&2; exit 75; fi; sed 's/hello/HELLO/'",
        m = mark.display()
    );
    let stage3 = format!("echo \"$MM_STAGE\" >> '{}'", runs3.display());
    let id = enqueue(
        &s,
        "out",
        &["r@example.com"],
        b"Subject: pipeline\n\nhello, stages\n",
    );
    let run = |offset: &str| {
        runq(&s)
            .args([
                "--once",
                "--retry-min",
                "10m",
                "--deliver-to",
                maildir.to_str().expect("utf-8"),
            ])
            .args(["--exec", &stage1, "--filter", &stage2, "--exec", &stage3])
            .env("MM_TEST_CLOCK_OFFSET", offset)
            .run()
            .assert_code(0);
    };

    run("0");
    assert_eq!(
        std::fs::read_to_string(&runs1)
            .unwrap_or_default()
            .lines()
            .count(),
        1
    );
    assert!(!runs3.exists(), "stage 3 ran although stage 2 deferred");
    let v = dump(&s, &id);
    assert_eq!(v["state"], "deferred", "{v:#}");
    assert_eq!(v["stage"], 1, "the next stage to run is saved: {v:#}");
    let reason = v["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exit 75") && reason.contains("greylisted by the archive"),
        "{reason:?}"
    );

    run("0");
    assert_eq!(
        std::fs::read_to_string(&runs1)
            .unwrap_or_default()
            .lines()
            .count(),
        1,
        "ran before it was due"
    );

    run("660");
    assert_eq!(
        std::fs::read_to_string(&runs1)
            .unwrap_or_default()
            .lines()
            .count(),
        1,
        "stage 1 ran again"
    );
    assert_eq!(
        std::fs::read_to_string(&runs3).unwrap_or_default(),
        "3\n",
        "stage 3 ran once, as stage 3"
    );
    assert!(entries_in(&s, "out").is_empty());
    let text = maildir_copy(&maildir, &id, "r@example.com");
    assert!(
        text.contains("HELLO, stages"),
        "the filter's output was not delivered:\n{text}"
    );
}

/// Server: none (`--deliver-to` a maildir).
#[test]
fn a_stage_exiting_3_shunts_the_entry_with_its_stderr_tail_as_the_reason() {
    let s = TestSpool::new();
    let maildir = s.work().join("maildir");
    let id = enqueue(&s, "out", &["r@example.com"], b"Subject: spam\n\nbuy now\n");
    runq(&s)
        .args(["--once", "--deliver-to", maildir.to_str().expect("utf-8")])
        .args([
            "--exec",
            "echo 'scanning' >&2; echo 'spam score 99 > 5' >&2; exit 3",
        ])
        .run()
        .assert_code(0);

    assert!(entries_in(&s, "out").is_empty());
    assert_eq!(
        only_entry_in(&s, "shunt")
            .file_name()
            .expect("name")
            .to_string_lossy(),
        format!("{id}.psv")
    );
    assert!(
        maildir_copies(&maildir).is_empty(),
        "a shunted entry was delivered"
    );
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--json", "shunt"])
        .run();
    out.assert_ok();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{out}");
    assert_eq!(lines[0]["id"], id.to_string());
    let reason = lines[0]["last_error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exit 3") && reason.contains("spam score 99 > 5"),
        "reason {reason:?}"
    );
    let text = Tool::new("mm-showq").spool(&s).arg("shunt").run();
    text.assert_ok();
    assert!(text.stdout_str().contains("spam score 99 > 5"), "{text}");
}

/// Server: none (`--discard`; the first runner idles in service mode).
#[test]
fn a_second_runner_of_the_same_queue_and_slice_exits_0_at_once_with_one_line() {
    let s = TestSpool::new();
    let mut first = Tool::new("mm-runq")
        .spool(&s)
        .args(["--discard", "--poll", "100ms"])
        .spawn();
    let pid = format!("pid {} ", first.pid());
    poll_until("the first runner's lock", Duration::from_secs(20), || {
        lock_file(&s, "out.1-1")
            .and_then(|l| std::fs::read_to_string(l).ok())
            .is_some_and(|t| t.contains(&pid))
    });

    for args in [
        &["--until-empty", "--discard"][..],
        &["--until-empty", "--discard", "--slice", "1/1"],
    ] {
        let started = Instant::now();
        let out = runq(&s).args(args).run();
        let took = started.elapsed();
        out.assert_code(0);
        let line = out.stderr_one_line();
        assert!(
            line.contains("another runner") && line.contains(pid.trim()),
            "{line}"
        );
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }
    // Another queue has its own lock.
    let other = runq(&s)
        .args(["-q", "in", "--until-empty", "--discard"])
        .run();
    other.assert_code(0);
    assert!(!other.stderr_str().contains("another runner"), "{other}");

    assert!(
        first.try_status().is_none(),
        "the first runner stopped\n{}",
        first.output()
    );
    first.signal("TERM");
    assert_eq!(
        first.wait_within(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        first.output()
    );
}

/// Server: mailin-embedded, answering 450 to one recipient on every attempt.
#[test]
fn a_recipient_still_deferred_after_give_up_after_becomes_an_expired_bounce_record() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let stuck = "stuck@example.com";
    server.refuse_always(stuck, 450, "4.2.2 mailbox full");
    let id = enqueue(
        &s,
        "out",
        &["ok@example.com", stuck],
        b"Subject: expire\n\nsoon\n",
    );
    let run = |offset: &str| {
        runq(&s)
            .args([
                "--once",
                "--give-up-after",
                "1h",
                "--retry-min",
                "10m",
                "--smtp",
                &server.url(),
            ])
            .env("MM_TEST_CLOCK_OFFSET", offset)
            .run()
            .assert_code(0);
    };

    run("0");
    assert_eq!(dump(&s, &id)["state"], "deferred");
    assert!(
        entries_in(&s, "bounces").is_empty(),
        "bounced before the give-up time"
    );

    run("7200");
    assert!(entries_in(&s, "out").is_empty(), "the entry is finished");
    let bounce = name_of(&only_entry_in(&s, "bounces")).id;
    let v = dump(&s, &bounce);
    let states = rcpt_states(&v);
    assert_eq!(states.keys().collect::<Vec<_>>(), [stuck], "{v:#}");
    let (state, reply) = &states[stuck];
    assert_eq!(state, "failed");
    assert!(
        reply.starts_with("expired") && reply.contains("450 4.2.2 mailbox full"),
        "{reply:?}"
    );
    let text = Tool::new("mm-dumpdb")
        .spool(&s)
        .arg(bounce.to_string())
        .run();
    text.assert_ok();
    assert!(
        text.stdout_str()
            .contains(&format!("bounce of:    {id} in out: expired")),
        "{text}"
    );
    assert_eq!(
        server.copies(),
        BTreeMap::from([("ok@example.com".into(), 1)]),
        "nothing dropped, nothing twice"
    );
}

/// Server: none (`--deliver-to` a relative path, run from the scratch
/// directory). Found while writing the tests: creating the maildir syncs its
/// parent, which for a one-component relative path is "" (see the report).
#[test]
fn deliver_to_a_relative_maildir_that_does_not_exist_yet_delivers_the_first_entry() {
    let s = TestSpool::new();
    let id = enqueue(
        &s,
        "out",
        &["r@example.com"],
        b"Subject: relative\n\nhere\n",
    );
    let out = Command::new(require_bin("mm-runq"))
        .current_dir(s.work())
        .env_remove("MM_TEST_CLOCK_OFFSET")
        .env("MM_SPOOL", s.root())
        .args(["--once", "--deliver-to", "maildir"])
        .output()
        .expect("run mm-runq");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        entries_in(&s, "out").is_empty(),
        "the entry was not delivered:\n{err}"
    );
    assert_eq!(
        maildir_copies(&s.work().join("maildir")).get(&(id.to_string(), "r@example.com".into())),
        Some(&1)
    );
}

/// Server: none (`--deliver-to` a maildir). The copies of one entry are told
/// apart by the recipient's index in the name, as delivery/local.rs documents.
#[test]
fn maildir_copies_are_named_with_the_recipients_index_and_carry_the_envelope() {
    let s = TestSpool::new();
    let maildir = s.work().join("maildir");
    let rcpts = ["a@example.com", "b@example.com", "c@example.net"];
    let id = enqueue(&s, "out", &rcpts, b"Subject: three\n\nbody\n");
    runq(&s)
        .args(["--once", "--deliver-to", maildir.to_str().expect("utf-8")])
        .run()
        .assert_code(0);

    for (i, r) in rcpts.iter().enumerate() {
        let text = maildir_copy(&maildir, &id, r);
        assert_eq!(
            text,
            format!("Return-Path: <{SENDER}>\nDelivered-To: {r}\nSubject: three\n\nbody\n")
        );
        let names: Vec<(String, String, String)> = maildir_names(&maildir)
            .iter()
            .map(|n| parse_copy_name(n))
            .filter(|(_, _, rc)| rc == r)
            .collect();
        assert_eq!(
            names[0].1,
            i.to_string(),
            "index in the name of the copy for {r}: {names:?}"
        );
    }
}

/// `--dry-run` lists exactly the due entries of the slice, oldest first, and
/// changes nothing (no claim, no runner record, no lock).
#[test]
fn dry_run_lists_the_due_entries_of_the_slice_oldest_first_and_changes_nothing() {
    let s = TestSpool::new();
    let ids = enqueue_many(&s, "out", &["bob@example.org"], 12, |i| {
        format!("Subject: {i}\n\nbody {i}\n").into_bytes()
    });
    let before = s.snapshot();
    for slice in ["1/2", "2/2"] {
        let out = runq(&s)
            .args(["-q", "out", "--dry-run", "--discard", "--slice", slice])
            .run();
        out.assert_ok();
        let stdout = out.stdout_str();
        let listed: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("would process "))
            .collect();
        let mut want: Vec<EntryId> = ids
            .iter()
            .copied()
            .filter(|id| {
                slice
                    .parse::<mm_core::Slice>()
                    .unwrap()
                    .contains(id.hash_prefix())
            })
            .collect();
        want.sort();
        let want: Vec<String> = want.iter().map(|i| i.to_string()).collect();
        assert_eq!(listed, want, "slice {slice}:\n{stdout}");
        assert!(
            stdout.contains(&format!("{} entr", want.len()))
                && stdout.contains("nothing was claimed"),
            "{stdout}"
        );
    }
    before.assert_same(&s.snapshot(), "mm-runq --dry-run");
}

/// Transport: a maildir (no server). logrotate's way: the log is renamed,
/// SIGHUP makes the service runner open a new file at the old path, and
/// the lines of later entries go there, none is lost.
#[test]
fn sighup_reopens_the_log_so_logrotate_can_move_it() {
    let s = TestSpool::new();
    let log = s.work().join("runq.log");
    let maildir = s.work().join("maildir");
    let first = enqueue(&s, "out", &["a@example.com"], b"Subject: 1\n\none\n");
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args([
            "--poll".as_ref(),
            "100ms".as_ref(),
            "--deliver-to".as_ref(),
            maildir.as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ])
        .spawn();
    let logged = |path: &Path, id: &EntryId| {
        std::fs::read_to_string(path).is_ok_and(|t| t.contains(&format!("{id} delivered=1")))
    };
    let until = Instant::now() + Duration::from_secs(20);
    while !logged(&log, &first) {
        assert!(
            Instant::now() < until,
            "first entry never logged\n{}",
            r.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rotated = s.work().join("runq.log.1");
    std::fs::rename(&log, &rotated).expect("rotate the log");
    r.signal("HUP");
    // The flag is read at the next line: give the signal a moment to land.
    std::thread::sleep(Duration::from_millis(200));
    let second = enqueue(&s, "out", &["b@example.com"], b"Subject: 2\n\ntwo\n");
    while !logged(&log, &second) {
        assert!(
            Instant::now() < until,
            "second entry not logged in the new file\n{}",
            r.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(logged(&rotated, &first), "the rotated file lost its lines");
    assert!(
        !logged(&rotated, &second),
        "written to the rotated file after SIGHUP"
    );
    r.signal("TERM");
    assert_eq!(
        r.wait_within(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        r.output()
    );
}

/// A long `--until-empty` drain on a terminal (a pseudo-terminal made by
/// script(1)) shows a progress bar, entries done of those due with the rate
/// and the time left, and every log line still arrives whole, on a line of
/// its own; off a terminal (a pipe) the output is the log lines alone, not
/// a byte of bar.
#[test]
fn a_drain_on_a_terminal_shows_a_progress_bar_and_off_one_only_the_log() {
    const N: usize = 400;
    let drain_on_a_terminal = |s: &TestSpool| {
        let cmd = format!(
            "{} --until-empty --discard",
            require_bin("mm-runq").display()
        );
        let out = Tool::program("script")
            .spool(s)
            .env("TERM", "xterm")
            .args(["-qefc", &cmd, "/dev/null"])
            .run();
        out.assert_code(0);
        out
    };
    let body = |i: usize| format!("Subject: {i}\n\nbar\n").into_bytes();

    let tty = TestSpool::new();
    enqueue_many(&tty, "out", &["r@example.com"], N, body);
    let out = drain_on_a_terminal(&tty);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&format!("/{N} entries, ")) && text.contains(" left"),
        "no progress bar on a terminal\n{text}"
    );
    // Each log line whole: what the bar drew is taken off before it (`\r`,
    // erase line), and the line ends before the bar is drawn again.
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let l = l.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
            l.trim_start_matches("\x1b[2K").to_string()
        })
        .filter(|l| l.contains(" mm/runq["))
        .collect();
    let sent = lines.iter().filter(|l| l.contains("status=sent")).count();
    assert_eq!(sent, N, "log lines lost or garbled under the bar\n{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("20") && !l.contains('\x1b')),
        "{lines:#?}"
    );
    assert!(entries_in(&tty, "out").is_empty());

    let pipe = TestSpool::new();
    enqueue_many(&pipe, "out", &["r@example.com"], N, body);
    let out = runq(&pipe).args(["--until-empty", "--discard"]).run();
    out.assert_code(0);
    let log = out.stderr_str();
    assert!(!log.contains(['\r', '\x1b']), "a bar off a terminal\n{log}");
    assert!(!log.contains(" entries, "), "{log}");
    assert!(
        log.lines().all(|l| l.contains(" mm/runq[")),
        "only log lines off a terminal\n{log}"
    );
    assert_eq!(log.matches("status=sent").count(), N);
}
