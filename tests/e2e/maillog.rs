//! The runner's log: one line per recipient outcome in the form of Postfix's
//! maillog, start and stop lines, bounce record ids, levels from typed
//! events (`--quiet` keeps a 550 whose text says "done"), read by a real log
//! analyser (Debian's pflogsumm) when it is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use mm_e2e::TestSpool;

use crate::runq::{enqueue, entries_in, name_of, runq};
use crate::smtp::MailServer;

/// One run over three recipients: sent, deferred (450 4.2.0), bounced
/// (550 5.1.1 … done); returns the entry's id and the log's text.
fn one_run(quiet: bool) -> (TestSpool, mm_core::EntryId, String) {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.refuse_once("slow@example.net", 450, "4.2.0 mailbox busy");
    server.refuse_always(
        "gone@example.org",
        550,
        "5.1.1 user unknown, we are done here",
    );
    let id = enqueue(
        &s,
        "out",
        &["ok@example.com", "slow@example.net", "gone@example.org"],
        b"Subject: log\n\nx\n",
    );
    let log: PathBuf = s.tmp().join("mm.log");
    let url = server.url();
    let log_s = log.to_str().unwrap().to_string();
    let mut args: Vec<&str> = vec!["--once", "--smtp", &url, "--log", &log_s];
    if quiet {
        args.push("--quiet");
    }
    runq(&s).args(args).run().assert_code(0);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    (s, id, text)
}

/// The line of `to`'s outcome.
fn rcpt_line<'a>(text: &'a str, id: &mm_core::EntryId, to: &str) -> Option<&'a str> {
    let key = format!("{id}: to=<{to}>, ");
    text.lines().find(|l| l.contains(&key))
}

/// Server: mailin-embedded (250, 450 once, 550 always).
#[test]
fn each_recipient_outcome_is_one_postfix_style_line_with_relay_delay_dsn_and_status() {
    let (s, id, text) = one_run(false);
    let sent = rcpt_line(&text, &id, "ok@example.com").unwrap_or_else(|| panic!("{text}"));
    assert!(sent.contains(" mm/runq["), "{sent}");
    assert!(sent.contains(", relay=127.0.0.1[127.0.0.1]:"), "{sent}");
    assert!(sent.contains(", delay="), "{sent}");
    assert!(sent.contains(", dsn=2.0.0, status=sent (250"), "{sent}");
    let deferred = rcpt_line(&text, &id, "slow@example.net").unwrap_or_else(|| panic!("{text}"));
    assert!(
        deferred.ends_with(", dsn=4.2.0, status=deferred (450 4.2.0 mailbox busy)"),
        "{deferred}"
    );
    let bounced = rcpt_line(&text, &id, "gone@example.org").unwrap_or_else(|| panic!("{text}"));
    assert!(
        bounced.contains(", dsn=5.1.1, status=bounced (550 5.1.1 user unknown"),
        "{bounced}"
    );
    let records = entries_in(&s, "bounces");
    assert_eq!(records.len(), 1);
    let rec = name_of(&records[0]).id.to_string();
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("{id}: bounce record {rec} written"))),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("mm-runq out 1/1 started: token ")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("out 1/1 stopped: 1 entries")),
        "{text}"
    );
}

/// Server: mailin-embedded, a 550 whose text has " done ": `--quiet` hides
/// the routine lines by their level, not by their text.
#[test]
fn quiet_keeps_a_refusal_whose_text_says_done_and_hides_the_routine_lines() {
    let (_s, id, text) = one_run(true);
    assert!(
        rcpt_line(&text, &id, "gone@example.org").is_some(),
        "{text}"
    );
    assert!(
        rcpt_line(&text, &id, "slow@example.net").is_some(),
        "{text}"
    );
    assert!(rcpt_line(&text, &id, "ok@example.com").is_none(), "{text}");
    assert!(!text.contains(" started: "), "{text}");
    assert!(!text.contains(" stopped: "), "{text}");
}

/// Server: mailin-embedded. Debian's pflogsumm reads the log (as Postfix's,
/// with `--syslog-name=mm`): one delivered, one deferred, one bounced.
#[test]
fn pflogsumm_reads_the_runner_log() {
    let pflogsumm = Path::new("/usr/sbin/pflogsumm");
    assert!(
        pflogsumm.exists(),
        "pflogsumm is not installed: `cargo xtask test` installs it as root, or apt-get install pflogsumm"
    );
    let (s, _id, text) = one_run(false);
    let log = s.tmp().join("for-pflogsumm.log");
    std::fs::write(&log, &text).unwrap();
    let out = Command::new("perl")
        .arg(pflogsumm)
        .args(["--syslog-name=mm", "--problems-first"])
        .arg(&log)
        .output()
        .expect("run pflogsumm");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let count = |what: &str| -> Option<u64> {
        report
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.len() >= 2 && w[1] == what && w[0].parse::<u64>().is_ok())
            .and_then(|w| w[0].parse().ok())
    };
    assert_eq!(count("delivered"), Some(1), "{report}");
    assert_eq!(count("deferred"), Some(1), "{report}");
    assert_eq!(count("bounced"), Some(1), "{report}");
    assert!(report.contains("user unknown"), "{report}");
    // The envelope line gives it the message's size (what it delivered).
    let bytes = report
        .lines()
        .find(|l| l.trim_end().ends_with("bytes delivered"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{report}"));
    assert_ne!(bytes, "0", "{report}");
    eprintln!("{report}");
}

/// Server: mailin-embedded. `--syslog` sends each line as a datagram with
/// its priority (facility mail): info 22, notice 21 (a test socket stands
/// in for /dev/log).
#[test]
fn syslog_lines_carry_the_priority_of_their_kind() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.refuse_always("gone@example.org", 550, "5.1.1 user unknown");
    enqueue(
        &s,
        "out",
        &["ok@example.com", "gone@example.org"],
        b"Subject: s\n\nx\n",
    );
    let sock_path = s.tmp().join("log.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    runq(&s)
        .args(["--once", "--syslog", "--smtp", &server.url()])
        .env("MM_TEST_SYSLOG", &sock_path)
        .run()
        .assert_code(0);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_nonblocking(true).unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let find = |needle: &str| got.iter().find(|l| l.contains(needle)).cloned();
    let sent = find("to=<ok@example.com>").unwrap_or_else(|| panic!("{got:#?}"));
    assert!(sent.starts_with("<22>mm/runq["), "{sent}");
    let bounced = find("to=<gone@example.org>").unwrap_or_else(|| panic!("{got:#?}"));
    assert!(bounced.starts_with("<21>mm/runq["), "{bounced}");
    assert!(
        find(" started: ").is_some_and(|l| l.starts_with("<22>")),
        "{got:#?}"
    );
}

/// Server: none (`--discard`). A claim of a dead runner that has crashed
/// runners three times already is quarantined by the runner's start-up
/// recovery: its line reads `QUEUE ID quarantined: …` like every other
/// line, and the stop line counts it (issue 12, item 6).
#[test]
fn start_up_quarantines_are_counted_and_their_line_puts_the_id_first() {
    let s = TestSpool::new();
    let id = mm_core::EntryId::from_parts(1_700_000_000_000_000, [0x42; 20]);
    let mut e = mm_core::Entry::new(
        &id,
        "owner@example.org",
        &["a@example.com".to_string()],
        b"Subject: poison\n\nx\n".to_vec(),
        "out",
    );
    e.meta.recoveries = 3;
    s.put("out", &mm_core::FileName::claimed(id, "deadbeef0000"), &e);
    let log = s.tmp().join("mm.log");
    runq(&s)
        .args(["--once", "--discard", "--log"])
        .arg(&log)
        .run()
        .assert_code(0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!(" out {id} quarantined: ")), "{text}");
    assert!(text.contains(", 1 quarantined,"), "{text}");
    assert_eq!(entries_in(&s, "bad").len(), 1);
}
