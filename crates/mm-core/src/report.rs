//! What the inspection tools print: one schema, rendered for people and as JSON.
//!
//! mm-showq and mm-dumpdb (and the JSON of mm-recover and mm-unbad) use the
//! same field names: `id`, `queue`, `state`, `attempts`, `next_attempt`,
//! `last_error`, `claim_holder`, and per recipient `address`, `state`,
//! `attempts`, `last_reply`. The schema is documented, with its version
//! [`SCHEMA`], in `docs/json.md`; a field is never renamed within a version.

use std::path::Path;

use serde::Serialize;

use crate::claim::{self, Holder, Liveness};
use crate::clock;
use crate::entry::{Entry, RcptState};
use crate::id::{FileName, State};
use crate::scan::{Item, Place};
use crate::select::Selector;
use crate::spool::{Queue, Spool};

/// Version of the JSON schema.
pub const SCHEMA: u32 = 1;

/// Counts for one queue, from names alone (no entry is opened).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct QueueSummary {
    /// Schema version.
    pub schema: u32,
    /// The queue.
    pub queue: String,
    /// Queued and due now.
    pub queued: u64,
    /// Queued, deferred to a later time.
    pub deferred: u64,
    /// Claimed by a runner (`.bak`).
    pub claimed: u64,
    /// Quarantined (`.psv`).
    pub preserved: u64,
    /// Held by an admin (`.hld`).
    pub held: u64,
    /// Being written (`.tmp`).
    pub writing: u64,
    /// Files that are not entries (left alone; see mm-recover).
    pub foreign: u64,
    /// Enqueue time of the oldest entry (Unix seconds).
    pub oldest: Option<u64>,
    /// Total size of the entry files; only when asked for (one `stat` per
    /// entry, which is most of the cost of a summary of a big queue).
    pub bytes: Option<u64>,
}

/// Counts the entries of `queue` that `sel` selects, at time `now`. With only
/// name flags (state, age, slice) no entry is opened, nor, without `sizes`,
/// even looked at; content flags read each candidate read-only.
pub fn summarize(
    queue: &Queue,
    sel: &Selector,
    now: u64,
    sizes: bool,
) -> crate::Result<QueueSummary> {
    let mut s = QueueSummary {
        schema: SCHEMA,
        queue: queue.name().to_string(),
        bytes: sizes.then_some(0),
        ..Default::default()
    };
    let content = sel.needs_content();
    queue.scan_with(sel.slice(), sizes, &mut |item| match item {
        Item::Entry { name, size, place } => {
            if !sel.matches_name(&name, now) {
                return;
            }
            if content {
                let path = queue.found_path(&name, place);
                match read_for_view(&path).1 {
                    Ok(e) if sel.matches_entry(&e) => {}
                    Ok(_) => return,
                    Err(why) if sel.matches_unreadable(&why) => {}
                    Err(_) => return,
                }
            }
            match name.state {
                State::Queued if name.due.is_some_and(|d| d > now) => s.deferred += 1,
                State::Queued => s.queued += 1,
                State::Claimed => s.claimed += 1,
                State::Preserved => s.preserved += 1,
                State::Held => s.held += 1,
                State::Writing => s.writing += 1,
            }
            let t = name.id.secs();
            s.oldest = Some(s.oldest.map_or(t, |o| o.min(t)));
            if let Some(b) = &mut s.bytes {
                *b += size.unwrap_or(0);
            }
        }
        Item::Foreign { .. } => s.foreign += 1,
    })?;
    Ok(s)
}

/// The entries of `queue` that `sel` selects, oldest first, with their
/// content (or why it could not be read). Entries that move away while being
/// listed are left out.
pub fn select_entries(queue: &Queue, sel: &Selector, now: u64) -> crate::Result<Vec<Selected>> {
    let mut found = Vec::new();
    queue.scan(sel.slice(), &mut |item| {
        if let Item::Entry { name, place, .. } = item
            && sel.matches_name(&name, now)
        {
            found.push((name, place));
        }
    })?;
    found.sort_by_key(|(n, _)| n.id);
    let mut out = Vec::with_capacity(found.len());
    for (name, place) in found {
        let path = queue.found_path(&name, place);
        let Ok((size, entry)) = read_unless_gone(&path) else {
            continue;
        };
        let keep = match &entry {
            Ok(e) => sel.matches_entry(e),
            Err(why) => sel.matches_unreadable(why),
        };
        if keep {
            out.push(Selected {
                name,
                path,
                size,
                entry,
            });
        }
    }
    Ok(out)
}

/// One selected entry file.
#[derive(Debug)]
pub struct Selected {
    /// Its name.
    pub name: FileName,
    /// Its path.
    pub path: std::path::PathBuf,
    /// Its size.
    pub size: u64,
    /// Its content, or why it could not be read.
    pub entry: Result<Entry, String>,
}

/// The state an entry is shown in (and selected by, `--state`): its file
/// name's [`State`], with a queued entry not yet due shown as deferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShownState {
    /// `.pck`, due.
    Queued,
    /// `.pck`, due later.
    Deferred,
    /// `.bak`.
    Claimed,
    /// `.psv`.
    Preserved,
    /// `.hld`: held by an admin.
    Held,
    /// `.tmp`.
    Writing,
}

impl ShownState {
    /// Every state, in the order `--state` lists them.
    pub const ALL: [ShownState; 6] = [
        ShownState::Queued,
        ShownState::Deferred,
        ShownState::Claimed,
        ShownState::Preserved,
        ShownState::Held,
        ShownState::Writing,
    ];

    /// The state of the entry named `name` at time `now`.
    pub fn of(name: &FileName, now: u64) -> ShownState {
        match name.state {
            State::Queued if name.due.is_some_and(|d| d > now) => ShownState::Deferred,
            State::Queued => ShownState::Queued,
            State::Claimed => ShownState::Claimed,
            State::Preserved => ShownState::Preserved,
            State::Held => ShownState::Held,
            State::Writing => ShownState::Writing,
        }
    }

    /// The word shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ShownState::Deferred => "deferred",
            ShownState::Queued => State::Queued.label(),
            ShownState::Claimed => State::Claimed.label(),
            ShownState::Preserved => State::Preserved.label(),
            ShownState::Held => State::Held.label(),
            ShownState::Writing => State::Writing.label(),
        }
    }
}

impl std::str::FromStr for ShownState {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<ShownState> {
        ShownState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| crate::Error::new(crate::ErrorKind::Usage, format!("no state {s:?}")))
    }
}

/// Folds a message onto one line.
pub fn one_line(s: &str) -> String {
    s.split(['\n', '\r'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The state shown for a file name: `deferred` for a queued entry not yet due.
pub fn state_label(name: &FileName, now: u64) -> &'static str {
    ShownState::of(name, now).as_str()
}

/// Who holds a claim, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct HolderView {
    /// The runner's token.
    pub token: String,
    /// Host, pid and what it is, when its record is readable.
    pub host: Option<String>,
    /// Process id.
    pub pid: Option<u32>,
    /// What it is.
    pub what: Option<String>,
    /// Since when it runs (RFC 3339).
    pub since: Option<String>,
    /// Whether it is alive.
    pub alive: bool,
    /// Why it is considered dead.
    pub dead_because: Option<String>,
}

/// Looks up the holder of a claim.
pub fn holder_view(spool: &Spool, token: &str) -> HolderView {
    let (h, alive, why): (Option<Holder>, bool, Option<String>) =
        match claim::liveness(spool, token, claim::DEFAULT_LEASE) {
            Liveness::Alive(h) => (Some(h), true, None),
            Liveness::Dead(why) => (None, false, Some(why)),
        };
    HolderView {
        token: token.to_string(),
        host: h.as_ref().map(|h| h.host.clone()),
        pid: h.as_ref().map(|h| h.pid),
        what: h.as_ref().map(|h| h.what.clone()),
        since: h.as_ref().map(|h| clock::rfc3339(h.since)),
        alive,
        dead_because: why,
    }
}

/// One recipient, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct RcptView {
    /// Address.
    pub address: String,
    /// pending, delivered or failed.
    pub state: RcptState,
    /// Attempts for it.
    pub attempts: u32,
    /// Last reply.
    pub last_reply: Option<String>,
}

/// Quarantine details, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct QuarantineView {
    /// Why.
    pub reason: String,
    /// When (RFC 3339).
    pub at: String,
    /// From which queue.
    pub from_queue: String,
}

/// An admin's hold, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct HoldView {
    /// Who held it.
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
    /// Why.
    pub reason: String,
}

/// A bounce record's origin, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct BounceView {
    /// The entry whose recipients failed.
    pub original_id: String,
    /// Its queue.
    pub original_queue: String,
    /// refused, expired, or given up (mm-delete --bounce).
    pub reason: String,
}

/// One entry, as shown by mm-showq (one line) and mm-dumpdb (whole).
#[derive(Clone, Debug, Serialize)]
pub struct EntryView {
    /// Schema version.
    pub schema: u32,
    /// The id.
    pub id: String,
    /// The queue it is in.
    pub queue: String,
    /// queued, deferred, claimed, preserved, writing.
    pub state: String,
    /// The file.
    pub path: String,
    /// Size of the entry file.
    pub size: u64,
    /// Enqueue time (RFC 3339).
    pub received: String,
    /// Age in seconds.
    pub age_secs: u64,
    /// Envelope sender ("" for <>).
    pub sender: Option<String>,
    /// Number of recipients.
    pub recipient_count: Option<usize>,
    /// The first recipient.
    pub first_recipient: Option<String>,
    /// Delivery attempts.
    pub attempts: Option<u32>,
    /// When the next attempt is due (RFC 3339), for a deferred entry.
    pub next_attempt: Option<String>,
    /// The first delivery attempt (RFC 3339).
    pub first_attempt: Option<String>,
    /// When its pending recipients are given up on (RFC 3339): the first
    /// attempt plus the give-up period (the runner's rule, `retry.rs`).
    pub give_up_at: Option<String>,
    /// The last error, or the quarantine reason.
    pub last_error: Option<String>,
    /// Mailing list.
    pub list: Option<String>,
    /// Times taken back from a dead runner.
    pub recoveries: Option<u32>,
    /// Pipeline position.
    pub stage: Option<u32>,
    /// The slice of the entry for the N asked (`--slice K/N` listings).
    pub slice: Option<String>,
    /// Who holds it, for a claimed entry.
    pub claim_holder: Option<HolderView>,
    /// Quarantine details.
    pub quarantine: Option<QuarantineView>,
    /// Who held it, when and why; only in held entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
    /// Free-form metadata.
    pub meta: Option<std::collections::BTreeMap<String, String>>,
    /// For a bounce record: the entry it came from, its queue, and why
    /// (`refused`, `expired` or `given up`).
    pub bounce: Option<BounceView>,
    /// Every recipient: its state, attempts and last reply.
    pub recipients: Option<Vec<RcptView>>,
    /// History lines (mm-dumpdb).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<String>>,
    /// Why the content could not be read, if it could not.
    pub error: Option<String>,
    /// The due time (Unix seconds), for printing.
    #[serde(skip)]
    pub due: Option<u64>,
}

/// Builds the view of an entry file. `entry` is `Err` when it could not be
/// decoded; `give_up` is the give-up period its deadline is shown for;
/// `detail` adds the history.
#[allow(clippy::too_many_arguments)]
pub fn view(
    spool: &Spool,
    queue: &str,
    name: &FileName,
    path: &Path,
    size: u64,
    entry: Result<&Entry, String>,
    now: u64,
    give_up: std::time::Duration,
    detail: bool,
) -> EntryView {
    let mut v = EntryView {
        schema: SCHEMA,
        id: name.id.to_string(),
        queue: queue.to_string(),
        state: state_label(name, now).to_string(),
        path: path.display().to_string(),
        size,
        received: clock::rfc3339(name.id.secs()),
        age_secs: now.saturating_sub(name.id.secs()),
        sender: None,
        recipient_count: None,
        first_recipient: None,
        attempts: None,
        next_attempt: name.due.filter(|d| *d > now).map(clock::rfc3339),
        first_attempt: None,
        give_up_at: None,
        last_error: None,
        list: None,
        recoveries: None,
        stage: None,
        slice: None,
        claim_holder: name
            .holder
            .as_deref()
            .filter(|_| name.state == State::Claimed)
            .map(|t| holder_view(spool, t)),
        quarantine: None,
        hold: None,
        meta: None,
        bounce: None,
        recipients: None,
        history: None,
        error: None,
        due: name.due,
    };
    match entry {
        Ok(e) => {
            v.sender = Some(e.sender.clone());
            v.recipient_count = Some(e.recipients.len());
            v.first_recipient = e.recipients.first().map(|r| r.address.clone());
            v.attempts = Some(e.meta.attempts);
            v.first_attempt = e.meta.first_attempt.map(clock::rfc3339);
            v.give_up_at = e
                .meta
                .first_attempt
                .map(|f| clock::rfc3339(crate::retry::give_up_at(give_up, f)));
            v.last_error = e.reason().map(str::to_string);
            v.list = e.meta.list.clone();
            v.recoveries = Some(e.meta.recoveries);
            v.stage = Some(e.stage_in(&v.queue));
            v.quarantine = e.meta.quarantine.as_ref().map(|q| QuarantineView {
                reason: q.reason.clone(),
                at: clock::rfc3339(q.at),
                from_queue: q.from_queue.clone(),
            });
            v.hold = e.meta.hold.as_ref().map(|h| HoldView {
                by: h.by.clone(),
                at: clock::rfc3339(h.at),
                reason: h.reason.clone(),
            });
            v.meta = Some(e.meta.kv.clone());
            v.bounce = e.meta.bounce.as_ref().map(|b| BounceView {
                original_id: b.original_id.clone(),
                original_queue: b.original_queue.clone(),
                reason: b.reason.clone(),
            });
            v.recipients = Some(
                e.recipients
                    .iter()
                    .map(|r| RcptView {
                        address: r.address.clone(),
                        state: r.state,
                        attempts: r.attempts,
                        last_reply: r.last_reply.clone(),
                    })
                    .collect(),
            );
            if detail {
                v.history = Some(
                    e.meta
                        .history
                        .iter()
                        .map(|h| format!("{} {}", clock::rfc3339(h.at), h.what))
                        .collect(),
                );
            }
        }
        Err(why) => {
            v.last_error = Some(why.clone());
            v.error = Some(why);
        }
    }
    v
}

/// Reads and decodes the entry at `path` for display (never modifies it).
pub fn read_for_view(path: &Path) -> (u64, Result<Entry, String>) {
    read_unless_gone(path).unwrap_or_else(|gone| (0, Err(gone.to_string())))
}

/// [`read_for_view`], except that a file that is gone (it moved on between
/// the listing and the read) is the error: the caller skips it.
pub fn read_unless_gone(path: &Path) -> crate::Result<(u64, Result<Entry, String>)> {
    match crate::fsx::read_entry_file(path) {
        Ok(bytes) => Ok((
            bytes.len() as u64,
            Entry::decode(&bytes).map_err(|e| e.to_string()),
        )),
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Err(e),
        Err(e) => Ok((0, Err(e.to_string()))),
    }
}

/// Finds every file of entry `id` in the spool: any queue, any state.
pub fn locate(spool: &Spool, id: crate::EntryId) -> crate::Result<Vec<(Queue, FileName, Place)>> {
    let mut out = Vec::new();
    let prefix = id.to_string();
    for q in spool.queues()? {
        for (dir, place) in [
            (q.bucket_dir(id.bucket()), Place::Bucket(id.bucket())),
            (q.dir().to_path_buf(), Place::DropIn),
        ] {
            // A bucket (or queue) that is a symbolic link is foreign: never read through it.
            if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for de in rd.flatten() {
                let n = de.file_name();
                let Some(s) = n.to_str() else { continue };
                if !s.starts_with(&prefix) {
                    continue;
                }
                if let Some(name) = FileName::parse(s.as_bytes()) {
                    out.push((q.clone(), name, place));
                }
            }
        }
    }
    Ok(out)
}
