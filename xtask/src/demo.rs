//! `cargo xtask demo`: the main job of mm, end to end, on any machine.
//!
//! No MTA, no network and no terminal are needed: the demo builds the six
//! tools (`$CARGO build`, then the binaries in `target/debug`), makes a
//! temporary spool, starts an SMTP server inside this process (the test kit's `MailServer`),
//! enqueues sample messages with `mm-enqueue`, shows the queues with
//! `mm-showq`, delivers with `mm-runq --until-empty`, and shows the queues
//! and the deferred entry (`mm-dumpdb`) again. Each step says what to look
//! at. It then checks what the server received and what the queues hold,
//! and fails with the list of surprises if anything went otherwise.
//!
//! Every command runs with a time limit (a stuck tool fails the demo instead
//! of hanging it), with `MM_SPOOL` set to the demo's spool and the test-only
//! variables removed, from the demo's directory, so the commands shown are
//! the commands run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::TOOLS;
use mm_e2e::{MailServer, Tool};

/// Longest any one tool may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(20);

/// Retry delay given to mm-runq. One second would make the deferred entry
/// due again before `mm-showq` looks (it would show as queued), and would let
/// `--until-empty` retry it a time-dependent number of times.
const RETRY_MIN: &str = "1m";

/// A sample message: the file it is enqueued from, and how.
struct Sample {
    /// What it shows.
    what: &'static str,
    /// File name under `mail/`.
    file: &'static str,
    /// Its bytes.
    body: &'static [u8],
    /// mm-enqueue's arguments; `--file mail/FILE` or `< mail/FILE` is added.
    args: &'static [&'static str],
    /// Read with `--file` rather than from standard input.
    from_file: bool,
}

const SAMPLES: &[Sample] = &[
    Sample {
        what: "one recipient",
        file: "1-hello.eml",
        body: b"From: owner@example.org\r\nTo: alice@example.org\r\nSubject: demo 1: hello\r\n\r\nOne message, one recipient.\r\n",
        args: &["-q", "out", "-f", "owner@example.org", "alice@example.org"],
        from_file: false,
    },
    Sample {
        what: "a list post to three recipients in two domains (one SMTP transaction per domain)",
        file: "2-list.eml",
        body: b"From: carol@example.com\r\nTo: dev@lists.example.org\r\nSubject: demo 2: list post\r\nList-Id: <dev.lists.example.org>\r\n\r\nA post to the dev list.\r\n",
        args: &[
            "-q",
            "out",
            "-f",
            "dev-bounces@lists.example.org",
            "--list",
            "dev",
            "bob@example.com",
            "carol@example.com",
            "dave@example.net",
        ],
        from_file: false,
    },
    Sample {
        what: "a recipient the server defers (450): the entry stays in out/",
        file: "3-defer.eml",
        body: b"From: owner@example.org\r\nSubject: demo 3: one deferred\r\n\r\nalice gets this now, busy@ later.\r\n",
        args: &[
            "-q",
            "out",
            "-f",
            "owner@example.org",
            "alice@example.org",
            "busy@example.net",
        ],
        from_file: false,
    },
    Sample {
        what: "a recipient the server refuses (550): a bounce record goes to bounces/",
        file: "4-bounce.eml",
        body: b"From: owner@example.org\r\nSubject: demo 4: one bounced\r\n\r\nerin gets this, nobody@ does not exist.\r\n",
        args: &[
            "-q",
            "out",
            "-f",
            "owner@example.org",
            "nobody@example.org",
            "erin@example.org",
        ],
        from_file: false,
    },
    Sample {
        what: "bare LF line ends and a line holding a single '.' (sent as CRLF, dot-stuffed)",
        file: "5-dot.eml",
        body: b"From: owner@example.org\nSubject: demo 5: a lone dot\n\nThe next line is a single dot:\n.\nand this line comes after it.\n",
        args: &["-q", "out", "-f", "owner@example.org", "frank@example.com"],
        from_file: false,
    },
    Sample {
        what: "from a file (--file, as a bulk load does), with metadata",
        file: "6-file.eml",
        body: b"From: owner@example.org\r\nSubject: demo 6: from a file\r\n\r\nRead with --file.\r\n",
        args: &[
            "-q",
            "out",
            "-f",
            "owner@example.org",
            "--meta",
            "source=demo",
            "--to",
            "grace@example.com",
        ],
        from_file: true,
    },
];

/// (subject, recipient) of every delivery the server must see, once each.
const EXPECTED_DELIVERIES: &[(&str, &str)] = &[
    ("demo 1: hello", "alice@example.org"),
    ("demo 2: list post", "bob@example.com"),
    ("demo 2: list post", "carol@example.com"),
    ("demo 2: list post", "dave@example.net"),
    ("demo 3: one deferred", "alice@example.org"),
    ("demo 4: one bounced", "erin@example.org"),
    ("demo 5: a lone dot", "frank@example.com"),
    ("demo 6: from a file", "grace@example.com"),
];

/// Runs the demo from the workspace at `root`.
pub fn run(root: &Path, keep: bool) -> anyhow::Result<()> {
    let started = Instant::now();

    step(
        1,
        "build the six tools",
        "The demo runs the real binaries, as an MTA or cron would.",
    );
    let bin = build(root)?;

    let dir = tempfile::Builder::new()
        .prefix("mm-demo.")
        .tempdir()
        .context("cannot make a temporary directory")?;
    let demo = Demo::new(dir.path(), bin)?;
    let sink = MailServer::start_named("demo-smtp.invalid")
        .context("cannot start the demo's SMTP server")?;
    sink.name_queue_ids("demo-");
    sink.refuse_always(
        "busy@example.net",
        450,
        "4.2.1 Mailbox busy, try again later",
    );
    sink.refuse_always("nobody@example.org", 550, "5.1.1 No such user here");
    step(
        2,
        "a spool and an SMTP server",
        "The spool is an empty directory: the tools make the queues they need. The SMTP \
         server runs inside this process, standing in for your MTA or smarthost. It answers \
         RCPT TO with 450 (try again later) for busy@example.net, 550 (no such user) for \
         nobody@example.org, and 250 for anyone else. Every command below runs in this directory, with:",
    );
    println!("    cd {}", demo.dir.display());
    println!("    export MM_SPOOL={}", demo.spool.display());
    println!("    SMTP server: 127.0.0.1:{}", sink.port());

    step(
        3,
        "enqueue six messages into out/",
        "out/ is the queue mm-runq delivers from. Each mm-enqueue prints the id of the new \
         entry, and exits 0 only once the entry is on stable storage.",
    );
    for s in SAMPLES {
        std::fs::write(demo.dir.join("mail").join(s.file), s.body)
            .with_context(|| format!("cannot write the sample {}", s.file))?;
    }
    let mut problems = Vec::new();
    for s in SAMPLES {
        println!("  # {}", s.what);
        let path = format!("mail/{}", s.file);
        let mut args: Vec<&str> = s.args.to_vec();
        let out = if s.from_file {
            args.extend(["--file", &path]);
            demo.tool("mm-enqueue", &args, None)?
        } else {
            demo.tool("mm-enqueue", &args, Some(&path))?
        };
        if !out.status.success() || out.stdout.trim().is_empty() {
            problems.push(format!("mm-enqueue of {} failed", s.file));
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }

    step(
        4,
        "the queues before delivery",
        "mm-showq alone prints one line per queue, from the file names alone. Look at out: \
         QUEUED 6. With a queue name it lists the entries: id, state, age, size, attempts, \
         next attempt, sender -> first recipient (+ how many more).",
    );
    demo.tool("mm-showq", &[], None)?;
    demo.tool("mm-showq", &["out"], None)?;

    let smtp = format!("smtp://127.0.0.1:{}", sink.port());
    step(
        5,
        "deliver: mm-runq --until-empty",
        "mm-runq claims each entry (a rename, so two runners never take the same one), \
         sends one RCPT per recipient and records each reply, and stops when no entry is due. \
         Look for the 'done' lines, the entry deferred because busy@example.net got 450 \
         (alice@example.org in the same entry is delivered and will not be sent again), and \
         nobody@example.org's 550.",
    );
    let runq = demo.tool(
        "mm-runq",
        &[
            "-q",
            "out",
            "--smtp",
            &smtp,
            "--until-empty",
            "--retry-min",
            RETRY_MIN,
        ],
        None,
    )?;
    if !runq.status.success() {
        problems.push(format!("mm-runq exited with {}", runq.status));
    }
    println!();
    println!("  The SMTP server saw:");
    {
        let (answered, messages) = (sink.answered(), sink.received());
        for (rcpt, code) in answered.iter().filter(|(_, c)| *c != 250) {
            println!("    RCPT TO:<{rcpt}> answered {code}");
        }
        for (i, m) in messages.iter().enumerate() {
            println!(
                "    message {}: <{}> -> {}: \"{}\" ({} bytes)",
                i + 1,
                m.from,
                m.rcpts.join(", "),
                m.subject(),
                m.data.len()
            );
        }
        if let Some(m) = messages
            .iter()
            .find(|m| m.subject() == "demo 5: a lone dot")
        {
            println!();
            let text = "\"demo 5\" as the server received it: its bare LFs became CRLF, and \
                        its lone '.' line arrived as text (dot-stuffed on the wire), not as the \
                        end of the message:";
            println!("{}", wrap(text, 78, "  "));
            for line in String::from_utf8_lossy(&m.data).split_inclusive('\n') {
                let shown = line.replace('\r', "\\r").replace('\n', "\\n");
                println!("    | {shown}");
            }
        }
    }

    step(
        6,
        "the queues after delivery",
        "out/ holds one entry, DEFERRED: the one whose busy@example.net asked to try again \
         later. bounces/ holds one entry: the record of nobody@example.org's refusal (kept \
         in the spool, nothing was sent to the sender). Everything else was delivered and \
         removed.",
    );
    demo.tool("mm-showq", &[], None)?;
    demo.tool("mm-showq", &["out"], None)?;
    demo.tool("mm-showq", &["bounces"], None)?;

    let summary = demo.json("mm-showq", &["--json"])?;
    let out_entries = demo.json("mm-showq", &["--json", "out"])?;
    let bounce_entries = demo.json("mm-showq", &["--json", "bounces"])?;
    let deferred_id = out_entries
        .first()
        .and_then(|e| e["id"].as_str())
        .map(str::to_string);

    step(
        7,
        "the deferred entry whole: mm-dumpdb",
        "Each recipient with its state and the server's last reply, the attempts, when the \
         next one is due, the history, then the message.",
    );
    match &deferred_id {
        Some(id) => {
            let dump = demo.tool("mm-dumpdb", &[id], None)?;
            if !dump.status.success() || !dump.stdout.contains("busy@example.net") {
                problems.push("mm-dumpdb did not show the deferred entry".into());
            }
        }
        None => println!("    (out/ has no entry to show)"),
    }

    problems.extend(check_server(&sink));
    problems.extend(check_queues(&summary, &out_entries, &bounce_entries));

    step(8, "verdict", "");
    let spool_note = if keep {
        let kept = dir.keep();
        format!(
            "The spool is kept: cd {} && export MM_SPOOL=$PWD/spool",
            kept.display()
        )
    } else {
        "The spool is removed; `cargo xtask demo --keep` keeps it to look around.".to_string()
    };
    if !problems.is_empty() {
        println!("  {spool_note}");
        bail!(
            "the demo did not go as expected:\n  - {}",
            problems.join("\n  - ")
        );
    }
    println!(
        "  All as expected, in {:.1} s: {} messages to {} recipients delivered, \
         busy@example.net deferred, nobody@example.org bounced.",
        started.elapsed().as_secs_f64(),
        sink.received().len(),
        EXPECTED_DELIVERIES.len()
    );
    println!("  {spool_note}");
    Ok(())
}

/// A header for step `n`, and what to look at.
fn step(n: u32, title: &str, text: &str) {
    println!();
    println!("== {n}. {title}");
    if !text.is_empty() {
        println!("{}", wrap(text, 78, "   "));
    }
}

/// `text` wrapped at `width` columns, each line prefixed with `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

/// Builds the tools with the cargo that runs us, and returns their directory.
fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root).arg("build");
    let mut shown = String::from("cargo build");
    for t in TOOLS {
        cmd.args(["-p", t.name]);
        let _ = write!(shown, " -p {}", t.name);
    }
    println!("  $ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    if !status.success() {
        bail!("cargo build failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug");
    for t in TOOLS {
        if !bin.join(t.name).is_file() {
            bail!("{} is not in {} after cargo build", t.name, bin.display());
        }
    }
    Ok(bin)
}

/// What a tool printed, and how it ended.
struct Output {
    status: ExitStatus,
    stdout: String,
}

/// The demo's directory: `spool/` and the sample messages in `mail/`.
struct Demo {
    dir: PathBuf,
    spool: PathBuf,
    bin: PathBuf,
}

impl Demo {
    fn new(dir: &Path, bin: PathBuf) -> anyhow::Result<Demo> {
        use std::os::unix::fs::PermissionsExt;
        let spool = dir.join("spool");
        for d in [&spool, &dir.join("mail")] {
            std::fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        // As an admin would make it (see SECURITY in the man pages).
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2770))
            .with_context(|| format!("cannot set the mode of {}", spool.display()))?;
        Ok(Demo {
            dir: dir.to_path_buf(),
            spool,
            bin,
        })
    }

    /// Runs a tool, showing the command line and everything it printed.
    fn tool(&self, name: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut shown = format!("$ {name}");
        for a in args {
            if a.is_empty() || a.contains([' ', '\'', '"', '$', '*', '<', '>', '|']) {
                let _ = write!(shown, " '{a}'");
            } else {
                let _ = write!(shown, " {a}");
            }
        }
        if let Some(path) = stdin {
            let _ = write!(shown, " < {path}");
        }
        println!("  {shown}");
        let out = self.run(name, args, stdin)?;
        for line in out.stdout.lines().chain(out.stderr.lines()) {
            println!("    {line}");
        }
        if !out.status.success() {
            println!("    ({name} exited with {})", out.status);
        }
        Ok(Output {
            status: out.status,
            stdout: out.stdout,
        })
    }

    /// Runs a tool quietly and parses its JSON Lines output.
    fn json(&self, name: &str, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let out = self.run(name, args, None)?;
        if !out.status.success() {
            bail!(
                "{name} {} failed ({}): {}",
                args.join(" "),
                out.status,
                out.stderr.trim()
            );
        }
        out.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("{name} printed bad JSON: {l}"))
            })
            .collect()
    }

    fn run(&self, name: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Captured> {
        let input = match stdin {
            Some(path) => {
                std::fs::read(self.dir.join(path)).with_context(|| format!("cannot read {path}"))?
            }
            None => Vec::new(),
        };
        // The test kit's command builder: its own process group, killed
        // after the time limit; no MM_* variable inherited but the spool.
        let done = Tool::program(self.bin.join(name))
            .args(args)
            .cwd(&self.dir)
            .env("MM_SPOOL", &self.spool)
            .stdin(input)
            .timeout(TOOL_TIMEOUT)
            .try_run()
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{name} failed to run"))?;
        Ok(Captured {
            status: done.status,
            stdout: String::from_utf8_lossy(&done.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
        })
    }
}

struct Captured {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// What the SMTP server should have seen and did not, or saw and should not have.
fn check_server(sink: &MailServer) -> Vec<String> {
    let (answered_all, messages) = (sink.answered(), sink.received());
    let mut problems = Vec::new();
    let mut got: Vec<(String, String)> = messages
        .iter()
        .flat_map(|m| m.rcpts.iter().map(|r| (m.subject(), r.clone())))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = EXPECTED_DELIVERIES
        .iter()
        .map(|(s, r)| (s.to_string(), r.to_string()))
        .collect();
    want.sort();
    for w in &want {
        match got.iter().filter(|g| *g == w).count() {
            1 => {}
            0 => problems.push(format!(
                "the server did not receive \"{}\" for {}",
                w.0, w.1
            )),
            n => problems.push(format!(
                "the server received \"{}\" for {} {n} times",
                w.0, w.1
            )),
        }
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        problems.push(format!(
            "the server received \"{}\" for {}, which it should not",
            g.0, g.1
        ));
    }
    let answered = |rcpt: &str, code: u16| {
        answered_all
            .iter()
            .filter(|(r, c)| r == rcpt && *c == code)
            .count()
    };
    if answered("busy@example.net", 450) != 1 {
        problems.push("busy@example.net was not tried exactly once (450)".into());
    }
    if answered("nobody@example.org", 550) != 1 {
        problems.push("nobody@example.org was not tried exactly once (550)".into());
    }
    // A missing message was reported above.
    if let Some(m) = messages
        .iter()
        .find(|m| m.subject() == "demo 5: a lone dot")
    {
        let text = String::from_utf8_lossy(&m.data);
        if !text.contains("dot:\r\n.\r\nand this line comes after it.\r\n") {
            problems
                .push("the message with a lone '.' did not arrive intact (dot-stuffing)".into());
        }
        if text.replace("\r\n", "").contains('\n') {
            problems.push("a bare LF reached the SMTP server (want CRLF)".into());
        }
    }
    problems
}

/// The queue states the demo should end in, from `mm-showq --json`.
fn check_queues(summary: &[Value], out: &[Value], bounces: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let count = |queue: &str, field: &str| {
        summary
            .iter()
            .find(|r| r["queue"] == queue)
            .and_then(|r| r[field].as_u64())
            .unwrap_or(0)
    };
    for (queue, field, want) in [
        ("out", "deferred", 1),
        ("out", "queued", 0),
        ("out", "claimed", 0),
        ("out", "writing", 0),
        ("bounces", "queued", 1),
    ] {
        let got = count(queue, field);
        if got != want {
            problems.push(format!("{queue}/ has {got} {field} entries, want {want}"));
        }
    }
    for queue in ["bad", "shunt"] {
        let n: u64 = ["queued", "deferred", "claimed", "preserved", "writing"]
            .iter()
            .map(|f| count(queue, f))
            .sum();
        if n > 0 {
            problems.push(format!("{queue}/ has {n} entries, want none"));
        }
    }
    if out.len() != 1 || out[0]["state"] != "deferred" {
        problems.push(format!(
            "mm-showq out lists {} entries, want the deferred one",
            out.len()
        ));
    }
    if bounces.len() != 1 || bounces[0]["first_recipient"] != "nobody@example.org" {
        problems.push("bounces/ does not hold the record for nobody@example.org".into());
    }
    problems
}
