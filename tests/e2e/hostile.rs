//! Hostile input and least privilege (issue 7): the permission model with
//! real users and groups, hostile queue names and ids, files planted in the
//! queues (symbolic links, FIFOs, directories, foreign files), I/O errors
//! injected with strace(1), and endless or oversize input.
//!
//! Every child runs under a timeout (a FIFO that blocks an open, or a tool
//! that reads an endless pipe forever, fails the test instead of hanging it).
//! Tests that need root (users, setpriv) or strace are `#[ignore = "needs
//! …"]`; `cargo xtask test` runs them where they can run, and run without
//! what they need they fail with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use mm_core::entry::Quarantine;
use mm_core::{Entry, EntryId, FileName};
use mm_e2e::{Out, Snapshot, TestSpool, Tool, read_entry};

use crate::runq::{SENDER, enqueue, maildir_copies};

const RCPT: &str = "rcpt@example.org";

/// A command of `tool` under this file's timeout: every child here is
/// expected to finish quickly, and one that hangs (a FIFO that blocks an
/// open, an endless pipe read forever) fails the test instead of hanging it.
fn cmd(tool: &str) -> Tool {
    Tool::new(tool).timeout(Duration::from_secs(30))
}

/// A refusal: exit `code`, nothing on stdout, one `mm-TOOL: …` line on stderr
/// (returned).
#[track_caller]
fn assert_refusal(out: &Out, code: i32) -> String {
    out.assert_code(code);
    assert!(
        out.stdout.is_empty(),
        "a refusal printed something on stdout\n{out}"
    );
    out.stderr_one_line()
}

/// Same as [`assert_refusal`], with any of `codes`.
#[track_caller]
fn assert_refusal_in(out: &Out, codes: &[i32]) -> String {
    assert!(
        codes.contains(&out.code()),
        "expected one of the exit codes {codes:?}\n{out}"
    );
    assert_refusal(out, out.code())
}

// ---------------------------------------------------------------------------
// Small spool helpers.
// ---------------------------------------------------------------------------

/// Creates `dir` with the spool's directory mode (as mm would).
fn mkdir_spool_mode(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2770))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// Creates queue `queue` and all 256 of its buckets, so that a write into it
/// makes no directory (a fixed sequence of system calls).
fn precreate_buckets(s: &TestSpool, queue: &str) {
    let q = s.root().join(queue);
    mkdir_spool_mode(&q);
    for b in 0..=255u8 {
        mkdir_spool_mode(&q.join(format!("{b:02x}")));
    }
}

/// An id of a planted name: hash starting with `bucket`, told apart by `n`.
fn fake_id(n: u8, bucket: u8) -> EntryId {
    let mut h = [0u8; 20];
    h[0] = bucket;
    h[1] = 0xee;
    h[19] = n;
    EntryId::from_parts(1_700_000_000_000_000 + u64::from(n), h)
}

/// The encoded bytes of a valid entry.
fn entry_bytes(id: &EntryId, rcpt: &str, message: &[u8], queue: &str) -> Vec<u8> {
    entry(id, rcpt, message, queue)
        .encode()
        .expect("entry encodes")
}

fn entry(id: &EntryId, rcpt: &str, message: &[u8], queue: &str) -> Entry {
    Entry::new(id, SENDER, &[rcpt.to_string()], message.to_vec(), queue)
}

/// A quarantined entry (as in bad/), from queue `from`.
fn quarantined(id: &EntryId, rcpt: &str, message: &[u8], from: &str) -> Entry {
    let mut e = entry(id, rcpt, message, from);
    e.meta.quarantine = Some(Quarantine {
        reason: "crashed its runner 4 times".into(),
        at: 1_700_000_100,
        from_queue: from.into(),
        extra: Default::default(),
    });
    e
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo")
        .arg(p)
        .status()
        .expect("cannot run mkfifo(1)");
    assert!(st.success(), "mkfifo {} failed", p.display());
}

/// The entry files (any state) under the root whose id is `id`.
fn files_of(s: &TestSpool, id: &EntryId) -> Vec<PathBuf> {
    s.entry_files()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| FileName::parse(n.as_encoded_bytes()))
                .is_some_and(|n| n.id == *id)
        })
        .collect()
}

/// The names of the entries of the top directory of `dir` (a listing).
fn listing(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|de| de.expect("listing").file_name())
        .collect()
}

// ---------------------------------------------------------------------------
// (a) The permission model, with real users.
// ---------------------------------------------------------------------------

const GROUP: &str = "mm-spool";
const MTA: &str = "mm-mta";
const RUNNER: &str = "mm-runner";
const OUTSIDER: &str = "mm-outsider";

/// The test users: the MTA's pipe user (primary group mm-spool), the
/// runners' user (own primary group, mm-spool as a supplementary group) and
/// an outsider (not in mm-spool). The users and the group this test made
/// are removed on drop; those that were there before are left alone.
#[derive(Debug)]
struct Users {
    spool_gid: u32,
    mta: u32,
    runner: u32,
    runner_gid: u32,
    outsider: u32,
    outsider_gid: u32,
    /// The users made here (userdel also removes their own groups).
    made_users: Vec<&'static str>,
    /// Whether group mm-spool was made here.
    made_group: bool,
}

impl Drop for Users {
    fn drop(&mut self) {
        let _one_at_a_time = mm_e2e::accounts_lock();
        let mut left = Vec::new();
        for name in self.made_users.iter().rev() {
            let ok = Command::new("userdel")
                .arg(name)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                left.push(format!("user {name}"));
            }
        }
        if self.made_group
            && !Command::new("groupdel")
                .arg(GROUP)
                .output()
                .is_ok_and(|o| o.status.success())
        {
            left.push(format!("group {GROUP}"));
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("cannot remove what the test made: {left:?}");
        }
    }
}

fn cmd_out(prog: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(prog).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn id_of(flag: &str, user: &str) -> Option<Vec<u32>> {
    cmd_out("id", &[flag, user]).map(|s| {
        s.split_whitespace()
            .map(|x| x.parse().expect("a numeric id"))
            .collect()
    })
}

fn group_gid(group: &str) -> Option<u32> {
    cmd_out("getent", &["group", group])
        .and_then(|l| l.split(':').nth(2).and_then(|g| g.parse().ok()))
}

/// Runs `argv` unless `exists()`; an "already exists" race with another
/// process is fine. Whether this call made it.
fn ensure(what: &str, exists: impl Fn() -> bool, argv: &[&str]) -> bool {
    if exists() {
        return false;
    }
    let o = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", argv[0]));
    assert!(
        o.status.success() || exists(),
        "cannot create {what} with {argv:?}: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    o.status.success()
}

/// Creates the users and the group if needed; fails with the reason when
/// not root or without the account tools (passwd, util-linux: `cargo xtask
/// test` installs them).
fn users(what: &str) -> Users {
    mm_e2e::require_root(what);
    for tool in [
        "groupadd", "useradd", "userdel", "groupdel", "setpriv", "getent", "id",
    ] {
        assert!(
            Command::new(tool).arg("--help").output().is_ok(),
            "{what}: {tool} is not installed (Debian: apt-get install passwd util-linux)"
        );
    }
    // One account change at a time in the whole test process (the Postfix
    // tests make users too): useradd gives up when /etc/passwd is locked.
    let _one_at_a_time = mm_e2e::accounts_lock();
    let nologin = "/usr/sbin/nologin";
    let sys = [
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        nologin,
    ];
    let made_group = ensure(
        "group mm-spool",
        || group_gid(GROUP).is_some(),
        &["groupadd", "--system", GROUP],
    );
    let mut made_users = Vec::new();
    let mut user = |name: &'static str, extra: &[&str]| {
        let mut argv = vec!["useradd"];
        argv.extend(sys);
        argv.extend(extra);
        argv.push(name);
        if ensure(
            &format!("user {name}"),
            || id_of("-u", name).is_some(),
            &argv,
        ) {
            made_users.push(name);
        }
    };
    user(MTA, &["--gid", GROUP]);
    user(RUNNER, &["--user-group", "--groups", GROUP]);
    user(OUTSIDER, &["--user-group"]);

    let spool_gid = group_gid(GROUP).expect("group mm-spool exists");
    let one = |flag: &str, name: &str| id_of(flag, name).expect("user exists")[0];
    let u = Users {
        spool_gid,
        mta: one("-u", MTA),
        runner: one("-u", RUNNER),
        runner_gid: one("-g", RUNNER),
        outsider: one("-u", OUTSIDER),
        outsider_gid: one("-g", OUTSIDER),
        made_users,
        made_group,
    };
    assert_eq!(
        one("-g", MTA),
        spool_gid,
        "existing user {MTA} must have {GROUP} as its primary group"
    );
    assert!(
        id_of("-G", RUNNER).expect("groups").contains(&spool_gid),
        "existing user {RUNNER} must be in group {GROUP}"
    );
    assert!(
        !id_of("-G", OUTSIDER).expect("groups").contains(&spool_gid),
        "existing user {OUTSIDER} must not be in group {GROUP}"
    );
    u
}

/// (owner, group, permission bits with setgid) of `p`.
fn owner_mode(p: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
#[ignore = "needs root: creates users and runs the tools as them (setpriv)"]
fn permission_model_with_real_users_mta_enqueues_runner_delivers_outsider_is_refused() {
    let u = users("permission_model_with_real_users… (creates users, setpriv)");
    let s = TestSpool::new();
    // The documented root: root:mm-spool, 2770 (no tool creates it).
    std::fs::set_permissions(s.tmp(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(s.root(), Some(0), Some(u.spool_gid)).unwrap();
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o2770)).unwrap();
    let md = s.tmp().join("maildir");
    std::fs::create_dir(&md).unwrap();
    std::os::unix::fs::chown(&md, Some(u.runner), Some(u.runner_gid)).unwrap();

    let mta = |queue: &str, msg: &str| {
        cmd("mm-enqueue")
            .spool(&s)
            .as_user(u.mta, u.spool_gid)
            .umask(0o077)
            .args(["-q", queue, "-f", SENDER, "--", RCPT])
            .stdin(msg)
            .run()
    };
    let runner = |tool: &'static str| {
        cmd(tool)
            .spool(&s)
            .as_user_with_groups(u.runner, u.runner_gid)
            .umask(0o077)
    };
    let outsider = |tool: &'static str| {
        cmd(tool)
            .spool(&s)
            .as_user_with_groups(u.outsider, u.outsider_gid)
            .umask(0o077)
    };

    // 1. The MTA's user, umask 077 and no supplementary group, enqueues.
    let out = mta("in", "Subject: from the mta\n\nbody\n");
    out.assert_ok();
    let id1 = out.id();
    let bucket = s.root().join("in").join(format!("{:02x}", id1.bucket()));
    let file1 = bucket.join(format!("{id1}.pck"));
    for (p, mode) in [
        (s.root().join("in"), 0o2770),
        (bucket.clone(), 0o2770),
        (file1.clone(), 0o660),
    ] {
        assert_eq!(
            owner_mode(&p),
            (u.mta, u.spool_gid, mode),
            "{} (uid, gid, mode {mode:o})",
            p.display()
        );
    }

    // 2. The outsider can neither enqueue, nor read, nor claim, nor list.
    let snap = s.snapshot();
    let root = s.root().display().to_string();
    let denied = |out: &Out, code: i32, path: &str| {
        let line = assert_refusal(out, code);
        assert!(
            line.contains("Permission denied") && line.contains(path),
            "the error must name {path} and the missing right: {line}"
        );
    };
    let out = outsider("mm-enqueue")
        .args(["-f", SENDER, "--", RCPT])
        .stdin("Subject: outsider\n\n")
        .run();
    // 75, not 77: the MTA keeps the mail while the admin fixes the groups.
    denied(&out, 75, &root);
    let out = outsider("mm-dumpdb").arg(id1.to_string()).run();
    denied(&out, 77, &root);
    let out = outsider("mm-dumpdb").arg(&file1).run();
    denied(&out, 77, &file1.display().to_string());
    let out = outsider("mm-runq")
        .args(["-q", "in", "--until-empty", "--discard"])
        .run();
    denied(&out, 77, &root);
    for tool in ["mm-showq", "mm-recover"] {
        let out = outsider(tool).run();
        denied(&out, 77, &root);
    }
    let out = outsider("mm-unbad").arg("--all").run();
    denied(&out, 77, &root);
    snap.assert_same(&s.snapshot(), "the outsider's refused commands");
    assert_eq!(read_entry(&file1).id, id1.to_string());

    // 3. The runner's user (own primary group, mm-spool supplementary) reads,
    //    claims and passes the entry on; what it creates is group mm-spool.
    let out = runner("mm-showq").arg("in").run();
    out.assert_ok();
    assert!(out.stdout_str().contains(&id1.to_string()), "{out}");
    runner("mm-dumpdb").arg(id1.to_string()).run().assert_ok();
    let out = runner("mm-runq")
        .args(["-q", "in", "--until-empty", "--then", "out"])
        .run();
    out.assert_code(0);
    assert!(!file1.exists(), "the runner did not take the entry\n{out}");
    let out_bucket = s.root().join("out").join(format!("{:02x}", id1.bucket()));
    let passed = out_bucket.join(format!("{id1}.pck"));
    for (p, mode) in [
        (s.root().join("out"), 0o2770),
        (out_bucket.clone(), 0o2770),
        (passed.clone(), 0o660),
        (s.root().join(".runners"), 0o2770),
        (s.root().join(".locks"), 0o2770),
        (
            crate::runq::lock_file(&s, "in.1-1").expect("the runner's lock file"),
            0o660,
        ),
    ] {
        assert_eq!(
            owner_mode(&p),
            (u.runner, u.spool_gid, mode),
            "{} (uid, gid, mode {mode:o}): the setgid spool must give every new file its group",
            p.display()
        );
    }

    // 4. The MTA writes into the queue the runner created, and the runner
    //    delivers and deletes what the MTA wrote.
    let out = mta("out", "Subject: straight to out\n\nbody\n");
    out.assert_ok();
    let id2 = out.id();
    let out = runner("mm-runq")
        .args(["-q", "out", "--until-empty", "--deliver-to"])
        .arg(&md)
        .run();
    out.assert_code(0);
    let copies = maildir_copies(&md);
    for id in [id1, id2] {
        assert_eq!(
            copies.get(&(id.to_string(), RCPT.to_string())),
            Some(&1),
            "{id} not delivered once: {copies:?}\n{out}"
        );
    }
    assert_eq!(
        s.entry_files(),
        Vec::<PathBuf>::new(),
        "delivered entries must be deleted by the runner's user\n{out}"
    );

    // 5. What operations.md's check prints nothing for: every directory
    //    2770 and every file 0660, all of group mm-spool.
    for e in walkdir::WalkDir::new(s.root()) {
        let e = e.expect("walk");
        let (_, gid, mode) = owner_mode(e.path());
        let want = if e.file_type().is_dir() {
            0o2770
        } else {
            0o660
        };
        assert_eq!(
            (gid, mode),
            (u.spool_gid, want),
            "{} (gid, mode {want:o})",
            e.path().display()
        );
    }
}

// ---------------------------------------------------------------------------
// (b) Hostile queue names and ids.
// ---------------------------------------------------------------------------

/// Names that must never become a path (NUL cannot be passed in argv).
fn hostile_queue_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "..",
        "../x",
        "../../etc",
        "a/b",
        "in/../out",
        "in/",
        "/etc",
        "/tmp",
        ".",
        "",
        ".runners",
        ".locks",
        "a\nb",
        "in\n",
        "in\r",
        " in",
        "a b",
        "UPPER",
        "In",
        "1st",
        "é",
        "in*",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push("x".repeat(33));
    v.push("x".repeat(300));
    v
}

/// A spool with an entry in in/ and out/ and a quarantined one in bad/.
fn populated() -> TestSpool {
    let s = TestSpool::new();
    enqueue(&s, "in", &[RCPT], b"Subject: in\n\n");
    enqueue(&s, "out", &[RCPT], b"Subject: out\n\n");
    let q = fake_id(1, 0x42);
    s.put(
        "bad",
        &FileName::preserved(q),
        &quarantined(&q, RCPT, b"Subject: bad\n\n", "out"),
    );
    s
}

#[test]
fn hostile_queue_names_are_refused_with_65_by_every_tool_and_touch_nothing() {
    let s = populated();
    let snap = s.snapshot();
    let around = listing(s.tmp());
    let mut forms = 0;
    for name in hostile_queue_names() {
        let n = name.as_str();
        let cases: Vec<Tool> = vec![
            cmd("mm-showq").arg(n),
            cmd("mm-showq").args(["--by", "age", n]),
            cmd("mm-recover").args(["-q", n]),
            cmd("mm-recover").args(["--dry-run", "-q", n]),
            cmd("mm-unbad").args(["--all", "--from", n]),
            cmd("mm-unbad").args(["--all", "--to", n]),
            cmd("mm-runq").args(["--until-empty", "--discard", "-q", n]),
            cmd("mm-runq").args(["--until-empty", "-q", "in", "--then", n]),
        ];
        for r in cases {
            forms += 1;
            let out = r.spool(&s).timeout(Duration::from_secs(20)).run();
            // 65: "a bad queue name (mm-runq, mm-showq, mm-recover, mm-unbad)".
            let line = assert_refusal(&out, 65);
            assert!(
                line.contains("bad queue name") && !line.contains('\n'),
                "the error must say what is wrong, on one line: {line:?}"
            );
        }
        // mm-enqueue documents 75 for a bad -q (see the ignored test below);
        // whatever the code, it refuses and touches nothing.
        let out = cmd("mm-enqueue")
            .spool(&s)
            .args(["--min-free", "0", "-f", SENDER, "-q", n, "--", RCPT])
            .stdin("Subject: x\n\n")
            .run();
        let line = assert_refusal_in(&out, &[65, 75]);
        assert!(line.contains("bad queue name"), "{line:?}");
        snap.assert_same(&s.snapshot(), &format!("queue name {n:?}"));
    }
    assert_eq!(forms, 8 * hostile_queue_names().len());
    assert_eq!(
        listing(s.tmp()),
        around,
        "something was created beside the spool"
    );
    assert_eq!(
        listing(s.work()),
        BTreeSet::new(),
        "something was created in the scratch directory"
    );
}

#[test]
fn mm_enqueue_refuses_a_hostile_queue_name_with_the_documented_75() {
    let s = populated();
    let snap = s.snapshot();
    for name in hostile_queue_names() {
        let out = cmd("mm-enqueue")
            .spool(&s)
            .args(["--min-free", "0", "-f", SENDER, "-q", &name, "--", RCPT])
            .stdin("Subject: x\n\n")
            .run();
        let line = assert_refusal(&out, 75);
        assert!(line.contains("bad queue name"), "{line:?}");
    }
    snap.assert_same(&s.snapshot(), "mm-enqueue -q HOSTILE");
}

#[test]
fn hostile_ids_are_refused_by_dumpdb_and_unbad_and_touch_nothing() {
    let s = populated();
    let real = s.entry_files()[0].clone();
    let id = FileName::parse(real.file_name().unwrap().as_encoded_bytes())
        .unwrap()
        .id
        .to_string();
    // A planted passwd beside the spool, reached by ../../etc/passwd from cwd.
    let secret = b"root:x:0:0:SECRET-PASSWD-LINE:/root:/bin/sh\n";
    std::fs::create_dir(s.tmp().join("etc")).unwrap();
    let passwd = s.tmp().join("etc/passwd");
    std::fs::write(&passwd, secret).unwrap();
    let cwd = s.work().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    let watched = Snapshot::of_paths(std::slice::from_ref(&passwd));
    let snap = s.snapshot();

    let bb = &id[18..20];
    let hostile: Vec<String> = vec![
        "../../etc/passwd".into(),
        "/etc/passwd".into(),
        "/etc".into(),
        format!("{id}/x"),
        format!("{id}/../{id}"),
        format!("../{id}"),
        format!("in/{bb}/{id}.pck"),
        format!("{id}.pck"),
        format!("{id}.bak"),
        format!("{id}.0123abcd.bak"),
        format!("{id}.psv"),
        format!("{id}.pck~"),
        format!("{id}.tmp"),
        id.to_uppercase(),
        format!("{id} "),
        format!(" {id}"),
        format!("{id}\n"),
        id[..id.len() - 1].to_string(),
        format!("{id}0"),
        id.replace('+', "/"),
        "".into(),
        ".".into(),
        "..".into(),
        "a\nb".into(),
        "*".into(),
        format!("{}*", &id[..20]),
        "x".repeat(300),
    ];
    // The control: the real id is found from the same directory.
    cmd("mm-dumpdb")
        .spool(&s)
        .cwd(&cwd)
        .arg(&id)
        .run()
        .assert_ok();
    for h in &hostile {
        // mm-unbad takes only ids: "not an entry id", 65, before any path.
        let out = cmd("mm-unbad").spool(&s).arg(h).run();
        let line = assert_refusal(&out, 65);
        assert!(line.contains("not an entry id"), "{h:?}: {line}");
        let out = cmd("mm-unbad")
            .spool(&s)
            .args(["--from", "bad", "--to", "out", h])
            .run();
        assert_refusal(&out, 65);

        // mm-dumpdb also takes paths of entry files: a name that is not an id
        // is at most read (65 corrupt / not a regular file, 66 no such entry),
        // never shown and never changed.
        let out = cmd("mm-dumpdb")
            .spool(&s)
            .cwd(&cwd)
            .timeout(Duration::from_secs(20))
            .arg(h)
            .run();
        let line = assert_refusal_in(&out, &[65, 66]);
        assert!(
            !line.contains("SECRET") && !out.stderr_str().contains("root:x:0:0"),
            "{h:?}: mm-dumpdb echoed the bytes of a file that is not an entry: {line}"
        );
    }
    snap.assert_same(&s.snapshot(), "hostile ids");
    watched.assert_same(&watched.again(), "hostile ids");
    assert_eq!(listing(&cwd), BTreeSet::new());
}

// ---------------------------------------------------------------------------
// (c) Files planted in the queues.
// ---------------------------------------------------------------------------

/// Message of the entry that the planted links point to: never to be delivered.
const TARGET_MSG: &[u8] = b"Subject: SECRET-TARGET\n\nmust never be delivered\n";

#[test]
fn planted_links_fifos_dirs_and_foreign_files_are_reported_never_followed_moved_or_delivered() {
    let s = TestSpool::new();
    let md = s.work().join("maildir");
    // The real entries: three queued, one claim of a dead runner, one stale .tmp.
    let real: Vec<EntryId> = (0..3)
        .map(|i| {
            enqueue(
                &s,
                "out",
                &[RCPT],
                format!("Subject: real {i}\n\n").as_bytes(),
            )
        })
        .collect();
    let dead = fake_id(50, 0x77);
    s.put(
        "out",
        &FileName::claimed(dead, "dead0runner"),
        &entry(&dead, RCPT, b"Subject: dead claim\n\n", "out"),
    );
    let stale = fake_id(51, 0x78);
    let stale_path = s.put(
        "out",
        &FileName::writing(stale, None),
        &entry(&stale, RCPT, b"Subject: never acknowledged\n\n", "out"),
    );
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&stale_path)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    // Outside the spool: a valid entry the links point to, and a directory
    // holding one, which a link named like a bucket points to.
    let target_id = fake_id(60, 0xab);
    let target = s.work().join("target.pck");
    std::fs::write(
        &target,
        entry_bytes(&target_id, "victim@example.org", TARGET_MSG, "out"),
    )
    .unwrap();
    let evil_bucket = s.work().join("evil-bucket");
    std::fs::create_dir(&evil_bucket).unwrap();
    // A bucket name the real entries (random ids) did not take.
    let evil_b = (0xcdu8..=0xff)
        .find(|b| !s.root().join("out").join(format!("{b:02x}")).exists())
        .expect("a free bucket name");
    let evil_id = fake_id(61, evil_b);
    std::fs::write(
        evil_bucket.join(format!("{evil_id}.pck")),
        entry_bytes(&evil_id, "victim@example.org", TARGET_MSG, "out"),
    )
    .unwrap();

    let out_dir = s.root().join("out");
    let bucket = out_dir.join("ab");
    std::fs::create_dir_all(&bucket).unwrap();
    let name = |n: u8, b: u8, suffix: &str| format!("{}{suffix}", fake_id(n, b));
    let link = |p: PathBuf, to: &Path| {
        std::os::unix::fs::symlink(to, &p).unwrap();
        p
    };
    let fifo = |p: PathBuf| {
        mkfifo(&p);
        p
    };
    let dir = |p: PathBuf| {
        std::fs::create_dir(&p).unwrap();
        p
    };
    let file = |p: PathBuf, b: &[u8]| {
        std::fs::write(&p, b).unwrap();
        p
    };
    // Named like entries, in a bucket and in the drop-in (top directory).
    let named = vec![
        link(bucket.join(name(1, 0xab, ".pck")), &target),
        link(bucket.join(name(2, 0xab, ".dead0runner.bak")), &target),
        link(bucket.join(name(3, 0xab, ".tmp")), &target),
        fifo(bucket.join(name(4, 0xab, ".pck"))),
        fifo(bucket.join(name(5, 0xab, ".tmp"))),
        dir(bucket.join(name(6, 0xab, ".pck"))),
        link(out_dir.join(name(7, 0x10, ".pck")), &target),
        fifo(out_dir.join(name(8, 0x11, ".pck"))),
        dir(out_dir.join(name(9, 0x12, ".pck"))),
    ];
    let zz = dir(out_dir.join("zz"));
    let zz_id = fake_id(62, 0x13);
    let inside_zz = file(
        zz.join(format!("{zz_id}.pck")),
        &entry_bytes(&zz_id, "victim@example.org", TARGET_MSG, "out"),
    );
    let mut planted = named.clone();
    planted.extend([
        file(bucket.join("README"), b"not an entry\n"),
        file(bucket.join("core"), b"\x7fELF core\n"),
        file(out_dir.join("README"), b"not an entry\n"),
        file(out_dir.join("core"), b"\x7fELF core\n"),
        zz,
        link(out_dir.join(format!("{evil_b:02x}")), &evil_bucket),
    ]);
    let planted_ids: Vec<String> = named
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy()[..58].to_string())
        .chain([target_id, evil_id, zz_id].map(|i| i.to_string()))
        .collect();
    let mut watched = planted.clone();
    watched.extend([
        target.clone(),
        inside_zz,
        evil_bucket.join(format!("{evil_id}.pck")),
    ]);
    let watched = Snapshot::of_paths(&watched);
    let t = Duration::from_secs(20);

    // mm-showq: the summary counts them as foreign, the listing never shows them.
    let out = cmd("mm-showq").spool(&s).arg("--json").timeout(t).run();
    out.assert_ok();
    let rows = out.json_lines();
    let row = rows
        .iter()
        .find(|r| r["queue"] == "out")
        .unwrap_or_else(|| panic!("no summary row for out\n{out}"));
    assert_eq!(
        (row["foreign"].as_u64(), row["queued"].as_u64()),
        (Some(planted.len() as u64), Some(3)),
        "foreign and queued counts of out\n{out}"
    );
    let out = cmd("mm-showq").spool(&s).arg("out").timeout(t).run();
    out.assert_ok();
    let listed = out.stdout_str();
    for id in &real {
        assert!(listed.contains(&id.to_string()), "{id} not listed\n{out}");
    }
    for id in &planted_ids {
        assert!(!listed.contains(id.as_str()), "planted {id} listed\n{out}");
    }

    // mm-dumpdb: a planted name is refused (65), never followed, never blocks.
    for p in &named {
        let id = &p.file_name().unwrap().to_string_lossy()[..58];
        for arg in [OsString::from(id), p.clone().into_os_string()] {
            let out = cmd("mm-dumpdb").spool(&s).arg(&arg).timeout(t).run();
            let line = assert_refusal(&out, 65);
            assert!(
                (line.contains("symbolic link") || line.contains("not a regular file"))
                    && line.contains(&p.display().to_string()),
                "the refusal must name the file and why: {line}"
            );
        }
    }
    for id in [target_id, zz_id] {
        let out = cmd("mm-dumpdb")
            .spool(&s)
            .arg(id.to_string())
            .timeout(t)
            .run();
        assert_refusal(&out, 66);
    }

    // mm-recover: every planted file is reported foreign and left alone; the
    // real dead claim is recovered and the stale .tmp removed beside them.
    let out = cmd("mm-recover").spool(&s).arg("--json").timeout(t).run();
    out.assert_code(0);
    let mut foreign = BTreeSet::new();
    let mut others = Vec::new();
    for a in out.json_lines() {
        let path = PathBuf::from(a["path"].as_str().expect("path"));
        match a["action"].as_str() {
            Some("foreign") => {
                foreign.insert(path);
            }
            Some(act) => others.push((act.to_string(), a["id"].as_str().map(String::from))),
            None => panic!("no action in {a}"),
        }
    }
    assert_eq!(
        foreign,
        planted.iter().cloned().collect::<BTreeSet<_>>(),
        "mm-recover must report exactly the planted files as foreign\n{out}"
    );
    others.sort();
    assert_eq!(
        others,
        vec![
            ("recovered".to_string(), Some(dead.to_string())),
            ("removed-tmp".to_string(), Some(stale.to_string())),
        ],
        "{out}"
    );

    // mm-runq: the real entries are delivered, nothing planted is.
    let out = cmd("mm-runq")
        .spool(&s)
        .args(["-q", "out", "--until-empty", "--deliver-to"])
        .arg(&md)
        .timeout(t)
        .run();
    out.assert_code(0);
    let copies = maildir_copies(&md);
    let expected: BTreeMap<(String, String), usize> = real
        .iter()
        .chain([&dead])
        .map(|id| ((id.to_string(), RCPT.to_string()), 1))
        .collect();
    assert_eq!(
        copies, expected,
        "exactly the real entries, once each\n{out}"
    );
    for e in std::fs::read_dir(md.join("new")).unwrap() {
        let body = std::fs::read(e.unwrap().path()).unwrap();
        assert!(
            !String::from_utf8_lossy(&body).contains("SECRET-TARGET"),
            "a planted link was followed and delivered"
        );
    }
    for id in real.iter().chain([&dead, &stale]) {
        assert_eq!(
            files_of(&s, id),
            Vec::<PathBuf>::new(),
            "{id} is still in the spool\n{out}"
        );
    }

    // And after all of them: every planted file is where it was, as it was.
    watched.assert_same(&watched.again(), "showq, dumpdb, recover and runq");
}

#[test]
fn planted_files_in_bad_are_left_alone_by_unbad_all_which_still_releases_real_entries() {
    let s = TestSpool::new();
    let real = fake_id(70, 0x42);
    s.put(
        "bad",
        &FileName::preserved(real),
        &quarantined(&real, RCPT, b"Subject: real\n\n", "out"),
    );
    let target_id = fake_id(71, 0xab);
    let target = s.work().join("quarantined-elsewhere.psv");
    std::fs::write(
        &target,
        quarantined(&target_id, "victim@example.org", TARGET_MSG, "out")
            .encode()
            .unwrap(),
    )
    .unwrap();
    let bad = s.root().join("bad");
    let bucket = bad.join("ab");
    std::fs::create_dir_all(&bucket).unwrap();
    let p = |dir: &Path, n: u8, b: u8, suffix: &str| dir.join(format!("{}{suffix}", fake_id(n, b)));
    let l1 = p(&bucket, 72, 0xab, ".psv");
    let f1 = p(&bucket, 73, 0xab, ".psv");
    let d1 = p(&bucket, 74, 0xab, ".psv");
    let l2 = p(&bad, 75, 0x20, ".psv");
    let f2 = p(&bad, 76, 0x21, ".psv");
    std::os::unix::fs::symlink(&target, &l1).unwrap();
    std::os::unix::fs::symlink(&target, &l2).unwrap();
    mkfifo(&f1);
    mkfifo(&f2);
    std::fs::create_dir(&d1).unwrap();
    for f in [
        bucket.join("README"),
        bucket.join("core"),
        bad.join("README"),
    ] {
        std::fs::write(&f, b"foreign\n").unwrap();
    }
    let named = [l1, f1, d1, l2, f2];
    let mut planted: Vec<PathBuf> = named.to_vec();
    planted.extend([
        bucket.join("README"),
        bucket.join("core"),
        bad.join("README"),
    ]);
    let mut watched = planted.clone();
    watched.push(target.clone());
    let watched = Snapshot::of_paths(&watched);
    let t = Duration::from_secs(20);

    let out = cmd("mm-unbad").spool(&s).arg("--all").timeout(t).run();
    out.assert_code(0);
    let lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "only the real entry is released\n{out}");
    assert!(
        lines[0].starts_with(&format!("released {real} out ")),
        "{out}"
    );
    let back = s
        .root()
        .join("out")
        .join(format!("{:02x}", real.bucket()))
        .join(format!("{real}.pck"));
    assert_eq!(read_entry(&back).id, real.to_string());
    assert!(
        files_of(&s, &target_id).is_empty(),
        "the link's target came into the spool"
    );

    // Named one by one, the planted ids are not entries: not-found (66).
    let ids: Vec<String> = named
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy()[..58].to_string())
        .collect();
    let out = cmd("mm-unbad").spool(&s).args(&ids).timeout(t).run();
    out.assert_code(66);
    let lines: Vec<String> = out.stdout_str().lines().map(String::from).collect();
    assert_eq!(lines.len(), ids.len(), "{out}");
    for (l, id) in lines.iter().zip(&ids) {
        assert!(l.starts_with(&format!("not-found {id} ")), "{out}");
    }

    let out = cmd("mm-recover")
        .spool(&s)
        .args(["--json", "-q", "bad"])
        .timeout(t)
        .run();
    out.assert_code(0);
    let foreign: BTreeSet<PathBuf> = out
        .json_lines()
        .iter()
        .filter(|a| a["action"] == "foreign")
        .map(|a| PathBuf::from(a["path"].as_str().unwrap()))
        .collect();
    assert_eq!(foreign, planted.iter().cloned().collect(), "{out}");
    let out = cmd("mm-showq").spool(&s).arg("bad").timeout(t).run();
    out.assert_ok();
    assert_eq!(out.stdout_str(), "", "bad/ holds no entry any more\n{out}");
    for id in &ids {
        let out = cmd("mm-dumpdb").spool(&s).arg(id).timeout(t).run();
        assert_refusal(&out, 65);
    }
    watched.assert_same(&watched.again(), "unbad, recover, showq and dumpdb on bad/");
}

/// Every bucket of `queue` is a symbolic link to `outside`.
fn symlink_every_bucket(s: &TestSpool, queue: &str, outside: &Path) {
    let q = s.root().join(queue);
    mkdir_spool_mode(&q);
    for b in 0..=255u8 {
        std::os::unix::fs::symlink(outside, q.join(format!("{b:02x}"))).unwrap();
    }
}

#[test]
fn a_bucket_that_is_a_symlink_is_foreign_to_runners_showq_and_recover() {
    let s = TestSpool::new();
    let outside = s.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let id = fake_id(80, 0x5a);
    std::fs::write(
        outside.join(format!("{id}.pck")),
        entry_bytes(&id, "victim@example.org", TARGET_MSG, "out"),
    )
    .unwrap();
    let out_dir = s.root().join("out");
    mkdir_spool_mode(&out_dir);
    std::os::unix::fs::symlink(&outside, out_dir.join("5a")).unwrap();
    let watched = Snapshot::of_paths(&[out_dir.join("5a"), outside.join(format!("{id}.pck"))]);
    let md = s.work().join("maildir");
    let t = Duration::from_secs(20);

    let out = cmd("mm-showq").spool(&s).arg("--json").timeout(t).run();
    out.assert_ok();
    let row = &out.json_lines()[0];
    assert_eq!(
        (row["queued"].as_u64(), row["foreign"].as_u64()),
        (Some(0), Some(1)),
        "{out}"
    );
    let out = cmd("mm-recover").spool(&s).arg("--json").timeout(t).run();
    out.assert_code(0);
    let acts = out.json_lines();
    assert!(
        acts.len() == 1 && acts[0]["action"] == "foreign",
        "the linked bucket is reported foreign, nothing else\n{out}"
    );
    let out = cmd("mm-runq")
        .spool(&s)
        .args(["-q", "out", "--until-empty", "--deliver-to"])
        .arg(&md)
        .timeout(t)
        .run();
    out.assert_code(0);
    assert_eq!(maildir_copies(&md), BTreeMap::new(), "{out}");
    watched.assert_same(&watched.again(), "showq, recover and runq");
}

#[test]
fn mm_dumpdb_does_not_open_an_entry_through_a_symlinked_bucket() {
    let s = TestSpool::new();
    let outside = s.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let id = fake_id(81, 0x5b);
    std::fs::write(
        outside.join(format!("{id}.pck")),
        entry_bytes(&id, "victim@example.org", TARGET_MSG, "out"),
    )
    .unwrap();
    let out_dir = s.root().join("out");
    mkdir_spool_mode(&out_dir);
    std::os::unix::fs::symlink(&outside, out_dir.join("5b")).unwrap();
    let out = cmd("mm-dumpdb").spool(&s).arg(id.to_string()).run();
    // Like mm-showq, mm-runq and mm-recover: no such entry in the spool.
    assert_refusal_in(&out, &[65, 66]);
    assert!(!out.stdout_str().contains("SECRET-TARGET"), "{out}");
}

#[test]
fn mm_enqueue_never_acknowledges_an_entry_written_through_a_symlinked_bucket() {
    let s = TestSpool::new();
    let outside = s.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    symlink_every_bucket(&s, "in", &outside);
    let md = s.work().join("maildir");
    let out = cmd("mm-enqueue")
        .spool(&s)
        .args(["--min-free", "0", "-f", SENDER, "--", RCPT])
        .stdin("Subject: swallowed\n\n")
        .run();
    if out.code() == 0 {
        // Acknowledged: then a runner must find and deliver it.
        let id = out.id();
        let run = cmd("mm-runq")
            .spool(&s)
            .args(["-q", "in", "--until-empty", "--deliver-to"])
            .arg(&md)
            .run();
        assert_eq!(
            maildir_copies(&md).get(&(id.to_string(), RCPT.to_string())),
            Some(&1),
            "mm-enqueue acknowledged {id}, but no runner delivers it; it sits in {}: {:?}\n{run}",
            outside.display(),
            listing(&outside)
        );
    } else {
        assert_refusal(&out, 75);
        assert_eq!(listing(&outside), BTreeSet::new());
    }
}

#[test]
fn mm_runq_then_never_passes_an_entry_through_a_symlinked_bucket() {
    let s = TestSpool::new();
    let outside = s.work().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let id = enqueue(&s, "in", &[RCPT], b"Subject: passed on\n\n");
    symlink_every_bucket(&s, "out", &outside);
    let out = cmd("mm-runq")
        .spool(&s)
        .args(["-q", "in", "--until-empty", "--then", "out"])
        .run();
    assert!(
        listing(&outside).is_empty(),
        "mm-runq moved {id} out of the spool into {}\n{out}",
        outside.display()
    );
    assert_eq!(
        files_of(&s, &id).len(),
        1,
        "{id} is not in the spool\n{out}"
    );
}

// ---------------------------------------------------------------------------
// (d) I/O errors injected with strace.
// ---------------------------------------------------------------------------

/// Fails with the reason unless strace can trace and inject here: the
/// tests that call this are `#[ignore = "needs strace: …"]`, which `cargo
/// xtask test` runs where strace works.
#[track_caller]
fn require_strace(what: &str) {
    if let Err(why) = mm_e2e::strace_works() {
        panic!("{what} needs strace: {why}");
    }
}

/// `strace -f` in front of a tool, logging `trace` to `log`, injecting EIO
/// into `inject` = (syscall, when) for calls on `path` (all calls if `None`).
fn strace(
    log: &Path,
    trace: &str,
    inject: Option<(&str, &str)>,
    path: Option<&Path>,
) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["strace".into(), "-f".into(), "-qq".into(), "-o".into()];
    v.push(log.as_os_str().to_owned());
    if let Some(p) = path {
        v.push("-P".into());
        v.push(p.as_os_str().to_owned());
    }
    v.push("-e".into());
    v.push(format!("trace={trace}").into());
    if let Some((sc, when)) = inject {
        v.push("-e".into());
        v.push(format!("inject={sc}:error=EIO:when={when}").into());
    }
    v.push("--".into());
    v
}

/// One system call in an strace log.
#[derive(Clone, Debug)]
struct Call {
    tid: u32,
    name: String,
    line: String,
}

fn parse_trace(log: &Path) -> Vec<Call> {
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", log.display()));
    text.lines()
        .filter_map(|l| {
            let (tid, rest) = l.split_once(' ')?;
            let tid = tid.parse().ok()?;
            let rest = rest.trim_start();
            let name = rest.split('(').next()?;
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return None;
            }
            Some(Call {
                tid,
                name: name.to_string(),
                line: rest.to_string(),
            })
        })
        .collect()
}

/// The file descriptor of a `write(FD, …` line.
fn fd_of(line: &str) -> Option<u32> {
    line.split_once('(')?
        .1
        .split(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// For strace's `when=`: the position, among the `name` calls of the same
/// thread, of the `k`-th call (1-based) that satisfies `pred`.
#[track_caller]
fn when_of(calls: &[Call], name: &str, k: usize, pred: impl Fn(&Call) -> bool) -> String {
    let mut per_tid: BTreeMap<u32, usize> = BTreeMap::new();
    let mut seen = 0;
    for c in calls.iter().filter(|c| c.name == name) {
        let n = per_tid.entry(c.tid).or_default();
        *n += 1;
        if pred(c) {
            seen += 1;
            if seen == k {
                return n.to_string();
            }
        }
    }
    panic!("no call number {k} of {name} matching in the trace: {calls:#?}");
}

/// Everything a failed mm-enqueue must leave: exit 75, one line naming the
/// I/O error, no id, the injection really made, the entries acknowledged
/// before intact and decodable, and no temporary file.
#[track_caller]
fn assert_enqueue_failed_cleanly(
    what: &str,
    out: &Out,
    log: &Path,
    s: &TestSpool,
    before: &[PathBuf],
    printed: usize,
) {
    assert!(
        std::fs::read_to_string(log).unwrap().contains("(INJECTED)"),
        "{what}: the fault was never injected (the tool's system calls changed?)\n{out}"
    );
    out.assert_code(75);
    assert_eq!(out.ids().len(), printed, "{what}: ids printed\n{out}");
    let line = out.stderr_one_line();
    assert!(
        line.contains("Input/output error") && line.contains(&s.root().display().to_string()),
        "{what}: the error must name the file and the cause: {line}"
    );
    let after = s.entry_files();
    let missing: Vec<&PathBuf> = before.iter().filter(|p| !after.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "{what}: acknowledged entries lost: {missing:#?}"
    );
    for p in &after {
        read_entry(p);
    }
    assert_eq!(
        s.files_with_ext("tmp"),
        Vec::<PathBuf>::new(),
        "{what}: a temporary file was left behind"
    );
}

fn enqueue_cmd(s: &TestSpool) -> Tool {
    cmd("mm-enqueue")
        .spool(s)
        .args(["--min-free", "0", "-f", SENDER])
}

#[test]
#[ignore = "needs strace: injects EIO into system calls"]
fn injected_eio_in_mm_enqueue_from_stdin_gives_75_and_no_partial_entry() {
    require_strace("injected_eio_in_mm_enqueue_from_stdin…");
    let msg = "Subject: eio\n\nbody\n";
    // The calls of one enqueue into a queue whose buckets all exist.
    let cal = TestSpool::new();
    precreate_buckets(&cal, "in");
    let log = cal.work().join("calibrate.log");
    enqueue_cmd(&cal)
        .wrap(strace(
            &log,
            "openat,write,fdatasync,rename,fsync",
            None,
            None,
        ))
        .args(["--", RCPT])
        .stdin(msg)
        .run()
        .assert_ok();
    let calls = parse_trace(&log);
    let cases = [
        (
            "openat O_CREAT of ID.tmp",
            "openat",
            when_of(&calls, "openat", 1, |c| c.line.contains("O_CREAT")),
        ),
        (
            "write of ID.tmp",
            "write",
            when_of(&calls, "write", 1, |c| {
                fd_of(&c.line).is_some_and(|fd| fd > 2)
            }),
        ),
        (
            "fdatasync of ID.tmp",
            "fdatasync",
            when_of(&calls, "fdatasync", 1, |_| true),
        ),
        (
            "rename ID.tmp to ID.pck",
            "rename,renameat,renameat2",
            "1".to_string(),
        ),
        (
            "fsync of the bucket after the rename",
            "fsync",
            when_of(&calls, "fsync", 1, |_| true),
        ),
    ];

    let s = TestSpool::new();
    precreate_buckets(&s, "in");
    for i in 0..3 {
        enqueue_cmd(&s)
            .args(["--", RCPT])
            .stdin(format!("Subject: before {i}\n\n"))
            .run()
            .assert_ok();
    }
    let before = s.entry_files();
    assert_eq!(before.len(), 3);
    for (what, sc, when) in &cases {
        let log = s.work().join("fault.log");
        let out = enqueue_cmd(&s)
            .wrap(strace(&log, sc, Some((sc, when)), None))
            .args(["--", RCPT])
            .stdin(msg)
            .run();
        assert_enqueue_failed_cleanly(what, &out, &log, &s, &before, 0);
        assert_eq!(s.entry_files(), before, "{what}");
    }

    // A queue that does not exist yet: the fsync after its mkdir fails.
    let fresh = TestSpool::new();
    let log = fresh.work().join("fault.log");
    let out = enqueue_cmd(&fresh)
        .wrap(strace(&log, "fsync", Some(("fsync", "1")), None))
        .args(["--", RCPT])
        .stdin(msg)
        .run();
    assert_enqueue_failed_cleanly("fsync after creating in/", &out, &log, &fresh, &[], 0);
    assert_eq!(fresh.entry_files(), Vec::<PathBuf>::new());

    // And the spool still takes mail once the fault is gone.
    enqueue_cmd(&s)
        .args(["--", RCPT])
        .stdin(msg)
        .run()
        .assert_ok();
    assert_eq!(s.entry_files().len(), 4);
}

#[test]
#[ignore = "needs strace: injects EIO into system calls"]
fn injected_eio_in_mm_enqueue_group_commit_gives_75_and_keeps_every_acknowledged_group() {
    require_strace("injected_eio_in_mm_enqueue_group_commit…");
    let write_files = |s: &TestSpool, n: usize| -> Vec<PathBuf> {
        let dir = s.work().join("msgs");
        std::fs::create_dir_all(&dir).unwrap();
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{i:04}.eml"));
                std::fs::write(&p, format!("Subject: bulk {i}\n\nbody {i}\n")).unwrap();
                p
            })
            .collect()
    };
    let bulk = |s: &TestSpool, files: &[PathBuf]| {
        let mut r = enqueue_cmd(s).args(["--to", RCPT]);
        for f in files {
            r = r.arg("--file").arg(f);
        }
        r
    };
    let cal = TestSpool::new();
    precreate_buckets(&cal, "in");
    let cal_files = write_files(&cal, 3);
    let log = cal.work().join("calibrate.log");
    bulk(&cal, &cal_files)
        .wrap(strace(&log, "openat,write,rename,syncfs", None, None))
        .run()
        .assert_ok();
    let calls = parse_trace(&log);
    let cases = [
        (
            "openat O_CREAT of the 2nd ID.tmp",
            "openat",
            when_of(&calls, "openat", 2, |c| c.line.contains("O_CREAT")),
        ),
        (
            "write of the 2nd ID.tmp",
            "write",
            when_of(&calls, "write", 2, |c| {
                fd_of(&c.line).is_some_and(|fd| fd > 2)
            }),
        ),
        ("the syncfs before the renames", "syncfs", "1".to_string()),
        (
            "the 2nd rename",
            "rename,renameat,renameat2",
            "2".to_string(),
        ),
        ("the syncfs after the renames", "syncfs", "2".to_string()),
    ];

    let s = TestSpool::new();
    precreate_buckets(&s, "in");
    let files = write_files(&s, 3);
    bulk(&s, &files).run().assert_ok();
    let before = s.entry_files();
    assert_eq!(before.len(), 3);
    for (what, sc, when) in &cases {
        let log = s.work().join("fault.log");
        let out = bulk(&s, &files)
            .wrap(strace(&log, sc, Some((sc, when)), None))
            .run();
        assert_enqueue_failed_cleanly(what, &out, &log, &s, &before, 0);
        assert_eq!(
            s.entry_files(),
            before,
            "{what}: a failed group left entries"
        );
    }

    // 520 files: the first group of 512 is committed and acknowledged, the
    // syncfs of the second group fails: 75, the 512 stay, the 8 go.
    let many = write_files(&s, 520);
    let log = s.work().join("fault.log");
    let out = bulk(&s, &many)
        .wrap(strace(&log, "syncfs", Some(("syncfs", "3")), None))
        .run();
    assert_enqueue_failed_cleanly("syncfs of the second group", &out, &log, &s, &before, 512);
    let acked: BTreeSet<EntryId> = out.ids().into_iter().collect();
    let after = s.entry_files();
    assert_eq!(
        after.len(),
        3 + 512,
        "the acknowledged group and nothing else"
    );
    let mut found = 0;
    for p in &after {
        let e = read_entry(p);
        let id = EntryId::parse(&e.id).unwrap();
        if acked.contains(&id) {
            found += 1;
            let i: usize = String::from_utf8_lossy(&e.message)
                .strip_prefix("Subject: bulk ")
                .and_then(|r| r.split('\n').next())
                .and_then(|n| n.parse().ok())
                .expect("a bulk message");
            assert!(
                i < 512,
                "{} holds message {i}, of the failed group",
                p.display()
            );
        }
    }
    assert_eq!(found, 512);
}

/// The recipients of the runner fault cases.
const FAULT_RCPTS: [&str; 3] = ["r1@example.org", "r2@example.org", "r3@example.org"];
const FAULT_MSG: &[u8] = b"Subject: fault\n\nthree recipients\n";

/// A spool with one entry in out/ for three recipients, the runner's private
/// directories and the maildir made (a fixed sequence of system calls).
fn runq_fault_spool() -> (TestSpool, EntryId, PathBuf) {
    let s = TestSpool::new();
    mkdir_spool_mode(&s.root().join(".locks"));
    mkdir_spool_mode(&s.root().join(".runners"));
    let md = s.work().join("maildir");
    for sub in ["tmp", "new", "cur"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let id = enqueue(&s, "out", &FAULT_RCPTS, FAULT_MSG);
    (s, id, md)
}

fn runq_cmd(s: &TestSpool, md: &Path) -> Tool {
    cmd("mm-runq")
        .spool(s)
        .args([
            "-q",
            "out",
            "--until-empty",
            "--write-retry",
            "1s",
            "--deliver-to",
        ])
        .arg(md)
}

/// One fault: `syscall` fails with EIO at `when` (in every thread), on
/// `path` only if given.
#[derive(Clone, Debug)]
struct Fault {
    syscall: &'static str,
    when: String,
    path_is_entry: bool,
}

/// Runs mm-runq on one entry with `fault` injected, checks the entry is in a
/// defined state, then recovers and runs again without fault, and checks it
/// was delivered to every recipient (at most one duplicate) and is gone; with
/// `check_bodies`, also that every copy carries the whole message.
fn runq_fault_case(f: &Fault, check_bodies: bool) {
    let (s, id, md) = runq_fault_spool();
    let pck = s
        .root()
        .join("out")
        .join(format!("{:02x}", id.bucket()))
        .join(format!("{id}.pck"));
    let log = s.work().join("fault.log");
    let sc = if f.syscall == "rename" && f.path_is_entry {
        "rename,renameat,renameat2"
    } else {
        f.syscall
    };
    let r = runq_cmd(&s, &md)
        .wrap(strace(
            &log,
            sc,
            Some((sc, &f.when)),
            f.path_is_entry.then_some(pck.as_path()),
        ))
        .run_timed();
    let out = &r.out;
    let ctx = format!("{f:?}\n{out}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("(INJECTED)"),
        "the fault was never injected: {ctx}"
    );
    assert!(
        matches!(out.status.code(), Some(0 | 75)),
        "the faulty run must exit 0 or 75: {ctx}"
    );

    // A defined state: one entry file (queued, deferred or claimed) that
    // decodes, in out/, or none because every recipient was delivered.
    let copies = |md: &Path| -> Vec<usize> {
        let c = maildir_copies(md);
        FAULT_RCPTS
            .iter()
            .map(|r| {
                c.get(&(id.to_string(), r.to_string()))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    };
    let live: Vec<PathBuf> = files_of(&s, &id)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "tmp"))
        .collect();
    assert!(live.len() <= 1, "the entry exists twice: {live:#?}\n{ctx}");
    for p in &live {
        assert!(
            p.starts_with(s.root().join("out")),
            "the entry left out/ for {}\n{ctx}",
            p.display()
        );
        let e = read_entry(p);
        assert_eq!(e.recipients.len(), 3, "{ctx}");
    }
    if live.is_empty() {
        assert!(
            copies(&md).iter().all(|&n| n >= 1),
            "the entry is gone but not delivered to everyone: {:?}\n{ctx}",
            copies(&md)
        );
    }

    // Recovery, then a run without fault, one day later (past any deferral).
    let day = ("MM_TEST_CLOCK_OFFSET", "86400");
    let rec = cmd("mm-recover").spool(&s).env(day.0, day.1).run();
    rec.assert_code(0);
    let again = runq_cmd(&s, &md).env(day.0, day.1).run();
    again.assert_code(0);
    assert_eq!(
        s.entry_files(),
        Vec::<PathBuf>::new(),
        "the entry (or a temporary file) is still in the spool after recovery\n{rec}\n{again}\n{ctx}"
    );
    let n = copies(&md);
    assert!(
        n.iter().all(|&c| (1..=2).contains(&c)),
        "copies per recipient {n:?}: each must be delivered, at most once more\n{again}\n{ctx}"
    );
    if check_bodies {
        for copy in std::fs::read_dir(md.join("new")).unwrap() {
            let copy = copy.unwrap().path();
            let body = std::fs::read(&copy).unwrap();
            assert!(
                body.ends_with(FAULT_MSG),
                "{} does not carry the message: {:?}\n{again}\n{ctx}",
                copy.display(),
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[test]
#[ignore = "needs strace: injects EIO into system calls"]
fn injected_eio_in_mm_runq_leaves_the_entry_recoverable_and_every_recipient_gets_it() {
    require_strace("injected_eio_in_mm_runq…");
    runq_fault_sweep(false);
}

#[test]
#[ignore = "needs strace: injects EIO into system calls"]
fn injected_eio_in_mm_runq_never_loses_the_message_of_the_remaining_recipients() {
    require_strace("injected_eio_in_mm_runq_never_loses_the_message…");
    runq_fault_sweep(true);
}

/// Every single fault of the runner's file calls on one entry (calibrated
/// from a clean run), each on its own spool, four at a time.
fn runq_fault_sweep(check_bodies: bool) {
    // Calibrate: how many of each call a thread makes on this entry.
    let (cal, _, md) = runq_fault_spool();
    let log = cal.work().join("calibrate.log");
    let out = runq_cmd(&cal, &md)
        .wrap(strace(
            &log,
            "rename,renameat,renameat2,fdatasync,fsync,write,unlink",
            None,
            None,
        ))
        .run();
    out.assert_code(0);
    assert_eq!(
        maildir_copies(&md).len(),
        FAULT_RCPTS.len(),
        "the calibration run did not deliver\n{out}"
    );
    let calls = parse_trace(&log);
    let max_per_thread = |pred: &dyn Fn(&Call) -> bool| -> usize {
        let mut per: BTreeMap<u32, usize> = BTreeMap::new();
        for c in calls.iter().filter(|c| pred(c)) {
            *per.entry(c.tid).or_default() += 1;
        }
        per.values().copied().max().unwrap_or(0)
    };
    let mut faults = Vec::new();
    // strace counts each system call on its own (`when=5` of rename is the
    // fifth rename, whatever renameat2 calls came between): so does this.
    for sc in ["rename", "renameat2", "fdatasync", "fsync", "unlink"] {
        let n = max_per_thread(&|c: &Call| c.name == sc);
        assert!(n >= 1, "no {sc} in the calibration run: {calls:#?}");
        for k in 1..=n {
            faults.push(Fault {
                syscall: sc,
                when: k.to_string(),
                path_is_entry: false,
            });
        }
        // Every call from the second on fails (a dying disk).
        faults.push(Fault {
            syscall: sc,
            when: "2+".into(),
            path_is_entry: false,
        });
    }
    // Writes: up to the last write to a file (not to stdout or stderr) of
    // any thread. (Failing writes to stderr: see the ignored test below.)
    let mut last_data_write = 0;
    let mut per: BTreeMap<u32, usize> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.name == "write") {
        let n = per.entry(c.tid).or_default();
        *n += 1;
        if fd_of(&c.line).is_some_and(|fd| fd > 2) {
            last_data_write = last_data_write.max(*n);
        }
    }
    for k in 1..=last_data_write {
        faults.push(Fault {
            syscall: "write",
            when: k.to_string(),
            path_is_entry: false,
        });
    }
    // The claim itself: the rename of ID.pck.
    faults.push(Fault {
        syscall: "rename",
        when: "1".into(),
        path_is_entry: true,
    });

    eprintln!("mm-runq fault sweep: {} faults: {faults:?}", faults.len());
    let queue = Mutex::new(faults.clone());
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                loop {
                    let Some(f) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let r = std::panic::catch_unwind(|| runq_fault_case(&f, check_bodies));
                    if let Err(e) = r {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push(format!("{f:?}: {msg}"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} injected faults lost or broke the entry:\n\n{}",
        failures.len(),
        faults.len(),
        failures.join("\n\n")
    );
}

#[test]
fn an_unwritable_stderr_does_not_turn_a_temporary_failure_into_a_crash() {
    let s = TestSpool::new();
    let missing = s.tmp().join("no-such-spool");
    let out = cmd("mm-enqueue")
        .env("MM_SPOOL", &missing)
        .args(["-f", SENDER, "--", RCPT])
        .stdin("Subject: x\n\n")
        .stderr_to(Path::new("/dev/full"))
        .run();
    out.assert_code(75);
    let out = cmd("mm-showq")
        .env("MM_SPOOL", &missing)
        .stderr_to(Path::new("/dev/full"))
        .run();
    out.assert_code(75);
}

// ---------------------------------------------------------------------------
// (e) Limits against endless and oversize input.
// ---------------------------------------------------------------------------

#[test]
fn an_endless_stdin_over_max_size_is_refused_with_65_promptly_and_enqueues_nothing() {
    let s = TestSpool::new();
    let snap = s.snapshot();
    let t = Duration::from_secs(20);
    for (max, bound) in [("1K", 1u64 << 20), ("64K", 1 << 20), ("32M", 40 << 20)] {
        let mut r = enqueue_cmd(&s);
        if max != "32M" {
            r = r.args(["--max-size", max]);
        }
        let ran = r.args(["--", RCPT]).endless_stdin().timeout(t).run_timed();
        let line = assert_refusal(&ran.out, 65);
        assert!(line.contains("--max-size"), "{line}");
        assert!(
            ran.fed <= bound,
            "--max-size {max}: mm-enqueue read {} bytes of an endless stream before refusing",
            ran.fed
        );
        snap.assert_same(
            &s.snapshot(),
            &format!("an endless stdin, --max-size {max}"),
        );
        eprintln!(
            "endless stdin, --max-size {max}: refused after {:?}, {} bytes",
            ran.took, ran.fed
        );
    }
    // An endless file, too.
    let ran = enqueue_cmd(&s)
        .args(["--max-size", "1K", "--to", RCPT, "--file", "/dev/zero"])
        .timeout(t)
        .run_timed();
    let line = assert_refusal(&ran.out, 65);
    assert!(
        line.contains("/dev/zero") && line.contains("--max-size"),
        "{line}"
    );
    // The --file path makes the queue directory first (queues are made on
    // demand); no entry and no temporary file.
    assert_eq!(s.files(), Vec::<PathBuf>::new(), "--file /dev/zero");
}

#[test]
fn too_many_recipients_are_refused_with_65_before_reading_stdin() {
    let s = TestSpool::new();
    let snap = s.snapshot();
    let ran = enqueue_cmd(&s)
        .args([
            "--max-rcpts",
            "2",
            "--",
            "a@example.org",
            "b@example.org",
            "c@example.org",
        ])
        .endless_stdin()
        .timeout(Duration::from_secs(20))
        .run_timed();
    let line = assert_refusal(&ran.out, 65);
    assert!(line.contains("--max-rcpts"), "{line}");
    // At most what the pipe buffer took: the envelope is checked first.
    assert!(ran.fed <= 1 << 20, "read {} bytes before refusing", ran.fed);
    snap.assert_same(&s.snapshot(), "--max-rcpts 2 with 3 recipients");

    // The default limit is 10,000.
    let many: Vec<String> = (0..10_001).map(|i| format!("r{i}@example.org")).collect();
    let out = enqueue_cmd(&s)
        .arg("--")
        .args(&many)
        .stdin("Subject: x\n\n")
        .run();
    let line = assert_refusal(&out, 65);
    assert!(line.contains("10001") && line.contains("10000"), "{line}");
    let out = enqueue_cmd(&s)
        .args(["--max-rcpts", "2"])
        .args(many.iter().take(3).flat_map(|r| ["--to", r.as_str()]))
        .args(["--file", "/dev/null"])
        .run();
    assert_refusal(&out, 65);
    snap.assert_same(&s.snapshot(), "too many recipients");

    // The boundary itself is accepted.
    let out = enqueue_cmd(&s)
        .args(["--max-rcpts", "2", "--", "a@example.org", "b@example.org"])
        .stdin("Subject: two\n\n")
        .run();
    out.assert_ok();
    assert_eq!(s.entry_files().len(), 1);
}
