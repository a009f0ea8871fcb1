//! A two-brick GlusterFS distribute volume on loopback, mounted twice
//! through FUSE: host A's and host B's view of one shared spool.
//!
//! Fixed names (volume `mmtest`, bricks under [`BASE`], mounts at
//! [`MOUNTS`]), so a run that was killed before its teardown is cleaned up
//! by the next one before it starts. [`Cluster`]'s `Drop` unmounts both
//! views, stops and deletes the volume (which ends the brick processes),
//! stops glusterd if this run (or an interrupted earlier one) started it, and
//! removes the bricks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::sys::{self, run, run_ok, wait_until};

/// The volume's name.
pub const VOLUME: &str = "mmtest";
/// The address glusterd, the bricks and the clients use. gluster refuses
/// 127.0.0.1 ("provide a valid hostname/ip other than localhost"), but
/// takes another address of the loopback range: nothing leaves the machine.
pub const SERVER: &str = "127.0.0.2";
/// Bricks, and the run's scratch files (on the local disk, never a mount).
pub const BASE: &str = "/var/tmp/mm-xtask-cluster";
/// Host A's and host B's mount points (outside [`BASE`], so removing it
/// never reaches into a mounted volume).
pub const MOUNTS: [&str; 2] = ["/mnt/mm-cluster-a", "/mnt/mm-cluster-b"];
/// The probe's third mount, whose FUSE client runs with a skewed clock.
pub const SKEWED_MOUNT: &str = "/mnt/mm-cluster-c";
/// glusterd's pid file when this harness starts it.
const GLUSTERD_PID: &str = "/run/mm-xtask-glusterd.pid";
/// Longest a gluster command may take.
const GLUSTER_TIMEOUT: Duration = Duration::from_secs(60);

/// FUSE's statfs(2) f_type.
pub const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;

/// The running volume and its two mounts; all taken down on drop.
pub struct Cluster {
    /// Mount point of host A (index 0) and host B (index 1).
    pub mounts: [PathBuf; 2],
    /// Whether glusterd is ours to stop.
    own_glusterd: bool,
    /// Keep the bricks (for a look after the run).
    keep: bool,
    torn_down: bool,
}

impl Cluster {
    /// Cleans up what an interrupted run left, starts glusterd if needed,
    /// creates and starts the volume and mounts it twice.
    pub fn start(keep: bool) -> anyhow::Result<Cluster> {
        kill_leftover_tools();
        unmount_ours();
        let own_glusterd = ensure_glusterd()?;
        // From here on, a failure still tears down what was made.
        let cluster = Cluster {
            mounts: MOUNTS.map(PathBuf::from),
            own_glusterd,
            keep,
            torn_down: false,
        };
        if gluster(&["volume", "info", VOLUME]).is_ok() {
            println!("cluster: removing volume {VOLUME} left by an earlier run");
            remove_volume();
        }
        let base = Path::new(BASE);
        if base.exists() {
            std::fs::remove_dir_all(base)
                .with_context(|| format!("cannot remove {} (left by an earlier run)", BASE))?;
        }
        let bricks: Vec<PathBuf> = ["b1", "b2"]
            .iter()
            .map(|b| base.join("bricks").join(b))
            .collect();
        for b in &bricks {
            std::fs::create_dir_all(b)
                .with_context(|| format!("cannot create brick {}", b.display()))?;
        }
        let mut create = vec!["volume".to_string(), "create".into(), VOLUME.into()];
        create.extend(bricks.iter().map(|b| format!("{SERVER}:{}", b.display())));
        // force: the bricks are on the root file system, which gluster
        // otherwise refuses.
        create.push("force".into());
        gluster(&create.iter().map(String::as_str).collect::<Vec<_>>())?;
        gluster(&["volume", "start", VOLUME])?;
        for m in &cluster.mounts {
            std::fs::create_dir_all(m)
                .with_context(|| format!("cannot create mount point {}", m.display()))?;
            run_ok(
                Command::new("mount")
                    .args(["-t", "glusterfs"])
                    .arg(format!("{SERVER}:/{VOLUME}"))
                    .arg(m),
                b"",
                GLUSTER_TIMEOUT,
            )?;
            wait_until("the FUSE mount", Duration::from_secs(20), || {
                Ok((fs_type(m).ok() == Some(FUSE_SUPER_MAGIC)).then_some(()))
            })?;
        }
        Ok(cluster)
    }

    /// The version line of glusterfs.
    pub fn version() -> String {
        run(
            Command::new("glusterfs").arg("--version"),
            b"",
            Duration::from_secs(10),
        )
        .map(|f| f.out().lines().next().unwrap_or("").to_string())
        .unwrap_or_default()
    }

    /// The pids of the volume's brick processes (glusterfsd).
    pub fn brick_pids() -> Vec<u32> {
        processes(|cmdline| {
            cmdline.first().is_some_and(|p| p.ends_with("glusterfsd"))
                && cmdline
                    .iter()
                    .any(|a| a.starts_with(&format!("{VOLUME}.{SERVER}.")))
        })
    }

    /// Takes everything down; also done by drop. Errors are printed, not
    /// returned: every step is tried.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        sys::begin_cleanup();
        unmount_ours();
        remove_volume();
        if self.own_glusterd {
            stop_glusterd();
        }
        for m in self
            .mounts
            .iter()
            .map(PathBuf::as_path)
            .chain([Path::new(SKEWED_MOUNT)])
        {
            let _ = std::fs::remove_dir(m);
        }
        if self.keep {
            println!("cluster: kept {BASE} (bricks, sink files, logs)");
        } else if let Err(e) = std::fs::remove_dir_all(BASE) {
            eprintln!("cluster: warning: cannot remove {BASE}: {e}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Mounts the volume at [`SKEWED_MOUNT`] through a FUSE client whose clock
/// is `secs` ahead: glusterfs run directly with libfaketime preloaded
/// (mount.glusterfs loses `LD_PRELOAD` on the way). Unmounted on drop.
pub fn mount_skewed(secs: i64) -> anyhow::Result<SkewedMount> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .map(|d| Path::new(d).join("faketime/libfaketime.so.1"))
    .find(|p| p.exists())
    .context("no libfaketime.so.1 (apt-get install faketime)")?;
    let at = PathBuf::from(SKEWED_MOUNT);
    std::fs::create_dir_all(&at).with_context(|| format!("cannot create {}", at.display()))?;
    run_ok(
        Command::new("glusterfs")
            .args(["--process-name", "fuse"])
            .arg(format!("--volfile-server={SERVER}"))
            .arg(format!("--volfile-id=/{VOLUME}"))
            .arg(&at)
            .env("LD_PRELOAD", &lib)
            .env("FAKETIME", format!("{secs:+}s"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        b"",
        GLUSTER_TIMEOUT,
    )?;
    let mount = SkewedMount { path: at };
    wait_until("the skewed FUSE mount", Duration::from_secs(20), || {
        Ok((fs_type(&mount.path).ok() == Some(FUSE_SUPER_MAGIC)).then_some(()))
    })?;
    Ok(mount)
}

/// The volume mounted through a FUSE client with a skewed clock.
pub struct SkewedMount {
    pub path: PathBuf,
}

impl Drop for SkewedMount {
    fn drop(&mut self) {
        let t = Duration::from_secs(30);
        if run_ok(Command::new("umount").arg(&self.path), b"", t).is_err()
            && let Err(e) = run_ok(Command::new("umount").arg("-l").arg(&self.path), b"", t)
        {
            eprintln!(
                "cluster: warning: cannot unmount {}: {e:#}",
                self.path.display()
            );
        }
    }
}

/// statfs(2) f_type of the file system at `path`.
pub fn fs_type(path: &Path) -> anyhow::Result<u64> {
    let st = rustix::fs::statfs(path).with_context(|| format!("statfs {}", path.display()))?;
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as u64)
}

/// Runs `gluster --mode=script ARGS`; fails unless it exits 0.
pub fn gluster(args: &[&str]) -> anyhow::Result<String> {
    let done = run_ok(
        Command::new("gluster").arg("--mode=script").args(args),
        b"",
        GLUSTER_TIMEOUT,
    )?;
    Ok(done.out())
}

/// Kills what a run killed before its teardown left running: mm tools whose
/// spool is in one of our mounts, and smtp-sinks writing below [`BASE`]
/// (both only ever started by this harness).
fn kill_leftover_tools() {
    let ours = |args: &[String]| {
        let prog = args.first().map(String::as_str).unwrap_or("");
        let mm = prog
            .rsplit('/')
            .next()
            .is_some_and(|p| p.starts_with("mm-"))
            || prog.ends_with("faketime");
        let spool_in_mount = args.iter().any(|a| {
            MOUNTS
                .iter()
                .chain([&SKEWED_MOUNT])
                .any(|m| a.starts_with(m))
        });
        let sink_in_base = prog.ends_with("smtp-sink") && args.iter().any(|a| a.starts_with(BASE));
        (mm && spool_in_mount) || sink_in_base
    };
    for pid in processes(ours) {
        if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
            println!("cluster: killing process {pid}, left by an earlier run");
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
    }
}

/// Unmounts our two mount points, and any other mount of our volume.
fn unmount_ours() {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let source = format!("{SERVER}:/{VOLUME}");
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(src), Some(at)) = (f.next(), f.next()) else {
            continue;
        };
        if src != source && !MOUNTS.contains(&at) && at != SKEWED_MOUNT {
            continue;
        }
        let t = Duration::from_secs(30);
        if run_ok(Command::new("umount").arg(at), b"", t).is_err() {
            // Busy (a process of ours still in it): detach it now, freed
            // when the last user goes.
            if let Err(e) = run_ok(Command::new("umount").arg("-l").arg(at), b"", t) {
                eprintln!("cluster: warning: cannot unmount {at}: {e:#}");
            }
        }
    }
}

/// Stops and deletes the volume, if it exists.
fn remove_volume() {
    if gluster(&["volume", "info", VOLUME]).is_err() {
        return;
    }
    if let Err(e) = gluster(&["volume", "stop", VOLUME, "force"]) {
        eprintln!("cluster: warning: {e:#}");
    }
    if let Err(e) = gluster(&["volume", "delete", VOLUME]) {
        eprintln!("cluster: warning: {e:#}");
    }
}

/// Starts glusterd unless one runs; returns whether it is ours to stop (we
/// started it, now or in an interrupted earlier run: its pid file says so).
fn ensure_glusterd() -> anyhow::Result<bool> {
    if let Some(pid) = our_glusterd() {
        println!("cluster: glusterd {pid} started by an earlier run is still running; reusing it");
        return Ok(true);
    }
    if !processes(|c| c.first().is_some_and(|p| p.ends_with("glusterd"))).is_empty() {
        println!("cluster: using the glusterd already running (left running at the end)");
        return Ok(false);
    }
    // No systemd or init script here: glusterd daemonizes itself.
    run_ok(
        Command::new("glusterd").args(["-p", GLUSTERD_PID]),
        b"",
        GLUSTER_TIMEOUT,
    )?;
    wait_until("glusterd to answer", Duration::from_secs(30), || {
        Ok(gluster(&["volume", "list"]).is_ok().then_some(()))
    })?;
    Ok(true)
}

/// The pid of a live glusterd that this harness started.
fn our_glusterd() -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(GLUSTERD_PID)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (comm.trim() == "glusterd").then_some(pid)
}

/// Stops the glusterd we started, by its pid, and waits for it to go.
fn stop_glusterd() {
    let Some(pid) = our_glusterd() else {
        return;
    };
    if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
    }
    let gone = wait_until("glusterd to stop", Duration::from_secs(20), || {
        Ok(our_glusterd().is_none().then_some(()))
    });
    if gone.is_err() {
        eprintln!("cluster: warning: glusterd {pid} did not stop");
    } else {
        let _ = std::fs::remove_file(GLUSTERD_PID);
    }
}

/// The pids of the processes whose command line (split at NULs) `want` accepts.
fn processes(want: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            want(&args)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether `name` is a program in `$PATH` or /usr/sbin.
pub fn in_path(name: &str) -> bool {
    let mut dirs = vec![PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.iter().any(|d| d.join(name).is_file())
}

/// apt-get installs the packages of `need` (name, program that shows it is
/// there) whose program is missing.
pub fn install_missing(need: &[(&str, &str)]) -> anyhow::Result<()> {
    let missing: Vec<&str> = need
        .iter()
        .filter(|(_, prog)| !in_path(prog))
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("cluster: apt-get install {}", missing.join(" "));
    let t = Duration::from_secs(600);
    run_ok(
        Command::new("apt-get").args(["update", "-qq"]),
        b"",
        Duration::from_secs(300),
    )?;
    // postfix (smtp-sink) asks what it is for unless told.
    run_ok(
        &mut Command::new("debconf-set-selections"),
        b"postfix postfix/main_mailer_type select No configuration\n",
        Duration::from_secs(30),
    )?;
    run_ok(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        b"",
        t,
    )?;
    for (pkg, prog) in need {
        if !in_path(prog) {
            bail!("apt-get installed {pkg}, but there is still no {prog}");
        }
    }
    Ok(())
}
