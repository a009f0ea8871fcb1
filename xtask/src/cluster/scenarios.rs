//! The scenarios of `cargo xtask cluster`, one function each. Each starts
//! its own smtp-sink, enqueues, runs and disturbs runners on host A and host
//! B, and returns what must have arrived ([`Expect`]); the caller counts.
//!
//! GlusterFS's flock is exclusive across mounts (see the probe), so mm-runq's
//! one-runner-per-queue-and-slice lock (`.locks/`) holds across hosts: while
//! A's unsliced runner lives (even frozen), an unsliced runner on B exits at
//! once. B therefore drains with two sliced runners (1/2 and 2/2) where A's
//! runner may still hold the unsliced lock.

use std::time::{Duration, Instant, SystemTime};

use rustix::process::Signal;

use super::{Ctx, Expect, Host, LEASE, Msg, PAST_LEASE, gluster, pause};

/// Recipients per SMTP transaction where a runner is caught mid-delivery:
/// 6 recipients per message make 3 transactions, each answered a second
/// late by the sink (`-W .:1`).
const MAX_RCPTS: &str = "2";
/// Host B's clock in `skew`: 10 minutes ahead.
const SKEW: i64 = 600;
/// The sink's delay: one second before each end-of-data reply.
const SLOW_SINK: [&str; 2] = ["-W", ".:1"];

/// 1. Concurrent enqueue from both mounts: on each host two threads enqueue
///    single messages by standard input while two `--file` groups go in;
///    both hosts must then see every entry; one runner drains them.
pub fn enqueue(ctx: &mut Ctx) -> anyhow::Result<Expect> {
    ctx.start_sink(&[])?;
    let mut ex = Expect::default();
    let (a, b) = (ctx.a.clone(), ctx.b.clone());
    let mut plan: Vec<(Host, Vec<Msg>, Vec<Vec<Msg>>)> = Vec::new();
    for host in [&a, &b] {
        let singles = ctx.messages(20, 2, false);
        let groups = vec![ctx.messages(20, 3, true), ctx.messages(20, 3, true)];
        ex.add(&singles);
        for g in &groups {
            ex.add(g);
        }
        plan.push((host.clone(), singles, groups));
    }
    let started = Instant::now();
    let ctx_ref: &Ctx = ctx;
    let results: Vec<anyhow::Result<Vec<String>>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (host, singles, groups) in &plan {
            for half in singles.chunks(singles.len().div_ceil(2)) {
                handles.push(s.spawn(move || {
                    half.iter()
                        .map(|m| ctx_ref.enqueue(host, m))
                        .collect::<anyhow::Result<Vec<_>>>()
                }));
            }
            for g in groups {
                handles.push(s.spawn(move || ctx_ref.enqueue_group(host, g)));
            }
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a thread panicked")))
            })
            .collect()
    });
    let mut ids = std::collections::BTreeSet::new();
    let mut printed = 0;
    for r in results {
        let got = r?;
        printed += got.len();
        ids.extend(got);
    }
    let messages: usize = plan
        .iter()
        .map(|(_, s, g)| s.len() + g.iter().map(Vec::len).sum::<usize>())
        .sum();
    let by_stdin: usize = plan.iter().map(|(_, s, _)| s.len()).sum();
    let groups: usize = plan.iter().map(|(_, _, g)| g.len()).sum();
    ex.note(format!(
        "{messages} messages enqueued in {:.1} s: {by_stdin} by stdin (2 processes one after \
         another per host) and {} in {groups} --file groups (2 per host) at the same time, \
         half through each mount; {} distinct ids printed",
        started.elapsed().as_secs_f64(),
        messages - by_stdin,
        ids.len()
    ));
    if printed != messages || ids.len() != messages {
        anyhow::bail!(
            "mm-enqueue printed {printed} ids ({} distinct) for {messages} messages",
            ids.len()
        );
    }
    for host in [&a, &b] {
        let queued = queued_in_out(ctx, host)?;
        ex.note(format!(
            "{} sees {queued} queued entries in out/",
            host.name
        ));
        if queued != messages as u64 {
            anyhow::bail!(
                "{} sees {queued} entries in out/, want {messages}",
                host.name
            );
        }
    }
    ctx.start_runner(&a, "hosta", &[])?;
    ctx.wait_runners()?;
    Ok(ex)
}

/// 2. Unsliced and sliced runners on both hosts (unsliced, 1/2 and 2/2 on
///    each) started together on one queue of 200 entries.
pub fn drain(ctx: &mut Ctx) -> anyhow::Result<Expect> {
    ctx.start_sink(&[])?;
    let mut ex = Expect::default();
    let (a, b) = (ctx.a.clone(), ctx.b.clone());
    for host in [&a, &b] {
        for _ in 0..4 {
            let g = ctx.messages(25, 2, true);
            ctx.enqueue_group(host, &g)?;
            ex.add(&g);
        }
    }
    ex.note(format!(
        "{} copies in 200 entries, enqueued through both mounts",
        ex.keys.len()
    ));
    let mut started = Vec::new();
    for host in [&a, &b] {
        for (slice, label) in [(None, "all"), (Some("1/2"), "s1"), (Some("2/2"), "s2")] {
            let label = format!("{}-{label}", host.name);
            let extra: Vec<&str> = slice.map(|s| vec!["--slice", s]).unwrap_or_default();
            started.push(ctx.start_runner(host, &label, &extra)?);
        }
    }
    ctx.wait_runners()?;
    let mut ran = Vec::new();
    let mut refused = Vec::new();
    for i in started {
        let r = ctx.runner(i);
        if r.log_text().contains("is running") {
            refused.push(r.label.clone());
        } else {
            ran.push(r.label.clone());
        }
    }
    ex.note(format!(
        "ran: {}; exited at once (that queue and slice already had a runner, on either host: \
         the .locks flock holds across mounts): {}",
        ran.join(" "),
        if refused.is_empty() {
            "none".to_string()
        } else {
            refused.join(" ")
        }
    ));
    Ok(ex)
}

/// 3. kill -9 of A's runner mid-delivery; B leaves the claim alone until
///    the lease has passed, then recovers it and delivers the rest.
pub fn kill(ctx: &mut Ctx) -> anyhow::Result<Expect> {
    ctx.start_sink(&SLOW_SINK)?;
    let mut ex = slow_queue(ctx)?;
    let (a, b) = (ctx.a.clone(), ctx.b.clone());
    let r = ctx.start_runner(&a, "hosta", &["--max-rcpts", MAX_RCPTS])?;
    ctx.wait_dumps_from("hosta", 2)?;
    ctx.runner(r).kill();
    let killed = Instant::now();
    in_flight_after_signal(ctx, &mut ex, "killed (SIGKILL)")?;
    let busy = ctx.recover(&b, &["--dry-run"])?;
    ex.note(format!(
        "B's mm-recover --dry-run (5 min lease) at once: {busy}"
    ));
    pause_until(killed + PAST_LEASE)?;
    let rec = ctx.recover(&b, &["--lease", LEASE])?;
    ex.note(format!(
        "B's mm-recover --lease {LEASE}, {} s after the kill: {rec}",
        PAST_LEASE.as_secs()
    ));
    ctx.start_runner(&b, "hostb", &["--max-rcpts", MAX_RCPTS])?;
    ctx.wait_runners()?;
    final_drain(ctx, &mut ex)?;
    Ok(ex)
}

/// 4. A's runner frozen (SIGSTOP) past the lease: B's full `mm-recover`
///    sweep takes its claim back (and prunes its record); A is woken
///    (SIGCONT) and goes on; a same-host `mm-recover` on A runs while it
///    does; B's runners drain the rest.
pub fn freeze(ctx: &mut Ctx) -> anyhow::Result<Expect> {
    ctx.start_sink(&SLOW_SINK)?;
    let mut ex = slow_queue(ctx)?;
    let (a, b) = (ctx.a.clone(), ctx.b.clone());
    let r = ctx.start_runner(&a, "hosta", &["--max-rcpts", MAX_RCPTS])?;
    ctx.wait_dumps_from("hosta", 2)?;
    ctx.runner(r).signal(Signal::STOP)?;
    let stopped = Instant::now();
    in_flight_after_signal(ctx, &mut ex, "frozen (SIGSTOP)")?;
    pause_until(stopped + PAST_LEASE)?;
    let records = ctx.records().len();
    let rec = ctx.recover(&b, &["--lease", LEASE])?;
    ex.note(format!(
        "B's full mm-recover --lease {LEASE} sweep {} s into the freeze: {rec}; runner records \
         {records} before, {} after",
        PAST_LEASE.as_secs(),
        ctx.records().len()
    ));
    ctx.runner(r).signal(Signal::CONT)?;
    let woke = Instant::now();
    let woke_at = SystemTime::now();
    pause(Duration::from_millis(2500))?;
    let alive = ctx.runner(r).running();
    let same_host = ctx.recover(&a, &[])?;
    ex.note(format!(
        "A woken (SIGCONT); {:.1} s later (A {}) a same-host mm-recover on A: {same_host}",
        woke.elapsed().as_secs_f64(),
        if alive {
            "still running"
        } else {
            "already exited"
        }
    ));
    drain_sliced(ctx, &b, "hostb")?;
    ctx.wait_runners()?;
    let sent_after: usize = ctx
        .dumps()?
        .iter()
        .filter(|d| d.helo == "hosta" && d.modified.is_some_and(|m| m > woke_at))
        .count();
    ex.note(format!(
        "A sent {sent_after} transaction(s) after it was woken"
    ));
    final_drain(ctx, &mut ex)?;
    Ok(ex)
}

/// 5. Host B's clock 10 minutes ahead while A's runner is live: B's tools
///    run under faketime, and B sees the volume through a FUSE client of
///    its own that runs under libfaketime too (with GlusterFS's default
///    `features.ctime on`, files get the writing client's clock). B's
///    `mm-recover` (5 min lease) and B's runners must leave A's claims
///    alone.
pub fn skew(ctx: &mut Ctx) -> anyhow::Result<Expect> {
    ctx.start_sink(&SLOW_SINK)?;
    let mut ex = slow_queue(ctx)?;
    let a = ctx.a.clone();
    let mount = gluster::mount_skewed(SKEW)?;
    let b = ctx.b.skewed(SKEW, &mount.path);
    ctx.start_runner(&a, "hosta", &["--max-rcpts", MAX_RCPTS])?;
    ctx.wait_dumps_from("hosta", 1)?;
    let rec = ctx.recover(&b, &[])?;
    ex.note(format!(
        "B (clock +{SKEW} s: its tools and its FUSE client) mm-recover, default 5 min lease, \
         while A delivers: {rec}"
    ));
    drain_sliced(ctx, &b, "hostb-skewed")?;
    ctx.wait_runners()?;
    drop(mount);
    final_drain(ctx, &mut ex)?;
    Ok(ex)
}

/// Four messages of six recipients each, enqueued through A: twelve
/// transactions of a second each at the slow sink.
fn slow_queue(ctx: &mut Ctx) -> anyhow::Result<Expect> {
    let mut ex = Expect::default();
    let a = ctx.a.clone();
    let msgs = ctx.messages(4, 6, false);
    for m in &msgs {
        ctx.enqueue(&a, m)?;
    }
    ex.add(&msgs);
    ex.note(format!(
        "4 messages x 6 recipients through A; --max-rcpts {MAX_RCPTS}, the sink answers each \
         end of data 1 s late"
    ));
    Ok(ex)
}

/// After A's runner was signalled: waits for the sink to save what A had
/// already sent, and takes A's newest transaction as the one in flight.
fn in_flight_after_signal(ctx: &Ctx, ex: &mut Expect, what: &str) -> anyhow::Result<()> {
    pause(Duration::from_millis(1500))?;
    ex.in_flight = ctx.in_flight("hosta")?;
    let sent = ctx.dumps()?.iter().filter(|d| d.helo == "hosta").count();
    ex.note(format!(
        "A's runner {what} after {sent} transactions; in flight: {} copies (its newest \
         transaction)",
        ex.in_flight.len()
    ));
    Ok(())
}

/// Starts runners of slice 1/2 and 2/2 on `host` (see the module's note).
fn drain_sliced(ctx: &mut Ctx, host: &Host, label: &str) -> anyhow::Result<()> {
    for k in ["1", "2"] {
        let slice = format!("{k}/2");
        ctx.start_runner(
            host,
            &format!("{label}-s{k}"),
            &["--slice", &slice, "--max-rcpts", MAX_RCPTS],
        )?;
    }
    Ok(())
}

/// Every runner has exited: if the spool still holds entries (claims a
/// fenced or killed runner left), waits until every runner record is past
/// the lease, recovers on B and drains there.
fn final_drain(ctx: &mut Ctx, ex: &mut Expect) -> anyhow::Result<()> {
    if !ctx.spool_holds_entries()? {
        return Ok(());
    }
    let b = ctx.b.clone();
    let t = Instant::now();
    while ctx.records().iter().any(|(_, age)| *age < PAST_LEASE) {
        if t.elapsed() > PAST_LEASE + Duration::from_secs(5) {
            break;
        }
        pause(Duration::from_millis(500))?;
    }
    let rec = ctx.recover(&b, &["--lease", LEASE])?;
    ctx.start_runner(&b, "final", &["--max-rcpts", MAX_RCPTS])?;
    ctx.wait_runners()?;
    ex.note(format!(
        "entries were left after the runners exited: B's final mm-recover --lease {LEASE}: \
         {rec}; then a runner on B drained"
    ));
    Ok(())
}

/// The entries of out/ that `host` sees queued (due now).
fn queued_in_out(ctx: &Ctx, host: &Host) -> anyhow::Result<u64> {
    let out = ctx.tool(host, "mm-showq", &["--json"])?.out();
    for l in out.lines() {
        let row: serde_json::Value = serde_json::from_str(l)?;
        if row["queue"] == "out" {
            return Ok(row["queued"].as_u64().unwrap_or(0));
        }
    }
    Ok(0)
}

fn pause_until(t: Instant) -> anyhow::Result<()> {
    pause(t.saturating_duration_since(Instant::now()))
}
