//! `cargo xtask`: the project's chores, written in Rust so that plain `cargo`
//! is all a developer or CI needs (matklad's cargo-xtask pattern; the alias is
//! in `.cargo/config.toml`).
//!
//! One subcommand per task, one module per subcommand:
//!
//! * `test`: the README's test command (CI's too): install what the tests
//!   need when root, or say what is missing; `cargo build --workspace`,
//!   `cargo test --workspace`, with the tests that need root or strace run
//!   where they can, and a count of them.
//! * `man [--check]`: render `man/mm-*.1` from each tool's clap `Cli` plus the
//!   hand-written sections in `src/man/`; `--check` only compares (CI, and the
//!   `#[test]` in `man.rs`).
//! * `completions [--out DIR]`: bash, zsh and fish completions for every tool.
//! * `dist`: each tool built alone (`cargo build --profile dist -p TOOL`,
//!   so features do not unify across the workspace) into `target/dist/`.
//! * `bench [--max-backlog N] [--reps N] [WORKLOAD...]`: the dist build,
//!   then each workload beside its physical floor (`src/bin/mm-floor.rs`)
//!   or its peer (smtp-source, a private Postfix), table printed and written
//!   to `target/bench.json`.
//! * `demo`: the README's main job: enqueue, deliver to an in-process SMTP
//!   server, show the queues, on any machine with no MTA.
//! * `e2e [--keep]`: mm behind a real MTA: a private Postfix pipes mail into
//!   `mm-enqueue`, `mm-runq` delivers it to Postfix's smtp-sink, and a spool
//!   failure makes Postfix defer and retry (root only): runs the Postfix
//!   tests of `tests/e2e/postfix.rs`, which `test` runs too when root.
//! * `cluster [--keep] [SCENARIO...]`: mm on a GlusterFS volume mounted
//!   twice (hosts A and B): the file system probed, then enqueue, drain,
//!   kill, freeze and clock-skew scenarios counted per recipient at
//!   smtp-sink (root only; CI runs it where there is FUSE).
//!
//! Tasks never depend on the current directory: paths come from
//! [`project_root`].

// The chores measure the real world (benchmarks, clock skew on a cluster):
// the wall clock is theirs to read; only the tools go through mm_core::clock.
#![allow(clippy::disallowed_methods)]

mod bench;
mod cluster;
mod completions;
mod demo;
mod dist;
mod e2e;
mod man;
mod sys;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// The mm project's chores.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// The README's test command: install what the tests need (root and apt) or say what is
    /// missing, build, run the whole suite, the root and strace tests where they can run.
    Test,
    /// Render the man pages into man/ (generated files, committed).
    Man {
        /// Change nothing; fail if a committed page differs from what would be rendered.
        #[arg(long)]
        check: bool,
    },
    /// Write bash, zsh and fish completions for every tool (not committed).
    Completions {
        /// Where to write them [default: target/completions]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Enqueue sample mail and deliver it to an in-process SMTP server, showing the queues.
    Demo {
        /// Keep the temporary spool afterwards (its path is printed) to look around in it.
        #[arg(long)]
        keep: bool,
    },
    /// End to end with a real Postfix: MTA -> pipe -> mm-enqueue -> mm-runq -> smtp-sink (root).
    E2e {
        /// Keep the temporary directory (Postfix's configuration and log, the spool, what the sink got).
        #[arg(long)]
        keep: bool,
    },
    /// mm on a real shared file system: a two-brick GlusterFS volume mounted twice as hosts A
    /// and B; enqueue, drain, kill, freeze and clock-skew scenarios counted per recipient (root).
    Cluster {
        /// Keep the bricks, smtp-sink's files and the runners' logs (in /var/tmp/mm-xtask-cluster).
        #[arg(long)]
        keep: bool,
        /// Only these: probe, enqueue, drain, kill, freeze, skew [default: all].
        #[arg(value_name = "SCENARIO")]
        only: Vec<String>,
    },
    /// Build each tool alone with only what it uses (profile dist) into target/dist/.
    Dist,
    /// Benchmarks beside the physical floor and peers (dist build; many minutes at 1,000,000 entries).
    Bench {
        /// Largest backlog drained: 1000, 100000 or 1000000 (the default).
        #[arg(long, value_name = "N", default_value_t = 1_000_000)]
        max_backlog: usize,
        /// Repetitions of each workload (the 1,000,000 backlog runs once).
        #[arg(long, value_name = "N", default_value_t = 3)]
        reps: usize,
        /// Only the workloads whose names start with these: enqueue, drain, smtp, cpu, postfix,
        /// rtt, startup (e.g. `cargo xtask bench --reps 1 rtt` for one group).
        #[arg(value_name = "WORKLOAD")]
        only: Vec<String>,
    },
}

/// One of the tools: its binary name and its clap definition.
#[derive(Clone, Copy)]
pub struct Tool {
    /// The binary (and man page) name.
    pub name: &'static str,
    /// The tool's `Cli::command()`.
    pub command: fn() -> clap::Command,
}

/// Every tool, in the order the README lists them.
pub const TOOLS: [Tool; 10] = [
    Tool {
        name: "mm-enqueue",
        command: mm_enqueue::Cli::command,
    },
    Tool {
        name: "mm-runq",
        command: mm_runq::Cli::command,
    },
    Tool {
        name: "mm-showq",
        command: mm_showq::Cli::command,
    },
    Tool {
        name: "mm-dumpdb",
        command: mm_dumpdb::Cli::command,
    },
    Tool {
        name: "mm-recover",
        command: mm_recover::Cli::command,
    },
    Tool {
        name: "mm-unbad",
        command: mm_unbad::Cli::command,
    },
    Tool {
        name: "mm-flush",
        command: mm_flush::Cli::command,
    },
    Tool {
        name: "mm-hold",
        command: mm_hold::Cli::command,
    },
    Tool {
        name: "mm-release",
        command: mm_release::Cli::command,
    },
    Tool {
        name: "mm-delete",
        command: mm_delete::Cli::command,
    },
];

/// The workspace root, from where this crate's manifest is (never the current directory).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent directory")
        .to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Test => test::run(&project_root()),
        Task::Man { check } => man::run(&project_root(), check),
        Task::Completions { out } => completions::run(&project_root(), out),
        Task::Demo { keep } => demo::run(&project_root(), keep),
        Task::Dist => dist::run(&project_root()),
        Task::E2e { keep } => e2e::run(&project_root(), keep),
        Task::Cluster { keep, only } => cluster::run(&project_root(), &only, keep),
        Task::Bench {
            max_backlog,
            reps,
            only,
        } => bench::run(
            &project_root(),
            &bench::Options {
                max_backlog,
                reps,
                only,
            },
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
