//! The admin tools (mm-flush, …) on queues that runners drain at the same
//! time, with an SMTP server's log as the judge: what a flush makes due is
//! delivered within a pass, a live claim is refused by every operation, and
//! entries are found in buckets and in the queue's top directory alike.

use std::time::Duration;

use mm_core::{EntryId, State};
use mm_e2e::{TestSpool, Tool};

use crate::runq::{dump, enqueue, entries_in, name_of, only_entry_in, poll_until, runq};
use crate::smtp::MailServer;

/// `TOOL` on spool `s`.
fn admin(s: &TestSpool, tool: &str) -> Tool {
    assert!(mm_e2e::bin(tool).is_file(), "{tool} is not built");
    Tool::new(tool).spool(s)
}

/// Waits until `rcpt` got one copy, then a few polls more, and checks that
/// nothing else was sent in the meantime: `total` transactions in all.
fn delivered_once_and_no_more(server: &MailServer, rcpt: &str, total: usize) {
    poll_until(
        &format!("{rcpt} gets its copy"),
        Duration::from_secs(20),
        || server.copies().get(rcpt) == Some(&1),
    );
    std::thread::sleep(Duration::from_millis(800));
    let got = server.received();
    assert_eq!(got.len(), total, "{got:?}");
}

/// One entry for fast@ and slow@example.net, delivered to fast@ and deferred
/// for slow@ (450 once, retry in an hour).
fn half_delivered() -> (TestSpool, MailServer, EntryId) {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.refuse_once("slow@example.net", 450, "4.2.0 busy");
    let id = enqueue(
        &s,
        "out",
        &["fast@example.net", "slow@example.net"],
        b"Subject: partial\n\nx\n",
    );
    runq(&s)
        .args(["--once", "--retry-min", "1h", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    (s, server, id)
}

/// The entry files of the spool (paths), sorted.
fn entry_names(s: &TestSpool) -> Vec<std::path::PathBuf> {
    let mut v = s.entry_files();
    v.sort();
    v
}

/// Enqueues one message per recipient and has a runner defer each (450 once,
/// retry in an hour); returns the ids.
fn deferred(s: &TestSpool, server: &MailServer, rcpts: &[&str]) -> Vec<EntryId> {
    let ids: Vec<EntryId> = rcpts
        .iter()
        .map(|r| {
            server.refuse_once(r, 450, "4.2.0 try later");
            enqueue(s, "out", &[r], b"Subject: flush me\n\nbody\n")
        })
        .collect();
    runq(s)
        .args(["--once", "--retry-min", "1h", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    for p in entries_in(s, "out") {
        let n = name_of(&p);
        assert!(n.state == State::Queued && n.due.is_some(), "{n:?}");
    }
    assert!(server.received().is_empty(), "{:?}", server.received());
    ids
}

/// Server: mailin-embedded (450 once per recipient, then 250), with a runner
/// service polling the queue while mm-flush runs.
#[test]
fn flush_makes_deferred_entries_due_in_buckets_and_the_drop_in_and_a_running_runner_delivers_them()
{
    let s = TestSpool::new();
    let server = MailServer::start();
    let rcpts = ["a@example.net", "b@example.net", "c@example.org"];
    let ids = deferred(&s, &server, &rcpts);

    // One of them an admin moved into the queue's top directory (the drop-in).
    let c_path = entries_in(&s, "out")
        .into_iter()
        .find(|p| name_of(p).id == ids[2])
        .unwrap();
    let dropped = s.root().join("out").join(c_path.file_name().unwrap());
    std::fs::rename(&c_path, &dropped).unwrap();

    // ALL only when spelled out.
    admin(&s, "mm-flush").run().assert_code(64);

    // A dry run changes nothing and names every deferred entry, the drop-in's too.
    let before = entry_names(&s);
    let out = admin(&s, "mm-flush").args(["--all", "--dry-run"]).run();
    out.assert_ok();
    let text = out.stdout_str();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().all(|l| l.starts_with("would be flushed ")),
        "{text}"
    );
    assert_eq!(
        entry_names(&s),
        before,
        "mm-flush --dry-run changed entries"
    );

    // A runner service drains the queue while we flush: the selection first.
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args([
            "--poll",
            "200ms",
            "--retry-min",
            "1h",
            "--smtp",
            &server.url(),
        ])
        .spawn();
    let out = admin(&s, "mm-flush")
        .args(["--all", "--domain", "example.org", "--json"])
        .run();
    out.assert_ok();
    let lines = out.json_lines();
    assert_eq!(lines.len(), 1, "{}", out.stdout_str());
    assert_eq!(lines[0]["result"], "flushed");
    assert_eq!(lines[0]["id"], ids[2].to_string());
    // Only the flushed entry is sent.
    delivered_once_and_no_more(&server, "c@example.org", 1);

    // Then the rest.
    let out = admin(&s, "mm-flush").arg("--all").run();
    out.assert_ok();
    assert_eq!(out.stdout_str().lines().count(), 2, "{}", out.stdout_str());
    poll_until("every entry is delivered", Duration::from_secs(20), || {
        entries_in(&s, "out").is_empty()
    });
    r.signal("TERM");
    assert_eq!(
        r.wait_within(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        r.output()
    );
    let copies = server.copies();
    for rc in rcpts {
        assert_eq!(copies.get(rc), Some(&1), "{copies:?}");
    }
    // A flushed id named again is simply not there any more.
    admin(&s, "mm-flush")
        .arg(ids[0].to_string())
        .run()
        .assert_code(66);
}

/// Server: mailin-embedded, recording the history line and per-recipient
/// progress of a flushed entry.
#[test]
fn a_flushed_entry_keeps_its_progress_and_says_who_flushed_it() {
    let (s, server, id) = half_delivered();
    let out = admin(&s, "mm-flush").arg(id.to_string()).run();
    out.assert_ok();
    assert!(
        out.stdout_str().starts_with("flushed "),
        "{}",
        out.stdout_str()
    );
    let name = name_of(&only_entry_in(&s, "out"));
    assert_eq!((name.state, name.due), (State::Queued, None), "due now");
    let v = dump(&s, &id);
    let history = v.to_string();
    assert!(history.contains("flushed by mm-flush ("), "{v:#}");
    // An entry already due is skipped, not an error.
    let out = admin(&s, "mm-flush").arg(id.to_string()).run();
    out.assert_ok();
    assert!(
        out.stdout_str().starts_with("skipped "),
        "{}",
        out.stdout_str()
    );
    runq(&s)
        .args(["--once", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    let got = server.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1].rcpts, ["slow@example.net"], "only the pending one");
}

/// Server: mailin-embedded stalling in DATA, so a runner holds a live claim.
#[test]
fn a_live_claim_is_refused_by_every_admin_tool() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(30));
    let id = enqueue(&s, "out", &["a@example.com"], b"Subject: held\n\nx\n");
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--stop-timeout", "2s", "--smtp", &server.url()])
        .spawn();
    server.wait_stalled(1, Duration::from_secs(20));
    let claimed = only_entry_in(&s, "out");
    assert_eq!(name_of(&claimed).state, State::Claimed);
    for tool in crate::admin::TOOLS {
        let out = admin(&s, tool).arg(id.to_string()).run();
        out.assert_code(75);
        assert!(
            out.stdout_str().starts_with("busy ") && out.stdout_str().contains("left alone"),
            "{tool}: {}",
            out.stdout_str()
        );
        assert!(claimed.exists(), "{tool} touched a live claim");
    }
    server.release();
    r.signal("TERM");
    r.wait_within(Duration::from_secs(15));
}

/// The admin tools that change entries.
pub(crate) const TOOLS: &[&str] = &["mm-flush", "mm-hold", "mm-release", "mm-delete"];

/// Server: mailin-embedded, with a runner service polling the queue: a held
/// entry is never delivered while held, is shown as held (who, when, why) and
/// is delivered within a pass of its release; its neighbour goes at once.
#[test]
fn a_held_entry_is_skipped_by_a_running_runner_shown_as_held_and_delivered_after_release() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let ids = deferred(&s, &server, &["held@example.net", "free@example.org"]);
    let out = admin(&s, "mm-hold")
        .args([
            "--all",
            "--domain",
            "example.net",
            "-r",
            "their MX refuses us",
        ])
        .run();
    out.assert_ok();
    assert!(
        out.stdout_str()
            .starts_with(&format!("held {} out (", ids[0])),
        "{}",
        out.stdout_str()
    );
    let held = entries_in(&s, "out")
        .into_iter()
        .find(|p| name_of(p).id == ids[0])
        .unwrap();
    assert_eq!(name_of(&held).state, State::Held);
    assert!(
        held.to_string_lossy().ends_with(".hld"),
        "{}",
        held.display()
    );

    // Held entries are not flushed (release them instead).
    let out = admin(&s, "mm-flush").arg(ids[0].to_string()).run();
    out.assert_ok();
    assert!(
        out.stdout_str().starts_with("skipped "),
        "{}",
        out.stdout_str()
    );
    // Flush the other one, with a runner service running.
    admin(&s, "mm-flush").arg("--all").run().assert_ok();
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--poll", "200ms", "--smtp", &server.url()])
        .spawn();
    // Only the free one: a held entry is never sent.
    delivered_once_and_no_more(&server, "free@example.org", 1);
    assert_eq!(name_of(&held).state, State::Held);
    assert!(held.exists());

    // Shown as held: by whom, when, why.
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--json", "--state", "held", "out"])
        .run();
    out.assert_ok();
    let rows = out.json_lines();
    assert_eq!(rows.len(), 1, "{}", out.stdout_str());
    assert_eq!(rows[0]["state"], "held");
    assert_eq!(rows[0]["last_error"], "their MX refuses us");
    assert_eq!(rows[0]["hold"]["reason"], "their MX refuses us");
    assert!(
        rows[0]["hold"]["by"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{:#}",
        rows[0]
    );
    let summary = Tool::new("mm-showq").spool(&s).run();
    summary.assert_ok();
    assert!(
        summary.stdout_str().contains("HELD"),
        "{}",
        summary.stdout_str()
    );
    let text = Tool::new("mm-dumpdb")
        .spool(&s)
        .arg(ids[0].to_string())
        .run();
    text.assert_ok();
    assert!(
        text.stdout_str()
            .lines()
            .any(|l| l.starts_with("held:") && l.contains("their MX refuses us")),
        "{}",
        text.stdout_str()
    );

    // Release: delivered within a pass, once.
    let out = admin(&s, "mm-release").arg("--all").run();
    out.assert_ok();
    assert!(
        out.stdout_str().starts_with("released "),
        "{}",
        out.stdout_str()
    );
    poll_until(
        "the released entry is delivered",
        Duration::from_secs(20),
        || entries_in(&s, "out").is_empty(),
    );
    r.signal("TERM");
    assert_eq!(
        r.wait_within(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        r.output()
    );
    assert_eq!(server.copies().get("held@example.net"), Some(&1));
    let history = server.received();
    assert_eq!(history.len(), 2, "{history:?}");
}

/// Server: mailin-embedded. Six days on hold with a five-day give-up time:
/// the entry does not expire, and once released it is delivered, not bounced.
#[test]
fn a_held_entry_does_not_expire_while_held() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let ids = deferred(&s, &server, &["late@example.net"]);
    admin(&s, "mm-hold")
        .arg(ids[0].to_string())
        .run()
        .assert_ok();
    let six_days = (6 * 86_400).to_string();
    runq(&s)
        .args(["--once", "--give-up-after", "5d", "--smtp", &server.url()])
        .env("MM_TEST_CLOCK_OFFSET", &six_days)
        .run()
        .assert_code(0);
    assert_eq!(name_of(&only_entry_in(&s, "out")).state, State::Held);
    admin(&s, "mm-release")
        .arg(ids[0].to_string())
        .env("MM_TEST_CLOCK_OFFSET", &six_days)
        .run()
        .assert_ok();
    runq(&s)
        .args(["--once", "--give-up-after", "5d", "--smtp", &server.url()])
        .env("MM_TEST_CLOCK_OFFSET", &six_days)
        .run()
        .assert_code(0);
    assert_eq!(server.copies().get("late@example.net"), Some(&1));
    assert!(
        entries_in(&s, "bounces").is_empty(),
        "it expired while held"
    );
    assert!(entries_in(&s, "out").is_empty());
}

/// Server: mailin-embedded, with a runner service polling the queue: a
/// deleted entry is never delivered, its line names its envelope and who
/// removed it, and its neighbour is delivered.
#[test]
fn a_deleted_entry_is_never_delivered_and_its_line_says_what_and_who() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let ids = deferred(&s, &server, &["gone@example.net", "kept@example.org"]);
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--poll", "200ms", "--smtp", &server.url()])
        .spawn();
    let out = admin(&s, "mm-delete").arg(ids[0].to_string()).run();
    out.assert_ok();
    let line = out.stdout_str();
    assert!(
        line.starts_with(&format!(
            "deleted {} out (from=<{}> to=<gone@example.net> by ",
            ids[0],
            crate::runq::SENDER
        )),
        "{line}"
    );
    assert!(out.stderr_str().is_empty(), "quiet: {}", out.stderr_str());
    admin(&s, "mm-flush").arg("--all").run().assert_ok();
    delivered_once_and_no_more(&server, "kept@example.org", 1);
    r.signal("TERM");
    assert_eq!(
        r.wait_within(Duration::from_secs(15)).code(),
        Some(0),
        "{}",
        r.output()
    );
    assert!(!server.copies().contains_key("gone@example.net"));
    assert!(entries_in(&s, "out").is_empty());
    assert!(
        entries_in(&s, "bounces").is_empty(),
        "a plain delete writes no bounce"
    );
    admin(&s, "mm-delete")
        .arg(ids[0].to_string())
        .run()
        .assert_code(66);
}

/// Server: mailin-embedded (one recipient delivered, one deferred): giving
/// up writes one bounce record for the pending recipient only.
#[test]
fn delete_bounce_gives_up_on_the_pending_recipients_with_one_bounce_record() {
    let (s, _server, id) = half_delivered();
    let dry = admin(&s, "mm-delete")
        .args(["--bounce", "--all", "--dry-run"])
        .run();
    dry.assert_ok();
    assert!(
        dry.stdout_str().starts_with("would be bounced "),
        "{}",
        dry.stdout_str()
    );
    assert_eq!(entries_in(&s, "out").len(), 1);
    let out = admin(&s, "mm-delete")
        .args(["--bounce", "--json", &id.to_string()])
        .run();
    out.assert_ok();
    let row = &out.json_lines()[0];
    assert_eq!(row["result"], "bounced", "{row:#}");
    assert!(entries_in(&s, "out").is_empty());
    let records = entries_in(&s, "bounces");
    assert_eq!(records.len(), 1, "{records:?}");
    let rec_id = name_of(&records[0]).id;
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains(&rec_id.to_string()),
        "{row:#}"
    );
    let v = dump(&s, &rec_id);
    assert_eq!(v["bounce"]["reason"], "given up", "{v:#}");
    assert_eq!(v["bounce"]["original_id"], id.to_string(), "{v:#}");
    let rcpts: Vec<&str> = v["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    assert_eq!(rcpts, ["slow@example.net"], "{v:#}");
    assert!(
        v["recipients"][0]["last_reply"]
            .as_str()
            .unwrap()
            .starts_with("given up by mm-delete ("),
        "{v:#}"
    );
}

/// Server: mailin-embedded. A hold rule for a destination (`--all --domain D
/// --for 2h`) is a file in the spool, so every runner process honours it:
/// mail for D that arrives later is held by the runner without an attempt,
/// other mail goes; when the rule ends, the held mail comes back spread over
/// `--spread` (each entry's own time, from its name) and is delivered once.
#[test]
fn a_destination_hold_rule_holds_later_mail_too_counts_no_attempt_and_ends_spread_out() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let old = deferred(&s, &server, &["early@example.net"])[0];
    let out = admin(&s, "mm-hold")
        .args([
            "--all",
            "--domain",
            "example.net",
            "--for",
            "2h",
            "--spread",
            "10m",
        ])
        .args(["-r", "their maintenance"])
        .run();
    out.assert_ok();
    assert!(
        out.stdout_str()
            .starts_with(&format!("held {old} out (until ")),
        "{}",
        out.stdout_str()
    );
    assert!(
        s.root().join(".holds/example.net").is_file(),
        "the rule is on disk"
    );

    let late = enqueue(&s, "out", &["late@example.net"], b"Subject: late\n\nx\n");
    let other = enqueue(&s, "out", &["other@example.org"], b"Subject: other\n\nx\n");
    runq(&s)
        .args(["--once", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    assert_eq!(server.copies().get("other@example.org"), Some(&1));
    assert_eq!(server.received().len(), 1, "{:?}", server.received());
    let names: Vec<_> = entries_in(&s, "out").iter().map(|p| name_of(p)).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let now = mm_core::clock::now_secs();
    for n in &names {
        assert_eq!(n.state, State::Held, "{n:?}");
        let until = n.due.expect("a timed hold");
        assert!(
            until >= now + 7200 - 5 && until < now + 7200 + 600 + 5,
            "{n:?} ends outside the rule's end plus its spread"
        );
    }
    let v = dump(&s, &late);
    assert_eq!(v["attempts"], 0, "an attempt was counted while held: {v:#}");
    assert!(
        v.to_string().contains("the hold rule for example.net"),
        "{v:#}"
    );
    assert!(!server.copies().contains_key("late@example.net"));
    let _ = other;

    // Past the end and the spread: each comes back and is delivered once.
    runq(&s)
        .args(["--once", "--smtp", &server.url()])
        .env("MM_TEST_CLOCK_OFFSET", (7200 + 700).to_string())
        .run()
        .assert_code(0);
    let copies = server.copies();
    assert_eq!(copies.get("late@example.net"), Some(&1), "{copies:?}");
    assert_eq!(copies.get("early@example.net"), Some(&1), "{copies:?}");
    assert!(entries_in(&s, "out").is_empty());

    // mm-release --all --domain ends a rule early.
    admin(&s, "mm-hold")
        .args(["--all", "--domain", "example.net", "--for", "1h"])
        .run()
        .assert_ok();
    let out = admin(&s, "mm-release")
        .args(["--all", "--domain", "example.net"])
        .run();
    out.assert_ok();
    assert!(
        out.stdout_str()
            .contains("removed the hold rule for example.net"),
        "{}",
        out.stdout_str()
    );
    assert!(!s.root().join(".holds/example.net").exists());
}

/// Servers: none during the outage (a closed port), then mailin-embedded.
/// The backlog procedure of operations.md section 3 with the tools only: an
/// outage defers 600 entries, an admin moved 60 of them into the queue's top
/// directory meanwhile; `mm-flush --all` makes every one due (the drop-in's
/// too, which a loop over buckets missed: issue 12) and one `--until-empty`
/// run delivers each exactly once.
#[test]
fn the_backlog_procedure_with_mm_flush_delivers_every_deferred_entry_once_drop_in_included() {
    let s = TestSpool::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("smtp://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let ids = crate::runq::enqueue_many(&s, "out", &["list@example.net"], 600, |i| {
        format!("Subject: backlog {i}\n\nx\n").into_bytes()
    });
    runq(&s)
        .args([
            "--until-empty",
            "--quiet",
            "--retry-min",
            "1h",
            "--smtp",
            &dead,
        ])
        .args(["--connect-timeout", "2s"])
        .run()
        .assert_code(0);
    let files = entries_in(&s, "out");
    assert_eq!(files.len(), 600);
    for p in files.iter().take(60) {
        std::fs::rename(p, s.root().join("out").join(p.file_name().unwrap())).unwrap();
    }
    let summary = Tool::new("mm-showq").spool(&s).arg("--json").run();
    summary.assert_ok();
    let out_row = summary
        .json_lines()
        .into_iter()
        .find(|r| r["queue"] == "out")
        .unwrap();
    assert_eq!(out_row["deferred"], 600, "{out_row}");

    let out = admin(&s, "mm-flush").args(["--all", "--json"]).run();
    out.assert_ok();
    let rows = out.json_lines();
    assert_eq!(rows.len(), 600);
    assert!(rows.iter().all(|r| r["result"] == "flushed"));

    let server = MailServer::start();
    runq(&s)
        .args(["--until-empty", "--quiet", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    assert!(entries_in(&s, "out").is_empty());
    let got = server.received();
    assert_eq!(got.len(), ids.len(), "each entry once");
}

/// `--json` into a pipe closed early (`| head -1`) is a success, as the
/// text form is (issue 12, item 6): the write error is a broken pipe.
#[test]
fn json_output_into_a_closed_pipe_exits_0() {
    use std::io::{BufRead, BufReader};
    let s = TestSpool::new();
    crate::runq::enqueue_many(&s, "out", &["a@example.net"], 2000, |i| {
        format!("Subject: {i}\n\nx\n").into_bytes()
    });
    for tool in [
        &["mm-showq", "--json", "out"][..],
        &["mm-hold", "--all", "--dry-run", "--json"],
    ] {
        let mut child = std::process::Command::new(mm_e2e::bin(tool[0]))
            .args(&tool[1..])
            .env("MM_SPOOL", s.root())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.starts_with('{'), "{first}");
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{tool:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A queue name that is no queue (a typo) is 66 and one line naming the
/// queues there are, not an empty listing (issue 12, item 6); a well-known
/// queue with no directory yet is simply empty.
#[test]
fn a_queue_that_is_not_there_is_66_not_an_empty_queue() {
    let s = TestSpool::new();
    enqueue(&s, "out", &["a@example.com"], b"Subject: x\n\nx\n");
    for args in [
        &["mm-showq", "nosuchq"][..],
        &["mm-unbad", "--from", "nosuchq", "--all"],
        &["mm-recover", "-q", "nosuchq"],
        &["mm-flush", "-q", "nosuchq", "--all"],
        &["mm-hold", "-q", "nosuchq", "--all"],
        &["mm-delete", "-q", "nosuchq", "--all"],
    ] {
        let out = Tool::new(args[0]).spool(&s).args(&args[1..]).run();
        out.assert_code(66);
        let line = out.stderr_one_line();
        assert!(
            line.contains("no queue nosuchq") && line.contains("out"),
            "{args:?}: {line}"
        );
    }
    Tool::new("mm-showq")
        .spool(&s)
        .arg("shunt")
        .run()
        .assert_ok();
}

/// `mm-showq -q QUEUE` and `mm-recover QUEUE` take the forms the other
/// tools take (issue 12, item 6).
#[test]
fn showq_and_recover_take_a_queue_both_ways() {
    let s = TestSpool::new();
    enqueue(&s, "out", &["a@example.com"], b"Subject: x\n\nx\n");
    let a = Tool::new("mm-showq").spool(&s).arg("out").run();
    let b = Tool::new("mm-showq").spool(&s).args(["-q", "out"]).run();
    a.assert_ok();
    b.assert_ok();
    assert_eq!(a.stdout_str(), b.stdout_str());
    let a = Tool::new("mm-recover")
        .spool(&s)
        .args(["--dry-run", "-q", "out"])
        .run();
    let b = Tool::new("mm-recover")
        .spool(&s)
        .args(["--dry-run", "out"])
        .run();
    a.assert_ok();
    b.assert_ok();
    assert_eq!(a.stdout_str(), b.stdout_str());
    Tool::new("mm-recover")
        .spool(&s)
        .arg("nosuchq")
        .run()
        .assert_code(66);
}

/// Server: mailin-embedded (one entry deferred). A deletion's line goes to
/// the system log too (facility mail, notice, tagged `mm/delete` as
/// postsuper's are `postfix/postsuper`): the entry and its history are gone,
/// so that line is the record. A dry run logs nothing.
#[test]
fn a_deletion_is_logged_to_syslog_and_a_dry_run_is_not() {
    let s = TestSpool::new();
    let server = MailServer::start();
    let ids = deferred(&s, &server, &["gone@example.net"]);
    let sock_path = s.tmp().join("syslog.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let received = || {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    };
    admin(&s, "mm-delete")
        .args(["--all", "--dry-run"])
        .env("MM_TEST_SYSLOG", &sock_path)
        .run()
        .assert_ok();
    assert_eq!(
        received(),
        Vec::<String>::new(),
        "a dry run changes nothing"
    );
    let out = admin(&s, "mm-delete")
        .arg(ids[0].to_string())
        .env("MM_TEST_SYSLOG", &sock_path)
        .run();
    out.assert_ok();
    let got = received();
    assert_eq!(got.len(), 1, "{got:#?}");
    let (head, line) = got[0].split_once("]: ").unwrap();
    assert!(head.starts_with("<21>mm/delete["), "{}", got[0]);
    assert_eq!(
        line,
        out.stdout_str().trim_end(),
        "the same line as stdout's"
    );
    assert!(
        line.starts_with(&format!("deleted {} out (from=<", ids[0]))
            && line.contains("gone@example.net"),
        "{line}"
    );
}

/// Server: mailin-embedded, stalled in the transaction so that a runner
/// holds a matching entry. `mm-delete --all` (and `mm-hold --all`) with a
/// selection reports that claim busy and exits 75 instead of passing over
/// it with exit 0 while the runner sends it; mm-flush --all, for which a
/// claimed entry has nothing to do, still passes over it.
#[test]
fn all_reports_a_live_claim_that_the_selection_takes_as_busy_for_delete_and_hold() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.stall(Duration::from_secs(30));
    let id = enqueue(&s, "out", &["spam@example.net"], b"Subject: spam\n\nx\n");
    let mut r = Tool::new("mm-runq")
        .spool(&s)
        .args(["--stop-timeout", "2s", "--smtp", &server.url()])
        .spawn();
    server.wait_stalled(1, Duration::from_secs(20));
    assert_eq!(name_of(&only_entry_in(&s, "out")).state, State::Claimed);
    for tool in ["mm-delete", "mm-hold"] {
        let out = admin(&s, tool).args(["--all", "--rcpt", "spam@"]).run();
        out.assert_code(75);
        assert!(
            out.stdout_str()
                .starts_with(&format!("busy {id} out (claimed by ")),
            "{tool}: {}",
            out.stdout_str()
        );
        // Not selected: nothing to say.
        let out = admin(&s, tool).args(["--all", "--rcpt", "ham@"]).run();
        out.assert_ok();
        assert_eq!(out.stdout_str(), "", "{tool}");
    }
    admin(&s, "mm-flush").arg("--all").run().assert_ok();
    server.release();
    r.signal("TERM");
    r.wait_within(Duration::from_secs(15));
}
