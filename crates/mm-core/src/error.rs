//! Errors of the core, each with the kind a caller branches on.
//!
//! The kind decides the exit status of every tool (sysexits(3)), in one table:
//! [`ErrorKind::exit_code`]. The distinction that matters most is between a
//! transient local failure (75, `EX_TEMPFAIL`: an MTA piping into
//! `mm-enqueue` keeps the message and tries again) and bad input (65,
//! `EX_DATAERR`: the MTA bounces it). When in doubt a local failure is
//! transient: deferring costs a retry, bouncing loses mail.

use std::fmt;
use std::io;
use std::path::Path;

/// sysexits(3) codes used by the tools.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Command line usage error.
    pub const USAGE: u8 = 64;
    /// Input data was incorrect (an address, an oversize message, a corrupt entry).
    pub const DATAERR: u8 = 65;
    /// An input file (entry, message file) did not exist or was not readable.
    pub const NOINPUT: u8 = 66;
    /// Internal software error: a bug.
    pub const SOFTWARE: u8 = 70;
    /// An error occurred while doing I/O on some file.
    pub const IOERR: u8 = 74;
    /// Temporary failure: the caller should try again later.
    pub const TEMPFAIL: u8 = 75;
    /// Permission denied.
    pub const NOPERM: u8 = 77;
    /// Configuration error.
    pub const CONFIG: u8 = 78;
}

/// What went wrong, as far as a caller needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line is wrong.
    Usage,
    /// Bad input: an address, a queue name, a message that is too large.
    Invalid,
    /// An entry file that cannot be decoded.
    Corrupt,
    /// The thing named does not exist.
    NotFound,
    /// The process lacks a permission on a path of the spool.
    Permission,
    /// A transient local failure: disk full, I/O error, spool missing. Retry later.
    Temporary,
    /// The entry is held by a live runner.
    Busy,
    /// A claim is no longer ours: recovery took it back, our lease was lost
    /// (the runner fenced itself), or a stop abandoned it. Nothing may be
    /// written to it or sent for it any more.
    NotOurs,
    /// A setting is wrong (a flag combination, a URL).
    Config,
    /// A bug: an invariant of the core did not hold.
    Internal,
}

impl ErrorKind {
    /// The kind of an I/O error, by its errno: a missing permission is
    /// [`ErrorKind::Permission`], a missing file [`ErrorKind::NotFound`],
    /// everything else (ENOSPC, EIO, EROFS, ...) [`ErrorKind::Temporary`].
    pub fn of_io(kind: io::ErrorKind) -> ErrorKind {
        match kind {
            io::ErrorKind::PermissionDenied => ErrorKind::Permission,
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Temporary,
        }
    }

    /// The sysexits code a tool exits with for this kind.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::Invalid | ErrorKind::Corrupt => exit::DATAERR,
            ErrorKind::NotFound => exit::NOINPUT,
            ErrorKind::Permission => exit::NOPERM,
            ErrorKind::Temporary | ErrorKind::Busy | ErrorKind::NotOurs => exit::TEMPFAIL,
            ErrorKind::Config => exit::CONFIG,
            ErrorKind::Internal => exit::SOFTWARE,
        }
    }
}

/// The exit status of a batch (mm-recover, mm-unbad, a cron run of mm-runq)
/// that kept going past failing items, given the kinds of those failures:
/// 0 without any, else the highest of their codes, so that a failure worth
/// retrying (75) wins over a missing entry (66).
pub fn batch_exit_code(failures: impl IntoIterator<Item = ErrorKind>) -> u8 {
    failures
        .into_iter()
        .map(ErrorKind::exit_code)
        .max()
        .unwrap_or(exit::OK)
}

/// An error of the core: a kind, a message naming the path or entry, and the cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<io::Error>,
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An I/O error on `path`, doing `what` ("cannot create", "cannot rename ..."), classified
    /// by its errno ([`ErrorKind::of_io`]).
    pub fn io(what: impl fmt::Display, path: &Path, err: io::Error) -> Error {
        Error {
            kind: ErrorKind::of_io(err.kind()),
            message: format!("{what} {}", path.display()),
            source: Some(err),
        }
    }

    /// The same error with another kind (e.g. a missing spool is temporary for mm-enqueue).
    pub fn with_kind(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The underlying I/O error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        self.source.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {}", self.message, strip_os_error(e)),
            None => f.write_str(&self.message),
        }
    }
}

/// `io::Error`'s display adds " (os error 28)"; admins read the text, not the number.
fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

// The cause is part of the message (one line, `what path: why`), so it is not
// also returned by `source()`: anyhow's `{:#}` would print it twice.
impl std::error::Error for Error {}

/// Shorthand for `Error::io` in `map_err`.
pub(crate) fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(what, path, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_sysexits() {
        assert_eq!(ErrorKind::Temporary.exit_code(), 75);
        assert_eq!(ErrorKind::Invalid.exit_code(), 65);
        assert_eq!(ErrorKind::Permission.exit_code(), 77);
        assert_eq!(ErrorKind::NotFound.exit_code(), 66);
    }

    #[test]
    fn a_batch_exits_with_its_most_urgent_failure() {
        assert_eq!(batch_exit_code([]), 0);
        assert_eq!(batch_exit_code([ErrorKind::NotFound]), 66);
        assert_eq!(
            batch_exit_code([ErrorKind::NotFound, ErrorKind::Busy, ErrorKind::NotFound]),
            75
        );
    }

    #[test]
    fn io_errors_are_classified_by_errno() {
        let p = Path::new("/x");
        let e = Error::io(
            "cannot write",
            p,
            io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(e.kind(), ErrorKind::Temporary);
        assert_eq!(e.to_string(), "cannot write /x: No space left on device");
        let e = Error::io(
            "cannot write",
            p,
            io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(e.kind(), ErrorKind::Permission);
    }
}
