//! Postfix's smtp-sink(1) as the real SMTP server mm-runq delivers to, each
//! mail transaction saved to its own file (`-d`), and those files read back.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::sys;

/// A running smtp-sink (the test kit's, killed on drop) and where it saves.
pub struct SmtpSink {
    /// Kept for its drop, which kills smtp-sink.
    _sink: mm_e2e::SmtpSink,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Where it saves the transactions.
    dir: PathBuf,
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

impl SmtpSink {
    /// Starts smtp-sink on a free port of 127.0.0.1, running as `uid` (it
    /// will not run as root), saving into `dir` (made here, owned by `uid`).
    pub fn start(dir: &Path, user: &str, uid: u32) -> anyhow::Result<SmtpSink> {
        SmtpSink::start_with(dir, user, uid, &[])
    }

    /// [`SmtpSink::start`] with more smtp-sink options (`extra`, before the
    /// address), such as `-W .:1`: wait a second before answering each end
    /// of data.
    pub fn start_with(
        dir: &Path,
        user: &str,
        uid: u32,
        extra: &[&str],
    ) -> anyhow::Result<SmtpSink> {
        std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::os::unix::fs::chown(dir, Some(uid), None)
            .with_context(|| format!("cannot chown {}", dir.display()))?;
        sys::check_interrupted()?;
        // -d TEMPLATE: one file per transaction, named TEMPLATE plus a
        // random hex number (strftime expands the template; ours has no '%').
        let mut args: Vec<std::ffi::OsString> =
            ["-h", "mm-e2e-sink", "-d"].map(Into::into).to_vec();
        args.push(format!("{}/msg.", dir.display()).into());
        args.extend(extra.iter().map(Into::into));
        let sink = mm_e2e::SmtpSink::start_with(&mm_e2e::SinkOptions {
            user: Some(user.to_string()),
            args,
            backlog: 64,
            stderr: Some(dir.with_extension("stderr")),
        })
        .map_err(anyhow::Error::msg)?;
        Ok(SmtpSink {
            port: sink.port(),
            _sink: sink,
            dir: dir.to_path_buf(),
        })
    }

    /// Every transaction saved so far, by file name.
    pub fn dumps(&self) -> anyhow::Result<Vec<Dump>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
        {
            let entry = entry.with_context(|| format!("cannot list {}", self.dir.display()))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let path = self.dir.join(&name);
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let mut dump = parse_dump(&name, &bytes)
                    .with_context(|| format!("smtp-sink's {}", path.display()))?;
                dump.modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                Ok(dump)
            })
            .collect()
    }
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
