//! The `mm-runq` binary: everything is in the library, so xtask can render its man page.

fn main() -> std::process::ExitCode {
    // The hidden mode in which mm-runq guards one pipeline stage (guard.rs).
    if let Some(code) = mm_runq::guard::from_args() {
        return code;
    }
    mm_core::cli::run_main("mm-runq", mm_runq::run)
}
