//! `mm-runq --dsn` on the bounces queue: bounce records become RFC 3464
//! delivery status notifications to the envelope sender, checked with a real
//! MIME parser (Python's email package); never for mail from the null sender.

use std::process::Command;

use mm_e2e::{TestSpool, Tool};

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
    let script = r#"
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
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}\n{copy}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
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
