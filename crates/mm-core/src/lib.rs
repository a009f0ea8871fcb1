//! `mm-core`: the durable on-disk mail queue shared by the `mm` tools.
//!
//! # The life of an entry
//!
//! ```text
//!  mm-enqueue ──write .tmp, fsync, rename──▶ QUEUE/BB/ID.pck ◀──────────────┐
//!                                                │ rename (the claim)         │ release (deferred:
//!                                                ▼                            │ ID.DUE.pck)
//!                                     QUEUE/BB/ID.TOKEN.bak ──────────────────┤
//!                                  │          │           │                   │
//!                          finished│  pass-on │ quarantine│     dead runner:  │
//!                           unlink │  rename  │ rename    │     mm-recover ───┘
//!                                  ▼          ▼           ▼
//!                                 gone   NEXT/BB/ID.pck  bad|shunt/BB/ID.psv ──mm-unbad──▶ QUEUE
//! ```
//!
//! Every arrow is a single `rename(2)` (or an unlink), so an entry is always
//! in exactly one place and one state. See `docs/on-disk-format.md` for the
//! format and `docs/operations.md` for what an admin may do by hand.
//!
//! # Modules
//!
//! * [`spool`]: the root, queues and their directories; [`id`]: ids and file
//!   names; [`entry`]: the content; [`slice`](mod@slice): shares of a queue;
//! * [`enqueue`]: new entries; [`scan`]: listing; [`claim`]: ownership and the
//!   moves of a claimed entry; [`recover`]: dead runners' claims;
//! * [`runner`], [`pipeline`], [`retry`], [`delivery`]: processing;
//! * [`report`], [`select`]: what the inspection tools print and choose;
//!   [`progress`]: what each runner is doing; [`metrics`]: the Prometheus text format;
//! * [`admin`] and its operations ([`flush`], [`hold`], [`delete`]): what the admin tools change;
//! * [`fsx`], [`clock`], [`error`], [`syslog`]: general helpers that know nothing of mail.

#![deny(missing_docs)]

pub mod address;
pub mod admin;
#[cfg(feature = "cli")]
pub mod admin_cli;
pub mod bounce;
pub mod claim;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clock;
pub mod crashpoint;
pub mod delete;
pub mod delivery;
pub mod destination;
pub mod dsn;
pub mod enqueue;
pub mod entry;
pub mod error;
pub mod flush;
pub mod fsx;
pub mod hold;
pub mod id;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod recover;
pub mod report;
pub mod retry;
pub mod runner;
pub mod scan;
pub mod select;
pub mod shape;
pub mod slice;
pub mod spool;
pub mod syslog;
pub mod unbad;

pub use entry::{Entry, RcptState};
pub use error::{Error, ErrorKind, Result};
pub use id::{EntryId, FileName, State};
pub use slice::Slice;
pub use spool::{Queue, QueueName, Spool};
