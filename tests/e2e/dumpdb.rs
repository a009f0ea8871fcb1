//! mm-dumpdb: golden dumps of a fixed spool, corrupt files refused (65) and
//! left exactly as they were, unknown entries (66), and the queue of an entry
//! named by its path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mm_core::{Entry, EntryId, FileName};
use mm_e2e::{Rng, TestSpool, Tool, golden};

use crate::fixture::{self, NOW};

/// mm-dumpdb on the fixture spool with the clock pinned, output with `$SPOOL`.
fn dumpdb(f: &fixture::Fixture, args: &[&str]) -> String {
    let out = Tool::new("mm-dumpdb")
        .spool(&f.spool)
        .now(NOW)
        .args(args)
        .run();
    out.assert_ok();
    f.spool.redact(&out.stdout_str())
}

#[test]
fn dump_of_a_queued_entry_matches_golden() {
    let f = fixture::build();
    let before = f.spool.snapshot();
    let id = f.due.to_string();
    golden("dumpdb-in-due.txt", &dumpdb(&f, &[&id]));
    golden("dumpdb-in-due.json", &dumpdb(&f, &["--json", &id]));
    before.assert_same(&f.spool.snapshot(), "mm-dumpdb");
}

#[test]
fn dump_of_a_quarantined_entry_matches_golden() {
    let f = fixture::build();
    let id = f.quarantined.to_string();
    golden("dumpdb-bad-quarantined.txt", &dumpdb(&f, &[&id]));
    golden("dumpdb-bad-quarantined.json", &dumpdb(&f, &["--json", &id]));
}

#[test]
fn dump_of_a_claimed_entry_names_its_dead_holder() {
    let f = fixture::build();
    let id = f.claimed.to_string();
    golden("dumpdb-out-claimed.txt", &dumpdb(&f, &[&id]));
    golden("dumpdb-out-claimed.json", &dumpdb(&f, &["--json", &id]));
}

#[test]
fn dump_of_several_entries_in_any_state_matches_golden() {
    let f = fixture::build();
    let ids = [
        f.was_deferred.to_string(),
        f.deferred.to_string(),
        f.writing.to_string(),
    ];
    golden(
        "dumpdb-in-several.txt",
        &dumpdb(&f, &[&ids[0], &ids[1], &ids[2]]),
    );
}

#[test]
fn dump_by_path_names_the_queue_the_file_is_in() {
    let f = fixture::build();
    let s = &f.spool;
    let cases = [
        (
            "out",
            s.queue("out")
                .path(&FileName::claimed(f.claimed, "dead0runner")),
        ),
        (
            "bad",
            s.queue("bad").path(&FileName::preserved(f.quarantined)),
        ),
        ("in", s.queue("in").path(&FileName::queued(f.due))),
    ];
    for (queue, path) in cases {
        assert!(path.is_file(), "{}", path.display());
        let out = Tool::new("mm-dumpdb")
            .spool(s)
            .now(NOW)
            .arg("--json")
            .arg(&path)
            .run();
        out.assert_ok();
        let v = &out.json_lines()[0];
        assert_eq!(
            v["queue"],
            queue,
            "mm-dumpdb --json {} names the wrong queue",
            path.display()
        );
        let out = Tool::new("mm-dumpdb").spool(s).now(NOW).arg(&path).run();
        out.assert_ok();
        let text = out.stdout_str();
        let line = text
            .lines()
            .find(|l| l.starts_with("queue:"))
            .expect("a queue: line");
        assert_eq!(
            line,
            format!("queue:        {queue}"),
            "mm-dumpdb {} names the wrong queue",
            path.display()
        );
    }
}

/// Sets the mtime of `path` to a fixed time in the past, and returns it.
fn age_file(path: &Path) -> SystemTime {
    let t = SystemTime::UNIX_EPOCH
        + Duration::from_secs(1_600_000_000)
        + Duration::from_nanos(123_456_789);
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn corrupt_entry_files_are_refused_with_65_naming_the_file_and_left_untouched() {
    let s = TestSpool::new();
    let good = Entry::new(
        &EntryId::from_parts(fixture::T0, [0x10; 20]),
        "a@example.org",
        &["b@example.org".to_string()],
        b"Subject: good\n\nsome body text long enough to cut in half\n".to_vec(),
        "in",
    );
    let full = good.encode().unwrap();
    let mut future = good.clone();
    future.format = 99;
    let mut rng = Rng::new(0x5eed);
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("zero length", Vec::new(), Some("empty")),
        ("truncated", full[..full.len() / 2].to_vec(), None),
        ("random bytes", rng.bytes(512), None),
        (
            "a future format 99",
            future.encode().unwrap(),
            Some("format 99"),
        ),
    ];
    for (i, (what, bytes, says)) in cases.into_iter().enumerate() {
        assert!(
            Entry::decode(&bytes).is_err(),
            "{what}: the test's corrupt bytes decode"
        );
        // The same bytes in the spool under an entry's name, and outside it under any name.
        let id = EntryId::from_parts(fixture::T0 + 1 + i as u64, [0x20 + i as u8; 20]);
        let in_spool = s.put_bytes("in", Some(id.bucket()), &format!("{id}.pck"), &bytes);
        let outside = s.work().join(format!("corrupt-{i}.bin"));
        std::fs::write(&outside, &bytes).unwrap();
        for path in [&in_spool, &outside] {
            let mtime = age_file(path);
            let spool_before = s.snapshot();
            let by: Vec<Vec<String>> = vec![
                vec![path.display().to_string()],
                vec!["--json".into(), path.display().to_string()],
                vec!["--raw".into(), path.display().to_string()],
            ];
            let mut runs = by;
            if path == &in_spool {
                runs.push(vec![id.to_string()]);
            }
            for args in runs {
                let out = Tool::new("mm-dumpdb").spool(&s).args(&args).run();
                out.assert_code(65);
                assert!(out.stdout.is_empty(), "{what}: something on stdout\n{out}");
                let line = out.stderr_one_line();
                assert!(
                    line.contains(&path.display().to_string()),
                    "{what}: the message does not name the file: {line}"
                );
                if let Some(says) = says {
                    assert!(
                        line.contains(says),
                        "{what}: the message does not say {says:?}: {line}"
                    );
                }
                assert_eq!(
                    std::fs::read(path).unwrap(),
                    bytes,
                    "{what}: mm-dumpdb {args:?} changed the file"
                );
                let after = std::fs::metadata(path).unwrap().modified().unwrap();
                assert_eq!(
                    after, mtime,
                    "{what}: mm-dumpdb {args:?} changed the file's mtime"
                );
                spool_before.assert_same(
                    &s.snapshot(),
                    &format!("mm-dumpdb {args:?} of a corrupt file ({what})"),
                );
            }
        }
    }
}

#[test]
fn an_unknown_entry_is_66() {
    let s = TestSpool::new();
    // A spool with one entry, so the lookup really searches.
    let id = Tool::new("mm-enqueue")
        .spool(&s)
        .args(["--min-free", "0", "--", "r@example.org"])
        .stdin("x")
        .run()
        .assert_ok()
        .id();
    let mut other = *id.hash();
    other[19] ^= 1;
    let unknown = EntryId::from_parts(id.micros(), other).to_string();
    let missing: PathBuf = s.root().join("in/00/nothing.pck");
    for arg in [
        unknown.clone(),
        missing.display().to_string(),
        "neither-id-nor-file".to_string(),
    ] {
        let out = Tool::new("mm-dumpdb").spool(&s).arg(&arg).run();
        out.assert_code(66);
        assert!(out.stdout.is_empty(), "{out}");
        let line = out.stderr_one_line();
        assert!(
            line.contains(&arg),
            "the message does not name {arg:?}: {line}"
        );
    }
}

#[test]
fn a_missing_entry_argument_is_a_usage_error_64_that_names_it() {
    let s = TestSpool::new();
    let out = Tool::new("mm-dumpdb").spool(&s).run();
    out.assert_code(64);
    assert!(out.stdout.is_empty(), "{out}");
    let line = out.stderr_one_line();
    assert!(
        line.contains("ENTRY"),
        "the usage error does not say what is missing: {line:?}"
    );
}
