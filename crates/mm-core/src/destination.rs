//! Destinations remembered: a smarthost that cannot be reached is not tried
//! again for every entry.
//!
//! After a connection-level failure at a destination (it refused or dropped
//! the connection, never greeted, greeted with 421, failed TLS or AUTH), the
//! runner records it in `$SPOOL/.destinations/NAME` (JSON: failures in a
//! row, since when, until when, the last error). While the back-off lasts,
//! runners defer that destination's entries without trying (no attempt is
//! counted). Once it is over, one entry at a time probes (the runner that
//! creates `NAME.probe` first), the others wait a minute more. A success
//! removes the state; another failure doubles the back-off (1 minute, 2, 4
//! … at most 1 hour). The state
//! lives in the spool, so the next cron run and the runners of other hosts
//! honour it, unlike Postfix's in-memory one. Deferred entries are spread
//! over the minute after the back-off ends, not all due at once.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::error::{Error, ErrorKind, Result, io_err};
use crate::fsx;
use crate::spool::Spool;

/// The first back-off, doubled at each further failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(60);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A probe file older than this is a dead prober's: taken over.
const PROBE_STALE: Duration = Duration::from_secs(900);

/// What is remembered of a destination that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The destination: `host:port`.
    pub destination: String,
    /// Connection-level failures in a row.
    pub failures: u32,
    /// The first of them (Unix seconds).
    pub since: u64,
    /// No entry is tried before this (Unix seconds), but a probe.
    pub until: u64,
    /// The last failure.
    pub last_error: String,
}

/// The destinations' states of one spool.
#[derive(Clone, Debug)]
pub struct Destinations {
    dir: PathBuf,
}

/// A destination's file name: anything but letters, digits, `.`, `-` and
/// `:` becomes `_`.
fn file_name(destination: &str) -> String {
    destination
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-:".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The back-off after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

impl Destinations {
    /// The states of `spool` (`.destinations/`, created on demand).
    pub fn open(spool: &Spool) -> Result<Destinations> {
        Ok(Destinations {
            dir: spool.private_dir(".destinations")?,
        })
    }

    /// The states of `spool` for reading only (nothing created).
    pub fn view(spool: &Spool) -> Destinations {
        Destinations {
            dir: spool.root().join(".destinations"),
        }
    }

    fn path(&self, destination: &str) -> PathBuf {
        self.dir.join(file_name(destination))
    }

    /// The state of `destination`, if it failed last time.
    pub fn get(&self, destination: &str) -> Option<State> {
        let bytes = fs::read(self.path(destination)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every remembered state, by destination.
    pub fn all(&self) -> Vec<State> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<State> = rd
            .flatten()
            .filter(|e| !is_aux(e))
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        v.sort_by(|a: &State, b| a.destination.cmp(&b.destination));
        v
    }

    /// Whether `destination` is backed off at `now`: its state, if so.
    pub fn backed_off(&self, destination: &str, now: u64) -> Option<State> {
        self.get(destination).filter(|s| now < s.until)
    }

    /// Becomes the one runner that tries an entry of a backed-off
    /// destination (creates `NAME.probe`), or `false` if another is.
    pub fn try_probe(&self, destination: &str) -> bool {
        let probe = self.probe_path(destination);
        if let Ok(m) = fs::symlink_metadata(&probe)
            && m.modified()
                .ok()
                .and_then(|t| clock::now().duration_since(t).ok())
                .is_some_and(|age| age > PROBE_STALE)
        {
            let _ = fs::remove_file(&probe);
        }
        fsx::create_new(&probe).is_ok()
    }

    /// Ends a probe begun by [`try_probe`](Destinations::try_probe).
    pub fn end_probe(&self, destination: &str) {
        let _ = fs::remove_file(self.probe_path(destination));
    }

    fn probe_path(&self, destination: &str) -> PathBuf {
        self.dir.join(format!("{}.probe", file_name(destination)))
    }

    /// Records a connection-level failure: the back-off grows.
    pub fn failed(&self, destination: &str, error: &str, now: u64) -> Result<State> {
        let prev = self.get(destination);
        let failures = prev.as_ref().map_or(0, |s| s.failures) + 1;
        let state = State {
            destination: destination.to_string(),
            failures,
            since: prev.map_or(now, |s| s.since),
            until: now + backoff(failures).as_secs(),
            last_error: error.to_string(),
        };
        let path = self.path(destination);
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot encode a destination state: {e}"),
            )
        })?;
        let tmp = self.dir.join(format!(
            "{}.{}.tmp",
            file_name(destination),
            std::process::id()
        ));
        let _ = fs::remove_file(&tmp);
        fsx::write_and_rename(&tmp, &path, &bytes, false)?;
        Ok(state)
    }

    /// Records a success: the destination is no longer backed off.
    pub fn succeeded(&self, destination: &str) {
        let _ = fs::remove_file(self.path(destination));
    }

    /// Forgets `destination`'s state (a flush): `true` if there was one.
    pub fn clear(&self, destination: &str) -> Result<bool> {
        let path = self.path(destination);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("cannot remove", &path)(e)),
        }
    }
}

/// A remembered destination, as `mm-showq --destinations` shows it (the
/// JSON schema is in docs/json.md).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct View {
    /// Schema version.
    pub schema: u32,
    /// `host:port`.
    pub destination: String,
    /// Connection-level failures in a row.
    pub failures: u32,
    /// The first of them (RFC 3339).
    pub since: String,
    /// The end of the back-off (RFC 3339).
    pub until: String,
    /// Whether the back-off still lasts: no entry for it is tried.
    pub backed_off: bool,
    /// Whether a runner is probing it with one entry right now.
    pub probing: bool,
    /// The last failure.
    pub last_error: String,
    /// The end of the back-off (Unix seconds), for printing.
    #[serde(skip)]
    pub until_secs: u64,
}

impl Destinations {
    /// Every remembered destination at `now`, by name, for display.
    pub fn views(&self, now: u64) -> Vec<View> {
        self.all()
            .into_iter()
            .map(|s| View {
                schema: crate::report::SCHEMA,
                probing: self.probe_path(&s.destination).exists(),
                backed_off: now < s.until,
                since: clock::rfc3339(s.since),
                until: clock::rfc3339(s.until),
                until_secs: s.until,
                destination: s.destination,
                failures: s.failures,
                last_error: s.last_error,
            })
            .collect()
    }
}

/// A probe or temporary file beside the states.
fn is_aux(e: &fs::DirEntry) -> bool {
    let n = e.file_name();
    let n = n.to_string_lossy();
    n.ends_with(".probe") || n.ends_with(".tmp")
}

/// When an entry deferred by `state`'s back-off is due: within the minute
/// after it ends, spread by the entry's own id so they do not all come due
/// at once.
pub fn spread_due(state: &State, id_hash: u64) -> u64 {
    state.until + id_hash % 60
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_a_minute_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(2), Duration::from_secs(120));
        assert_eq!(backoff(3), Duration::from_secs(240));
        assert_eq!(backoff(7), Duration::from_secs(3600));
        assert_eq!(backoff(40), Duration::from_secs(3600));
    }

    #[test]
    fn a_failure_backs_off_a_success_forgets_and_one_probe_at_a_time() {
        let d = tempfile::tempdir().unwrap();
        let spool = Spool::open(d.path()).unwrap();
        let ds = Destinations::open(&spool).unwrap();
        let dest = "smarthost.example:25";
        assert!(ds.backed_off(dest, 1000).is_none());
        let s = ds.failed(dest, "connection refused", 1000).unwrap();
        assert_eq!((s.failures, s.until), (1, 1060));
        assert!(ds.backed_off(dest, 1059).is_some());
        assert!(ds.backed_off(dest, 1060).is_none());
        let s = ds.failed(dest, "timeout", 1100).unwrap();
        assert_eq!((s.failures, s.since, s.until), (2, 1000, 1220));
        assert_eq!(ds.all().len(), 1);
        assert!(ds.try_probe(dest));
        assert!(!ds.try_probe(dest), "a second prober at once");
        ds.end_probe(dest);
        assert!(ds.try_probe(dest));
        ds.end_probe(dest);
        assert!(ds.try_probe(dest));
        let v = &ds.views(1219)[0];
        assert_eq!((v.failures, v.backed_off, v.probing), (2, true, true));
        assert!(!ds.views(1220)[0].backed_off);
        ds.end_probe(dest);
        assert!(!ds.views(1220)[0].probing);
        ds.succeeded(dest);
        assert!(ds.get(dest).is_none());
        assert!(ds.all().is_empty());
        ds.failed(dest, "timeout", 1300).unwrap();
        assert!(ds.clear(dest).unwrap(), "a flush clears it");
        assert!(!ds.clear(dest).unwrap(), "nothing left to clear");
    }
}
