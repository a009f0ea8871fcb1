//! A private Postfix instance (for the Postfix tests, `tests/e2e/postfix.rs`,
//! and xtask's benchmark): its own configuration, queue and data
//! directories under the run's directory, its own log file, smtpd on a
//! loopback port, and the list domain routed to the `mm` pipe(8) transport
//! of docs/operations.md, section 10.
//!
//! No `postmulti`, no systemd and nothing in /etc/postfix is touched: the
//! instance exists only through `-c DIR` (`postfix -c`, `postconf -c`,
//! `postqueue -c`, `sendmail -C`), which root may use with any directory
//! (an unprivileged user would need it listed in `alternate_config_directories`
//! of the default main.cf). `postfix check` creates the inside of the
//! queue directory and the data directory with the owners and modes Postfix
//! wants (it runs `post-install create-missing`), so the recipe needs no
//! `set-permissions`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{Out, Tool, poll_for};

/// Longest any one Postfix command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What the instance is made of.
pub struct Settings<'a> {
    /// Where its directories go (`conf/`, `queue/`, `data/`, `maillog`).
    pub dir: &'a Path,
    /// smtpd's port on 127.0.0.1.
    pub port: u16,
    /// The domain routed to mm.
    pub domain: &'a str,
    /// The pipe's `user=USER:GROUP`.
    pub user: &'a str,
    pub group: &'a str,
    /// The mm-enqueue binary the pipe runs.
    pub enqueue: &'a Path,
    /// The mm spool it enqueues into.
    pub spool: &'a Path,
}

/// A configured instance; stopped on drop if it was started.
pub struct Postfix {
    /// The configuration directory (`main.cf`, `master.cf`): the `-c DIR`.
    pub conf: PathBuf,
    /// The log file (postlogd(8)).
    pub log: PathBuf,
    /// smtpd's port on 127.0.0.1.
    pub port: u16,
    /// `mail_version`.
    pub version: String,
    postfix: PathBuf,
    postqueue: PathBuf,
    sendmail: PathBuf,
    started: bool,
}

impl Postfix {
    /// Writes the configuration of a new instance under `s.dir`.
    pub fn configure(s: &Settings<'_>) -> anyhow::Result<Postfix> {
        stop_orphans()?;
        let postconf = program("postconf")?;
        let base = s.dir;
        let conf = base.join("conf");
        let queue = base.join("queue");
        let log = base.join("maillog");
        // The queue directory must exist (root's, 0755, as the package makes
        // /var/spool/postfix); `postfix check` makes what goes in it, and
        // the data directory, with the owners and modes Postfix wants.
        for d in [&conf, &queue] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        let owner = base.join(OWNER);
        std::fs::write(&owner, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", owner.display()))?;
        // master.cf splits its lines at white space.
        for p in [base, s.enqueue, s.spool] {
            if p.to_string_lossy().contains(char::is_whitespace) {
                bail!(
                    "{} has white space in its path: master.cf cannot say it",
                    p.display()
                );
            }
        }

        let version = run_ok(Tool::program(&postconf).args(["-d", "-h", "mail_version"]))?
            .stdout_str()
            .trim()
            .to_string();

        let main_cf = main_cf(s, &version, &queue, &log);
        let mut text =
            String::from("# A private instance of the mm tests (tests/src/postfix.rs).\n");
        for (name, value, why) in &main_cf {
            text.push_str(&format!("\n# {why}\n{name} = {value}\n"));
        }
        let main_path = conf.join("main.cf");
        std::fs::write(&main_path, text)
            .with_context(|| format!("cannot write {}", main_path.display()))?;

        // master.cf: the system's own (every service Postfix needs, as the
        // package ships them), then edited with postconf, never by hand.
        let master = [
            "/etc/postfix/master.cf",
            "/usr/share/postfix/master.cf.dist",
        ]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("found neither /etc/postfix/master.cf nor /usr/share/postfix/master.cf.dist")?;
        std::fs::copy(master, conf.join("master.cf"))
            .with_context(|| format!("cannot copy {}", master.display()))?;
        let pipe = format!(
            "mm unix - n n - - pipe \
             flags=Rq user={user}:{group} null_sender= \
             argv={enqueue} --spool {spool} -q in -f ${{sender}} -- ${{recipient}}",
            user = s.user,
            group = s.group,
            enqueue = s.enqueue.display(),
            spool = s.spool.display(),
        );
        let smtpd = format!(
            "127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd",
            port = s.port
        );
        let edits: [&[&str]; 4] = [
            // No chroot: a chrooted daemon needs copies of /etc/services,
            // resolv.conf and the like inside the queue directory, which
            // Debian's init script makes for the system instance only.
            &["-F", "*/*/chroot = n"],
            // Not port 25 (the system's Postfix may have it, and it is not
            // ours to take), nor any other public port the copy may list...
            &["-M#", "*/inet"],
            // ...but smtpd on a free loopback port.
            &["-M", &smtpd],
            // The transport exactly as docs/operations.md, section 10 has
            // it; only the user, the paths and --spool differ.
            &["-M", &format!("mm/unix = {pipe}")],
        ];
        for edit in edits {
            run_ok(Tool::program(&postconf).arg("-c").arg(&conf).args(edit))?;
        }

        Ok(Postfix {
            conf,
            log,
            port: s.port,
            version,
            postfix: program("postfix")?,
            postqueue: program("postqueue")?,
            sendmail: program("sendmail")?,
            started: false,
        })
    }

    /// `postfix check`, `postfix start`, and waits until smtpd greets.
    pub fn start(&mut self) -> anyhow::Result<()> {
        // check creates the missing queue and data directories, with the
        // owners and modes Postfix wants, and reports a bad configuration
        // more plainly than start does.
        let check = run_ok(self.postfix_cmd().arg("check"))?;
        let said = check.stderr_str();
        if !said.trim().is_empty() {
            bail!("postfix check complained: {}", said.trim());
        }
        // From here on the instance may be running, even if start fails.
        self.started = true;
        run_ok(self.postfix_cmd().arg("start"))?;
        let port = self.port;
        poll_for("Postfix's smtpd to greet", Duration::from_secs(20), || {
            Ok(crate::smtp_client::greets(port).then_some(()))
        })
    }

    /// Stops the instance and waits until none of its processes is left.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if !self.started {
            return Ok(());
        }
        self.started = false;
        // Fails if the master never started; what is left is what counts.
        let stop = self
            .postfix_cmd()
            .arg("stop")
            .try_run()
            .map_err(anyhow::Error::msg)?;
        let within = Duration::from_secs(10);
        if poll_for("Postfix to stop", within, || {
            Ok(self.processes()?.is_empty().then_some(()))
        })
        .is_ok()
        {
            return Ok(());
        }
        // Still there: abort (the master kills its children at once), then
        // kill what is left by pid. These are this instance's processes
        // (MAIL_CONFIG names its configuration), which this run started.
        let _ = self.postfix_cmd().arg("abort").try_run();
        for pid in self.processes()? {
            let _ = Tool::program("kill")
                .args(["-KILL", &pid.to_string()])
                .timeout(TIMEOUT)
                .try_run();
        }
        let left = poll_for("Postfix to be killed", within, || {
            let left = self.processes()?;
            Ok(left.is_empty().then_some(()))
        });
        left.with_context(|| {
            format!(
                "postfix stop ({}: {}) left processes running",
                stop.status,
                crate::one_line(&stop.stderr_str())
            )
        })
    }

    /// The live processes of this instance: those whose environment has
    /// `MAIL_CONFIG` set to its configuration directory (postfix(1) sets it,
    /// and the master and every daemon inherit it). Zombies, whose
    /// environment is gone, are not counted: they are dead.
    pub fn processes(&self) -> anyhow::Result<Vec<u32>> {
        let mut want = b"MAIL_CONFIG=".to_vec();
        want.extend_from_slice(self.conf.as_os_str().as_encoded_bytes());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
            let entry = entry.context("cannot list /proc")?;
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // Gone meanwhile, or not readable: not ours (we are root).
            let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            if env.split(|&b| b == 0).any(|v| v == want.as_slice()) {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    /// Submits `message` (LF line ends) with Postfix's sendmail(1).
    pub fn sendmail(&self, sender: &str, rcpts: &[String], message: &[u8]) -> anyhow::Result<()> {
        // -i: a line holding a single '.' is text, not the end of the
        // message (the test messages have one).
        run_ok(
            Tool::program(&self.sendmail)
                .arg("-C")
                .arg(&self.conf)
                .args(["-i", "-f", sender, "--"])
                .args(rcpts)
                .stdin(message),
        )?;
        Ok(())
    }

    /// The messages in Postfix's queue (`postqueue -j`, one object each).
    pub fn queue(&self) -> anyhow::Result<Vec<Value>> {
        let done = run_ok(self.postqueue_cmd().arg("-j"))?;
        done.stdout_str()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).with_context(|| format!("postqueue -j printed {l:?}")))
            .collect()
    }

    /// `postqueue -f`: attempt every queued message now.
    pub fn flush(&self) -> anyhow::Result<Out> {
        run_ok(self.postqueue_cmd().arg("-f"))
    }

    /// `postconf -e NAME=VALUE ...`: changes main.cf (a running instance
    /// sees it after [`Postfix::reload`]). The benchmark's instance relays
    /// with it (`relayhost`, `default_transport`) and holds what it gets.
    pub fn set(&self, settings: &[&str]) -> anyhow::Result<()> {
        let postconf = program("postconf")?;
        run_ok(
            Tool::program(&postconf)
                .arg("-c")
                .arg(&self.conf)
                .arg("-e")
                .args(settings),
        )?;
        Ok(())
    }

    /// `postsuper ARGS` on this instance (`-H ALL`: release what is held).
    pub fn postsuper(&self, args: &[&str]) -> anyhow::Result<Out> {
        let postsuper = program("postsuper")?;
        run_ok(
            Tool::program(&postsuper)
                .arg("-c")
                .arg(&self.conf)
                .args(args),
        )
    }

    /// `postfix reload`: the running daemons take the configuration again.
    pub fn reload(&self) -> anyhow::Result<()> {
        run_ok(self.postfix_cmd().arg("reload"))?;
        Ok(())
    }

    /// How many messages are in the queue, counted from its files (the
    /// incoming, active, deferred and hold directories): cheap enough to
    /// poll while thousands drain, unlike `postqueue -j`.
    pub fn queued(&self) -> anyhow::Result<usize> {
        self.queued_in(&["maildrop", "incoming", "active", "deferred", "hold"])
    }

    /// How many messages are in these queue directories (`deferred`, ...).
    pub fn queued_in(&self, dirs: &[&str]) -> anyhow::Result<usize> {
        let queue = self
            .conf
            .parent()
            .map(|base| base.join("queue"))
            .context("the configuration directory has no parent")?;
        let mut n = 0;
        for sub in dirs {
            let dir = queue.join(sub);
            if !dir.exists() {
                continue;
            }
            for e in walkdir::WalkDir::new(&dir) {
                // A file may go between listing and looking: not counted.
                let Ok(e) = e else { continue };
                if e.file_type().is_file() {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// The whole log so far ("" if postlogd has not written it yet).
    pub fn log_text(&self) -> anyhow::Result<String> {
        match std::fs::read(&self.log) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.log.display())),
        }
    }

    fn postfix_cmd(&self) -> Tool {
        Tool::program(&self.postfix)
            .arg("-c")
            .arg(&self.conf)
            .timeout(TIMEOUT)
    }

    fn postqueue_cmd(&self) -> Tool {
        Tool::program(&self.postqueue)
            .arg("-c")
            .arg(&self.conf)
            .timeout(TIMEOUT)
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("warning: cannot stop the private Postfix: {e:#}");
        }
    }
}

/// The file in an instance's directory that names the process that made
/// it: an instance whose maker is gone was left by a killed run.
const OWNER: &str = "owner.pid";

/// Stops the private instances that killed runs left behind (a Ctrl-C ends
/// a test process before its guards run, and Postfix is a daemon in its own
/// session): every live process whose `MAIL_CONFIG` names a configuration
/// directory next to an [`OWNER`] file whose process is gone. The system's
/// own Postfix has no such file and is never touched. The directories are
/// left for a look.
fn stop_orphans() -> anyhow::Result<()> {
    let mut orphans = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").context("cannot list /proc")? {
        let entry = entry.context("cannot list /proc")?;
        // Gone meanwhile, or not readable: not ours.
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let Some(conf) = env
            .split(|&b| b == 0)
            .find_map(|v| v.strip_prefix(b"MAIL_CONFIG="))
        else {
            continue;
        };
        let conf =
            PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(conf));
        let Some(owner) = conf
            .parent()
            .and_then(|base| std::fs::read_to_string(base.join(OWNER)).ok())
            .and_then(|pid| pid.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(owner.to_string()).exists() {
            orphans.insert((conf, owner));
        }
    }
    for (conf, owner) in orphans {
        let base = conf.parent().unwrap_or(&conf).to_path_buf();
        let mut left = Postfix {
            log: base.join("maillog"),
            conf: conf.clone(),
            port: 0,
            version: String::new(),
            postfix: program("postfix")?,
            postqueue: program("postqueue")?,
            sendmail: program("sendmail")?,
            started: true,
        };
        left.stop()
            .with_context(|| format!("cannot stop the Postfix of {}", conf.display()))?;
        eprintln!(
            "warning: stopped a private Postfix that a killed run (pid {owner}) left running: {}",
            conf.display()
        );
    }
    Ok(())
}

/// The pipe's system user and its group, made if missing and removed when
/// dropped if they were made here (on a failure too): a second run, or a run
/// after a killed one, finds either nothing or what it can reuse.
#[derive(Debug)]
pub struct PipeAccount {
    pub user: String,
    pub group: String,
    pub uid: u32,
    pub gid: u32,
    made_user: bool,
    made_group: bool,
}

impl PipeAccount {
    /// Makes sure `user` and `group` exist (a system user with no home and
    /// no login shell, as a package would make it). Needs root.
    pub fn ensure(user: &str, group: &str) -> anyhow::Result<PipeAccount> {
        // One account change at a time in this process: useradd and
        // groupadd lock /etc/passwd and /etc/group, and give up when busy.
        let _one = crate::accounts_lock();
        let mut made_group = false;
        let gid = match crate::lookup_id("group", group).map_err(anyhow::Error::msg)? {
            Some(gid) => gid,
            None => {
                run_ok(Tool::program("groupadd").args(["--system", group]))?;
                made_group = true;
                crate::lookup_id("group", group)
                    .map_err(anyhow::Error::msg)?
                    .with_context(|| format!("groupadd made no group {group}"))?
            }
        };
        // Built before useradd so that a failure there still removes the group.
        let mut account = PipeAccount {
            user: user.to_string(),
            group: group.to_string(),
            uid: 0,
            gid,
            made_user: false,
            made_group,
        };
        account.uid = match crate::lookup_id("passwd", user).map_err(anyhow::Error::msg)? {
            Some(uid) => uid,
            None => {
                run_ok(Tool::program("useradd").args([
                    "--system",
                    "--gid",
                    group,
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    user,
                ]))?;
                account.made_user = true;
                crate::lookup_id("passwd", user)
                    .map_err(anyhow::Error::msg)?
                    .with_context(|| format!("useradd made no user {user}"))?
            }
        };
        Ok(account)
    }

    /// Removes the user and group at the end even if they were there
    /// before: for names only a test uses, which a killed earlier run (its
    /// guard never ran) may have left.
    pub fn owned(mut self) -> PipeAccount {
        self.made_user = true;
        self.made_group = true;
        self
    }

    /// Removes the user and group if they were made here.
    pub fn remove(&mut self) -> anyhow::Result<()> {
        let _one = crate::accounts_lock();
        if self.made_user {
            run_ok(Tool::program("userdel").arg(&self.user))?;
            self.made_user = false;
        }
        if self.made_group {
            run_ok(Tool::program("groupdel").arg(&self.group))?;
            self.made_group = false;
        }
        Ok(())
    }
}

impl Drop for PipeAccount {
    fn drop(&mut self) {
        // The normal path calls remove() itself, so that a failure there
        // is the caller's error; this is the path of a failure elsewhere.
        if let Err(e) = self.remove() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// `tool` under [`TIMEOUT`]; an error unless it exits 0.
fn run_ok(tool: Tool) -> anyhow::Result<Out> {
    tool.timeout(TIMEOUT).run_ok().map_err(anyhow::Error::msg)
}

/// A program of Postfix's, from `/usr/sbin` (where Debian puts them, and
/// which is not in a non-root `$PATH`) or else from `$PATH`.
pub fn program(name: &str) -> anyhow::Result<PathBuf> {
    let mut candidates = vec![Path::new("/usr/sbin").join(name)];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} is not installed (not in /usr/sbin nor in $PATH): install Debian's \
                 postfix package (apt-get install postfix; cargo xtask test does it as root)"
            )
        })
}

/// main.cf of the instance: (parameter, value, why it is set).
fn main_cf(
    s: &Settings<'_>,
    version: &str,
    queue: &Path,
    log: &Path,
) -> Vec<(&'static str, String, &'static str)> {
    let d = s.domain;
    vec![
        (
            "compatibility_level",
            compatibility_level(version).to_string(),
            "Today's defaults, and no \"using backwards-compatible default setting\" lines in the log.",
        ),
        (
            "queue_directory",
            queue.display().to_string(),
            "The instance's own queue: the system's Postfix never sees this mail.",
        ),
        (
            "data_directory",
            s.dir.join("data").display().to_string(),
            "The instance's own master.lock (and caches), so it runs beside the system's Postfix.",
        ),
        (
            "maillog_file",
            log.display().to_string(),
            "No syslog daemon in CI or containers: postlogd(8) writes the log here; a failing run prints it.",
        ),
        (
            "maillog_file_prefixes",
            s.dir.display().to_string(),
            "maillog_file must start with one of these (a safety list; the default is /var, /dev/stdout).",
        ),
        (
            "myhostname",
            "mm-e2e.localdomain".to_string(),
            "A fixed, fully qualified name: the machine's own may be unqualified, and Postfix refuses to start with that.",
        ),
        (
            "inet_interfaces",
            "loopback-only".to_string(),
            "Loopback only (smtpd's own address and port are in master.cf).",
        ),
        (
            "inet_protocols",
            "ipv4".to_string(),
            "IPv4 only: a container may have no ::1.",
        ),
        (
            "mydestination",
            String::new(),
            "The final destination for nothing: no local(8) delivery...",
        ),
        (
            "alias_maps",
            String::new(),
            "...so no /etc/aliases (which may not exist) is looked up...",
        ),
        ("alias_database", String::new(), "...nor made."),
        (
            "relay_domains",
            d.to_string(),
            "Mail for the list domain is accepted from any client (the default smtpd_relay_restrictions allow relay_domains), as on a list server.",
        ),
        (
            "transport_maps",
            format!("inline:{{{d}=mm:}}"),
            "The list domain goes to the mm pipe(8) transport of master.cf. inline: needs no file and no postmap; the docs' hash: table does the same.",
        ),
        (
            "mm_destination_recipient_limit",
            "1000".to_string(),
            "One pipe delivery (one mm-enqueue, one mm entry) takes up to this many recipients of a message. The default (default_destination_recipient_limit) is 50, and the list post of this run has 120 recipients.",
        ),
        (
            "default_transport",
            "error:the mm e2e instance delivers nowhere else".to_string(),
            "Nothing leaves the machine: a bounce or notice to another domain fails at once instead of trying the Internet...",
        ),
        (
            "relay_transport",
            "error:the mm e2e instance delivers nowhere else".to_string(),
            "...whichever transport it would take.",
        ),
        (
            "queue_run_delay",
            "1s".to_string(),
            "A deferred message is retried within seconds, not minutes: the queue manager scans the deferred queue every second...",
        ),
        (
            "minimal_backoff_time",
            "1s".to_string(),
            "...a message waits at least this long after a deferral...",
        ),
        (
            "maximal_backoff_time",
            "2s".to_string(),
            "...and at most this long.",
        ),
        (
            "smtpd_peername_lookup",
            "no".to_string(),
            "No reverse DNS lookup of the client (127.0.0.1): CI may have no resolver, and a lookup that times out stalls every connection.",
        ),
    ]
}

/// The compatibility level for Postfix `version`: "3.6" (named levels exist
/// from 3.6 on), else 2.
fn compatibility_level(version: &str) -> &'static str {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    if (major, minor) >= (3, 6) { "3.6" } else { "2" }
}

/// One line of the log about one recipient's delivery attempt:
/// `QID: to=<ADDR>, relay=mm, ..., status=sent (DETAIL)`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub queue_id: String,
    pub to: String,
    pub relay: String,
    pub status: String,
    pub detail: String,
    /// The whole log line.
    pub line: String,
}

/// Every delivery attempt in `log`.
pub fn attempts(log: &str) -> Vec<Attempt> {
    log.lines().filter_map(attempt).collect()
}

fn attempt(line: &str) -> Option<Attempt> {
    // "... postfix/pipe[123]: 4F1A2B: to=<a@b>, relay=mm, delay=..., status=sent (...)"
    let rest = &line[line.find("]: ")? + 3..];
    let (queue_id, rest) = rest.split_once(": to=<")?;
    let (to, rest) = rest.split_once(">, ")?;
    let relay = field(rest, "relay=")?;
    let after = &rest[rest.find("status=")? + "status=".len()..];
    let (status, detail) = after.split_once(' ').unwrap_or((after, ""));
    let detail = detail.trim();
    let detail = detail
        .strip_prefix('(')
        .and_then(|d| d.strip_suffix(')'))
        .unwrap_or(detail);
    Some(Attempt {
        queue_id: queue_id.to_string(),
        to: to.to_string(),
        relay: relay.to_string(),
        status: status.to_string(),
        detail: detail.to_string(),
        line: line.to_string(),
    })
}

/// The value of `name=` in a `, `-separated log line.
fn field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let at = text.find(name)? + name.len();
    let value = &text[at..];
    Some(value.split(',').next().unwrap_or(value))
}

/// The queue id cleanup(8) gave the message with this Message-ID
/// (`QID: message-id=<ID>`), if it has logged it.
pub fn queue_id_of(log: &str, message_id: &str) -> Option<String> {
    let want = format!(": message-id=<{message_id}>");
    log.lines().find_map(|l| {
        let l = l.strip_suffix(&want)?;
        let at = l.rfind("]: ")? + 3;
        Some(l[at..].to_string())
    })
}

/// The log lines that say something went wrong inside Postfix.
pub fn troubles(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            ["fatal:", "panic:", "error:", "warning:"]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect()
}

/// The last `n` lines of `log`.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_delivery_line() {
        let line = "Nov 24 18:37:11 e2e postfix/pipe[25716]: 381299A001F: \
                    to=<\"john smith\"@lists.example>, relay=mm, delay=0.03, \
                    delays=0.01/0/0/0.02, dsn=2.0.0, status=sent (delivered via mm \
                    service (1795545431.237140+987c))";
        let a = attempt(line).expect("a delivery line");
        assert_eq!(a.queue_id, "381299A001F");
        assert_eq!(a.to, "\"john smith\"@lists.example");
        assert_eq!(a.relay, "mm");
        assert_eq!(a.status, "sent");
        assert_eq!(
            a.detail,
            "delivered via mm service (1795545431.237140+987c)"
        );
    }

    #[test]
    fn finds_the_queue_id_of_a_message_id() {
        let log =
            "Nov 24 18:36:35 e2e postfix/cleanup[25713]: D05829A03A3: message-id=<1@example.org>\n";
        assert_eq!(
            queue_id_of(log, "1@example.org").as_deref(),
            Some("D05829A03A3")
        );
        assert_eq!(queue_id_of(log, "2@example.org"), None);
    }

    #[test]
    fn compatibility_levels() {
        assert_eq!(compatibility_level("3.7.11"), "3.6");
        assert_eq!(compatibility_level("3.10.1"), "3.6");
        assert_eq!(compatibility_level("3.5.25"), "2");
    }
}
