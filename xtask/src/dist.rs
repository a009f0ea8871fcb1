//! `cargo xtask dist`: the binaries that ship, each built with only what it
//! uses.
//!
//! `cargo build --workspace` unifies features: with the test kit in the
//! workspace every tool gets mm-core's `test-hooks`, and with mm-runq in it
//! every tool links lettre and rustls (mm-enqueue was 35 MB). Here each
//! tool is built alone, `cargo build --profile dist -p TOOL`, one cargo run
//! per package, so a tool's features are its own; the `dist` profile
//! (workspace `Cargo.toml`: release, fat LTO, one codegen unit, symbols
//! stripped) makes them small. The binaries land in `target/dist/`, where
//! the benchmark runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, ensure};

use crate::TOOLS;

/// Builds every tool alone with the `dist` profile; returns where they are.
pub fn build(root: &Path, quiet: bool) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    for tool in TOOLS {
        if !quiet {
            println!("xtask dist: {}", tool.name);
        }
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root)
            .args(["build", "--quiet", "--profile", "dist", "-p", tool.name]);
        let st = cmd.status().context("cannot run cargo build")?;
        ensure!(
            st.success(),
            "cargo build --profile dist -p {} failed",
            tool.name
        );
    }
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| root.join(d))
        .unwrap_or_else(|| root.join("target"))
        .join("dist");
    for tool in TOOLS {
        let bin = dir.join(tool.name);
        ensure!(bin.is_file(), "{} was not built", bin.display());
    }
    Ok(dir)
}

/// `cargo xtask dist`: builds, then lists each binary and its size.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let dir = build(root, false)?;
    for tool in TOOLS {
        let bin = dir.join(tool.name);
        let len = std::fs::metadata(&bin)
            .with_context(|| format!("cannot stat {}", bin.display()))?
            .len();
        println!("{:>8} KiB  {}", len / 1024, bin.display());
    }
    Ok(())
}
