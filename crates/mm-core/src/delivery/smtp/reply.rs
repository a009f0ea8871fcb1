//! Server replies: reading one (multi-line included), and checking it
//! against what the command it answers may get.
//!
//! Every reply is read for one command and judged against that command
//! alone ([`Command::judge`]). A reply of a class the command cannot get
//! (`354` to `RCPT`, `250` to `DATA`), a malformed line, a change of code
//! inside a multi-line reply, or bytes that arrive when no reply is due are
//! protocol errors: the session cannot know which command a reply belongs
//! to any more, so the caller defers the whole transaction and drops the
//! connection. A reply is never attributed to another command.

use std::fmt;
use std::io::{self, BufRead};

use crate::delivery::Verdict;

/// Longest reply line taken (Postfix's `line_length_limit`; RFC 5321 asks for 512).
pub(super) const MAX_LINE: usize = 2048;
/// Most bytes in one multi-line reply (lettre's limit too).
pub(super) const MAX_REPLY: usize = 100_000;

/// What a reply answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Command {
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    Mail,
    Rcpt,
    Data,
    EndOfData,
    Rset,
    Quit,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::Greeting => "greeting",
            Command::Ehlo => "EHLO",
            Command::StartTls => "STARTTLS",
            Command::Auth => "AUTH",
            Command::Mail => "MAIL FROM",
            Command::Rcpt => "RCPT TO",
            Command::Data => "DATA",
            Command::EndOfData => "end of DATA",
            Command::Rset => "RSET",
            Command::Quit => "QUIT",
        })
    }
}

/// One complete reply: its code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// "250 2.0.0 Ok: queued": the code and the lines' text, joined by spaces.
    pub fn text(&self) -> String {
        let mut text = self.code.to_string();
        for line in self.lines.iter().filter(|l| !l.is_empty()) {
            text.push(' ');
            text.push_str(line);
        }
        text
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A reply the command may get.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// What the command asked for (2xx, or the 3xx it expects).
    Positive(Reply),
    /// 4xx (Deferred) or 5xx (Failed); `closing` for 421.
    Negative {
        verdict: Verdict,
        closing: bool,
        reply: Reply,
    },
}

impl Command {
    /// Whether `reply` is one this command may get; `Err` with what is wrong.
    pub fn judge(self, reply: Reply) -> Result<Answer, (String, Reply)> {
        let code = reply.code;
        let positive = match self {
            Command::Greeting | Command::StartTls => code == 220,
            Command::Ehlo | Command::Rset => code == 250,
            Command::Auth => code == 235 || code == 334,
            // RFC 5321 4.3.2 lists 250 (and 251 for RCPT); any 25x is
            // taken, but not 220, 221 or 235, which answer other commands.
            Command::Mail | Command::Rcpt | Command::EndOfData => (250..260).contains(&code),
            Command::Data => code == 354,
            Command::Quit => (200..300).contains(&code),
        };
        if positive {
            return Ok(Answer::Positive(reply));
        }
        match code / 100 {
            4 => Ok(Answer::Negative {
                verdict: Verdict::Deferred,
                closing: code == 421,
                reply,
            }),
            5 => Ok(Answer::Negative {
                verdict: Verdict::Failed,
                closing: false,
                reply,
            }),
            _ => Err(("unexpected reply".to_owned(), reply)),
        }
    }
}

/// Why no reply could be read.
#[derive(Debug)]
pub(super) enum ReadError {
    /// A line that is not an SMTP reply line (shown as received).
    Malformed(String),
    /// The server closed the connection.
    Closed,
    /// The socket failed (a timeout is `WouldBlock` or `TimedOut`).
    Io(io::Error),
}

/// Reads one reply: lines `DDD-text` until one `DDD text` (or a bare
/// `DDD`), all with the same code. A line ends in CRLF (a bare LF is taken
/// too).
pub(super) fn read(reader: &mut impl BufRead) -> Result<Reply, ReadError> {
    let mut lines = Vec::new();
    let mut code = None;
    let mut total = 0;
    let mut line = Vec::with_capacity(128);
    loop {
        line.clear();
        let n = io::Read::take(&mut *reader, MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        if line.last() != Some(&b'\n') {
            return Err(if n > MAX_LINE {
                ReadError::Malformed(format!("{} (line too long)", shown(&line)))
            } else {
                ReadError::Closed
            });
        }
        total += n;
        if total > MAX_REPLY {
            return Err(ReadError::Malformed("reply too long".to_owned()));
        }
        let (this, last, text) =
            parse_line(&line).ok_or_else(|| ReadError::Malformed(shown(&line)))?;
        if *code.get_or_insert(this) != this {
            return Err(ReadError::Malformed(format!(
                "{} (code changed inside a multi-line reply)",
                shown(&line)
            )));
        }
        lines.push(text);
        if last {
            return Ok(Reply { code: this, lines });
        }
    }
}

/// `DDD`, then `-` (more lines follow), ` ` or nothing (last line), then text.
fn parse_line(line: &[u8]) -> Option<(u16, bool, String)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line.get(..3)?;
    if !(b'2'..=b'5').contains(&digits[0])
        || !(b'0'..=b'5').contains(&digits[1])
        || !digits[2].is_ascii_digit()
    {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &b""[..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return None,
    };
    if text.iter().any(|&b| b < 0x20 && b != b'\t') {
        return None;
    }
    Some((code, last, String::from_utf8_lossy(text).into_owned()))
}

/// Received bytes as they may be shown in a reply text: one line, at most
/// 200 characters, control characters escaped.
pub(super) fn shown(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == b'\n');
    let first = &bytes[..end.unwrap_or(bytes.len())];
    let more = end.is_some_and(|end| end + 1 < bytes.len()) || first.len() > 200;
    let first = first.strip_suffix(b"\r").unwrap_or(first);
    let text: String = String::from_utf8_lossy(first)
        .chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect();
    if more { format!("{text}...") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_str(s: &str) -> Result<Reply, ReadError> {
        read(&mut s.as_bytes())
    }

    #[test]
    fn single_and_multi_line_replies() {
        let r = read_str("250 2.0.0 Ok\r\n").unwrap();
        assert_eq!((r.code, r.text().as_str()), (250, "250 2.0.0 Ok"));
        let r = read_str("250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n").unwrap();
        assert_eq!(r.lines, ["mx.test", "PIPELINING", "8BITMIME"]);
        let r = read_str("550-5.1.1 no such\n550 5.1.1 user\n").unwrap();
        assert_eq!(r.text(), "550 5.1.1 no such 5.1.1 user");
        assert_eq!(read_str("250\r\n").unwrap().text(), "250");
        // Only one reply is taken; the rest stays in the buffer.
        let mut input = &b"250 a\r\n250 b\r\n"[..];
        assert_eq!(read(&mut input).unwrap().text(), "250 a");
        assert_eq!(input, b"250 b\r\n");
    }

    #[test]
    fn bad_replies_are_malformed() {
        for bad in [
            "hello\r\n",
            "25\r\n",
            "250x\r\n",
            "650 no\r\n",
            "199 no\r\n",
            "250-a\r\n550 b\r\n",
            "250 a\x00b\r\n",
        ] {
            assert!(
                matches!(read_str(bad), Err(ReadError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(read_str(""), Err(ReadError::Closed)));
        assert!(matches!(read_str("250-a\r\n"), Err(ReadError::Closed)));
        assert!(matches!(read_str("250 no end"), Err(ReadError::Closed)));
        let long = format!("250 {}\r\n", "x".repeat(MAX_LINE));
        assert!(matches!(read_str(&long), Err(ReadError::Malformed(_))));
    }

    #[test]
    fn each_command_gets_only_its_replies() {
        let reply = |code| Reply {
            code,
            lines: vec!["x".to_owned()],
        };
        use Command::*;
        for (command, ok, wrong) in [
            (Greeting, &[220][..], &[250, 354][..]),
            (Ehlo, &[250], &[220, 354, 251]),
            (StartTls, &[220], &[250]),
            (Auth, &[235, 334], &[250]),
            (Mail, &[250, 251], &[354, 334, 220]),
            (Rcpt, &[250, 251, 252], &[354, 220, 221]),
            (Data, &[354], &[250, 220]),
            (EndOfData, &[250], &[354, 221]),
            (Rset, &[250], &[354, 220]),
        ] {
            for &code in ok {
                assert!(
                    matches!(command.judge(reply(code)), Ok(Answer::Positive(_))),
                    "{command} {code}"
                );
            }
            for &code in wrong {
                assert!(command.judge(reply(code)).is_err(), "{command} {code}");
            }
            assert!(matches!(
                command.judge(reply(421)),
                Ok(Answer::Negative {
                    verdict: Verdict::Deferred,
                    closing: true,
                    ..
                })
            ));
            assert!(matches!(
                command.judge(reply(550)),
                Ok(Answer::Negative {
                    verdict: Verdict::Failed,
                    closing: false,
                    ..
                })
            ));
        }
    }

    #[test]
    fn shown_is_one_escaped_line() {
        assert_eq!(shown(b"250 extra\r\n"), "250 extra");
        assert_eq!(shown(b"250 a\r\n250 b\r\n"), "250 a...");
        assert_eq!(shown(b"\x1b[0m\r\n"), "\\u{1b}[0m");
    }
}
