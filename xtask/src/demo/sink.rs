//! The demo's SMTP server: mailin-embedded, in this process, on a free port
//! of 127.0.0.1, standing in for an MTA or a smarthost.
//!
//! `RCPT TO` is answered by the local part: `busy@…` gets 450 (try again
//! later), `nobody@…` gets 550 (no such user), anyone else 250. Every reply
//! and every message taken at end of data is recorded, so the demo can print
//! and check what arrived.
//!
//! mailin-embedded has no call to stop a server: it runs in its own thread
//! until the process exits. It also refuses the null sender (`MAIL FROM:<>`),
//! so every demo message has a sender.

use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use mailin_embedded::{Handler, Response, Server, response};

/// A message the server took.
#[derive(Clone, Debug)]
pub struct Received {
    /// The envelope sender.
    pub from: String,
    /// The recipients the server accepted for it.
    pub rcpts: Vec<String>,
    /// The message as received (dot-unstuffed, line ends as sent).
    pub data: Vec<u8>,
}

impl Received {
    /// The value of the Subject header, if any.
    pub fn subject(&self) -> String {
        String::from_utf8_lossy(&self.data)
            .lines()
            .take_while(|l| !l.trim_end_matches('\r').is_empty())
            .find_map(|l| l.strip_prefix("Subject: "))
            .map(|s| s.trim_end_matches('\r').to_string())
            .unwrap_or_default()
    }
}

/// What the server saw, in order.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every `RCPT TO` and the code it was answered with.
    pub rcpts: Vec<(String, u16)>,
    /// Every message taken.
    pub messages: Vec<Received>,
}

/// A running server.
pub struct Sink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Sink {
    /// Starts a server on a free port of 127.0.0.1.
    pub fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let handler = Session {
            seen: Arc::clone(&seen),
            from: String::new(),
            rcpts: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(handler);
        server
            .with_name("demo-smtp.invalid")
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name("smtp".into())
            .spawn(move || {
                // Only a failure to accept ends it early; the demo then sees no mail.
                if let Err(e) = server.serve() {
                    eprintln!("xtask: the demo's SMTP server stopped: {e}");
                }
            })
            .context("cannot start the SMTP server thread")?;
        Ok(Sink { port, seen })
    }

    /// What the server has seen so far.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.seen)
    }
}

fn lock(m: &Mutex<Seen>) -> MutexGuard<'_, Seen> {
    // A panic in a session thread must not hide what the others recorded.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One SMTP session (mailin clones the handler for each connection).
#[derive(Clone)]
struct Session {
    seen: Arc<Mutex<Seen>>,
    from: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Session {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_string();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let local = to.rsplit_once('@').map_or(to, |(l, _)| l);
        let (code, text) = match local.to_ascii_lowercase().as_str() {
            "busy" => (450, "4.2.1 Mailbox busy, try again later"),
            "nobody" => (550, "5.1.1 No such user here"),
            _ => (250, "2.1.5 Ok"),
        };
        lock(&self.seen).rcpts.push((to.to_string(), code));
        Response::custom(code, text.to_string())
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _8bit: bool, to: &[String]) -> Response {
        // mailin passes only the recipients it accepted.
        self.rcpts = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut seen = lock(&self.seen);
        seen.messages.push(Received {
            from: std::mem::take(&mut self.from),
            rcpts: std::mem::take(&mut self.rcpts),
            data: std::mem::take(&mut self.data),
        });
        let n = seen.messages.len();
        Response::custom(250, format!("2.0.0 Ok: queued as demo-{n}"))
    }
}
