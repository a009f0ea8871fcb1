//! The `mm-hold` binary: everything is in the library, so xtask can render its man page.

fn main() -> std::process::ExitCode {
    mm_core::cli::run_main("mm-hold", mm_hold::run)
}
