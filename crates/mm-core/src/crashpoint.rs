//! Test-only crash points: `MM_TEST_CRASH_AT=NAME` makes the process die with
//! SIGKILL semantics (abort, no unwinding, no cleanup) when it reaches the
//! named step of its file protocol, so the tests can show that every step is
//! recoverable with nothing lost. Only a build with the `test-hooks` feature
//! reads the variable (it then costs one relaxed load per point); in every
//! other build (release, per-package) [`here`] is an empty function.
//!
//! The points: `enqueue-after-write`, `enqueue-after-fsync`,
//! `enqueue-after-rename` (before the directory fsync), `runner-after-claim`,
//! `runner-after-record` (a per-recipient record made durable),
//! `runner-before-finish` (all delivered, entry not yet removed),
//! `hold-after-save` (mm-hold saved its record, the rename to `ID.hld` not
//! yet done), `delete-after-publish` (mm-delete --bounce wrote the bounce
//! record, the entry not yet removed).

/// Dies here if `MM_TEST_CRASH_AT` names this point.
#[cfg(feature = "test-hooks")]
pub fn here(point: &str) {
    use std::sync::OnceLock;
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| {
        std::env::var("MM_TEST_CRASH_AT")
            .ok()
            .filter(|v| !v.is_empty())
    });
    if at.as_deref() == Some(point) {
        // A crash, as a kill -9 would: no destructors, no flush.
        std::process::abort();
    }
}

/// Does nothing: this build has no test hooks.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn here(_point: &str) {}
