//! The one place that reads the wall clock.
//!
//! Retry schedules, ages and ids all come from [`now`]. In a build with the
//! `test-hooks` feature (the workspace's test build: the tests crate turns it
//! on), tests can shift it with `MM_TEST_CLOCK_OFFSET` (seconds, may be
//! negative), so "five days later" can be tested without waiting, or pin it
//! with `MM_TEST_NOW` (Unix seconds) for golden outputs. Without the feature
//! (every release or per-package build) neither variable is read: [`now`] is
//! the system clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether this build reads the `MM_TEST_*` variables (the `test-hooks` feature).
pub const TEST_HOOKS: bool = cfg!(feature = "test-hooks");

#[cfg(feature = "test-hooks")]
mod hooks {
    use std::sync::OnceLock;

    pub(super) fn offset() -> i64 {
        static OFFSET: OnceLock<i64> = OnceLock::new();
        *OFFSET.get_or_init(|| {
            std::env::var("MM_TEST_CLOCK_OFFSET")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        })
    }

    pub(super) fn pinned() -> Option<u64> {
        static PINNED: OnceLock<Option<u64>> = OnceLock::new();
        *PINNED.get_or_init(|| {
            std::env::var("MM_TEST_NOW")
                .ok()
                .and_then(|v| v.parse().ok())
        })
    }
}

/// The current time.
#[allow(clippy::disallowed_methods)]
#[cfg(feature = "test-hooks")]
pub fn now() -> SystemTime {
    if let Some(p) = hooks::pinned() {
        return UNIX_EPOCH + Duration::from_secs(p);
    }
    let t = SystemTime::now();
    let off = hooks::offset();
    if off >= 0 {
        t + Duration::from_secs(off as u64)
    } else {
        t - Duration::from_secs(off.unsigned_abs())
    }
}

/// The current time.
#[allow(clippy::disallowed_methods)]
#[cfg(not(feature = "test-hooks"))]
pub fn now() -> SystemTime {
    SystemTime::now()
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The current time in seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    unix_secs(now())
}

/// A time given in seconds since the Unix epoch.
pub fn from_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// RFC 3339 rendering (UTC, seconds) of a Unix time.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs itself again with `MM_TEST_NOW` set: the clock follows it exactly
    /// when the feature is on (`cargo test -p mm-core` has it off,
    /// `cargo test --workspace` on, through the tests crate).
    #[test]
    fn mm_test_now_works_only_with_the_feature() {
        const PIN: u64 = 1_000_000_000;
        if std::env::var_os("MM_CLOCK_TEST_CHILD").is_some() {
            assert_eq!(now_secs() == PIN, TEST_HOOKS);
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "clock::tests::mm_test_now_works_only_with_the_feature",
            ])
            .env("MM_CLOCK_TEST_CHILD", "1")
            .env("MM_TEST_NOW", PIN.to_string())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "the child ran no test: {text}");
    }
}
