//! Delivery: what happens to a claimed entry's recipients.
//!
//! Every transport reports one [`RcptResult`] per recipient it was asked to
//! deliver to. The runner records those results durably in the entry before it
//! moves on, so that a crash or a retry never sends again to a recipient that a
//! server already accepted.

use serde::{Deserialize, Serialize};

/// Transports that need no MTA: a maildir and discard.
pub mod local;

/// Stored message bytes to the SMTP DATA form.
pub mod wire;

/// SMTP delivery with per-recipient outcomes and strict reply checking.
#[cfg(feature = "smtp")]
pub mod smtp;

/// What became of one recipient in one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The server took responsibility for the message (2xx after DATA).
    Delivered,
    /// Try again later: a 4xx reply, a connection failure or a timeout.
    Deferred,
    /// Permanently refused (5xx): becomes a bounce record.
    Failed,
}

/// The outcome of one attempt for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RcptResult {
    /// The recipient address, as stored in the entry.
    pub address: String,
    /// What became of it.
    pub verdict: Verdict,
    /// The server's reply (code and text), or a description of the local failure.
    pub reply: String,
}
