//! Taking back what dead runners held, and cleaning what they left.
//!
//! For each claimed entry (`ID.TOKEN.bak`) of the queue's slice:
//!
//! * holder alive (see claim.rs): reported **busy** and left alone;
//! * holder dead: taken over by a rename to our own token (so two recoveries
//!   cannot both take it), its recovery count raised and a history line added,
//!   its per-recipient progress kept, and put back as queued; once recovered
//!   more than `max_recoveries` times it goes to bad/ with the reason
//!   "crashed its runner N times" (a poison message must not stop the queue).
//!
//! `ID.tmp` files older than `tmp_age` were never acknowledged (mm-enqueue did
//! not exit 0), so removing them loses nothing. A runner's `ID.TOKEN.tmp` is
//! removed once its holder is dead. Foreign files are reported, never touched.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::claim::{self, Claim, Claimed, Liveness, Registration};
use crate::clock;
use crate::error::Result;
use crate::id::{FileName, State};
use crate::scan::Item;
use crate::select::Selector;
use crate::spool::{Queue, Spool, queues};

/// Settings of a recovery.
#[derive(Clone, Debug)]
pub struct RecoverOptions {
    /// Which claims and temporary files to consider (the shared selection flags).
    pub select: Selector,
    /// Recoveries allowed before quarantine.
    pub max_recoveries: u32,
    /// Age after which an orphaned `.tmp` is removed.
    pub tmp_age: Duration,
    /// Lease of claims held by other hosts.
    pub lease: Duration,
    /// Only report.
    pub dry_run: bool,
}

impl Default for RecoverOptions {
    fn default() -> RecoverOptions {
        RecoverOptions {
            select: Selector::default(),
            max_recoveries: 3,
            tmp_age: Duration::from_secs(3600),
            lease: claim::DEFAULT_LEASE,
            dry_run: false,
        }
    }
}

/// What recovery did with one file; written in JSON and text as
/// `recovered`, `quarantined`, `busy`, `removed-tmp`, `foreign`, `failed`.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A dead runner's claim, taken back and put back as queued.
    Recovered,
    /// A dead runner's claim that went to bad/.
    Quarantined,
    /// A live runner's claim, left alone.
    Busy,
    /// A temporary file nobody will finish, removed.
    RemovedTmp,
    /// A file that is not the spool's, left alone.
    Foreign,
    /// Something could not be done (the run exits 75).
    Failed,
}

impl Verdict {
    /// Every verdict, in the order the text summary counts them.
    pub const ALL: [Verdict; 6] = [
        Verdict::Recovered,
        Verdict::Quarantined,
        Verdict::Busy,
        Verdict::RemovedTmp,
        Verdict::Foreign,
        Verdict::Failed,
    ];

    /// The word that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Recovered => "recovered",
            Verdict::Quarantined => "quarantined",
            Verdict::Busy => "busy",
            Verdict::RemovedTmp => "removed-tmp",
            Verdict::Foreign => "foreign",
            Verdict::Failed => "failed",
        }
    }

    /// The kind of failure it is for the run's exit status, if any.
    pub fn failure(self) -> Option<crate::ErrorKind> {
        (self == Verdict::Failed).then_some(crate::ErrorKind::Temporary)
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many of each [`Verdict`] a run gave, and so its exit status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary(std::collections::BTreeMap<Verdict, u64>);

impl Summary {
    /// Counts one.
    pub fn count(&mut self, v: Verdict) {
        *self.0.entry(v).or_default() += 1;
    }

    /// How many of `v`.
    pub fn get(&self, v: Verdict) -> u64 {
        self.0.get(&v).copied().unwrap_or(0)
    }

    /// The run's exit status: 75 if anything failed, else 0.
    pub fn exit_code(&self) -> u8 {
        crate::error::batch_exit_code(self.0.keys().filter_map(|v| v.failure()))
    }
}

/// One thing recovery did (or, with `dry_run`, would do).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Action {
    /// Schema version of the JSON form.
    pub schema: u32,
    /// What was done.
    pub action: Verdict,
    /// The queue.
    pub queue: String,
    /// The entry id, if it is an entry.
    pub id: Option<String>,
    /// The file.
    pub path: PathBuf,
    /// Details: the holder, the reason.
    pub detail: String,
}

/// Recovers one queue's slice. `me` is the caller's own registration: its
/// claims are never touched, and takeovers are made in its name. Returns the
/// tokens of the live holders seen (see [`prune_records`]).
pub fn recover_queue(
    spool: &Spool,
    queue: &Queue,
    me: &Registration,
    opts: &RecoverOptions,
    f: &mut dyn FnMut(Action),
) -> Result<BTreeSet<String>> {
    let mut live = BTreeSet::new();
    let mut found = Vec::new();
    queue.scan(opts.select.slice(), &mut |item| match item {
        Item::Entry { name, place, .. }
            if matches!(name.state, State::Claimed | State::Writing) =>
        {
            found.push((name, place))
        }
        Item::Foreign { path, why } => f(Action {
            schema: crate::report::SCHEMA,
            action: Verdict::Foreign,
            queue: queue.name().to_string(),
            id: None,
            path,
            detail: format!("{why}; left alone"),
        }),
        _ => {}
    })?;
    let now = clock::now();
    // One verdict per holder and sweep (a lease check touches a probe file).
    let mut verdicts: std::collections::HashMap<String, Liveness> = Default::default();
    let mut liveness = |token: &str| {
        verdicts
            .entry(token.to_string())
            .or_insert_with(|| claim::liveness(spool, token, opts.lease))
            .clone()
    };
    for (name, place) in found {
        let path = queue.found_path(&name, place);
        let act = |action, detail: String| Action {
            schema: crate::report::SCHEMA,
            action,
            queue: queue.name().to_string(),
            id: Some(name.id.to_string()),
            path: path.clone(),
            detail,
        };
        let holder = name.holder.clone().unwrap_or_default();
        if holder == me.token() || !opts.select.matches_name(&name, clock::unix_secs(now)) {
            continue;
        }
        if opts.select.needs_content() {
            // A temporary file has no content to select by: it is left alone.
            let selected = name.state == State::Claimed
                && match crate::report::read_for_view(&path).1 {
                    Ok(e) => opts.select.matches_entry(&e),
                    Err(why) => opts.select.matches_unreadable(&why),
                };
            if !selected {
                continue;
            }
        }
        if name.state == State::Writing {
            let stale = if name.holder.is_some() {
                matches!(liveness(&holder), Liveness::Dead(_))
            } else {
                std::fs::symlink_metadata(&path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > opts.tmp_age)
            };
            if stale {
                if !opts.dry_run
                    && let Err(e) = std::fs::remove_file(&path)
                {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        f(act(Verdict::Failed, format!("cannot remove: {e}")));
                    }
                    continue;
                }
                f(act(
                    Verdict::RemovedTmp,
                    "never acknowledged; nothing is lost".into(),
                ));
            }
            continue;
        }
        match liveness(&holder) {
            Liveness::Alive(h) => {
                live.insert(holder.clone());
                f(act(
                    Verdict::Busy,
                    format!("held by {} pid {} ({})", h.host, h.pid, h.what),
                ))
            }
            Liveness::Dead(why) => {
                if opts.dry_run {
                    // Say what the real run would do, from the content.
                    let (action, detail) = match crate::report::read_for_view(&path).1 {
                        Ok(e) if e.meta.recoveries + 1 > opts.max_recoveries => (
                            Verdict::Quarantined,
                            format!(
                                "would go to bad: crashed its runner {} times ({why})",
                                e.meta.recoveries + 1
                            ),
                        ),
                        Ok(e) => (
                            Verdict::Recovered,
                            format!(
                                "would be taken back ({why}); recovery {} of {}",
                                e.meta.recoveries + 1,
                                opts.max_recoveries
                            ),
                        ),
                        Err(err) => (
                            Verdict::Quarantined,
                            format!("would go to bad: {err} ({why})"),
                        ),
                    };
                    f(act(action, detail));
                    continue;
                }
                match take_back(spool, queue, &name, place, me, opts, &why) {
                    Ok(Some((action, detail))) => f(act(action, detail)),
                    Ok(None) => {}
                    Err(e) => f(act(Verdict::Failed, e.to_string())),
                }
            }
        }
    }
    Ok(live)
}

/// Removes the runner records of dead holders that hold nothing any more,
/// after a sweep of every queue has taken their claims back; `live` is the
/// union of what [`recover_queue`] returned. Returns the tokens removed.
pub fn prune_records(
    spool: &Spool,
    me: &Registration,
    live: &BTreeSet<String>,
    lease: Duration,
) -> Vec<String> {
    let dir = spool.root().join(".runners");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for de in rd.flatten() {
        let Some(token) = de.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // A progress file whose record is gone (a runner killed between
        // the two removals): nobody's, and shown by nothing.
        if let Some(owner) = token
            .strip_suffix(".progress")
            .or_else(|| token.strip_suffix(".progress.tmp"))
            && crate::id::is_token(owner.as_bytes())
            && owner != me.token()
            && !live.contains(owner)
            && std::fs::symlink_metadata(dir.join(owner)).is_err()
        {
            let _ = std::fs::remove_file(de.path());
            continue;
        }
        if token == me.token() || live.contains(&token) || !crate::id::is_token(token.as_bytes()) {
            continue;
        }
        if matches!(claim::liveness(spool, &token, lease), Liveness::Dead(_))
            && std::fs::remove_file(de.path()).is_ok()
        {
            crate::progress::remove(spool, &token);
            removed.push(token);
        }
    }
    removed
}

/// Takes back one dead runner's claim: what it did (action, detail), or
/// `None` when another process got the entry first.
fn take_back(
    spool: &Spool,
    queue: &Queue,
    name: &FileName,
    place: crate::scan::Place,
    me: &Registration,
    opts: &RecoverOptions,
    why: &str,
) -> Result<Option<(Verdict, String)>> {
    let claimed = match Claim::take(spool, queue, name, place, me.token())? {
        Claimed::Lost => return Ok(None),
        Claimed::Quarantined(reason) => return Ok(Some((Verdict::Quarantined, reason))),
        Claimed::Entry(c) => c,
    };
    let c = *claimed;
    let (id, path) = (c.id(), c.path().to_path_buf());
    let result = settle(spool, queue, c, opts, why);
    if result.is_err() {
        // Never stranded under our token (a full disk, say): back as it was,
        // its recovery not counted, for the next recovery or runner.
        let _ = if is_quarantine(queue) {
            claim::put_back_preserved(queue, id, me.token(), &path)
        } else {
            claim::put_back(queue, id, me.token(), &path, None)
        };
    }
    result.map(Some)
}

/// Whether `queue` is bad/ or shunt/, whose entries stay preserved.
fn is_quarantine(queue: &Queue) -> bool {
    [queues::BAD, queues::SHUNT].contains(&queue.name().as_str())
}

/// Counts a taken-back entry's recovery and puts it where it belongs.
fn settle(
    spool: &Spool,
    queue: &Queue,
    mut c: Claim,
    opts: &RecoverOptions,
    why: &str,
) -> Result<(Verdict, String)> {
    let now = clock::now_secs();
    c.entry.meta.recoveries += 1;
    let n = c.entry.meta.recoveries;
    c.entry.note(
        now,
        format!("recovered from a dead runner ({why}); recovery {n}"),
    );
    if n > opts.max_recoveries {
        let reason = format!("crashed its runner {n} times");
        c.quarantine(spool, queues::BAD, &reason)?;
        return Ok((Verdict::Quarantined, reason));
    }
    if is_quarantine(queue) {
        // An mm-unbad (or a quarantine) that died half-way: the entry stays
        // quarantined where it was, never becomes a queued entry that no runner
        // of bad/ or shunt/ would ever see.
        if c.entry.meta.quarantine.is_none() {
            c.entry.meta.quarantine = Some(crate::entry::Quarantine {
                reason: "an interrupted release; run mm-unbad again".into(),
                at: now,
                from_queue: c.entry.meta.queue.clone(),
                extra: Default::default(),
            });
        }
        c.preserve()?;
        return Ok((
            Verdict::Recovered,
            format!("{why}; kept preserved in {}", queue.name()),
        ));
    }
    if let Some(until) = c.entry.meta.hold.as_ref().map(|h| h.until) {
        // An mm-hold that died between saving its record and its rename (or
        // an mm-release that died before saving): the saved content says
        // held, so the entry goes back held, never queued with a stale hold
        // record that mm-showq would show and no runner would honour.
        let q = c.queue().clone();
        c.move_to(&q, State::Held, until)?;
        return Ok((
            Verdict::Recovered,
            format!("{why}; kept held, as its record says"),
        ));
    }
    c.release(None)?;
    Ok((
        Verdict::Recovered,
        format!("{why}; recovery {n} of {}", opts.max_recoveries),
    ))
}
