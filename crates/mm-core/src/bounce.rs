//! Bounce records: a new entry in bounces/ for the recipients of an entry
//! that failed, written once per recipient (the `bounced` mark), by the
//! runner (refused, expired) and by `mm-delete --bounce` (given up).
//!
//! The record has its own id, fixed when it is made, so that a write retried
//! after a failure ([`claim::publish`](crate::claim::publish)) is the same
//! record, never a second one.

use crate::clock;
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
/// for bounces/, its id fixed here so that a write retried after a failure
/// is the same record, never a second one.
pub fn bounce_record(queue: &str, entry: &Entry, failed: &[usize]) -> Entry {
    let now = clock::now();
    let micros = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let id = EntryId::generate(micros, &[entry.id.as_bytes(), b"bounce"]);
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
