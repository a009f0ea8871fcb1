//! The physical floor for `cargo xtask bench`: minimal programs that make only
//! the system calls a workload cannot do without, so that the benchmark can
//! print our figure beside what the machine allows in the same run.
//!
//! * `enqueue-one DIR`: one durable file per process, the MTA-pipe case:
//!   read standard input, create `DIR/NAME.tmp`, write, fdatasync, rename to
//!   `.pck`, fsync the directory.
//! * `durable-files DIR N SIZE`: the same, N times in one process (the
//!   one-durable-file-per-entry in-process floor).
//! * `fill DIR N SIZE`: N plain files of SIZE bytes, not synced (set-up only).
//! * `drain DIR`: for every file of the flat directory: rename it (the claim),
//!   read it, unlink it.
//! * `list DIR`: read every directory under DIR and count the names (what a
//!   summary of the queue needs at the least).
//! * `deliver DIR PORT CONNS`: a queued SMTP delivery and nothing else: the
//!   files of DIR are shared among CONNS threads, each with one connection
//!   to 127.0.0.1:PORT (`TCP_NODELAY`, one EHLO); for each file: rename it
//!   (the claim), read it, send `MAIL`, `RCPT` and `DATA` in one write (the
//!   server must offer PIPELINING), read their three replies, send the file
//!   and the final dot in one write, read the reply, unlink the file: two
//!   waits for the server per message, as mm-runq does. The file is sent as
//!   it is (`fill` writes CRLF lines, nothing to stuff), and a reply is only
//!   looked at for its first digit.
//! * `deliver-ahead DIR PORT CONNS`: the same, but the next file is claimed
//!   and read before the data goes out, and its envelope is sent behind the
//!   data in the same write (RFC 2920 3.1 allows it): one wait per message,
//!   the least a queue that claims a file per message can do.
//!
//! Standard library only, no error recovery: a failure panics, which the
//! benchmark reports.

// A benchmark floor, not a tool: it reads the wall clock as it likes.
#![allow(clippy::disallowed_methods)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("mm-floor: missing argument {i}"))
    };
    let num = |i: usize| -> usize { arg(i).parse().expect("mm-floor: a number") };
    match arg(0) {
        "enqueue-one" => {
            let mut msg = Vec::new();
            std::io::stdin().read_to_end(&mut msg).expect("stdin");
            let name = format!("{}.{}", std::process::id(), nanos());
            durable_file(Path::new(arg(1)), &name, &msg);
        }
        "durable-files" => {
            let (dir, n, size) = (Path::new(arg(1)), num(2), num(3));
            let body = vec![b'x'; size];
            let tag = nanos();
            for i in 0..n {
                durable_file(dir, &format!("{tag}.{i}"), &body);
            }
        }
        "fill" => {
            let (dir, n, size) = (Path::new(arg(1)), num(2), num(3));
            // CRLF lines of 78 characters: sendable as they are (`deliver`).
            let mut body: Vec<u8> = b"Subject: floor\r\n\r\n".to_vec();
            while body.len() < size {
                let k = (size - body.len()).saturating_sub(2).clamp(1, 78);
                body.extend(std::iter::repeat_n(b'x', k));
                body.extend_from_slice(b"\r\n");
            }
            for i in 0..n {
                fs::write(dir.join(format!("{i:010}.pck")), &body).expect("write");
            }
        }
        "drain" => {
            let dir = Path::new(arg(1));
            let mut buf = Vec::new();
            for e in fs::read_dir(dir).expect("read_dir") {
                let path = e.expect("dirent").path();
                let claimed = path.with_extension("bak");
                fs::rename(&path, &claimed).expect("rename");
                buf.clear();
                File::open(&claimed)
                    .and_then(|mut f| f.read_to_end(&mut buf))
                    .expect("read");
                fs::remove_file(&claimed).expect("unlink");
            }
        }
        "list" => {
            fn walk(dir: &Path, n: &mut u64) {
                for e in fs::read_dir(dir).expect("read_dir") {
                    let e = e.expect("dirent");
                    if e.file_type().expect("file type").is_dir() {
                        walk(&e.path(), n);
                    } else {
                        *n += 1;
                    }
                }
            }
            let mut n = 0;
            walk(Path::new(arg(1)), &mut n);
            println!("{n}");
        }
        mode @ ("deliver" | "deliver-ahead") => {
            let (dir, port, conns) = (Path::new(arg(1)), num(2) as u16, num(3).max(1));
            let ahead = mode == "deliver-ahead";
            let mut files: Vec<_> = fs::read_dir(dir)
                .expect("read_dir")
                .map(|e| e.expect("dirent").path())
                .collect();
            files.sort();
            let files = &files;
            std::thread::scope(|s| {
                for c in 0..conns {
                    s.spawn(move || {
                        let mine: Vec<&PathBuf> = files.iter().skip(c).step_by(conns).collect();
                        deliver(&mine, port, ahead);
                    });
                }
            });
        }
        other => panic!("mm-floor: unknown mode {other}"),
    }
}

/// tmp, write, fdatasync, rename, fsync the directory: what "durable" costs.
fn durable_file(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(&tmp)
        .expect("create");
    f.write_all(bytes).expect("write");
    f.sync_data().expect("fdatasync");
    drop(f);
    fs::rename(&tmp, dir.join(format!("{name}.pck"))).expect("rename");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("fsync dir");
}

/// One connection's share of `deliver` (or `deliver-ahead`).
fn deliver(files: &[&PathBuf], port: u16, ahead: bool) {
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_nodelay(true).expect("TCP_NODELAY");
    let mut replies = Replies {
        sock: sock.try_clone().expect("clone"),
        buf: Vec::with_capacity(4096),
    };
    replies.expect(1, b'2'); // the greeting
    sock.write_all(b"EHLO floor.example\r\n").expect("EHLO");
    replies.expect(1, b'2');
    let envelope = b"MAIL FROM:<owner@example.org>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n";
    let envelope_replies = |replies: &mut Replies| {
        replies.expect(2, b'2');
        replies.expect(1, b'3');
    };
    // Claim (rename) and read one file; the data to send, dot included.
    let take = |path: &PathBuf| {
        let claimed = path.with_extension("bak");
        fs::rename(path, &claimed).expect("rename");
        let mut data = Vec::new();
        File::open(&claimed)
            .and_then(|mut f| f.read_to_end(&mut data))
            .expect("read");
        data.extend_from_slice(b"\r\n.\r\n");
        (claimed, data)
    };
    let mut next = files.first().copied().map(take);
    for i in 0..files.len() {
        let (claimed, mut data) = next.take().expect("a claimed file");
        // Ahead, every envelope but the first rode behind the last data.
        if i == 0 || !ahead {
            sock.write_all(envelope).expect("envelope");
        }
        envelope_replies(&mut replies);
        let after = files.get(i + 1).copied();
        if ahead {
            // The next file is claimed before this one's data goes out,
            // and its envelope rides behind the data.
            next = after.map(take);
            if next.is_some() {
                data.extend_from_slice(envelope);
            }
        }
        sock.write_all(&data).expect("data");
        replies.expect(1, b'2');
        fs::remove_file(&claimed).expect("unlink");
        if !ahead {
            next = after.map(take);
        }
    }
    sock.write_all(b"QUIT\r\n").expect("QUIT");
}

/// The server's replies, read as they come: EHLO's lines count as one.
struct Replies {
    sock: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Replies {
    /// Reads `n` whole replies, each of which must start with `digit`.
    fn expect(&mut self, n: usize, digit: u8) {
        for _ in 0..n {
            loop {
                if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                    assert_eq!(line[0], digit, "mm-floor: unexpected reply {line:?}");
                    if line.get(3) != Some(&b'-') {
                        break;
                    }
                    continue;
                }
                let mut chunk = [0u8; 4096];
                let k = self.sock.read(&mut chunk).expect("read reply");
                assert!(k > 0, "mm-floor: the server closed the connection");
                self.buf.extend_from_slice(&chunk[..k]);
            }
        }
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
