//! `cargo xtask e2e`: mm behind a real, private Postfix, end to end.
//!
//! The checks are tests of the suite (`tests/e2e/postfix.rs`, with the
//! Postfix builder in the test kit, `mm_e2e::postfix`), ignored by a plain
//! `cargo test` because they need root, and run by `cargo xtask test` when
//! root. This command runs only them, with their progress lines shown:
//! `cargo test -p mm-e2e --test e2e -- --ignored --nocapture postfix::`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Runs the Postfix tests of the workspace at `root`; `keep` keeps each
/// test's directory (Postfix's configuration, queue and log, the spool, the
/// sink's files) to look at afterwards (`MM_E2E_KEEP=1`; the paths are
/// printed).
pub fn run(root: &Path, keep: bool) -> anyhow::Result<()> {
    if !mm_e2e::is_root() {
        bail!(
            "cargo xtask e2e must run as root: it adds the pipe's system user and starts \
             a private Postfix"
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let args = [
        "test",
        "-p",
        "mm-e2e",
        "--test",
        "e2e",
        "--",
        "--ignored",
        "--nocapture",
        "postfix::",
    ];
    println!("xtask e2e: cargo {}", args.join(" "));
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(root);
    if keep {
        cmd.env("MM_E2E_KEEP", "1");
    }
    let st = cmd.status().context("cannot run cargo")?;
    if !st.success() {
        bail!("the Postfix tests failed ({st})");
    }
    Ok(())
}
