//! Bounce records: a new entry in bounces/ for the recipients of an entry
//! that failed, written once per recipient (the `bounced` mark), by the
//! runner (refused, expired) and by `mm-delete --bounce` (given up).
//!
//! The record's id is derived from the entry's and its recipients', so that
//! a write retried after a failure or a crash ([`claim::publish`](crate::claim::publish)) is the
//! same record, never a second one.

use sha1::{Digest, Sha1};

use crate::entry::{Bounce, BounceReason, Entry, RcptState};
use crate::id::EntryId;
use crate::spool::queues;

/// The failed recipients of `entry` that have no bounce record yet.
pub fn unbounced(entry: &Entry) -> Vec<usize> {
    entry
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == RcptState::Failed && !r.bounced)
        .map(|(i, _)| i)
        .collect()
}

/// Marks the recipients `failed` of `entry` as having their bounce record.
pub fn mark_bounced(entry: &mut Entry, failed: &[usize]) {
    for &i in failed {
        entry.recipients[i].bounced = true;
    }
}

/// The bounce record for the recipients `failed` of `entry`: a new entry
/// for bounces/ whose id comes from the entry's id and the recipients'
/// positions alone. A write retried after a failure, in this process or
/// after a crash and recovery (the failures found again, the record written
/// again before the mark that it was), is the same record under the same
/// name, never a second one while the first is still in bounces/. Its time
/// is the original's enqueue time.
pub fn bounce_record(queue: &str, entry: &Entry, failed: &[usize]) -> Entry {
    let micros = entry.id.parse::<EntryId>().map(|i| i.micros()).unwrap_or(0);
    let mut h = Sha1::new();
    h.update(entry.id.as_bytes());
    h.update(b"bounce");
    for &i in failed {
        h.update((i as u64).to_le_bytes());
    }
    let id = EntryId::from_parts(micros, h.finalize().into());
    let addrs: Vec<String> = failed
        .iter()
        .map(|&i| entry.recipients[i].address.clone())
        .collect();
    let mut b = Entry::new(
        &id,
        &entry.sender,
        &addrs,
        entry.message.clone(),
        queues::BOUNCES,
    );
    for (dst, &i) in b.recipients.iter_mut().zip(failed) {
        let src = &entry.recipients[i];
        dst.state = RcptState::Failed;
        dst.attempts = src.attempts;
        dst.last_reply = src.last_reply.clone();
        dst.updated = src.updated;
        // The record itself must not bounce again when a runner works bounces/.
        dst.bounced = true;
    }
    let reasons: Vec<BounceReason> = failed
        .iter()
        .map(|&i| BounceReason::of(&entry.recipients[i]))
        .collect();
    let reason = [BounceReason::Expired, BounceReason::GivenUp]
        .into_iter()
        .find(|r| reasons.contains(r))
        .unwrap_or(BounceReason::Refused);
    b.meta.list = entry.meta.list.clone();
    b.meta.kv = entry.meta.kv.clone();
    b.meta.bounce = Some(Bounce {
        original_id: entry.id.clone(),
        original_queue: queue.to_string(),
        reason: reason.as_str().into(),
        extra: Default::default(),
    });
    b
}
