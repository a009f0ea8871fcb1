//! The content of an entry file: the message and everything known about it.
//!
//! Encoded as MessagePack (rmp-serde) in *named* form, a map from field name
//! to value, so a field added by a later version is kept by an earlier one:
//! every struct carries the fields it does not know in `extra` and writes them
//! back on a rewrite. The first field is `format`; a reader refuses a format
//! newer than [`FORMAT`] rather than guess its meaning (the runner quarantines
//! such an entry with that reason; a newer mm can take it back with mm-unbad).
//!
//! The message is kept as the exact bytes received (MessagePack `bin`): bare
//! LF, NUL, 8-bit and overlong lines are never touched on disk. Conversion to
//! the SMTP wire form happens only when sending.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The format version this build writes and the newest it reads.
pub const FORMAT: u32 = 1;

/// Fields this version does not know, kept verbatim.
pub type Extra = BTreeMap<String, rmpv::Value>;

/// One queue entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Format version of this encoding.
    pub format: u32,
    /// The id the entry was given at enqueue time.
    pub id: String,
    /// Envelope sender; empty for the null sender `<>`.
    pub sender: String,
    /// Envelope recipients, each with its delivery state.
    pub recipients: Vec<Recipient>,
    /// The message, byte for byte as received.
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// Everything else.
    pub meta: Meta,
    /// For a quarantined entry that could not be decoded: the original file's bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<serde_bytes::ByteBuf>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where one recipient stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Not yet delivered: never tried, or deferred.
    Pending,
    /// Accepted by the next hop; never sent again.
    Delivered,
    /// Refused permanently or given up on; goes (or went) into a bounce record.
    Failed,
}

/// One envelope recipient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipient {
    /// The address.
    pub address: String,
    /// Its state.
    pub state: RcptState,
    /// Attempts made for it.
    #[serde(default)]
    pub attempts: u32,
    /// The last reply of the server, or the local reason.
    #[serde(default)]
    pub last_reply: Option<String>,
    /// When the state last changed (Unix seconds).
    #[serde(default)]
    pub updated: Option<u64>,
    /// A failed recipient whose bounce record was written (so that no second
    /// one is). Not written while false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bounced: bool,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Metadata of an entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The queue the entry was first enqueued into.
    pub queue: String,
    /// The mailing list, if any.
    #[serde(default)]
    pub list: Option<String>,
    /// When it was received (Unix seconds).
    pub received: u64,
    /// How many times it was taken back from a dead runner.
    #[serde(default)]
    pub recoveries: u32,
    /// Delivery attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// The first attempt (Unix seconds); give-up time counts from here.
    #[serde(default)]
    pub first_attempt: Option<u64>,
    /// When the next attempt is due (Unix seconds); also in the file name.
    #[serde(default)]
    pub next_attempt: Option<u64>,
    /// The last error or deferral reason.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Pipeline position: the index of the first stage not yet done.
    #[serde(default)]
    pub stage: u32,
    /// The queue whose stages `stage` counts, when not the queue the entry is
    /// in: set when it is passed on (`--then`), so the next queue's runner
    /// starts its own stages from the first, and a pass-on put back never
    /// runs the same stages twice. Not written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_queue: Option<String>,
    /// Times in a row the stage at `stage` ran out of time (`--stage-timeout`);
    /// the entry is shunted at the third. Not written while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stage_timeouts: u32,
    /// The remote destination (`host:port`) it was last tried at or
    /// deferred for, whose remembered back-off a flush of it clears. Not
    /// written when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Free-form key/values (`mm-enqueue --meta`).
    #[serde(default)]
    pub kv: BTreeMap<String, String>,
    /// Why and when it was quarantined; mm-unbad clears it (the history keeps the reason).
    #[serde(default)]
    pub quarantine: Option<Quarantine>,
    /// For a bounce record: the entry it came from and why.
    #[serde(default)]
    pub bounce: Option<Bounce>,
    /// What happened to it: recoveries, quarantines, releases.
    #[serde(default)]
    pub history: Vec<Event>,
    /// Who held it, when and why, while it is held (`ID.hld`); mm-release
    /// clears it. Left out when absent, so entries never held are
    /// byte-for-byte what they were before holds existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why an entry sits in bad/ or shunt/.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quarantine {
    /// The reason, one line.
    pub reason: String,
    /// When (Unix seconds).
    pub at: u64,
    /// The queue it came from, where mm-unbad returns it.
    pub from_queue: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An admin's hold on an entry (mm-hold).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    /// Who held it (the user, and who ran sudo).
    pub by: String,
    /// When (Unix seconds).
    pub at: u64,
    /// Why, as the admin said.
    pub reason: String,
    /// When it was due before it was held (Unix seconds), if deferred.
    #[serde(default)]
    pub was_due: Option<u64>,
    /// When a timed hold ends (Unix seconds); also in the name, `ID.UNTIL.hld`.
    #[serde(default)]
    pub until: Option<u64>,
    /// The destination hold rule that held it (its domain), if any.
    #[serde(default)]
    pub rule: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A bounce record's origin.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bounce {
    /// The entry whose recipients failed.
    pub original_id: String,
    /// The queue it was in.
    pub original_queue: String,
    /// Why they failed: [`BounceReason`]'s word, "refused" or "expired".
    pub reason: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Why the recipients of a bounce record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceReason {
    /// The server refused them (5xx).
    Refused,
    /// They were still deferred at the give-up time.
    Expired,
    /// An admin gave up on them (`mm-delete --bounce`).
    GivenUp,
}

impl BounceReason {
    /// The word on disk (`Bounce::reason`).
    pub fn as_str(self) -> &'static str {
        match self {
            BounceReason::Refused => "refused",
            BounceReason::Expired => "expired",
            BounceReason::GivenUp => "given up",
        }
    }

    /// The last reply kept for a recipient that expired: the word, then
    /// `detail`. [`BounceReason::of`] reads it back.
    pub fn expired_reply(detail: &str) -> String {
        format!("{}: {detail}", BounceReason::Expired.as_str())
    }

    /// The last reply kept for a recipient an admin gave up on: the words,
    /// then `detail`. [`BounceReason::of`] reads it back.
    pub fn given_up_reply(detail: &str) -> String {
        format!("{} {detail}", BounceReason::GivenUp.as_str())
    }

    /// Why failed recipient `r` failed, from the reply it keeps (a bounce
    /// record may be written by a later run than the one that failed it).
    pub fn of(r: &Recipient) -> BounceReason {
        match r.last_reply.as_deref() {
            Some(reply) if reply.starts_with(BounceReason::Expired.as_str()) => {
                BounceReason::Expired
            }
            Some(reply) if reply.starts_with(BounceReason::GivenUp.as_str()) => {
                BounceReason::GivenUp
            }
            _ => BounceReason::Refused,
        }
    }
}

/// One line of an entry's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When (Unix seconds).
    pub at: u64,
    /// What happened.
    pub what: String,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Deepest nesting an entry file may have. The format itself is about five
/// levels deep; unknown fields may nest a little more. rmp-serde's own limit
/// (1,024 levels) is more than a runner's worker thread has stack for: a file
/// of nested arrays would abort the runner instead of being quarantined.
pub const MAX_DEPTH: usize = 64;

/// `rmp_serde::from_slice` with nesting limited to [`MAX_DEPTH`].
fn from_slice_shallow<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> std::result::Result<T, rmp_serde::decode::Error> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de)
}

/// Just the version, to explain why a newer entry does not decode.
#[derive(Deserialize)]
struct Head {
    format: u32,
}

impl Entry {
    /// A new entry with every recipient pending.
    pub fn new(
        id: &crate::EntryId,
        sender: &str,
        recipients: &[String],
        message: Vec<u8>,
        queue: &str,
    ) -> Entry {
        Entry {
            format: FORMAT,
            id: id.to_string(),
            sender: sender.to_string(),
            recipients: recipients
                .iter()
                .map(|a| Recipient {
                    bounced: false,
                    address: a.clone(),
                    state: RcptState::Pending,
                    attempts: 0,
                    last_reply: None,
                    updated: None,
                    extra: Extra::new(),
                })
                .collect(),
            message,
            meta: Meta {
                queue: queue.to_string(),
                received: id.secs(),
                ..Meta::default()
            },
            original: None,
            extra: Extra::new(),
        }
    }

    /// Encodes in named form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot encode entry {}: {e}", self.id),
            )
        })
    }

    /// Decodes, refusing an empty buffer, garbage, a newer format and
    /// nesting deeper than [`MAX_DEPTH`].
    pub fn decode(bytes: &[u8]) -> Result<Entry> {
        if bytes.is_empty() {
            return Err(Error::new(ErrorKind::Corrupt, "empty file"));
        }
        match from_slice_shallow::<Entry>(bytes) {
            Ok(e) if e.format > FORMAT => Err(newer(e.format)),
            Ok(e) if e.format == 0 => Err(Error::new(ErrorKind::Corrupt, "format version 0")),
            Ok(e) => Ok(e),
            Err(err) => match from_slice_shallow::<Head>(bytes) {
                Ok(h) if h.format > FORMAT => Err(newer(h.format)),
                _ => Err(Error::new(
                    ErrorKind::Corrupt,
                    format!("undecodable: {err}"),
                )),
            },
        }
    }

    /// The index of the first pipeline stage of `queue` not yet done (0 for
    /// an entry just passed on from another queue).
    pub fn stage_in(&self, queue: &str) -> u32 {
        match &self.meta.stage_queue {
            Some(q) if q != queue => 0,
            _ => self.meta.stage,
        }
    }

    /// The recipients still to deliver to.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
    }

    /// Appends a history line.
    pub fn note(&mut self, at: u64, what: impl Into<String>) {
        self.meta.history.push(Event {
            at,
            what: what.into(),
            extra: Extra::new(),
        });
    }

    /// The reason shown for this entry: quarantine reason, else the hold's
    /// reason, else the last error.
    pub fn reason(&self) -> Option<&str> {
        self.meta
            .quarantine
            .as_ref()
            .map(|q| q.reason.as_str())
            .or(self.meta.hold.as_ref().map(|h| h.reason.as_str()))
            .or(self.meta.last_error.as_deref())
    }
}

fn newer(format: u32) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("written in format {format}; this mm reads formats up to {FORMAT}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryId;

    fn sample() -> Entry {
        let id = EntryId::from_parts(1_764_004_260_000_001, [7; 20]);
        let msg: Vec<u8> = b"Subject: x\n\n.\nbare LF\r\nNUL\0 8bit \xff\xfe\n"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'a', 5000))
            .collect();
        Entry::new(
            &id,
            "",
            &["a@example.org".into(), "b@example.net".into()],
            msg,
            "in",
        )
    }

    #[test]
    fn round_trip_keeps_message_bytes_exactly() {
        let e = sample();
        let back = Entry::decode(&e.encode().unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn encoding_is_a_named_map() {
        let bytes = sample().encode().unwrap();
        let v: rmpv::Value = rmp_serde::from_slice(&bytes).unwrap();
        let map = v.as_map().expect("a map");
        assert_eq!(map[0].0.as_str(), Some("format"));
    }

    #[test]
    fn unknown_fields_survive_a_rewrite() {
        // An entry written by a later version with fields at three levels.
        let bytes = sample().encode().unwrap();
        let v: rmpv::Value = rmp_serde::from_slice(&bytes).unwrap();
        let rmpv::Value::Map(mut top) = v else {
            panic!("not a map")
        };
        top.push(("priority".into(), 7.into()));
        for (k, val) in top.iter_mut() {
            if k.as_str() == Some("meta")
                && let rmpv::Value::Map(m) = val
            {
                m.push(("dkim".into(), "signed".into()));
            }
            if k.as_str() == Some("recipients")
                && let rmpv::Value::Array(a) = val
                && let rmpv::Value::Map(r) = &mut a[0]
            {
                r.push(("notify".into(), "never".into()));
            }
        }
        let v = rmpv::Value::Map(top);
        let newer = rmp_serde::to_vec_named(&v).unwrap();
        let mut e = Entry::decode(&newer).unwrap();
        e.meta.attempts += 1;
        let again = Entry::decode(&e.encode().unwrap()).unwrap();
        assert_eq!(again.extra.get("priority"), Some(&rmpv::Value::from(7)));
        assert_eq!(
            again.meta.extra.get("dkim"),
            Some(&rmpv::Value::from("signed"))
        );
        assert_eq!(
            again.recipients[0].extra.get("notify"),
            Some(&rmpv::Value::from("never"))
        );
        assert_eq!(again.meta.attempts, 1);
    }

    #[test]
    fn corrupt_and_future_entries_are_refused_with_a_reason() {
        assert!(
            Entry::decode(b"")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let full = sample().encode().unwrap();
        let e = Entry::decode(&full[..full.len() / 2]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert!(Entry::decode(b"\xc1\xc1garbage").is_err());
        let mut fut = sample();
        fut.format = 9;
        let e = Entry::decode(&fut.encode().unwrap()).unwrap_err();
        assert!(e.to_string().contains("format 9"), "{e}");
    }
}
