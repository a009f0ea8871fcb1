//! SMTP servers for the runner tests, both real implementations that nobody
//! here wrote (their wrappers are the test kit's, `tests/src`, shared with
//! xtask's demo, end-to-end run and benchmark):
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

pub use mm_e2e::MailServer;

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
