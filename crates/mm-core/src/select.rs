//! The one selection language of the inspection and repair tools.
//!
//! mm-showq, mm-recover and mm-unbad take the same flags, with the same
//! meaning, and answer them with [`Selector`]:
//!
//! | flag | matches an entry when |
//! |---|---|
//! | `--sender S` | its envelope sender contains S (case-insensitive; `<>` matches the null sender) |
//! | `--rcpt R` | one of its recipients contains R (case-insensitive) |
//! | `--domain D` | one of its recipients is at D or a subdomain of D |
//! | `--list L` | its list is L |
//! | `--older-than DUR` / `--younger-than DUR` | its enqueue time is that old |
//! | `--state S` (repeatable) | its state is S: queued, deferred, claimed, preserved, held, writing |
//! | `--error TEXT` | its last error, quarantine reason or a recipient's last reply contains TEXT |
//! | `--slice K/N` | it is in slice K of N |
//!
//! Flags combine with AND. The name-only flags (state, age, slice) cost no
//! open; the others read the entry.

use std::time::Duration;

use crate::entry::Entry;
use crate::id::FileName;
use crate::report::ShownState;
use crate::slice::Slice;

/// A selection of entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    /// Substring of the sender.
    pub sender: Option<String>,
    /// Substring of a recipient.
    pub rcpt: Option<String>,
    /// Domain of a recipient.
    pub domain: Option<String>,
    /// The list.
    pub list: Option<String>,
    /// At least this old.
    pub older_than: Option<Duration>,
    /// At most this old.
    pub younger_than: Option<Duration>,
    /// One of these states.
    pub states: Vec<ShownState>,
    /// Substring of an error or reply.
    pub error: Option<String>,
    /// A slice.
    pub slice: Option<Slice>,
}

fn contains(hay: &str, needle: &str) -> bool {
    hay.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

impl Selector {
    /// The slice to scan.
    pub fn slice(&self) -> Slice {
        self.slice.unwrap_or(Slice::ALL)
    }

    /// Whether any flag needs the entry's content.
    pub fn needs_content(&self) -> bool {
        self.sender.is_some()
            || self.rcpt.is_some()
            || self.domain.is_some()
            || self.list.is_some()
            || self.error.is_some()
    }

    /// Whether an entry passes the name-only flags at time `now`.
    pub fn matches_name(&self, name: &FileName, now: u64) -> bool {
        let age = now.saturating_sub(name.id.secs());
        if self.older_than.is_some_and(|d| age < d.as_secs())
            || self.younger_than.is_some_and(|d| age >= d.as_secs())
        {
            return false;
        }
        if !self.states.is_empty() && !self.states.contains(&ShownState::of(name, now)) {
            return false;
        }
        self.slice.is_none_or(|s| s.contains(name.id.hash_prefix()))
    }

    /// Whether a decoded entry passes the content flags.
    pub fn matches_entry(&self, e: &Entry) -> bool {
        if let Some(s) = &self.sender {
            let ok = if s == "<>" {
                e.sender.is_empty()
            } else {
                contains(&e.sender, s)
            };
            if !ok {
                return false;
            }
        }
        if let Some(r) = &self.rcpt
            && !e.recipients.iter().any(|x| contains(&x.address, r))
        {
            return false;
        }
        if let Some(d) = &self.domain {
            let d = d.trim_start_matches('@').to_ascii_lowercase();
            let at = |a: &str| {
                let dom = a
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default();
                dom == d || dom.ends_with(&format!(".{d}"))
            };
            if !e.recipients.iter().any(|x| at(&x.address)) {
                return false;
            }
        }
        if let Some(l) = &self.list
            && e.meta.list.as_deref() != Some(l.as_str())
        {
            return false;
        }
        if let Some(t) = &self.error {
            let mut texts = e
                .reason()
                .into_iter()
                .chain(e.recipients.iter().filter_map(|r| r.last_reply.as_deref()));
            if !texts.any(|x| contains(x, t)) {
                return false;
            }
        }
        true
    }

    /// Whether a file whose content could not be read passes: only if no content flag was given,
    /// or `--error` matches why it could not be read.
    pub fn matches_unreadable(&self, why: &str) -> bool {
        !self.needs_content()
            || (self.error.as_deref().is_some_and(|t| contains(why, t))
                && self.sender.is_none()
                && self.rcpt.is_none()
                && self.domain.is_none()
                && self.list.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EntryId;

    fn entry() -> Entry {
        let mut e = Entry::new(
            &EntryId::from_parts(1_000_000_000, [0x10; 20]),
            "Owner@Example.org",
            &["a@lists.example.com".into(), "b@example.net".into()],
            b"x".to_vec(),
            "out",
        );
        e.recipients[1].last_reply = Some("450 4.2.1 Mailbox busy".into());
        e.meta.list = Some("dev".into());
        e
    }

    #[test]
    fn content_flags_match_as_documented() {
        let e = entry();
        let sel = |f: fn(&mut Selector)| {
            let mut s = Selector::default();
            f(&mut s);
            s.matches_entry(&e)
        };
        assert!(sel(|s| s.sender = Some("owner@example".into())));
        assert!(!sel(|s| s.sender = Some("<>".into())));
        assert!(sel(|s| s.domain = Some("example.com".into())), "subdomain");
        assert!(
            !sel(|s| s.domain = Some("ample.com".into())),
            "not a suffix of a label"
        );
        assert!(sel(|s| s.rcpt = Some("B@EXAMPLE".into())));
        assert!(sel(|s| s.error = Some("mailbox busy".into())));
        assert!(!sel(|s| s.error = Some("550".into())));
        assert!(sel(|s| s.list = Some("dev".into())));
        assert!(
            !sel(|s| {
                s.list = Some("dev".into());
                s.sender = Some("nobody".into())
            }),
            "AND"
        );
    }

    #[test]
    fn name_flags_cost_no_open() {
        let name = FileName::deferred(EntryId::from_parts(1_000_000_000, [0x10; 20]), Some(5_000));
        let s = Selector {
            older_than: Some(Duration::from_secs(60)),
            states: vec![ShownState::Deferred],
            ..Default::default()
        };
        assert!(!s.needs_content());
        assert!(s.matches_name(&name, 1_000 + 61));
        assert!(!s.matches_name(&name, 1_000 + 59));
        assert!(
            !s.matches_name(&name, 6_000),
            "due by then: queued, not deferred"
        );
    }
}
