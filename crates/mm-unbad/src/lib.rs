//! mm-unbad (stub).

/// Arguments.
#[derive(Debug, clap::Parser)]
#[command(name = "mm-unbad", version)]
pub struct Cli {}

/// Runs.
pub fn run(_cli: Cli) -> anyhow::Result<u8> {
    Ok(0)
}
