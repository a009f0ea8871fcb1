//! Command-line manners shared by every tool: a usage error is one line on
//! stderr naming the tool, and exit 64, except for mm-enqueue, which exits 75
//! (`EX_TEMPFAIL`) so that an MTA defers rather than bounces on a typo in its
//! configuration; `--help` and `--version` go to stdout and exit 0.

use mm_e2e::{TOOLS, Tool};

/// The exit status of a usage error.
fn usage_status(tool: &str) -> i32 {
    match tool {
        "mm-enqueue" => 75,
        _ => 64,
    }
}

#[test]
fn an_unknown_flag_is_a_usage_error_on_one_line() {
    for &tool in TOOLS {
        let out = Tool::new(tool).arg("--no-such-flag").run();
        assert_eq!(out.code(), usage_status(tool), "{tool}");
        let err = out.stderr_str();
        assert_eq!(err.lines().count(), 1, "{tool}: {err}");
        assert!(err.starts_with(&format!("{tool}: ")), "{err}");
        assert!(out.stdout_str().is_empty(), "{tool}");
    }
}

#[test]
fn help_goes_to_stdout_with_examples() {
    for &tool in TOOLS {
        let out = Tool::new(tool).arg("--help").run();
        assert_eq!(out.code(), 0, "{tool}");
        let text = out.stdout_str();
        assert!(text.contains("Examples:"), "{tool}: {text}");
        assert!(text.contains("--spool"), "{tool}: {text}");
    }
}

#[test]
fn version_goes_to_stdout_and_exits_0() {
    for &tool in TOOLS {
        let out = Tool::new(tool).arg("--version").run();
        assert_eq!(out.code(), 0, "{tool}");
        assert!(out.stdout_str().starts_with(tool), "{tool}: {out}");
    }
}
