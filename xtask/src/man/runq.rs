//! The hand-written part of mm-runq(1), from `crates/mm-runq/src/lib.rs` and
//! `mm_core::{runner, pipeline, delivery::smtp}`.

use super::common::Env;
use super::{
    Block::{Item, Text},
    Page,
};

pub const PAGE: Page = Page {
    description: &[
        Text(
            "`mm-runq` runs one queue (`out` unless `-q` says otherwise), or one slice of it \
             (`--slice`). It claims each due entry by renaming it, so any number of runners, \
             on one host or on several sharing the spool, never handle an entry twice. It \
             runs the pipeline stages, delivers to the recipients still pending, and leaves \
             the entry in a defined state:",
        ),
        Item(
            "all recipients done",
            "The entry is removed, or passed on to the queue named by `--then`. A bounce \
             record goes into `bounces` for the recipients that failed.",
        ),
        Item(
            "some recipients deferred",
            "Their progress is written and the entry is put back, deferred, due after a \
             backoff between `--retry-min` and `--retry-max`. Recipients still pending \
             `--give-up-after` the first attempt fail.",
        ),
        Item(
            "undecodable, or refused by a stage",
            "The entry goes to `bad`, or to `shunt` with the stage's reason.",
        ),
        Text(
            "Delivery is over SMTP to one server (`--smtp`), into a maildir (`--deliver-to`), \
             or nowhere (`--discard`). With none of them and no stage or `--then`, it is SMTP \
             to *localhost:25*; with stages, none of them and no `--then`, `mm-runq` refuses \
             to start (exit 64), since it would remove entries whose recipients are pending. Each recipient has its own outcome: a 2xx reply delivers it, a \
             5xx fails it, and a 4xx, a timeout or a lost connection defers it. A reply that \
             does not fit its command (one too many, or of the wrong kind) is a protocol \
             error: the whole transaction is deferred and the connection closed, so no reply \
             is ever taken for another recipient's. A delivered recipient is never sent to \
             again.

             A stage runs `sh -c CMD` with the message on standard input and the envelope in \
             `MM_ID`, `MM_QUEUE`, `MM_SENDER`, `MM_RECIPIENTS`, `MM_LIST`, `MM_STAGE` and \
             `MM_ATTEMPTS`. Stages run in command-line order; a `--filter` stage's output \
             becomes the message. Exit 0 goes on, 75 defers the entry, and anything else \
             sends it to `shunt`. A stage that succeeded is not run again. Each stage runs in \
             a process group of its own, under a guard process (`mm-runq --stage-guard`) \
             that dies with the runner, even one killed by SIGKILL, and kills the group then. \
             What the shell leaves running is killed when it exits; at `--stage-timeout` and \
             at a stop the whole group gets SIGTERM, then SIGKILL 2 s later. A timeout defers the entry with the reason; \
             the third timeout in a row sends it to `shunt`.

             With `--until-empty` it stops when no due entry is left, and with `--once` after \
             one pass; otherwise it runs as a service. On SIGTERM or SIGINT it stops claiming, \
             lets the entries in hand finish for up to `--stop-timeout`, puts back any still \
             busy, and exits 0; a second signal exits at once. SIGHUP reopens the `--log` \
             file.

             At start it takes back the entries of its queue and slice whose runner died, as \
             `mm-recover` does. Only one runner of a queue and slice runs at a time: another \
             one says so on standard error and exits 0 (even with `--quiet`).

             The log (standard error, `--log`, or `--syslog`: facility mail, tag `mm/runq`) \
             has one line per recipient outcome in the form of Postfix's maillog, \
             `ID: to=<A>, relay=HOST[ADDR]:PORT, delay=SECS, dsn=X.Y.Z, status=sent (REPLY)` \
             (`deferred`, `bounced`), one line per entry, the id of every bounce record \
             written, and a line when the runner starts and when it stops. Each line has a \
             syslog level from its kind: info (sent, done, start, stop), notice (deferred, \
             bounced, bounce records), warning, err (local failures). `--quiet` drops the \
             info lines. `pflogsumm --syslog-name=mm` reads the log.

             With `--dsn` (on the `bounces` queue), each bounce record becomes an RFC 3464 \
             delivery status notification to its envelope sender, from the null sender, \
             delivered and retried like any mail; mail that came from the null sender gets \
             none.",
        ),
    ],
    examples: mm_runq::EXAMPLES,
    exit: mm_runq::EXIT_STATUS,
    files: "`mm-runq` claims *QUEUE/BB/ID.pck* (or *ID.DUE.pck*) by renaming it to \
            *ID.TOKEN.bak*, rewrites it through *ID.TOKEN.tmp*, writes its record in \
            *.runners*, holds *.locks/QUEUE.K-N.HOST.lock* while it runs, and writes bounce \
            records into *bounces*.",
    environment: &[
        Env::Spool,
        Env::Host,
        Env::TestNow,
        Env::TestClockOffset,
        Env::TestCrashAt,
    ],
    security: "`mm-runq` runs as the runner's user. Stage commands come only from its command \
               line, never from mail, and run as that user. A password in the `--smtp` URL \
               can be read by every local user in the process list (*ps*(1), \
               */proc/PID/cmdline*): on a host with untrusted users, mount */proc* with \
               `hidepid` or let the smarthost trust the host's address instead.",
    see_also: &[("sh", "1"), ("cron", "8"), ("sysexits", "3")],
};
