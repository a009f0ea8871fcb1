//! `cargo xtask cluster`: mm's claims across hosts, on a real distributed
//! file system (issue 11).
//!
//! A GlusterFS distribute volume of two bricks on loopback is mounted twice
//! through FUSE (`gluster.rs`): host A and host B, each running the tools
//! with its own `MM_HOST` and `--spool` in its own mount. Postfix's
//! smtp-sink is the SMTP server; it saves every transaction (`-d`), and
//! every recipient of every enqueued message is counted there (keyed by
//! Message-ID and address, see [`account`]). First the file system itself is
//! measured (`probe.rs`), then the scenarios (`scenarios.rs`) run, each in
//! its own spool directory and with its own sink:
//!
//! 1. `enqueue`: concurrent enqueue from both mounts, single messages and
//!    `--file` groups, then one drain;
//! 2. `drain`: unsliced and sliced runners on both hosts draining one queue;
//! 3. `kill`: kill -9 of host A's runner mid-delivery, recovery by B after
//!    the lease;
//! 4. `freeze`: host A's runner stopped (SIGSTOP) past its lease, recovered
//!    by B, then resumed (SIGCONT);
//! 5. `skew`: host B's clock 10 minutes ahead (faketime) while A's runner is
//!    live.
//!
//! Each scenario ends with everything stopped and a last recovery and drain,
//! then is counted: lost (a recipient never delivered and no longer in any
//! queue), still queued, and duplicates (copies beyond one). Duplicates are
//! allowed only for the transaction in flight when a runner was killed or
//! frozen (the newest transaction smtp-sink saved from it, taken after the
//! signal): those are counted apart. The run fails if any scenario lost or
//! left mail, or has duplicates the in-flight transaction does not explain.
//!
//! Leases: `mm-recover --lease 20s` stands for "the lease has passed" (B
//! recovers 22 s after A stopped renewing). mm-runq has no `--lease` today
//! (its runners register with the 300 s `DEFAULT_LEASE` and renew every 75
//! s); if its `--help` shows one, every runner gets `--lease 20s`.
//!
//! Root only: it installs packages, starts glusterd and mounts.

mod gluster;
mod probe;
mod scenarios;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::sys::{self, run_ok, wait_until};
use gluster::Cluster;
use mm_e2e::{Dump, SmtpSink};

/// The tools the run uses.
const TOOLS: [&str; 5] = [
    "mm-enqueue",
    "mm-runq",
    "mm-showq",
    "mm-recover",
    "mm-dumpdb",
];
/// Longest any one short tool run may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a runner may take to drain a scenario's queue.
const RUNNER_TIMEOUT: Duration = Duration::from_secs(120);
/// The lease the scenarios give `mm-recover` (and `mm-runq`, if it takes one).
const LEASE: &str = "20s";
/// How long after a runner last renewed before it is past [`LEASE`] for sure.
const PAST_LEASE: Duration = Duration::from_secs(22);
/// smtp-sink's user (it will not keep root's privileges).
const SINK_USER: &str = "nobody";
/// Debian packages and a program that shows each is installed.
const PACKAGES: [(&str, &str); 6] = [
    ("glusterfs-server", "glusterd"),
    ("glusterfs-client", "mount.glusterfs"),
    ("faketime", "faketime"),
    ("postfix", "smtp-sink"),
    ("strace", "strace"),
    ("util-linux", "mount"),
];

/// A scenario: its name on the command line and its function.
pub struct Scenario {
    pub name: &'static str,
    pub title: &'static str,
    pub run: fn(&mut Ctx) -> anyhow::Result<Expect>,
}

/// Every scenario, in the order they run.
pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "enqueue",
        title: "concurrent enqueue from both mounts (single and --file groups)",
        run: scenarios::enqueue,
    },
    Scenario {
        name: "drain",
        title: "unsliced and sliced runners on both hosts drain one queue",
        run: scenarios::drain,
    },
    Scenario {
        name: "kill",
        title: "kill -9 of A's runner mid-delivery, recovery by B after the lease",
        run: scenarios::kill,
    },
    Scenario {
        name: "freeze",
        title: "A's runner frozen (SIGSTOP) past its lease, recovered by B, resumed",
        run: scenarios::freeze,
    },
    Scenario {
        name: "skew",
        title: "host B's clock 10 minutes ahead while A's runner is live",
        run: scenarios::skew,
    },
];

/// Runs the harness from the workspace at `root`: `only` names scenarios
/// (or `probe`; all when empty); `keep` keeps the bricks and logs.
pub fn run(root: &Path, only: &[String], keep: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    if !mm_e2e::is_root() {
        bail!(
            "cargo xtask cluster must run as root: it installs packages, starts glusterd and \
             mounts a GlusterFS volume twice"
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("cargo xtask cluster needs FUSE, and there is no /dev/fuse here");
    }
    let known: Vec<&str> = std::iter::once("probe")
        .chain(SCENARIOS.iter().map(|s| s.name))
        .collect();
    if let Some(bad) = only.iter().find(|o| !known.contains(&o.as_str())) {
        bail!("no scenario {bad:?}: known are {}", known.join(", "));
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    gluster::install_missing(&PACKAGES)?;
    sys::catch_interrupts()?;
    let bin = sys::build(root, &TOOLS)?;
    let lease_flag = runq_takes_lease(&bin)?;
    let built = started.elapsed();
    let started = Instant::now();

    let mut cluster = Cluster::start(keep)?;
    println!(
        "cluster: {}: volume {} (distribute, 2 bricks on {}) mounted through FUSE at {} (host \
         A) and {} (host B)",
        Cluster::version(),
        gluster::VOLUME,
        gluster::SERVER,
        cluster.mounts[0].display(),
        cluster.mounts[1].display()
    );
    if !lease_flag {
        println!(
            "cluster: mm-runq has no --lease: runners keep the 300 s DEFAULT_LEASE (renewed \
             every 75 s); recovery uses mm-recover --lease {LEASE}"
        );
    }
    let result = run_scenarios(&cluster, &bin, lease_flag, &wanted);
    cluster.teardown();
    let reports = result?;
    let failed: Vec<&Report> = reports.iter().filter(|r| !r.passed()).collect();
    println!(
        "cluster: {} scenario(s) in {:.0} s, with the cluster's setup and teardown (+ {:.0} s \
         of install and build); cluster torn down",
        reports.len(),
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} scenario(s) failed: {}",
            failed.len(),
            reports.len(),
            failed.iter().map(|r| r.name).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// The probe, then each wanted scenario; the reports of those that ran.
fn run_scenarios(
    cluster: &Cluster,
    bin: &Path,
    lease_flag: bool,
    wanted: &dyn Fn(&str) -> bool,
) -> anyhow::Result<Vec<Report>> {
    let base = Path::new(gluster::BASE);
    if wanted("probe") {
        println!("cluster: probe: what the FUSE mount gives");
        for f in probe::run(cluster, &base.join("probe"))? {
            println!("  {:<40} {}", f.what, f.result);
        }
    }
    let mut reports = Vec::new();
    for s in SCENARIOS.iter().filter(|s| wanted(s.name)) {
        let t = Instant::now();
        println!("cluster: {}: {}", s.name, s.title);
        let mut ctx = Ctx::new(cluster, bin, lease_flag, s.name)?;
        let expect = (s.run)(&mut ctx).with_context(|| format!("scenario {}", s.name))?;
        println!("  - runners: {}", ctx.exits());
        ctx.stop_runners();
        let report = account(&ctx, s.name, &expect)?;
        report.print(t.elapsed());
        reports.push(report);
    }
    Ok(reports)
}

/// Whether this mm-runq takes `--lease` (and [`LEASE`] as its value: a
/// dry run on an empty scratch spool).
fn runq_takes_lease(bin: &Path) -> anyhow::Result<bool> {
    let help = run_ok(
        Command::new(bin.join("mm-runq")).arg("--help"),
        b"",
        TOOL_TIMEOUT,
    )?;
    if !help.out().contains("--lease") {
        return Ok(false);
    }
    let scratch = tempfile::tempdir().context("cannot make a scratch spool")?;
    let tried = sys::run(
        Command::new(bin.join("mm-runq"))
            .arg("--spool")
            .arg(scratch.path())
            .args(["--lease", LEASE, "--dry-run"]),
        b"",
        TOOL_TIMEOUT,
    )?;
    if !tried.status.success() {
        println!(
            "cluster: mm-runq has --lease but refuses --lease {LEASE} ({}); runners keep their \
             default lease",
            sys::one_line(&tried.err())
        );
    }
    Ok(tried.status.success())
}

/// One host: its name (`MM_HOST`), its mount, and its clock's skew.
#[derive(Clone)]
pub struct Host {
    pub name: &'static str,
    mount: PathBuf,
    bin: PathBuf,
    /// Seconds the host's clock is ahead (faketime), if skewed.
    skew: Option<i64>,
}

impl Host {
    /// This host with its clock `secs` ahead, seeing the volume through
    /// `mount` (whose FUSE client has the same skew).
    pub fn skewed(&self, secs: i64, mount: &Path) -> Host {
        Host {
            skew: Some(secs),
            mount: mount.to_path_buf(),
            ..self.clone()
        }
    }

    /// A command running tool `name` on this host's view of `spool` (a
    /// directory name inside the mount).
    pub fn tool(&self, spool: &str, name: &str) -> Command {
        let bin = self.bin.join(name);
        let mut cmd = match self.skew {
            Some(secs) => {
                let mut c = Command::new("faketime");
                c.arg("-f").arg(format!("{secs:+}s")).arg(bin);
                // Only the wall clock: sleeps and timeouts keep real time.
                c.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("--spool")
            .arg(self.mount.join(spool))
            .env("MM_HOST", self.name)
            .env_remove("MM_SPOOL")
            .env_remove("MM_TEST_NOW")
            .env_remove("MM_TEST_CLOCK_OFFSET")
            .env_remove("MM_TEST_CRASH_AT")
            .current_dir("/");
        cmd
    }
}

/// What a scenario works with.
pub struct Ctx {
    pub a: Host,
    pub b: Host,
    /// The spool's directory name in each mount.
    pub spool: String,
    /// Local scratch directory (message files, logs).
    pub dir: PathBuf,
    /// Whether mm-runq takes `--lease`.
    pub lease_flag: bool,
    sink_dir: PathBuf,
    sink: Option<SmtpSink>,
    runners: Vec<Runner>,
    next_msg: usize,
}

impl Ctx {
    fn new(cluster: &Cluster, bin: &Path, lease_flag: bool, name: &str) -> anyhow::Result<Ctx> {
        let host = |name, mount: &PathBuf| Host {
            name,
            mount: mount.clone(),
            bin: bin.to_path_buf(),
            skew: None,
        };
        for m in &cluster.mounts {
            if gluster::fs_type(m)? != gluster::FUSE_SUPER_MAGIC {
                bail!(
                    "{} is no longer a FUSE mount (did its client die?)",
                    m.display()
                );
            }
        }
        let dir = Path::new(gluster::BASE).join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // smtp-sink runs as nobody and writes below it.
        for d in [Path::new(gluster::BASE), &dir] {
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .with_context(|| format!("cannot chmod {}", d.display()))?;
        }
        let spool = cluster.mounts[0].join(name);
        std::fs::create_dir(&spool)
            .with_context(|| format!("cannot create {}", spool.display()))?;
        Ok(Ctx {
            a: host("hosta", &cluster.mounts[0]),
            b: host("hostb", &cluster.mounts[1]),
            spool: name.to_string(),
            sink_dir: dir.join("sink"),
            dir,
            lease_flag,
            sink: None,
            runners: Vec::new(),
            next_msg: 0,
        })
    }

    /// Starts the scenario's smtp-sink with `extra` options (`-W .:1`: a
    /// second before each end-of-data reply, so a runner can be caught
    /// mid-delivery).
    pub fn start_sink(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        sys::check_interrupted()?;
        self.sink = Some(SmtpSink::saving(&self.sink_dir, SINK_USER, extra)?);
        Ok(())
    }

    fn sink(&self) -> anyhow::Result<&SmtpSink> {
        self.sink
            .as_ref()
            .context("the scenario started no smtp-sink")
    }

    /// The `--smtp` URL of the sink, with `label` as the EHLO name (which
    /// runner sent a transaction).
    pub fn smtp_url(&self, label: &str) -> anyhow::Result<String> {
        Ok(format!(
            "smtp://127.0.0.1:{}?helo={label}",
            self.sink()?.port()
        ))
    }

    /// New test messages: `n`, each to `rcpts` recipients (the same
    /// addresses for every message when `shared`, as a `--file` group has).
    pub fn messages(&mut self, n: usize, rcpts: usize, shared: bool) -> Vec<Msg> {
        let first = self.next_msg;
        self.next_msg += n;
        (first..first + n)
            .map(|i| Msg {
                id: format!("{}-{i:04}@cluster.test", self.spool),
                sender: format!("owner-{}@cluster.test", self.spool),
                rcpts: (0..rcpts)
                    .map(|r| {
                        if shared {
                            format!("g{first}-r{r}@rcpt.test")
                        } else {
                            format!("m{i}-r{r}@rcpt.test")
                        }
                    })
                    .collect(),
            })
            .collect()
    }

    /// Runs tool `name` with `args` on `host`; fails unless it exits 0.
    pub fn tool(&self, host: &Host, name: &str, args: &[&str]) -> anyhow::Result<sys::Finished> {
        run_ok(host.tool(&self.spool, name).args(args), b"", TOOL_TIMEOUT)
    }

    /// Enqueues `m` on `host` by standard input (into out/); returns the id.
    pub fn enqueue(&self, host: &Host, m: &Msg) -> anyhow::Result<String> {
        let mut cmd = host.tool(&self.spool, "mm-enqueue");
        cmd.args(["-q", "out", "-f", &m.sender]);
        for r in &m.rcpts {
            cmd.args(["--to", r]);
        }
        let done = run_ok(&mut cmd, &m.text(), TOOL_TIMEOUT)?;
        Ok(done.out().trim().to_string())
    }

    /// Enqueues `msgs` (one envelope: the first's) on `host` as one
    /// `mm-enqueue --file` group; returns the ids printed.
    pub fn enqueue_group(&self, host: &Host, msgs: &[Msg]) -> anyhow::Result<Vec<String>> {
        let first = msgs.first().context("an empty group")?;
        let mut cmd = host.tool(&self.spool, "mm-enqueue");
        cmd.args(["-q", "out", "-f", &first.sender]);
        for r in &first.rcpts {
            cmd.args(["--to", r]);
        }
        for m in msgs {
            let path = self.dir.join(format!("{}.eml", m.id));
            std::fs::write(&path, m.text())
                .with_context(|| format!("cannot write {}", path.display()))?;
            cmd.arg("--file").arg(path);
        }
        let done = run_ok(&mut cmd, b"", TOOL_TIMEOUT)?;
        Ok(done.out().split_whitespace().map(str::to_string).collect())
    }

    /// Starts a runner of out/ on `host` (`--until-empty`), sending as `label`.
    pub fn start_runner(
        &mut self,
        host: &Host,
        label: &str,
        extra: &[&str],
    ) -> anyhow::Result<usize> {
        let log = self.dir.join(format!("{label}.log"));
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = host.tool(&self.spool, "mm-runq");
        cmd.args([
            "-q",
            "out",
            "--until-empty",
            "--smtp",
            &self.smtp_url(label)?,
        ])
        .args(["--retry-min", "1s", "--retry-max", "2s"])
        .args(extra);
        if self.lease_flag {
            cmd.args(["--lease", LEASE]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot run {}", sys::shown(&cmd)))?;
        self.runners.push(Runner {
            label: label.to_string(),
            child,
            log,
            exited: None,
        });
        Ok(self.runners.len() - 1)
    }

    /// Runner `i`.
    pub fn runner(&mut self, i: usize) -> &mut Runner {
        &mut self.runners[i]
    }

    /// Waits for every runner to exit (a stopped one is woken first); kills
    /// those still running after [`RUNNER_TIMEOUT`].
    pub fn wait_runners(&mut self) -> anyhow::Result<()> {
        for r in &mut self.runners {
            r.wait(RUNNER_TIMEOUT)?;
        }
        Ok(())
    }

    /// How each runner ended: "LABEL exit N" or "LABEL killed".
    fn exits(&mut self) -> String {
        self.runners
            .iter_mut()
            .map(|r| {
                r.running();
                let how = match r.exited {
                    None => "still running".to_string(),
                    Some(s) => {
                        match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                            (Some(0), _) => "exit 0".to_string(),
                            // Say why: the log's lines that are not per-entry successes.
                            (Some(c), _) => format!("exit {c} ({})", r.problems()),
                            (None, Some(9)) => "killed".to_string(),
                            (None, Some(sig)) => format!("signal {sig}"),
                            (None, None) => s.to_string(),
                        }
                    }
                };
                format!("{} {how}", r.label)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Kills what still runs (a scenario that failed half way).
    fn stop_runners(&mut self) {
        for r in &mut self.runners {
            r.kill();
        }
    }

    /// The transactions smtp-sink saved so far.
    pub fn dumps(&self) -> anyhow::Result<Vec<Dump>> {
        self.sink()?.dumps()
    }

    /// Waits until smtp-sink has saved at least `n` transactions from `label`.
    pub fn wait_dumps_from(&self, label: &str, n: usize) -> anyhow::Result<()> {
        wait_until(
            &format!("{n} transaction(s) from {label}"),
            Duration::from_secs(60),
            || {
                let got = self
                    .dumps()
                    .map(|d| d.iter().filter(|d| d.helo == label).count())
                    .unwrap_or(0);
                Ok((got >= n).then_some(()))
            },
        )
    }

    /// The recipients of the newest transaction smtp-sink saved from
    /// `label`: the one in flight when that runner was stopped or killed
    /// (call a moment after the signal, once the sink has written it).
    pub fn in_flight(&self, label: &str) -> anyhow::Result<BTreeSet<Key>> {
        let dumps = self.dumps()?;
        let newest = dumps
            .iter()
            .filter(|d| d.helo == label)
            .max_by_key(|d| d.modified.unwrap_or(SystemTime::UNIX_EPOCH));
        Ok(newest.map(keys_of).unwrap_or_default())
    }

    /// The runner records in the spool, as host B sees them: token and age
    /// of the modification time (by this machine's clock).
    pub fn records(&self) -> Vec<(String, Duration)> {
        let dir = self.b.mount.join(&self.spool).join(".runners");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| {
            let e = e.ok()?;
            let age = e
                .metadata()
                .ok()?
                .modified()
                .ok()
                .and_then(|m| SystemTime::now().duration_since(m).ok())
                .unwrap_or_default();
            Some((e.file_name().to_string_lossy().into_owned(), age))
        })
        .collect()
    }

    /// `mm-recover` on `host` (with `args`): its summary line ("N
    /// recovered, ... N busy, ...").
    pub fn recover(&self, host: &Host, args: &[&str]) -> anyhow::Result<String> {
        let out = self.tool(host, "mm-recover", args)?.out();
        Ok(out
            .lines()
            .find(|l| l.contains(" recovered, "))
            .unwrap_or("(no summary)")
            .to_string())
    }

    /// Whether any queue of the spool still holds an entry.
    pub fn spool_holds_entries(&self) -> anyhow::Result<bool> {
        let out = self.tool(&self.b, "mm-showq", &["--json"])?.out();
        for l in out.lines() {
            let row: Value =
                serde_json::from_str(l).with_context(|| format!("mm-showq printed {l}"))?;
            let held: u64 = ["queued", "deferred", "claimed", "preserved", "writing"]
                .iter()
                .filter_map(|f| row[*f].as_u64())
                .sum();
            if held > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.stop_runners();
    }
}

/// A runner process we started.
pub struct Runner {
    pub label: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Runner {
    /// Sends `sig` to it (our own child, by its pid).
    pub fn signal(&self, sig: rustix::process::Signal) -> anyhow::Result<()> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, sig)
            .with_context(|| format!("cannot signal {}", self.label))
    }

    /// kill -9.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }

    /// Waits for it to exit, at most `within`; kills it after that.
    pub fn wait(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        if let Some(s) = self.exited {
            return Ok(s);
        }
        let _ = self.signal(rustix::process::Signal::CONT);
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                self.exited = Some(s);
                return Ok(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "{} did not finish within {} s; killed. Its log: {}",
                    self.label,
                    within.as_secs(),
                    self.log_tail()
                );
            }
            sys::check_interrupted()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it has exited (without waiting).
    pub fn running(&mut self) -> bool {
        if self.exited.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.exited = Some(s);
        }
        self.exited.is_none()
    }

    /// The lines of its log that tell of trouble, in one line.
    fn problems(&self) -> String {
        let text = self.log_text();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| !l.contains(" done ") && !l.contains(" 0 errors"))
            .take(3)
            .collect();
        if bad.is_empty() {
            self.log_tail()
        } else {
            bad.join(" | ")
        }
    }

    /// Its log (standard output and error).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }
}

/// A test message.
#[derive(Clone, Debug)]
pub struct Msg {
    /// Its Message-ID, without the angle brackets.
    pub id: String,
    pub sender: String,
    pub rcpts: Vec<String>,
}

impl Msg {
    /// The message (LF line ends, as an MTA's pipe gives it).
    fn text(&self) -> Vec<u8> {
        format!(
            "From: {}\nTo: list@cluster.test\nSubject: cluster test {}\nMessage-ID: <{}>\n\n\
             A test message of cargo xtask cluster.\n",
            self.sender, self.id, self.id
        )
        .into_bytes()
    }

    /// Its (Message-ID, recipient) pairs.
    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.rcpts.iter().map(|r| (self.id.clone(), r.clone()))
    }
}

/// One copy to account for: (Message-ID, recipient).
pub type Key = (String, String);

fn keys_of(d: &Dump) -> BTreeSet<Key> {
    let id = mm_e2e::message_id(&d.data).unwrap_or_default();
    d.rcpts.iter().map(|r| (id.clone(), r.clone())).collect()
}

/// What a scenario enqueued and what it did.
#[derive(Default)]
pub struct Expect {
    /// Every copy that must arrive once.
    pub keys: BTreeSet<Key>,
    /// Copies in flight at a kill or freeze: each may arrive twice.
    pub in_flight: BTreeSet<Key>,
    /// What happened along the way, for the report.
    pub notes: Vec<String>,
}

impl Expect {
    /// Adds `msgs`' recipients to what must arrive.
    pub fn add(&mut self, msgs: &[Msg]) {
        for m in msgs {
            self.keys.extend(m.keys());
        }
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  - {text}");
        self.notes.push(text);
    }
}

/// A scenario's accounting.
pub struct Report {
    pub name: &'static str,
    /// Copies expected.
    pub expected: usize,
    /// Arrived exactly once.
    pub once: usize,
    /// Never arrived, and in no queue.
    pub lost: Vec<Key>,
    /// Never arrived, still pending in a queue.
    pub queued: Vec<Key>,
    /// Copies beyond one, all told.
    pub duplicates: usize,
    /// Of those, copies of the transaction in flight at a kill or freeze.
    pub in_flight_dups: usize,
    /// How many copies were in flight (so allowed twice).
    pub in_flight: usize,
    /// Copies nobody enqueued.
    pub strangers: usize,
    /// Transactions smtp-sink saved, by runner (EHLO name).
    pub by_runner: BTreeMap<String, (usize, usize)>,
}

impl Report {
    /// Duplicates the in-flight transaction does not explain.
    pub fn unexplained(&self) -> usize {
        self.duplicates - self.in_flight_dups
    }

    pub fn passed(&self) -> bool {
        self.lost.is_empty()
            && self.queued.is_empty()
            && self.unexplained() == 0
            && self.strangers == 0
    }

    fn print(&self, took: Duration) {
        let runners: Vec<String> = self
            .by_runner
            .iter()
            .map(|(k, (t, c))| format!("{k} {t} tx/{c} copies"))
            .collect();
        println!(
            "  = {}: {}: {} copies expected, {} once, {} lost, {} still queued, {} duplicate(s) \
             ({} of the {} in flight at a kill/freeze, {} unexplained){}; by runner: {} ({:.0} s)",
            self.name,
            if self.passed() { "PASS" } else { "FAIL" },
            self.expected,
            self.once,
            self.lost.len(),
            self.queued.len(),
            self.duplicates,
            self.in_flight_dups,
            self.in_flight,
            self.unexplained(),
            if self.strangers > 0 {
                format!(", {} copies nobody enqueued", self.strangers)
            } else {
                String::new()
            },
            runners.join(", "),
            took.as_secs_f64()
        );
        for (what, keys) in [("lost", &self.lost), ("still queued", &self.queued)] {
            if !keys.is_empty() {
                let shown: Vec<String> = keys
                    .iter()
                    .take(5)
                    .map(|(m, r)| format!("{m} -> {r}"))
                    .collect();
                println!(
                    "    {what}: {}{}",
                    shown.join(", "),
                    if keys.len() > 5 { ", ..." } else { "" }
                );
            }
        }
    }
}

/// Counts, for every copy `expect` names, how many arrived at the sink, and
/// whether the ones that did not are still pending in a queue of the spool.
pub fn account(ctx: &Ctx, name: &'static str, expect: &Expect) -> anyhow::Result<Report> {
    // Every runner has exited; a file smtp-sink is still closing is retried.
    let dumps = wait_until("smtp-sink's files", Duration::from_secs(10), || {
        Ok(ctx.dumps().ok())
    })?;
    let pending = pending_in_spool(ctx)?;
    Ok(tally(name, expect, &dumps, &pending))
}

/// The accounting rules, on what the sink saved (`dumps`) and what is still
/// pending in the spool: each expected copy arrived once, or is lost, or
/// still queued; copies beyond one are duplicates, and one extra copy of
/// each copy in flight at a kill or freeze is explained.
fn tally(name: &'static str, expect: &Expect, dumps: &[Dump], pending: &BTreeSet<Key>) -> Report {
    let mut copies: BTreeMap<Key, usize> = BTreeMap::new();
    let mut by_runner: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for d in dumps {
        let row = by_runner.entry(d.helo.clone()).or_default();
        row.0 += 1;
        row.1 += d.rcpts.len();
        for k in keys_of(d) {
            *copies.entry(k).or_default() += 1;
        }
    }
    let mut r = Report {
        name,
        expected: expect.keys.len(),
        once: 0,
        lost: Vec::new(),
        queued: Vec::new(),
        duplicates: 0,
        in_flight_dups: 0,
        in_flight: expect.in_flight.len(),
        strangers: copies
            .iter()
            .filter(|(k, _)| !expect.keys.contains(*k))
            .map(|(_, n)| n)
            .sum(),
        by_runner,
    };
    for k in &expect.keys {
        match copies.get(k).copied().unwrap_or(0) {
            0 if pending.contains(k) => r.queued.push(k.clone()),
            0 => r.lost.push(k.clone()),
            1 => r.once += 1,
            n => {
                r.duplicates += n - 1;
                if expect.in_flight.contains(k) {
                    r.in_flight_dups += 1;
                }
            }
        }
    }
    r
}

/// The (Message-ID, recipient) pairs still pending in any queue of the
/// scenario's spool (as host B sees it).
fn pending_in_spool(ctx: &Ctx) -> anyhow::Result<BTreeSet<Key>> {
    let mut pending = BTreeSet::new();
    let json = |args: &[&str], tool: &str| -> anyhow::Result<Vec<Value>> {
        let out = ctx.tool(&ctx.b, tool, args)?.out();
        out.lines()
            .map(|l| serde_json::from_str(l).with_context(|| format!("{tool} printed {l}")))
            .collect()
    };
    for row in json(&["--json"], "mm-showq")? {
        let Some(queue) = row["queue"].as_str() else {
            continue;
        };
        let held: u64 = ["queued", "deferred", "claimed", "preserved", "writing"]
            .iter()
            .filter_map(|f| row[*f].as_u64())
            .sum();
        if held == 0 {
            continue;
        }
        for entry in json(&["--json", queue], "mm-showq")? {
            let Some(id) = entry["id"].as_str() else {
                continue;
            };
            // Gone since it was listed: not pending.
            let Ok(dump) = json(&["--json", id], "mm-dumpdb") else {
                continue;
            };
            let Some(meta) = dump.first() else { continue };
            let mid = meta["message"]
                .as_str()
                .and_then(|m| mm_e2e::message_id(m.as_bytes()))
                .unwrap_or_default();
            for rc in meta["recipients"].as_array().into_iter().flatten() {
                if rc["state"] == "pending"
                    && let Some(a) = rc["address"].as_str()
                {
                    pending.insert((mid.clone(), a.to_string()));
                }
            }
        }
    }
    Ok(pending)
}

/// Sleeps `d`, unless interrupted.
pub fn pause(d: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + d;
    while Instant::now() < until {
        sys::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(helo: &str, id: &str, rcpts: &[&str]) -> Dump {
        Dump {
            name: String::new(),
            helo: helo.to_string(),
            modified: None,
            sender: String::new(),
            rcpts: rcpts.iter().map(|r| r.to_string()).collect(),
            data: format!("Message-ID: <{id}>\n\nbody\n").into_bytes(),
        }
    }

    fn key(id: &str, r: &str) -> Key {
        (id.to_string(), r.to_string())
    }

    #[test]
    fn counts_lost_queued_duplicates_and_in_flight() {
        let mut ex = Expect::default();
        for r in ["a", "b", "c", "d", "e"] {
            ex.keys.insert(key("m1", r));
        }
        // a, b in flight at a kill: sent by A, then again by B.
        ex.in_flight = [key("m1", "a"), key("m1", "b")].into();
        let dumps = [
            dump("hosta", "m1", &["a", "b"]),
            dump("hostb", "m1", &["a", "b"]),
            dump("hostb", "m1", &["c"]),
            dump("hostb", "m1", &["c"]),
            dump("hostb", "m1", &["c"]),
            dump("hostb", "other", &["z"]),
        ];
        let pending = [key("m1", "d")].into();
        let r = tally("t", &ex, &dumps, &pending);
        assert_eq!(r.expected, 5);
        assert_eq!(r.once, 0);
        assert_eq!(r.queued, [key("m1", "d")]);
        assert_eq!(r.lost, [key("m1", "e")]);
        // a and b once each (allowed), c twice (not).
        assert_eq!(r.duplicates, 4);
        assert_eq!(r.in_flight_dups, 2);
        assert_eq!(r.unexplained(), 2);
        assert_eq!(r.strangers, 1);
        assert_eq!(r.by_runner["hostb"], (5, 6));
        assert!(!r.passed());
    }

    #[test]
    fn a_clean_run_passes() {
        let ex = Expect {
            keys: [key("m1", "a"), key("m2", "a")].into(),
            ..Default::default()
        };
        let dumps = [dump("h", "m1", &["a"]), dump("h", "m2", &["a"])];
        let r = tally("t", &ex, &dumps, &BTreeSet::new());
        assert!(r.passed());
        assert_eq!(r.once, 2);
    }

    #[test]
    fn in_flight_copies_are_allowed_one_extra_only() {
        let ex = Expect {
            keys: [key("m1", "a")].into(),
            in_flight: [key("m1", "a")].into(),
            ..Default::default()
        };
        let dumps = [
            dump("h", "m1", &["a"]),
            dump("h", "m1", &["a"]),
            dump("h", "m1", &["a"]),
        ];
        let r = tally("t", &ex, &dumps, &BTreeSet::new());
        assert_eq!((r.duplicates, r.in_flight_dups, r.unexplained()), (2, 1, 1));
    }
}
