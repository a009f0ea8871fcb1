//! Removing entries (mm-delete; postsuper -d, exim -Mrm), or giving up on
//! them with a bounce record (`--bounce`; postsuper -e is close, exim -Mg).
//!
//! The entry is claimed first ([`Claim::take`]), so a runner that holds it
//! is never raced: a live claim is refused (see [`admin`]).
//! Queued, deferred, held and quarantined entries can be deleted. The line of
//! each removed entry names its envelope and who removed it, since the entry
//! itself, and its history, are gone.
//!
//! With `--bounce`, the pending recipients fail with the reason
//! `given up by mm-delete (USER)`, and one bounce record for them is
//! published in bounces/ (the runner's own record, [`bounce_record`]) before
//! the entry is removed.

use crate::admin::{self, Action, Applied};
use crate::bounce::{self, bounce_record};
use crate::claim::{self, Claim};
use crate::entry::BounceReason;
use crate::entry::{Entry, RcptState};
use crate::error::Result;
use crate::id::{FileName, State};
use crate::spool::{Spool, queues};

/// The deletion.
#[derive(Clone, Debug)]
pub struct Delete {
    /// Who deletes (the log line, the bounce record).
    pub actor: String,
    /// Give up instead: a bounce record for the pending recipients.
    pub bounce: bool,
}

impl Action for Delete {
    fn verb(&self) -> &'static str {
        if self.bounce { "bounced" } else { "deleted" }
    }

    fn applies(&self, name: &FileName, _now: u64) -> std::result::Result<(), String> {
        match name.state {
            State::Queued | State::Held | State::Preserved => Ok(()),
            s => Err(format!("{}, not deletable", s.label())),
        }
    }

    fn apply(&self, spool: &Spool, mut c: Claim, now: u64) -> Result<Applied> {
        let envelope = admin::envelope(&c.entry);
        let mut detail = format!("{envelope} by {}", self.actor);
        if self.bounce {
            for r in c
                .entry
                .recipients
                .iter_mut()
                .filter(|r| r.state == RcptState::Pending)
            {
                let last = r.last_reply.take().unwrap_or_else(|| "no reply".into());
                r.state = RcptState::Failed;
                r.last_reply = Some(BounceReason::given_up_reply(&format!(
                    "by mm-delete ({}); last reply: {last}",
                    self.actor
                )));
                r.updated = Some(now);
            }
            let failed = bounce::unbounced(&c.entry);
            // The failures are durable before their record exists: killed
            // after this, the entry is recovered with its recipients failed
            // (a runner writes the same record, never delivers them).
            if !failed.is_empty() {
                c.save()?;
            }
            if failed.is_empty() {
                detail.push_str("; nothing pending, no bounce record");
            } else {
                let mut record = bounce_record(&c.queue().name().to_string(), &c.entry, &failed);
                record.note(
                    now,
                    format!("written by mm-delete --bounce ({})", self.actor),
                );
                claim::publish(&spool.queue_named(queues::BOUNCES)?, &record)?;
                crate::crashpoint::here("delete-after-publish");
                bounce::mark_bounced(&mut c.entry, &failed);
                detail.push_str(&format!(
                    "; bounce record {} for {} recipients",
                    record.id,
                    failed.len()
                ));
            }
        }
        // Nothing in the entry says it was deleted: the removal is synced,
        // so a machine crash cannot bring it back for delivery.
        c.finish_durably()?;
        Ok(detail.into())
    }

    fn claims_matter(&self) -> bool {
        true
    }

    fn preview(&self, _spool: &Spool, entry: &Entry, _now: u64) -> Applied {
        let pending = entry.pending().count();
        if self.bounce {
            format!(
                "{}; {pending} pending recipients would get a bounce record",
                admin::envelope(entry)
            )
            .into()
        } else {
            admin::envelope(entry).into()
        }
    }
}
