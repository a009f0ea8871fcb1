//! The one place that reads the wall clock.
//!
//! Retry schedules, ages and ids all come from [`now`]. Tests can shift it
//! with `MM_TEST_CLOCK_OFFSET` (seconds, may be negative), so "five days
//! later" can be tested without waiting, or pin it with `MM_TEST_NOW` (Unix
//! seconds) for golden outputs. Neither is meant for production use.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn offset() -> i64 {
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("MM_TEST_CLOCK_OFFSET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

fn pinned() -> Option<u64> {
    static PINNED: OnceLock<Option<u64>> = OnceLock::new();
    *PINNED.get_or_init(|| {
        std::env::var("MM_TEST_NOW")
            .ok()
            .and_then(|v| v.parse().ok())
    })
}

/// The current time.
#[allow(clippy::disallowed_methods)]
pub fn now() -> SystemTime {
    if let Some(p) = pinned() {
        return UNIX_EPOCH + Duration::from_secs(p);
    }
    let t = SystemTime::now();
    let off = offset();
    if off >= 0 {
        t + Duration::from_secs(off as u64)
    } else {
        t - Duration::from_secs(off.unsigned_abs())
    }
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

/// "3h 2m" style age of a Unix time, rounded to seconds; "0s" for the future.
pub fn age(secs: u64, now: u64) -> String {
    humantime::format_duration(Duration::from_secs(now.saturating_sub(secs))).to_string()
}

/// RFC 3339 rendering (UTC, seconds) of a Unix time.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(from_secs(secs)).to_string()
}
