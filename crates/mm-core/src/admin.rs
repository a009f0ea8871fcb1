//! The admin operations on entries (mm-flush, mm-hold, mm-release,
//! mm-delete): one way to find, check and claim what they act on.
//!
//! An operation names its entries by id or, with `--all`, by the shared
//! selection flags; either way the queue is scanned whole (buckets *and* the
//! drop-in, the top directory an admin's `mv` fills), so nothing is missed
//! because of where it lies (issue 12: a hand-written flush loop over buckets
//! left 297 of 3,000 entries deferred).
//!
//! Every change goes through [`claim`]: the entry is claimed by
//! rename ([`Claim::take`]) before it is opened, changed, and then released,
//! moved or finished. A claim whose holder is alive is never touched: the
//! operation reports it `busy` and goes on. Of an operation and a runner
//! racing for a due entry, exactly one rename wins; the loser skips.
//!
//! Each entry acted on gets a history line naming the operation and who ran
//! it ([`actor`]), and the caller one [`Done`] (one line of output).

use serde::Serialize;

use crate::claim::{self, Claim, Claimed, Liveness, Registration};
use crate::clock;
use crate::entry::Entry;
use crate::error::Result;
use crate::id::{EntryId, FileName, State};
use crate::scan::{Item, Place};
use crate::select::Selector;
use crate::spool::{QueueName, Spool};

/// Which entries an operation is for.
#[derive(Clone, Debug)]
pub struct Target {
    /// The queue.
    pub queue: QueueName,
    /// These ids, or (`None`) every entry the selection matches.
    pub ids: Option<Vec<EntryId>>,
    /// The shared selection flags (narrow the ids too).
    pub select: Selector,
    /// Only report.
    pub dry_run: bool,
}

/// What happened to one entry: one line of output, one JSON object.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Done {
    /// Schema version of the JSON form.
    pub schema: u32,
    /// The operation's verb (`flushed`, `held`, …), or busy, not-found, skipped, failed.
    pub result: Outcome,
    /// The id.
    pub id: String,
    /// The queue.
    pub queue: String,
    /// Whether this was a dry run (nothing was changed).
    pub dry_run: bool,
    /// Details.
    pub detail: String,
    /// Only in mm-flush's rows: the destinations whose remembered back-off
    /// this flush cleared (or, in a dry run, would clear).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destinations_cleared: Option<Vec<String>>,
}

/// What an [`Action`] did (or would do) to one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The detail of its line.
    pub detail: String,
    /// For a flush, the destinations whose back-off it cleared; `None` for
    /// the operations that have nothing of the kind.
    pub destinations_cleared: Option<Vec<String>>,
}

impl From<String> for Applied {
    fn from(detail: String) -> Applied {
        Applied {
            detail,
            destinations_cleared: None,
        }
    }
}

/// What became of one entry; written in JSON and text as the operation's
/// verb (`flushed`, `held`, `released`, `deleted`, `bounced`), `busy`,
/// `not-found`, `skipped` or `failed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The operation was done (or, in a dry run, would be): its verb.
    Did(&'static str),
    /// Claimed by another process (alive, or dead: then mm-recover's), left alone.
    Busy,
    /// No such entry in the queue.
    NotFound,
    /// Named, but the operation does not apply or the selection leaves it out.
    Skipped,
    /// It could not be done.
    Failed,
}

impl Outcome {
    /// The word that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Did(verb) => verb,
            Outcome::Busy => "busy",
            Outcome::NotFound => "not-found",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
        }
    }

    /// The kind of failure it is for the run's exit status, if any: a
    /// missing entry is 66, one that is busy or failed 75 (worth retrying).
    pub fn failure(self) -> Option<crate::ErrorKind> {
        match self {
            Outcome::NotFound => Some(crate::ErrorKind::NotFound),
            Outcome::Busy => Some(crate::ErrorKind::Busy),
            Outcome::Failed => Some(crate::ErrorKind::Temporary),
            Outcome::Did(_) | Outcome::Skipped => None,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Done {
    /// The text form: `RESULT ID QUEUE (DETAIL)`.
    pub fn line(&self) -> String {
        let would = if self.dry_run { "would be " } else { "" };
        format!(
            "{would}{} {} {} ({})",
            self.result, self.id, self.queue, self.detail
        )
    }
}

/// One operation.
pub trait Action {
    /// The result of an entry it was done to (`flushed`).
    fn verb(&self) -> &'static str;
    /// Whether an entry whose name is `name` is one it is for; `Err` says why not.
    fn applies(&self, name: &FileName, now: u64) -> std::result::Result<(), String>;
    /// Does it to the claimed entry and disposes of the claim (release,
    /// move or finish); returns the detail of its line.
    fn apply(&self, spool: &Spool, c: Claim, now: u64) -> Result<Applied>;
    /// What a dry run's line says would be done.
    fn preview(&self, spool: &Spool, entry: &Entry, now: u64) -> Applied;
    /// Whether `--all` reports the selected entries that are claimed right
    /// now (`busy`, exit 75) rather than passing over them: for an
    /// operation whose point is that a runner must not send them (hold,
    /// delete), an admin must learn that some were out of reach. A flush or
    /// a release has nothing to do for an entry a runner is working on.
    fn claims_matter(&self) -> bool {
        false
    }
}

/// Who runs this process, for history lines and log lines: the user of the
/// effective uid (from /etc/passwd), and the one who ran `sudo`, if any.
pub fn actor() -> String {
    let uid = rustix::process::geteuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let id = f.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"));
    match std::env::var("SUDO_USER") {
        Ok(s) if !s.is_empty() && s != name => format!("{name} (sudo by {s})"),
        _ => name,
    }
}

/// The envelope of an entry as a log line shows it: `from=<S> to=<A>,<B>`.
pub fn envelope(e: &Entry) -> String {
    let to: Vec<String> = e
        .recipients
        .iter()
        .map(|r| format!("<{}>", r.address))
        .collect();
    format!("from=<{}> to={}", e.sender, to.join(","))
}

/// Runs `action` on the entries of `target`, calling `f` once per entry.
pub fn run(
    spool: &Spool,
    me: &Registration,
    target: &Target,
    action: &dyn Action,
    f: &mut dyn FnMut(Done),
) -> Result<()> {
    let queue = spool.queue(&target.queue);
    let now = clock::now_secs();
    let mut found: Vec<(FileName, Place)> = Vec::new();
    queue.scan(target.select.slice(), &mut |item| {
        if let Item::Entry { name, place, .. } = item
            && name.state != State::Writing
        {
            found.push((name, place));
        }
    })?;
    found.sort_by_key(|a| a.0.id);
    let all = target.ids.is_none();
    let wanted: Vec<EntryId> = match &target.ids {
        Some(ids) => ids.clone(),
        None => {
            let mut v: Vec<EntryId> = found
                .iter()
                .filter(|(n, _)| {
                    (action.applies(n, now).is_ok()
                        || (n.state == State::Claimed && action.claims_matter()))
                        && target.select.matches_name(n, now)
                })
                .map(|(n, _)| n.id)
                .collect();
            v.dedup();
            v
        }
    };
    let qname = target.queue.to_string();
    let mut renewed = std::time::Instant::now();
    for id in wanted {
        // A long run (a hold of a big queue) must not look dead to the
        // other hosts, who would take its claims back.
        if renewed.elapsed() >= claim::DEFAULT_LEASE / 4 {
            let _ = me.renew();
            renewed = std::time::Instant::now();
        }
        let rep_applied = |result: Outcome, a: Applied| Done {
            schema: crate::report::SCHEMA,
            result,
            id: id.to_string(),
            queue: qname.clone(),
            dry_run: target.dry_run,
            detail: a.detail,
            destinations_cleared: a.destinations_cleared,
        };
        let rep = |result: Outcome, detail: String| rep_applied(result, detail.into());
        // The name it applies to, else a claim (to say who holds it), else any.
        let mine: Vec<&(FileName, Place)> = found.iter().filter(|(n, _)| n.id == id).collect();
        let pick = mine
            .iter()
            .find(|(n, _)| action.applies(n, now).is_ok())
            .or_else(|| mine.iter().find(|(n, _)| n.state == State::Claimed))
            .or_else(|| mine.first());
        let Some((name, place)) = pick.map(|p| (*p).clone()) else {
            f(rep(Outcome::NotFound, format!("no entry {id} in {qname}")));
            continue;
        };
        if name.state == State::Claimed {
            if all && target.select.needs_content() {
                // Only the claims the selection would take are reported; a
                // file that cannot be read (it is being rewritten) counts.
                let (_, entry) = crate::report::read_for_view(&queue.found_path(&name, place));
                if entry.is_ok_and(|e| !target.select.matches_entry(&e)) {
                    continue;
                }
            }
            let holder = name.holder.clone().unwrap_or_default();
            let detail = match claim::liveness(spool, &holder, claim::DEFAULT_LEASE) {
                Liveness::Alive(h) => {
                    format!(
                        "claimed by {} pid {} ({}); left alone",
                        h.host, h.pid, h.what
                    )
                }
                Liveness::Dead(why) => {
                    format!("claimed by a dead runner ({why}); run mm-recover -q {qname}")
                }
            };
            f(rep(Outcome::Busy, detail));
            continue;
        }
        if let Err(why) = action.applies(&name, now) {
            if !all {
                f(rep(Outcome::Skipped, why));
            }
            continue;
        }
        if !target.select.matches_name(&name, now) {
            if !all {
                f(rep(Outcome::Skipped, "not selected".into()));
            }
            continue;
        }
        if target.dry_run || target.select.needs_content() {
            let (_, entry) = crate::report::read_for_view(&queue.found_path(&name, place));
            let entry = match entry {
                Ok(e) => e,
                Err(why) => {
                    f(rep(Outcome::Failed, why));
                    continue;
                }
            };
            if !target.select.matches_entry(&entry) {
                if !all {
                    f(rep(Outcome::Skipped, "not selected".into()));
                }
                continue;
            }
            if target.dry_run {
                f(rep_applied(
                    Outcome::Did(action.verb()),
                    action.preview(spool, &entry, now),
                ));
                continue;
            }
        }
        let done = match Claim::take(spool, &queue, &name, place, me.token()) {
            Ok(Claimed::Entry(c)) => {
                let claimed = c.path().to_path_buf();
                match action.apply(spool, *c, now) {
                    Ok(applied) => rep_applied(Outcome::Did(action.verb()), applied),
                    Err(e) => {
                        // Never left stranded under our token (recovery
                        // would count it against the entry): back under the
                        // name it was found with, if the claim is still there.
                        let detail =
                            match claim::put_back_found(&queue, me.token(), &claimed, &name) {
                                Ok(true) => format!("{e}; left as it was"),
                                Ok(false) => e.to_string(),
                                Err(back) => format!("{e}; and {back}: run mm-recover -q {qname}"),
                            };
                        rep(Outcome::Failed, detail)
                    }
                }
            }
            Ok(Claimed::Lost) => rep(
                Outcome::Busy,
                "taken by another process while we looked (a runner?)".into(),
            ),
            Ok(Claimed::Quarantined(why)) => {
                rep(Outcome::Failed, format!("quarantined in bad: {why}"))
            }
            Err(e) => rep(Outcome::Failed, e.to_string()),
        };
        f(done);
    }
    Ok(())
}

/// How long ago (or from now) `t` is, for details: `in 42m`, `3h ago`.
pub fn relative(t: u64, now: u64) -> String {
    let d = |s: u64| humantime::format_duration(std::time::Duration::from_secs(s)).to_string();
    if t > now {
        format!("in {}", d(t - now))
    } else {
        format!("{} ago", d(now - t))
    }
}
