//! Lines to the system log: syslog(3)'s datagram socket (`/dev/log`),
//! facility mail, the program named in Postfix's `NAME/PROGRAM` form
//! (`mm/runq`) so that its log tools read them (`pflogsumm --syslog-name=mm`).
//! The daemon adds the time and the host.
//!
//! mm-runq sends its events here with `--syslog`; the admin tools send each
//! change they make (the record of a deletion, whose entry and history are
//! gone), like postsuper(1).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// syslog(3)'s LOG_ERR.
pub const ERR: u8 = 3;
/// syslog(3)'s LOG_WARNING.
pub const WARNING: u8 = 4;
/// syslog(3)'s LOG_NOTICE.
pub const NOTICE: u8 = 5;
/// syslog(3)'s LOG_INFO.
pub const INFO: u8 = 6;

/// The mail facility (LOG_MAIL).
const MAIL: u8 = 2;

/// A connection to the system log.
#[derive(Debug)]
pub struct Syslog {
    sock: UnixDatagram,
    tag: String,
}

impl Syslog {
    /// Connects to the system log as `tag` (`mm/runq`).
    pub fn connect(tag: &str) -> Result<Syslog> {
        let path = socket_path();
        let sock = UnixDatagram::unbound()
            .and_then(|s| s.connect(&path).map(|()| s))
            .map_err(|e| Error::io("cannot connect to syslog at", &path, e))?;
        Ok(Syslog {
            sock,
            tag: tag.to_string(),
        })
    }

    /// Sends `line` at `priority` ([`ERR`] … [`INFO`]); false if it could not.
    pub fn send(&self, priority: u8, line: &str) -> bool {
        let msg = format!(
            "<{}>{}[{}]: {line}",
            MAIL * 8 + priority,
            self.tag,
            std::process::id()
        );
        self.sock.send(msg.as_bytes()).is_ok()
    }
}

/// `/dev/log`; the tests listen on a socket of their own (`MM_TEST_SYSLOG`,
/// read only by a build with the `test-hooks` feature).
fn socket_path() -> PathBuf {
    #[cfg(feature = "test-hooks")]
    if let Some(p) = std::env::var_os("MM_TEST_SYSLOG") {
        return PathBuf::from(p);
    }
    PathBuf::from("/dev/log")
}
