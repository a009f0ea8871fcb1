//! The hand-written part of mm-enqueue(1), from `crates/mm-enqueue/src/lib.rs`
//! and `mm_core::enqueue`.

use super::common::Env;
use super::{Block::Text, Page};

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
    examples: mm_enqueue::EXAMPLES,
    exit: mm_enqueue::EXIT_STATUS,
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
