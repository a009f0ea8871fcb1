//! The man page text every tool shares: the sysexits names, the spool layout
//! (FILES), the environment variables and the permission model (SECURITY).
//!
//! Facts here come from mm-core: `spool.rs` and `id.rs` (layout and names),
//! `fsx.rs` (modes, `O_NOFOLLOW`), `claim.rs` (`MM_HOST`, runner records),
//! `clock.rs` (the test clock), `error.rs` (the exit code table). When one of
//! those changes, change this text and run `cargo xtask man`.

use super::Block::{self, Item, Text};

/// The sysexits(3) name of an exit status.
pub fn sysexits_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "EX_OK",
        64 => "EX_USAGE",
        65 => "EX_DATAERR",
        66 => "EX_NOINPUT",
        70 => "EX_SOFTWARE",
        73 => "EX_CANTCREAT",
        74 => "EX_IOERR",
        75 => "EX_TEMPFAIL",
        77 => "EX_NOPERM",
        78 => "EX_CONFIG",
        _ => return None,
    })
}

/// The spool layout, after each tool's own paragraph.
pub const FILES: &[Block] = &[
    Item(
        "*/var/spool/mm*",
        "The default spool; another is named with `--spool` or `MM_SPOOL`. The admin creates \
         it (mode 2770, in the group the MTA's user and the runner's user share). No tool \
         creates it: a missing spool means an unmounted or broken installation, which is a \
         temporary failure (75), never a reason to start an empty one.",
    ),
    Item(
        "*$SPOOL/QUEUE/*",
        "A queue, created on demand. Queue names are `[a-z][a-z0-9-]*`, at most 32 \
         characters. The well-known ones: `in` (where `mm-enqueue` puts mail by default), \
         `out` (delivered by `mm-runq -q out`), `bounces` (a record of each failed \
         recipient), `shunt` (refused by a pipeline stage) and `bad` (undecodable, or \
         crashed its runner too often).",
    ),
    Item(
        "*$SPOOL/QUEUE/BB/ID.pck*",
        "A queued entry, due now. `BB`, its bucket, is the first byte of the entry's hash in \
         two hex digits: 256 buckets keep every directory small at any backlog. `ID` is the \
         enqueue time (`SSSSSSSSSS.UUUUUU`), a `+`, and 40 hex digits of SHA-1. An entry \
         keeps its id for its whole life, across queues.",
    ),
    Item(
        "*$SPOOL/QUEUE/BB/ID.DUE.pck*",
        "A deferred entry, due again at Unix time `DUE`.",
    ),
    Item(
        "*$SPOOL/QUEUE/BB/ID.TOKEN.bak*",
        "A claimed entry, held by the runner whose record is `$SPOOL/.runners/TOKEN`. Every \
         change of state is a single *rename*(2), so an entry has exactly one name, in one \
         state, at every instant.",
    ),
    Item(
        "*$SPOOL/QUEUE/BB/ID.psv*",
        "A preserved (quarantined) entry in `bad` or `shunt`, with the reason; `mm-unbad` \
         returns it to work.",
    ),
    Item(
        "*$SPOOL/QUEUE/BB/ID.tmp*, *ID.TOKEN.tmp*",
        "Being written, by `mm-enqueue` or by a runner rewriting its claimed entry; never \
         read. One left behind was never acknowledged; `mm-recover` removes it.",
    ),
    Item(
        "*$SPOOL/QUEUE/ID.pck*",
        "The drop-in: an admin may *mv*(1), never *cp*(1), an entry file here, and runners \
         adopt it.",
    ),
    Item(
        "*$SPOOL/.runners/TOKEN*",
        "One record per live runner: host, process id, start times. It tells whether the \
         holder of a claim is alive: on the same host by an *flock*(2) the runner holds for \
         its whole life, on another host by a lease the runner renews.",
    ),
    Item(
        "*$SPOOL/.runners/TOKEN.progress*",
        "What a queue runner is doing: its queue and slice, the entries in its hands and \
         since when, its last progress, its last pass and its last reply. Written by the \
         runner (at most once a second), removed with its record; `mm-showq --runners` and \
         `mm-showq --metrics` read it.",
    ),
    Item(
        "*$SPOOL/.locks/QUEUE.K-N.HOST.lock*",
        "Held by the runner of one queue and slice, so that a second one (a cron job starting \
         while the last is still running) exits at once.",
    ),
    Text(
        "Any other file in a queue is foreign and left alone. `docs/on-disk-format.md` \
         describes the layout and the entry format.",
    ),
];

/// An environment variable a tool reads.
#[derive(Clone, Copy)]
pub enum Env {
    /// `MM_SPOOL`.
    Spool,
    /// `MM_HOST`.
    Host,
    /// `MM_TEST_NOW`.
    TestNow,
    /// `MM_TEST_CLOCK_OFFSET`.
    TestClockOffset,
    /// `MM_TEST_CRASH_AT`.
    TestCrashAt,
}

impl Env {
    /// The variable's name.
    pub fn name(self) -> &'static str {
        match self {
            Env::Spool => "MM_SPOOL",
            Env::Host => "MM_HOST",
            Env::TestNow => "MM_TEST_NOW",
            Env::TestClockOffset => "MM_TEST_CLOCK_OFFSET",
            Env::TestCrashAt => "MM_TEST_CRASH_AT",
        }
    }

    /// What it does.
    pub fn text(self) -> &'static str {
        match self {
            Env::Spool => {
                "The spool directory when `--spool` is not given (default */var/spool/mm*)."
            }
            Env::Host => {
                "Overrides the kernel's host name in runner records and claims: a claim held \
                 on this host is judged by its lock, one held on another host by its lease. \
                 Hosts that share a spool must have different names."
            }
            Env::TestNow => {
                "Tests only: pins the clock to this Unix time in seconds (golden outputs). \
                 Read only by a build with the `test-hooks` feature (the workspace's test \
                 build); a release build ignores it."
            }
            Env::TestClockOffset => {
                "Tests only: shifts the clock by this many seconds, which may be negative, so \
                 that retry and give-up times can be tested without waiting. Read only by a \
                 build with the `test-hooks` feature; a release build ignores it."
            }
            Env::TestCrashAt => {
                "Tests only: makes the process abort, with no cleanup, when it reaches the \
                 named step of its file protocol (`enqueue-after-fsync`, `runner-after-claim`, \
                 ...), to show that every step can be recovered from. Read only by a build \
                 with the `test-hooks` feature; a release build ignores it."
            }
        }
    }
}

/// The variables of the tools that take or judge claims.
pub const ALL_ENV: &[Env] = &[Env::Spool, Env::Host, Env::TestNow, Env::TestClockOffset];

/// The permission model, before each tool's own paragraph.
pub const SECURITY: &[Block] = &[
    Text(
        "The spool is shared by two users: the one the MTA runs `mm-enqueue` as (the `user=` \
         of Postfix's *pipe*(8)) and the one the runners run as. They share one group, the \
         spool's group. No tool needs root, and none is meant to run as root or set-user-id.",
    ),
    Text(
        "Directories are mode 2770: group-writable, and set-group-id so that every new file \
         and directory takes the spool's group. Files are mode 0660, set explicitly after \
         creation, because *pipe*(8) runs commands with umask 077, which would otherwise \
         leave entries that only the MTA's user can read or remove. Other users have no \
         access.",
    ),
    Text(
        "Entries are opened without following symbolic links (`O_NOFOLLOW`) and must be \
         regular files: a link or a device placed in the spool is refused, never followed. \
         Queue names and entry ids given on the command line are validated before they are \
         used in a path, so no argument can reach outside the spool.",
    ),
];

/// The page of an admin tool (mm-flush, mm-hold, mm-release): what differs is
/// the text, the examples and what it does in the spool (`files`).
pub const fn admin_page(
    description: &'static [Block],
    examples: &'static [super::Example],
    exit: &'static [(u8, &'static str)],
    files: &'static str,
    see_also: &'static [(&'static str, &'static str)],
) -> super::Page {
    super::Page {
        description,
        examples,
        exit,
        files,
        environment: ALL_ENV,
        security: "The admin tools run as the runner's user: they rename and rewrite entries. \
                   Ids are validated before use, so only entries of the named queue can be \
                   named.",
        see_also,
    }
}
