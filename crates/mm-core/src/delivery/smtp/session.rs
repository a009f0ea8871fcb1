//! One SMTP connection: the socket (plain or rustls), the replies read from
//! it, and the checks that keep every reply tied to its own command.
//!
//! The session writes commands and reads replies itself, over a
//! `std::net::TcpStream` (with `TCP_NODELAY`) or a rustls stream on it, with
//! its own read buffer. That buffer is what makes the strictness possible:
//! before each write [`Session::send`] checks, without waiting, that no
//! reply is buffered or waiting in the socket (a server that sends one reply
//! too many would otherwise shift every later reply onto the wrong command),
//! and [`Session::read`] judges each reply against its command
//! ([`super::reply::Command::judge`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::commands::Auth;
use lettre::transport::smtp::response::Response;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::reply::{self, Answer, Command, ReadError, Reply};

/// The socket, before or after TLS.
pub(super) enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// Why the session cannot go on; the text is the reply recorded for the
/// recipients it defers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Broken {
    /// A reply that does not fit its command, a malformed reply, or bytes
    /// nobody asked for: "protocol error: WHAT after COMMAND: SEEN".
    Protocol(String),
    /// A socket timeout: "timeout after COMMAND".
    Timeout(String),
    /// Connection closed or failed: "connection lost after COMMAND: WHY".
    Lost(String),
}

impl Broken {
    pub fn text(&self) -> &str {
        match self {
            Broken::Protocol(t) | Broken::Timeout(t) | Broken::Lost(t) => t,
        }
    }

    fn from_read(e: ReadError, after: Command) -> Broken {
        match e {
            ReadError::Malformed(seen) => Broken::Protocol(format!(
                "protocol error: malformed reply after {after}: {seen}"
            )),
            ReadError::Closed => Broken::Lost(format!(
                "connection lost after {after}: connection closed by the server"
            )),
            ReadError::Io(e) => Broken::from_io(&e, after),
        }
    }

    fn from_io(e: &io::Error, after: Command) -> Broken {
        if is_timeout(e) {
            Broken::Timeout(format!("timeout after {after}"))
        } else {
            Broken::Lost(format!("connection lost after {after}: {e}"))
        }
    }
}

/// On Unix an expired socket timeout is `WouldBlock` (EAGAIN).
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// What EHLO said the server offers (keywords are case-insensitive).
#[derive(Debug, Default, Clone)]
pub(super) struct Features {
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtp_utf8: bool,
    pub starttls: bool,
    pub auth: Vec<Mechanism>,
}

impl Features {
    fn from_ehlo(reply: &Reply) -> Features {
        let mut f = Features::default();
        // The first line is the server's name and greeting.
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => f.pipelining = true,
                "8BITMIME" => f.eight_bit_mime = true,
                "SMTPUTF8" => f.smtp_utf8 = true,
                "STARTTLS" => f.starttls = true,
                "AUTH" => {
                    for word in words {
                        match word.to_ascii_uppercase().as_str() {
                            "PLAIN" => f.auth.push(Mechanism::Plain),
                            "LOGIN" => f.auth.push(Mechanism::Login),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        f
    }
}

/// An open connection.
pub(super) struct Session {
    reader: BufReader<Stream>,
    pub features: Features,
    /// The last command written (for "unsolicited reply after ...").
    last: Command,
    /// Inside a transaction: `RSET` comes before the next `MAIL`.
    pub in_transaction: bool,
    /// Who we talk to, as logs show it: `host[address]:port`.
    pub peer: String,
}

/// How to open a session.
pub(super) struct Connect<'a> {
    pub host: &'a str,
    pub port: u16,
    /// For `connect`, the greeting and the first EHLO.
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub hello: &'a str,
    /// `Some` for TLS; `implicit`: from the first byte, else STARTTLS.
    pub tls: Option<(&'a Arc<ClientConfig>, bool)>,
    pub credentials: Option<&'a (String, String)>,
}

impl Session {
    /// TCP, TLS, greeting, EHLO, STARTTLS, AUTH. The error is the reply
    /// for the recipients deferred.
    pub fn connect(c: &Connect<'_>) -> Result<Session, String> {
        let server = if c.host.contains(':') {
            format!("[{}]:{}", c.host, c.port)
        } else {
            format!("{}:{}", c.host, c.port)
        };
        let fail = |what: &str, e: &io::Error| {
            if is_timeout(e) {
                format!("timeout {what} {server}")
            } else {
                format!("{what} {server} failed: {e}")
            }
        };
        let addresses = (c.host, c.port)
            .to_socket_addrs()
            .map_err(|e| fail("connecting to", &e))?;
        let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
        let mut tcp = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, c.connect_timeout) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last_error = e,
            }
        }
        let tcp = tcp.ok_or_else(|| fail("connecting to", &last_error))?;
        let peer = match tcp.peer_addr() {
            Ok(a) => format!("{}[{}]:{}", c.host, a.ip(), a.port()),
            Err(_) => format!("{}[?]:{}", c.host, c.port),
        };
        // Else a command written after a previous one waits for the
        // server's delayed ACK (~40 ms on Linux).
        let set_up = |tcp: &TcpStream| {
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(c.connect_timeout))?;
            tcp.set_write_timeout(Some(c.connect_timeout))
        };
        set_up(&tcp).map_err(|e| fail("connecting to", &e))?;
        let stream = match c.tls {
            Some((config, true)) => {
                Stream::Tls(handshake(config, c.host, tcp).map_err(|e| fail("TLS with", &e))?)
            }
            _ => Stream::Plain(tcp),
        };
        let mut session = Session {
            reader: BufReader::with_capacity(16 * 1024, stream),
            features: Features::default(),
            last: Command::Greeting,
            in_transaction: false,
            peer,
        };
        let refused = |what: &str, answer: Result<Answer, Broken>| match answer {
            Ok(Answer::Positive(reply)) => Ok(reply),
            Ok(Answer::Negative { reply, .. }) => Err(format!("{what} {server} failed: {reply}")),
            Err(broken) => Err(format!("{what} {server} failed: {}", broken.text())),
        };
        refused("connecting to", session.read(Command::Greeting))?;
        session
            .ehlo(c.hello)
            .map_err(|e| format!("connecting to {server} failed: {e}"))?;
        session
            .set_timeout(c.command_timeout)
            .map_err(|e| fail("connecting to", &e))?;

        if let Some((config, false)) = c.tls {
            if !session.features.starttls {
                return Err(format!("{server} does not offer STARTTLS"));
            }
            session
                .send(Command::StartTls, b"STARTTLS\r\n")
                .map_err(|e| format!("STARTTLS with {server} failed: {}", e.text()))?;
            refused("STARTTLS with", session.read(Command::StartTls))?;
            // Bytes after the 220 would be taken as coming over TLS
            // (the STARTTLS injection of CVE-2011-0411): refuse them.
            if !session.reader.buffer().is_empty() {
                return Err(format!(
                    "STARTTLS with {server} failed: protocol error: unsolicited reply after STARTTLS: {}",
                    reply::shown(session.reader.buffer())
                ));
            }
            let peer = std::mem::take(&mut session.peer);
            let Stream::Plain(tcp) = session.reader.into_inner() else {
                return Err(format!("internal error: TLS twice with {server}"));
            };
            let tls = handshake(config, c.host, tcp).map_err(|e| fail("STARTTLS with", &e))?;
            session = Session {
                reader: BufReader::with_capacity(16 * 1024, Stream::Tls(tls)),
                features: Features::default(),
                last: Command::StartTls,
                in_transaction: false,
                peer,
            };
            session
                .ehlo(c.hello)
                .map_err(|e| format!("STARTTLS with {server} failed: {e}"))?;
        }
        if let Some((user, password)) = c.credentials {
            session
                .auth(&Credentials::new(user.clone(), password.clone()))
                .map_err(|e| format!("authentication with {server} failed: {e}"))?;
        }
        Ok(session)
    }

    fn ehlo(&mut self, hello: &str) -> Result<(), String> {
        self.send(Command::Ehlo, format!("EHLO {hello}\r\n").as_bytes())
            .map_err(|e| e.text().to_owned())?;
        match self.read(Command::Ehlo) {
            Ok(Answer::Positive(reply)) => {
                self.features = Features::from_ehlo(&reply);
                Ok(())
            }
            Ok(Answer::Negative { reply, .. }) => Err(format!("{reply} (in reply to EHLO)")),
            Err(broken) => Err(broken.text().to_owned()),
        }
    }

    /// AUTH PLAIN or LOGIN (lettre builds the lines), whichever the server offers first in that order.
    fn auth(&mut self, credentials: &Credentials) -> Result<(), String> {
        let mechanism = [Mechanism::Plain, Mechanism::Login]
            .into_iter()
            .find(|m| self.features.auth.contains(m))
            .ok_or("the server offers neither AUTH PLAIN nor AUTH LOGIN")?;
        let mut line = Auth::new(mechanism, credentials.clone(), None)
            .map_err(|e| e.to_string())?
            .to_string();
        // LOGIN asks twice; a few more challenges are a broken server.
        for _ in 0..4 {
            self.send(Command::Auth, line.as_bytes())
                .map_err(|e| e.text().to_owned())?;
            match self.read(Command::Auth) {
                Ok(Answer::Positive(reply)) if reply.code == 235 => return Ok(()),
                Ok(Answer::Positive(reply)) => {
                    let challenge = format!("334 {}\r\n", reply.lines.join(" "));
                    let response: Response = challenge.parse().map_err(|e| {
                        format!("protocol error: bad challenge after AUTH: {reply}: {e}")
                    })?;
                    line = Auth::new_from_response(mechanism, credentials.clone(), &response)
                        .map_err(|e| format!("{e} (challenge: {reply})"))?
                        .to_string();
                }
                Ok(Answer::Negative { reply, .. }) => {
                    return Err(format!("{reply} (in reply to AUTH)"));
                }
                Err(broken) => return Err(broken.text().to_owned()),
            }
        }
        Err("protocol error: too many AUTH challenges".to_owned())
    }

    /// Sets the read and write timeout of every later command.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let tcp = self.reader.get_ref().tcp();
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))
    }

    /// Sets the read timeout only (for the end-of-data reply).
    pub fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().tcp().set_read_timeout(Some(timeout))
    }

    /// Writes `bytes` (one command, several pipelined ones, or the message)
    /// after checking that no reply is waiting: one would belong to no
    /// command. `last` is the last command in `bytes`.
    pub fn send(&mut self, last: Command, bytes: &[u8]) -> Result<(), Broken> {
        self.check_idle()?;
        self.last = last;
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .and_then(|()| stream.flush())
            .map_err(|e| Broken::from_io(&e, last))
    }

    /// Reads the reply to `command` and judges it.
    pub fn read(&mut self, command: Command) -> Result<Answer, Broken> {
        let reply = reply::read(&mut self.reader).map_err(|e| Broken::from_read(e, command))?;
        command.judge(reply).map_err(|(what, reply)| {
            Broken::Protocol(format!("protocol error: {what} after {command}: {reply}"))
        })
    }

    /// Fails if a reply is waiting (buffered, or in the socket) when none is
    /// due, or if the server has closed the connection. Costs one
    /// non-blocking `recv(MSG_PEEK)` when nothing is there.
    pub fn check_idle(&mut self) -> Result<(), Broken> {
        let last = self.last;
        let unsolicited = |seen: &[u8]| {
            Broken::Protocol(format!(
                "protocol error: unsolicited reply after {last}: {}",
                reply::shown(seen)
            ))
        };
        if !self.reader.buffer().is_empty() {
            return Err(unsolicited(self.reader.buffer()));
        }
        let tcp = self.reader.get_ref().tcp();
        let mut byte = [0u8; 1];
        let peeked = rustix::net::recv(
            tcp,
            &mut byte[..],
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT,
        );
        match peeked {
            Err(rustix::io::Errno::AGAIN) => return Ok(()),
            Err(e) => return Err(Broken::from_io(&e.into(), last)),
            Ok(_) => {}
        }
        // Something is there (or the end of the stream): read it without
        // waiting. Under TLS it may be a record with no data (a session
        // ticket), which is fine.
        tcp.set_nonblocking(true)
            .map_err(|e| Broken::from_io(&e, last))?;
        let filled = self.reader.fill_buf().map(<[u8]>::len);
        self.reader
            .get_ref()
            .tcp()
            .set_nonblocking(false)
            .map_err(|e| Broken::from_io(&e, last))?;
        match filled {
            Ok(0) => Err(Broken::Lost(format!(
                "connection lost after {last}: connection closed by the server"
            ))),
            Ok(_) => Err(unsolicited(self.reader.buffer())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(Broken::Lost(format!("connection lost after {last}: {e}"))),
        }
    }

    /// Like [`Session::check_idle`], then waits up to `grace` for a reply
    /// nobody asked for; `timeout` is the read timeout to restore.
    pub fn quiet_for(&mut self, grace: Duration, timeout: Duration) -> Result<(), Broken> {
        self.check_idle()?;
        let last = self.last;
        self.set_read_timeout(grace)
            .map_err(|e| Broken::from_io(&e, last))?;
        let filled = self.reader.fill_buf().map(<[u8]>::len);
        self.set_read_timeout(timeout)
            .map_err(|e| Broken::from_io(&e, last))?;
        match filled {
            Ok(0) => Err(Broken::Lost(format!(
                "connection lost after {last}: connection closed by the server"
            ))),
            Ok(_) => Err(Broken::Protocol(format!(
                "protocol error: unsolicited reply after {last}: {}",
                reply::shown(self.reader.buffer())
            ))),
            Err(e) if is_timeout(&e) => Ok(()),
            Err(e) => Err(Broken::from_io(&e, last)),
        }
    }

    /// QUIT, waiting at most `wait` for the reply; errors are ignored.
    pub fn quit(mut self, wait: Duration) {
        if self.set_timeout(wait).is_ok() && self.send(Command::Quit, b"QUIT\r\n").is_ok() {
            let _ = self.read(Command::Quit);
        }
    }
}

/// A TLS client on `tcp`, the handshake done (so that a bad certificate
/// fails here, with its reason).
fn handshake(
    config: &Arc<ClientConfig>,
    host: &str,
    mut tcp: TcpStream,
) -> io::Result<Box<StreamOwned<ClientConnection, TcpStream>>> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(Box::new(StreamOwned::new(conn, tcp)))
}

/// The rustls configuration: the platform's verifier (the system's CA
/// bundle on Linux) plus the certificates of `ca_pem`, if any.
pub(super) fn tls_config(
    ca_pem: Option<(&std::path::Path, &[u8])>,
) -> Result<ClientConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut extra = Vec::new();
    if let Some((path, pem)) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            extra.push(cert.map_err(|e| format!("bad CA file {}: {e}", path.display()))?);
        }
        if extra.is_empty() {
            return Err(format!(
                "bad CA file {}: no certificate in it",
                path.display()
            ));
        }
    }
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra, Arc::clone(&provider))
            .map_err(|e| e.to_string())?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}
