//! Cross-tool black-box tests of the mm tools: every test runs the real
//! binaries against its own temporary spool, through the harness of
//! `tests/src/lib.rs`. Golden files live in `tests/fixtures/golden`
//! (`MM_BLESS=1 cargo test -p mm-e2e` rewrites them).

// The tests measure the real world (seeds, file times): the wall clock is
// theirs to read; only the tools must go through mm_core::clock.
#![allow(clippy::disallowed_methods)]

// Every tool: one line and 64 for a usage error (mm-enqueue: 75), --help with examples.
mod cli;
// mm-enqueue: concurrency, exact bytes, every exit code, full/read-only spools, modes.
mod enqueue;
// mm-showq: slices partition a queue, golden listings, a listing never writes.
mod showq;
// mm-dumpdb: golden dumps, corrupt files refused and left alone, unknown entries.
mod dumpdb;
// The fixed spool with known ids that the golden tests read.
mod fixture;
// Crash points: each step of the enqueue and runner file protocols, killed and recovered.
mod crashpoints;
// mm-runq: per-recipient SMTP outcomes, retries, bounces, stops, concurrent and sliced runners, stages.
mod runq;
// Stages that hang: timeout, stop and kill -9 leave no process; the refusal of stages with nowhere to go.
mod stages;
// The test hooks (MM_TEST_*) are in the test build only, never in a per-package or release build.
mod hooks;
// SMTP servers for the runner tests: mailin-embedded in process, Postfix's smtp-sink.
mod smtp;
// mm-runq against a scripted server that misbehaves: entry states against the server's log.
mod smtp_faults;
// Runners killed at random, corrupt entries, recovery beside live runners, poison entries, shared spools.
mod crash;
// The selection language of showq/recover/unbad and showq --by.
mod select;
// Hostile input and least privilege: real users, hostile names, planted files, injected EIO, endless input.
mod hostile;
// A full file system (blocks, inodes) at each write of a delivery and at start-up recovery.
mod faults;
// Claims across hosts on one machine: a frozen runner fenced, a removed record noticed, clock skew.
mod lease;
// The admin tools (mm-flush, …) against runners draining the same queue, an SMTP server's log as the judge.
mod admin;
// The runner's log: Postfix-style recipient lines, levels, --quiet, read by pflogsumm.
mod maillog;
// mm-runq --dsn: bounce records as RFC 3464 reports, read by Python's email package.
mod dsn;
// Watching the queue: showq --metrics through promtool, runq --metrics-file, stalled runners.
mod watch;
// docs/json.md against the tools' JSON, field by field.
mod json_doc;
// mm behind a real, private Postfix: pipe(8) into mm-enqueue, mm-runq to smtp-sink, the exit-75 defer path.
mod postfix;
