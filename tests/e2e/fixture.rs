//! The fixed spool of the golden tests: entries with known ids and contents,
//! built with the mm-core library (mm-enqueue's ids are random, so they can
//! never be golden), read by the tools with their clock pinned at [`NOW`].
//!
//! ```text
//! in/1a/T0.1a…pck              queued, due now: two recipients, a list, metadata
//! in/5e/T1.5e….{NOW-10}.pck    was deferred, due 10 s ago: queued
//! in/c3/T2.c3….{NOW+300}.pck   deferred for 5 more minutes, 2 attempts, a last error
//! in/e7/T3.e7….tmp             being written
//! in/README                    a foreign file, left alone
//! out/9b/T4.9b….dead0runner.bak  claimed by a runner whose record is gone
//! bad/42/T5.42….psv            quarantined from out/, with history
//! .destinations/smarthost.example.org:25   backed off until NOW+30
//! ```

use std::collections::BTreeMap;

use mm_core::entry::{Event, Quarantine};
use mm_core::{Entry, EntryId, FileName, RcptState};
use mm_e2e::TestSpool;

/// The pinned clock of the tools: 1 h 2 min 3 s after [`T0`].
pub const NOW: u64 = 1_764_003_723;
/// Enqueue time of the oldest entry, microseconds.
pub const T0: u64 = 1_764_000_000_250_000;

/// A hash starting with `first` (the bucket), the rest a fixed pattern.
fn hash(first: u8) -> [u8; 20] {
    let mut h = [0u8; 20];
    for (i, b) in h.iter_mut().enumerate() {
        *b = first.wrapping_add((i as u8).wrapping_mul(17));
    }
    h[0] = first;
    h
}

/// The ids of the fixture spool.
#[derive(Debug)]
pub struct Fixture {
    /// The spool.
    pub spool: TestSpool,
    /// in/: queued, due now.
    pub due: EntryId,
    /// in/: a deferral whose time has come.
    pub was_deferred: EntryId,
    /// in/: deferred to NOW + 300.
    pub deferred: EntryId,
    /// in/: a `.tmp`.
    pub writing: EntryId,
    /// out/: claimed by a dead runner.
    pub claimed: EntryId,
    /// bad/: quarantined.
    pub quarantined: EntryId,
}

/// Builds the fixture spool.
pub fn build() -> Fixture {
    let spool = TestSpool::new();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<String>>();

    let due = EntryId::from_parts(T0, hash(0x1a));
    let mut e = Entry::new(
        &due,
        "owner@example.org",
        &s(&["alice@example.org", "bob@example.net"]),
        b"From: owner@example.org\nSubject: due now\n\nHello, world.\n".to_vec(),
        "in",
    );
    e.meta.list = Some("dev".into());
    e.meta.kv = BTreeMap::from([
        ("origin".to_string(), "golden".to_string()),
        ("x-seq".to_string(), "7".to_string()),
    ]);
    spool.put("in", &FileName::queued(due), &e);

    let was_deferred = EntryId::from_parts(T0 + 30_000_001, hash(0x5e));
    let mut e = Entry::new(
        &was_deferred,
        "list-bounces@example.org",
        &s(&["dave@example.com"]),
        b"Subject: retry due\r\n\r\nCRLF body\r\n".to_vec(),
        "in",
    );
    e.meta.attempts = 1;
    e.meta.first_attempt = Some(NOW - 900);
    e.meta.next_attempt = Some(NOW - 10);
    e.meta.last_error = Some("421 4.3.2 service not available".into());
    spool.put("in", &FileName::deferred(was_deferred, Some(NOW - 10)), &e);

    let deferred = EntryId::from_parts(T0 + 60_000_002, hash(0xc3));
    let mut e = Entry::new(
        &deferred,
        "",
        &s(&["carol@example.com"]),
        b"Subject: bounce\n\nno final newline".to_vec(),
        "in",
    );
    e.meta.attempts = 2;
    e.meta.first_attempt = Some(NOW - 1200);
    e.meta.next_attempt = Some(NOW + 300);
    e.meta.last_error = Some("451 4.7.1 greylisted, try again later".into());
    e.recipients[0].attempts = 2;
    e.recipients[0].last_reply = Some("451 4.7.1 greylisted, try again later".into());
    e.recipients[0].updated = Some(NOW - 60);
    spool.put("in", &FileName::deferred(deferred, Some(NOW + 300)), &e);

    let writing = EntryId::from_parts(T0 + 3_600_000_003, hash(0xe7));
    let e = Entry::new(
        &writing,
        "owner@example.org",
        &s(&["erin@example.org"]),
        b"Subject: half\n\n".to_vec(),
        "in",
    );
    spool.put("in", &FileName::writing(writing, None), &e);

    spool.put_bytes("in", None, "README", b"not an entry\n");

    let claimed = EntryId::from_parts(T0 + 120_000_004, hash(0x9b));
    let mut e = Entry::new(
        &claimed,
        "owner@example.org",
        &s(&[
            "frank@example.org",
            "grace@example.org",
            "heidi@example.org",
        ]),
        b"Subject: out\n\nthree recipients\n".to_vec(),
        "in",
    );
    e.recipients[0].state = RcptState::Delivered;
    e.recipients[0].attempts = 1;
    e.recipients[0].last_reply = Some("250 2.0.0 Ok: queued as 4ABC".into());
    e.meta.attempts = 1;
    e.meta.stage = 2;
    spool.put("out", &FileName::claimed(claimed, "dead0runner"), &e);

    let quarantined = EntryId::from_parts(T0 + 180_000_005, hash(0x42));
    let mut e = Entry::new(
        &quarantined,
        "owner@example.org",
        &s(&["ivan@example.org", "judy@example.org"]),
        b"Subject: poison\n\n\xff\xfe 8-bit \0 NUL\n".to_vec(),
        "in",
    );
    e.recipients[0].state = RcptState::Delivered;
    e.recipients[0].attempts = 1;
    e.recipients[1].state = RcptState::Failed;
    e.recipients[1].attempts = 3;
    e.recipients[1].last_reply = Some("550 5.1.1 no such user".into());
    e.meta.attempts = 3;
    e.meta.recoveries = 3;
    e.meta.quarantine = Some(Quarantine {
        reason: "crashed its runner 3 times".into(),
        at: NOW - 600,
        from_queue: "out".into(),
        extra: Default::default(),
    });
    e.meta.history = vec![
        Event {
            at: NOW - 1800,
            what: "recovered from dead runner 0a1b2c".into(),
            extra: Default::default(),
        },
        Event {
            at: NOW - 600,
            what: "quarantined: crashed its runner 3 times".into(),
            extra: Default::default(),
        },
    ];
    spool.put("bad", &FileName::preserved(quarantined), &e);

    // A smarthost that stopped greeting 30 s ago: backed off for 30 s more.
    let spool_dir = mm_core::Spool::open(spool.root()).unwrap();
    mm_core::destination::Destinations::open(&spool_dir)
        .unwrap()
        .failed(
            "smarthost.example.org:25",
            "no greeting within 30s",
            NOW - 30,
        )
        .unwrap();

    Fixture {
        spool,
        due,
        was_deferred,
        deferred,
        writing,
        claimed,
        quarantined,
    }
}
