//! Command-line manners shared by every tool: a usage error is exit 64 and
//! one line on stderr naming the tool; `--help` goes to stdout with examples.

use mm_e2e::{TOOLS, Tool};

#[test]
fn an_unknown_flag_is_a_usage_error_on_one_line() {
    for &tool in TOOLS {
        let out = Tool::new(tool).arg("--no-such-flag").run();
        assert_eq!(out.code(), 64, "{tool}");
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
