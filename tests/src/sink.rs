//! Postfix's smtp-sink(1), the real SMTP server of the runner tests, the
//! end-to-end run and the benchmark: started on a free loopback port, ready
//! once it greets, killed on drop. The one wrapper of it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running smtp-sink; killed on drop.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    errors: PathBuf,
    /// Owns `errors` when it is ours (not named by the caller).
    _errors_file: Option<tempfile::TempPath>,
}

/// How to start one ([`SmtpSink::start_with`]).
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// The user it runs as (it refuses to keep root's privileges); `None`:
    /// `nobody` when we are root, else ourselves.
    pub user: Option<String>,
    /// Options before the address (`-d TEMPLATE`, `-r RCPT`, `-Q DATA`, …).
    pub args: Vec<OsString>,
    /// The listen backlog (64 if 0).
    pub backlog: u32,
    /// Where its standard error goes; a temporary file if `None`.
    pub stderr: Option<PathBuf>,
}

impl SmtpSink {
    /// The smtp-sink program (`/usr/sbin` is not on every user's `$PATH`),
    /// or what to do to get it.
    pub fn binary() -> Result<PathBuf, String> {
        let mut candidates = vec![PathBuf::from("/usr/sbin/smtp-sink")];
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("smtp-sink")));
        }
        candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
            "Postfix's smtp-sink is not installed (not in /usr/sbin nor in $PATH): install \
             Debian's postfix package (apt-get install postfix; cargo xtask test does it as root)"
                .to_string()
        })
    }

    /// For a test: `smtp-sink OPTIONS 127.0.0.1:PORT 64`, ready; a failure
    /// (smtp-sink missing included) fails the test with the reason.
    #[track_caller]
    pub fn start(options: &[&str]) -> SmtpSink {
        let opts = SinkOptions {
            args: options.iter().map(OsString::from).collect(),
            ..Default::default()
        };
        SmtpSink::start_with(&opts).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts smtp-sink with `opts` on a free port of 127.0.0.1 and waits
    /// (10 s at most) for its 220 greeting. The port is found by binding and
    /// releasing it; another process may take it in between, so a start
    /// that fails is tried again, five times.
    pub fn start_with(opts: &SinkOptions) -> Result<SmtpSink, String> {
        let bin = SmtpSink::binary()?;
        let user = opts
            .user
            .clone()
            .or_else(|| crate::is_root().then(|| "nobody".to_string()));
        let mut last = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let (errors, owned) = match &opts.stderr {
                Some(p) => (p.clone(), None),
                None => {
                    let t = tempfile::Builder::new()
                        .prefix("mm-sink-stderr-")
                        .tempfile()
                        .map_err(|e| format!("cannot create a temporary file: {e}"))?
                        .into_temp_path();
                    (t.to_path_buf(), Some(t))
                }
            };
            let stderr = std::fs::File::create(&errors)
                .map_err(|e| format!("cannot create {}: {e}", errors.display()))?;
            let mut cmd = Command::new(&bin);
            if let Some(u) = &user {
                cmd.args(["-u", u]);
            }
            cmd.args(&opts.args)
                .arg(format!("127.0.0.1:{port}"))
                .arg(if opts.backlog == 0 { 64 } else { opts.backlog }.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr);
            let child = cmd
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            let mut sink = SmtpSink {
                child,
                port,
                errors,
                _errors_file: owned,
            };
            match sink.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(sink),
                Err(e) => last = e,
            }
        }
        Err(format!("smtp-sink {:?} did not start: {last}", opts.args))
    }

    /// Polls until the server sends its 220 greeting, or fails if it exited.
    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited ({status}): {}", self.stderr()));
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

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:PORT`, for `mm-runq --smtp`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// What it printed on standard error, trimmed.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.errors)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default()
    }

    /// Where its standard error goes.
    pub fn stderr_path(&self) -> &Path {
        &self.errors
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
