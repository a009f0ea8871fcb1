//! Delivery status notifications (`mm-runq --dsn` on the bounces queue):
//! a bounce record becomes an RFC 3464 report to the envelope sender.
//!
//! The runner, having claimed a bounce record, calls [`prepare`]: the
//! record's message becomes a `multipart/report; report-type=delivery-status`
//! (a text part for people, a `message/delivery-status` part with one block
//! per failed recipient, the original headers as `text/rfc822-headers`), its
//! envelope becomes the null sender to the original sender, and the runner
//! delivers it like any entry (retries, bounces). A record whose mail came
//! from the null sender gets no report (RFC 5321 section 4.5.5: no bounce of
//! a bounce), and neither does a report that itself failed, whose sender is
//! the null sender. The change is marked in the entry (`meta.kv.dsn`), so a
//! record is turned into a report once, even when a crash makes a runner
//! claim it again.

use crate::entry::{Entry, RcptState, Recipient};
use crate::id::EntryId;

/// The mark in `meta.kv` of a record turned into a report.
pub const MARK: &str = "dsn";

/// What [`prepare`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Not a bounce record, or already a report: nothing.
    Nothing,
    /// The mail came from the null sender: no report (the record stays as it is).
    NullSender,
    /// Now a report to this address.
    Report(String),
}

/// Turns the bounce record `e` into a report to its sender, at `now`, from
/// `host`.
pub fn prepare(e: &mut Entry, host: &str, now: u64) -> Prepared {
    let Some(bounce) = e.meta.bounce.clone() else {
        return Prepared::Nothing;
    };
    if e.meta.kv.contains_key(MARK) {
        return Prepared::Nothing;
    }
    if e.sender.is_empty() {
        return Prepared::NullSender;
    }
    let to = e.sender.clone();
    e.message = report(e, &bounce.original_id, host, now);
    e.recipients = vec![Recipient {
        address: to.clone(),
        state: RcptState::Pending,
        attempts: 0,
        last_reply: None,
        updated: None,
        bounced: false,
        extra: Default::default(),
    }];
    e.sender = String::new();
    e.meta.kv.insert(MARK.into(), to.clone());
    e.note(
        now,
        format!("turned into a delivery status notification to <{to}>"),
    );
    Prepared::Report(to)
}

/// The header part of a message (up to the first empty line), with CRLF.
fn headers(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    let mut out = String::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            break;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

/// The enhanced status code of a reply (`5.1.1`), else `5.0.0`.
fn status(reply: &str) -> String {
    reply
        .split_whitespace()
        .find(|w| {
            w.split('.').count() == 3
                && w.starts_with(['4', '5'])
                && w.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|w| format!("5{}", &w[1..]))
        .unwrap_or_else(|| "5.0.0".into())
}

/// `text` folded at whitespace into lines of at most 78 characters (a word
/// longer than that stands alone, cut at 900), each line after the first
/// starting with `indent`: a server's long reply (they can be kilobytes,
/// joined from many lines) never makes a line over SMTP's 998 (RFC 5322
/// folding for the header fields of the delivery-status part).
fn fold(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut width = 0;
    for word in text.split_whitespace() {
        let word: String = word.chars().take(900).collect();
        let len = word.chars().count();
        if width > 0 && width + 1 + len > 78 {
            out.push_str("\r\n");
            out.push_str(indent);
            width = indent.len();
        } else if width > 0 {
            out.push(' ');
            width += 1;
        }
        out.push_str(&word);
        width += len;
    }
    out
}

/// The report's bytes.
fn report(e: &Entry, original_id: &str, host: &str, now: u64) -> Vec<u8> {
    let boundary = format!("{}/{host}", e.id);
    let date = rfc2822(now);
    let mut human = String::new();
    let mut machine = format!(
        "Reporting-MTA: dns; {host}\r\nX-Mm-Queue-ID: {original_id}\r\nArrival-Date: {}\r\n",
        // When the original arrived (its id's time), not when the record was made.
        rfc2822(
            original_id
                .parse::<EntryId>()
                .map(|i| i.secs())
                .unwrap_or(e.meta.received)
        )
    );
    for r in &e.recipients {
        let reply = r.last_reply.as_deref().unwrap_or("no reply");
        human.push_str(&fold(&format!("<{}>: {reply}", r.address), "  "));
        human.push_str("\r\n");
        let diagnostic = if reply.starts_with(['4', '5']) {
            format!("smtp; {reply}")
        } else {
            format!("X-mm; {reply}")
        };
        machine.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n{}\r\n",
            r.address,
            status(reply),
            fold(&format!("Diagnostic-Code: {diagnostic}"), " ")
        ));
    }
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: Undelivered Mail Returned to Sender\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}.dsn@{host}>\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\
         \tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated message.\r\n\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Notification\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         \r\n\
         This is the mail system at host {host}.\r\n\
         \r\n\
         Your message could not be delivered to one or more recipients:\r\n\
         \r\n\
         {human}\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Delivery report\r\n\
         Content-Type: message/delivery-status\r\n\
         \r\n\
         {machine}\
         \r\n\
         --{boundary}\r\n\
         Content-Description: Undelivered Message Headers\r\n\
         Content-Type: text/rfc822-headers\r\n\
         \r\n\
         {original}\
         \r\n\
         --{boundary}--\r\n",
        to = e.sender,
        id = e.id,
        original = headers(&e.message),
    )
    .into_bytes()
}

/// An RFC 5322 date in UTC: `Thu, 03 Dec 2026 08:40:00 +0000`.
pub fn rfc2822(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(rfc2822(1_796_287_200), "Thu, 03 Dec 2026 08:40:00 +0000");
    }

    #[test]
    fn statuses_come_from_the_reply() {
        assert_eq!(status("550 5.1.1 user unknown"), "5.1.1");
        assert_eq!(
            status("expired: gave up after 5days; last reply: 451 4.3.0 later"),
            "5.3.0"
        );
        assert_eq!(status("refused"), "5.0.0");
    }

    #[test]
    fn a_long_reply_is_folded_under_998_and_the_arrival_date_is_the_originals() {
        let original = EntryId::from_parts(951_782_400_000_000, [9; 20]);
        let id = EntryId::from_parts(1_796_287_200_000_000, [7; 20]);
        let long = format!("550 5.7.1 {}", "policy rejection; ".repeat(100));
        let mut e = Entry::new(
            &id,
            "s@example.org",
            &["a@example.net".to_string()],
            b"Subject: x\n\nx\n".to_vec(),
            "bounces",
        );
        e.recipients[0].state = RcptState::Failed;
        e.recipients[0].last_reply = Some(long);
        let bytes = report(&e, &original.to_string(), "mx.example.org", 1_796_287_200);
        let text = String::from_utf8(bytes).unwrap();
        for line in text.split("\r\n") {
            assert!(line.len() <= 998, "a line of {} bytes", line.len());
        }
        assert!(
            text.contains("\r\nArrival-Date: Tue, 29 Feb 2000 00:00:00 +0000\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nDiagnostic-Code: smtp; 550 5.7.1 policy"),
            "{text}"
        );
        assert!(
            text.contains("\r\n policy") || text.contains("\r\n rejection;"),
            "folded as a header is: {text}"
        );
    }
}
