//! The hand-written part of mm-enqueue(1), from `crates/mm-enqueue/src/lib.rs`
//! and `mm_core::enqueue`.

use super::common::Env;
use super::{Block::Text, Example, Page};

pub const PAGE: Page = Page {
    description: &[Text(
        "`mm-enqueue` reads one message from standard input, usually an MTA's pipe, and makes \
         it an entry of a queue (`in` unless `-q` says otherwise) with the envelope from the \
         command line: the sender (`-f`) and the recipients (the arguments and `--to`). With \
         `--file` it reads one message per file instead, and commits them in groups, which is \
         much faster for a bulk load.

         It exits 0 only once every entry is on stable storage: each is written under a \
         temporary name, synced, renamed into its bucket, and the directory synced. It \
         prints each new entry's id on standard output, one per line. The envelope and the \
         limits are checked before the message is read, so a bad address fails at once.

         The exit status is made for an MTA: 75 for any local trouble, a bad command line \
         included, so that the MTA keeps the message and tries again later, and 65 for a \
         message that will never be accepted, so that it bounces.",
    )],
    examples: &[
        Example {
            what: "A Postfix transport in *master.cf*: *pipe*(8) runs `mm-enqueue` as the \
                   user `mm` (route a list's addresses to the transport `mm` in \
                   *transport*(5)). `null_sender=` (empty) keeps the null sender `<>` \
                   as it is; without it *pipe*(8) passes MAILER-DAEMON, which is refused:",
            lines: &[
                "mm  unix  -  n  n  -  -  pipe",
                "  flags=Rq user=mm:mm null_sender=",
                "  argv=/usr/bin/mm-enqueue -q in -f ${sender} -- ${recipient}",
            ],
        },
        Example {
            what: "A script handing in a message for the list `dev`:",
            lines: &[
                "mm-enqueue -f list-bounces@example.org --list dev alice@example.org < msg.eml",
            ],
        },
        Example {
            what: "A bulk load of many files straight into `out`, in one process, with group \
                   commits:",
            lines: &[
                "mm-enqueue -q out -f owner@example.org --to bob@example.org \\",
                "    --file a.eml --file b.eml",
            ],
        },
        Example {
            what: "Metadata for the pipeline stages, and a lower size limit:",
            lines: &[
                "mm-enqueue -f owner@example.org --meta campaign=spring --max-size 10M \\",
                "    carol@example.com < msg.eml",
            ],
        },
    ],
    exit: &[
        (
            0,
            "Every entry is on stable storage; their ids are on standard output.",
        ),
        (
            65,
            "Bad data, which the MTA should bounce: an invalid address, no recipient, a message \
             over `--max-size`, more than `--max-rcpts` recipients, metadata over \
             `--max-meta`.",
        ),
        (66, "A `--file` does not exist."),
        (
            75,
            "A temporary failure: a usage error (an unknown option, a missing or malformed \
             value, a `--meta` without `=`: a typo in the MTA's command line); the spool is \
             missing (not mounted), not a directory, or not writable by this user; the queue \
             name in `-q` is wrong; it has less free space than `--min-free`; a write failed; \
             or a bug. The message on standard error names what is wrong. Nothing was \
             acknowledged, so the MTA keeps the message and tries again later: a mistake in \
             the installation defers mail, it never bounces it (Postfix bounces on 64, 70, 77 \
             and 78, which mm-enqueue therefore never uses). `--help` and `--version` exit 0.",
        ),
    ],
    files: "`mm-enqueue` writes *QUEUE/BB/ID.tmp* and renames it to *QUEUE/BB/ID.pck*, \
            creating the queue and bucket directories as needed. It reads no other entry.",
    environment: &[
        Env::Spool,
        Env::TestNow,
        Env::TestClockOffset,
        Env::TestCrashAt,
    ],
    security: "`mm-enqueue` runs as the MTA's user, which needs, through the spool's group, \
               write access to the queues it puts mail into and nothing else. Because it sets \
               the modes itself, the umask of *pipe*(8) does no harm.",
    see_also: &[("pipe", "8"), ("sysexits", "3")],
};
