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

/// One entry's mail, as a transport sees it.
#[derive(Clone, Copy, Debug)]
pub struct Mail<'a> {
    /// The entry id (names the copies of a maildir delivery).
    pub id: &'a str,
    /// The envelope sender (`""`: the null sender).
    pub sender: &'a str,
    /// The recipients to deliver to now.
    pub recipients: &'a [String],
    /// Each recipient's position in the entry (same length as `recipients`).
    pub positions: &'a [usize],
    /// The message as stored.
    pub message: &'a [u8],
}

/// The record a transport hands each transaction's results to, before it
/// starts the next one. An error stops the delivery at once: the transport
/// returns it and neither tries nor reports the remaining recipients.
pub type Record<'r> = dyn FnMut(&[RcptResult]) -> crate::Result<()> + 'r;

/// A way to deliver: SMTP to a smarthost, a maildir, or discard.
///
/// Every recipient given gets exactly one [`RcptResult`], handed to `record`
/// once its transaction has ended, unless `record` fails.
pub trait Deliver: Send {
    /// Delivers `mail`, reporting each transaction's results to `record`.
    fn deliver(&mut self, mail: &Mail<'_>, record: &mut Record<'_>) -> crate::Result<()>;

    /// Ends any connection kept open between entries.
    fn close(&mut self) {}

    /// The remote destination (`host:port`) whose failures are remembered
    /// (see [`crate::destination`]); `None` for local transports.
    fn destination(&self) -> Option<String> {
        None
    }

    /// Why the last [`deliver`](Deliver::deliver) failed at the connection
    /// level (the destination, not a recipient), if it did.
    fn trouble(&self) -> Option<String> {
        None
    }

    /// Where the last delivery went, for the log: `host[address]:port`,
    /// `local`, or `none`.
    fn relay(&self) -> String {
        "none".into()
    }
}

/// `--deliver-to DIR`: one maildir copy per recipient, each recorded before the next.
pub struct Maildir(pub std::path::PathBuf);

impl Deliver for Maildir {
    fn relay(&self) -> String {
        "local".into()
    }

    fn deliver(&mut self, mail: &Mail<'_>, record: &mut Record<'_>) -> crate::Result<()> {
        mail.recipients
            .iter()
            .zip(mail.positions)
            .try_for_each(|(rcpt, &i)| {
                record(&[local::deliver_copy(
                    &self.0,
                    mail.id,
                    i,
                    mail.sender,
                    rcpt,
                    mail.message,
                )])
            })
    }
}

/// `--discard`: every recipient accepted, nothing sent.
pub struct Discard;

impl Deliver for Discard {
    fn deliver(&mut self, mail: &Mail<'_>, record: &mut Record<'_>) -> crate::Result<()> {
        record(&local::discard(mail.recipients))
    }
}

#[cfg(feature = "smtp")]
impl Deliver for smtp::SmtpClient {
    fn deliver(&mut self, mail: &Mail<'_>, record: &mut Record<'_>) -> crate::Result<()> {
        smtp::SmtpClient::deliver(self, mail.sender, mail.recipients, mail.message, record)
    }

    fn close(&mut self) {
        smtp::SmtpClient::close(self)
    }

    fn destination(&self) -> Option<String> {
        Some(smtp::SmtpClient::destination(self))
    }

    fn trouble(&self) -> Option<String> {
        smtp::SmtpClient::trouble(self).map(str::to_string)
    }

    fn relay(&self) -> String {
        smtp::SmtpClient::relay(self)
    }
}
