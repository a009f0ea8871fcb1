//! Returning quarantined entries to work (mm-unbad).
//!
//! A preserved entry (`ID.psv` in bad/ or shunt/) is claimed like any other
//! (renamed to `ID.TOKEN.bak`, so two mm-unbad runs cannot both act on it),
//! its recovery count is reset, its quarantine record cleared and a history
//! line added, and it is renamed into the queue it came from (or `--to`) as
//! queued and due now. Its per-recipient progress and its history stay, so it
//! resumes where it stopped instead of being re-quarantined at once (seed 004:
//! Mailman's moved-back entries kept their crash count).
//!
//! A wrapper for a file that could not be decoded gives back the original
//! bytes exactly, as the queued entry, for a newer mm or a fixed decoder.

use serde::Serialize;

use crate::claim::{self, Claim, Claimed, Liveness, Registration};
use crate::clock;
use crate::error::Result;
use crate::id::{EntryId, FileName, State};
use crate::scan::{Item, Place};
use crate::select::Selector;
use crate::spool::{QueueName, Spool};

/// Settings of a release.
#[derive(Clone, Debug)]
pub struct UnbadOptions {
    /// The quarantine queue: bad or shunt.
    pub from: QueueName,
    /// Where to, instead of the queue each entry came from.
    pub to: Option<QueueName>,
    /// Which entries (the shared selection flags).
    pub select: Selector,
    /// Only report.
    pub dry_run: bool,
}

/// What became of one id; written in JSON and text as `released`, `busy`,
/// `not-found`, `failed` (and `skipped`, for an id named but not selected).
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Returned to its queue (or, with `dry_run`, would be).
    Released,
    /// Held by a runner, left alone.
    Busy,
    /// No such entry in the queue.
    NotFound,
    /// It could not be released.
    Failed,
    /// Named, but the selection leaves it out.
    Skipped,
}

impl Outcome {
    /// The word that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Released => "released",
            Outcome::Busy => "busy",
            Outcome::NotFound => "not-found",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }

    /// The kind of failure it is for the run's exit status, if any: a
    /// missing entry is 66, one that is busy or failed 75 (worth retrying).
    pub fn failure(self) -> Option<crate::ErrorKind> {
        match self {
            Outcome::NotFound => Some(crate::ErrorKind::NotFound),
            Outcome::Busy => Some(crate::ErrorKind::Busy),
            Outcome::Failed => Some(crate::ErrorKind::Temporary),
            Outcome::Released | Outcome::Skipped => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one id.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Released {
    /// Schema version of the JSON form.
    pub schema: u32,
    /// The id.
    pub id: String,
    /// What became of it.
    pub result: Outcome,
    /// The queue it went (or would go) to.
    pub queue: Option<String>,
    /// Details.
    pub detail: String,
}

impl Released {
    fn new(id: EntryId, result: Outcome, queue: Option<String>, detail: String) -> Released {
        Released {
            schema: crate::report::SCHEMA,
            id: id.to_string(),
            result,
            queue,
            detail,
        }
    }
}

/// Releases `ids` (or, with `None`, every preserved entry) from `opts.from`.
pub fn unbad(
    spool: &Spool,
    me: &Registration,
    ids: Option<&[EntryId]>,
    opts: &UnbadOptions,
    f: &mut dyn FnMut(Released),
) -> Result<()> {
    let from = spool.queue(&opts.from);
    let mut found: Vec<(FileName, Place)> = Vec::new();
    let now = clock::now_secs();
    from.scan(opts.select.slice(), &mut |item| {
        if let Item::Entry { name, place, .. } = item
            && matches!(name.state, State::Preserved | State::Claimed)
        {
            found.push((name, place));
        }
    })?;
    found.sort_by_key(|a| a.0.id);
    let wanted: Vec<EntryId> = match ids {
        Some(ids) => ids.to_vec(),
        None => found
            .iter()
            .filter(|(n, _)| n.state == State::Preserved && opts.select.matches_name(n, now))
            .map(|(n, _)| n.id)
            .collect(),
    };
    for id in wanted {
        let rep = |result, queue, detail| Released::new(id, result, queue, detail);
        let Some((name, place)) = found
            .iter()
            .find(|(n, _)| n.id == id && n.state == State::Preserved)
            .or_else(|| found.iter().find(|(n, _)| n.id == id))
            .cloned()
        else {
            f(rep(
                Outcome::NotFound,
                None,
                format!("no entry {id} in {}", opts.from),
            ));
            continue;
        };
        if name.state == State::Claimed {
            let holder = name.holder.clone().unwrap_or_default();
            let detail = match claim::liveness(spool, &holder, claim::DEFAULT_LEASE) {
                Liveness::Alive(h) => format!("held by {} pid {} ({})", h.host, h.pid, h.what),
                Liveness::Dead(why) => format!(
                    "claimed by a dead runner ({why}); run mm-recover -q {}",
                    opts.from
                ),
            };
            f(rep(Outcome::Busy, None, detail));
            continue;
        }
        match release_one(spool, me, &name, place, opts, now) {
            // With --all, what the selection leaves out is simply not listed.
            Ok(r) if r.result == Outcome::Skipped && ids.is_none() => {}
            Ok(r) => f(r),
            Err(e) => f(rep(Outcome::Failed, None, e.to_string())),
        }
    }
    Ok(())
}

fn release_one(
    spool: &Spool,
    me: &Registration,
    name: &FileName,
    place: Place,
    opts: &UnbadOptions,
    now: u64,
) -> Result<Released> {
    let from = spool.queue(&opts.from);
    let id = name.id;
    let rep = |result, queue, detail| Released::new(id, result, queue, detail);
    if !opts.select.matches_name(name, now) {
        return Ok(rep(Outcome::Skipped, None, "not selected".into()));
    }
    if opts.dry_run || opts.select.needs_content() {
        // Look before claiming: the destination and the selection come from the content.
        let (_, entry) = crate::report::read_for_view(&from.found_path(name, place));
        let entry = match entry {
            Ok(e) => e,
            Err(why) => return Ok(rep(Outcome::Failed, None, why)),
        };
        if !opts.select.matches_entry(&entry) {
            return Ok(rep(Outcome::Skipped, None, "not selected".into()));
        }
        let q = entry.meta.quarantine.as_ref();
        if opts.dry_run {
            let dest = opts
                .to
                .as_ref()
                .map(|t| t.to_string())
                .or(q.map(|q| q.from_queue.clone()))
                .unwrap_or(entry.meta.queue.clone());
            return Ok(rep(
                Outcome::Released,
                Some(dest.clone()),
                format!("would return to {dest}"),
            ));
        }
    }
    let c = match Claim::take(spool, &from, name, place, me.token())? {
        Claimed::Lost => {
            return Ok(rep(
                Outcome::NotFound,
                None,
                "moved away while we looked".into(),
            ));
        }
        Claimed::Quarantined(reason) => return Ok(rep(Outcome::Failed, None, reason)),
        Claimed::Entry(c) => *c,
    };
    let mut c = c;
    let dest_name = match &opts.to {
        Some(t) => t.clone(),
        None => {
            let q = c
                .entry
                .meta
                .quarantine
                .as_ref()
                .map(|q| q.from_queue.clone())
                .unwrap_or(c.entry.meta.queue.clone());
            match QueueName::new(&q) {
                Ok(n) => n,
                Err(e) => {
                    c.preserve()?;
                    return Ok(rep(
                        Outcome::Failed,
                        None,
                        format!("cannot tell where it came from: {e}; use --to"),
                    ));
                }
            }
        }
    };
    let dest = spool.queue(&dest_name);
    if let Some(orig) = c.entry.original.take() {
        // A wrapper: give back the bytes exactly as they were.
        c.restore(&dest, &orig)?;
        return Ok(rep(
            Outcome::Released,
            Some(dest_name.to_string()),
            "original bytes restored".into(),
        ));
    }
    let reason = c
        .entry
        .meta
        .quarantine
        .take()
        .map(|q| q.reason)
        .unwrap_or_default();
    c.entry.meta.recoveries = 0;
    c.entry.meta.next_attempt = None;
    c.entry.note(
        now,
        format!(
            "released from {} to {dest_name} by mm-unbad (was: {reason})",
            opts.from
        ),
    );
    c.move_to(&dest, State::Queued, None)?;
    Ok(rep(
        Outcome::Released,
        Some(dest_name.to_string()),
        format!("was: {reason}"),
    ))
}
