//! The test messages, and what each must look like once Postfix has handed
//! it to mm.

/// How a message reaches Postfix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Postfix's sendmail(1) (pickup(8)): LF line ends.
    Sendmail,
    /// SMTP to smtpd on loopback: CRLF line ends, dot-stuffed.
    Smtp,
}

/// A message of the run, with its envelope.
pub struct TestMessage {
    /// Short name: in the Subject and the Message-ID.
    pub name: &'static str,
    pub via: Via,
    /// Envelope sender; "" is the null sender.
    pub sender: String,
    /// Envelope recipients.
    pub rcpts: Vec<String>,
    /// Its Message-ID, without the angle brackets.
    pub message_id: String,
    /// Its lines, without line ends.
    lines: Vec<Vec<u8>>,
}

impl TestMessage {
    /// A message with every awkward thing a list server sees: raw UTF-8 in
    /// a header, 8-bit (ISO-8859-1) bytes in the body, a header line longer
    /// than SMTP's 998-octet limit, a body line longer than Postfix's
    /// `line_length_limit` (2048: Postfix stores it in pieces and must join
    /// them again), lines starting with "From " and with dots (a lone "."
    /// too), trailing white space, a tab, and an empty line before the end.
    pub fn new(
        name: &'static str,
        via: Via,
        from_header: &str,
        sender: &str,
        rcpts: Vec<String>,
    ) -> TestMessage {
        let message_id = format!("{name}@mm-e2e.example");
        let long_header: String = "0123456789".repeat(120);
        let long_line: Vec<u8> = (0..5000u32).map(|i| b'A' + (i % 26) as u8).collect();
        let mut lines: Vec<Vec<u8>> = [
            format!("From: {from_header}"),
            "To: dev@lists.example".to_string(),
            format!("Subject: mm e2e {name}: caf\u{e9} \u{2603}"),
            "Date: Mon, 24 Nov 2025 18:00:00 +0000".to_string(),
            format!("Message-ID: <{message_id}>"),
            "MIME-Version: 1.0".to_string(),
            "Content-Type: text/plain; charset=iso-8859-1".to_string(),
            "Content-Transfer-Encoding: 8bit".to_string(),
            format!("X-Long-Header: {long_header}"),
            String::new(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        lines.extend([
            b"8-bit, ISO-8859-1: caf\xe9, na\xefve, \xff\x80\x9f".to_vec(),
            b"From the start of a line: an mbox would quote it, mm must not.".to_vec(),
            b".a line starting with a dot (dot-stuffed on both SMTP hops)".to_vec(),
            b".".to_vec(),
            b"..two dots".to_vec(),
            long_line,
            b"trailing white space:  \t ".to_vec(),
            b"\tindented with a tab".to_vec(),
            Vec::new(),
            format!("the end of {name}.").into_bytes(),
        ]);
        TestMessage {
            name,
            via,
            sender: sender.to_string(),
            rcpts,
            message_id,
            lines,
        }
    }

    /// The message with LF line ends (as sendmail reads it, and as Postfix
    /// stores and pipes it).
    pub fn lf(&self) -> Vec<u8> {
        self.joined(b"\n")
    }

    /// The message with CRLF line ends (as SMTP carries it).
    pub fn crlf(&self) -> Vec<u8> {
        self.joined(b"\r\n")
    }

    fn joined(&self, end: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(l);
            out.extend_from_slice(end);
        }
        out
    }

    /// Checks the bytes mm stored for this message against what was sent.
    ///
    /// Expected transformations, and nothing else:
    /// * pipe(8) with `flags=R` puts `Return-Path: <SENDER>` first (`<>` for
    ///   the null sender);
    /// * cleanup(8) then has one `Received:` field (a line and its
    ///   continuation lines) naming Postfix and this queue id: "by HOST
    ///   (Postfix, from userid 0)" for sendmail, "from HELO (...) by HOST
    ///   (Postfix) with ESMTP" for SMTP;
    /// * line ends are LF (Postfix stores lines, and pipe(8) writes LF), and
    ///   the SMTP dot-stuffing is undone.
    ///
    /// Every original header is kept as it was: the messages have From:,
    /// To:, Date: and Message-ID:, so Postfix adds none, and their addresses
    /// are fully qualified, so its header rewriting changes nothing.
    pub fn check_stored(&self, stored: &[u8], queue_id: &str) -> Result<(), String> {
        let return_path = format!("Return-Path: <{}>\n", self.sender);
        let rest = stored
            .strip_prefix(return_path.as_bytes())
            .ok_or_else(|| format!("it does not start with {:?}", return_path.trim_end()))?;
        if !rest.starts_with(b"Received: ") {
            return Err("its second field is not Postfix's Received:".into());
        }
        // The Received: field ends where a line starts with no white space.
        let mut end = 0;
        for line in rest.split_inclusive(|&b| b == b'\n') {
            if end > 0 && !line.starts_with(b"\t") && !line.starts_with(b" ") {
                break;
            }
            end += line.len();
        }
        let (received, rest) = rest.split_at(end);
        let received = String::from_utf8_lossy(received);
        if !received.contains("(Postfix") || !received.contains(&format!("id {queue_id}")) {
            return Err(format!(
                "its Received: field does not name Postfix and queue id {queue_id}: {received:?}"
            ));
        }
        let want = self.lf();
        if rest != want.as_slice() {
            return Err(format!(
                "after Return-Path: and Received:, it differs from what was sent: {}",
                mm_e2e::first_difference(rest, &want)
            ));
        }
        Ok(())
    }
}

/// The test messages of the normal path: (a list post by sendmail, an 8-bit
/// message to several recipients by SMTP, a bounce with the null sender by
/// SMTP).
pub fn normal(domain: &str) -> Vec<TestMessage> {
    let at = |local: &str| format!("{local}@{domain}");
    vec![
        TestMessage::new(
            "list-post",
            Via::Sendmail,
            "Ann Example <ann@example.org>",
            "owner@example.org",
            // More than Postfix's default of 50 recipients per delivery, and
            // than mm-runq's 100 per SMTP transaction.
            (1..=120).map(|i| at(&format!("member{i:03}"))).collect(),
        ),
        TestMessage::new(
            "smtp-8bit",
            Via::Smtp,
            "\"Bob B.\" <bob@example.net>",
            "bob@example.net",
            // A quoted local part: pipe(8)'s q flag quotes it for mm-enqueue.
            vec![at("dev"), at("\"john smith\""), at("o'brien+tag")],
        ),
        TestMessage::new(
            "bounce",
            Via::Smtp,
            "Mail Delivery System <MAILER-DAEMON@example.org>",
            // The null sender: the pipe's null_sender= must pass it as <>.
            "",
            vec![at("dev-bounces")],
        ),
    ]
}

/// The message of the failure path: deferred while the spool is unreachable.
pub fn deferred(domain: &str) -> TestMessage {
    TestMessage::new(
        "deferred",
        Via::Smtp,
        "Carl <carl@example.net>",
        "carl@example.net",
        vec![format!("dev@{domain}"), format!("member001@{domain}")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TestMessage {
        TestMessage::new(
            "t",
            Via::Smtp,
            "a@example.org",
            "",
            vec!["b@x.example".into()],
        )
    }

    #[test]
    fn accepts_what_postfix_makes_of_a_message() {
        let m = sample();
        let mut stored = b"Return-Path: <>\nReceived: from c (localhost [127.0.0.1])\n\tby h (Postfix) with ESMTP id 4AB;\n\tTue, 24 Nov 2026\n".to_vec();
        stored.extend(m.lf());
        assert_eq!(m.check_stored(&stored, "4AB"), Ok(()));
        assert!(m.check_stored(&stored, "5CD").is_err());
        let last = stored.len() - 3;
        stored[last] = b'X';
        let err = m
            .check_stored(&stored, "4AB")
            .expect_err("one byte changed");
        assert!(err.contains("the end of t"), "{err}");
    }

    #[test]
    fn finds_the_message_id() {
        assert_eq!(
            mm_e2e::message_id(&sample().lf()).as_deref(),
            Some("t@mm-e2e.example")
        );
    }
}
