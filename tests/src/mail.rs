//! mailin-embedded 0.8 as an SMTP server inside this process on
//! `127.0.0.1:0`, with a handler that can answer chosen `RCPT`s with a
//! 4xx/5xx reply (once or always), stall in `data_end`, and records every
//! accepted transaction and every `RCPT` answered: the runner tests' and the
//! demo's server. mailin refuses `MAIL FROM:<>`, so messages need a sender.
//! It cannot be stopped: its thread ends with the process, and dropping a
//! server only ends its stalls.

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
    /// Every `RCPT TO` and the code it was answered with.
    answered: Vec<(String, u16)>,
    /// With a prefix, the end-of-data reply names a queue id: PREFIX and a count.
    queue_ids: Option<String>,
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

    /// Waits at most `left` for a change, holding the lock again after.
    fn wait<'a>(&self, st: MutexGuard<'a, State>, left: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(st, left)
            .unwrap_or_else(|p| p.into_inner())
            .0
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
        let reply = st
            .once
            .get_mut(to)
            .and_then(VecDeque::pop_front)
            .or_else(|| st.always.get(to).cloned());
        st.answered
            .push((to.to_owned(), reply.as_ref().map_or(250, |r| r.0)));
        match reply {
            Some((code, text)) => Response::custom(code, text),
            None => response::OK,
        }
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
            st = self.shared.wait(st, left);
        }
        st.stalled -= 1;
        st.received.push(Received {
            from: std::mem::take(&mut self.from),
            rcpts: std::mem::take(&mut self.rcpts),
            data: std::mem::take(&mut self.data),
        });
        self.shared.changed.notify_all();
        match &st.queue_ids {
            Some(prefix) => Response::custom(
                250,
                format!("2.0.0 Ok: queued as {prefix}{}", st.received.len()),
            ),
            None => Response::custom(250, "2.0.0 Ok: queued".to_owned()),
        }
    }
}

/// A mailin-embedded server on its own loopback port.
pub struct MailServer {
    port: u16,
    shared: Arc<Shared>,
}

impl MailServer {
    /// Starts a server that accepts everything at once, named `mx.test`;
    /// fails the test if it cannot listen.
    #[track_caller]
    pub fn start() -> MailServer {
        MailServer::start_named("mx.test").expect("cannot start a mailin-embedded server")
    }

    /// Starts a server that accepts everything at once, greeting as `name`.
    pub fn start_named(name: &str) -> io::Result<MailServer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let session = Session {
            shared: Arc::clone(&shared),
            from: String::new(),
            rcpts: Vec::new(),
            data: Vec::new(),
        };
        let mut server = Server::new(session);
        // Stalled sessions hold a pool thread each: leave room for the rest.
        server
            .with_name(name)
            .with_num_threads(32)
            .with_tcp_listener(listener);
        std::thread::Builder::new()
            .name("smtp".into())
            .spawn(move || {
                let _ = server.serve();
            })?;
        Ok(MailServer { port, shared })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Ends each end-of-data reply with a queue id, `PREFIX` and a count
    /// (`250 2.0.0 Ok: queued as demo-1`), as a real MTA names its queue file.
    pub fn name_queue_ids(&self, prefix: &str) {
        self.shared.lock().queue_ids = Some(prefix.to_owned());
    }

    /// Every `RCPT TO` so far, with the code it was answered with.
    pub fn answered(&self) -> Vec<(String, u16)> {
        self.shared.lock().answered.clone()
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
            st = self.shared.wait(st, left);
        }
    }
}

impl Drop for MailServer {
    fn drop(&mut self) {
        self.release();
    }
}
