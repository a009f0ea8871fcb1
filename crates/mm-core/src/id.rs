//! Entry ids and file names.
//!
//! An id is `SSSSSSSSSS.UUUUUU+HHHH…` : the enqueue time in seconds and
//! microseconds (fixed width, so names sort in time order), a `+`, and 40 hex
//! digits of SHA-1 over the message, the envelope, the time, the process and
//! sixteen random bytes. The hash decides the entry's bucket and slice; the
//! time decides its place in the FIFO. An id is given once and keeps for the
//! whole life of the message, across queues, so an admin can follow it.
//!
//! A file name is the id, an optional middle part, and the state:
//!
//! | name                     | state     | meaning                                   |
//! |--------------------------|-----------|-------------------------------------------|
//! | `ID.tmp`                 | writing   | being written by mm-enqueue, never read    |
//! | `ID.TOKEN.tmp`           | writing   | a runner rewriting its claimed entry       |
//! | `ID.pck`                 | queued    | due now                                    |
//! | `ID.DUE.pck`             | deferred  | due at Unix time DUE (no open to know it)  |
//! | `ID.TOKEN.bak`           | claimed   | held by the runner whose token is TOKEN    |
//! | `ID.psv`                 | preserved | quarantined, with a reason                 |
//! | `ID.hld`                 | held      | held by an admin (mm-hold): no runner takes it |
//! | `ID.UNTIL.hld`           | held      | held until UNTIL; then a runner takes it      |
//!
//! Everything else in a queue directory is foreign and is left alone.

use std::fmt;
use std::str::FromStr;

use sha1::{Digest, Sha1};

use crate::error::{Error, ErrorKind, Result};

/// Length of an id: 17 for the time, 1 for '+', 40 for the hash.
pub const ID_LEN: usize = 58;

/// The identity of an entry.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    micros: u64,
    hash: [u8; 20],
}

impl EntryId {
    /// A new id for a message enqueued at `micros` (since the epoch), hashing `parts`
    /// together with the process id and random bytes, so ids are never reused.
    pub fn generate(micros: u64, parts: &[&[u8]]) -> EntryId {
        let mut h = Sha1::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.update(micros.to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        h.update(crate::fsx::random_bytes());
        EntryId {
            micros,
            hash: h.finalize().into(),
        }
    }

    /// An id from its parts (tests, fixtures).
    pub fn from_parts(micros: u64, hash: [u8; 20]) -> EntryId {
        EntryId { micros, hash }
    }

    /// Enqueue time, microseconds since the epoch.
    pub fn micros(&self) -> u64 {
        self.micros
    }

    /// Enqueue time, seconds since the epoch.
    pub fn secs(&self) -> u64 {
        self.micros / 1_000_000
    }

    /// The SHA-1 hash.
    pub fn hash(&self) -> &[u8; 20] {
        &self.hash
    }

    /// The hash's first 64 bits, big-endian: what slices are cut from.
    pub fn hash_prefix(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.hash[..8]);
        u64::from_be_bytes(b)
    }

    /// The bucket directory: the first byte of the hash, two hex digits.
    pub fn bucket(&self) -> u8 {
        self.hash[0]
    }

    /// Parses an id typed by a user or read from a name; nothing else gets to be a path.
    pub fn parse(s: &str) -> Result<EntryId> {
        parse_id(s.as_bytes())
            .ok_or_else(|| Error::new(ErrorKind::Invalid, format!("not an entry id: {s:?}")))
    }
}

fn parse_id(b: &[u8]) -> Option<EntryId> {
    if b.len() != ID_LEN || b[10] != b'.' || b[17] != b'+' {
        return None;
    }
    let secs = digits(&b[..10])?;
    let us = digits(&b[11..17])?;
    let mut hash = [0u8; 20];
    for (i, out) in hash.iter_mut().enumerate() {
        *out = hex(b[18 + 2 * i])? << 4 | hex(b[19 + 2 * i])?;
    }
    Some(EntryId {
        micros: secs * 1_000_000 + us,
        hash,
    })
}

fn digits(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:010}.{:06}+",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )?;
        for b in self.hash {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for EntryId {
    type Err = Error;
    fn from_str(s: &str) -> Result<EntryId> {
        EntryId::parse(s)
    }
}

/// The state an entry file's name gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// `.tmp`: being written; never read as an entry.
    Writing,
    /// `.pck`: queued, waiting for a runner (due now, or deferred to a later time).
    Queued,
    /// `.bak`: claimed by a runner.
    Claimed,
    /// `.psv`: preserved in quarantine.
    Preserved,
    /// `.hld`: held by an admin (mm-hold). No runner claims it and its
    /// give-up clock stops; mm-release puts it back. A new extension, so
    /// versions before it see a foreign file, which they never open, move or
    /// remove (and so never deliver).
    Held,
}

impl State {
    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            State::Writing => "tmp",
            State::Queued => "pck",
            State::Claimed => "bak",
            State::Preserved => "psv",
            State::Held => "hld",
        }
    }

    /// The name shown to users.
    pub fn label(self) -> &'static str {
        match self {
            State::Writing => "writing",
            State::Queued => "queued",
            State::Claimed => "claimed",
            State::Preserved => "preserved",
            State::Held => "held",
        }
    }
}

/// A parsed entry file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileName {
    /// The entry.
    pub id: EntryId,
    /// Its state.
    pub state: State,
    /// For a deferred `.pck`: when it is due; for a timed hold `.hld`: when
    /// it ends (Unix seconds).
    pub due: Option<u64>,
    /// For `.bak` and a runner's `.tmp`: the holder's token.
    pub holder: Option<String>,
}

impl FileName {
    /// A queued, due-now name.
    pub fn queued(id: EntryId) -> FileName {
        FileName {
            id,
            state: State::Queued,
            due: None,
            holder: None,
        }
    }

    /// A queued name due at `due` (`None`: now).
    pub fn deferred(id: EntryId, due: Option<u64>) -> FileName {
        FileName {
            id,
            state: State::Queued,
            due,
            holder: None,
        }
    }

    /// A claimed name held by `token`.
    pub fn claimed(id: EntryId, token: &str) -> FileName {
        FileName {
            id,
            state: State::Claimed,
            due: None,
            holder: Some(token.to_string()),
        }
    }

    /// A quarantined name.
    pub fn preserved(id: EntryId) -> FileName {
        FileName {
            id,
            state: State::Preserved,
            due: None,
            holder: None,
        }
    }

    /// A held name (mm-hold), until `until` (`None`: until mm-release).
    pub fn held(id: EntryId, until: Option<u64>) -> FileName {
        FileName {
            id,
            state: State::Held,
            due: until,
            holder: None,
        }
    }

    /// A temporary name, for mm-enqueue (`holder` None) or a runner's rewrite.
    pub fn writing(id: EntryId, holder: Option<&str>) -> FileName {
        FileName {
            id,
            state: State::Writing,
            due: None,
            holder: holder.map(str::to_string),
        }
    }

    /// Parses a directory entry's name; `None` for anything foreign.
    pub fn parse(name: &[u8]) -> Option<FileName> {
        if name.len() < ID_LEN + 4 || name[ID_LEN] != b'.' {
            return None;
        }
        let id = parse_id(&name[..ID_LEN])?;
        let rest = &name[ID_LEN + 1..];
        let (mid, ext) = match rest.iter().rposition(|&c| c == b'.') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let state = match ext {
            b"tmp" => State::Writing,
            b"pck" => State::Queued,
            b"bak" => State::Claimed,
            b"psv" => State::Preserved,
            b"hld" => State::Held,
            _ => return None,
        };
        let mut f = FileName {
            id,
            state,
            due: None,
            holder: None,
        };
        match (state, mid) {
            (_, None) if state != State::Claimed => {}
            (State::Queued | State::Held, Some(m)) => {
                f.due = Some(digits(m).filter(|_| !m.is_empty() && m.len() <= 12)?)
            }
            (State::Claimed | State::Writing, Some(m)) if is_token(m) => {
                f.holder = Some(String::from_utf8(m.to_vec()).ok()?);
            }
            _ => return None,
        }
        Some(f)
    }
}

/// A runner token: 1 to 32 characters of `[0-9a-z-]`.
pub fn is_token(m: &[u8]) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.iter()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || *c == b'-')
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.id)?;
        if let Some(d) = self.due {
            write!(f, ".{d}")?;
        }
        if let Some(h) = &self.holder {
            write!(f, ".{h}")?;
        }
        write!(f, ".{}", self.state.ext())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> EntryId {
        EntryId::from_parts(1_764_004_260_123_456, [0xab; 20])
    }

    #[test]
    fn ids_round_trip_and_sort_by_time() {
        let s = id().to_string();
        assert_eq!(s, format!("1764004260.123456+{}", "ab".repeat(20)));
        assert_eq!(EntryId::parse(&s).unwrap(), id());
        let later = EntryId::from_parts(1_764_004_261_000_000, [0; 20]);
        assert!(id() < later);
        assert!(s < later.to_string());
    }

    #[test]
    fn hostile_ids_are_refused() {
        for bad in [
            "",
            "../../etc/passwd",
            &format!("1764004260.123456+{}", "AB".repeat(20)),
            &format!("1764004260.123456+{}/", "ab".repeat(20)),
            &format!("1764004260.123456+{}\0", "a".repeat(39)),
        ] {
            assert!(EntryId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_round_trip() {
        for n in [
            FileName::queued(id()),
            FileName::deferred(id(), Some(1_764_100_000)),
            FileName::claimed(id(), "k3j2-41a"),
            FileName::preserved(id()),
            FileName::held(id(), None),
            FileName::held(id(), Some(1_764_100_000)),
            FileName::writing(id(), None),
            FileName::writing(id(), Some("abc")),
        ] {
            let s = n.to_string();
            assert_eq!(FileName::parse(s.as_bytes()), Some(n), "{s}");
        }
    }

    #[test]
    fn foreign_names_are_not_entries() {
        let base = id().to_string();
        for bad in [
            format!("{base}.bak"),
            format!("{base}.x.pck"),
            format!("{base}.pck~"),
            format!("{base}.Tok.bak"),
            "README".into(),
            format!("{base}..pck"),
            format!("{base}.tok.hld"),
        ] {
            assert_eq!(FileName::parse(bad.as_bytes()), None, "{bad}");
        }
    }
}
