//! mm-showq: slices partition a queue exactly, the listings of a fixed spool
//! match their golden files, and no listing ever changes the spool.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mm_core::{EntryId, Slice};
use mm_e2e::{TestSpool, Tool, golden};

use crate::fixture::{self, NOW};

/// mm-showq on the fixture spool with the clock pinned, output with `$SPOOL`.
fn showq(f: &fixture::Fixture, args: &[&str]) -> String {
    let out = Tool::new("mm-showq")
        .spool(&f.spool)
        .now(NOW)
        .args(args)
        .run();
    out.assert_ok();
    f.spool.redact(&out.stdout_str())
}

#[test]
fn slices_k_of_n_partition_a_queue_for_every_n_from_1_to_16() {
    let s = TestSpool::new();
    let dir = s.work().join("msgs");
    std::fs::create_dir(&dir).unwrap();
    let mut args = vec![
        "--min-free".to_string(),
        "0".into(),
        "--to".into(),
        "r@example.org".into(),
    ];
    for i in 0..400 {
        let p = dir.join(format!("{i:03}.eml"));
        std::fs::write(&p, format!("Subject: slice {i}\n\n")).unwrap();
        args.extend(["--file".to_string(), p.display().to_string()]);
    }
    let ids = Tool::new("mm-enqueue")
        .spool(&s)
        .args(&args)
        .run()
        .assert_ok()
        .ids();
    let all: BTreeSet<EntryId> = ids.iter().copied().collect();
    assert_eq!(all.len(), 400);
    // An admin's drop-ins (entries moved by hand into the queue's top
    // directory) belong to slices too.
    for id in &ids[..5] {
        let name = format!("{id}.pck");
        let from = s
            .root()
            .join("in")
            .join(format!("{:02x}", id.bucket()))
            .join(&name);
        std::fs::rename(&from, s.root().join("in").join(&name)).unwrap();
    }

    for n in 1..=16u32 {
        let running: Vec<_> = (1..=n)
            .map(|k| {
                (
                    k,
                    Tool::new("mm-showq")
                        .spool(&s)
                        .args(["--json", "--slice", &format!("{k}/{n}"), "in"])
                        .spawn(),
                )
            })
            .collect();
        let mut union = BTreeSet::new();
        for (k, r) in running {
            let out = r.wait();
            out.assert_ok();
            for v in out.json_lines() {
                let id = EntryId::parse(v["id"].as_str().expect("id")).expect("id parses");
                assert_eq!(v["slice"], format!("{k}/{n}"), "slice field of {id}");
                assert_eq!(v["queue"], "in");
                assert!(v["error"].is_null(), "{id} listed with an error: {v}");
                assert!(
                    Slice::new(k, n).unwrap().contains(id.hash_prefix()),
                    "{id} listed in {k}/{n}, but its hash prefix {:#018x} is not in that slice",
                    id.hash_prefix()
                );
                assert!(
                    union.insert(id),
                    "{id} listed in two slices of N={n} (again in {k}/{n})"
                );
            }
        }
        let missing: Vec<_> = all.difference(&union).collect();
        let extra: Vec<_> = union.difference(&all).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "N={n}: missing from every slice {missing:?}, unknown {extra:?}"
        );
    }
}

#[test]
fn summary_of_a_fixed_spool_matches_golden() {
    let f = fixture::build();
    golden("showq-summary.txt", &showq(&f, &[]));
    golden("showq-summary.jsonl", &showq(&f, &["--json"]));
    // --bytes adds up the sizes of the entry files (one stat per entry).
    golden("showq-summary-bytes.txt", &showq(&f, &["--bytes"]));
    golden(
        "showq-summary-bytes.jsonl",
        &showq(&f, &["--bytes", "--json"]),
    );
}

/// The destinations remembered as failing (the fixture's smarthost, backed
/// off for 30 s more), for people and as JSON; the summary names it too.
#[test]
fn remembered_destinations_match_golden() {
    let f = fixture::build();
    golden("showq-destinations.txt", &showq(&f, &["--destinations"]));
    golden(
        "showq-destinations.jsonl",
        &showq(&f, &["--destinations", "--json"]),
    );
}

/// Postfix's qshape table: domains crossed with the geometric age buckets,
/// a TOTAL row first; and the same by error, and as JSON.
#[test]
fn the_qshape_table_matches_golden() {
    let f = fixture::build();
    golden("showq-qshape.txt", &showq(&f, &["--by", "domain", "--age"]));
    golden(
        "showq-qshape-error.txt",
        &showq(&f, &["--by", "error", "--age", "in", "bad"]),
    );
    golden(
        "showq-qshape.jsonl",
        &showq(&f, &["--by", "domain", "--age", "--json"]),
    );
    let out = Tool::new("mm-showq")
        .spool(&f.spool)
        .now(NOW)
        .args(["--by", "age", "--age"])
        .run();
    out.assert_code(64);
}

#[test]
fn listing_of_in_matches_golden() {
    let f = fixture::build();
    golden("showq-in.txt", &showq(&f, &["in"]));
    golden("showq-in.jsonl", &showq(&f, &["--json", "in"]));
}

#[test]
fn listing_of_out_and_bad_matches_golden() {
    let f = fixture::build();
    golden("showq-out-bad.txt", &showq(&f, &["out", "bad"]));
    golden("showq-out-bad.jsonl", &showq(&f, &["--json", "out", "bad"]));
}

#[test]
fn listing_of_one_slice_matches_golden() {
    let f = fixture::build();
    golden(
        "showq-in-slice-2-of-2.jsonl",
        &showq(&f, &["--json", "--slice", "2/2", "in"]),
    );
}

#[test]
fn showq_never_modifies_the_spool() {
    let f = fixture::build();
    let s = &f.spool;
    // Real entries too, a corrupt one, an empty one and an entry name on a symbolic link.
    let mut args = vec!["--min-free", "0", "--to", "r@example.org"];
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = s.work().join(format!("{i}.eml"));
            std::fs::write(&p, format!("Subject: {i}\n\n")).unwrap();
            p
        })
        .collect();
    let files: Vec<String> = paths
        .iter()
        .flat_map(|p| ["--file".to_string(), p.display().to_string()])
        .collect();
    args.extend(files.iter().map(String::as_str));
    Tool::new("mm-enqueue")
        .spool(s)
        .args(&args)
        .run()
        .assert_ok();
    let garbage = EntryId::from_parts(fixture::T0 + 5, [0x77; 20]);
    s.put_bytes(
        "in",
        Some(0x77),
        &format!("{garbage}.pck"),
        b"\xc1\xc1 not msgpack",
    );
    let empty = EntryId::from_parts(fixture::T0 + 6, [0x78; 20]);
    s.put_bytes("in", Some(0x78), &format!("{empty}.pck"), b"");
    let link = EntryId::from_parts(fixture::T0 + 7, [0x79; 20]);
    std::fs::create_dir_all(s.root().join("in/79")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", s.root().join(format!("in/79/{link}.pck"))).unwrap();

    let before = s.snapshot();
    let runs: &[&[&str]] = &[
        &[],
        &["--json"],
        &["in", "out", "bad"],
        &["--json", "in", "out", "bad"],
        &["--slice", "1/3", "in"],
        &["--slice", "3/3", "--json"],
        &["no-such-queue"],
    ];
    for args in runs {
        let out = Tool::new("mm-showq").spool(s).args(*args).run();
        // A queue that is not there is a typo (66), never an empty queue.
        out.assert_code(if args == &["no-such-queue"] { 66 } else { 0 });
        before.assert_same(&s.snapshot(), &format!("mm-showq {}", args.join(" ")));
    }
}

#[test]
fn showq_of_a_missing_spool_root_is_75() {
    let s = TestSpool::new();
    let missing = s.tmp().join("no-such-spool");
    for args in [&[][..], &["in"][..]] {
        let out = Tool::new("mm-showq").spool_path(&missing).args(args).run();
        out.assert_code(75);
        assert!(out.stdout.is_empty(), "{out}");
        let line = out.stderr_one_line();
        assert!(line.contains("no-such-spool"), "{line}");
    }
}
