//! SMTP servers for the runner tests, both real implementations that nobody
//! here wrote:
//!
//! * [`MailServer`]: mailin-embedded 0.8 inside the test process on
//!   `127.0.0.1:0`, with a handler that can answer chosen `RCPT`s with a
//!   4xx/5xx reply (once or always), stall in `data_end`, and records every
//!   accepted transaction. mailin refuses `MAIL FROM:<>`, so tests give their
//!   messages a sender. It cannot be stopped: its thread ends with the test
//!   process, and dropping a server only ends its stalls.
//! * [`SmtpSink`]: Postfix's `smtp-sink` as a child process, for behaviour that
//!   mailin cannot script (hanging up without a reply). A missing `smtp-sink`
//!   fails the test with a message saying so; it never skips.
//!
//! A server that misbehaves on purpose (a reply too many, a reply of the
//! wrong class, a drop after the end-of-data reply) is no real server's
//! behaviour on demand: that one is scripted, in the test kit
//! (`mm_e2e::smtp_script`, used by `smtp_faults.rs` and by mm-core's SMTP
//! unit tests).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, TcpListener};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mailin_embedded::{Handler, Response, Server, response};

/// One transaction the server accepted (250 at end of data).
#[derive(Clone, Debug)]
pub struct Received {
    /// The `MAIL FROM` address.
    pub from: String,
    /// The accepted `RCPT TO` addresses.
    pub rcpts: Vec<String>,
    /// The data as received (CRLF line ends, dot-stuffing undone by mailin).
    pub data: Vec<u8>,
}

#[derive(Default)]
struct State {
    /// Scripted `RCPT` replies per address, used up in order.
    once: HashMap<String, VecDeque<(u16, String)>>,
    /// `RCPT` replies per address given on every attempt.
    always: HashMap<String, (u16, String)>,
    /// How long `data_end` waits before answering, unless released.
    stall: Duration,
    /// Set by [`MailServer::release`]: stalls end at once.
    released: bool,
    /// Sessions waiting in `data_end` right now.
    stalled: usize,
    received: Vec<Received>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide what the server saw.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct Session {
    shared: Arc<Shared>,
    from: String,
    rcpts: Vec<String>,
    data: Vec<u8>,
}

impl Handler for Session {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.from = from.to_owned();
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let mut st = self.shared.lock();
        if let Some((code, text)) = st.once.get_mut(to).and_then(VecDeque::pop_front) {
            return Response::custom(code, text);
        }
        if let Some((code, text)) = st.always.get(to) {
            return Response::custom(*code, text.clone());
        }
        response::OK
    }

    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.rcpts = to.to_vec();
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let mut st = self.shared.lock();
        let until = Instant::now() + st.stall;
        st.stalled += 1;
        self.shared.changed.notify_all();
        while !st.released && Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        st.stalled -= 1;
        st.received.push(Received {
            from: std::mem::take(&mut self.from),
            rcpts: std::mem::take(&mut self.rcpts),
            data: std::mem::take(&mut self.data),
        });
        self.shared.changed.notify_all();
        Response::custom(250, "2.0.0 Ok: queued".to_owned())
    }
}

/// A mailin-embedded server on its own loopback port.
pub struct MailServer {
    port: u16,
    shared: Arc<Shared>,
}

impl MailServer {
    /// Starts a server that accepts everything at once.
    pub fn start() -> MailServer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind a loopback port");
        let port = listener.local_addr().expect("local address").port();
        let session = Session {
            shared: Arc::clone(&shared),
            from: String::new(),
            rcpts: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(session);
        // Stalled sessions hold a pool thread each: leave room for the rest.
        server
            .with_name("mx.test")
            .with_num_threads(32)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        MailServer { port, shared }
    }

    /// `smtp://127.0.0.1:PORT`, for `mm-runq --smtp`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Answers the next `RCPT TO:<rcpt>` with `code text` (then 250 again).
    pub fn refuse_once(&self, rcpt: &str, code: u16, text: &str) {
        self.shared
            .lock()
            .once
            .entry(rcpt.to_owned())
            .or_default()
            .push_back((code, text.to_owned()));
    }

    /// Answers every `RCPT TO:<rcpt>` with `code text`.
    pub fn refuse_always(&self, rcpt: &str, code: u16, text: &str) {
        self.shared
            .lock()
            .always
            .insert(rcpt.to_owned(), (code, text.to_owned()));
    }

    /// Makes `data_end` wait `d` before its 250 (until [`release`](Self::release)).
    pub fn stall(&self, d: Duration) {
        self.shared.lock().stall = d;
    }

    /// Ends every stall, current and future.
    pub fn release(&self) {
        self.shared.lock().released = true;
        self.shared.changed.notify_all();
    }

    /// Every accepted transaction, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// How many accepted messages each recipient got.
    pub fn copies(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for t in &self.shared.lock().received {
            for r in &t.rcpts {
                *out.entry(r.clone()).or_default() += 1;
            }
        }
        out
    }

    /// Waits (at most `within`) until `n` sessions are stalled in `data_end`.
    #[track_caller]
    pub fn wait_stalled(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        let mut st = self.shared.lock();
        while st.stalled < n {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out after {within:?}: {} of {n} sessions reached data_end",
                st.stalled
            );
            st = self
                .shared
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.release();
    }
}

/// `data` with every CRLF turned into LF (the stored form of a message
/// handed in with bare LF line ends).
pub fn crlf_to_lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(b"\r\n") {
            out.push(b'\n');
            i += 2;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// Whether `data` has a LF not preceded by CR (forbidden on the wire).
pub fn has_bare_lf(data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
}

/// Postfix's `smtp-sink` (the test kit's one wrapper of it).
pub use mm_e2e::SmtpSink;
