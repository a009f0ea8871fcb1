//! Crash points: mm-enqueue and mm-runq die (abort, as a kill -9 would) at
//! each step of their file protocol, through the test-only hook
//! `MM_TEST_CRASH_AT` (crates/mm-core/src/crashpoint.rs), and every case
//! recovers with nothing lost and no half-written entry ever visible.

use std::collections::BTreeMap;

use mm_core::Entry;
use mm_e2e::{TestSpool, Tool, read_entry};

const MESSAGE: &[u8] = b"Subject: crash\n\n.\nline two\n";

fn enqueue(s: &TestSpool, crash: Option<&str>) -> bool {
    let mut t = Tool::new("mm-enqueue")
        .spool(s)
        .args(["--min-free", "0", "-q", "out", "-f", "s@example.org"])
        .args(["a@example.org", "b@example.org", "c@example.net"])
        .stdin(MESSAGE);
    if let Some(point) = crash {
        t = t.env("MM_TEST_CRASH_AT", point);
    }
    t.run().status.success()
}

/// The id of the one queued entry.
fn queued_id(s: &TestSpool) -> String {
    let path = &s.files_with_ext("pck")[0];
    mm_core::FileName::parse(path.file_name().unwrap().as_encoded_bytes())
        .expect("an entry name")
        .id
        .to_string()
}

fn recover(s: &TestSpool) {
    let out = Tool::new("mm-recover")
        .spool(s)
        .args(["--tmp-age", "0s"])
        .run();
    assert!(out.status.success(), "{out}");
}

/// Copies per recipient in the maildir.
fn copies(dir: &std::path::Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir.join("new"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let rcpt = name.split('.').nth(3).unwrap_or("?").to_string();
        let rcpt = format!("{rcpt}.{}", name.split('.').nth(4).unwrap_or(""));
        *m.entry(rcpt).or_default() += 1;
    }
    m
}

fn leftovers(s: &TestSpool) -> Vec<std::path::PathBuf> {
    let mut v = s.files_with_ext("tmp");
    v.extend(s.files_with_ext("bak"));
    v.extend(s.files_with_ext("psv"));
    v
}

#[test]
fn mm_enqueue_killed_at_each_step_never_leaves_a_partial_entry_and_a_retry_delivers() {
    for point in [
        "enqueue-after-write",
        "enqueue-after-fsync",
        "enqueue-after-rename",
    ] {
        let s = TestSpool::new();
        // The crash: not acknowledged, so an MTA keeps the message and retries.
        assert!(
            !enqueue(&s, Some(point)),
            "{point}: a crashed enqueue must not exit 0"
        );
        // Whatever is visible as an entry is complete.
        for p in s.files_with_ext("pck") {
            let e: Entry = read_entry(&p);
            assert_eq!(e.message, MESSAGE, "{point}: {}", p.display());
        }
        recover(&s);
        assert!(
            s.files_with_ext("tmp").is_empty(),
            "{point}: mm-recover removes the orphaned .tmp"
        );
        // The MTA's retry.
        assert!(enqueue(&s, None), "{point}: the retry succeeds");
        let n = s.files_with_ext("pck").len();
        let expect = if point == "enqueue-after-rename" {
            2
        } else {
            1
        };
        assert_eq!(
            n, expect,
            "{point}: entries after the retry (a crash after the rename may duplicate, never lose)"
        );
    }
}

#[test]
fn mm_runq_killed_at_each_step_recovers_and_every_recipient_gets_its_copy() {
    for point in [
        "runner-after-claim",
        "runner-after-record",
        "runner-before-finish",
    ] {
        let s = TestSpool::new();
        assert!(enqueue(&s, None));
        let dir = s.work().join(format!("maildir-{point}"));
        let run = |crash: Option<&str>| {
            let mut t = Tool::new("mm-runq")
                .spool(&s)
                .args(["-q", "out", "--until-empty", "--quiet", "--deliver-to"])
                .arg(&dir);
            if let Some(p) = crash {
                t = t.env("MM_TEST_CRASH_AT", p);
            }
            t.run()
        };
        let out = run(Some(point));
        assert!(
            !out.status.success(),
            "{point}: the runner should have died\n{out}"
        );
        assert_eq!(
            s.files_with_ext("bak").len(),
            1,
            "{point}: the claim is left for recovery"
        );
        recover(&s);
        assert!(s.files_with_ext("bak").is_empty(), "{point}: recovered");
        let out = run(None);
        assert!(out.status.success(), "{point}: {out}");
        assert!(
            leftovers(&s).is_empty(),
            "{point}: left {:?}",
            leftovers(&s)
        );
        assert!(s.files_with_ext("pck").is_empty(), "{point}: drained");
        let c = copies(&dir);
        assert_eq!(c.len(), 3, "{point}: every recipient has a copy: {c:?}");
        let extra: usize = c.values().map(|n| n - 1).sum();
        match point {
            // Nothing was sent before the crash, or every copy sent was recorded.
            "runner-after-claim" | "runner-after-record" => assert_eq!(extra, 0, "{point}: {c:?}"),
            // The last copy was accepted but its record is the removal that the
            // crash prevented: that one recipient may get it twice, no more.
            _ => assert!(extra <= 1, "{point}: {c:?}"),
        }
        eprintln!("{point}: duplicate copies after recovery: {extra}");
    }
}

/// mm-hold killed between saving its record and its rename: recovery
/// finishes the hold (the saved content says held), so the entry is neither
/// delivered nor shown queued with a stale hold record.
#[test]
fn mm_hold_killed_after_saving_its_record_is_recovered_held() {
    let s = TestSpool::new();
    assert!(enqueue(&s, None));
    let id = queued_id(&s);
    let out = Tool::new("mm-hold")
        .spool(&s)
        .args(["-r", "poison", &id])
        .env("MM_TEST_CRASH_AT", "hold-after-save")
        .run();
    assert!(!out.status.success(), "mm-hold should have died\n{out}");
    assert_eq!(s.files_with_ext("bak").len(), 1, "the claim is left");
    recover(&s);
    assert!(s.files_with_ext("bak").is_empty());
    let held = s.files_with_ext("hld");
    assert_eq!(held.len(), 1, "recovered held: {:?}", s.files());
    assert_eq!(read_entry(&held[0]).meta.hold.unwrap().reason, "poison");
    let dir = s.work().join("maildir");
    let out = Tool::new("mm-runq")
        .spool(&s)
        .args(["-q", "out", "--until-empty", "--quiet", "--deliver-to"])
        .arg(&dir)
        .run();
    assert!(out.status.success(), "{out}");
    assert!(copies(&dir).is_empty(), "a held entry is never delivered");
    assert_eq!(s.files_with_ext("hld").len(), 1);
}

/// mm-delete --bounce killed after writing the bounce record, before
/// removing the entry: its recipients' failures were saved first, so
/// recovery and the next runner never deliver what the sender is told
/// failed, and the record written again is the same one (one in bounces/).
#[test]
fn mm_delete_bounce_killed_after_the_record_never_delivers_and_never_writes_a_second_record() {
    let s = TestSpool::new();
    assert!(enqueue(&s, None));
    let id = queued_id(&s);
    let out = Tool::new("mm-delete")
        .spool(&s)
        .args(["--bounce", &id])
        .env("MM_TEST_CRASH_AT", "delete-after-publish")
        .run();
    assert!(!out.status.success(), "mm-delete should have died\n{out}");
    let records = || -> Vec<std::path::PathBuf> {
        s.files_with_ext("pck")
            .into_iter()
            .filter(|p| p.starts_with(s.root().join("bounces")))
            .collect()
    };
    assert_eq!(records().len(), 1, "the record is written");
    recover(&s);
    let dir = s.work().join("maildir");
    let out = Tool::new("mm-runq")
        .spool(&s)
        .args(["-q", "out", "--until-empty", "--quiet", "--deliver-to"])
        .arg(&dir)
        .run();
    assert!(out.status.success(), "{out}");
    assert!(
        copies(&dir).is_empty(),
        "delivered after the sender was told it failed"
    );
    assert_eq!(
        records().len(),
        1,
        "a second bounce record: {:?}",
        s.files()
    );
    assert!(
        s.entry_files()
            .iter()
            .all(|p| p.starts_with(s.root().join("bounces"))),
        "the entry is gone from out: {:?}",
        s.files()
    );
    let rec = read_entry(&records()[0]);
    assert_eq!(rec.recipients.len(), 3);
}
