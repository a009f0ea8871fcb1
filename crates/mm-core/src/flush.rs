//! Making deferred entries due now (mm-flush; postqueue -f/-s/-i, exim -qff/-M).
//!
//! A deferred entry is `ID.DUE.pck` with DUE in the future, in its bucket or
//! in the queue's drop-in. Flushing claims it ([`Claim::take`]), clears its
//! next-attempt time, adds a history line, and releases it as `ID.pck` in its
//! bucket: due now, with its per-recipient progress. The next pass of any
//! runner takes it. Entries already due, claimed, held or quarantined are not
//! for flushing (see [`admin`] for the rest of the rules).
//!
//! A flush also forgets the remembered back-off of the destination the entry
//! was last tried at or deferred for ([`crate::destination`]), unless told
//! to keep it: otherwise the runner would defer the flushed entries again,
//! untried, until the back-off ends. Postfix's qmgr does the same on a
//! flush, when it revives its dead destinations.

use crate::admin::{self, Action, Applied};
use crate::claim::Claim;
use crate::destination::Destinations;
use crate::entry::Entry;
use crate::error::Result;
use crate::id::{FileName, State};
use crate::spool::Spool;

/// The flush.
#[derive(Clone, Debug)]
pub struct Flush {
    /// Who runs it (history lines).
    pub actor: String,
    /// Leave the destinations' remembered back-off alone.
    pub keep_destinations: bool,
}

impl Flush {
    /// The destination of `entry` whose back-off this flush clears, if it
    /// has one remembered.
    fn backed_off(&self, spool: &Spool, entry: &Entry) -> Option<String> {
        let d = entry.meta.destination.as_deref()?;
        (!self.keep_destinations && Destinations::view(spool).get(d).is_some()).then(|| d.into())
    }
}

impl Action for Flush {
    fn verb(&self) -> &'static str {
        "flushed"
    }

    fn applies(&self, name: &FileName, now: u64) -> std::result::Result<(), String> {
        match (name.state, name.due) {
            (State::Queued, Some(d)) if d > now => Ok(()),
            (State::Queued, _) => Err("already due".into()),
            (s, _) => Err(format!("{}, not deferred", s.label())),
        }
    }

    fn apply(&self, spool: &Spool, mut c: Claim, now: u64) -> Result<Applied> {
        let was = c.entry.meta.next_attempt.take();
        let mut detail = match was {
            Some(t) => format!("was due {}", admin::relative(t, now)),
            None => "due now".into(),
        };
        c.entry.note(
            now,
            format!("flushed by mm-flush ({}): due now", self.actor),
        );
        let pending = c.entry.pending().count();
        // Cleared before the release, so that no runner takes the entry
        // while its destination still looks backed off.
        let mut cleared = Vec::new();
        if let Some(d) = self.backed_off(spool, &c.entry)
            && Destinations::view(spool).clear(&d)?
        {
            cleared.push(d);
        }
        c.release(None)?;
        detail.push_str(&format!("; {pending} recipients pending"));
        for d in &cleared {
            detail.push_str(&format!("; back-off of {d} cleared"));
        }
        Ok(Applied {
            detail,
            destinations_cleared: Some(cleared),
        })
    }

    fn preview(&self, spool: &Spool, entry: &Entry, now: u64) -> Applied {
        let due = entry
            .meta
            .next_attempt
            .map(|t| format!("due {}", admin::relative(t, now)))
            .unwrap_or_else(|| "deferred".into());
        let mut detail = format!("{due}; {}", admin::envelope(entry));
        let cleared: Vec<String> = self.backed_off(spool, entry).into_iter().collect();
        for d in &cleared {
            detail.push_str(&format!("; back-off of {d} would be cleared"));
        }
        Applied {
            detail,
            destinations_cleared: Some(cleared),
        }
    }
}
