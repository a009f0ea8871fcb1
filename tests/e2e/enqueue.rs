//! mm-enqueue: concurrent writers, exact message bytes, every exit code with
//! nothing left behind on failure (full, read-only and missing spools
//! included), and the group-shared modes whatever the umask.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use mm_core::{EntryId, FileName};
use mm_e2e::{Out, TestSpool, Tool, read_entry};

const RCPT: &str = "rcpt@example.org";
const SENDER: &str = "sender@example.org";

/// mm-enqueue on spool `s`, never refused for free space unless a test says so.
fn enqueue(s: &TestSpool) -> Tool {
    Tool::new("mm-enqueue")
        .spool(s)
        .args(["--min-free", "0", "-f", SENDER])
}

/// Writes `messages` as files `work/NAME-0000.eml`…, returns their paths.
fn write_messages(s: &TestSpool, name: &str, messages: &[Vec<u8>]) -> Vec<PathBuf> {
    let dir = s.work().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = dir.join(format!("{name}-{i:04}.eml"));
            std::fs::write(&p, m).unwrap();
            p
        })
        .collect()
}

/// `--file P` for every path.
fn file_args(paths: &[PathBuf]) -> Vec<std::ffi::OsString> {
    paths
        .iter()
        .flat_map(|p| ["--file".into(), p.clone().into_os_string()])
        .collect()
}

/// The id of an entry file, checking that it sits in its queue's right bucket.
fn checked_id(s: &TestSpool, queue: &str, path: &Path) -> EntryId {
    let name = path.file_name().unwrap().to_str().unwrap();
    let parsed = FileName::parse(name.as_bytes())
        .unwrap_or_else(|| panic!("{} is not an entry name", path.display()));
    let expect = s
        .root()
        .join(queue)
        .join(format!("{:02x}", parsed.id.bucket()))
        .join(name);
    assert_eq!(path, expect, "entry is not in its queue's bucket");
    parsed.id
}

/// Failure hygiene shared by every refusal: the exit code, nothing on
/// stdout, exactly one `mm-enqueue: …` line on stderr, and no entry or
/// temporary file anywhere in the spool beyond `entries_before`.
#[track_caller]
fn assert_refused(out: &Out, code: i32, s: &TestSpool, entries_before: &[PathBuf]) -> String {
    out.assert_code(code);
    assert!(
        out.stdout.is_empty(),
        "a refusal printed something on stdout\n{out}"
    );
    let line = out.stderr_one_line();
    assert_eq!(
        s.entry_files(),
        entries_before,
        "a refusal changed the entries of the spool\n{out}"
    );
    line
}

#[test]
fn concurrent_enqueue_from_8_processes_of_1000_files_yields_8000_distinct_decodable_entries() {
    let s = TestSpool::new();
    let messages: Vec<Vec<u8>> = (0..1000)
        .map(|i| {
            format!("Message-Id: <{i}@e2e.example>\nSubject: bulk {i}\n\nbody {i}\n").into_bytes()
        })
        .collect();
    let paths = write_messages(&s, "bulk", &messages);
    let index: HashMap<&[u8], usize> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_slice(), i))
        .collect();

    let running: Vec<_> = (0..8)
        .map(|_| {
            enqueue(&s)
                .args(["--to", RCPT])
                .args(file_args(&paths))
                .spawn()
        })
        .collect();
    let outs: Vec<Out> = running.into_iter().map(|r| r.wait()).collect();

    let mut printed = BTreeSet::new();
    for out in &outs {
        out.assert_ok();
        let ids = out.ids();
        assert_eq!(ids.len(), 1000, "one id per file\n{out}");
        printed.extend(ids);
    }
    assert_eq!(
        printed.len(),
        8000,
        "ids printed by the 8 processes are not distinct"
    );

    assert_eq!(
        s.files_with_ext("tmp"),
        Vec::<PathBuf>::new(),
        "temporary files left behind"
    );
    let files = s.files();
    assert_eq!(
        files.len(),
        8000,
        "expected exactly the 8,000 entries in the spool"
    );
    let mut copies = vec![0u32; messages.len()];
    let mut found = BTreeSet::new();
    for f in &files {
        assert_eq!(f.extension().unwrap(), "pck", "{}", f.display());
        let id = checked_id(&s, "in", f);
        assert!(
            printed.contains(&id),
            "{} was never acknowledged",
            f.display()
        );
        found.insert(id);
        let e = read_entry(f);
        assert_eq!(e.id, id.to_string(), "{}", f.display());
        assert_eq!(e.sender, SENDER);
        assert_eq!(e.recipients.len(), 1);
        assert_eq!(e.recipients[0].address, RCPT);
        let i = *index.get(e.message.as_slice()).unwrap_or_else(|| {
            panic!(
                "{} holds a message that was never sent: {:?}",
                f.display(),
                String::from_utf8_lossy(&e.message)
            )
        });
        copies[i] += 1;
    }
    assert_eq!(
        found, printed,
        "the entries on disk are not the ids printed"
    );
    assert!(
        copies.iter().all(|&c| c == 8),
        "every message file must be enqueued once per process: {copies:?}"
    );
}

#[test]
fn concurrent_single_message_enqueues_from_8_loops_of_25_yield_200_distinct_entries() {
    let s = TestSpool::new();
    let loops: Vec<_> = (0..8)
        .map(|t| {
            let tool = enqueue(&s).args(["--", RCPT]);
            std::thread::spawn(move || {
                (0..25)
                    .map(|j| {
                        let msg = format!("Subject: loop {t} message {j}\n\nbody\n").into_bytes();
                        let id = tool.clone().stdin(msg.clone()).run().assert_ok().id();
                        (id, msg)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut sent: BTreeMap<EntryId, Vec<u8>> = BTreeMap::new();
    for l in loops {
        for (id, msg) in l.join().expect("enqueue loop") {
            assert!(sent.insert(id, msg).is_none(), "id {id} printed twice");
        }
    }
    assert_eq!(sent.len(), 200);
    let files = s.files();
    assert_eq!(
        files.len(),
        200,
        "expected exactly the 200 entries, no temporary file: {files:#?}"
    );
    for f in &files {
        let id = checked_id(&s, "in", f);
        assert_eq!(f.extension().unwrap(), "pck");
        let msg = sent
            .get(&id)
            .unwrap_or_else(|| panic!("{} was never acknowledged", f.display()));
        assert_eq!(&read_entry(f).message, msg, "{}", f.display());
    }
}

/// Messages no layer may normalise.
fn hostile_messages() -> Vec<(&'static str, Vec<u8>)> {
    let cat = |parts: &[&[u8]]| parts.concat();
    vec![
        ("NUL bytes", b"Subject: nul\n\nbefore\0after\0\0\n".to_vec()),
        ("bare CR", b"Subject: cr\r\rone\rtwo\r".to_vec()),
        ("bare LF", b"Subject: lf\n\none\ntwo\n".to_vec()),
        ("CRLF", b"Subject: crlf\r\n\r\none\r\n.\r\ntwo\r\n".to_vec()),
        ("mixed line ends", b"a\r\nb\nc\rd\n\re\r\r\n".to_vec()),
        (
            "8-bit bytes 0x80-0xff",
            cat(&[
                b"Subject: 8bit\n\n",
                &(0x80..=0xffu8).collect::<Vec<u8>>(),
                b"\n",
            ]),
        ),
        ("every byte value", (0..=255u8).cycle().take(1024).collect()),
        (
            "a line with a single dot",
            b"Subject: dot\n\nabove\n.\nbelow\n..\n".to_vec(),
        ),
        ("only a dot", b".\n".to_vec()),
        (
            "a 10,000-byte line",
            cat(&[b"Subject: long\n\n", &[b'x'; 10_000], b"\n"]),
        ),
        ("no final newline", b"Subject: nonl\n\nthe end".to_vec()),
        (
            "From_ lines",
            b"From someone Tue Nov 24 00:00:00 2026\n>From x\nFrom y\n".to_vec(),
        ),
        ("an empty message", Vec::new()),
    ]
}

#[test]
fn hostile_bytes_from_stdin_round_trip_exactly_through_dumpdb_raw() {
    let s = TestSpool::new();
    for (what, msg) in hostile_messages() {
        let id = enqueue(&s)
            .args(["--", RCPT])
            .stdin(msg.clone())
            .run()
            .assert_ok()
            .id();
        let out = Tool::new("mm-dumpdb")
            .spool(&s)
            .args(["--raw", &id.to_string()])
            .run();
        out.assert_ok();
        assert!(
            out.stdout == msg,
            "{what}: mm-dumpdb --raw gave other bytes\nsent:  {msg:?}\nraw:   {:?}",
            out.stdout
        );
        let file = s
            .root()
            .join("in")
            .join(format!("{:02x}", id.bucket()))
            .join(format!("{id}.pck"));
        assert!(
            read_entry(&file).message == msg,
            "{what}: the entry file holds other bytes"
        );
    }
}

#[test]
fn hostile_bytes_from_files_round_trip_exactly_through_dumpdb_raw_by_path() {
    let s = TestSpool::new();
    let cases = hostile_messages();
    let msgs: Vec<Vec<u8>> = cases.iter().map(|(_, m)| m.clone()).collect();
    let paths = write_messages(&s, "hostile", &msgs);
    let ids = enqueue(&s)
        .args(["--to", RCPT])
        .args(file_args(&paths))
        .run()
        .assert_ok()
        .ids();
    assert_eq!(ids.len(), cases.len(), "one id per --file, in order");
    for ((what, msg), id) in cases.iter().zip(ids) {
        let file = s
            .root()
            .join("in")
            .join(format!("{:02x}", id.bucket()))
            .join(format!("{id}.pck"));
        let out = Tool::new("mm-dumpdb")
            .spool(&s)
            .arg("--raw")
            .arg(&file)
            .run();
        out.assert_ok();
        assert!(
            &out.stdout == msg,
            "{what}: mm-dumpdb --raw PATH gave other bytes\nsent: {msg:?}\nraw:  {:?}",
            out.stdout
        );
    }
}

/// A usage error is the installation's mistake (a typo in master.cf's argv):
/// 75, so the MTA defers every message until it is fixed rather than bounce them.
#[test]
fn an_unknown_flag_is_a_usage_error_that_defers_75() {
    let s = TestSpool::new();
    let out = enqueue(&s)
        .args(["--no-such-flag", RCPT])
        .stdin("Subject: x\n\n")
        .run();
    let line = assert_refused(&out, 75, &s, &[]);
    assert!(
        line.contains("--no-such-flag"),
        "the message does not name the flag: {line}"
    );
}

#[test]
fn meta_without_equals_is_a_usage_error_that_defers_75() {
    let s = TestSpool::new();
    let out = enqueue(&s)
        .args(["--meta", "novalue", RCPT])
        .stdin("Subject: x\n\n")
        .run();
    let line = assert_refused(&out, 75, &s, &[]);
    assert!(
        line.contains("novalue"),
        "the message does not name the bad --meta: {line}"
    );
}

#[test]
fn every_other_usage_error_defers_75_and_help_and_version_exit_0() {
    let s = TestSpool::new();
    let cases: &[(&[&str], &str)] = &[
        (&["--meta"], "--meta"),
        (&["--max-size", "ten", RCPT], "--max-size"),
        (&["--max-rcpts", "many", RCPT], "--max-rcpts"),
        (&["-q"], "--queue"),
    ];
    for (args, names) in cases {
        let out = enqueue(&s).args(*args).stdin("Subject: x\n\n").run();
        let line = assert_refused(&out, 75, &s, &[]);
        assert!(line.contains(names), "{args:?}: {line}");
    }
    for flag in ["--help", "--version"] {
        let out = Tool::new("mm-enqueue").arg(flag).run();
        out.assert_code(0);
        assert!(!out.stdout.is_empty(), "{flag}: {out}");
    }
    let help = Tool::new("mm-enqueue").arg("--help").run().stdout_str();
    assert!(
        help.contains("75 try again later") && !help.contains("64 usage"),
        "--help documents the old exit status: {help}"
    );
}

#[test]
fn bad_envelope_addresses_are_refused_with_65() {
    let s = TestSpool::new();
    let local64 = format!("{}@example.org", "a".repeat(64));
    let local65 = format!("{}@example.org", "a".repeat(65));
    // The boundary itself is accepted.
    enqueue(&s)
        .args(["--", &local64])
        .stdin("Subject: ok\n\n")
        .run()
        .assert_ok();
    let before = s.entry_files();
    assert_eq!(before.len(), 1);
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "CRLF injection in a recipient",
            vec![
                "--".into(),
                "a@example.org\r\nRCPT TO:<x@example.net>".into(),
            ],
        ),
        (
            "bare LF in a recipient",
            vec!["--".into(), "a\n@example.org".into()],
        ),
        (
            "bare CR in a recipient",
            vec!["--".into(), "a@example.org\r".into()],
        ),
        (
            "CRLF in --to",
            vec!["--to".into(), "a@example.org\r\nDATA".into()],
        ),
        ("not a mailbox", vec!["--".into(), "nobody".into()]),
        ("a 65-octet local part", vec!["--".into(), local65.clone()]),
        ("no recipient at all", vec![]),
    ];
    for (what, args) in cases {
        let out = enqueue(&s).args(&args).stdin("Subject: x\n\nbody\n").run();
        let line = assert_refused(&out, 65, &s, &before);
        assert!(
            !line.contains('\n') && !line.contains('\r'),
            "{what}: raw control characters echoed: {line:?}"
        );
    }
    // The sender is checked as strictly (the helper above sets a good one).
    let out = Tool::new("mm-enqueue")
        .spool(&s)
        .args([
            "--min-free",
            "0",
            "-f",
            "s@example.org\r\nRCPT TO:<x@example.net>",
            "--",
            RCPT,
        ])
        .stdin("Subject: x\n\nbody\n")
        .run();
    assert_refused(&out, 65, &s, &before);
}

#[test]
fn a_message_one_byte_over_max_size_is_refused_with_65() {
    let s = TestSpool::new();
    let exact = vec![b'x'; 1024];
    let over = vec![b'x'; 1025];
    enqueue(&s)
        .args(["--max-size", "1K", "--", RCPT])
        .stdin(exact.clone())
        .run()
        .assert_ok();
    let before = s.entry_files();
    assert_eq!(before.len(), 1);

    let out = enqueue(&s)
        .args(["--max-size", "1K", "--", RCPT])
        .stdin(over.clone())
        .run();
    assert_refused(&out, 65, &s, &before);

    // In a --file batch too, and the batch's good files are not enqueued without their ids.
    let paths = write_messages(&s, "size", &[exact, over]);
    let out = enqueue(&s)
        .args(["--max-size", "1K", "--to", RCPT])
        .args(file_args(&paths))
        .run();
    let line = assert_refused(&out, 65, &s, &before);
    assert!(
        line.contains("size-0001.eml"),
        "the message does not name the oversize file: {line}"
    );
}

#[test]
fn a_missing_message_file_is_66_and_enqueues_nothing_unacknowledged() {
    let s = TestSpool::new();
    let mut paths = write_messages(
        &s,
        "m",
        &[b"Subject: one\n\n".to_vec(), b"Subject: two\n\n".to_vec()],
    );
    paths.push(s.work().join("no-such.eml"));
    let out = enqueue(&s)
        .args(["--to", RCPT])
        .args(file_args(&paths))
        .run();
    let line = assert_refused(&out, 66, &s, &[]);
    assert!(
        line.contains("no-such.eml"),
        "the message does not name the missing file: {line}"
    );
    assert_eq!(s.files_with_ext("tmp"), Vec::<PathBuf>::new());
}

#[test]
fn a_missing_spool_root_is_a_temporary_failure_75_and_is_not_created() {
    let s = TestSpool::new();
    let missing = s.tmp().join("no-such-spool");
    let out = Tool::new("mm-enqueue")
        .spool_path(&missing)
        .args(["--", RCPT])
        .stdin("Subject: x\n\n")
        .run();
    out.assert_code(75);
    assert!(out.stdout.is_empty());
    let line = out.stderr_one_line();
    assert!(
        line.contains("no-such-spool"),
        "the message does not name the spool: {line}"
    );
    assert!(
        !missing.exists(),
        "mm-enqueue created the missing spool root"
    );
}

#[test]
fn min_free_above_the_free_space_is_a_temporary_failure_75() {
    let s = TestSpool::new();
    // No file system has an exabyte free.
    let big = ["--min-free", "1000000000G"];
    let out = Tool::new("mm-enqueue")
        .spool(&s)
        .args(big)
        .args(["--", RCPT])
        .stdin("Subject: x\n\n")
        .run();
    assert_refused(&out, 75, &s, &[]);
    let paths = write_messages(
        &s,
        "m",
        &[b"Subject: one\n\n".to_vec(), b"Subject: two\n\n".to_vec()],
    );
    let out = Tool::new("mm-enqueue")
        .spool(&s)
        .args(big)
        .args(["--to", RCPT])
        .args(file_args(&paths))
        .run();
    assert_refused(&out, 75, &s, &[]);
    assert_eq!(
        s.files(),
        Vec::<PathBuf>::new(),
        "something was left in the spool"
    );
}

/// Every id printed is an entry that decodes to the message sent; there is
/// nothing else (no `.tmp`, no entry that was never acknowledged).
#[track_caller]
fn assert_spool_holds_exactly(s: &TestSpool, sent: &BTreeMap<EntryId, Vec<u8>>) {
    assert_eq!(
        s.files_with_ext("tmp"),
        Vec::<PathBuf>::new(),
        "temporary files left behind"
    );
    let files = s.entry_files();
    let ids: BTreeSet<EntryId> = files.iter().map(|f| checked_id(s, "in", f)).collect();
    assert_eq!(
        ids,
        sent.keys().copied().collect::<BTreeSet<_>>(),
        "entries on disk differ from the ids acknowledged"
    );
    for f in &files {
        assert_eq!(f.extension().unwrap(), "pck", "{}", f.display());
        let e = read_entry(f);
        assert_eq!(
            &e.message,
            &sent[&checked_id(s, "in", f)],
            "{}",
            f.display()
        );
    }
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn a_full_file_system_fails_with_75_and_keeps_every_acknowledged_entry() {
    let s = TestSpool::tmpfs("a_full_file_system_fails_with_75…", "size=256k,mode=0755");
    let mut sent = BTreeMap::new();
    let mut refused = None;
    for i in 0..2000 {
        let msg = format!("Subject: fill {i}\n\n{}\n", "f".repeat(1500)).into_bytes();
        let out = enqueue(&s).args(["--", RCPT]).stdin(msg.clone()).run();
        if out.code() != 0 {
            refused = Some(out);
            break;
        }
        sent.insert(out.id(), msg);
    }
    let out = refused.expect("a 256k tmpfs never filled up");
    assert!(
        sent.len() > 10,
        "the spool was refused too early: {} entries\n{out}",
        sent.len()
    );
    let before = s.entry_files();
    assert_refused(&out, 75, &s, &before);
    assert_spool_holds_exactly(&s, &sent);

    // A --file batch on the full spool: refused whole, nothing left half-written.
    let paths: Vec<PathBuf> = (0..20)
        .map(|i| {
            let p = s.tmp().join(format!("batch-{i}.eml"));
            std::fs::write(&p, format!("Subject: batch {i}\n\n{}\n", "b".repeat(1500))).unwrap();
            p
        })
        .collect();
    let out = enqueue(&s)
        .args(["--to", RCPT])
        .args(file_args(&paths))
        .run();
    assert_refused(&out, 75, &s, &before);
    assert_spool_holds_exactly(&s, &sent);
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn running_out_of_inodes_fails_with_75_and_leaves_no_temporary_file() {
    // Plenty of bytes, few inodes: the create itself fails with ENOSPC.
    let s = TestSpool::tmpfs(
        "running_out_of_inodes_fails_with_75…",
        "size=4m,nr_inodes=24,mode=0755",
    );
    let mut sent = BTreeMap::new();
    let mut refused = None;
    for i in 0..100 {
        let msg = format!("Subject: inode {i}\n\nbody\n").into_bytes();
        let out = enqueue(&s).args(["--", RCPT]).stdin(msg.clone()).run();
        if out.code() != 0 {
            refused = Some(out);
            break;
        }
        sent.insert(out.id(), msg);
    }
    let out = refused.expect("a tmpfs of 24 inodes never ran out");
    let before = s.entry_files();
    let line = assert_refused(&out, 75, &s, &before);
    assert!(
        line.contains("No space left"),
        "expected the ENOSPC of the create: {line}"
    );
    assert_spool_holds_exactly(&s, &sent);

    let paths: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = s.tmp().join(format!("batch-{i}.eml"));
            std::fs::write(&p, format!("Subject: batch {i}\n\n")).unwrap();
            p
        })
        .collect();
    let out = enqueue(&s)
        .args(["--to", RCPT])
        .args(file_args(&paths))
        .run();
    assert_refused(&out, 75, &s, &before);
    assert_spool_holds_exactly(&s, &sent);
}

#[test]
#[ignore = "needs root: mounts a tmpfs"]
fn a_read_only_spool_fails_with_75_and_changes_nothing() {
    let s = TestSpool::tmpfs("a_read_only_spool_fails_with_75…", "size=1m,mode=0755");
    let msg = b"Subject: before\n\nwritten before the remount\n".to_vec();
    let id = enqueue(&s)
        .args(["--", RCPT])
        .stdin(msg.clone())
        .run()
        .assert_ok()
        .id();
    s.remount_read_only();
    let snap = s.snapshot();
    let before = s.entry_files();
    for extra in [&[][..], &["-q", "other"][..]] {
        let out = enqueue(&s)
            .args(extra)
            .args(["--", RCPT])
            .stdin("Subject: after\n\n")
            .run();
        let line = assert_refused(&out, 75, &s, &before);
        assert!(
            line.contains("Read-only"),
            "expected EROFS in the message: {line}"
        );
    }
    let paths: Vec<PathBuf> = (0..3)
        .map(|i| {
            let p = s.tmp().join(format!("ro-{i}.eml"));
            std::fs::write(&p, "Subject: ro\n\n").unwrap();
            p
        })
        .collect();
    let out = enqueue(&s)
        .args(["--to", RCPT])
        .args(file_args(&paths))
        .run();
    assert_refused(&out, 75, &s, &before);
    snap.assert_same(&s.snapshot(), "a refused mm-enqueue");
    assert_spool_holds_exactly(&s, &BTreeMap::from([(id, msg)]));
}

#[test]
#[ignore = "needs root: runs mm-enqueue as nobody (setpriv)"]
fn a_spool_the_user_cannot_write_is_a_temporary_failure_75_naming_the_path() {
    mm_e2e::require_root(
        "a_spool_the_user_cannot_write_is_a_temporary_failure_75_naming_the_path (setpriv to nobody)",
    );
    let s = TestSpool::new();
    // nobody may reach the root but not write in it.
    std::fs::set_permissions(s.tmp(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = enqueue(&s)
        .as_user(65534, 65534)
        .args(["--", RCPT])
        .stdin("Subject: x\n\n")
        .run();
    // 75, not 77: an MTA bounces on 77, and this is the admin's to fix.
    let line = assert_refused(&out, 75, &s, &[]);
    assert!(line.contains("Permission denied"), "{line}");
    assert!(
        line.contains(&s.root().display().to_string()),
        "names the path: {line}"
    );
    assert_eq!(s.files(), Vec::<PathBuf>::new());
}

/// The permission bits (with setgid) of `p`.
fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn entries_are_group_shared_despite_umask_077() {
    let s = TestSpool::new();
    let id = enqueue(&s)
        .umask(0o077)
        .args(["--", RCPT])
        .stdin("Subject: umask\n\n")
        .run()
        .assert_ok()
        .id();
    let paths = write_messages(&s, "u", &[b"Subject: file\n\n".to_vec()]);
    let file_id = enqueue(&s)
        .umask(0o077)
        .args(["-q", "bulk", "--to", RCPT])
        .args(file_args(&paths))
        .run()
        .assert_ok()
        .id();
    for (queue, id) in [("in", id), ("bulk", file_id)] {
        let qdir = s.root().join(queue);
        let bdir = qdir.join(format!("{:02x}", id.bucket()));
        let entry = bdir.join(format!("{id}.pck"));
        assert_eq!(
            (mode(&qdir), mode(&bdir), mode(&entry)),
            (0o2770, 0o2770, 0o660),
            "modes of {queue}/ {queue}/BB/ and the entry (octal: {:o} {:o} {:o})",
            mode(&qdir),
            mode(&bdir),
            mode(&entry)
        );
    }
}

/// `--dry-run` checks what a real run checks (the 65 and 75 cases) and
/// writes nothing, not even the queue directory.
#[test]
fn dry_run_checks_like_a_real_run_and_writes_nothing() {
    let s = TestSpool::new();
    let before = s.snapshot();
    let ok = enqueue(&s)
        .args(["-q", "in", "--dry-run", "--", "bob@example.org"])
        .stdin(&b"Subject: x\n\nhello\n"[..])
        .run();
    ok.assert_ok();
    assert!(
        ok.stdout_str()
            .starts_with("would enqueue standard input into in: 18 bytes"),
        "{}",
        ok.stdout_str()
    );
    let big = enqueue(&s)
        .args(["-q", "in", "--dry-run", "--max-size", "4"])
        .args(["--", "bob@example.org"])
        .stdin(&b"Subject: x\n\nhello\n"[..])
        .run();
    big.assert_code(65);
    let full = Tool::new("mm-enqueue")
        .spool(&s)
        .args([
            "-q",
            "in",
            "-f",
            SENDER,
            "--dry-run",
            "--min-free",
            "1000000000G",
        ])
        .args(["--", "bob@example.org"])
        .stdin(&b"hello\n"[..])
        .run();
    full.assert_code(75);
    before.assert_same(&s.snapshot(), "mm-enqueue --dry-run");
    assert!(!s.root().join("in").exists(), "the dry run created in/");
}
