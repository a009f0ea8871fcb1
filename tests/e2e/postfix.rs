//! mm behind a real MTA, end to end (what `cargo xtask e2e` runs).
//!
//! A private Postfix instance (the kit's `mm_e2e::postfix`: its own
//! configuration, queue and log under a temporary directory, smtpd on a free
//! loopback port) routes the domain `lists.example` to the pipe(8) transport
//! of docs/operations.md, section 10, which runs `mm-enqueue` as a system
//! user whose primary group is the spool's (made here, removed at the end,
//! on a failure too), with Postfix's LF line ends. Each test has its own
//! instance, user and group, so the two run side by side.
//!
//! * The normal path: three messages go in, one by Postfix's `sendmail`,
//!   two over SMTP, 8-bit, with long lines and dots, one to 120 recipients,
//!   one from the null sender (`mail.rs`). Postfix must hand each to
//!   `mm-enqueue` in one pipe delivery: one entry per message in `in/`, with
//!   its envelope, and its bytes exactly as sent but for the `Return-Path:`
//!   and `Received:` Postfix adds. Then `mm-runq --until-empty` delivers them
//!   to Postfix's `smtp-sink`, which saves each transaction: every recipient
//!   must get its message once, byte for byte as mm stored it.
//! * The failure path: the spool is made unreachable for the pipe's user:
//!   `mm-enqueue` (run as the docs test it: that user and group, umask 077)
//!   must exit 75, and Postfix must defer a new message and keep it queued;
//!   once the spool is fixed, `postqueue -f` must bring it into mm, and
//!   `mm-runq` to the sink, as above.
//!
//! Both end with nothing wrong in Postfix's log and Postfix stopped with no
//! process of it left. On failure the tail of Postfix's log is printed.
//! `MM_E2E_KEEP=1` keeps the directory (`cargo xtask e2e --keep`).

mod mail;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use mail::{TestMessage, Via};
use mm_e2e::postfix::{self, PipeAccount, Postfix, Settings};
use mm_e2e::{Out, SmtpSink, Tool, poll_for};

/// The domain Postfix routes to mm.
const DOMAIN: &str = "lists.example";
/// smtp-sink's user (it will not keep root's privileges).
const SINK_USER: &str = "nobody";
/// Longest any one mm tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest Postfix may take to hand messages to the pipe. Generous: on a
/// loaded 2-core machine its queue manager was once seen to wait more than
/// 30 s before trying a deferred message again; a pass costs only the time
/// Postfix really takes.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
#[ignore = "needs root: adds the pipe's system user and starts a private Postfix"]
fn postfix_pipes_each_message_to_mm_once_and_runq_delivers_it_byte_for_byte() {
    mm_e2e::require_root("the Postfix end-to-end test");
    // The pipe's user and group (docs/operations.md, section 11: the group
    // is the spool's); not the docs' mmta:mm, which may be a real install's.
    run_with_postfix("mm-pf-pipe", "mm-pf-spool", |mta| {
        let mut seen = BTreeSet::new();
        let normal = mail::normal(DOMAIN);
        for m in &normal {
            submit(&mta.postfix, m)?;
        }
        let rcpts: usize = normal.iter().map(|m| m.rcpts.len()).sum();
        println!(
            "postfix: sent {} messages to {rcpts} recipients ({} by sendmail, {} by SMTP, one \
             from <>), 8-bit, long lines, dots",
            normal.len(),
            normal.iter().filter(|m| m.via == Via::Sendmail).count(),
            normal.iter().filter(|m| m.via == Via::Smtp).count(),
        );
        let handed = handed_to_mm(mta, &normal, false)?;
        println!(
            "postfix: Postfix piped each to mm-enqueue once: {} entries in in/, envelopes and \
             bytes as sent (+ Return-Path:, Received:)",
            handed.len()
        );
        let transactions = drain(mta, &handed, &mut seen)?;
        println!(
            "postfix: mm-runq --until-empty -> smtp-sink: {transactions} SMTP transactions, each \
             of the {rcpts} recipients got its message once, bytes as stored; every queue empty"
        );
        Ok(())
    });
}

#[test]
#[ignore = "needs root: adds the pipe's system user and starts a private Postfix"]
fn with_the_spool_unreachable_enqueue_exits_75_and_postfix_defers_then_delivers() {
    mm_e2e::require_root("the Postfix end-to-end test of the exit-75 path");
    run_with_postfix("mm-pf-defer", "mm-pf-dspool", |mta| {
        let mut seen = BTreeSet::new();
        let late = mail::deferred(DOMAIN);
        set_mode(&mta.spool, 0o700)?;
        let (code, said) = enqueue_by_hand(mta)?;
        if code != Some(75) {
            bail!(
                "with the spool unreachable, mm-enqueue (run as the docs test it) exited \
                 {code:?}, want 75 (try again later): {said}"
            );
        }
        let queue_id = submit(&mta.postfix, &late)?;
        let deferral = deferred_by_postfix(&mta.postfix, &late, &queue_id)?;
        println!(
            "postfix: spool unreachable for {} (mode 0700): mm-enqueue exits 75: {said}",
            mta.account.user
        );
        println!("postfix: Postfix deferred {queue_id} and keeps it: {deferral}");
        set_mode(&mta.spool, 0o2770)?;
        mta.postfix.flush()?;
        let handed = handed_to_mm(mta, std::slice::from_ref(&late), true)?;
        let transactions = drain(mta, &handed, &mut seen)?;
        println!(
            "postfix: spool fixed, postqueue -f: {queue_id} piped into mm once, then mm-runq -> \
             smtp-sink ({transactions} transaction), bytes as sent"
        );
        Ok(())
    });
}

/// A running private Postfix piping `DOMAIN` into mm, and smtp-sink.
struct Mta {
    postfix: Postfix,
    sink: SmtpSink,
    spool: PathBuf,
    account: PipeAccount,
}

/// Sets up the directory, the account `user:group`, the spool, Postfix and
/// smtp-sink; runs `check`; then checks Postfix's log for trouble and stops
/// everything. A failure anywhere panics with the reason, after printing the
/// end of Postfix's log; the guards (Postfix, the sink, the account, the
/// directory) clean up either way.
fn run_with_postfix(user: &str, group: &str, check: impl FnOnce(&Mta) -> anyhow::Result<()>) {
    for program in ["postfix", "postconf", "postqueue", "sendmail"] {
        postfix::program(program).unwrap_or_else(|e| panic!("{e:#}"));
    }
    if let Err(e) = mm_e2e::SmtpSink::binary() {
        panic!("{e}");
    }
    let tmp = tempfile::Builder::new()
        .prefix("mm-e2e-postfix.")
        .tempdir()
        .expect("a temporary directory");
    let dir = tmp.path().to_path_buf();
    let result = (|| -> anyhow::Result<()> {
        // Postfix's daemons, the pipe user and smtp-sink's user must all
        // reach into it; what must stay private has its own modes below.
        set_mode(&dir, 0o755)?;
        // Guards, dropped in reverse order: the sink, Postfix, the account.
        // The names are the tests' own: what a killed run left goes too.
        let account = PipeAccount::ensure(user, group)?.owned();
        // The spool as docs/operations.md, section 11 makes it: root of
        // the spool's group, mode 2770 (setgid: everything in it gets it).
        let spool = dir.join("spool");
        std::fs::create_dir(&spool)
            .with_context(|| format!("cannot create {}", spool.display()))?;
        std::os::unix::fs::chown(&spool, Some(0), Some(account.gid))
            .with_context(|| format!("cannot chown {}", spool.display()))?;
        set_mode(&spool, 0o2770)?;
        // The pipe user runs a copy every user can read (the build's may be
        // in a home of mode 0700), as an install would have it.
        let enqueue = mm_e2e::bin_for_all("mm-enqueue");
        let mut postfix = Postfix::configure(&Settings {
            dir: &dir.join("postfix"),
            port: mm_e2e::free_port(),
            domain: DOMAIN,
            user,
            group,
            enqueue: &enqueue,
            spool: &spool,
        })?;
        let sink = SmtpSink::saving(&dir.join("sink"), SINK_USER, &[])?;
        postfix.start()?;
        println!(
            "postfix: Postfix {} in {}: smtpd on 127.0.0.1:{}, {DOMAIN} -> pipe(8) -> \
             mm-enqueue as {user}:{group}; smtp-sink on 127.0.0.1:{}",
            postfix.version,
            dir.display(),
            postfix.port,
            sink.port()
        );
        let mut mta = Mta {
            postfix,
            sink,
            spool,
            account,
        };
        check(&mta)?;
        // The end: nothing went wrong inside Postfix, and nothing is left.
        let log = mta.postfix.log_text()?;
        let troubles = postfix::troubles(&log);
        if !troubles.is_empty() {
            bail!("Postfix logged trouble:\n  {}", troubles.join("\n  "));
        }
        mta.postfix.stop()?;
        drop(mta.sink);
        mta.account.remove()?;
        Ok(())
    })();
    if result.is_err() {
        print_diagnostics(&dir);
    }
    if std::env::var_os("MM_E2E_KEEP").is_some_and(|v| !v.is_empty()) {
        println!("postfix: kept {}", tmp.keep().display());
    }
    if let Err(e) = result {
        panic!("{e:#}");
    }
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
            let mut client = mm_e2e::smtp_client::Client::connect(postfix.port)?;
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
    mta: &Mta,
    msgs: &'a [TestMessage],
    deferred_before: bool,
) -> anyhow::Result<Vec<Handed<'a>>> {
    let postfix = &mta.postfix;
    let queue_ids = poll_for(
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
    let in_queue: BTreeSet<String> = json(mta, "mm-showq", &["--json", "in"])?
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
        let dump = json(mta, "mm-dumpdb", &["--json", entry])?;
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
        let stored = mm(mta, "mm-dumpdb", &["--raw", entry])?.stdout;
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
fn drain(mta: &Mta, handed: &[Handed<'_>], seen: &mut BTreeSet<String>) -> anyhow::Result<usize> {
    let sink = &mta.sink;
    let runq = mm(
        mta,
        "mm-runq",
        &[
            "-q",
            "in",
            "--smtp",
            &sink.url(),
            "--until-empty",
            "--quiet",
        ],
    )?;
    let said = runq.stderr_str();
    if !said.trim().is_empty() {
        bail!("mm-runq --quiet complained: {}", said.trim());
    }

    let by_id: BTreeMap<&str, &Handed<'_>> = handed
        .iter()
        .map(|h| (h.msg.message_id.as_str(), h))
        .collect();
    let want: usize = handed.iter().map(|h| h.msg.rcpts.len()).sum();
    // mm-runq is done, so smtp-sink has answered every end of data; its
    // last file may still be being closed, hence the (short) wait.
    let mut last_error = String::new();
    let dumps = poll_for("smtp-sink's files", Duration::from_secs(10), || {
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
        let id = mm_e2e::message_id(&d.data).unwrap_or_default();
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
                mm_e2e::first_difference(&d.data, &h.stored)
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
    for row in json(mta, "mm-showq", &["--json"])? {
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
fn enqueue_by_hand(mta: &Mta) -> anyhow::Result<(Option<i32>, String)> {
    let done = Tool::new("mm-enqueue")
        .as_user(mta.account.uid, mta.account.gid)
        .umask(0o077)
        .arg("--spool")
        .arg(&mta.spool)
        .args(["-q", "in", "-f", "", "--", &format!("list@{DOMAIN}")])
        .stdin(&b"Subject: test\n\ntest\n"[..])
        .timeout(TOOL_TIMEOUT)
        .try_run()
        .map_err(anyhow::Error::msg)?;
    Ok((done.status.code(), mm_e2e::one_line(&done.stderr_str())))
}

/// Waits until Postfix has deferred `m` (queue id `qid`) because mm-enqueue
/// exited 75, and shows it in its queue; returns the reason it keeps.
fn deferred_by_postfix(postfix: &Postfix, m: &TestMessage, qid: &str) -> anyhow::Result<String> {
    poll_for("Postfix to defer the message", HANDOFF_TIMEOUT, || {
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

/// Runs tool `name` on the spool as the pipe's user and group (the
/// runner's user may be the MTA's: docs/operations.md, section 11); fails
/// unless it exits 0.
fn mm(mta: &Mta, name: &str, args: &[&str]) -> anyhow::Result<Out> {
    Tool::new(name)
        .as_user(mta.account.uid, mta.account.gid)
        .arg("--spool")
        .arg(&mta.spool)
        .args(args)
        .cwd(&mta.spool)
        .timeout(TOOL_TIMEOUT)
        .run_ok()
        .map_err(anyhow::Error::msg)
}

/// Runs tool `name` and parses its JSON Lines.
fn json(mta: &Mta, name: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let out = mm(mta, name, args)?.stdout;
    String::from_utf8_lossy(&out)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("{name} printed bad JSON: {l}")))
        .collect()
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {} to {mode:o}", path.display()))
}

/// After a failure: the tail of Postfix's log, and smtp-sink's complaints.
fn print_diagnostics(dir: &Path) {
    let log = dir.join("postfix").join("maillog");
    match std::fs::read(&log) {
        Ok(text) => {
            eprintln!("postfix: the end of Postfix's log ({}):", log.display());
            for line in postfix::tail(&String::from_utf8_lossy(&text), 40).lines() {
                eprintln!("  {line}");
            }
        }
        Err(e) => eprintln!("postfix: no Postfix log ({}: {e})", log.display()),
    }
    if let Ok(err) = std::fs::read_to_string(dir.join("sink.stderr"))
        && !err.trim().is_empty()
    {
        eprintln!("postfix: smtp-sink said: {}", err.trim());
    }
}
