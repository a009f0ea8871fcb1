//! Black-box checks of mm-enqueue's command-line manners.

use std::process::Command;

fn tool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mm-enqueue"))
}

#[test]
fn an_unknown_flag_is_a_usage_error_on_one_line() {
    let out = tool().arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("mm-enqueue: "), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn help_goes_to_stdout_with_examples() {
    let out = tool().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Examples:"), "{text}");
    assert!(text.contains("--spool"), "{text}");
}
