//! mm-enqueue and mm-runq against a server that misbehaves on purpose
//! (`mm_e2e::smtp_script`): every recipient's state in the entry, as
//! mm-dumpdb shows it, is checked against the server's own log. Delivered
//! only if the server accepted it in a completed transaction, once;
//! bounced only with a reply the server really gave to its RCPT.

use std::collections::BTreeMap;

use mm_e2e::TestSpool;
use mm_e2e::smtp_script::{Act, Event, ScriptServer};

use crate::runq::{dump, enqueue, entries_in, name_of, only_entry_in, rcpt_states, runq};

fn url(server: &ScriptServer) -> String {
    format!("smtp://127.0.0.1:{}", server.port)
}

/// One `mm-runq --once` run, `offset` seconds ahead of the real clock;
/// returns its output (the log lines).
fn run(s: &TestSpool, server: &ScriptServer, offset: u64) -> String {
    let out = runq(s)
        .args(["--once", "--retry-min", "10m", "--smtp", &url(server)])
        .env("MM_TEST_CLOCK_OFFSET", offset.to_string())
        .run();
    out.assert_code(0);
    format!("{}{}", out.stdout_str(), out.stderr_str())
}

/// The old desynchronisation, through the real tools: one unsolicited 250
/// behind the reply to the first RCPT of the first connection, and b is
/// refused. lettre's connection took the stray 250 for b's reply (b
/// "delivered", silent loss), b's 550 for c's (c bounced with b's reason)
/// and c's 250 for DATA's. Now: the transaction is deferred whole, the
/// other transaction (postmaster, another "domain") is unaffected, and the
/// retry delivers a and c once and bounces b with its own 550.
#[test]
fn an_unsolicited_250_defers_its_transaction_and_every_recipient_matches_the_server_log() {
    let s = TestSpool::new();
    let server = ScriptServer::start(false, |e: &Event<'_>| {
        match (e.verb.as_str(), e.rcpt, e.line) {
            ("RCPT", 0, _) if e.conn == 0 => Act::usual().extra("250 2.1.5 stray"),
            ("RCPT", _, line) if line.contains("<b@example.com>") => {
                Act::reply("550 5.1.1 no such user")
            }
            _ => Act::usual(),
        }
    });
    let rcpts = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "postmaster",
    ];
    let id = enqueue(&s, "out", &rcpts, b"Subject: desync\n\none each\n");

    let log = run(&s, &server, 0);
    assert!(
        log.contains("protocol error: unsolicited reply after RCPT TO: 250 2.1.5 stray"),
        "the log names the reply seen:\n{log}"
    );
    let v = dump(&s, &id);
    let states = rcpt_states(&v);
    let stray = "protocol error: unsolicited reply after RCPT TO: 250 2.1.5 stray".to_owned();
    assert_eq!(
        states,
        BTreeMap::from([
            (
                "a@example.com".to_owned(),
                ("pending".to_owned(), stray.clone())
            ),
            (
                "b@example.com".to_owned(),
                ("pending".to_owned(), stray.clone())
            ),
            ("c@example.com".to_owned(), ("pending".to_owned(), stray)),
            (
                "postmaster".to_owned(),
                ("delivered".to_owned(), "250 2.0.0 Ok: queued".to_owned())
            ),
        ]),
        "{v:#}"
    );
    {
        let log = server.log();
        assert_eq!(log.accepted.len(), 1, "{:#?}", log.lines);
        assert_eq!(log.accepted[0].rcpts, ["postmaster"]);
        assert!(
            log.lines
                .iter()
                .any(|l| l.ends_with("RCPT TO:<postmaster>")),
            "a bare postmaster is sent as stored: {:#?}",
            log.lines
        );
    }
    assert_matches_server_log(&states, &server);

    // Past the retry delay: a new connection, which behaves.
    run(&s, &server, 660);
    assert!(entries_in(&s, "out").is_empty(), "the entry is finished");
    let bounce = name_of(&only_entry_in(&s, "bounces")).id;
    let states = rcpt_states(&dump(&s, &bounce));
    assert_eq!(
        states,
        BTreeMap::from([(
            "b@example.com".to_owned(),
            ("failed".to_owned(), "550 5.1.1 no such user".to_owned())
        )]),
        "b bounces with the reply the server gave to its own RCPT"
    );
    assert_matches_server_log(&states, &server);
    let log = server.log();
    for r in ["a@example.com", "c@example.com", "postmaster"] {
        assert_eq!(log.times_accepted(r), 1, "{r}: {:#?}", log.lines);
    }
    assert_eq!(log.times_accepted("b@example.com"), 0);
}

/// PIPELINING, a server that takes only two recipients per transaction
/// (452 after that) and answers the first end of data with a reply too
/// many: nobody is recorded as delivered on a 250 that may not be its own,
/// the 452'd recipients wait, and after the retries everybody has exactly
/// one copy.
#[test]
fn pipelined_452_after_two_and_an_extra_reply_after_data_each_recipient_accounted_for() {
    let s = TestSpool::new();
    let server = ScriptServer::start(true, |e: &Event<'_>| match e.verb.as_str() {
        "RCPT" if e.rcpt >= 2 => Act::reply("452 4.5.3 too many recipients"),
        "." if e.conn == 0 => Act::usual().extra("250 2.0.0 stray"),
        _ => Act::usual(),
    });
    let rcpts: Vec<String> = (0..5).map(|i| format!("u{i}@example.com")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let id = enqueue(&s, "out", &refs, b"Subject: pipelined\n\nhello\n");

    run(&s, &server, 0);
    let states = rcpt_states(&dump(&s, &id));
    assert_matches_server_log(&states, &server);
    // A protocol error defers everyone sent in the transaction, the 452'd
    // ones too: none of its replies can be trusted to be theirs.
    for (r, (state, reply)) in &states {
        assert_eq!(state, "pending", "{r}");
        assert_eq!(
            reply, "protocol error: unsolicited reply after end of DATA: 250 2.0.0 stray",
            "{r}"
        );
    }
    // The server did take u0 and u1 once (the runner could not know it).
    assert_eq!(server.log().accepted.len(), 1);

    // Retries until done (each past the longest backoff, 4 h): two
    // recipients per transaction, one transaction per run.
    for round in 1..=5 {
        run(&s, &server, 20_000 * round);
        let states = match entries_in(&s, "out").first() {
            Some(_) => rcpt_states(&dump(&s, &id)),
            None => break,
        };
        assert_matches_server_log(&states, &server);
    }
    assert!(entries_in(&s, "out").is_empty(), "the entry is finished");
    assert!(entries_in(&s, "bounces").is_empty(), "nothing bounced");
    let log = server.log();
    for r in &rcpts {
        let copies = log.times_accepted(r);
        // u0 and u1 were accepted by the server in the first, doubtful
        // transaction and so got a second copy; everyone else exactly one.
        let want = if r.as_str() < "u2" { 2 } else { 1 };
        assert_eq!(copies, want, "{r}: {:#?}", log.lines);
    }
}

/// The runner's states against the server's log: "delivered" only for a
/// recipient the server accepted in a completed transaction (and at most
/// once per delivered state), "failed" only with a 5xx the server gave to
/// that recipient's RCPT.
#[track_caller]
fn assert_matches_server_log(states: &BTreeMap<String, (String, String)>, server: &ScriptServer) {
    let log = server.log();
    for (address, (state, reply)) in states {
        match state.as_str() {
            "delivered" => assert!(
                log.times_accepted(address) >= 1,
                "{address} delivered, but the server never accepted it:\n{:#?}",
                log.lines
            ),
            "failed" => assert!(
                log.replies_to(address)
                    .iter()
                    .any(|given| given.starts_with('5') && given == reply),
                "{address} failed with {reply:?}, which the server never said to its RCPT: {:?}",
                log.replies_to(address)
            ),
            _ => {}
        }
    }
}
