//! Transports that need no MTA: a directory of delivered copies, and discard.
//!
//! `--deliver-to DIR` writes each delivered copy as a file in maildir layout,
//! named `ID.INDEX.RCPT.PID.SEQ.RANDOM` so a repeated delivery is a new file
//! (`DIR/tmp` then renamed into `DIR/new`, `fsync`ed), one file per recipient,
//! with `Return-Path:` and `Delivered-To:` lines prepended as a local delivery
//! agent does. It is the built-in default of the README's demo, and what an
//! admin can use to test a queue without a smarthost.

use std::io::Write;
use std::path::Path;

use super::{RcptResult, Verdict};
use crate::fsx;

/// Delivers one copy for the recipient at position `index` of the entry into
/// the maildir `dir`.
pub fn deliver_copy(
    dir: &Path,
    id: &str,
    index: usize,
    sender: &str,
    rcpt: &str,
    message: &[u8],
) -> RcptResult {
    let r = write_copy(dir, id, index, sender, rcpt, message);
    RcptResult {
        address: rcpt.to_string(),
        verdict: if r.is_ok() {
            Verdict::Delivered
        } else {
            Verdict::Deferred
        },
        reply: match r {
            Ok(name) => format!("250 delivered to {}", dir.join("new").join(name).display()),
            Err(e) => format!("local delivery failed: {e}"),
        },
    }
}

fn write_copy(
    dir: &Path,
    id: &str,
    index: usize,
    sender: &str,
    rcpt: &str,
    message: &[u8],
) -> crate::Result<String> {
    for sub in ["", "tmp", "new", "cur"] {
        fsx::create_dir(&dir.join(sub))?;
    }
    // The address goes in the name so a copy per recipient is easy to find.
    let safe: String = rcpt
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Unique per delivery, like a maildir name: a second copy (after a crash
    // between the copy and its record) is a second file, never an overwrite.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!(
        "{id}.{index}.{safe}.{}.{seq}.{:x}",
        std::process::id(),
        u32::from_le_bytes(fsx::random_bytes()[..4].try_into().unwrap_or([0; 4]))
    );
    let tmp = dir.join("tmp").join(&name);
    let dest = dir.join("new").join(&name);
    let mut bytes = Vec::with_capacity(message.len() + 128);
    let _ = write!(bytes, "Return-Path: <{sender}>\nDelivered-To: {rcpt}\n");
    bytes.extend_from_slice(message);
    let _ = std::fs::remove_file(&tmp);
    fsx::write_and_rename(&tmp, &dest, &bytes, true)?;
    fsx::sync_dir(&dir.join("new"))?;
    Ok(name)
}

/// Accepts every recipient and sends nothing (benchmarks, draining a test queue).
pub fn discard(recipients: &[String]) -> Vec<RcptResult> {
    recipients
        .iter()
        .map(|r| RcptResult {
            address: r.clone(),
            verdict: Verdict::Delivered,
            reply: "250 discarded".into(),
        })
        .collect()
}
