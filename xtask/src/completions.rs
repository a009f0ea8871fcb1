//! `cargo xtask completions [--out DIR]`: shell completions for every tool.
//!
//! Generated from the same clap definitions as `--help` and the man pages, for
//! bash, zsh and fish, into `target/completions` by default. They are build
//! output for packagers, not committed.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap_complete::Shell;

use crate::TOOLS;

/// The shells completions are written for.
const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes every tool's completions into `out` (default `ROOT/target/completions`).
pub fn run(root: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| root.join("target").join("completions"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut written = 0;
    for tool in TOOLS {
        let mut cmd = (tool.command)();
        for shell in SHELLS {
            clap_complete::generate_to(shell, &mut cmd, tool.name, &out)
                .with_context(|| format!("cannot write {shell} completions of {}", tool.name))?;
            written += 1;
        }
    }
    println!(
        "wrote {written} files into {}: TOOL.bash, _TOOL (zsh), TOOL.fish",
        out.display()
    );
    Ok(())
}
