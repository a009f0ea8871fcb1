//! The SMTP client against real servers (mailin-embedded) and against a
//! scripted one that misbehaves on purpose.

use super::url::percent_decode;
use super::*;

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

use mailin_embedded::{Handler, Response as ServerResponse, Server, response};

/// The test kit's scripted server (`tests/src/smtp_script.rs`), shared as source.
#[path = "../../../../../tests/src/smtp_script.rs"]
mod script;

/// One transaction as the test server saw it at end of data.
#[derive(Clone, Debug)]
struct Received {
    from: String,
    rcpts: Vec<String>,
    is8bit: bool,
    data: Vec<u8>,
}

#[derive(Default)]
struct Shared {
    /// Scripted MAIL replies, used up in order; then 250.
    mail_replies: VecDeque<(u16, &'static str)>,
    /// Scripted RCPT replies per address, used up in order; then 250.
    rcpt_replies: HashMap<String, VecDeque<(u16, &'static str)>>,
    /// How long the server thinks before answering end of data.
    data_end_delay: Duration,
    /// EHLO/HELO commands seen: one per connection.
    hellos: usize,
    transactions: Vec<Received>,
    /// Users who authenticated (AUTH PLAIN with the password `s3cret`).
    authenticated: Vec<String>,
}

#[derive(Clone)]
struct TestHandler {
    shared: Arc<Mutex<Shared>>,
    from: String,
    rcpts: Vec<String>,
    is8bit: bool,
    data: Vec<u8>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Handler for TestHandler {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> ServerResponse {
        lock(&self.shared).hellos += 1;
        response::OK
    }

    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> ServerResponse {
        self.from = from.to_owned();
        match lock(&self.shared).mail_replies.pop_front() {
            Some((code, text)) => ServerResponse::custom(code, text.to_owned()),
            None => response::OK,
        }
    }

    fn rcpt(&mut self, to: &str) -> ServerResponse {
        let scripted = lock(&self.shared)
            .rcpt_replies
            .get_mut(to)
            .and_then(VecDeque::pop_front);
        match scripted {
            Some((code, text)) => ServerResponse::custom(code, text.to_owned()),
            None => response::OK,
        }
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        is8bit: bool,
        to: &[String],
    ) -> ServerResponse {
        self.rcpts = to.to_vec();
        self.is8bit = is8bit;
        self.data.clear();
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn auth_plain(
        &mut self,
        _authorization_id: &str,
        authentication_id: &str,
        password: &str,
    ) -> ServerResponse {
        if password == "s3cret" {
            lock(&self.shared)
                .authenticated
                .push(authentication_id.to_owned());
            response::AUTH_OK
        } else {
            response::INVALID_CREDENTIALS
        }
    }

    fn data_end(&mut self) -> ServerResponse {
        let delay = lock(&self.shared).data_end_delay;
        thread::sleep(delay);
        lock(&self.shared).transactions.push(Received {
            from: self.from.clone(),
            rcpts: std::mem::take(&mut self.rcpts),
            is8bit: self.is8bit,
            data: std::mem::take(&mut self.data),
        });
        ServerResponse::custom(250, "2.0.0 Ok: queued".to_owned())
    }
}

/// A mailin-embedded server on its own port for one test (it cannot be
/// stopped: the thread ends with the test process).
fn start_server(shared: Shared) -> (u16, Arc<Mutex<Shared>>) {
    serve(shared, |server| {
        server.with_name("mx.test");
    })
}

/// Like [`start_server`], with STARTTLS (the test certificate for
/// `localhost`, signed by the test CA of `tests/fixtures/tls`) and AUTH
/// PLAIN, which mailin offers only after STARTTLS.
fn start_tls_server() -> (u16, Arc<Mutex<Shared>>) {
    // The test binary links two rustls providers (lettre's ring,
    // mailin's aws-lc-rs); mailin's server needs a default chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = |f: &str| tls_fixture(f).to_string_lossy().into_owned();
    serve(Shared::default(), |server| {
        server
            .with_name("localhost")
            .with_ssl(mailin_embedded::SslConfig::SelfSigned {
                cert_path: tls("server.pem"),
                key_path: tls("server.key"),
            })
            .expect("TLS set-up")
            .with_auth(mailin_embedded::AuthMechanism::Plain);
    })
}

/// Starts a server on a free port, configured by `setup`.
fn serve(
    shared: Shared,
    setup: impl FnOnce(&mut Server<TestHandler>),
) -> (u16, Arc<Mutex<Shared>>) {
    let shared = Arc::new(Mutex::new(shared));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let handler = TestHandler {
        shared: Arc::clone(&shared),
        from: String::new(),
        rcpts: Vec::new(),
        is8bit: false,
        data: Vec::new(),
    };
    let mut server = Server::new(handler);
    setup(&mut server);
    server.with_tcp_listener(listener);
    thread::spawn(move || {
        let _ = server.serve();
    });
    (port, shared)
}

fn tls_fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn client_for(url: &str) -> SmtpClient {
    let mut config = SmtpConfig::parse(url).expect("url");
    config.helo_name = Some("client.test".to_owned());
    config.connect_timeout = Duration::from_secs(5);
    config.command_timeout = Duration::from_secs(10);
    SmtpClient::new(config)
}

#[test]
fn starttls_with_a_private_ca_and_auth_plain_deliver() {
    let (port, shared) = start_tls_server();
    let ca = tls_fixture("ca.pem");
    let url = format!(
        "smtp+starttls://mm:s3cret@localhost:{port}?ca={}",
        ca.display()
    );
    let calls = deliver(
        &mut client_for(&url),
        "s@example.org",
        &strings(&["a@example.org"]),
        MESSAGE,
    );
    assert_eq!(
        verdicts(&calls[0]),
        vec![("a@example.org", Verdict::Delivered)],
        "{calls:?}"
    );
    let seen = lock(&shared);
    assert_eq!(seen.authenticated, vec!["mm".to_owned()]);
    assert_eq!(seen.transactions.len(), 1);
}

#[test]
fn a_wrong_password_or_an_unknown_ca_defers_and_sends_nothing() {
    let (port, shared) = start_tls_server();
    let ca = tls_fixture("ca.pem");
    for (url, why) in [
        (
            format!(
                "smtp+starttls://mm:wrong@localhost:{port}?ca={}",
                ca.display()
            ),
            "authentication",
        ),
        // Without ca= the test CA is unknown: the handshake must fail.
        (
            format!("smtp+starttls://mm:s3cret@localhost:{port}"),
            "STARTTLS",
        ),
    ] {
        let calls = deliver(
            &mut client_for(&url),
            "s@example.org",
            &strings(&["a@example.org"]),
            MESSAGE,
        );
        let r = &calls[0][0];
        assert_eq!(r.verdict, Verdict::Deferred, "{url}: {r:?}");
        assert!(r.reply.contains(why), "{url}: {}", r.reply);
    }
    let seen = lock(&shared);
    assert!(seen.authenticated.is_empty(), "{:?}", seen.authenticated);
    assert!(seen.transactions.is_empty());
}

#[test]
fn ca_parameter_is_parsed_and_percent_decoded() {
    let c = SmtpConfig::parse("smtp+starttls://relay.example?ca=/etc/mm/ca%20bundle.pem").unwrap();
    assert_eq!(
        c.ca_file,
        Some(std::path::PathBuf::from("/etc/mm/ca bundle.pem"))
    );
    assert!(SmtpConfig::parse("smtp://relay.example?ca=").is_err());
}

fn client(port: u16) -> SmtpClient {
    client_for(&format!("smtp://127.0.0.1:{port}"))
}

fn strings(addresses: &[&str]) -> Vec<String> {
    addresses.iter().map(|&a| a.to_owned()).collect()
}

/// Delivers and returns what `record` was given, call by call.
fn deliver(
    client: &mut SmtpClient,
    sender: &str,
    recipients: &[String],
    message: &[u8],
) -> Vec<Vec<RcptResult>> {
    let mut calls = Vec::new();
    let outcome = client.deliver::<()>(sender, recipients, message, &mut |results| {
        calls.push(results.to_vec());
        Ok(())
    });
    assert_eq!(outcome, Ok(()));
    calls
}

fn verdicts(results: &[RcptResult]) -> Vec<(&str, Verdict)> {
    results
        .iter()
        .map(|r| (r.address.as_str(), r.verdict))
        .collect()
}

const MESSAGE: &[u8] = b"Subject: test\n\nHello.\n";

#[test]
fn one_refused_recipient_among_fifty() {
    let mut shared = Shared::default();
    shared.rcpt_replies.insert(
        "user17@example.com".to_owned(),
        VecDeque::from([(550, "5.1.1 no such user")]),
    );
    let (port, shared) = start_server(shared);
    let recipients: Vec<String> = (0..50).map(|i| format!("user{i}@example.com")).collect();
    let mut client = client(port);

    let calls = deliver(&mut client, "sender@example.org", &recipients, MESSAGE);

    assert_eq!(calls.len(), 1, "one transaction");
    let results = &calls[0];
    assert_eq!(results.len(), 50);
    for (result, address) in results.iter().zip(&recipients) {
        assert_eq!(&result.address, address);
        if address == "user17@example.com" {
            assert_eq!(result.verdict, Verdict::Failed);
            assert_eq!(result.reply, "550 5.1.1 no such user");
        } else {
            assert_eq!(result.verdict, Verdict::Delivered, "{result:?}");
            assert!(result.reply.starts_with("250 "), "{result:?}");
        }
    }
    let shared = lock(&shared);
    assert_eq!(shared.transactions.len(), 1, "the message went out once");
    let received = &shared.transactions[0];
    assert_eq!(received.from, "sender@example.org");
    assert_eq!(received.rcpts.len(), 49);
    assert!(!received.rcpts.iter().any(|r| r == "user17@example.com"));
}

#[test]
fn deferred_recipient_is_delivered_on_the_next_call() {
    let mut shared = Shared::default();
    shared.rcpt_replies.insert(
        "slow@example.com".to_owned(),
        VecDeque::from([(450, "4.2.0 mailbox busy, try later")]),
    );
    let (port, shared) = start_server(shared);
    let mut client = client(port);
    let recipients = strings(&["a@example.com", "slow@example.com", "b@example.com"]);

    let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert_eq!(first.len(), 1);
    assert_eq!(
        verdicts(&first[0]),
        [
            ("a@example.com", Verdict::Delivered),
            ("slow@example.com", Verdict::Deferred),
            ("b@example.com", Verdict::Delivered),
        ]
    );
    assert_eq!(first[0][1].reply, "450 4.2.0 mailbox busy, try later");

    let second = deliver(
        &mut client,
        "s@example.org",
        &strings(&["slow@example.com"]),
        MESSAGE,
    );
    assert_eq!(second.len(), 1);
    assert_eq!(
        verdicts(&second[0]),
        [("slow@example.com", Verdict::Delivered)]
    );

    let shared = lock(&shared);
    assert_eq!(shared.transactions.len(), 2);
    assert_eq!(
        shared.transactions[0].rcpts,
        ["a@example.com", "b@example.com"]
    );
    assert_eq!(shared.transactions[1].rcpts, ["slow@example.com"]);
    assert_eq!(shared.hellos, 1, "the connection was reused");
}

#[test]
fn message_arrives_intact_modulo_crlf() {
    let (port, shared) = start_server(Shared::default());
    let mut client = client(port);
    let message: &[u8] =
        b"Subject: dots\n\nfirst\n.\n..\n.leading dot\nGr\xc3\xbc\xc3\x9fe \xff\x00\n\nlast\n";

    let calls = deliver(
        &mut client,
        "s@example.org",
        &strings(&["r@example.com"]),
        message,
    );
    assert_eq!(verdicts(&calls[0]), [("r@example.com", Verdict::Delivered)]);

    let shared = lock(&shared);
    assert_eq!(shared.transactions.len(), 1);
    let received = &shared.transactions[0];
    assert!(received.is8bit, "BODY=8BITMIME announced");
    let mut undone = Vec::new();
    let mut i = 0;
    while i < received.data.len() {
        if received.data[i..].starts_with(b"\r\n") {
            undone.push(b'\n');
            i += 2;
        } else {
            assert_ne!(received.data[i], b'\n', "bare LF on the wire");
            undone.push(received.data[i]);
            i += 1;
        }
    }
    assert_eq!(undone, message);
}

#[test]
fn transactions_per_domain_and_max_rcpts() {
    let (port, shared) = start_server(Shared::default());
    let mut client = client(port);
    client.config.max_rcpts = 2;
    let recipients = strings(&[
        "a1@x.test",
        "b1@y.test",
        "a2@X.Test",
        "a3@x.test",
        "b2@Y.TEST",
    ]);

    let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);

    let grouped: Vec<Vec<&str>> = calls
        .iter()
        .map(|results| results.iter().map(|r| r.address.as_str()).collect())
        .collect();
    assert_eq!(
        grouped,
        [
            vec!["a1@x.test", "a2@X.Test"],
            vec!["a3@x.test"],
            vec!["b1@y.test", "b2@Y.TEST"],
        ]
    );
    assert!(
        calls
            .iter()
            .flatten()
            .all(|r| r.verdict == Verdict::Delivered)
    );
    let shared = lock(&shared);
    let seen: Vec<Vec<String>> = shared
        .transactions
        .iter()
        .map(|t| t.rcpts.clone())
        .collect();
    assert_eq!(
        seen,
        [
            vec!["a1@x.test", "a2@X.Test"],
            vec!["a3@x.test"],
            vec!["b1@y.test", "b2@Y.TEST"],
        ]
    );
    assert_eq!(
        shared.hellos, 1,
        "one connection for the three transactions"
    );
}

#[test]
fn stalled_server_times_out() {
    let (port, shared) = start_server(Shared {
        data_end_delay: Duration::from_secs(3),
        ..Shared::default()
    });
    let mut client = client(port);
    client.config.data_timeout = Duration::from_secs(1);
    let recipients = strings(&["a@example.com", "b@example.com"]);

    let started = Instant::now();
    let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    let elapsed = started.elapsed();

    assert_eq!(calls.len(), 1);
    for result in &calls[0] {
        assert_eq!(result.verdict, Verdict::Deferred, "{result:?}");
        assert_eq!(result.reply, "timeout after end of DATA");
    }
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    assert!(client.session.is_none(), "the connection was dropped");
    drop(shared);
}

#[test]
fn the_end_of_data_reply_has_its_own_timeout() {
    // A server that thinks 2 s about the message: longer than the command
    // timeout, shorter than the data timeout. Delivered, once.
    let (port, shared) = start_server(Shared {
        data_end_delay: Duration::from_secs(2),
        ..Shared::default()
    });
    let mut client = client(port);
    client.config.command_timeout = Duration::from_secs(1);
    client.config.data_timeout = Duration::from_secs(10);
    let calls = deliver(
        &mut client,
        "s@example.org",
        &strings(&["a@example.com"]),
        MESSAGE,
    );
    assert_eq!(calls[0][0].verdict, Verdict::Delivered, "{calls:?}");
    assert_eq!(lock(&shared).transactions.len(), 1);
    assert_eq!(
        SmtpConfig::new("h", 25, Tls::None).data_timeout,
        Duration::from_secs(600)
    );
}

#[test]
fn connection_refused_defers_everybody_promptly() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").port()
    };
    let mut client = client(port);
    let recipients = strings(&["a@x.test", "b@y.test", "c@z.test"]);

    let started = Instant::now();
    let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    let elapsed = started.elapsed();

    assert_eq!(calls.len(), 3, "one record call per planned transaction");
    for result in calls.iter().flatten() {
        assert_eq!(result.verdict, Verdict::Deferred, "{result:?}");
        assert!(
            result
                .reply
                .starts_with(&format!("connecting to 127.0.0.1:{port} failed")),
            "{result:?}"
        );
    }
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn one_connection_attempt_per_call_when_connecting_fails() {
    // A server that accepts and hangs up at once.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    let mut client = client(port);
    let recipients = strings(&["a@x.test", "b@y.test", "c@z.test"]);

    let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);

    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .iter()
            .flatten()
            .all(|r| r.verdict == Verdict::Deferred)
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn record_error_stops_delivery() {
    let (port, shared) = start_server(Shared::default());
    let mut client = client(port);
    let recipients = strings(&["a@x.test", "b@y.test", "c@z.test"]);
    let mut calls = 0;

    let outcome = client.deliver("s@example.org", &recipients, MESSAGE, &mut |results| {
        calls += 1;
        assert_eq!(verdicts(results), [("a@x.test", Verdict::Delivered)]);
        Err("disk full")
    });

    assert_eq!(outcome, Err("disk full"));
    assert_eq!(calls, 1);
    assert_eq!(
        lock(&shared).transactions.len(),
        1,
        "nothing tried after the error"
    );
}

#[test]
fn server_closing_during_rcpt_defers_the_rest_then_reconnects() {
    let mut shared = Shared::default();
    shared.rcpt_replies.insert(
        "b@example.com".to_owned(),
        VecDeque::from([(421, "4.3.2 shutting down")]),
    );
    let (port, shared) = start_server(shared);
    let mut client = client(port);
    let recipients = strings(&["a@example.com", "b@example.com", "c@example.com"]);

    let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert_eq!(
        verdicts(&first[0]),
        [
            ("a@example.com", Verdict::Deferred),
            ("b@example.com", Verdict::Deferred),
            ("c@example.com", Verdict::Deferred),
        ]
    );
    assert_eq!(first[0][1].reply, "421 4.3.2 shutting down");
    assert!(first[0][0].reply.contains("421 4.3.2 shutting down"));

    let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert!(
        second[0].iter().all(|r| r.verdict == Verdict::Delivered),
        "{second:?}"
    );
    let shared = lock(&shared);
    assert_eq!(shared.hellos, 2, "a new connection after the 421");
    assert_eq!(shared.transactions.len(), 1);
}

#[test]
fn refused_mail_from_fails_the_transaction_and_the_connection_is_reset() {
    // mailin-embedded refuses the null sender with a 5xx.
    let (port, shared) = start_server(Shared::default());
    let mut client = client(port);
    let recipients = strings(&["a@example.com", "b@example.com"]);

    let first = deliver(&mut client, "", &recipients, MESSAGE);
    for result in &first[0] {
        assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
        assert!(result.reply.starts_with('5'), "{result:?}");
        assert!(
            result.reply.ends_with("(in reply to MAIL FROM)"),
            "{result:?}"
        );
    }

    let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert!(second[0].iter().all(|r| r.verdict == Verdict::Delivered));
    let shared = lock(&shared);
    assert_eq!(shared.hellos, 1, "same connection after RSET");
    assert_eq!(shared.transactions.len(), 1);
}

#[test]
fn dead_reused_connection_is_replaced_once() {
    let (port, shared) = start_server(Shared::default());
    let mut client = client(port);
    let recipients = strings(&["a@example.com"]);
    let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert_eq!(first[0][0].verdict, Verdict::Delivered);

    // The server now closes the idle connection at the next MAIL (as one
    // that limits messages per connection does).
    lock(&shared)
        .mail_replies
        .push_back((421, "4.7.0 too many messages"));
    let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert_eq!(second[0][0].verdict, Verdict::Delivered, "{second:?}");
    let shared = lock(&shared);
    assert_eq!(shared.hellos, 2, "one new connection");
    assert_eq!(shared.transactions.len(), 2);
}

#[test]
fn fresh_connection_is_not_retried() {
    let mut shared = Shared::default();
    shared.mail_replies.push_back((421, "4.7.0 go away"));
    let (port, shared) = start_server(shared);
    let mut client = client(port);
    let recipients = strings(&["a@example.com", "b@example.com"]);

    let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    for result in &first[0] {
        assert_eq!(result.verdict, Verdict::Deferred);
        assert_eq!(result.reply, "421 4.7.0 go away (in reply to MAIL FROM)");
    }
    assert_eq!(
        lock(&shared).hellos,
        1,
        "no second connection in the same transaction"
    );

    let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert!(second[0].iter().all(|r| r.verdict == Verdict::Delivered));
    assert_eq!(lock(&shared).hellos, 2);
}

#[test]
fn all_recipients_refused_means_no_data_and_reset() {
    let mut shared = Shared::default();
    for address in ["a@example.com", "b@example.com"] {
        shared
            .rcpt_replies
            .insert(address.to_owned(), VecDeque::from([(550, "5.1.1 unknown")]));
    }
    let (port, shared) = start_server(shared);
    let mut client = client(port);
    let recipients = strings(&["a@example.com", "b@example.com"]);

    let first = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert!(first[0].iter().all(|r| r.verdict == Verdict::Failed));
    assert_eq!(lock(&shared).transactions.len(), 0, "no DATA");

    let second = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
    assert!(second[0].iter().all(|r| r.verdict == Verdict::Delivered));
    assert_eq!(lock(&shared).hellos, 1);
}

#[test]
fn invalid_addresses_fail_without_a_connection() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("local addr").port()
    };
    let mut client = client(port);

    let calls = deliver(
        &mut client,
        "s@example.org",
        &strings(&["no-at-sign", "x@y.test\r\nRSET"]),
        MESSAGE,
    );
    assert_eq!(calls.len(), 2);
    for result in calls.iter().flatten() {
        assert_eq!(result.verdict, Verdict::Failed, "{result:?}");
        assert!(
            result.reply.starts_with("invalid recipient address"),
            "{result:?}"
        );
    }

    let calls = deliver(
        &mut client,
        "not a sender",
        &strings(&["a@b.test"]),
        MESSAGE,
    );
    assert_eq!(calls[0][0].verdict, Verdict::Failed);
    assert!(calls[0][0].reply.starts_with("invalid sender address"));

    assert!(deliver(&mut client, "s@example.org", &[], MESSAGE).is_empty());
}

#[test]
fn close_sends_quit() {
    let (port, _shared) = start_server(Shared::default());
    let mut client = client(port);
    deliver(
        &mut client,
        "s@example.org",
        &strings(&["a@example.com"]),
        MESSAGE,
    );
    assert!(client.session.is_some());
    client.close();
    assert!(client.session.is_none());
    client.close();
    // And it can deliver again afterwards.
    let calls = deliver(
        &mut client,
        "s@example.org",
        &strings(&["a@example.com"]),
        MESSAGE,
    );
    assert_eq!(calls[0][0].verdict, Verdict::Delivered);
}

#[test]
fn client_is_small() {
    // The connection is boxed; the runner keeps clients in enums.
    assert!(std::mem::size_of::<SmtpClient>() <= 512);
}

#[test]
fn plan_groups_by_domain_case_insensitively() {
    let recipients = strings(&["a@X", "b@y", "c@x", "noat", "d@Y", "e@x"]);
    assert_eq!(
        plan(&recipients, 2),
        [vec![0, 2], vec![5], vec![1, 4], vec![3]]
    );
    assert_eq!(plan(&recipients, 0), plan(&recipients, 1));
    assert!(plan(&[], 10).is_empty());
}

#[test]
fn parse_plain() {
    let config = SmtpConfig::parse("smtp://mail.example.com").unwrap();
    assert_eq!(config, SmtpConfig::new("mail.example.com", 25, Tls::None));
    assert_eq!(config.connect_timeout, Duration::from_secs(30));
    assert_eq!(config.command_timeout, Duration::from_secs(300));
    assert_eq!(config.max_rcpts, 100);
    assert_eq!(config.helo_name, None);

    let config = SmtpConfig::parse("SMTP://mail.example.com:2525/").unwrap();
    assert_eq!(
        (config.host.as_str(), config.port),
        ("mail.example.com", 2525)
    );
    assert_eq!(config.tls, Tls::None);
}

#[test]
fn parse_tls_variants() {
    let config = SmtpConfig::parse("smtps://mail.example.com").unwrap();
    assert_eq!((config.port, config.tls), (465, Tls::Implicit));
    let config = SmtpConfig::parse("smtp+starttls://mail.example.com").unwrap();
    assert_eq!((config.port, config.tls), (587, Tls::StartTls));
    let config = SmtpConfig::parse("smtp://mail.example.com?tls=starttls").unwrap();
    assert_eq!((config.port, config.tls), (25, Tls::StartTls));
    let config = SmtpConfig::parse("smtp://mail.example.com:26/?tls=none").unwrap();
    assert_eq!((config.port, config.tls), (26, Tls::None));
}

#[test]
fn parse_credentials_and_helo() {
    let config =
        SmtpConfig::parse("smtps://me%40example.com:p%3Ass%25w@d@mail.example.com:4650").unwrap();
    assert_eq!(
        config.credentials,
        Some(("me@example.com".to_owned(), "p:ss%w@d".to_owned()))
    );
    assert_eq!(
        (config.host.as_str(), config.port),
        ("mail.example.com", 4650)
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains("p:ss"), "{debug}");

    let config = SmtpConfig::parse("smtp://user@h").unwrap();
    assert_eq!(config.credentials, Some(("user".to_owned(), String::new())));

    let config = SmtpConfig::parse("smtp://h?helo=relay.example.org").unwrap();
    assert_eq!(config.helo_name.as_deref(), Some("relay.example.org"));
}

#[test]
fn parse_international_host_names_as_a_labels() {
    let config = SmtpConfig::parse("smtp://mäil.example:2525").unwrap();
    assert_eq!(
        (config.host.as_str(), config.port),
        ("xn--mil-qla.example", 2525)
    );
    assert_eq!(
        SmtpConfig::parse("smtp://Mail.Example.COM").unwrap().host,
        "Mail.Example.COM",
        "an ASCII name is kept as written"
    );
    assert!(SmtpConfig::parse("smtp://a%2Fb").is_err());
}

#[test]
fn parse_ipv6() {
    let config = SmtpConfig::parse("smtp://[::1]:2525").unwrap();
    assert_eq!((config.host.as_str(), config.port), ("::1", 2525));
    let config = SmtpConfig::parse("smtp://[2001:db8::1]").unwrap();
    assert_eq!((config.host.as_str(), config.port), ("2001:db8::1", 25));
}

#[test]
fn parse_errors() {
    for (url, expected) in [
        ("mail.example.com", "not a server URL"),
        ("http://mail.example.com", "unknown scheme"),
        ("smtp://", "missing host"),
        ("smtp://:25", "missing host"),
        ("smtp://h:0", "invalid port"),
        ("smtp://h:65536", "invalid port"),
        ("smtp://h:x", "invalid port"),
        ("smtp://h:", "invalid port"),
        ("smtp://::1", "brackets"),
        ("smtp://[::1", "unclosed"),
        ("smtp://[nope]", "not an IPv6 address"),
        ("smtp://[::1]x", "after the IPv6 address"),
        ("smtp://u:%zz@h", "password"),
        ("smtp://%ff@h", "UTF-8"),
        ("smtp://@h", "empty user name"),
        ("smtp://h/path", "unexpected path"),
        ("smtp://h#frag", "fragment"),
        ("smtp://h?tls=bogus", "tls=bogus"),
        ("smtp://h?tls=implicit", "smtps://"),
        ("smtps://h?tls=starttls", "only for smtp://"),
        ("smtp://h?port=1", "unknown parameter"),
        ("smtp://h?helo=", "not a host name"),
        ("smtp://bad host", "invalid host"),
    ] {
        match SmtpConfig::parse(url) {
            Ok(config) => panic!("{url:?} parsed as {config:?}"),
            Err(e) => assert!(e.contains(expected), "{url:?}: {e:?} lacks {expected:?}"),
        }
    }
}

#[test]
fn helo_name_becomes_client_id() {
    let mut config = SmtpConfig::new("h", 25, Tls::None);
    config.helo_name = Some("192.0.2.1".to_owned());
    assert_eq!(
        SmtpClient::new(config.clone()).hello.to_string(),
        "[192.0.2.1]"
    );
    config.helo_name = Some("relay.example.org".to_owned());
    assert_eq!(
        SmtpClient::new(config).hello.to_string(),
        "relay.example.org"
    );
}

#[test]
fn percent_decoding() {
    assert_eq!(percent_decode("a%20b+c").as_deref(), Ok("a b+c"));
    assert_eq!(percent_decode("%C3%BC").as_deref(), Ok("ü"));
    assert!(percent_decode("%").is_err());
    assert!(percent_decode("%4").is_err());
}

// The scripted server: each misbehaviour, with and without PIPELINING, and
// every verdict checked against what the server itself logged.

use script::{Act, Event, ScriptServer};

/// Every recipient accounted for from the server's own log: delivered only
/// if the server accepted it in exactly one completed transaction, failed
/// only with a 5xx the server really gave to its `RCPT` (or to `MAIL`/`DATA`
/// of its transaction), never delivered otherwise.
fn assert_accounted(results: &[RcptResult], server: &ScriptServer) {
    let log = server.log();
    for r in results {
        let accepted = log.times_accepted(&r.address);
        match r.verdict {
            Verdict::Delivered => assert_eq!(
                accepted, 1,
                "{r:?} delivered but the server accepted it {accepted} times\n{:#?}",
                log.lines
            ),
            Verdict::Failed => {
                assert_eq!(accepted, 0, "{r:?}");
                // The server's reply as the client words it: the code, then
                // each line's text.
                let as_text = |given: &str| {
                    let mut text = given[..3].to_owned();
                    for line in given.split("\r\n") {
                        text.push(' ');
                        text.push_str(line.get(4..).unwrap_or(""));
                    }
                    text
                };
                let given = log.replies_to(&r.address);
                assert!(
                    r.reply.contains(" (in reply to ")
                        || given
                            .iter()
                            .any(|g| g.starts_with('5') && as_text(g) == r.reply),
                    "{r:?} failed, but the server said {given:?} to its RCPT\n{:#?}",
                    log.lines
                );
            }
            Verdict::Deferred => {}
        }
    }
}

fn script_client(server: &ScriptServer) -> SmtpClient {
    client(server.port)
}

const THREE: [&str; 3] = ["a@example.com", "b@example.com", "c@example.com"];

/// The old desynchronisation: one unsolicited 250 behind the reply to the
/// first RCPT, and b is refused. The old client took the stray 250 for b's
/// reply (b "delivered"), b's 550 for c's, and c's 250 for DATA's.
#[test]
fn extra_reply_after_rcpt_defers_the_transaction() {
    for pipelining in [false, true] {
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| {
            match (e.verb.as_str(), e.rcpt) {
                ("RCPT", 0) => Act::usual().extra("250 2.1.5 stray"),
                ("RCPT", 1) => Act::reply("550 5.1.1 no such user"),
                _ => Act::usual(),
            }
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        for r in &calls[0] {
            assert_eq!(
                r.verdict,
                Verdict::Deferred,
                "pipelining {pipelining}: {r:?}"
            );
            assert!(r.reply.starts_with("protocol error: "), "{r:?}");
            assert!(
                r.reply.contains("250 2.1.5 stray") || r.reply.contains("after DATA"),
                "{r:?}"
            );
        }
        assert_accounted(&calls[0], &server);
        assert!(server.log().accepted.is_empty(), "no message went out");
        assert!(client.session.is_none(), "the connection was dropped");
        // The next call, on a new connection, delivers a and c and bounces b
        // with the server's own reply.
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        let second = server.log().connections;
        assert_eq!(second, 2);
        // Connection 1 misbehaves the same way (the script is per RCPT index).
        assert!(calls[0].iter().all(|r| r.verdict == Verdict::Deferred));
        assert_accounted(&calls[0], &server);
    }
}

#[test]
fn extra_reply_after_greeting_or_after_end_of_data() {
    for pipelining in [false, true] {
        // After the greeting of the first connection only.
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| match e.verb.as_str() {
            "CONNECT" if e.conn == 0 => Act::usual().extra("250 stray"),
            _ => Act::usual(),
        });
        let mut client = script_client(&server);
        let first = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        for r in &first[0] {
            assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
            assert!(
                r.reply
                    .contains("protocol error: unsolicited reply after greeting: 250 stray"),
                "{r:?}"
            );
        }
        let second = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        assert!(
            second[0].iter().all(|r| r.verdict == Verdict::Delivered),
            "{second:?}"
        );
        assert_accounted(&second[0], &server);

        // After the end-of-data reply: the 250 may not have been the
        // message's, so nobody is recorded as delivered on its word.
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| match e.verb.as_str() {
            "." if e.conn == 0 => Act::usual().extra("250 2.0.0 stray"),
            _ => Act::usual(),
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        for r in &calls[0] {
            assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
            assert_eq!(
                r.reply,
                "protocol error: unsolicited reply after end of DATA: 250 2.0.0 stray"
            );
        }
        assert_accounted(&calls[0], &server);
        assert!(client.session.is_none());
    }
}

#[test]
fn a_reply_of_the_wrong_class_is_a_protocol_error() {
    for pipelining in [false, true] {
        // 354 to the second RCPT.
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| {
            match (e.verb.as_str(), e.rcpt) {
                ("RCPT", 1) => Act::reply("354 go ahead"),
                _ => Act::usual(),
            }
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        for r in &calls[0] {
            assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
            assert_eq!(
                r.reply,
                "protocol error: unexpected reply after RCPT TO: 354 go ahead"
            );
        }
        assert_accounted(&calls[0], &server);
        assert!(client.session.is_none());

        // 250 to DATA (the server then takes the message as commands).
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| match e.verb.as_str() {
            "DATA" => Act::reply("250 2.0.0 ok"),
            _ => Act::usual(),
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        for r in &calls[0] {
            assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
            assert_eq!(
                r.reply,
                "protocol error: unexpected reply after DATA: 250 2.0.0 ok"
            );
        }
        assert_accounted(&calls[0], &server);
        let log = server.log();
        assert!(
            !log.lines.iter().any(|l| l.contains("Subject")),
            "the message was not sent: {:#?}",
            log.lines
        );
    }
}

#[test]
fn closing_421_in_the_middle_of_rcpts() {
    for pipelining in [false, true] {
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| {
            match (e.verb.as_str(), e.rcpt) {
                ("RCPT", 1) if e.conn == 0 => Act::reply("421 4.3.2 shutting down").close(),
                _ => Act::usual(),
            }
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        assert!(
            calls[0].iter().all(|r| r.verdict == Verdict::Deferred),
            "{calls:?}"
        );
        assert_eq!(calls[0][1].reply, "421 4.3.2 shutting down");
        assert_accounted(&calls[0], &server);
        let again = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        assert!(
            again[0].iter().all(|r| r.verdict == Verdict::Delivered),
            "{again:?}"
        );
        assert_accounted(&again[0], &server);
    }
}

#[test]
fn a_drop_after_the_end_of_data_reply_keeps_the_delivery() {
    for pipelining in [false, true] {
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| match e.verb.as_str() {
            "." => Act::usual().close(),
            _ => Act::usual(),
        });
        let mut client = script_client(&server);
        for address in &THREE[..2] {
            let calls = deliver(&mut client, "s@example.org", &strings(&[address]), MESSAGE);
            assert_eq!(calls[0][0].verdict, Verdict::Delivered, "{calls:?}");
            assert_accounted(&calls[0], &server);
        }
        assert_eq!(
            server.log().connections,
            2,
            "a new connection after the drop"
        );
    }
}

#[test]
fn multi_line_replies() {
    for pipelining in [false, true] {
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| {
            match (e.verb.as_str(), e.rcpt) {
                ("RCPT", 0) => Act::reply("250-2.1.5 first line\r\n250 2.1.5 ok"),
                ("RCPT", 1) => Act::reply("550-5.1.1 no such user\r\n550 5.1.1 here"),
                (".", _) => Act::reply("250-2.0.0 queued\r\n250 2.0.0 as X1"),
                _ => Act::usual(),
            }
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        assert_eq!(
            verdicts(&calls[0]),
            [
                ("a@example.com", Verdict::Delivered),
                ("b@example.com", Verdict::Failed),
                ("c@example.com", Verdict::Delivered),
            ]
        );
        assert_eq!(calls[0][1].reply, "550 5.1.1 no such user 5.1.1 here");
        assert_eq!(calls[0][0].reply, "250 2.0.0 queued 2.0.0 as X1");
        assert_accounted(&calls[0], &server);
        assert!(client.session.is_some(), "the connection is kept");
    }
}

#[test]
fn too_many_recipients_452_after_n() {
    for pipelining in [false, true] {
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| match e.verb.as_str() {
            "RCPT" if e.rcpt >= 2 => Act::reply("452 4.5.3 too many recipients"),
            _ => Act::usual(),
        });
        let mut client = script_client(&server);
        let recipients: Vec<String> = (0..5).map(|i| format!("u{i}@example.com")).collect();
        let calls = deliver(&mut client, "s@example.org", &recipients, MESSAGE);
        let got: Vec<Verdict> = calls[0].iter().map(|r| r.verdict).collect();
        assert_eq!(
            got,
            [
                Verdict::Delivered,
                Verdict::Delivered,
                Verdict::Deferred,
                Verdict::Deferred,
                Verdict::Deferred
            ]
        );
        assert_accounted(&calls[0], &server);
        let rest: Vec<String> = recipients[2..].to_vec();
        let calls = deliver(&mut client, "s@example.org", &rest, MESSAGE);
        assert_eq!(calls[0][2].verdict, Verdict::Deferred);
        assert_accounted(&calls[0], &server);
        assert_eq!(server.log().connections, 1);
    }
}

#[test]
fn pipelining_sends_the_envelope_in_one_write_and_postmaster_is_sendable() {
    let server = ScriptServer::start(true, |_: &Event<'_>| Act::usual());
    let mut client = script_client(&server);
    let calls = deliver(
        &mut client,
        "",
        &strings(&["PostMaster", "a@example.com"]),
        MESSAGE,
    );
    // Two domains ("" and example.com): two transactions.
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .flatten()
            .all(|r| r.verdict == Verdict::Delivered),
        "{calls:?}"
    );
    let log = server.log();
    assert!(
        log.lines.contains(&"C0: MAIL FROM:<>".to_owned()),
        "{:#?}",
        log.lines
    );
    assert!(log.lines.contains(&"C0: RCPT TO:<PostMaster>".to_owned()));
    assert_eq!(log.times_accepted("PostMaster"), 1);
}

#[test]
fn a_refused_pipelined_mail_reads_the_refusals_behind_it() {
    let server = ScriptServer::start(true, |e: &Event<'_>| match e.verb.as_str() {
        "MAIL" if e.txn == 0 => Act::reply("451 4.3.0 try later"),
        "RCPT" if e.txn == 0 => Act::reply("503 5.5.1 no MAIL"),
        _ => Act::usual(),
    });
    let mut client = script_client(&server);
    let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
    for r in &calls[0] {
        assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
        assert_eq!(r.reply, "451 4.3.0 try later (in reply to MAIL FROM)");
    }
    let again = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
    assert!(
        again[0].iter().all(|r| r.verdict == Verdict::Delivered),
        "{again:?}"
    );
    assert_accounted(&again[0], &server);
    assert_eq!(server.log().connections, 1, "the connection stayed in step");
}

/// A TLS front for a plain server (implicit TLS, as on port 465): rustls
/// with the test certificate for `localhost` (signed by the test CA),
/// relaying the plaintext to `backend` both ways. Returns its port.
fn tls_front(backend: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_fixture("server.pem"))
            .expect("server.pem")
            .collect::<Result<_, _>>()
            .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(tls_fixture("server.key")).expect("server.key");
    let config = Arc::new(
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = Arc::clone(&config);
            thread::spawn(move || {
                let tick = Some(Duration::from_millis(5));
                let conn = rustls::ServerConnection::new(config).expect("server connection");
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut back =
                    std::net::TcpStream::connect(("127.0.0.1", backend)).expect("backend");
                if tls.sock.set_read_timeout(tick).is_err() || back.set_read_timeout(tick).is_err()
                {
                    return;
                }
                let idle = |e: &io::Error| {
                    matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    )
                };
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match tls.read(&mut buf) {
                        Ok(0) => return,
                        Ok(n) => {
                            if back.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                        Err(e) if idle(&e) => {}
                        Err(_) => return,
                    }
                    match back.read(&mut buf) {
                        Ok(0) => {
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                            return;
                        }
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                                return;
                            }
                        }
                        Err(e) if idle(&e) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    });
    port
}

#[test]
fn implicit_tls_delivers_and_an_extra_reply_over_tls_is_still_seen() {
    let server = ScriptServer::start(false, |e: &Event<'_>| match (e.verb.as_str(), e.rcpt) {
        ("RCPT", 0) if e.conn == 1 => Act::usual().extra("250 2.1.5 stray"),
        _ => Act::usual(),
    });
    let port = tls_front(server.port);
    let ca = tls_fixture("ca.pem");
    let url = format!("smtps://localhost:{port}?ca={}", ca.display());

    let mut client = client_for(&url);
    let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
    assert!(
        calls[0].iter().all(|r| r.verdict == Verdict::Delivered),
        "{calls:?}"
    );
    assert_accounted(&calls[0], &server);

    // The second connection sends a stray reply behind the first RCPT's,
    // through TLS: it is caught all the same.
    client.close();
    let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
    for r in &calls[0] {
        assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
        assert_eq!(
            r.reply,
            "protocol error: unsolicited reply after RCPT TO: 250 2.1.5 stray"
        );
    }
    assert_accounted(&calls[0], &server);
    assert_eq!(server.log().accepted.len(), 1);

    // Without ca= the test CA is unknown: refused at the handshake.
    let url = format!("smtps://localhost:{port}");
    let calls = deliver(
        &mut client_for(&url),
        "s@example.org",
        &strings(&["a@example.com"]),
        MESSAGE,
    );
    assert_eq!(calls[0][0].verdict, Verdict::Deferred);
    assert!(
        calls[0][0].reply.starts_with("TLS with localhost:"),
        "{:?}",
        calls[0][0]
    );
}

#[test]
fn a_large_envelope_is_not_pipelined() {
    // With MAIL refused, a pipelined envelope would still bring the RCPTs
    // to the server; a sequential one stops at MAIL.
    let server = ScriptServer::start(true, |e: &Event<'_>| match e.verb.as_str() {
        "MAIL" if e.txn == 0 => Act::reply("451 4.3.0 try later"),
        _ => Act::usual(),
    });
    let mut client = script_client(&server);
    client.config.max_rcpts = 1000;
    let many: Vec<String> = (0..600)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    let calls = deliver(&mut client, "s@example.org", &many, MESSAGE);
    assert!(calls[0].iter().all(|r| r.verdict == Verdict::Deferred));
    assert!(
        !server.log().lines.iter().any(|l| l.contains("RCPT")),
        "600 recipients went out pipelined"
    );
    let calls = deliver(&mut client, "s@example.org", &many, MESSAGE);
    assert!(calls[0].iter().all(|r| r.verdict == Verdict::Delivered));
    assert_accounted(&calls[0], &server);
    // A small envelope is pipelined: the RCPTs reach a server that refused MAIL.
    let few = strings(&THREE);
    let server = ScriptServer::start(true, |e: &Event<'_>| match e.verb.as_str() {
        "MAIL" => Act::reply("451 4.3.0 try later"),
        "RCPT" => Act::reply("503 5.5.1 no MAIL"),
        _ => Act::usual(),
    });
    deliver(&mut script_client(&server), "s@example.org", &few, MESSAGE);
    assert_eq!(server.log().rcpt_replies.len(), 3);
}

/// With PIPELINING, one extra reply early on shifts the last RCPT's
/// refusal onto DATA: without a second look, everybody would bounce with
/// c's 550 (a and b were accepted). The real 354 behind it gives it away.
#[test]
fn pipelined_shift_that_lands_a_refusal_on_data_is_caught() {
    let server = ScriptServer::start(true, |e: &Event<'_>| match (e.verb.as_str(), e.rcpt) {
        ("RCPT", 0) => Act::usual().extra("250 2.1.5 stray"),
        ("RCPT", 2) => Act::reply("550 5.1.1 no such user"),
        _ => Act::usual(),
    });
    let mut client = script_client(&server);
    let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
    for r in &calls[0] {
        assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
        assert_eq!(
            r.reply,
            "protocol error: unsolicited reply after DATA: 354 go ahead"
        );
    }
    assert_accounted(&calls[0], &server);
}

#[test]
fn data_refused_after_accepted_recipients_still_classifies_them() {
    for pipelining in [false, true] {
        let server = ScriptServer::start(pipelining, |e: &Event<'_>| match e.verb.as_str() {
            "DATA" if e.txn == 0 => Act::reply("452 4.3.1 insufficient storage"),
            _ => Act::usual(),
        });
        let mut client = script_client(&server);
        let calls = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        for r in &calls[0] {
            assert_eq!(r.verdict, Verdict::Deferred, "{r:?}");
            assert_eq!(r.reply, "452 4.3.1 insufficient storage (in reply to DATA)");
        }
        let again = deliver(&mut client, "s@example.org", &strings(&THREE), MESSAGE);
        assert!(
            again[0].iter().all(|r| r.verdict == Verdict::Delivered),
            "{again:?}"
        );
        assert_accounted(&again[0], &server);
        assert_eq!(server.log().connections, 1, "same connection, after RSET");
    }
}
