//! What the shared file system gives mm, measured on the two mounts (host A's
//! and host B's view of one volume): the facts docs/shared-fs.md records.
//!
//! * statfs(2) f_type of the mount;
//! * renameat2(2) with RENAME_EXCHANGE (and RENAME_NOREPLACE) between two
//!   files of the mount, beside the same on the local disk;
//! * whether an exclusive flock(2) taken through mount A blocks one through
//!   mount B (and is free again once A lets go);
//! * whether a rename through A is seen at once through B;
//! * which sync calls reach the brick processes: strace(1) on every
//!   glusterfsd while the client calls syncfs(2) alone, then fdatasync(2) of
//!   the file plus fsync(2) of its directory.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustix::fs::{CWD, RenameFlags};

use super::gluster::{self, Cluster};

/// One measured fact.
pub struct Fact {
    pub what: &'static str,
    pub result: String,
}

/// Measures on `cluster`'s mounts, using `scratch` (local disk) for the
/// comparison with a local file system.
pub fn run(cluster: &Cluster, scratch: &Path) -> anyhow::Result<Vec<Fact>> {
    let a = cluster.mounts[0].join("probe");
    let b = cluster.mounts[1].join("probe");
    std::fs::create_dir_all(&a).with_context(|| format!("cannot create {}", a.display()))?;
    std::fs::create_dir_all(scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let mut facts = vec![Fact {
        what: "statfs f_type",
        result: {
            let t = gluster::fs_type(&a)?;
            format!(
                "{t:#x}{}",
                if t == gluster::FUSE_SUPER_MAGIC {
                    " (FUSE_SUPER_MAGIC)"
                } else {
                    ""
                }
            )
        },
    }];
    for (what, flags) in [
        ("renameat2 RENAME_EXCHANGE", RenameFlags::EXCHANGE),
        ("renameat2 RENAME_NOREPLACE", RenameFlags::NOREPLACE),
    ] {
        facts.push(Fact {
            what,
            result: format!(
                "on the mount: {}; on the local disk: {}",
                rename_with(&a, flags)?,
                rename_with(scratch, flags)?
            ),
        });
    }
    facts.push(Fact {
        what: "flock across mounts",
        result: flock_across(&a, &b)?,
    });
    facts.push(Fact {
        what: "rename seen through the other mount",
        result: rename_visible(&a, &b)?,
    });
    facts.push(Fact {
        what: "mkdir racing from both mounts",
        result: mkdir_race(&a, &b)?,
    });
    for (what, how) in [
        ("syncfs reaches the bricks", Sync::Syncfs),
        ("fdatasync + dir fsync reach the bricks", Sync::PerFile),
    ] {
        facts.push(Fact {
            what,
            result: sync_reaches_bricks(&a, how)?,
        });
    }
    for f in client_clock(&a)? {
        facts.push(f);
    }
    Ok(facts)
}

#[derive(Clone, Copy)]
enum Stamp {
    /// Create and write a file.
    Write,
    /// utimensat(2) with UTIME_NOW: "now" as the file system sees it.
    TouchNow,
}

/// Whose clock stamps a file's times: a third client whose clock is 600 s
/// ahead (its FUSE process under libfaketime; the kernel is this machine's)
/// creates and writes a file, then host A's mount reads its mtime, with the
/// volume's `features.ctime` (consistent time attributes, on by default)
/// on and then off.
fn client_clock(a: &Path) -> anyhow::Result<Vec<Fact>> {
    const SKEW: i64 = 600;
    let skewed = gluster::mount_skewed(SKEW)?;
    let c = skewed.path.clone();
    let result = (|| -> anyhow::Result<Vec<Fact>> {
        let mut facts = Vec::new();
        for (what, ctime, how) in [
            (
                "mtime: file written by a +600 s client, features.ctime on",
                "on",
                Stamp::Write,
            ),
            (
                "mtime: utimensat(UTIME_NOW) by it, features.ctime on",
                "on",
                Stamp::TouchNow,
            ),
            (
                "mtime: file written by it, features.ctime off",
                "off",
                Stamp::Write,
            ),
            (
                "mtime: utimensat(UTIME_NOW) by it, features.ctime off",
                "off",
                Stamp::TouchNow,
            ),
        ] {
            gluster::gluster(&["volume", "set", gluster::VOLUME, "features.ctime", ctime])?;
            // The clients switch to the new graph within a moment.
            std::thread::sleep(Duration::from_secs(2));
            let name = format!("clock-{ctime}-{}", facts.len());
            match how {
                Stamp::Write => {
                    let mut f = File::create(c.join("probe").join(&name))
                        .context("cannot create a file through the skewed client")?;
                    f.write_all(b"clock")?;
                }
                Stamp::TouchNow => {
                    // Made through A long ago, touched through the skewed client.
                    std::fs::write(a.join(&name), b"clock")?;
                    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
                    File::options()
                        .write(true)
                        .open(a.join(&name))?
                        .set_modified(old)?;
                    let now = rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_NOW,
                    };
                    let f = File::options()
                        .write(true)
                        .open(c.join("probe").join(&name))?;
                    rustix::fs::futimens(
                        &f,
                        &rustix::fs::Timestamps {
                            last_access: now,
                            last_modification: now,
                        },
                    )?;
                    // A caches the attributes it set itself (FUSE
                    // attribute timeout, 1 s by default): let them expire.
                    std::thread::sleep(Duration::from_millis(1500));
                }
            }
            let m = std::fs::metadata(a.join(&name))
                .and_then(|m| m.modified())
                .context("host A does not see the skewed client's file")?;
            let ahead = match m.duration_since(SystemTime::now()) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            let whose = if (ahead - SKEW as f64).abs() < 30.0 {
                "the writing client's clock"
            } else if ahead.abs() < 30.0 {
                "this machine's clock (the brick's, or the client's kernel)"
            } else {
                "neither clock"
            };
            facts.push(Fact {
                what,
                result: format!("{ahead:+.0} s from now, as A sees it: {whose}"),
            });
        }
        Ok(facts)
    })();
    // Back to the default whatever happened.
    let reset = gluster::gluster(&["volume", "set", gluster::VOLUME, "features.ctime", "on"]);
    drop(skewed);
    let facts = result?;
    reset?;
    Ok(facts)
}

/// renameat2 of `x` onto `y` in `dir` with `flags`: what it did. For
/// RENAME_EXCHANGE `y` exists (with it missing the kernel itself says
/// ENOENT, before the file system is asked); for RENAME_NOREPLACE `y` is
/// missing (an existing one gets EEXIST from the kernel, the same way).
fn rename_with(dir: &Path, flags: RenameFlags) -> anyhow::Result<String> {
    let (x, y) = (dir.join("rename-x"), dir.join("rename-y"));
    let exchange = flags.contains(RenameFlags::EXCHANGE);
    std::fs::write(&x, b"x").with_context(|| format!("cannot write {}", x.display()))?;
    if exchange {
        std::fs::write(&y, b"y").with_context(|| format!("cannot write {}", y.display()))?;
    }
    let result = match rustix::fs::renameat_with(CWD, &x, CWD, &y, flags) {
        Ok(()) => {
            let got = std::fs::read(&y).unwrap_or_default();
            let back = std::fs::read(&x).unwrap_or_default();
            match (exchange, got.as_slice(), back.as_slice()) {
                (true, b"x", b"y") => "works (contents swapped)".to_string(),
                (false, b"x", _) if !x.exists() => "works (renamed)".to_string(),
                _ => format!(
                    "returned 0, but the target holds {:?}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        Err(e) => format!("fails: {} ({e})", errno_name(e)),
    };
    let _ = std::fs::remove_file(&x);
    let _ = std::fs::remove_file(&y);
    Ok(result)
}

fn errno_name(e: rustix::io::Errno) -> &'static str {
    use rustix::io::Errno;
    match e {
        Errno::INVAL => "EINVAL",
        Errno::NOSYS => "ENOSYS",
        Errno::OPNOTSUPP => "EOPNOTSUPP",
        Errno::NOENT => "ENOENT",
        Errno::EXIST => "EEXIST",
        _ => "other",
    }
}

/// Whether an exclusive flock through mount A blocks one through mount B.
fn flock_across(a: &Path, b: &Path) -> anyhow::Result<String> {
    let path_a = a.join("flock");
    let path_b = b.join("flock");
    let fa =
        File::create(&path_a).with_context(|| format!("cannot create {}", path_a.display()))?;
    let fb = File::open(&path_b).with_context(|| format!("cannot open {}", path_b.display()))?;
    fa.try_lock()
        .map_err(|e| anyhow::anyhow!("cannot flock {} at all: {e}", path_a.display()))?;
    let while_held = match fb.try_lock() {
        Ok(()) => {
            let _ = fb.unlock();
            "B got it while A held it: NOT exclusive across mounts".to_string()
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            "B's LOCK_EX|LOCK_NB got EWOULDBLOCK while A held it".to_string()
        }
        Err(std::fs::TryLockError::Error(e)) => format!("B's flock failed: {e}"),
    };
    let shared = match fb.try_lock_shared() {
        Ok(()) => {
            let _ = fb.unlock();
            "B's LOCK_SH got it"
        }
        Err(_) => "B's LOCK_SH blocked too",
    };
    fa.unlock().context("cannot unlock")?;
    let after = match fb.try_lock() {
        Ok(()) => {
            let _ = fb.unlock();
            "free for B once A unlocked"
        }
        Err(_) => "still blocked for B after A unlocked",
    };
    drop(fa);
    let _ = std::fs::remove_file(&path_a);
    Ok(format!("{while_held}; {shared}; {after}"))
}

/// Writes and renames a file through A, then reads it through B at once.
fn rename_visible(a: &Path, b: &Path) -> anyhow::Result<String> {
    let mut seen = 0;
    const N: usize = 50;
    for i in 0..N {
        let tmp = a.join(format!("vis-{i}.tmp"));
        let fin = a.join(format!("vis-{i}"));
        std::fs::write(&tmp, format!("{i}")).context("cannot write through A")?;
        std::fs::rename(&tmp, &fin).context("cannot rename through A")?;
        let mut text = String::new();
        if File::open(b.join(format!("vis-{i}")))
            .and_then(|mut f| f.read_to_string(&mut text))
            .is_ok()
            && text == format!("{i}")
            && !b.join(format!("vis-{i}.tmp")).exists()
        {
            seen += 1;
        }
        let _ = std::fs::remove_file(&fin);
    }
    Ok(format!(
        "{seen} of {N} renames through A seen at once through B, content and all"
    ))
}

/// Four threads, two per mount, create the same new directory at once
/// inside a directory A has just made (as runners of both hosts create
/// `.runners/` in a new spool), 100 times; a loser of the race gets EEXIST
/// and at once lstat()s the name, as mm's `fsx::create_dir` does. Counts
/// what that lstat said.
fn mkdir_race(a: &Path, b: &Path) -> anyhow::Result<String> {
    const N: usize = 100;
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for i in 0..N {
        let parent = format!("race-{i}");
        std::fs::create_dir(a.join(&parent)).context("cannot mkdir through A")?;
        let name = format!("{parent}/.runners");
        let barrier = std::sync::Barrier::new(4);
        let results: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = [a, b, a, b]
                .iter()
                .map(|m| {
                    let path = m.join(&name);
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        match std::fs::create_dir(&path) {
                            Ok(()) => "made it".to_string(),
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                match std::fs::symlink_metadata(&path) {
                                    Ok(m) if m.is_dir() => "EEXIST, then lstat: a directory".into(),
                                    Ok(_) => "EEXIST, then lstat: not a directory".into(),
                                    Err(e) => format!("EEXIST, then lstat failed: {e}"),
                                }
                            }
                            Err(e) => format!("mkdir failed: {e}"),
                        }
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| "panicked".into()))
                .collect()
        });
        for r in results {
            *outcomes.entry(r).or_default() += 1;
        }
        let _ = std::fs::remove_dir(a.join(&name));
        let _ = std::fs::remove_dir(a.join(&parent));
    }
    Ok(format!(
        "{N} races: {}",
        outcomes
            .iter()
            .map(|(k, v)| format!("{v}x {k}"))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

#[derive(Clone, Copy)]
enum Sync {
    Syncfs,
    PerFile,
}

/// Runs strace on the bricks while a client writes a file through `dir` and
/// makes it durable the `how` way; reports the sync calls the bricks made.
fn sync_reaches_bricks(dir: &Path, how: Sync) -> anyhow::Result<String> {
    let bricks = Cluster::brick_pids();
    if bricks.is_empty() {
        anyhow::bail!(
            "no brick process (glusterfsd) of volume {} found",
            gluster::VOLUME
        );
    }
    let log = Path::new(gluster::BASE).join("strace.log");
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=fsync,fdatasync,syncfs,sync,sync_file_range",
        "-o",
    ])
    .arg(&log);
    for p in &bricks {
        cmd.arg("-p").arg(p.to_string());
    }
    let mut strace = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run strace (apt-get install strace)")?;
    // strace attaches to every thread of each brick before it traces.
    std::thread::sleep(Duration::from_millis(1500));
    let path = dir.join(match how {
        Sync::Syncfs => "sync-syncfs",
        Sync::PerFile => "sync-perfile",
    });
    let result = (|| -> anyhow::Result<String> {
        let mut f = File::create(&path)?;
        f.write_all(&[b'x'; 4096])?;
        let said = match how {
            Sync::Syncfs => {
                rustix::fs::syncfs(&f)?;
                "syncfs returned 0".to_string()
            }
            Sync::PerFile => {
                f.sync_data()?;
                File::open(dir)?.sync_all()?;
                "fdatasync and the directory's fsync returned 0".to_string()
            }
        };
        Ok(said)
    })();
    std::thread::sleep(Duration::from_millis(1000));
    // Our own child, by its pid.
    let _ = strace.kill();
    let _ = strace.wait();
    let traced = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&path);
    let said = result.context("the client's write and sync failed")?;
    let calls: Vec<String> = traced
        .lines()
        .filter_map(|l| {
            // "PID fdatasync(270) = 0" (or split as unfinished/resumed)
            let call = l.split_whitespace().nth(1)?;
            let name = call.split('(').next()?;
            (!name.starts_with('<')).then(|| name.to_string())
        })
        .collect();
    Ok(if calls.is_empty() {
        format!(
            "{said}; the {} brick processes made no sync call at all",
            bricks.len()
        )
    } else {
        format!(
            "{said}; the bricks made {} sync call(s): {}",
            calls.len(),
            calls.join(", ")
        )
    })
}
