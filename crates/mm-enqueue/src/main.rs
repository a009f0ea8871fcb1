//! The `mm-enqueue` binary: everything is in the library, so xtask can render its man page.

fn main() -> std::process::ExitCode {
    // Every failure but bad data is 75, so the MTA defers (lib.rs); a panic
    // (a bug) too, rather than Rust's 101, which an MTA would bounce on.
    mm_core::cli::run_main_mapped("mm-enqueue", mm_enqueue::run, mm_enqueue::exit_status)
}
