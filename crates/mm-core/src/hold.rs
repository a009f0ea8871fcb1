//! Holding entries and releasing them (mm-hold, mm-release; postsuper -h/-H,
//! exim -Mf/-Mt).
//!
//! A held entry is `ID.hld` in its bucket. The state is in the name, so a
//! runner skips it from the name alone, as it skips a claim, without opening
//! it; versions of mm before holds see a foreign file, which they never open,
//! move or remove. Who held it, when and why are in the entry
//! (`meta.hold`), shown by mm-showq and mm-dumpdb.
//!
//! Holding claims the entry ([`Claim::take`]), records the hold and a history
//! line, saves, and renames the claim to `ID.hld`. Releasing claims the held
//! entry, clears the hold, moves its give-up clock (`meta.first_attempt`)
//! forward by the time it was held, so that holding never makes mail expire,
//! and releases it as `ID.pck`, due now, with its per-recipient progress.
//! Attempts are not counted while held: no runner touches it.
//!
//! **Timed holds and hold rules.** `ID.UNTIL.hld` is held until UNTIL; a
//! runner then takes it like a due entry (from the name), ends its hold
//! ([`end`]) and delivers it. A hold rule (`mm-hold --all --domain D --for
//! DUR`) is a file `.holds/D` in the spool, so it survives restarts; a
//! runner that claims an entry with a pending recipient at D while the rule
//! lasts holds it until the rule's end instead of trying it ([`rule_for`],
//! [`hold_by_rule`]): no attempt is counted. Each entry's UNTIL is the end
//! plus a share of the rule's spread picked by its hash, so when the hold
//! ends the mail comes back spread over that window, not all at once.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::admin::{self, Action, Applied};
use crate::claim::Claim;
use crate::entry::{self, Entry, RcptState};
use crate::error::{Error, ErrorKind, Result};
use crate::id::{EntryId, FileName, State};
use crate::spool::Spool;

/// The directory of the hold rules, in the spool root.
pub const RULES_DIR: &str = ".holds";

/// The hold.
#[derive(Clone, Debug)]
pub struct Hold {
    /// Who holds (history, `meta.hold.by`).
    pub actor: String,
    /// Why.
    pub reason: String,
    /// A timed hold: until then (Unix seconds), plus each entry's share of `spread`.
    pub until: Option<u64>,
    /// Seconds over which held mail comes back when a timed hold ends.
    pub spread: u64,
}

/// When the hold of entry `id` ends: `until` plus its share of `spread`.
pub fn until_for(id: EntryId, until: u64, spread: u64) -> u64 {
    until + id.hash_prefix() % spread.max(1)
}

/// Holds the claimed entry `c` (its name is gone: it is ours) with `hold`,
/// and moves it to `ID[.UNTIL].hld` in its queue.
fn put_on_hold(mut c: Claim, hold: entry::Hold, now: u64) -> Result<()> {
    let line = match hold.until {
        Some(u) => format!(
            "held by {} until {}: {}",
            hold.by,
            crate::clock::rfc3339(u),
            hold.reason
        ),
        None => format!("held by {}: {}", hold.by, hold.reason),
    };
    let until = hold.until;
    c.entry.meta.hold = Some(hold);
    c.entry.note(now, line);
    let queue = c.queue().clone();
    c.save()?;
    crate::crashpoint::here("hold-after-save");
    c.move_saved(&queue, State::Held, until)?;
    Ok(())
}

/// Ends the hold recorded in `entry` (if any) at `now`: the give-up clock
/// moves forward by the time it was held; a history line says who ended it.
/// Returns what the hold was, for the caller's line.
pub fn end(entry: &mut Entry, now: u64, by: &str) -> String {
    let detail = match entry.meta.hold.take() {
        Some(h) => {
            let held_for = now.saturating_sub(h.at);
            // The give-up clock stood still while it was held.
            if let Some(f) = entry.meta.first_attempt.as_mut() {
                *f = f.saturating_add(held_for);
            }
            format!(
                "held {} by {}: {}",
                admin::relative(h.at, now),
                h.by,
                h.reason
            )
        }
        None => "held (no record of by whom)".into(),
    };
    entry.meta.next_attempt = None;
    entry.note(now, format!("hold ended by {by}; was {detail}"));
    detail
}

/// A destination hold rule: everything for `domain` is held until `until`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// The domain (and its subdomains), lowercase.
    pub domain: String,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// The window over which held mail comes back (seconds).
    pub spread: u64,
    /// Who made it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// When it was made.
    pub at: u64,
}

impl Rule {
    /// Whether a pending recipient of `e` is at its domain (or a subdomain).
    pub fn matches(&self, e: &Entry) -> bool {
        e.recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
            .any(|r| {
                let dom = r
                    .address
                    .rsplit_once('@')
                    .map(|(_, d)| d.to_ascii_lowercase())
                    .unwrap_or_default();
                dom == self.domain || dom.ends_with(&format!(".{}", self.domain))
            })
    }
}

/// A domain as a rule's file name: `[a-z0-9.-]`, not starting with a dot.
fn rule_name(domain: &str) -> Result<String> {
    let d = domain.trim_start_matches('@').to_ascii_lowercase();
    if d.is_empty()
        || d.len() > 253
        || d.starts_with('.')
        || !d
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("not a domain for a hold rule: {domain:?}"),
        ));
    }
    Ok(d)
}

/// Writes (or replaces) a hold rule, durably: `.holds/DOMAIN`.
pub fn write_rule(spool: &Spool, rule: &Rule) -> Result<()> {
    let name = rule_name(&rule.domain)?;
    let dir = spool.private_dir(RULES_DIR)?;
    let json = serde_json::to_vec_pretty(rule)
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot encode hold rule: {e}")))?;
    let tmp = dir.join(format!(".{name}.tmp"));
    // One left by an mm-hold that was killed: never a reason to refuse.
    let _ = std::fs::remove_file(&tmp);
    crate::fsx::write_and_rename(&tmp, &dir.join(&name), &json, true)?;
    crate::fsx::sync_dir(&dir)
}

/// Removes the hold rule of `domain`; whether there was one.
pub fn remove_rule(spool: &Spool, domain: &str) -> Result<bool> {
    let path = spool.root().join(RULES_DIR).join(rule_name(domain)?);
    match std::fs::remove_file(&path) {
        // Synced: a machine crash must not bring the rule back.
        Ok(()) => crate::fsx::sync_dir(&spool.root().join(RULES_DIR)).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("cannot remove hold rule", &path, e)),
    }
}

/// The rules in force at `now` (ended ones are left out).
pub fn rules(spool: &Spool, now: u64) -> Vec<Rule> {
    let Ok(rd) = std::fs::read_dir(spool.root().join(RULES_DIR)) else {
        return Vec::new();
    };
    rd.filter_map(|d| d.ok())
        .filter(|d| !d.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|d| std::fs::read(d.path()).ok())
        .filter_map(|b| serde_json::from_slice::<Rule>(&b).ok())
        .filter(|r| r.until > now)
        .collect()
}

/// The rule in force that holds `entry`, if any. The rules are read at most
/// once a second per process, so a runner pays one directory read per second,
/// not one per entry.
pub fn rule_for(spool: &Spool, entry: &Entry, now: u64) -> Option<Rule> {
    static CACHE: Mutex<Option<(Instant, Vec<Rule>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().ok()?;
    let fresh = cache
        .as_ref()
        .is_some_and(|(t, _)| t.elapsed() < std::time::Duration::from_secs(1));
    if !fresh {
        *cache = Some((Instant::now(), rules(spool, now)));
    }
    let (_, rules) = cache.as_ref()?;
    rules
        .iter()
        .find(|r| r.until > now && r.matches(entry))
        .cloned()
}

/// A runner's part of a rule: holds the claimed entry `c` until the rule's
/// end (plus its share of the spread) instead of trying it. Returns the
/// line to log.
pub fn hold_by_rule(c: Claim, rule: &Rule, now: u64) -> Result<String> {
    let id = c.id();
    let queue = c.queue().name().to_string();
    let until = until_for(id, rule.until, rule.spread);
    let hold = entry::Hold {
        by: format!("the hold rule for {} ({})", rule.domain, rule.by),
        at: now,
        reason: rule.reason.clone(),
        was_due: None,
        until: Some(until),
        rule: Some(rule.domain.clone()),
        extra: Default::default(),
    };
    put_on_hold(c, hold, now)?;
    Ok(format!(
        "{queue} {id} held until {} by the hold rule for {}",
        crate::clock::rfc3339(until),
        rule.domain
    ))
}

impl Action for Hold {
    fn verb(&self) -> &'static str {
        "held"
    }

    fn applies(&self, name: &FileName, _now: u64) -> std::result::Result<(), String> {
        match name.state {
            State::Queued => Ok(()),
            State::Held => Err("already held".into()),
            s => Err(format!("{}, not queued", s.label())),
        }
    }

    fn apply(&self, _spool: &Spool, c: Claim, now: u64) -> Result<Applied> {
        let was_due = c.entry.meta.next_attempt.filter(|d| *d > now);
        let until = self.until.map(|u| until_for(c.id(), u, self.spread));
        let hold = entry::Hold {
            by: format!("mm-hold ({})", self.actor),
            at: now,
            reason: self.reason.clone(),
            was_due,
            until,
            rule: None,
            extra: Default::default(),
        };
        put_on_hold(c, hold, now)?;
        Ok(match until {
            Some(u) => format!("until {}: {}", crate::clock::rfc3339(u), self.reason),
            None => self.reason.clone(),
        }
        .into())
    }

    fn claims_matter(&self) -> bool {
        true
    }

    fn preview(&self, _spool: &Spool, entry: &Entry, _now: u64) -> Applied {
        admin::envelope(entry).into()
    }
}

/// The release of held entries.
#[derive(Clone, Debug)]
pub struct Release {
    /// Who releases (history).
    pub actor: String,
}

impl Action for Release {
    fn verb(&self) -> &'static str {
        "released"
    }

    fn applies(&self, name: &FileName, _now: u64) -> std::result::Result<(), String> {
        match name.state {
            State::Held => Ok(()),
            s => Err(format!("{}, not held", s.label())),
        }
    }

    fn apply(&self, _spool: &Spool, mut c: Claim, now: u64) -> Result<Applied> {
        let detail = end(&mut c.entry, now, &format!("mm-release ({})", self.actor));
        c.release(None)?;
        Ok(detail.into())
    }

    fn preview(&self, _spool: &Spool, entry: &Entry, now: u64) -> Applied {
        match &entry.meta.hold {
            Some(h) => format!(
                "held {} by {}: {}; {}",
                admin::relative(h.at, now),
                h.by,
                h.reason,
                admin::envelope(entry)
            ),
            None => admin::envelope(entry),
        }
        .into()
    }
}
