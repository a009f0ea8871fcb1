//! Delivery over SMTP to one configured server (a smarthost), with a result
//! per recipient.
//!
//! # Our own session, lettre for the parts
//!
//! A queue runner needs to know, for every recipient, whether the server
//! took it, refused it for good or asked to try later, and to store that
//! before it goes on; and it must never take one command's reply for
//! another's. lettre's `SmtpTransport::send` gives one result per message
//! (it aborts on the first refused `RCPT`), and its `SmtpConnection`
//! accepts any positive reply for any command and hides its read buffer:
//! a server that sent one unsolicited `250` shifted every later reply onto
//! the next command, so a recipient refused with 550 was recorded as
//! delivered. So `session.rs` drives the connection itself, over a
//! `std::net::TcpStream` or rustls (with the same crypto provider and
//! platform verifier lettre uses), with its own buffer; lettre still builds
//! the `AUTH` lines. The parts:
//!
//! * `url.rs`: the server URL (`--smtp`), split by the `url` crate;
//! * `session.rs`: the socket, TLS, greeting, EHLO, STARTTLS, AUTH, and the
//!   check that no reply is waiting before a command is written;
//! * `reply.rs`: reading a reply and judging it against its command;
//! * `mod.rs`: transactions, recipients and their verdicts.
//!
//! # One call to [`SmtpClient::deliver`](crate::delivery::smtp::SmtpClient::deliver)
//!
//! Recipients are grouped by domain (case-insensitively, part after the last
//! '@', in order of first appearance) and each group is cut into
//! transactions of at most `max_rcpts`. One transaction is `MAIL FROM`, one
//! `RCPT TO` per recipient, and `DATA` plus the message only if at least one
//! `RCPT` was accepted. When the server offers PIPELINING (RFC 2920) and
//! the `RCPT`s come to at most 16 KiB (about 500 recipients, so that
//! neither side can block the other with full socket buffers),
//! `MAIL`, every `RCPT` and `DATA` go out in one write and the replies are
//! read in order, each judged against its own command exactly as without
//! pipelining (a `354` to `DATA` after all recipients were refused is
//! answered with an empty message, which the server refuses).
//!
//! Every reply is checked against what its command may get (greeting and
//! STARTTLS 220; EHLO and RSET 250; AUTH 235 or 334; MAIL, RCPT and end of
//! data 25x, so not a stray 220 or 221; DATA 354; and 4xx/5xx for all).
//! Classification:
//!
//! | event | verdict |
//! | --- | --- |
//! | `RCPT` 2xx, then 2xx at end of data | `Delivered` (reply: the final 250 line) |
//! | `RCPT` 5xx / 4xx | `Failed` / `Deferred` (reply: the server's line) |
//! | `MAIL`, `DATA` or end of data 5xx / 4xx | `Failed` / `Deferred` for every recipient of the transaction not yet classified, reply suffixed with "(in reply to ...)"; a pipelined `DATA` 5xx after accepted recipients defers them instead (it could be a shifted reply) and drops the connection |
//! | a protocol error: a reply of the wrong class (`354` to `RCPT`, `250` to `DATA`), a malformed reply, or a reply nobody asked for (waiting before a command, or after the end-of-data reply) | `Deferred` for **every** recipient sent in the transaction, reply "protocol error: WHAT after COMMAND: REPLY SEEN"; the connection is dropped |
//! | a 421 reply (server closing), an I/O or TLS error, a timeout, a dropped connection | `Deferred` for every recipient of the transaction not yet classified; the connection is dropped |
//! | cannot connect (TCP, TLS, greeting, EHLO, STARTTLS, AUTH) | `Deferred`, for this and every later transaction of the call, without connecting again |
//! | recipient not an address that `mm-enqueue` would accept ([`crate::address`]: a mailbox or the bare `postmaster`) | `Failed`, without sending it |
//! | sender not a valid address | `Failed` for every recipient |
//! | non-ASCII address and the server lacks SMTPUTF8 | `Failed` (RFC 6531 forbids sending it) |
//!
//! `DATA` refused after some `RCPT` was accepted waits up to 200 ms for a
//! reply too many before it is believed: with PIPELINING, an extra reply
//! earlier in the transaction would shift the last `RCPT`'s refusal onto
//! `DATA`, with the real `354` right behind it.
//!
//! A protocol error defers even recipients already refused in the same
//! transaction: once one reply was out of place, none of that
//! transaction's replies can be trusted to be theirs. A reply that is
//! waiting after the end-of-data `250` defers the recipients too (that 250
//! may have been the stray one), at the price of a second copy if it was
//! not (as for a lost final reply, RFC 1047). The reply text is what the
//! runner records and logs for the recipients.
//!
//! After each transaction the caller's `record` runs before the next one
//! starts, so that progress is durable; if it fails, `deliver` stops.
//!
//! # Connections
//!
//! The connection stays open between transactions and between calls. A
//! connection left inside a transaction (no `DATA`, or a refused message) is
//! reset with `RSET` before the next `MAIL`. Before every write the session
//! checks, without waiting (one `recv(MSG_PEEK|MSG_DONTWAIT)`), that no
//! reply is waiting. If a *reused* connection turns out to be dead or
//! confused (closed by the server while idle, bytes waiting, `RSET` or
//! `MAIL` failing with an I/O error, a timeout, a 421 or a protocol error),
//! it is replaced by a new one once for that transaction; nothing was
//! accepted on it, so nothing is sent twice. A failure on a fresh
//! connection is final for the transaction.
//!
//! # Timeouts
//!
//! Each timeout is the socket's read and write timeout, so it bounds every
//! single read or write (inactivity), not a whole reply:
//!
//! * `min(connect_timeout, command_timeout)` for the TCP connect, the TLS
//!   handshake of implicit TLS, the greeting and the first `EHLO`;
//! * `command_timeout` (5 min) for everything else (`STARTTLS`, `AUTH`,
//!   `MAIL`, `RCPT`, `DATA`, sending the message, `RSET`, `QUIT`),
//! * except the reply to the end of data, which gets `data_timeout`
//!   (10 min, RFC 5321 4.5.3.2.6): a server may be scanning the message,
//!   and a timeout there means a second copy later.
//!
//! Not bounded: DNS resolution of the host name (the standard library's
//! resolver has no timeout); a server that dribbles a reply a byte at a
//! time can stretch it up to the 100 kB reply limit.
//!
//! A timeout or lost connection after the message was sent (waiting for the
//! final reply) defers recipients that the server may in fact have accepted,
//! so they may receive the message twice (RFC 1047); deferring is the only
//! safe choice, as with every MTA.
//!
//! # Limits
//!
//! Only a configured server is used (no MX lookup). `EHLO` only (no `HELO`
//! fallback). `BODY=8BITMIME` is announced for a non-ASCII message when the
//! server offers it; otherwise the message is sent as is, like most MTAs do.
//! No `SIZE` parameter. STARTTLS is required when configured (no
//! opportunistic fallback). Certificates are checked by rustls against the
//! platform's trust store (rustls-platform-verifier: the system CA bundle on
//! Linux) plus `ca=`. Credentials are sent with `Tls::None` too (meant for a
//! relay on localhost). Writing to a connection the server has closed
//! relies on SIGPIPE being ignored, as the Rust runtime sets it up for every
//! binary.

mod reply;
mod session;
mod url;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::extension::ClientId;

use self::reply::{Answer, Command};
use self::session::{Broken, Connect, Session};
use super::{RcptResult, Verdict, wire};

/// How the connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain SMTP.
    None,
    /// Plain connection upgraded with STARTTLS; fails if the server does not offer it.
    StartTls,
    /// TLS from the first byte (SMTPS, "submissions").
    Implicit,
}

/// Where and how to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: Tls,
    /// User name and password for AUTH (PLAIN or LOGIN), if any.
    pub credentials: Option<(String, String)>,
    /// The EHLO name; `None`: the machine's host name.
    pub helo_name: Option<String>,
    /// Limit for the TCP connect, TLS handshake, greeting and EHLO (each read or write).
    pub connect_timeout: Duration,
    /// Limit for every read or write of every later command and reply, but
    /// the end-of-data reply.
    pub command_timeout: Duration,
    /// Limit for the reply to the end of the message data.
    pub data_timeout: Duration,
    /// Recipients per transaction (0 counts as 1).
    pub max_rcpts: usize,
    /// A PEM file of extra CA certificates to trust besides the system's
    /// (`ca=` in the URL): for a smarthost with a private CA.
    pub ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .field("helo_name", &self.helo_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("data_timeout", &self.data_timeout)
            .field("max_rcpts", &self.max_rcpts)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SmtpConfig {
    /// Default [`SmtpConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`SmtpConfig::command_timeout`] (RFC 5321 4.5.3.2: 5 min for MAIL, RCPT, DATA and the rest).
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Default [`SmtpConfig::data_timeout`] (RFC 5321 4.5.3.2.6: 10 min for the end-of-data reply).
    pub const DEFAULT_DATA_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// Default [`SmtpConfig::max_rcpts`] (RFC 5321 4.5.3.1.8: servers must take at least 100).
    pub const DEFAULT_MAX_RCPTS: usize = 100;

    /// A configuration with the defaults: no credentials, the machine's host
    /// name for EHLO, 30 s connect timeout, 5 min command timeout, 10 min
    /// data timeout, 100 recipients per transaction.
    pub fn new(host: impl Into<String>, port: u16, tls: Tls) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port,
            tls,
            credentials: None,
            helo_name: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            data_timeout: Self::DEFAULT_DATA_TIMEOUT,
            max_rcpts: Self::DEFAULT_MAX_RCPTS,
            ca_file: None,
        }
    }
}

/// An SMTP client for one server, keeping its connection open between calls.
pub struct SmtpClient {
    config: SmtpConfig,
    hello: ClientId,
    /// Built on the first TLS connection, then reused.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Boxed: an open rustls connection is over a kilobyte, and a client is
    /// often kept in an enum beside small transports.
    session: Option<Box<Session>>,
    /// Why the last delivery could not even connect, if it could not.
    trouble: Option<String>,
    /// The peer of the last session opened, for the log (`host[address]:port`).
    last_peer: Option<String>,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("config", &self.config)
            .field("hello", &self.hello)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

/// The recipients of one transaction and what became of them so far.
struct Transaction<'a> {
    addresses: Vec<&'a str>,
    verdicts: Vec<Option<(Verdict, String)>>,
}

impl<'a> Transaction<'a> {
    fn new(addresses: Vec<&'a str>) -> Self {
        let verdicts = vec![None; addresses.len()];
        Transaction {
            addresses,
            verdicts,
        }
    }

    fn set(&mut self, index: usize, verdict: Verdict, reply: String) {
        if let Some(slot) = self.verdicts.get_mut(index) {
            *slot = Some((verdict, reply));
        }
    }

    /// Classifies every recipient that has no verdict yet.
    fn set_pending(&mut self, verdict: Verdict, reply: &str) {
        for slot in self.verdicts.iter_mut().filter(|slot| slot.is_none()) {
            *slot = Some((verdict, reply.to_owned()));
        }
    }

    /// After a protocol error: defers every recipient that was sent, even
    /// one a reply (perhaps not its own) refused.
    fn defer_sent(&mut self, sent: &[(usize, &str)], reply: &str) {
        for &(index, _) in sent {
            self.set(index, Verdict::Deferred, reply.to_owned());
        }
        self.set_pending(Verdict::Deferred, reply);
    }

    fn finish(self) -> Vec<RcptResult> {
        self.addresses
            .into_iter()
            .zip(self.verdicts)
            .map(|(address, verdict)| {
                // Every path classifies every recipient; this default only
                // guards the "exactly one result each" promise.
                let (verdict, reply) = verdict
                    .unwrap_or_else(|| (Verdict::Deferred, "internal error: no result".to_owned()));
                RcptResult {
                    address: address.to_owned(),
                    verdict,
                    reply,
                }
            })
            .collect()
    }
}

/// What became of `RSET` + `MAIL FROM`.
enum Start {
    /// `MAIL` accepted: go on with `RCPT`; `pipelined`: the `RCPT`s and
    /// `DATA` were sent with it.
    Go { pipelined: bool },
    /// The transaction is over (all classified); keep the connection or not.
    Over { keep: bool },
    /// The connection is unusable before anything was accepted; the reason,
    /// if it has to be reported.
    Lost(String),
}

impl SmtpClient {
    /// A client for `config`; it connects on the first delivery.
    pub fn new(config: SmtpConfig) -> SmtpClient {
        let hello = match config.helo_name.as_deref() {
            None => ClientId::default(),
            Some(name) => match name.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) => ClientId::Ipv4(ip),
                Ok(IpAddr::V6(ip)) => ClientId::Ipv6(ip),
                Err(_) => ClientId::Domain(name.to_owned()),
            },
        };
        SmtpClient {
            config,
            hello,
            tls: None,
            session: None,
            last_peer: None,
            trouble: None,
        }
    }

    /// The server of the last connection, as the log shows it:
    /// `host[address]:port`, or `none` before one was made.
    pub fn relay(&self) -> String {
        self.last_peer.clone().unwrap_or_else(|| "none".into())
    }

    /// The server delivered to: `host:port`.
    pub fn destination(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    /// Why the last [`deliver`](SmtpClient::deliver) could not connect
    /// (refused, unreachable, no greeting in time, a 421 or 554 greeting,
    /// TLS or AUTH failed), if that is what happened.
    pub fn trouble(&self) -> Option<&str> {
        self.trouble.as_deref()
    }

    /// Delivers `message` from `sender` (`""`: the null sender, `MAIL FROM:<>`)
    /// to `recipients`, one transaction per domain and per `max_rcpts`
    /// recipients, and hands the results of each transaction to `record`
    /// before starting the next one. Every recipient gets exactly one
    /// [`RcptResult`], unless `record` fails: then its error is returned at
    /// once and the remaining recipients are neither tried nor reported.
    /// See the module documentation for the classification.
    pub fn deliver<E>(
        &mut self,
        sender: &str,
        recipients: &[String],
        message: &[u8],
        record: &mut dyn FnMut(&[RcptResult]) -> Result<(), E>,
    ) -> Result<(), E> {
        if recipients.is_empty() {
            return Ok(());
        }
        let sender = crate::address::checked_sender(sender)
            .map_err(|e| format!("invalid sender address <{sender}>: {e}"));
        let data = wire::to_smtp_data(message);
        let eight_bit = !data.is_ascii();
        let payload = wire::to_smtp_wire(&data);
        self.trouble = None;
        let mut connect_failure = None;
        for batch in plan(recipients, self.config.max_rcpts) {
            let addresses = batch.iter().map(|&i| recipients[i].as_str()).collect();
            let results = self.transaction(
                sender.as_ref().copied(),
                Transaction::new(addresses),
                &payload,
                eight_bit,
                &mut connect_failure,
            );
            record(&results)?;
        }
        Ok(())
    }

    /// Sends QUIT and drops the connection, ignoring errors. QUIT waits at
    /// most `min(command_timeout, 5 s)` for its reply.
    pub fn close(&mut self) {
        if let Some(session) = self.session.take() {
            session.quit(nonzero(
                self.config.command_timeout.min(Duration::from_secs(5)),
            ));
        }
    }

    /// One transaction: classifies every recipient of `txn`.
    fn transaction(
        &mut self,
        sender: Result<&str, &String>,
        mut txn: Transaction<'_>,
        payload: &[u8],
        eight_bit: bool,
        connect_failure: &mut Option<String>,
    ) -> Vec<RcptResult> {
        let sender = match sender {
            Ok(sender) => sender,
            Err(reason) => {
                txn.set_pending(Verdict::Failed, reason);
                return txn.finish();
            }
        };
        let mut rcpts = Vec::with_capacity(txn.addresses.len());
        for (index, address) in txn.addresses.clone().into_iter().enumerate() {
            match crate::address::checked_recipient(address) {
                Ok(checked) => rcpts.push((index, checked)),
                Err(e) => {
                    let reply = format!("invalid recipient address <{address}>: {e}");
                    txn.set(index, Verdict::Failed, reply);
                }
            }
        }
        if rcpts.is_empty() {
            return txn.finish();
        }
        if let Some(reason) = connect_failure {
            txn.set_pending(Verdict::Deferred, reason);
            return txn.finish();
        }

        let (mut session, pipelined) = loop {
            let (mut session, reused) = match self.session.take() {
                Some(session) => (session, true),
                None => match self.connect() {
                    Ok(session) => (Box::new(session), false),
                    Err(reason) => {
                        txn.set_pending(Verdict::Deferred, &reason);
                        self.trouble = Some(reason.clone());
                        *connect_failure = Some(reason);
                        return txn.finish();
                    }
                },
            };
            match start(&mut session, sender, &mut rcpts, &mut txn, eight_bit) {
                Start::Go { pipelined } => break (session, pipelined),
                Start::Over { keep } => {
                    if keep {
                        self.session = Some(session);
                    }
                    return txn.finish();
                }
                // A reused connection may have been closed by the server
                // while idle: one new connection for this transaction.
                Start::Lost(_) if reused => continue,
                Start::Lost(reason) => {
                    txn.set_pending(Verdict::Deferred, &reason);
                    return txn.finish();
                }
            }
        };

        let timeouts = (self.config.command_timeout, self.config.data_timeout);
        if rcpts_and_data(&mut session, &rcpts, &mut txn, pipelined, payload, timeouts) {
            self.session = Some(session);
        }
        txn.finish()
    }

    /// Opens a connection: TCP, TLS, greeting, EHLO, STARTTLS, AUTH.
    /// The error is the reply for the deferred recipients.
    fn connect(&mut self) -> Result<Session, String> {
        let tls = match self.config.tls {
            Tls::None => None,
            Tls::StartTls | Tls::Implicit => Some(self.tls_config().map_err(|e| {
                format!(
                    "cannot set up TLS for {}:{}: {e}",
                    self.config.host, self.config.port
                )
            })?),
        };
        let hello = self.hello.to_string();
        self.last_peer = None;
        let session = Session::connect(&Connect {
            host: &self.config.host,
            port: self.config.port,
            connect_timeout: nonzero(self.config.connect_timeout.min(self.config.command_timeout)),
            command_timeout: nonzero(self.config.command_timeout),
            hello: &hello,
            tls: tls
                .as_ref()
                .map(|config| (config, self.config.tls == Tls::Implicit)),
            credentials: self.config.credentials.as_ref(),
        })?;
        self.last_peer = Some(session.peer.clone());
        Ok(session)
    }

    fn tls_config(&mut self) -> Result<Arc<rustls::ClientConfig>, String> {
        if let Some(config) = &self.tls {
            return Ok(Arc::clone(config));
        }
        let pem = match &self.config.ca_file {
            Some(path) => Some((
                path.as_path(),
                std::fs::read(path)
                    .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?,
            )),
            None => None,
        };
        let config = Arc::new(session::tls_config(
            pem.as_ref().map(|(path, pem)| (*path, pem.as_slice())),
        )?);
        self.tls = Some(Arc::clone(&config));
        Ok(config)
    }
}

/// `RSET` if needed, the SMTPUTF8 check, then `MAIL FROM` (with the
/// `RCPT`s and `DATA` behind it when pipelining) and its reply.
fn start(
    session: &mut Session,
    sender: &str,
    rcpts: &mut Vec<(usize, &str)>,
    txn: &mut Transaction<'_>,
    eight_bit: bool,
) -> Start {
    if session.in_transaction {
        if let Err(broken) = session.send(Command::Rset, b"RSET\r\n") {
            return Start::Lost(broken.text().to_owned());
        }
        match session.read(Command::Rset) {
            Ok(Answer::Positive(_)) => session.in_transaction = false,
            Ok(Answer::Negative { reply, .. }) => {
                return Start::Lost(format!("{reply} (in reply to RSET)"));
            }
            Err(broken) => return Start::Lost(broken.text().to_owned()),
        }
    }

    let mut parameters = String::new();
    if eight_bit && session.features.eight_bit_mime {
        parameters.push_str(" BODY=8BITMIME");
    }
    let sender_ascii = sender.is_ascii();
    let rcpts_ascii = rcpts.iter().all(|(_, address)| address.is_ascii());
    if !(sender_ascii && rcpts_ascii) {
        if session.features.smtp_utf8 {
            parameters.push_str(" SMTPUTF8");
        } else if !sender_ascii {
            txn.set_pending(
                Verdict::Failed,
                "non-ASCII sender address but the server does not offer SMTPUTF8",
            );
            return Start::Over { keep: true };
        } else {
            rcpts.retain(|&(index, address)| {
                let ascii = address.is_ascii();
                if !ascii {
                    let reply =
                        "non-ASCII recipient address but the server does not offer SMTPUTF8";
                    txn.set(index, Verdict::Failed, reply.to_owned());
                }
                ascii
            });
            if rcpts.is_empty() {
                return Start::Over { keep: true };
            }
        }
    }

    let mut commands = format!("MAIL FROM:<{sender}>{parameters}\r\n");
    // Pipelined only while the whole envelope stays small: the server
    // answers as it reads, and if neither side read while the other wrote,
    // both would block once the socket buffers are full (RFC 2920 3.1).
    let envelope: usize = rcpts.iter().map(|(_, a)| a.len() + 11).sum();
    let pipelining = session.features.pipelining && envelope <= MAX_PIPELINED;
    let mut last = Command::Mail;
    if pipelining {
        for (_, address) in rcpts.iter() {
            commands.push_str("RCPT TO:<");
            commands.push_str(address);
            commands.push_str(">\r\n");
        }
        commands.push_str("DATA\r\n");
        last = Command::Data;
    }
    session.in_transaction = true;
    if let Err(broken) = session.send(last, commands.as_bytes()) {
        return Start::Lost(broken.text().to_owned());
    }
    match session.read(Command::Mail) {
        Ok(Answer::Positive(_)) => Start::Go {
            pipelined: pipelining,
        },
        Ok(Answer::Negative {
            closing: true,
            reply,
            ..
        }) => Start::Lost(format!("{reply} (in reply to MAIL FROM)")),
        Ok(Answer::Negative { verdict, reply, .. }) => {
            txn.set_pending(verdict, &format!("{reply} (in reply to MAIL FROM)"));
            let keep = !pipelining || drain(session, rcpts.len()).is_ok();
            Start::Over { keep }
        }
        Err(broken) => Start::Lost(broken.text().to_owned()),
    }
}

/// After a refused pipelined `MAIL`: reads the replies to the `RCPT`s and
/// `DATA` that followed it (refusals, as RFC 2920 requires), and answers a
/// `354` with an empty message.
fn drain(session: &mut Session, rcpts: usize) -> Result<(), Broken> {
    for _ in 0..rcpts {
        session.read(Command::Rcpt)?;
    }
    if let Answer::Positive(_) = session.read(Command::Data)? {
        session.send(Command::EndOfData, b".\r\n")?;
        session.read(Command::EndOfData)?;
    }
    Ok(())
}

/// The `RCPT` replies (sending each `RCPT` first unless pipelining), then
/// `DATA` and the message if any recipient was accepted. Returns whether
/// the connection can be kept.
fn rcpts_and_data(
    session: &mut Session,
    rcpts: &[(usize, &str)],
    txn: &mut Transaction<'_>,
    pipelining: bool,
    payload: &[u8],
    (command_timeout, data_timeout): (Duration, Duration),
) -> bool {
    // A protocol error defers everything sent; anything else what is not
    // classified yet.
    let fail = |txn: &mut Transaction<'_>, broken: Broken| {
        match &broken {
            Broken::Protocol(text) => txn.defer_sent(rcpts, text),
            Broken::Timeout(text) | Broken::Lost(text) => txn.set_pending(Verdict::Deferred, text),
        }
        false
    };
    let mut accepted = 0;
    for &(index, address) in rcpts {
        if !pipelining {
            let line = format!("RCPT TO:<{address}>\r\n");
            if let Err(broken) = session.send(Command::Rcpt, line.as_bytes()) {
                return fail(txn, broken);
            }
        }
        match session.read(Command::Rcpt) {
            Ok(Answer::Positive(_)) => accepted += 1,
            Ok(Answer::Negative {
                verdict,
                closing,
                reply,
            }) => {
                let text = reply.text();
                txn.set(index, verdict, text.clone());
                if closing {
                    txn.set_pending(
                        Verdict::Deferred,
                        &format!("connection closed by the server: {text}"),
                    );
                    return false;
                }
            }
            Err(broken) => return fail(txn, broken),
        }
    }

    if accepted == 0 && !pipelining {
        // Still inside the transaction: RSET before the next MAIL.
        return true;
    }
    if !pipelining && let Err(broken) = session.send(Command::Data, b"DATA\r\n") {
        return fail(txn, broken);
    }
    match session.read(Command::Data) {
        Ok(Answer::Positive(_)) if accepted == 0 => {
            // Pipelined, every RCPT refused, and yet 354: an empty message,
            // which the server must refuse (RFC 2920 3.1). Nobody is left to
            // classify; the transaction is over either way.
            if let Err(broken) = session.send(Command::EndOfData, b".\r\n") {
                return fail(txn, broken);
            }
            return match session.read(Command::EndOfData) {
                Ok(_) => true,
                Err(broken) => fail(txn, broken),
            };
        }
        Ok(Answer::Positive(_)) => {}
        Ok(Answer::Negative { .. }) if accepted == 0 => return true,
        Ok(Answer::Negative {
            verdict,
            closing,
            reply,
        }) => {
            // Recipients were accepted, yet DATA is refused: rare, and what
            // a reply too many earlier on would look like (the last RCPT's
            // refusal taken for DATA's, its 354 still coming). Make sure no
            // reply follows before trusting it. Even then, when pipelined, a
            // 354 slower than the grace would prove it another command's: a
            // permanent refusal there is not trusted to bounce accepted
            // recipients; they are deferred and the connection dropped.
            let mut keep = !closing;
            match session.quiet_for(DATA_REFUSAL_GRACE, command_timeout) {
                Err(broken @ Broken::Protocol(_)) => return fail(txn, broken),
                Err(_) => keep = false,
                Ok(()) => {}
            }
            let verdict = if pipelining && verdict == Verdict::Failed {
                keep = false;
                Verdict::Deferred
            } else {
                verdict
            };
            txn.set_pending(verdict, &format!("{reply} (in reply to DATA)"));
            return keep;
        }
        Err(broken) => return fail(txn, broken),
    }

    if let Err(broken) = session.send(Command::EndOfData, payload) {
        return fail(txn, broken);
    }
    let _ = session.set_read_timeout(nonzero(data_timeout));
    let answer = session.read(Command::EndOfData);
    if session.set_read_timeout(nonzero(command_timeout)).is_err() {
        // Cannot happen on an open socket; if it does, drop the connection.
        session.in_transaction = true;
    }
    match answer {
        Ok(Answer::Positive(reply)) => {
            // Nothing may follow the final reply: if something does, that
            // 250 may not have been the answer to this message.
            match session.check_idle() {
                Err(broken @ Broken::Protocol(_)) => return fail(txn, broken),
                Err(_) => {
                    // Closed after the final reply: delivered, connection gone.
                    txn.set_pending(Verdict::Delivered, &reply.text());
                    return false;
                }
                Ok(()) => {}
            }
            txn.set_pending(Verdict::Delivered, &reply.text());
            session.in_transaction = false;
            true
        }
        Ok(Answer::Negative {
            verdict,
            closing,
            reply,
        }) => {
            // The transaction is over; RSET anyway in case the server disagrees.
            txn.set_pending(verdict, &format!("{reply} (in reply to end of DATA)"));
            !closing
        }
        Err(broken) => fail(txn, broken),
    }
}

/// The transactions: recipients' indexes grouped by domain (in order of first
/// appearance), each group cut into chunks of at most `max_rcpts`.
fn plan(recipients: &[String], max_rcpts: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_domain: HashMap<String, usize> = HashMap::new();
    for (index, recipient) in recipients.iter().enumerate() {
        let domain = recipient
            .rsplit_once('@')
            .map_or("", |(_, domain)| domain)
            .to_lowercase();
        let group = *by_domain.entry(domain).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        if let Some(group) = groups.get_mut(group) {
            group.push(index);
        }
    }
    groups
        .iter()
        .flat_map(|group| group.chunks(max_rcpts.max(1)).map(<[usize]>::to_vec))
        .collect()
}

/// How long a refusal of `DATA` after accepted recipients waits for a
/// reply too many that would show it was not DATA's.
const DATA_REFUSAL_GRACE: Duration = Duration::from_millis(200);

/// Most bytes of `RCPT` commands sent in one pipelined write (about 500
/// recipients); a larger transaction waits for each reply.
const MAX_PIPELINED: usize = 16 * 1024;

/// Socket timeouts must not be zero.
fn nonzero(duration: Duration) -> Duration {
    duration.max(Duration::from_millis(1))
}
