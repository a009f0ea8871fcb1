//! Postfix's smtp-sink(1), the real SMTP server of the runner tests, the
//! Postfix tests, the benchmark and xtask's cluster run: started on a free
//! loopback port, ready once it greets, killed on drop; optionally saving
//! each mail transaction to its own file (`-d`), read back as [`Dump`]s.
//! The one wrapper of it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running smtp-sink; killed on drop.
#[derive(Debug)]
pub struct SmtpSink {
    child: Child,
    port: u16,
    errors: PathBuf,
    /// Owns `errors` when it is ours (not named by the caller).
    _errors_file: Option<tempfile::TempPath>,
    /// Where it saves each transaction ([`SmtpSink::saving`]).
    dumps_dir: Option<PathBuf>,
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
                dumps_dir: None,
            };
            match sink.wait_ready(Duration::from_secs(10)) {
                Ok(()) => return Ok(sink),
                Err(e) => last = e,
            }
        }
        Err(format!("smtp-sink {:?} did not start: {last}", opts.args))
    }

    /// Starts smtp-sink as `user` (it will not run as root) saving every
    /// mail transaction into `dir` (made here, owned by `user`), its standard
    /// error in `DIR.stderr`; `extra` are more options before the address,
    /// such as `-W .:1` (wait a second before answering each end of data).
    pub fn saving(dir: &Path, user: &str, extra: &[&str]) -> anyhow::Result<SmtpSink> {
        let uid = crate::lookup_id("passwd", user)
            .map_err(anyhow::Error::msg)?
            .with_context(|| format!("there is no user {user} for smtp-sink"))?;
        std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(uid), None)
            .with_context(|| format!("cannot chown {}", dir.display()))?;
        // -d TEMPLATE: one file per transaction, named TEMPLATE plus a
        // random hex number (strftime expands the template; ours has no '%').
        let mut args: Vec<OsString> = ["-h", "mm-e2e-sink", "-d"].map(Into::into).to_vec();
        args.push(format!("{}/msg.", dir.display()).into());
        args.extend(extra.iter().map(Into::into));
        let mut sink = SmtpSink::start_with(&SinkOptions {
            user: Some(user.to_string()),
            args,
            backlog: 64,
            stderr: Some(dir.with_extension("stderr")),
        })
        .map_err(anyhow::Error::msg)?;
        sink.dumps_dir = Some(dir.to_path_buf());
        Ok(sink)
    }

    /// Every transaction saved so far, by file name (a sink started by
    /// [`SmtpSink::saving`]; none otherwise).
    pub fn dumps(&self) -> anyhow::Result<Vec<Dump>> {
        let Some(dir) = &self.dumps_dir else {
            return Ok(Vec::new());
        };
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let path = dir.join(&name);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let mut dump = parse_dump(&name, &bytes)
                    .with_context(|| format!("smtp-sink's {}", path.display()))?;
                dump.modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                Ok(dump)
            })
            .collect()
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

/// One mail transaction as smtp-sink saved it.
#[derive(Debug)]
pub struct Dump {
    /// The file.
    pub name: String,
    /// The client's EHLO argument (who sent it).
    pub helo: String,
    /// When smtp-sink wrote it (at the end of data, before its reply).
    pub modified: Option<std::time::SystemTime>,
    /// The MAIL FROM address ("" for `<>`).
    pub sender: String,
    /// The RCPT TO addresses, in order.
    pub rcpts: Vec<String>,
    /// The message: the CR of every CRLF dropped, dot-stuffing undone.
    pub data: Vec<u8>,
}

/// Reads one `-d` file: smtp-sink's own header lines (`X-Client-Addr:`,
/// `X-Client-Proto:`, `X-Helo-Args:`, `X-Mail-Args:`, one `X-Rcpt-Args:`
/// per recipient, then a `Received:` header of three lines), the message as
/// received (LF line ends, dots unstuffed), then an empty line.
pub fn parse_dump(name: &str, bytes: &[u8]) -> anyhow::Result<Dump> {
    let mut sender = None;
    let mut helo = String::new();
    let mut rcpts = Vec::new();
    let mut rest = bytes;
    let mut in_received = false;
    loop {
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            bail!("it ends inside smtp-sink's own headers");
        };
        let line = &rest[..end];
        if in_received && !line.starts_with(b"\t") && !line.starts_with(b" ") {
            break; // the message's first line
        }
        let text = String::from_utf8_lossy(line);
        if let Some(v) = text.strip_prefix("X-Mail-Args: ") {
            sender = Some(angle_address(v)?);
        } else if let Some(v) = text.strip_prefix("X-Helo-Args: ") {
            helo = v.trim().to_string();
        } else if let Some(v) = text.strip_prefix("X-Rcpt-Args: ") {
            rcpts.push(angle_address(v)?);
        } else if text.starts_with("Received: ") {
            in_received = true;
        } else if !in_received && !text.starts_with("X-") {
            bail!("an unexpected line among smtp-sink's own headers: {text:?}");
        }
        rest = &rest[end + 1..];
    }
    let Some(data) = rest.strip_suffix(b"\n") else {
        bail!("it does not end with smtp-sink's empty line (not complete yet?)");
    };
    Ok(Dump {
        name: name.to_string(),
        helo,
        modified: None,
        sender: sender.context("it has no X-Mail-Args")?,
        rcpts,
        data: data.to_vec(),
    })
}

/// The address in `<ADDR> PARAMS...` (a quoted local part may hold spaces).
fn angle_address(args: &str) -> anyhow::Result<String> {
    let inner = args
        .strip_prefix('<')
        .and_then(|a| a.find('>').map(|end| &a[..end]))
        .with_context(|| format!("no <address> in {args:?}"))?;
    Ok(inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_dump() {
        let file = b"X-Client-Addr: 127.0.0.1\nX-Client-Proto: ESMTP\nX-Helo-Args: vm\n\
            X-Mail-Args: <> BODY=8BITMIME\nX-Rcpt-Args: <\"j s\"@x.example>\nX-Rcpt-Args: <b@x.example>\n\
            Received: from vm ([127.0.0.1])\n\tby mm-e2e-sink (smtp-sink) with ESMTP id 1;\n\t\
            Tue, 24 Nov 2026 18:36:42 +0000 (UTC)\nSubject: s\n\nbody\n\n";
        let d = parse_dump("msg.1", file).expect("a good dump");
        assert_eq!(d.sender, "");
        assert_eq!(d.helo, "vm");
        assert_eq!(d.rcpts, ["\"j s\"@x.example", "b@x.example"]);
        assert_eq!(d.data, b"Subject: s\n\nbody\n");
    }

    #[test]
    fn an_incomplete_dump_is_an_error() {
        assert!(parse_dump("m", b"X-Client-Addr: 127.0.0.1\nX-Mail").is_err());
    }
}
