//! A scripted SMTP server that misbehaves on purpose, for the faults no
//! real server shows on demand (an extra reply, a reply of the wrong
//! class, a drop after the end-of-data reply, ...).
//!
//! It listens on `127.0.0.1:0` and serves each connection on its own
//! thread like an ordinary, permissive server, except where the script
//! says otherwise: the script sees every event (the greeting, each command
//! line, the end of the data) and may replace the reply, send extra bytes
//! right behind it (in the same write, so a client finds them in its
//! buffer), or close the connection after it. The [`Log`](crate::smtp_script::Log) keeps every
//! command received and every reply sent, the reply each `RCPT` got, and
//! the transactions the server completed (250 after the data): the ground
//! truth a test checks a client's verdicts against.
//!
//! Std only: the same file is the test kit's `mm_e2e::smtp_script` and a
//! module of mm-core's SMTP unit tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

/// What the server is answering.
#[derive(Debug)]
pub struct Event<'a> {
    /// The connection, counted from 0.
    pub conn: usize,
    /// `CONNECT` for the greeting, `.` for the end of the data, else the
    /// command's verb in upper case.
    pub verb: String,
    /// The command line as received (without CRLF).
    pub line: &'a str,
    /// For `RCPT`: its index in the transaction (from 0).
    pub rcpt: usize,
    /// The transaction on this connection (from 0, counting `MAIL`s).
    pub txn: usize,
}

/// What to do instead of the usual.
#[derive(Clone, Debug, Default)]
pub struct Act {
    /// The reply (lines joined by CRLF, without the final CRLF); `None`: the usual one.
    pub reply: Option<String>,
    /// Bytes sent right behind the reply, in the same write (CRLF added).
    pub extra: Option<String>,
    /// Close the connection after the reply.
    pub close: bool,
}

impl Act {
    /// The usual reply.
    pub fn usual() -> Act {
        Act::default()
    }
    /// This reply instead.
    pub fn reply(text: &str) -> Act {
        Act {
            reply: Some(text.to_owned()),
            ..Act::default()
        }
    }
    /// And then these bytes, unasked for.
    pub fn extra(mut self, text: &str) -> Act {
        self.extra = Some(text.to_owned());
        self
    }
    /// And then hang up.
    pub fn close(mut self) -> Act {
        self.close = true;
        self
    }
}

/// A transaction the server completed: a 2xx sent after the data.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub conn: usize,
    pub from: String,
    pub rcpts: Vec<String>,
    pub data: Vec<u8>,
}

/// Everything the server saw and did.
#[derive(Debug, Default)]
pub struct Log {
    /// `C<conn>: line` for each command, `S<conn>: reply` for each reply and extra.
    pub lines: Vec<String>,
    /// `(address, reply)` for each `RCPT`, in order.
    pub rcpt_replies: Vec<(String, String)>,
    /// The completed transactions.
    pub accepted: Vec<Accepted>,
    /// Connections accepted.
    pub connections: usize,
}

impl Log {
    /// How many completed transactions included `address`.
    pub fn times_accepted(&self, address: &str) -> usize {
        self.accepted
            .iter()
            .filter(|a| a.rcpts.iter().any(|r| r == address))
            .count()
    }

    /// The replies the server gave to `RCPT TO:<address>`.
    pub fn replies_to(&self, address: &str) -> Vec<&str> {
        self.rcpt_replies
            .iter()
            .filter(|(a, _)| a == address)
            .map(|(_, r)| r.as_str())
            .collect()
    }
}

type Script = dyn Fn(&Event<'_>) -> Act + Send + Sync;

/// A running scripted server (its threads end with the test process).
pub struct ScriptServer {
    pub port: u16,
    log: Arc<Mutex<Log>>,
}

impl ScriptServer {
    /// Starts a server; it offers PIPELINING in EHLO if `pipelining`.
    pub fn start(
        pipelining: bool,
        script: impl Fn(&Event<'_>) -> Act + Send + Sync + 'static,
    ) -> ScriptServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let log = Arc::new(Mutex::new(Log::default()));
        let script: Arc<Script> = Arc::new(script);
        let shared = Arc::clone(&log);
        thread::spawn(move || {
            for (conn, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                lock(&shared).connections += 1;
                let (log, script) = (Arc::clone(&shared), Arc::clone(&script));
                thread::spawn(move || serve(conn, stream, pipelining, &*script, &log));
            }
        });
        ScriptServer { port, log }
    }

    /// What the server saw and did so far.
    pub fn log(&self) -> MutexGuard<'_, Log> {
        lock(&self.log)
    }
}

fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

fn address(line: &str) -> String {
    match (line.find('<'), line.rfind('>')) {
        (Some(a), Some(b)) if a < b => line[a + 1..b].to_owned(),
        _ => String::new(),
    }
}

fn serve(conn: usize, stream: TcpStream, pipelining: bool, script: &Script, log: &Mutex<Log>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut input = BufReader::new(stream);
    let mut txn = 0;
    let mut mails = 0;
    let mut in_txn = false;
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    let mut rcpt_index = 0;
    // The reply the script chose, logged: (reply, close, bytes to write).
    // The caller records what the reply means, then writes it, so that
    // the log is complete before the client reads the reply.
    let answer = |verb: &str, line: &str, usual: String, rcpt: usize, txn: usize| {
        let act = script(&Event {
            conn,
            verb: verb.to_owned(),
            line,
            rcpt,
            txn,
        });
        let reply = act.reply.unwrap_or(usual);
        let mut bytes = format!("{reply}\r\n");
        let mut log = lock(log);
        log.lines.push(format!("S{conn}: {reply}"));
        if let Some(extra) = &act.extra {
            bytes.push_str(extra);
            bytes.push_str("\r\n");
            log.lines.push(format!("S{conn}: {extra} (unsolicited)"));
        }
        drop(log);
        (reply, act.close, bytes)
    };
    let (_, close, bytes) = answer("CONNECT", "", "220 script.test ESMTP".to_owned(), 0, 0);
    let _ = out.write_all(bytes.as_bytes());
    if close {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let command = line.trim_end_matches(['\r', '\n']).to_owned();
        lock(log).lines.push(format!("C{conn}: {command}"));
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let usual = match verb.as_str() {
            "EHLO" => {
                let pipe = if pipelining { "250-PIPELINING\r\n" } else { "" };
                format!("250-script.test\r\n{pipe}250-8BITMIME\r\n250 SMTPUTF8")
            }
            "HELO" | "NOOP" => "250 2.0.0 ok".to_owned(),
            "RSET" => "250 2.0.0 reset".to_owned(),
            "MAIL" => "250 2.1.0 sender ok".to_owned(),
            "RCPT" => "250 2.1.5 recipient ok".to_owned(),
            "DATA" if in_txn && !rcpts.is_empty() => "354 go ahead".to_owned(),
            "DATA" => "554 5.5.1 no valid recipients".to_owned(),
            "QUIT" => "221 2.0.0 bye".to_owned(),
            _ => "502 5.5.2 unknown command".to_owned(),
        };
        if verb == "MAIL" {
            txn = mails;
            mails += 1;
            in_txn = true;
            from = address(&command);
            rcpts.clear();
            rcpt_index = 0;
        }
        let (reply, close, bytes) = answer(&verb, &command, usual, rcpt_index, txn);
        if verb == "RCPT" {
            lock(log)
                .rcpt_replies
                .push((address(&command), reply.clone()));
            if reply.starts_with('2') && in_txn {
                rcpts.push(address(&command));
            }
            rcpt_index += 1;
        }
        let _ = out.write_all(bytes.as_bytes());
        match verb.as_str() {
            "RSET" => {
                in_txn = false;
                rcpts.clear();
            }
            "DATA" if reply.starts_with("354") && !close => {
                let mut data = Vec::new();
                let mut chunk = Vec::new();
                loop {
                    chunk.clear();
                    match input.read_until(b'\n', &mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if chunk == b".\r\n" || chunk == b".\n" {
                        break;
                    }
                    let unstuffed = chunk.strip_prefix(b".").unwrap_or(&chunk);
                    data.extend_from_slice(unstuffed);
                }
                lock(log)
                    .lines
                    .push(format!("C{conn}: <{} bytes> .", data.len()));
                let (reply, close, bytes) =
                    answer(".", ".", "250 2.0.0 Ok: queued".to_owned(), 0, txn);
                if reply.starts_with('2') {
                    lock(log).accepted.push(Accepted {
                        conn,
                        from: from.clone(),
                        rcpts: std::mem::take(&mut rcpts),
                        data,
                    });
                }
                let _ = out.write_all(bytes.as_bytes());
                in_txn = false;
                rcpts.clear();
                if close {
                    return;
                }
                continue;
            }
            _ => {}
        }
        if close || verb == "QUIT" {
            return;
        }
    }
}
