//! A minimal SMTP client on std::net, to hand messages to Postfix's smtpd
//! as a remote MTA would: exactly the bytes given, 8-bit, dot-stuffed, with
//! the null sender when asked. (lettre would build the message itself, and
//! smtp-source sends only its own test text.)

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// Longest wait for any one reply.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a server on 127.0.0.1:`port` answers with its 220 greeting.
pub fn greets(port: u16) -> bool {
    Client::connect(port).and_then(Client::quit).is_ok()
}

/// A connection to an SMTP server.
pub struct Client {
    stream: BufReader<TcpStream>,
}

impl Client {
    /// Connects to 127.0.0.1:`port` and reads the greeting.
    pub fn connect(port: u16) -> anyhow::Result<Client> {
        let stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), TIMEOUT)
            .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
        stream
            .set_read_timeout(Some(TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(TIMEOUT)))
            .context("cannot set socket timeouts")?;
        let mut client = Client {
            stream: BufReader::new(stream),
        };
        client.expect(220, "the greeting")?;
        Ok(client)
    }

    /// One mail transaction; returns the server's reply to the end of data
    /// (Postfix's says "queued as QID").
    pub fn send(
        &mut self,
        sender: &str,
        rcpts: &[String],
        message: &[u8],
    ) -> anyhow::Result<String> {
        let ehlo = self.command("EHLO mm-e2e.client", 250)?;
        if !ehlo
            .lines()
            .any(|l| l[4..].eq_ignore_ascii_case("8BITMIME"))
        {
            bail!("the server does not offer 8BITMIME: {ehlo}");
        }
        // BODY=8BITMIME: the messages have 8-bit bytes.
        self.command(&format!("MAIL FROM:<{sender}> BODY=8BITMIME"), 250)?;
        for r in rcpts {
            self.command(&format!("RCPT TO:<{r}>"), 250)?;
        }
        self.command("DATA", 354)?;
        let wire = wire_form(message)?;
        self.stream
            .get_mut()
            .write_all(&wire)
            .context("cannot send the message")?;
        self.expect(250, "the end of data")
    }

    /// Says QUIT and reads the reply.
    pub fn quit(mut self) -> anyhow::Result<()> {
        self.command("QUIT", 221).map(drop)
    }

    /// Sends `line` and expects a reply with `code`; returns the reply text.
    fn command(&mut self, line: &str, code: u16) -> anyhow::Result<String> {
        self.stream
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .with_context(|| format!("cannot send {line}"))?;
        self.expect(code, line)
    }

    /// Reads one (possibly multi-line) reply and checks its code.
    fn expect(&mut self, code: u16, after: &str) -> anyhow::Result<String> {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = self
                .stream
                .read_line(&mut line)
                .with_context(|| format!("no reply to {after}"))?;
            if n == 0 {
                bail!("the server hung up after {after}");
            }
            let line = line.trim_end();
            if line.len() < 4 || !line.is_char_boundary(4) {
                bail!("a malformed reply to {after}: {line:?}");
            }
            text.push_str(line);
            text.push('\n');
            if line.as_bytes()[3] != b'-' {
                let got: u16 = line[..3].parse().unwrap_or(0);
                if got != code {
                    bail!("{after}: want {code}, got {}", text.trim_end());
                }
                return Ok(text.trim_end().to_string());
            }
        }
    }
}

/// `message` (CRLF line ends) as DATA sends it: every line starting with
/// '.' gets another one (RFC 5321, 4.5.2), then the ".\r\n" that ends it.
fn wire_form(message: &[u8]) -> anyhow::Result<Vec<u8>> {
    if !message.ends_with(b"\r\n") {
        bail!("a message to send must end with CRLF");
    }
    let mut wire = Vec::with_capacity(message.len() + 16);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffs() {
        let wire = wire_form(b"a\r\n.\r\n..b\r\n.c\r\n").expect("ends with CRLF");
        assert_eq!(wire, b"a\r\n..\r\n...b\r\n..c\r\n.\r\n");
    }
}
