//! mm-showq (stub).

/// Arguments.
#[derive(Debug, clap::Parser)]
#[command(name = "mm-showq", version)]
pub struct Cli {}

/// Runs.
pub fn run(_cli: Cli) -> anyhow::Result<u8> {
    Ok(0)
}
