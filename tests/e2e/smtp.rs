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
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

/// Postfix's `smtp-sink`, running as a child process on a loopback port;
/// killed on drop.
pub struct SmtpSink {
    child: Child,
    port: u16,
    errors: std::fs::File,
}

impl SmtpSink {
    /// The `smtp-sink` binary, or a failure saying how to get it.
    fn binary() -> PathBuf {
        let mut candidates = vec![PathBuf::from("/usr/sbin/smtp-sink")];
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("smtp-sink")));
        }
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "Postfix's smtp-sink is not installed (not in /usr/sbin nor in $PATH): \
                 install Debian's postfix package (apt-get install postfix), as .ci/run does; \
                 this test needs a real SMTP server process and does not skip"
                )
            })
    }

    /// Starts `smtp-sink OPTIONS 127.0.0.1:PORT` and waits for its greeting.
    pub fn start(options: &[&str]) -> SmtpSink {
        let bin = SmtpSink::binary();
        let mut last_failure = String::new();
        // The port is picked by binding and releasing it; another process may
        // take it in between, so a start that fails is tried again.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free loopback port")
                .port();
            let mut cmd = Command::new(&bin);
            if mm_e2e::is_root() {
                // smtp-sink refuses to keep root privileges.
                cmd.args(["-u", "nobody"]);
            }
            cmd.args(options).arg(format!("127.0.0.1:{port}")).arg("64");
            // Its complaints go to a file, never into a pipe nobody drains.
            let errors = tempfile::tempfile().expect("cannot create a temporary file");
            let stderr = errors.try_clone().expect("cannot duplicate a file handle");
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut sink = SmtpSink {
                child,
                port,
                errors,
            };
            match sink.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return sink,
                Err(e) => last_failure = e,
            }
        }
        panic!("smtp-sink {options:?} did not start: {last_failure}");
    }

    /// Polls until the server sends its 220 greeting, or fails if it exited.
    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                let _ = self.errors.seek(SeekFrom::Start(0));
                let _ = self.errors.read_to_string(&mut err);
                return Err(format!("it exited ({status}): {}", err.trim()));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                let mut r = BufReader::new(&stream);
                if r.read_line(&mut line).is_ok() && line.starts_with("220") {
                    let _ = (&stream).write_all(b"QUIT\r\n");
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no 220 greeting on port {} within {within:?}",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `smtp://127.0.0.1:PORT`, for `mm-runq --smtp`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
