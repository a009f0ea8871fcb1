//! `mm-runq --dsn` on the bounces queue: bounce records become RFC 3464
//! delivery status notifications to the envelope sender, checked with a real
//! MIME parser (Python's email package); never for mail from the null sender.

use std::process::Command;

use mm_e2e::{SmtpSink, TestSpool, Tool};

use crate::runq::{SENDER, entries_in, maildir_copy, maildir_names, name_of, runq};
use crate::smtp::MailServer;

/// Enqueues a message from `sender` for gone@example.org, which the server
/// refuses with 550 5.1.1; returns the bounce record's id.
fn bounced(s: &TestSpool, sender: &str) -> mm_core::EntryId {
    let server = MailServer::start();
    server.refuse_always("gone@example.org", 550, "5.1.1 user unknown");
    let out = Tool::new("mm-enqueue")
        .spool(s)
        .args(["-q", "out", "-f", sender, "--", "gone@example.org"])
        .stdin(&b"Subject: dsn test\nFrom: owner@example.org\n\nbody\n"[..])
        .run();
    out.assert_ok();
    runq(s)
        .args(["--once", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    let records = entries_in(s, "bounces");
    assert_eq!(records.len(), 1, "{records:?}");
    name_of(&records[0]).id
}

/// What the report must be, in Python's email package's reading.
const DSN_CHECK: &str = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=policy.default)
assert m.get_content_type() == 'multipart/report', m.get_content_type()
assert m.get_param('report-type') == 'delivery-status'
parts = [p.get_content_type() for p in m.iter_parts()]
assert parts == ['text/plain', 'message/delivery-status', 'text/rfc822-headers'], parts
ds = list(m.iter_parts())[1]
blocks = ds.get_payload()
assert blocks[0]['Reporting-MTA'].startswith('dns; '), blocks[0]
r = blocks[1]
assert r['Final-Recipient'] == 'rfc822; gone@example.org', r['Final-Recipient']
assert r['Action'] == 'failed'
assert r['Status'] == '5.1.1', r['Status']
assert '550 5.1.1 user unknown' in r['Diagnostic-Code']
hdrs = list(m.iter_parts())[2].get_content()
assert 'Subject: dsn test' in hdrs, hdrs
print('ok', m['To'], m['Auto-Submitted'])
"#;

/// Runs [`DSN_CHECK`] on the message in `path`; its output.
fn python_reads_the_dsn(path: &std::path::Path, copy: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(DSN_CHECK)
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}\n{copy}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Server: mailin-embedded for the refusal; the report goes to a maildir.
#[test]
fn a_bounce_record_becomes_a_delivery_status_notification_that_a_mime_parser_reads() {
    let s = TestSpool::new();
    let rec = bounced(&s, SENDER);
    let dir = s.work().join("dsn-maildir");
    runq(&s)
        .args(["-q", "bounces", "--dsn", "--once", "--deliver-to"])
        .arg(&dir)
        .run()
        .assert_code(0);
    assert!(entries_in(&s, "bounces").is_empty());
    let copy = maildir_copy(&dir, &rec, SENDER);
    let path = s.work().join("dsn.eml");
    std::fs::write(&path, &copy).unwrap();
    let said = python_reads_the_dsn(&path, &copy);
    assert!(
        said.contains(SENDER) && said.contains("auto-replied"),
        "{said}"
    );
}

/// Server: mailin-embedded for the refusal (it refuses `MAIL FROM:<>`, so
/// the record's sender is made the null sender on disk afterwards, as the
/// record of a bounced bounce would have it): no report for mail from `<>`.
#[test]
fn no_notification_for_mail_from_the_null_sender() {
    let s = TestSpool::new();
    let rec = bounced(&s, SENDER);
    // Make the record's original sender the null sender, as a bounce's would be.
    let path = entries_in(&s, "bounces").pop().unwrap();
    let mut e = mm_e2e::read_entry(&path);
    e.sender.clear();
    std::fs::write(&path, e.encode().unwrap()).unwrap();
    let dir = s.work().join("dsn-maildir");
    let out = runq(&s)
        .args(["-q", "bounces", "--dsn", "--once", "--deliver-to"])
        .arg(&dir)
        .run();
    out.assert_code(0);
    assert!(maildir_names(&dir).is_empty(), "a report for mail from <>");
    assert!(
        out.stderr_str().contains(&format!(
            "{rec}: no delivery status notification for mail from <>"
        )),
        "{out}"
    );
}

/// package reads what smtp-sink received.
#[test]
fn a_delivery_status_notification_goes_over_smtp_from_the_null_sender() {
    let s = TestSpool::new();
    bounced(&s, SENDER);
    let dumps = s.work().join("sink-dumps");
    std::fs::create_dir(&dumps).unwrap();
    // smtp-sink runs as nobody when we are root.
    std::fs::set_permissions(&dumps, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let template = format!("{}/msg", dumps.display());
    let sink = SmtpSink::start(&["-d", &template]);
    runq(&s)
        .args(["-q", "bounces", "--dsn", "--once", "--smtp", &sink.url()])
        .run()
        .assert_code(0);
    assert!(entries_in(&s, "bounces").is_empty(), "the record is done");
    mm_e2e::poll_until(
        "smtp-sink writes its dump",
        std::time::Duration::from_secs(10),
        || std::fs::read_dir(&dumps).map(|d| d.count()).unwrap_or(0) == 1,
    );
    let path = std::fs::read_dir(&dumps)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let copy = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
    // smtp-sink's envelope headers come first: the null sender, the sender as recipient.
    let header = |name: &str| {
        copy.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {copy}"))
            .to_string()
    };
    assert_eq!(header("X-Mail-Args:"), "<>", "{copy}");
    assert_eq!(header("X-Rcpt-Args:"), format!("<{SENDER}>"), "{copy}");
    let said = python_reads_the_dsn(&path, &copy);
    assert!(said.contains(SENDER), "{said}");
}
