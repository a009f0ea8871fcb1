//! The spool: a root directory holding one directory per queue.
//!
//! ```text
//! $SPOOL/                      root, made by the admin (2770, group shared by MTA and runners)
//!   .runners/TOKEN             one record per live runner: who holds claims (see claim.rs)
//!   .locks/QUEUE.K-N.HOST.lock flock of the runner of one queue, slice and host (cron singleton)
//!   QUEUE/                     a queue, created on demand, name [a-z][a-z0-9-]*
//!   QUEUE/ID.pck               the drop-in: an admin may mv an entry here; runners adopt it
//!   QUEUE/BB/                  bucket BB = first byte of the entry's hash, two hex digits
//!   QUEUE/BB/ID.pck …          the entries (see id.rs for the names)
//! ```
//!
//! With 256 buckets a queue of a million entries keeps about 3,900 names per
//! directory, and a directory never stays bloated after a backlog (seed 004).
//! The root is never created by a tool: a missing spool means a broken or
//! unmounted installation, which is temporary for an MTA (exit 75).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::id::FileName;

/// Default spool root.
pub const DEFAULT_ROOT: &str = "/var/spool/mm";

/// A validated queue name: `[a-z][a-z0-9-]*`, at most 32 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueName(String);

impl QueueName {
    /// Validates a name typed by a user or found in the spool.
    pub fn new(s: &str) -> Result<QueueName> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 32
            && b[0].is_ascii_lowercase()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(QueueName(s.to_string()))
        } else {
            Err(Error::new(
                ErrorKind::Invalid,
                format!("bad queue name {s:?}: want [a-z][a-z0-9-]*, at most 32 characters"),
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for QueueName {
    type Err = Error;
    fn from_str(s: &str) -> Result<QueueName> {
        QueueName::new(s)
    }
}

/// The well-known queues.
pub mod queues {
    /// Where mm-enqueue puts mail by default.
    pub const IN: &str = "in";
    /// Outgoing mail, delivered by `mm-runq -q out`.
    pub const OUT: &str = "out";
    /// Bounce records of failed recipients.
    pub const BOUNCES: &str = "bounces";
    /// Entries a pipeline stage refused.
    pub const SHUNT: &str = "shunt";
    /// Entries that cannot be decoded or that keep killing their runner.
    pub const BAD: &str = "bad";
}

/// A spool root.
#[derive(Clone, Debug)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    /// Opens the spool at `root`, which must be an existing directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Spool> {
        let root = root.into();
        match std::fs::metadata(&root) {
            Ok(m) if m.is_dir() => Ok(Spool { root }),
            Ok(_) => Err(Error::new(
                ErrorKind::Config,
                format!("spool {} is not a directory", root.display()),
            )),
            Err(e) => Err(Error::io("cannot use spool", &root, e).with_kind(ErrorKind::Temporary)),
        }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A queue of this spool (its directory need not exist yet).
    pub fn queue(&self, name: &QueueName) -> Queue {
        Queue {
            name: name.clone(),
            dir: self.root.join(name.as_str()),
        }
    }

    /// A queue by a name typed by a user.
    pub fn queue_named(&self, name: &str) -> Result<Queue> {
        Ok(self.queue(&QueueName::new(name)?))
    }

    /// A queue named by a user that must be there: its directory exists, or
    /// it is one of the well-known queues (created on demand, so an empty
    /// one may have no directory yet). Anything else is a typo, not an empty
    /// queue: [`ErrorKind::NotFound`], naming the queues there are.
    pub fn existing_queue(&self, name: &str) -> Result<Queue> {
        let q = self.queue_named(name)?;
        let known = [
            queues::IN,
            queues::OUT,
            queues::BOUNCES,
            queues::SHUNT,
            queues::BAD,
        ];
        if known.contains(&name) || q.dir().is_dir() {
            return Ok(q);
        }
        let there: Vec<String> = self
            .queues()
            .map(|v| v.iter().map(|q| q.name().to_string()).collect())
            .unwrap_or_default();
        Err(Error::new(
            crate::ErrorKind::NotFound,
            format!(
                "no queue {name} in {} (there: {})",
                self.root.display(),
                if there.is_empty() {
                    "none".to_string()
                } else {
                    there.join(", ")
                }
            ),
        ))
    }

    /// The queues that exist, by name.
    pub fn queues(&self) -> Result<Vec<Queue>> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.root)
            .map_err(|e| Error::io("cannot list spool", &self.root, e))?;
        for de in rd.flatten() {
            let Some(name) = de.file_name().to_str().and_then(|s| QueueName::new(s).ok()) else {
                continue;
            };
            if de.file_type().is_ok_and(|t| t.is_dir()) {
                out.push(self.queue(&name));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A private directory of the spool (`.runners`, `.locks`), created on demand.
    pub fn private_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.root.join(name);
        fsx::create_dir(&p)?;
        Ok(p)
    }
}

/// One queue: a directory of buckets.
#[derive(Clone, Debug)]
pub struct Queue {
    name: QueueName,
    dir: PathBuf,
}

impl Queue {
    /// Its name.
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of bucket `b`.
    pub fn bucket_dir(&self, b: u8) -> PathBuf {
        self.dir.join(format!("{b:02x}"))
    }

    /// Where a file of this name lives (in its bucket).
    pub fn path(&self, name: &FileName) -> PathBuf {
        let mut p = self.bucket_dir(name.id.bucket());
        p.push(name.to_string());
        p
    }

    /// Creates the queue directory and the bucket of `b` if needed.
    pub fn ensure_bucket(&self, b: u8) -> Result<PathBuf> {
        let bd = self.bucket_dir(b);
        // symlink_metadata: a bucket that is a link is not ours (create_dir refuses it).
        if !std::fs::symlink_metadata(&bd).is_ok_and(|m| m.is_dir()) {
            fsx::create_dir(&self.dir)?;
            fsx::create_dir(&bd)?;
        }
        Ok(bd)
    }
}

/// The queue the entry file at `path` is in, from the path alone: the
/// directory above its bucket (a name [`crate::scan::bucket_of`] accepts),
/// or the directory of a file in the drop-in; `None` when that is no valid
/// queue name.
pub fn queue_of_path(path: &Path) -> Option<QueueName> {
    fn name_of(p: Option<&Path>) -> Option<&str> {
        p.and_then(|d| d.file_name()).and_then(|n| n.to_str())
    }
    let parent = path.parent();
    let in_bucket = name_of(parent).is_some_and(|n| crate::scan::bucket_of(n.as_bytes()).is_some());
    let dir = if in_bucket {
        name_of(parent.and_then(Path::parent))
    } else {
        name_of(parent)
    };
    dir.and_then(|q| QueueName::new(q).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_validated() {
        for ok in ["in", "out", "bad", "retry-2", "a"] {
            QueueName::new(ok).unwrap();
        }
        for bad in [
            "",
            "..",
            "a/b",
            "In",
            "1st",
            "a b",
            "a\0",
            "-x",
            &"x".repeat(33),
        ] {
            assert!(QueueName::new(bad).is_err(), "{bad:?}");
        }
    }
}
