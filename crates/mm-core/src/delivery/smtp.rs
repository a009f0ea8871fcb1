//! Delivery over SMTP to one configured server (a smarthost), with a result
//! per recipient.
//!
//! # Why lettre's `SmtpConnection` and not `SmtpTransport`
//!
//! lettre's high-level `SmtpTransport::send` does one transaction per message
//! and gives one result for it: it aborts the whole transaction on the first
//! refused `RCPT`, so one unknown user would defer or bounce everybody, and it
//! reports no per-recipient replies. It also sends the message bytes as they
//! are (bare LF included). A queue runner needs to know, for every
//! recipient, whether the server took it, refused it for good or asked to
//! try later, and to store that before it goes on. So this module drives the
//! session itself with `lettre::transport::smtp::client::SmtpConnection`,
//! which sends one command at a time and returns the server's reply (or the
//! local error) for each: `MAIL`, each `RCPT`, `DATA`, the message, `RSET`,
//! `QUIT`. lettre still does the parts that are easy to get wrong: reply
//! parsing (multi-line, size limits), `STARTTLS`/implicit TLS with rustls,
//! `AUTH`, address syntax, and the dot-stuffing of the message (see
//! [`super::wire`] for what is left to us: line endings).
//!
//! # One call to [`SmtpClient::deliver`]
//!
//! Recipients are grouped by domain (case-insensitively, part after the last
//! '@', in order of first appearance) and each group is cut into
//! transactions of at most `max_rcpts`. One transaction is `MAIL FROM`, one
//! `RCPT TO` per recipient, and `DATA` plus the message only if at least one
//! `RCPT` was accepted. There is no PIPELINING: each command waits for its
//! reply, which is what makes per-recipient results simple and exact.
//!
//! Classification (lettre's `Error::status`/`is_permanent`/`is_transient`,
//! never the text of a reply):
//!
//! | event | verdict |
//! | --- | --- |
//! | `RCPT` 2xx, then 2xx at end of data | `Delivered` (reply: the final 250 line) |
//! | `RCPT` 5xx / 4xx | `Failed` / `Deferred` (reply: the server's line) |
//! | `MAIL`, `DATA` or end of data 5xx / 4xx | `Failed` / `Deferred` for every recipient of the transaction not yet classified, reply suffixed with "(in reply to ...)" |
//! | a 421 reply (server closing), an I/O or TLS error, a timeout, a garbled reply, a dropped connection | `Deferred` for every recipient of the transaction not yet classified; the connection is dropped |
//! | cannot connect (TCP, greeting, EHLO, STARTTLS, AUTH) | `Deferred`, for this and every later transaction of the call, without connecting again |
//! | recipient not a valid address (lettre's `Address` syntax, control characters) | `Failed`, without sending it |
//! | sender not a valid address | `Failed` for every recipient |
//! | non-ASCII address and the server lacks SMTPUTF8 | `Failed` (RFC 6531 forbids sending it) |
//!
//! After each transaction the caller's `record` runs before the next one
//! starts, so that progress is durable; if it fails, `deliver` stops.
//!
//! # Connections
//!
//! The connection stays open between transactions and between calls. A
//! connection left inside a transaction (no `DATA`, or a refused message) is
//! reset with `RSET` before the next `MAIL`. If a *reused* connection turns
//! out to be dead (the `RSET` or `MAIL` fails with an I/O error, a timeout or
//! a 421, as happens when the server closed an idle connection or limits
//! messages per connection), it is replaced by a new one once for that
//! transaction. A failure on a fresh connection is final for the transaction.
//!
//! # Timeouts
//!
//! lettre applies a timeout as the socket's read and write timeout, so each
//! one bounds every single read or write (inactivity), not a whole reply:
//!
//! * `SmtpConnection::connect` uses one value for the TCP connect, the TLS
//!   handshake of implicit TLS (rustls does it on first use), the greeting and
//!   `EHLO`. We pass `min(connect_timeout, command_timeout)`, so neither limit
//!   is exceeded there.
//! * Right after connecting, the socket timeouts are set to `command_timeout`
//!   for everything else: `STARTTLS`, `AUTH`, `MAIL`, `RCPT`, `DATA`, sending
//!   the message, the final reply, `RSET`, `QUIT`.
//! * On Unix an expired socket timeout is reported as `WouldBlock` (EAGAIN),
//!   which lettre's `Error::is_timeout` does not recognise (it looks for
//!   `TimedOut`), so we look at the `io::ErrorKind` in the error chain too.
//!
//! Not bounded: DNS resolution of the host name (lettre resolves with the
//! standard library, which has no timeout); a server that dribbles a reply a
//! byte at a time can stretch it up to lettre's 100 kB reply limit.
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
//! No `SIZE` parameter (lettre's `ServerInfo` does not keep the limit).
//! STARTTLS is required when configured (no opportunistic fallback).
//! Certificates are checked by rustls against the platform's trust store
//! (rustls-platform-verifier: the system CA bundle on Linux). Credentials are
//! sent with `Tls::None` too (meant for a relay on localhost). A recipient
//! without '@' (such as a bare `postmaster`) fails lettre's address syntax.
//! Writing to a connection the server has closed relies on SIGPIPE being
//! ignored, as the Rust runtime sets it up for every binary; a program that
//! restores the default SIGPIPE action would be killed instead.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;
use std::time::Duration;

use lettre::Address;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Quit, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

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
    /// Limit for every read or write of every later command and reply.
    pub command_timeout: Duration,
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
            .field("max_rcpts", &self.max_rcpts)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl SmtpConfig {
    /// Default [`SmtpConfig::connect_timeout`].
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`SmtpConfig::command_timeout`] (RFC 5321 4.5.3.2 allows up to 10 min for some replies).
    pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);
    /// Default [`SmtpConfig::max_rcpts`] (RFC 5321 4.5.3.1.8: servers must take at least 100).
    pub const DEFAULT_MAX_RCPTS: usize = 100;

    /// A configuration with the defaults: no credentials, the machine's host
    /// name for EHLO, 30 s connect timeout, 5 min command timeout, 100
    /// recipients per transaction.
    pub fn new(host: impl Into<String>, port: u16, tls: Tls) -> SmtpConfig {
        SmtpConfig {
            host: host.into(),
            port,
            tls,
            credentials: None,
            helo_name: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            command_timeout: Self::DEFAULT_COMMAND_TIMEOUT,
            max_rcpts: Self::DEFAULT_MAX_RCPTS,
            ca_file: None,
        }
    }

    /// Reads a server URL:
    ///
    /// * `smtp://[user[:pass]@]host[:port]`: plain SMTP, port 25;
    /// * `smtp://...?tls=starttls`: STARTTLS (required), port 25 (`tls=none` is the default);
    /// * `smtp+starttls://[user[:pass]@]host[:port]`: STARTTLS (required), port 587 (submission);
    /// * `smtps://[user[:pass]@]host[:port]`: implicit TLS, port 465.
    ///
    /// The scheme is case-insensitive; an IPv6 host goes in brackets
    /// (`smtp://[::1]:2525`). User and password are percent-decoded (write
    /// `@` as `%40`, `:` in the user as `%3A`). Query parameters: `tls=`
    /// (only with `smtp://`), `helo=NAME` (percent-decoded) for the EHLO
    /// name, and `ca=PATH` (percent-decoded), a PEM file of CA certificates
    /// to trust besides the system's. A trailing `/` is allowed; any other path, a fragment or an
    /// unknown parameter is an error. Timeouts and `max_rcpts` get their
    /// defaults (set the fields afterwards to change them).
    pub fn parse(url: &str) -> Result<SmtpConfig, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} is not a server URL (smtp://, smtp+starttls:// or smtps://)")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        let (mut tls, default_port) = match scheme.as_str() {
            "smtp" => (Tls::None, 25),
            "smtp+starttls" => (Tls::StartTls, 587),
            "smtps" => (Tls::Implicit, 465),
            _ => {
                return Err(format!(
                    "unknown scheme {scheme:?} in {url:?} (smtp, smtp+starttls or smtps)"
                ));
            }
        };
        if rest.contains('#') {
            return Err(format!("a fragment ('#') is not allowed in {url:?}"));
        }
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        if !path.is_empty() && path != "/" {
            return Err(format!("unexpected path {path:?} in {url:?}"));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(userinfo) => {
                let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user =
                    percent_decode(user).map_err(|e| format!("user name in {url:?}: {e}"))?;
                if user.is_empty() {
                    return Err(format!("empty user name in {url:?}"));
                }
                let pass = percent_decode(pass).map_err(|e| format!("password in {url:?}: {e}"))?;
                Some((user, pass))
            }
        };
        let (host, port) = parse_host_port(hostport).map_err(|e| format!("{e} in {url:?}"))?;
        let mut helo_name = None;
        let mut ca_file = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "tls" if scheme != "smtp" => {
                    return Err(format!(
                        "tls= is only for smtp:// URLs; the scheme {scheme}:// already sets it, in {url:?}"
                    ));
                }
                "tls" => {
                    tls = match value.to_ascii_lowercase().as_str() {
                        "none" => Tls::None,
                        "starttls" => Tls::StartTls,
                        _ => {
                            return Err(format!(
                                "tls={value} in {url:?}: expected tls=none or tls=starttls (use smtps:// for implicit TLS)"
                            ));
                        }
                    }
                }
                "helo" => {
                    let name =
                        percent_decode(value).map_err(|e| format!("helo= in {url:?}: {e}"))?;
                    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(format!("helo={value} in {url:?}: not a host name"));
                    }
                    helo_name = Some(name);
                }
                "ca" => {
                    let path = percent_decode(value).map_err(|e| format!("ca= in {url:?}: {e}"))?;
                    if path.is_empty() {
                        return Err(format!("ca= in {url:?}: empty path"));
                    }
                    ca_file = Some(std::path::PathBuf::from(path));
                }
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?} in {url:?} (known: tls, helo, ca)"
                    ));
                }
            }
        }
        let mut config = SmtpConfig::new(host, port.unwrap_or(default_port), tls);
        config.credentials = credentials;
        config.helo_name = helo_name;
        config.ca_file = ca_file;
        Ok(config)
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_host_port(hostport: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (inside, after) = bracketed
            .split_once(']')
            .ok_or("unclosed '[' in the host")?;
        inside
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("[{inside}] is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| format!("unexpected {after:?} after the IPv6 address"))?,
            ),
        };
        (inside, port)
    } else {
        match hostport.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err("an IPv6 address must be written in brackets, e.g. [::1]".to_owned());
            }
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("missing host".to_owned());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '[' | ']' | '%'))
    {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => return Err(format!("invalid port {port:?} (1 to 65535)")),
            Ok(port) => Some(port),
        },
    };
    Ok((host.to_owned(), port))
}

/// RFC 3986 percent-decoding into UTF-8 ('+' stays '+').
fn percent_decode(text: &str) -> Result<String, String> {
    fn hex(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            b'A'..=b'F' => Some(digit - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex);
            let low = bytes.get(i + 2).copied().and_then(hex);
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err("'%' not followed by two hex digits".to_owned()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decodes to invalid UTF-8".to_owned())
}

/// An open connection and whether it is inside a transaction (then `RSET`
/// comes before the next `MAIL`).
struct Session {
    conn: SmtpConnection,
    in_transaction: bool,
}

/// An SMTP client for one server, keeping its connection open between calls.
pub struct SmtpClient {
    config: SmtpConfig,
    hello: ClientId,
    /// Built on the first TLS connection, then reused.
    tls_parameters: Option<TlsParameters>,
    /// Boxed: an open rustls connection is over a kilobyte, and a client is
    /// often kept in an enum beside small transports.
    session: Option<Box<Session>>,
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

/// How a failed command failed.
enum Failure {
    /// The server answered 4xx or 5xx.
    Reply {
        verdict: Verdict,
        text: String,
        /// 421: the server is closing the connection.
        closing: bool,
    },
    /// No usable reply: I/O or TLS error, timeout, closed connection,
    /// garbled reply. The connection is unusable.
    Broken,
}

/// What became of `RSET` + `MAIL FROM`.
enum Start {
    /// `MAIL` accepted: go on with `RCPT`.
    Go,
    /// The transaction is over (all classified); keep the connection.
    Over,
    /// The connection is unusable; the reason, if it has to be reported.
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
            tls_parameters: None,
            session: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SmtpConfig {
        &self.config
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
        let sender = if sender.is_empty() {
            Ok(None)
        } else {
            parse_address(sender)
                .map(Some)
                .map_err(|e| format!("invalid sender address <{sender}>: {e}"))
        };
        let data = wire::to_smtp_data(message);
        let eight_bit = !data.is_ascii();
        // The whole DATA payload in one write when it is text (see `Payload`).
        let whole = String::from_utf8(wire::to_smtp_wire(&data)).ok();
        let mut connect_failure = None;
        for batch in plan(recipients, self.config.max_rcpts) {
            let addresses = batch.iter().map(|&i| recipients[i].as_str()).collect();
            let results = self.transaction(
                &sender,
                Transaction::new(addresses),
                (&data, whole.as_deref()),
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
        if let Some(mut session) = self.session.take() {
            let wait = self.config.command_timeout.min(Duration::from_secs(5));
            if session.conn.set_timeout(Some(nonzero(wait))).is_ok() {
                let _ = session.conn.command(Quit);
            }
        }
    }

    /// One transaction: classifies every recipient of `txn`.
    fn transaction(
        &mut self,
        sender: &Result<Option<Address>, String>,
        mut txn: Transaction<'_>,
        data: (&[u8], Option<&str>),
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
            match parse_address(address) {
                Ok(parsed) => rcpts.push((index, parsed)),
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

        let mut session = loop {
            let (mut session, reused) = match self.session.take() {
                Some(session) => (session, true),
                None => match self.connect() {
                    Ok(conn) => (
                        Box::new(Session {
                            conn,
                            in_transaction: false,
                        }),
                        false,
                    ),
                    Err(reason) => {
                        txn.set_pending(Verdict::Deferred, &reason);
                        *connect_failure = Some(reason);
                        return txn.finish();
                    }
                },
            };
            match start(&mut session, sender, &mut rcpts, &mut txn, eight_bit) {
                Start::Go => break session,
                Start::Over => {
                    self.session = Some(session);
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

        if rcpts_and_data(&mut session, rcpts, &mut txn, data) {
            self.session = Some(session);
        }
        txn.finish()
    }

    /// Opens a connection: TCP, TLS, greeting, EHLO, STARTTLS, AUTH.
    /// The error is the reply for the deferred recipients.
    fn connect(&mut self) -> Result<SmtpConnection, String> {
        let server = match self.config.host.parse::<Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", self.config.host, self.config.port),
            Err(_) => format!("{}:{}", self.config.host, self.config.port),
        };
        let tls_parameters = if self.config.tls == Tls::None {
            None
        } else {
            let parameters = self
                .tls_parameters()
                .map_err(|e| format!("cannot set up TLS for {server}: {e}"))?;
            Some(parameters)
        };
        let implicit = match self.config.tls {
            Tls::Implicit => tls_parameters.as_ref(),
            Tls::None | Tls::StartTls => None,
        };
        let fail = |what: &str, e: &SmtpError| {
            if is_timeout(e) {
                format!("timeout {what} {server}")
            } else {
                format!("{what} {server} failed: {}", describe_error(e))
            }
        };
        let connect_timeout = nonzero(self.config.connect_timeout.min(self.config.command_timeout));
        let mut conn = SmtpConnection::connect(
            (self.config.host.as_str(), self.config.port),
            Some(connect_timeout),
            &self.hello,
            implicit,
            None,
        )
        .map_err(|e| fail("connecting to", &e))?;
        // Else every message waits ~40 ms for the server's delayed ACK.
        super::nodelay::set_on_all_sockets();
        conn.set_timeout(Some(nonzero(self.config.command_timeout)))
            .map_err(|e| format!("connecting to {server} failed: cannot set timeout: {e}"))?;
        if self.config.tls == Tls::StartTls {
            if !conn.can_starttls() {
                return Err(format!("{server} does not offer STARTTLS"));
            }
            let Some(parameters) = &tls_parameters else {
                return Err(format!("internal error: no TLS parameters for {server}"));
            };
            conn.starttls(parameters, &self.hello)
                .map_err(|e| fail("STARTTLS with", &e))?;
        }
        if let Some((user, password)) = &self.config.credentials {
            let credentials = Credentials::new(user.clone(), password.clone());
            conn.auth(DEFAULT_MECHANISMS, &credentials)
                .map_err(|e| fail("authentication with", &e))?;
        }
        Ok(conn)
    }

    fn tls_parameters(&mut self) -> Result<TlsParameters, String> {
        if let Some(parameters) = &self.tls_parameters {
            return Ok(parameters.clone());
        }
        let mut builder = TlsParameters::builder(self.config.host.clone());
        if let Some(path) = &self.config.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("bad CA file {}: {}", path.display(), describe_error(&e)))?;
            builder = builder.add_root_certificate(cert);
        }
        let parameters = builder.build().map_err(|e| describe_error(&e))?;
        self.tls_parameters = Some(parameters.clone());
        Ok(parameters)
    }
}

/// `RSET` if needed, the SMTPUTF8 check, then `MAIL FROM`.
fn start(
    session: &mut Session,
    sender: &Option<Address>,
    rcpts: &mut Vec<(usize, Address)>,
    txn: &mut Transaction<'_>,
    eight_bit: bool,
) -> Start {
    let conn = &mut session.conn;
    if session.in_transaction {
        match conn.command(Rset) {
            Ok(_) => session.in_transaction = false,
            Err(e) => return Start::Lost(broken_reply(&e, "RSET")),
        }
    }

    let mut parameters = Vec::new();
    if eight_bit && conn.server_info().supports_feature(Extension::EightBitMime) {
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    let sender_ascii = sender.as_ref().is_none_or(is_ascii);
    let rcpts_ascii = rcpts.iter().all(|(_, address)| is_ascii(address));
    if !(sender_ascii && rcpts_ascii) {
        if conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            parameters.push(MailParameter::SmtpUtfEight);
        } else if !sender_ascii {
            txn.set_pending(
                Verdict::Failed,
                "non-ASCII sender address but the server does not offer SMTPUTF8",
            );
            return Start::Over;
        } else {
            rcpts.retain(|(index, address)| {
                let ascii = is_ascii(address);
                if !ascii {
                    let reply =
                        "non-ASCII recipient address but the server does not offer SMTPUTF8";
                    txn.set(*index, Verdict::Failed, reply.to_owned());
                }
                ascii
            });
            if rcpts.is_empty() {
                return Start::Over;
            }
        }
    }

    session.in_transaction = true;
    match session.conn.command(Mail::new(sender.clone(), parameters)) {
        Ok(_) => Start::Go,
        Err(e) => match classify(&e) {
            Failure::Reply {
                closing: true,
                text,
                ..
            } => Start::Lost(format!("{text} (in reply to MAIL FROM)")),
            Failure::Reply { verdict, text, .. } => {
                txn.set_pending(verdict, &format!("{text} (in reply to MAIL FROM)"));
                Start::Over
            }
            Failure::Broken => Start::Lost(broken_reply(&e, "MAIL FROM")),
        },
    }
}

/// `RCPT TO` for each recipient, then `DATA` and the message if any was
/// accepted. Returns whether the connection can be kept.
fn rcpts_and_data(
    session: &mut Session,
    rcpts: Vec<(usize, Address)>,
    txn: &mut Transaction<'_>,
    (data, whole): (&[u8], Option<&str>),
) -> bool {
    let conn = &mut session.conn;
    let mut accepted = 0;
    for (index, address) in rcpts {
        match conn.command(Rcpt::new(address, Vec::new())) {
            Ok(_) => accepted += 1,
            Err(e) => match classify(&e) {
                Failure::Reply {
                    verdict,
                    text,
                    closing,
                } => {
                    txn.set(index, verdict, text.clone());
                    if closing {
                        txn.set_pending(
                            Verdict::Deferred,
                            &format!("connection closed by the server: {text}"),
                        );
                        return false;
                    }
                }
                Failure::Broken => {
                    txn.set_pending(Verdict::Deferred, &broken_reply(&e, "RCPT TO"));
                    return false;
                }
            },
        }
    }
    if accepted == 0 {
        // Still inside the transaction: RSET before the next MAIL.
        return true;
    }

    if let Err(e) = conn.command(Data) {
        return match classify(&e) {
            Failure::Reply {
                verdict,
                text,
                closing,
            } => {
                txn.set_pending(verdict, &format!("{text} (in reply to DATA)"));
                !closing
            }
            Failure::Broken => {
                txn.set_pending(Verdict::Deferred, &broken_reply(&e, "DATA"));
                false
            }
        };
    }

    let sent = match whole {
        Some(text) => conn.command(Payload(text)),
        None => conn.message(data),
    };
    match sent {
        Ok(response) => {
            txn.set_pending(Verdict::Delivered, &response_text(&response));
            session.in_transaction = false;
            true
        }
        Err(e) => match classify(&e) {
            Failure::Reply {
                verdict,
                text,
                closing,
            } => {
                // The transaction is over; RSET anyway in case the server disagrees.
                txn.set_pending(verdict, &format!("{text} (in reply to end of DATA)"));
                !closing
            }
            Failure::Broken => {
                txn.set_pending(Verdict::Deferred, &broken_reply(&e, "end of DATA"));
                false
            }
        },
    }
}

/// The DATA payload, dot-stuffed and terminated ([`wire::to_smtp_wire`]),
/// sent through `SmtpConnection::command`, which writes a command's text as
/// it is and reads the reply: one write, where `message()` makes two (the
/// closing dot alone), which costs a TCP segment and a server wake-up per
/// message. Only for text: `command` takes a `Display`; a message with bytes
/// that are not UTF-8 goes through `message()`.
struct Payload<'a>(&'a str);

impl fmt::Display for Payload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
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

/// lettre's address syntax, and no control characters (which could smuggle
/// a second command into the line).
fn parse_address(address: &str) -> Result<Address, String> {
    if address.chars().any(char::is_control) {
        return Err("control character in address".to_owned());
    }
    Address::from_str(address).map_err(|e| e.to_string())
}

fn is_ascii(address: &Address) -> bool {
    let text: &str = address.as_ref();
    text.is_ascii()
}

fn classify(e: &SmtpError) -> Failure {
    match e.status() {
        Some(_) if e.is_permanent() => Failure::Reply {
            verdict: Verdict::Failed,
            text: error_reply(e),
            closing: false,
        },
        Some(code) if e.is_transient() => Failure::Reply {
            verdict: Verdict::Deferred,
            text: error_reply(e),
            closing: u16::from(code) == 421,
        },
        _ => Failure::Broken,
    }
}

/// "550 5.1.1 text" for a negative reply.
fn error_reply(e: &SmtpError) -> String {
    let text = e.source().map(ToString::to_string).unwrap_or_default();
    match e.status() {
        Some(code) if text.is_empty() => code.to_string(),
        Some(code) => format!("{code} {text}"),
        None => text,
    }
}

/// "250 2.0.0 Ok: queued as X" for a positive reply.
fn response_text(response: &Response) -> String {
    let mut text = response.code().to_string();
    for line in response.message() {
        text.push(' ');
        text.push_str(line);
    }
    text
}

/// A failure as a reply: the server's reply if it gave one, else lettre's
/// description.
fn describe_error(e: &SmtpError) -> String {
    if e.status().is_some() {
        error_reply(e)
    } else {
        e.to_string()
    }
}

/// The reply for recipients deferred by a lost connection after `stage`.
fn broken_reply(e: &SmtpError, stage: &str) -> String {
    if is_timeout(e) {
        format!("timeout after {stage}")
    } else if e.status().is_some() {
        format!("{} (in reply to {stage})", error_reply(e))
    } else {
        format!("connection lost after {stage}: {e}")
    }
}

/// lettre's `is_timeout`, plus the `WouldBlock` that an expired socket
/// timeout gives on Unix.
fn is_timeout(e: &SmtpError) -> bool {
    if e.is_timeout() {
        return true;
    }
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(io_error) = err.downcast_ref::<io::Error>() {
            return matches!(
                io_error.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            );
        }
        source = err.source();
    }
    false
}

/// Socket timeouts must not be zero.
fn nonzero(duration: Duration) -> Duration {
    duration.max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::VecDeque;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::thread;
    use std::time::Instant;

    use mailin_embedded::{Handler, Response as ServerResponse, Server, response};

    /// One transaction as the test server saw it at end of data.
    #[derive(Clone, Debug)]
    struct Received {
        from: String,
        rcpts: Vec<String>,
        is8bit: bool,
        data: Vec<u8>,
    }

    #[derive(Default)]
    struct Shared {
        /// Scripted MAIL replies, used up in order; then 250.
        mail_replies: VecDeque<(u16, &'static str)>,
        /// Scripted RCPT replies per address, used up in order; then 250.
        rcpt_replies: HashMap<String, VecDeque<(u16, &'static str)>>,
        /// How long the server thinks before answering end of data.
        data_end_delay: Duration,
        /// EHLO/HELO commands seen: one per connection.
        hellos: usize,
        transactions: Vec<Received>,
        /// Users who authenticated (AUTH PLAIN with the password `s3cret`).
        authenticated: Vec<String>,
    }

    #[derive(Clone)]
    struct TestHandler {
        shared: Arc<Mutex<Shared>>,
        from: String,
        rcpts: Vec<String>,
        is8bit: bool,
        data: Vec<u8>,
    }

    fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
        shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    impl Handler for TestHandler {
        fn helo(&mut self, _ip: IpAddr, _domain: &str) -> ServerResponse {
            lock(&self.shared).hellos += 1;
            response::OK
        }

        fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> ServerResponse {
            self.from = from.to_owned();
            match lock(&self.shared).mail_replies.pop_front() {
                Some((code, text)) => ServerResponse::custom(code, text.to_owned()),
                None => response::OK,
            }
        }

        fn rcpt(&mut self, to: &str) -> ServerResponse {
            let scripted = lock(&self.shared)
                .rcpt_replies
                .get_mut(to)
                .and_then(VecDeque::pop_front);
            match scripted {
                Some((code, text)) => ServerResponse::custom(code, text.to_owned()),
                None => response::OK,
            }
        }

        fn data_start(
            &mut self,
            _domain: &str,
            _from: &str,
            is8bit: bool,
            to: &[String],
        ) -> ServerResponse {
            self.rcpts = to.to_vec();
            self.is8bit = is8bit;
            self.data.clear();
            response::OK
        }

        fn data(&mut self, buf: &[u8]) -> io::Result<()> {
            self.data.extend_from_slice(buf);
            Ok(())
        }

        fn auth_plain(
            &mut self,
            _authorization_id: &str,
            authentication_id: &str,
            password: &str,
        ) -> ServerResponse {
            if password == "s3cret" {
                lock(&self.shared)
                    .authenticated
                    .push(authentication_id.to_owned());
                response::AUTH_OK
            } else {
                response::INVALID_CREDENTIALS
            }
        }

        fn data_end(&mut self) -> ServerResponse {
            let delay = lock(&self.shared).data_end_delay;
            thread::sleep(delay);
            lock(&self.shared).transactions.push(Received {
                from: self.from.clone(),
                rcpts: std::mem::take(&mut self.rcpts),
                is8bit: self.is8bit,
                data: std::mem::take(&mut self.data),
            });
            ServerResponse::custom(250, "2.0.0 Ok: queued".to_owned())
        }
    }

    /// A mailin-embedded server on its own port for one test (it cannot be
    /// stopped: the thread ends with the test process).
    fn start_server(shared: Shared) -> (u16, Arc<Mutex<Shared>>) {
        serve(shared, |server| {
            server.with_name("mx.test");
        })
    }

    /// Like [`start_server`], with STARTTLS (the test certificate for
    /// `localhost`, signed by the test CA of `tests/fixtures/tls`) and AUTH
    /// PLAIN, which mailin offers only after STARTTLS.
    fn start_tls_server() -> (u16, Arc<Mutex<Shared>>) {
        // The test binary links two rustls providers (lettre's ring,
        // mailin's aws-lc-rs); mailin's server needs a default chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = |f: &str| tls_fixture(f).to_string_lossy().into_owned();
        serve(Shared::default(), |server| {
            server
                .with_name("localhost")
                .with_ssl(mailin_embedded::SslConfig::SelfSigned {
                    cert_path: tls("server.pem"),
                    key_path: tls("server.key"),
                })
                .expect("TLS set-up")
                .with_auth(mailin_embedded::AuthMechanism::Plain);
        })
    }

    /// Starts a server on a free port, configured by `setup`.
    fn serve(
        shared: Shared,
        setup: impl FnOnce(&mut Server<TestHandler>),
    ) -> (u16, Arc<Mutex<Shared>>) {
        let shared = Arc::new(Mutex::new(shared));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let handler = TestHandler {
            shared: Arc::clone(&shared),
            from: String::new(),
            rcpts: Vec::new(),
            is8bit: false,
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        setup(&mut server);
        server.with_tcp_listener(listener);
        thread::spawn(move || {
            let _ = server.serve();
        });
        (port, shared)
    }

    fn tls_fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    fn client_for(url: &str) -> SmtpClient {
        let mut config = SmtpConfig::parse(url).expect("url");
        config.helo_name = Some("client.test".to_owned());
        config.connect_timeout = Duration::from_secs(5);
        config.command_timeout = Duration::from_secs(10);
        SmtpClient::new(config)
    }

    #[test]
    fn starttls_with_a_private_ca_and_auth_plain_deliver() {
        let (port, shared) = start_tls_server();
        let ca = tls_fixture("ca.pem");
        let url = format!(
            "smtp+starttls://mm:s3cret@localhost:{port}?ca={}",
            ca.display()
        );
        let calls = deliver(
            &mut client_for(&url),
            "s@example.org",
            &strings(&["a@example.org"]),
            MESSAGE,
        );
        assert_eq!(
            verdicts(&calls[0]),
            vec![("a@example.org", Verdict::Delivered)],
            "{calls:?}"
        );
        let seen = lock(&shared);
        assert_eq!(seen.authenticated, vec!["mm".to_owned()]);
        assert_eq!(seen.transactions.len(), 1);
    }

    #[test]
    fn a_wrong_password_or_an_unknown_ca_defers_and_sends_nothing() {
        let (port, shared) = start_tls_server();
        let ca = tls_fixture("ca.pem");
        for (url, why) in [
            (
                format!(
                    "smtp+starttls://mm:wrong@localhost:{port}?ca={}",
                    ca.display()
                ),
                "authentication",
            ),
            // Without ca= the test CA is unknown: the handshake must fail.
            (
                format!("smtp+starttls://mm:s3cret@localhost:{port}"),
                "STARTTLS",
            ),
        ] {
            let calls = deliver(
                &mut client_for(&url),
                "s@example.org",
                &strings(&["a@example.org"]),
                MESSAGE,
            );
            let r = &calls[0][0];
            assert_eq!(r.verdict, Verdict::Deferred, "{url}: {r:?}");
            assert!(r.reply.contains(why), "{url}: {}", r.reply);
        }
        let seen = lock(&shared);
        assert!(seen.authenticated.is_empty(), "{:?}", seen.authenticated);
        assert!(seen.transactions.is_empty());
    }

    #[test]
    fn ca_parameter_is_parsed_and_percent_decoded() {
        let c =
            SmtpConfig::parse("smtp+starttls://relay.example?ca=/etc/mm/ca%20bundle.pem").unwrap();
        assert_eq!(
            c.ca_file,
            Some(std::path::PathBuf::from("/etc/mm/ca bundle.pem"))
        );
        assert!(SmtpConfig::parse("smtp://relay.example?ca=").is_err());
    }

    fn client(port: u16) -> SmtpClient {
        client_for(&format!("smtp://127.0.0.1:{port}"))
    }

    fn strings(addresses: &[&str]) -> Vec<String> {
        addresses.iter().map(|&a| a.to_owned()).collect()
    }

    /// Delivers and returns what `record` was given, call by call.
    fn deliver(
        client: &mut SmtpClient,
        sender: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Vec<Vec<RcptResult>> {
        let mut calls = Vec::new();
        let outcome = client.deliver::<()>(sender, recipients, message, &mut |results| {
            calls.push(results.to_vec());
            Ok(())
        });
        assert_eq!(outcome, Ok(()));
        calls
    }

    fn verdicts(results: &[RcptResult]) -> Vec<(&str, Verdict)> {
        results
            .iter()
            .map(|r| (r.address.as_str(), r.verdict))
            .collect()
    }

    const MESSAGE: &[u8] = b"Subject: test\n\nHello.\n";

    #[test]
    fn one_refused_recipient_among_fifty() {
        let mut shared = Shared::default();
        shared.rcpt_replies.insert(
            "user17@example.com".to_owned(),
            VecDeque::from([(550, "5.1.1 no such user")]),
        );
        let (port, shared) = start_server(shared);
        let recipients: Vec<String> = (0..50).map(|i| format!("user{i}@example.com")).collect();
        let mut client = client(port);

        let calls = deliver(&mut client, "sender@example.org", &recipients, MESSAGE);

        assert_eq!(calls.len(), 1, "one transaction");
        let results = &calls[0];
        assert_eq!(results.len(), 50);
        for (result, address) in results.iter().zip(&recipients) {
            assert_eq!(&result.address, address);
            if address == "user17@example.com" {
                assert_eq!(result.verdict, Verdict::Failed);
                assert_eq!(result.reply, "550 5.1.1 no such user");
            } else {
                assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
                assert!(result.reply.starts_with("250 "), "{result:?}");
            }
        }
        let shared = lock(&shared);
        assert_eq!(shared.transactions.len(), 1, "the message went out once");
        let received = &shared.transactions[0];
        assert_eq!(received.from, "sender@example.org");
        assert_eq!(received.rcpts.len(), 49);
        assert!(!received.rcpts.iter().any(|r| r == "user17@example.com"));
    }

    #[test]
    fn deferred_recipient_is_delivered_on_the_next_call() {
        let mut shared = Shared::default();
        shared.rcpt_replies.insert(
            "slow@example.com".to_owned(),
            VecDeque::from([(450, "4.2.0 mailbox busy, try later")]),
        );
        let (port, shared) = start_server(shared);
        let mut client = client(port);
        let recipients = strings(&["a@example.com", "slow@example.com", "b@example.com"]);

        let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert_eq!(first.len(), 1);
        assert_eq!(
            verdicts(&first[0]),
            [
                ("a@example.com", Verdict::Delivered),
                ("slow@example.com", Verdict::Deferred),
                ("b@example.com", Verdict::Delivered),
            ]
        );
        assert_eq!(first[0][1].reply, "450 4.2.0 mailbox busy, try later");

        let second = deliver(
            &mut client,
            "s@example.org",
            &strings(&["slow@example.com"]),
            MESSAGE,
        );
        assert_eq!(second.len(), 1);
        assert_eq!(
            verdicts(&second[0]),
            [("slow@example.com", Verdict::Delivered)]
        );

        let shared = lock(&shared);
        assert_eq!(shared.transactions.len(), 2);
        assert_eq!(
            shared.transactions[0].rcpts,
            ["a@example.com", "b@example.com"]
        );
        assert_eq!(shared.transactions[1].rcpts, ["slow@example.com"]);
        assert_eq!(shared.hellos, 1, "the connection was reused");
    }

    #[test]
    fn message_arrives_intact_modulo_crlf() {
        let (port, shared) = start_server(Shared::default());
        let mut client = client(port);
        let message: &[u8] =
            b"Subject: dots\n\nfirst\n.\n..\n.leading dot\nGr\xc3\xbc\xc3\x9fe \xff\x00\n\nlast\n";

        let calls = deliver(
            &mut client,
            "s@example.org",
            &strings(&["r@example.com"]),
            message,
        );
        assert_eq!(verdicts(&calls[0]), [("r@example.com", Verdict::Delivered)]);

        let shared = lock(&shared);
        assert_eq!(shared.transactions.len(), 1);
        let received = &shared.transactions[0];
        assert!(received.is8bit, "BODY=8BITMIME announced");
        let mut undone = Vec::new();
        let mut i = 0;
        while i < received.data.len() {
            if received.data[i..].starts_with(b"\r\n") {
                undone.push(b'\n');
                i += 2;
            } else {
                assert_ne!(received.data[i], b'\n', "bare LF on the wire");
                undone.push(received.data[i]);
                i += 1;
            }
        }
        assert_eq!(undone, message);
    }

    #[test]
    fn transactions_per_domain_and_max_rcpts() {
        let (port, shared) = start_server(Shared::default());
        let mut client = client(port);
        client.config.max_rcpts = 2;
        let recipients = strings(&[
            "a1@x.test",
            "b1@y.test",
            "a2@X.Test",
            "a3@x.test",
            "b2@Y.TEST",
        ]);

        let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);

        let grouped: Vec<Vec<&str>> = calls
            .iter()
            .map(|results| results.iter().map(|r| r.address.as_str()).collect())
            .collect();
        assert_eq!(
            grouped,
            [
                vec!["a1@x.test", "a2@X.Test"],
                vec!["a3@x.test"],
                vec!["b1@y.test", "b2@Y.TEST"],
            ]
        );
        assert!(
            calls
                .iter()
                .flatten()
                .all(|r| r.verdict == Verdict::Delivered)
        );
        let shared = lock(&shared);
        let seen: Vec<Vec<String>> = shared
            .transactions
            .iter()
            .map(|t| t.rcpts.clone())
            .collect();
        assert_eq!(
            seen,
            [
                vec!["a1@x.test", "a2@X.Test"],
                vec!["a3@x.test"],
                vec!["b1@y.test", "b2@Y.TEST"],
            ]
        );
        assert_eq!(
            shared.hellos, 1,
            "one connection for the three transactions"
        );
    }

    #[test]
    fn stalled_server_times_out() {
        let (port, shared) = start_server(Shared {
            data_end_delay: Duration::from_secs(3),
            ..Shared::default()
        });
        let mut client = client(port);
        client.config.command_timeout = Duration::from_secs(1);
        let recipients = strings(&["a@example.com", "b@example.com"]);

        let started = Instant::now();
        let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        let elapsed = started.elapsed();

        assert_eq!(calls.len(), 1);
        for result in &calls[0] {
            assert_eq!(result.verdict, Verdict::Deferred, "{result:?}");
            assert_eq!(result.reply, "timeout after end of DATA");
        }
        assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
        assert!(client.session.is_none(), "the connection was dropped");
        drop(shared);
    }

    #[test]
    fn connection_refused_defers_everybody_promptly() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr").port()
        };
        let mut client = client(port);
        let recipients = strings(&["a@x.test", "b@y.test", "c@z.test"]);

        let started = Instant::now();
        let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        let elapsed = started.elapsed();

        assert_eq!(calls.len(), 3, "one record call per planned transaction");
        for result in calls.iter().flatten() {
            assert_eq!(result.verdict, Verdict::Deferred, "{result:?}");
            assert!(
                result
                    .reply
                    .starts_with(&format!("connecting to 127.0.0.1:{port} failed")),
                "{result:?}"
            );
        }
        assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    }

    #[test]
    fn one_connection_attempt_per_call_when_connecting_fails() {
        // A server that accepts and hangs up at once.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        thread::spawn(move || {
            for stream in listener.incoming() {
                counter.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        let mut client = client(port);
        let recipients = strings(&["a@x.test", "b@y.test", "c@z.test"]);

        let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);

        assert_eq!(calls.len(), 3);
        assert!(
            calls
                .iter()
                .flatten()
                .all(|r| r.verdict == Verdict::Deferred)
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn record_error_stops_delivery() {
        let (port, shared) = start_server(Shared::default());
        let mut client = client(port);
        let recipients = strings(&["a@x.test", "b@y.test", "c@z.test"]);
        let mut calls = 0;

        let outcome = client.deliver("s@example.org", &recipients, MESSAGE, &mut |results| {
            calls += 1;
            assert_eq!(verdicts(results), [("a@x.test", Verdict::Delivered)]);
            Err("disk full")
        });

        assert_eq!(outcome, Err("disk full"));
        assert_eq!(calls, 1);
        assert_eq!(
            lock(&shared).transactions.len(),
            1,
            "nothing tried after the error"
        );
    }

    #[test]
    fn server_closing_during_rcpt_defers_the_rest_then_reconnects() {
        let mut shared = Shared::default();
        shared.rcpt_replies.insert(
            "b@example.com".to_owned(),
            VecDeque::from([(421, "4.3.2 shutting down")]),
        );
        let (port, shared) = start_server(shared);
        let mut client = client(port);
        let recipients = strings(&["a@example.com", "b@example.com", "c@example.com"]);

        let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert_eq!(
            verdicts(&first[0]),
            [
                ("a@example.com", Verdict::Deferred),
                ("b@example.com", Verdict::Deferred),
                ("c@example.com", Verdict::Deferred),
            ]
        );
        assert_eq!(first[0][1].reply, "421 4.3.2 shutting down");
        assert!(first[0][0].reply.contains("421 4.3.2 shutting down"));

        let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert!(
            second[0].iter().all(|r| r.verdict == Verdict::Delivered),
            "{second:?}"
        );
        let shared = lock(&shared);
        assert_eq!(shared.hellos, 2, "a new connection after the 421");
        assert_eq!(shared.transactions.len(), 1);
    }

    #[test]
    fn refused_mail_from_fails_the_transaction_and_the_connection_is_reset() {
        // mailin-embedded refuses the null sender with a 5xx.
        let (port, shared) = start_server(Shared::default());
        let mut client = client(port);
        let recipients = strings(&["a@example.com", "b@example.com"]);

        let first = deliver(&mut client, "", &recipients, MESSAGE);
        for result in &first[0] {
            assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
            assert!(result.reply.starts_with('5'), "{result:?}");
            assert!(
                result.reply.ends_with("(in reply to MAIL FROM)"),
                "{result:?}"
            );
        }

        let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert!(second[0].iter().all(|r| r.verdict == Verdict::Delivered));
        let shared = lock(&shared);
        assert_eq!(shared.hellos, 1, "same connection after RSET");
        assert_eq!(shared.transactions.len(), 1);
    }

    #[test]
    fn dead_reused_connection_is_replaced_once() {
        let (port, shared) = start_server(Shared::default());
        let mut client = client(port);
        let recipients = strings(&["a@example.com"]);
        let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert_eq!(first[0][0].verdict, Verdict::Delivered);

        // The server now closes the idle connection at the next MAIL (as one
        // that limits messages per connection does).
        lock(&shared)
            .mail_replies
            .push_back((421, "4.7.0 too many messages"));
        let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert_eq!(second[0][0].verdict, Verdict::Delivered, "{second:?}");
        let shared = lock(&shared);
        assert_eq!(shared.hellos, 2, "one new connection");
        assert_eq!(shared.transactions.len(), 2);
    }

    #[test]
    fn fresh_connection_is_not_retried() {
        let mut shared = Shared::default();
        shared.mail_replies.push_back((421, "4.7.0 go away"));
        let (port, shared) = start_server(shared);
        let mut client = client(port);
        let recipients = strings(&["a@example.com", "b@example.com"]);

        let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        for result in &first[0] {
            assert_eq!(result.verdict, Verdict::Deferred);
            assert_eq!(result.reply, "421 4.7.0 go away (in reply to MAIL FROM)");
        }
        assert_eq!(
            lock(&shared).hellos,
            1,
            "no second connection in the same transaction"
        );

        let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert!(second[0].iter().all(|r| r.verdict == Verdict::Delivered));
        assert_eq!(lock(&shared).hellos, 2);
    }

    #[test]
    fn all_recipients_refused_means_no_data_and_reset() {
        let mut shared = Shared::default();
        for address in ["a@example.com", "b@example.com"] {
            shared
                .rcpt_replies
                .insert(address.to_owned(), VecDeque::from([(550, "5.1.1 unknown")]));
        }
        let (port, shared) = start_server(shared);
        let mut client = client(port);
        let recipients = strings(&["a@example.com", "b@example.com"]);

        let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert!(first[0].iter().all(|r| r.verdict == Verdict::Failed));
        assert_eq!(lock(&shared).transactions.len(), 0, "no DATA");

        let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        assert!(second[0].iter().all(|r| r.verdict == Verdict::Delivered));
        assert_eq!(lock(&shared).hellos, 1);
    }

    #[test]
    fn invalid_addresses_fail_without_a_connection() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("local addr").port()
        };
        let mut client = client(port);

        let calls = deliver(
            &mut client,
            "s@example.org",
            &strings(&["no-at-sign", "x@y.test\r\nRSET"]),
            MESSAGE,
        );
        assert_eq!(calls.len(), 2);
        for result in calls.iter().flatten() {
            assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
            assert!(
                result.reply.starts_with("invalid recipient address"),
                "{result:?}"
            );
        }

        let calls = deliver(
            &mut client,
            "not a sender",
            &strings(&["a@b.test"]),
            MESSAGE,
        );
        assert_eq!(calls[0][0].verdict, Verdict::Failed);
        assert!(calls[0][0].reply.starts_with("invalid sender address"));

        assert!(deliver(&mut client, "s@example.org", &[], MESSAGE).is_empty());
    }

    #[test]
    fn close_sends_quit() {
        let (port, _shared) = start_server(Shared::default());
        let mut client = client(port);
        deliver(
            &mut client,
            "s@example.org",
            &strings(&["a@example.com"]),
            MESSAGE,
        );
        assert!(client.session.is_some());
        client.close();
        assert!(client.session.is_none());
        client.close();
        // And it can deliver again afterwards.
        let calls = deliver(
            &mut client,
            "s@example.org",
            &strings(&["a@example.com"]),
            MESSAGE,
        );
        assert_eq!(calls[0][0].verdict, Verdict::Delivered);
    }

    #[test]
    fn client_is_small() {
        // The connection is boxed; the runner keeps clients in enums.
        assert!(std::mem::size_of::<SmtpClient>() <= 512);
    }

    #[test]
    fn plan_groups_by_domain_case_insensitively() {
        let recipients = strings(&["a@X", "b@y", "c@x", "noat", "d@Y", "e@x"]);
        assert_eq!(
            plan(&recipients, 2),
            [vec![0, 2], vec![5], vec![1, 4], vec![3]]
        );
        assert_eq!(plan(&recipients, 0), plan(&recipients, 1));
        assert!(plan(&[], 10).is_empty());
    }

    #[test]
    fn parse_plain() {
        let config = SmtpConfig::parse("smtp://mail.example.com").unwrap();
        assert_eq!(config, SmtpConfig::new("mail.example.com", 25, Tls::None));
        assert_eq!(config.connect_timeout, Duration::from_secs(30));
        assert_eq!(config.command_timeout, Duration::from_secs(300));
        assert_eq!(config.max_rcpts, 100);
        assert_eq!(config.helo_name, None);

        let config = SmtpConfig::parse("SMTP://mail.example.com:2525/").unwrap();
        assert_eq!(
            (config.host.as_str(), config.port),
            ("mail.example.com", 2525)
        );
        assert_eq!(config.tls, Tls::None);
    }

    #[test]
    fn parse_tls_variants() {
        let config = SmtpConfig::parse("smtps://mail.example.com").unwrap();
        assert_eq!((config.port, config.tls), (465, Tls::Implicit));
        let config = SmtpConfig::parse("smtp+starttls://mail.example.com").unwrap();
        assert_eq!((config.port, config.tls), (587, Tls::StartTls));
        let config = SmtpConfig::parse("smtp://mail.example.com?tls=starttls").unwrap();
        assert_eq!((config.port, config.tls), (25, Tls::StartTls));
        let config = SmtpConfig::parse("smtp://mail.example.com:26/?tls=none").unwrap();
        assert_eq!((config.port, config.tls), (26, Tls::None));
    }

    #[test]
    fn parse_credentials_and_helo() {
        let config =
            SmtpConfig::parse("smtps://me%40example.com:p%3Ass%25w@d@mail.example.com:4650")
                .unwrap();
        assert_eq!(
            config.credentials,
            Some(("me@example.com".to_owned(), "p:ss%w@d".to_owned()))
        );
        assert_eq!(
            (config.host.as_str(), config.port),
            ("mail.example.com", 4650)
        );
        let debug = format!("{config:?}");
        assert!(!debug.contains("p:ss"), "{debug}");

        let config = SmtpConfig::parse("smtp://user@h").unwrap();
        assert_eq!(config.credentials, Some(("user".to_owned(), String::new())));

        let config = SmtpConfig::parse("smtp://h?helo=relay.example.org").unwrap();
        assert_eq!(config.helo_name.as_deref(), Some("relay.example.org"));
    }

    #[test]
    fn parse_ipv6() {
        let config = SmtpConfig::parse("smtp://[::1]:2525").unwrap();
        assert_eq!((config.host.as_str(), config.port), ("::1", 2525));
        let config = SmtpConfig::parse("smtp://[2001:db8::1]").unwrap();
        assert_eq!((config.host.as_str(), config.port), ("2001:db8::1", 25));
    }

    #[test]
    fn parse_errors() {
        for (url, expected) in [
            ("mail.example.com", "not a server URL"),
            ("http://mail.example.com", "unknown scheme"),
            ("smtp://", "missing host"),
            ("smtp://:25", "missing host"),
            ("smtp://h:0", "invalid port"),
            ("smtp://h:65536", "invalid port"),
            ("smtp://h:x", "invalid port"),
            ("smtp://h:", "invalid port"),
            ("smtp://::1", "brackets"),
            ("smtp://[::1", "unclosed"),
            ("smtp://[nope]", "not an IPv6 address"),
            ("smtp://[::1]x", "after the IPv6 address"),
            ("smtp://u:%zz@h", "password"),
            ("smtp://%ff@h", "UTF-8"),
            ("smtp://@h", "empty user name"),
            ("smtp://h/path", "unexpected path"),
            ("smtp://h#frag", "fragment"),
            ("smtp://h?tls=bogus", "tls=bogus"),
            ("smtp://h?tls=implicit", "smtps://"),
            ("smtps://h?tls=starttls", "only for smtp://"),
            ("smtp://h?port=1", "unknown parameter"),
            ("smtp://h?helo=", "not a host name"),
            ("smtp://bad host", "invalid host"),
        ] {
            match SmtpConfig::parse(url) {
                Ok(config) => panic!("{url:?} parsed as {config:?}"),
                Err(e) => assert!(e.contains(expected), "{url:?}: {e:?} lacks {expected:?}"),
            }
        }
    }

    #[test]
    fn helo_name_becomes_client_id() {
        let mut config = SmtpConfig::new("h", 25, Tls::None);
        config.helo_name = Some("192.0.2.1".to_owned());
        assert_eq!(
            SmtpClient::new(config.clone()).hello.to_string(),
            "[192.0.2.1]"
        );
        config.helo_name = Some("relay.example.org".to_owned());
        assert_eq!(
            SmtpClient::new(config).hello.to_string(),
            "relay.example.org"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Ok("a b+c"));
        assert_eq!(percent_decode("%C3%BC").as_deref(), Ok("ü"));
        assert!(percent_decode("%").is_err());
        assert!(percent_decode("%4").is_err());
    }
}
