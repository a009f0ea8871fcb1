//! `cargo xtask e2e`: mm behind a real MTA, end to end.
//!
//! A private Postfix instance (`postfix.rs`: its own configuration, queue
//! and log under a temporary directory, smtpd on a free loopback port) routes
//! the domain `lists.example` to the pipe(8) transport of docs/operations.md,
//! section 10, which runs `mm-enqueue` as the system user `mmta`, group `mm`
//! (made if missing, removed afterwards if this run made them). Then:
//!
//! 1. three messages go in, one by Postfix's `sendmail`, two over SMTP
//!    (`smtp.rs`), 8-bit, with long lines and dots, one to 120 recipients,
//!    one from the null sender (`mail.rs`);
//! 2. Postfix must hand each to `mm-enqueue` in one pipe delivery: one entry
//!    per message in `in/`, with its envelope, and its bytes exactly as sent
//!    but for the `Return-Path:` and `Received:` Postfix adds;
//! 3. `mm-runq --until-empty` delivers them to Postfix's `smtp-sink`
//!    (`sink.rs`), which saves each transaction: every recipient must get
//!    its message once, byte for byte as mm stored it;
//! 4. the spool is made unreachable for `mmta`: `mm-enqueue` must exit 75,
//!    and Postfix must defer a new message and keep it queued; once the
//!    spool is fixed, `postqueue -f` must bring it into mm, and `mm-runq`
//!    to the sink, as above.
//!
//! Postfix is stopped, smtp-sink killed and the directory removed at the end,
//! whatever happened (guards), and Ctrl-C too ends the run that way. On
//! failure the tail of Postfix's log is printed. Needs root: it adds a user
//! and starts Postfix.

pub(crate) mod mail;
mod postfix;
pub(crate) mod sink;
pub(crate) mod smtp;
pub(crate) mod sys;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use mail::{TestMessage, Via};
use postfix::{Postfix, Settings};
use sink::SmtpSink;
use sys::{PipeAccount, run_ok, wait_until};

/// The domain Postfix routes to mm.
const DOMAIN: &str = "lists.example";
/// The pipe's user and group (docs/operations.md, section 11: the group is
/// the spool's).
const PIPE_USER: &str = "mmta";
const PIPE_GROUP: &str = "mm";
/// smtp-sink's user (it will not keep root's privileges).
const SINK_USER: &str = "nobody";
/// The tools the run uses.
const TOOLS: [&str; 4] = ["mm-enqueue", "mm-runq", "mm-showq", "mm-dumpdb"];
/// Longest any one mm tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest Postfix may take to hand messages to the pipe.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the end-to-end test from the workspace at `root`; `keep` keeps the
/// directory (Postfix's configuration, queue and log, the spool, the sink's
/// files) to look at afterwards.
pub fn run(root: &Path, keep: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    if !is_root() {
        bail!(
            "cargo xtask e2e must run as root: it adds the pipe's system user and starts \
             a private Postfix"
        );
    }
    for program in ["postfix", "postconf", "postqueue", "sendmail", "smtp-sink"] {
        sys::postfix_program(program)?;
    }
    sys::catch_interrupts()?;
    let bin = build(root, &TOOLS)?;
    let built = started.elapsed();
    let started = Instant::now();

    let tmp = tempfile::Builder::new()
        .prefix("mm-xtask-e2e.")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let result = run_in(&dir, &bin, started, built);
    if result.is_err() {
        print_diagnostics(&dir);
    }
    if keep {
        println!("e2e: kept {}", tmp.keep().display());
    }
    result
}

/// Everything after the build, in `dir`.
fn run_in(dir: &Path, bin: &Path, started: Instant, built: Duration) -> anyhow::Result<()> {
    // Postfix's daemons, the pipe user and smtp-sink's user must all reach
    // into it; what must stay private has its own modes below.
    set_mode(dir, 0o755)?;
    // Guards, dropped in reverse order: the sink, Postfix, then the account.
    let mut account = PipeAccount::ensure(PIPE_USER, PIPE_GROUP)?;
    let tools = install(bin, &dir.join("bin"))?;

    // The spool as docs/operations.md, section 11 makes it: root of group
    // mm, mode 2770 (setgid: everything in it gets group mm).
    let spool = dir.join("spool");
    std::fs::create_dir(&spool).with_context(|| format!("cannot create {}", spool.display()))?;
    std::os::unix::fs::chown(&spool, Some(0), Some(account.gid))
        .with_context(|| format!("cannot chown {}", spool.display()))?;
    set_mode(&spool, 0o2770)?;
    let mm = Mm {
        bin: tools,
        spool: spool.clone(),
        uid: account.uid,
        gid: account.gid,
    };

    let mut postfix = Postfix::configure(&Settings {
        dir: &dir.join("postfix"),
        port: free_port()?,
        domain: DOMAIN,
        user: PIPE_USER,
        group: PIPE_GROUP,
        enqueue: &mm.bin.join("mm-enqueue"),
        spool: &spool,
    })?;
    let sink_uid = sys::lookup_id("passwd", SINK_USER)?
        .with_context(|| format!("there is no user {SINK_USER} for smtp-sink"))?;
    let sink = SmtpSink::start(&dir.join("sink"), SINK_USER, sink_uid)?;
    postfix.start()?;
    println!(
        "e2e: Postfix {} in {}: smtpd on 127.0.0.1:{}, {DOMAIN} -> pipe(8) -> mm-enqueue as \
         {PIPE_USER}:{PIPE_GROUP}; smtp-sink on 127.0.0.1:{}",
        postfix.version,
        dir.display(),
        postfix.port,
        sink.port
    );
    let mut seen_dumps = BTreeSet::new();

    // 1-3: the normal path.
    let normal = mail::normal(DOMAIN);
    for m in &normal {
        submit(&postfix, m)?;
    }
    let rcpts: usize = normal.iter().map(|m| m.rcpts.len()).sum();
    println!(
        "e2e: sent {} messages to {rcpts} recipients ({} by sendmail, {} by SMTP, one from <>), \
         8-bit, long lines, dots",
        normal.len(),
        normal.iter().filter(|m| m.via == Via::Sendmail).count(),
        normal.iter().filter(|m| m.via == Via::Smtp).count(),
    );
    let handed = handed_to_mm(&postfix, &mm, &normal, false)?;
    println!(
        "e2e: Postfix piped each to mm-enqueue once: {} entries in in/, envelopes and bytes as sent \
         (+ Return-Path:, Received:)",
        handed.len()
    );
    let transactions = drain(&mm, &sink, &handed, &mut seen_dumps)?;
    println!(
        "e2e: mm-runq --until-empty -> smtp-sink: {transactions} SMTP transactions, each of the \
         {rcpts} recipients got its message once, bytes as stored; every queue empty"
    );

    // 4: the failure path.
    let late = mail::deferred(DOMAIN);
    set_mode(&spool, 0o700)?;
    let (code, said) = enqueue_by_hand(&mm, &account)?;
    if code != Some(75) {
        bail!(
            "with the spool unreachable, mm-enqueue (run as the docs test it) exited {code:?}, \
             want 75 (try again later): {said}"
        );
    }
    let queue_id = submit(&postfix, &late)?;
    let deferral = deferred_by_postfix(&postfix, &late, &queue_id)?;
    println!("e2e: spool unreachable for {PIPE_USER} (mode 0700): mm-enqueue exits 75: {said}");
    println!("e2e: Postfix deferred {queue_id} and keeps it: {deferral}");
    set_mode(&spool, 0o2770)?;
    postfix.flush()?;
    let handed = handed_to_mm(&postfix, &mm, std::slice::from_ref(&late), true)?;
    let transactions = drain(&mm, &sink, &handed, &mut seen_dumps)?;
    println!(
        "e2e: spool fixed, postqueue -f: {queue_id} piped into mm once, then mm-runq -> \
         smtp-sink ({transactions} transaction), bytes as sent"
    );

    // The end: nothing went wrong inside Postfix, and nothing is left.
    let log = postfix.log_text()?;
    let troubles = postfix::troubles(&log);
    if !troubles.is_empty() {
        bail!("Postfix logged trouble:\n  {}", troubles.join("\n  "));
    }
    postfix.stop()?;
    drop(sink);
    account.remove()?;
    println!(
        "e2e: all as expected in {:.1} s (+ {:.1} s of cargo build); Postfix stopped, no process \
         of it left",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    Ok(())
}

/// Hands `m` to Postfix as its `via` says; returns the queue id when known
/// now (SMTP), else "".
fn submit(postfix: &Postfix, m: &TestMessage) -> anyhow::Result<String> {
    match m.via {
        Via::Sendmail => {
            postfix
                .sendmail(&m.sender, &m.rcpts, &m.lf())
                .with_context(|| format!("sendmail of {}", m.name))?;
            Ok(String::new())
        }
        Via::Smtp => {
            let mut client = smtp::Client::connect(postfix.port)?;
            let reply = client
                .send(&m.sender, &m.rcpts, &m.crlf())
                .with_context(|| format!("SMTP of {} to Postfix", m.name))?;
            client.quit()?;
            // "250 2.0.0 Ok: queued as 4F1A2B"
            reply
                .rsplit_once("queued as ")
                .map(|(_, id)| id.trim().to_string())
                .with_context(|| {
                    format!(
                        "Postfix's reply to {}'s data has no queue id: {reply}",
                        m.name
                    )
                })
        }
    }
}

/// A message as mm holds it after Postfix handed it over.
struct Handed<'a> {
    msg: &'a TestMessage,
    entry: String,
    stored: Vec<u8>,
}

/// Waits until Postfix has piped every message of `msgs` to mm-enqueue
/// (every recipient `status=sent` in the log, Postfix's queue empty), then
/// checks that each became exactly one mm entry in `in/` (the only entries
/// there), with its envelope and its bytes. `deferred_before`: the messages
/// were deferred before (else a deferral is a failure).
fn handed_to_mm<'a>(
    postfix: &Postfix,
    mm: &Mm,
    msgs: &'a [TestMessage],
    deferred_before: bool,
) -> anyhow::Result<Vec<Handed<'a>>> {
    let queue_ids = wait_until(
        "Postfix to pipe the messages to mm",
        HANDOFF_TIMEOUT,
        || {
            let log = postfix.log_text()?;
            let attempts = postfix::attempts(&log);
            let mut ids = Vec::new();
            for m in msgs {
                let Some(qid) = postfix::queue_id_of(&log, &m.message_id) else {
                    return Ok(None);
                };
                let mine: Vec<_> = attempts.iter().filter(|a| a.queue_id == qid).collect();
                if let Some(bad) = mine.iter().find(|a| {
                    a.relay != "mm"
                        || !(a.status == "sent" || deferred_before && a.status == "deferred")
                }) {
                    bail!("Postfix did not pipe {} to mm: {}", m.name, bad.line);
                }
                if !m
                    .rcpts
                    .iter()
                    .all(|r| mine.iter().any(|a| a.status == "sent" && a.to == *r))
                {
                    return Ok(None);
                }
                ids.push(qid);
            }
            Ok(postfix.queue()?.is_empty().then_some(ids))
        },
    )?;

    let log = postfix.log_text()?;
    let attempts = postfix::attempts(&log);
    let in_queue: BTreeSet<String> = mm
        .json("mm-showq", &["--json", "in"])?
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    let mut handed = Vec::new();
    for (m, qid) in msgs.iter().zip(&queue_ids) {
        // pipe(8) logs what mm-enqueue printed, the entry id:
        // "delivered via mm service (ID)". One id for every recipient: one
        // delivery, one entry.
        let entries: BTreeSet<&str> = attempts
            .iter()
            .filter(|a| a.queue_id == *qid && a.status == "sent")
            .map(|a| {
                a.detail
                    .strip_prefix("delivered via mm service (")
                    .and_then(|d| d.strip_suffix(')'))
                    .unwrap_or("?")
            })
            .collect();
        let [entry] = entries.into_iter().collect::<Vec<_>>()[..] else {
            bail!(
                "Postfix piped {} ({qid}) to mm more than once, or mm-enqueue printed no id",
                m.name
            );
        };
        if !in_queue.contains(entry) {
            bail!(
                "{} ({qid}): mm-enqueue printed {entry}, which is not in in/",
                m.name
            );
        }
        let dump = mm.json("mm-dumpdb", &["--json", entry])?;
        let meta = dump.first().context("mm-dumpdb --json printed nothing")?;
        if meta["sender"] != m.sender.as_str() {
            bail!(
                "{}'s entry has sender {}, want {:?}",
                m.name,
                meta["sender"],
                m.sender
            );
        }
        let got: BTreeSet<&str> = meta["recipients"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["address"].as_str()).collect())
            .unwrap_or_default();
        let want: BTreeSet<&str> = m.rcpts.iter().map(String::as_str).collect();
        if got != want || meta["recipient_count"] != m.rcpts.len() {
            bail!(
                "{}'s entry has recipients {got:?} ({}), want {want:?}",
                m.name,
                meta["recipient_count"]
            );
        }
        let stored = mm.run("mm-dumpdb", &["--raw", entry])?.stdout;
        m.check_stored(&stored, qid)
            .map_err(|e| anyhow::anyhow!("{} as mm stored it ({entry}): {e}", m.name))?;
        handed.push(Handed {
            msg: m,
            entry: entry.to_string(),
            stored,
        });
    }
    let expected: BTreeSet<String> = handed.iter().map(|h| h.entry.clone()).collect();
    if in_queue != expected {
        bail!("in/ holds {in_queue:?}, want only {expected:?}");
    }
    Ok(handed)
}

/// Runs `mm-runq --until-empty` from in/ to smtp-sink, then checks what the
/// sink saved since `seen`: every recipient of `handed` exactly once, from
/// the right sender, with the bytes mm stored; and every queue empty.
/// Returns how many transactions there were.
fn drain(
    mm: &Mm,
    sink: &SmtpSink,
    handed: &[Handed<'_>],
    seen: &mut BTreeSet<String>,
) -> anyhow::Result<usize> {
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let runq = mm.run(
        "mm-runq",
        &["-q", "in", "--smtp", &smtp, "--until-empty", "--quiet"],
    )?;
    if !runq.err().is_empty() {
        bail!("mm-runq --quiet complained: {}", runq.err());
    }

    let by_id: BTreeMap<&str, &Handed<'_>> = handed
        .iter()
        .map(|h| (h.msg.message_id.as_str(), h))
        .collect();
    let want: usize = handed.iter().map(|h| h.msg.rcpts.len()).sum();
    // mm-runq is done, so smtp-sink has answered every end of data; its
    // last file may still be being closed, hence the (short) wait.
    let mut last_error = String::new();
    let dumps = wait_until("smtp-sink's files", Duration::from_secs(10), || {
        let dumps = match sink.dumps() {
            Ok(d) => d,
            Err(e) => {
                last_error = format!("{e:#}");
                return Ok(None);
            }
        };
        let new: Vec<_> = dumps
            .into_iter()
            .filter(|d| !seen.contains(&d.name))
            .collect();
        let got: usize = new.iter().map(|d| d.rcpts.len()).sum();
        Ok((got >= want).then_some(new))
    })
    .map_err(|e| anyhow::anyhow!("{e:#} ({last_error})"))?;

    let mut rcpts: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in &dumps {
        let id = mail::message_id(&d.data).unwrap_or_default();
        let Some(h) = by_id.get(id.as_str()) else {
            bail!(
                "smtp-sink got a message nobody sent ({}, Message-ID {id:?})",
                d.name
            );
        };
        if d.sender != h.msg.sender {
            bail!(
                "smtp-sink got {} from <{}>, want <{}>",
                h.msg.name,
                d.sender,
                h.msg.sender
            );
        }
        // smtp-sink drops the CR of each CRLF and undoes the dot-stuffing:
        // its file equals the stored message exactly when mm-runq sent
        // exactly the stored bytes, as CRLF lines.
        if d.data != h.stored {
            bail!(
                "smtp-sink's {} ({}) differs from what mm stored: {}",
                d.name,
                h.msg.name,
                mail::first_difference(&d.data, &h.stored)
            );
        }
        rcpts
            .entry(h.msg.message_id.as_str())
            .or_default()
            .extend(d.rcpts.iter().cloned());
    }
    for h in handed {
        let mut got = rcpts.remove(h.msg.message_id.as_str()).unwrap_or_default();
        got.sort();
        let mut want = h.msg.rcpts.clone();
        want.sort();
        if got != want {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).collect();
            let extra = got.len() as isize - want.len() as isize + missing.len() as isize;
            bail!(
                "smtp-sink did not get {} once per recipient: missing {missing:?}, {extra} extra",
                h.msg.name
            );
        }
    }
    for row in mm.json("mm-showq", &["--json"])? {
        for field in [
            "queued",
            "deferred",
            "claimed",
            "preserved",
            "writing",
            "foreign",
        ] {
            if row[field].as_u64() != Some(0) {
                bail!(
                    "after mm-runq, {}/ has {} {field}: want none",
                    row["queue"],
                    row[field]
                );
            }
        }
    }
    seen.extend(dumps.iter().map(|d| d.name.clone()));
    Ok(dumps.len())
}

/// The docs' hand test of the pipe command (docs/operations.md, section 10:
/// that user and group only, umask 077); returns its exit code and its
/// one-line message.
fn enqueue_by_hand(mm: &Mm, account: &PipeAccount) -> anyhow::Result<(Option<i32>, String)> {
    let script = format!(
        "umask 077; exec {} --spool {} -q in -f \"\" -- list@{DOMAIN}",
        mm.bin.join("mm-enqueue").display(),
        mm.spool.display()
    );
    let done = sys::run(
        Command::new("setpriv")
            .args([
                "--reuid",
                &account.user,
                "--regid",
                &account.group,
                "--clear-groups",
            ])
            .args(["sh", "-c", &script]),
        b"Subject: test\n\ntest\n",
        TOOL_TIMEOUT,
    )?;
    Ok((done.status.code(), sys::one_line(&done.err())))
}

/// Waits until Postfix has deferred `m` (queue id `qid`) because mm-enqueue
/// exited 75, and shows it in its queue; returns the reason it keeps.
fn deferred_by_postfix(postfix: &Postfix, m: &TestMessage, qid: &str) -> anyhow::Result<String> {
    wait_until("Postfix to defer the message", HANDOFF_TIMEOUT, || {
        let log = postfix.log_text()?;
        let mine: Vec<_> = postfix::attempts(&log)
            .into_iter()
            .filter(|a| a.queue_id == qid)
            .collect();
        if let Some(a) = mine.iter().find(|a| a.status != "deferred") {
            bail!(
                "with the spool unreachable, Postfix did not defer {}: {}",
                m.name,
                a.line
            );
        }
        // pipe(8) says "temporary failure" for EX_TEMPFAIL (75) only; other
        // statuses bounce, or say "Command died with status N".
        if let Some(a) = mine
            .iter()
            .find(|a| !a.detail.contains("temporary failure") || !a.detail.contains("mm-enqueue:"))
        {
            bail!(
                "Postfix deferred {}, but not for mm-enqueue's exit 75: {}",
                m.name,
                a.line
            );
        }
        if mine.is_empty() {
            return Ok(None);
        }
        // postqueue -j: the message waits in Postfix's deferred queue, each
        // recipient with the reason of the deferral. (It is in the active
        // queue while being tried again, every second or two here.)
        let queue = postfix.queue()?;
        let Some(entry) = queue
            .iter()
            .find(|e| e["queue_id"] == qid && e["queue_name"] == "deferred")
        else {
            return Ok(None);
        };
        let reasons: Vec<&str> = entry["recipients"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .filter_map(|r| r["delay_reason"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if reasons.len() != m.rcpts.len() {
            return Ok(None);
        }
        Ok(Some(
            "pipe(8) said \"temporary failure\", postqueue -j lists it in the deferred queue"
                .to_string(),
        ))
    })
}

/// The installed tools, run as the pipe's user and group (the runner's
/// user may be the MTA's: docs/operations.md, section 11).
struct Mm {
    bin: PathBuf,
    spool: PathBuf,
    uid: u32,
    gid: u32,
}

impl Mm {
    /// Runs tool `name` on the spool; fails unless it exits 0.
    fn run(&self, name: &str, args: &[&str]) -> anyhow::Result<sys::Finished> {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.arg("--spool")
            .arg(&self.spool)
            .args(args)
            .current_dir(&self.spool)
            // Only the spool named here, and none of the test-only knobs.
            .env_remove("MM_SPOOL")
            .env_remove("MM_HOST")
            .env_remove("MM_TEST_NOW")
            .env_remove("MM_TEST_CLOCK_OFFSET")
            .env_remove("MM_TEST_CRASH_AT")
            // std drops root's supplementary groups when it sets the uid.
            .uid(self.uid)
            .gid(self.gid);
        run_ok(&mut cmd, b"", TOOL_TIMEOUT)
    }

    /// Runs tool `name` and parses its JSON Lines.
    fn json(&self, name: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let out = self.run(name, args)?.out();
        out.lines()
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("{name} printed bad JSON: {l}"))
            })
            .collect()
    }
}

/// Builds `tools` with the cargo that runs us; returns their directory.
pub(crate) fn build(root: &Path, tools: &[&str]) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).args(["build", "--quiet"]);
    for t in tools {
        cmd.args(["-p", t]);
    }
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", sys::shown(&cmd)))?;
    sys::check_interrupted()?;
    if !status.success() {
        bail!("{} failed ({status})", sys::shown(&cmd));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug"))
}

/// Copies the tools into `dest` (mode 0755), as an install would: the pipe
/// user must be able to run them, and may not reach into the checkout.
fn install(bin: &Path, dest: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir(dest).with_context(|| format!("cannot create {}", dest.display()))?;
    set_mode(dest, 0o755)?;
    for t in TOOLS {
        let to = dest.join(t);
        std::fs::copy(bin.join(t), &to).with_context(|| {
            format!("cannot copy {} to {}", bin.join(t).display(), to.display())
        })?;
        set_mode(&to, 0o755)?;
    }
    Ok(dest.to_path_buf())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {} to {mode:o}", path.display()))
}

/// A loopback port nobody listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free loopback port")?
        .port())
}

/// Whether we run as root (effective uid 0), as the tests decide it.
pub(crate) use mm_e2e::is_root;

/// After a failure: the tail of Postfix's log, and smtp-sink's complaints.
fn print_diagnostics(dir: &Path) {
    let log = dir.join("postfix").join("maillog");
    match std::fs::read(&log) {
        Ok(text) => {
            eprintln!("e2e: the end of Postfix's log ({}):", log.display());
            for line in postfix::tail(&String::from_utf8_lossy(&text), 40).lines() {
                eprintln!("  {line}");
            }
        }
        Err(e) => eprintln!("e2e: no Postfix log ({}: {e})", log.display()),
    }
    if let Ok(err) = std::fs::read_to_string(dir.join("sink.stderr"))
        && !err.trim().is_empty()
    {
        eprintln!("e2e: smtp-sink said: {}", err.trim());
    }
}
