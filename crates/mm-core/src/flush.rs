//! Making deferred entries due now (mm-flush; postqueue -f/-s/-i, exim -qff/-M).
//!
//! A deferred entry is `ID.DUE.pck` with DUE in the future, in its bucket or
//! in the queue's drop-in. Flushing claims it ([`Claim::take`]), clears its
//! next-attempt time, adds a history line, and releases it as `ID.pck` in its
//! bucket: due now, with its per-recipient progress. The next pass of any
//! runner takes it. Entries already due, claimed, held or quarantined are not
//! for flushing (see [`admin`] for the rest of the rules).

use crate::admin::{self, Action};
use crate::claim::Claim;
use crate::entry::Entry;
use crate::error::Result;
use crate::id::{FileName, State};
use crate::spool::Spool;

/// The flush.
#[derive(Clone, Debug)]
pub struct Flush {
    /// Who runs it (history lines).
    pub actor: String,
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

    fn apply(&self, _spool: &Spool, mut c: Claim, now: u64) -> Result<String> {
        let was = c.entry.meta.next_attempt.take();
        let detail = match was {
            Some(t) => format!("was due {}", admin::relative(t, now)),
            None => "due now".into(),
        };
        c.entry.note(
            now,
            format!("flushed by mm-flush ({}): due now", self.actor),
        );
        let pending = c.entry.pending().count();
        c.release(None)?;
        Ok(format!("{detail}; {pending} recipients pending"))
    }

    fn preview(&self, entry: &Entry, now: u64) -> String {
        let due = entry
            .meta
            .next_attempt
            .map(|t| format!("due {}", admin::relative(t, now)))
            .unwrap_or_else(|| "deferred".into());
        format!("{due}; {}", admin::envelope(entry))
    }
}
