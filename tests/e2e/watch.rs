//! Watching the queue (issue 13, items 1 and 2): `mm-showq --metrics`
//! parsed by Prometheus' own parser (`promtool check metrics`, Debian's
//! `prometheus` package) at every state of a spool; `mm-runq
//! --metrics-file` against what the SMTP server received; and `mm-showq
//! --runners`: a runner hanging in a stage and one waiting on a server that
//! stalls are reported stalled past the threshold, while a busy one is not.
//!
//! Servers: mailin-embedded in process (a stalling one, one that refuses
//! chosen recipients). A missing promtool fails the tests with the reason;
//! they never pass without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use mm_core::State;
use mm_e2e::{TestSpool, Tool, poll_until};

use crate::runq::{enqueue, entries_in, name_of, only_entry_in, runq};
use crate::smtp::MailServer;

/// Where promtool is; fails the test, saying how to get it, if it is not.
fn promtool() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is missing: it is the real Prometheus parser these tests check the \
                 metrics with (Debian package prometheus; `cargo xtask test` installs it)"
            )
        })
}

/// Feeds `text` to `promtool check metrics`: it must parse, with no lint
/// complaint at all.
#[track_caller]
fn promtool_accepts(text: &str, when: &str) {
    let out = Tool::program(promtool())
        .args(["check", "metrics"])
        .stdin(text)
        .run();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "{when}: promtool check metrics refused the metrics\n{out}\n--- metrics ---\n{text}"
    );
}

/// `mm-showq --metrics` (with a threshold), checked by promtool.
#[track_caller]
fn metrics(s: &TestSpool, stalled_after: &str, when: &str) -> String {
    let out = Tool::new("mm-showq")
        .spool(s)
        .args(["--metrics", "--stalled-after", stalled_after])
        .run();
    out.assert_ok();
    let text = out.stdout_str();
    promtool_accepts(&text, when);
    text
}

/// The value of the sample `series` (`name{labels}` exactly as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok())?
    })
}

#[track_caller]
fn assert_sample(text: &str, series: &str, want: f64, when: &str) {
    assert_eq!(
        sample(text, series),
        Some(want),
        "{when}: {series}\n--- metrics ---\n{text}"
    );
}

/// Asserts the count of the runners of `queue` (slice 1/1) in `state`.
#[track_caller]
fn assert_runners(text: &str, queue: &str, state: &str, want: f64, when: &str) {
    let series = format!("mm_runners{{queue=\"{queue}\",slice=\"1/1\",state=\"{state}\"}}");
    assert_sample(text, &series, want, when);
}

fn entries(queue: &str, state: &str) -> String {
    format!("mm_queue_entries{{queue=\"{queue}\",state=\"{state}\"}}")
}

/// `mm-showq --runners --json` rows.
fn runners(s: &TestSpool, stalled_after: &str) -> Vec<Value> {
    let out = Tool::new("mm-showq")
        .spool(s)
        .args(["--runners", "--json", "--stalled-after", stalled_after])
        .run();
    out.assert_ok();
    out.json_lines()
}

fn row_of<'a>(rows: &'a [Value], queue: &str) -> Option<&'a Value> {
    rows.iter().find(|r| r["queue"] == queue)
}

#[test]
fn promtool_accepts_the_metrics_of_a_spool_in_every_state_and_every_series_is_there() {
    let s = TestSpool::new();
    let empty = metrics(&s, "5m", "an empty spool");
    for q in ["in", "out", "bounces", "bad", "shunt"] {
        for st in [
            "queued",
            "deferred",
            "claimed",
            "preserved",
            "held",
            "writing",
        ] {
            assert_sample(&empty, &entries(q, st), 0.0, "empty");
        }
        assert_runners(&empty, q, "alive", 0.0, "empty");
    }
    for r in ["crashed", "undecodable", "unreadable", "stage", "other"] {
        assert_sample(
            &empty,
            &format!("mm_quarantined_entries{{queue=\"bad\",reason=\"{r}\"}}"),
            0.0,
            "empty",
        );
    }

    // Queued.
    let first = enqueue(&s, "out", &["a@example.com"], b"Subject: one\n\nfirst\n");
    let m = metrics(&s, "5m", "one entry queued");
    assert_sample(&m, &entries("out", "queued"), 1.0, "queued");
    let size = std::fs::metadata(only_entry_in(&s, "out")).unwrap().len();
    assert_sample(
        &m,
        "mm_queue_bytes{queue=\"out\",state=\"queued\"}",
        size as f64,
        "queued",
    );

    // Deferred: the server says 451 once.
    let server = MailServer::start();
    server.refuse_once("a@example.com", 451, "4.3.0 try later");
    runq(&s)
        .args(["--once", "--smtp", &server.url()])
        .run()
        .assert_code(0);
    let m = metrics(&s, "5m", "one entry deferred");
    assert_sample(&m, &entries("out", "deferred"), 1.0, "deferred");
    assert_sample(&m, &entries("out", "queued"), 0.0, "deferred");
    assert_sample(
        &m,
        "mm_queue_due_late_seconds{queue=\"out\"}",
        0.0,
        "deferred",
    );

    // Claimed by a live runner: a second entry, due, meets a stalling server.
    let stalling = MailServer::start();
    stalling.stall(Duration::from_secs(120));
    let second = enqueue(&s, "out", &["b@example.com"], b"Subject: two\n\nsecond\n");
    let mut r = runq(&s)
        .args(["--smtp", &stalling.url(), "--stop-timeout", "1s"])
        .spawn();
    stalling.wait_stalled(1, Duration::from_secs(20));
    let m = metrics(&s, "5m", "an entry claimed by a live runner");
    assert_sample(&m, &entries("out", "claimed"), 1.0, "claimed");
    assert_sample(&m, "mm_queue_dead_claims{queue=\"out\"}", 0.0, "claimed");
    assert_runners(&m, "out", "alive", 1.0, "claimed");

    // Claimed by a dead runner: killed with SIGKILL, its claim and record stay.
    r.kill();
    let m = metrics(&s, "5m", "an entry claimed by a dead runner");
    assert_sample(&m, &entries("out", "claimed"), 1.0, "dead claim");
    assert_sample(&m, "mm_queue_dead_claims{queue=\"out\"}", 1.0, "dead claim");
    assert_runners(&m, "out", "dead", 1.0, "dead claim");
    assert_runners(&m, "out", "alive", 0.0, "dead claim");

    // Quarantined: the dead runner's claim, taken back past --max-recoveries 0.
    Tool::new("mm-recover")
        .spool(&s)
        .args(["--max-recoveries", "0"])
        .run()
        .assert_code(0);
    let m = metrics(&s, "5m", "an entry quarantined in bad");
    assert_sample(&m, &entries("bad", "preserved"), 1.0, "quarantined");
    assert_sample(
        &m,
        "mm_quarantined_entries{queue=\"bad\",reason=\"crashed\"}",
        1.0,
        "quarantined",
    );
    assert_sample(
        &m,
        "mm_queue_dead_claims{queue=\"out\"}",
        0.0,
        "quarantined",
    );
    assert!(
        entries_in(&s, "bad")
            .iter()
            .any(|p| name_of(p).id == second),
        "the crashed entry is not in bad/"
    );

    // Read-only: neither --metrics nor --runners changes anything.
    let before = s.snapshot();
    metrics(&s, "5m", "read-only");
    runners(&s, "5m");
    before.assert_same(&s.snapshot(), "mm-showq --metrics, --runners");

    // Shunted by a stage (exit 3).
    enqueue(&s, "in", &["c@example.com"], b"Subject: three\n\nthird\n");
    runq(&s)
        .args(["-q", "in", "--once", "--exec", "exit 3", "--then", "out"])
        .run()
        .assert_code(0);
    let m = metrics(&s, "5m", "an entry shunted by a stage");
    assert_sample(
        &m,
        "mm_quarantined_entries{queue=\"shunt\",reason=\"stage\"}",
        1.0,
        "shunted",
    );

    // Held: the deferred entry held by mm-hold.
    Tool::new("mm-hold")
        .spool(&s)
        .args(["-q", "out", &first.to_string()])
        .run()
        .assert_code(0);
    let m = metrics(&s, "5m", "an entry held");
    assert_sample(&m, &entries("out", "held"), 1.0, "held");
    assert_sample(&m, &entries("out", "deferred"), 0.0, "held");
}

#[test]
fn a_runner_hanging_in_a_stage_and_one_on_a_stalled_server_are_stalled_a_busy_one_is_not() {
    let s = TestSpool::new();
    // A stage that never ends (until the stop kills its process group).
    let hung = enqueue(&s, "in", &["a@example.com"], b"Subject: hang\n\nstage\n");
    // A server that stalls at the end of the data.
    let stalling = MailServer::start();
    stalling.stall(Duration::from_secs(600));
    let waiting = enqueue(&s, "out", &["b@example.com"], b"Subject: stall\n\nserver\n");
    // A busy runner: many entries, each through a short stage.
    for i in 0..100 {
        enqueue(
            &s,
            "list",
            &["c@example.com"],
            format!("Subject: busy {i}\n\nbusy\n").as_bytes(),
        );
    }
    let deliveries = s.tmp().join("delivered");
    let mut runs = [
        runq(&s)
            .args(["-q", "in", "--exec", "sleep 1000", "--discard"])
            .args(["--stop-timeout", "1s"])
            .spawn(),
        runq(&s)
            .args([
                "-q",
                "out",
                "--smtp",
                &stalling.url(),
                "--stop-timeout",
                "1s",
            ])
            .spawn(),
        runq(&s)
            .args(["-q", "list", "--exec", "sleep 0.2", "--deliver-to"])
            .arg(&deliveries)
            .args(["--stop-timeout", "1s"])
            .spawn(),
    ];
    stalling.wait_stalled(1, Duration::from_secs(20));

    // Threshold 5 s (a loaded machine must not make the busy one look stuck): wait until both stuck runners are judged stalled; the
    // busy one, with entries still due, must be alive at that very moment.
    let mut rows = Vec::new();
    poll_until(
        "the hanging and the waiting runner to be reported stalled",
        Duration::from_secs(30),
        || {
            rows = runners(&s, "5s");
            ["in", "out"]
                .iter()
                .all(|q| row_of(&rows, q).is_some_and(|r| r["state"] == "stalled"))
        },
    );
    let busy = row_of(&rows, "list").expect("no row for the busy runner");
    assert_eq!(
        busy["state"], "alive",
        "the busy runner: {busy:#}\n{rows:#?}"
    );
    assert!(
        busy["due"].as_u64().unwrap_or(0) + busy["in_hand"].as_array().map_or(0, Vec::len) as u64
            > 0,
        "the busy runner had nothing left to do, so its not being stalled proves nothing: {busy:#}"
    );
    assert!(
        busy["idle_secs"].as_u64().unwrap() <= 5,
        "busy, yet idle: {busy:#}"
    );
    for (q, id) in [("in", hung), ("out", waiting)] {
        let r = row_of(&rows, q).unwrap();
        let held: Vec<&str> = r["in_hand"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap())
            .collect();
        assert_eq!(held, [id.to_string().as_str()], "{q}: {r:#}");
        assert!(r["idle_secs"].as_u64().unwrap() > 5, "{q}: {r:#}");
        assert!(
            r["pid"].as_u64().is_some() && r["dead_because"].is_null(),
            "{q}: {r:#}"
        );
    }
    // The same verdicts in the metrics, and in the text listing.
    let m = metrics(&s, "5s", "stalled runners");
    assert_runners(&m, "in", "stalled", 1.0, "stalled");
    assert_runners(&m, "out", "stalled", 1.0, "stalled");
    let text = Tool::new("mm-showq")
        .spool(&s)
        .args(["--runners", "--stalled-after", "5s"])
        .run();
    text.assert_ok();
    let text = text.stdout_str();
    assert!(
        text.lines()
            .any(|l| l.starts_with("in ") && l.contains(" stalled ")),
        "{text}"
    );
    assert!(text.contains(&format!("holds {hung}")), "{text}");
    // With a threshold longer than they waited, nobody is stalled.
    let rows_before_stop = runners(&s, "1h");
    let rows = &rows_before_stop;
    assert!(
        rows.iter().all(|r| r["state"] == "alive"),
        "stalled with --stalled-after 1h: {rows:#?}"
    );

    let tokens: Vec<String> = ["out", "list"]
        .iter()
        .map(|q| {
            row_of(&rows_before_stop, q).unwrap()["token"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    stalling.release();
    for r in &runs {
        r.signal("TERM");
    }
    for r in &mut runs {
        assert_eq!(
            r.wait_within(Duration::from_secs(20)).code(),
            Some(0),
            "{}",
            r.output()
        );
    }
    // The records and their progress files went with the runners that
    // stopped in time (the hanging stage's may be abandoned at the stop).
    for t in tokens {
        for name in [t.clone(), format!("{t}.progress")] {
            assert!(
                !s.root().join(".runners").join(&name).exists(),
                "{name} outlived its runner"
            );
        }
    }
}

#[test]
fn the_metrics_file_of_a_run_is_valid_and_its_counters_match_what_the_server_received() {
    let s = TestSpool::new();
    let server = MailServer::start();
    server.refuse_always("gone@example.com", 550, "5.1.1 no such user");
    server.refuse_once("later@example.com", 451, "4.3.0 try later");
    let messages: Vec<Vec<u8>> = (0..5)
        .map(|i| format!("Subject: m{i}\n\n{}\n", "x".repeat(100 * i)).into_bytes())
        .collect();
    for (i, m) in messages.iter().enumerate() {
        let rcpts: &[&str] = match i {
            0 => &["a@example.com", "gone@example.com"],
            1 => &["b@example.com", "later@example.com"],
            _ => &["c@example.com", "d@example.net"],
        };
        enqueue(&s, "out", rcpts, m);
    }
    let file = s.tmp().join("mm-runq.prom");
    runq(&s)
        .args(["--once", "--smtp", &server.url(), "--metrics-file"])
        .arg(&file)
        .run()
        .assert_code(0);
    let text = std::fs::read_to_string(&file).expect("no metrics file");
    promtool_accepts(&text, "mm-runq --metrics-file");
    let left: Vec<_> = std::fs::read_dir(s.tmp())
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");

    let got = server.received();
    let delivered: usize = got.iter().map(|t| t.rcpts.len()).sum();
    let l = "queue=\"out\",slice=\"1/1\"";
    let v =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        v(&format!(
            "mm_runq_recipients_total{{{l},outcome=\"delivered\"}}"
        )),
        delivered as f64,
        "{text}"
    );
    assert_eq!(delivered, 8, "the server's count: {got:?}");
    assert_eq!(
        v(&format!(
            "mm_runq_recipients_total{{{l},outcome=\"deferred\"}}"
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            "mm_runq_recipients_total{{{l},outcome=\"bounced\"}}"
        )),
        1.0
    );
    assert_eq!(
        v(&format!(
            "mm_runq_transactions_total{{{l},result=\"accepted\"}}"
        )),
        got.len() as f64,
        "{text}"
    );
    // Every transaction carried one of the messages as stored.
    let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
    for m in &messages {
        let subject = String::from_utf8_lossy(&m[9..11]).to_string();
        sizes.insert(subject, m.len());
    }
    let bytes: usize = got.iter().map(|t| sizes[&t.subject()]).sum();
    assert_eq!(v(&format!("mm_runq_bytes_total{{{l}}}")), bytes as f64);
    assert_eq!(
        v(&format!("mm_runq_replies_total{{{l},class=\"2xx\"}}")),
        delivered as f64
    );
    assert_eq!(
        v(&format!("mm_runq_replies_total{{{l},class=\"4xx\"}}")),
        1.0
    );
    assert_eq!(
        v(&format!("mm_runq_replies_total{{{l},class=\"5xx\"}}")),
        1.0
    );
    assert!(v(&format!("mm_runq_passes_total{{{l}}}")) >= 1.0);
    assert!(v(&format!("mm_runq_last_pass_end_timestamp_seconds{{{l}}}")) > 1.0e9);
    // What is left: the entry deferred for later@, a bounce record for gone@.
    let name = name_of(&only_entry_in(&s, "out"));
    assert_eq!(name.state, State::Queued);
    assert!(name.due.is_some());
    assert_eq!(entries_in(&s, "bounces").len(), 1);
}

#[test]
fn bad_metrics_and_runners_arguments_are_one_line_and_their_exit_status() {
    let s = TestSpool::new();
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--metrics", "--older-than", "1h"])
        .run();
    out.assert_code(64);
    assert!(out.stderr_one_line().contains("selection"), "{out}");
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--metrics", "--runners"])
        .run();
    out.assert_code(64);
    let out = Tool::new("mm-showq")
        .spool(&s)
        .args(["--runners", "--stalled-after", "soon"])
        .run();
    out.assert_code(64);
    out.stderr_one_line();
    // A metrics file in a directory that is not there: said at once (78),
    // before anything is claimed.
    let id = enqueue(&s, "out", &["a@example.com"], b"Subject: x\n\nx\n");
    let out = runq(&s)
        .args(["--once", "--discard", "--metrics-file"])
        .arg(s.tmp().join("no/such/dir/mm.prom"))
        .run();
    out.assert_code(78);
    assert!(out.stderr_one_line().contains("--metrics-file"), "{out}");
    assert_eq!(
        only_entry_in(&s, "out"),
        s.queue("out").path(&mm_core::FileName::queued(id))
    );
}

#[test]
fn a_slice_nobody_runs_is_listed_as_none_and_a_hostile_host_name_is_escaped() {
    let s = TestSpool::new();
    // A host name with a quote, a backslash and a newline: escaped in the
    // label, as promtool checks.
    let host = "we\"ird\\host\nname";
    let mut r = runq(&s)
        .env("MM_HOST", host)
        .args([
            "-q",
            "out",
            "--slice",
            "1/2",
            "--discard",
            "--poll",
            "100ms",
        ])
        .spawn();
    let showq = |args: &[&str]| {
        let out = Tool::new("mm-showq")
            .spool(&s)
            .env("MM_HOST", host)
            .args(args)
            .run();
        out.assert_ok();
        out
    };
    poll_until(
        "the runner of out 1/2 to show in mm-showq --runners",
        Duration::from_secs(20),
        || {
            showq(&["--runners", "--json"])
                .json_lines()
                .iter()
                .any(|r| r["slice"] == "1/2" && r["state"] == "alive")
        },
    );
    let m = showq(&["--metrics"]).stdout_str();
    promtool_accepts(&m, "a hostile host name");
    let series = |slice: &str, state: &str| {
        format!("mm_runners{{queue=\"out\",slice=\"{slice}\",state=\"{state}\"}}")
    };
    assert_sample(&m, &series("1/2", "alive"), 1.0, "1/2 run");
    assert_sample(&m, &series("2/2", "alive"), 0.0, "2/2 not run");
    assert_sample(&m, &series("2/2", "dead"), 0.0, "2/2 not run");
    assert_eq!(sample(&m, &series("1/1", "alive")), None, "{m}");
    assert!(
        m.contains("host=\"we\\\"ird\\\\host\\nname\"}"),
        "the host label is not escaped:\n{m}"
    );
    let text = showq(&["--runners"]).stdout_str();
    assert!(
        text.lines()
            .any(|l| l.starts_with("out ") && l.contains(" 2/2 ") && l.contains(" none ")),
        "{text}"
    );
    r.signal("TERM");
    assert_eq!(r.wait_within(Duration::from_secs(20)).code(), Some(0));
}
