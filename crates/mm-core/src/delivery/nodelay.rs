//! `TCP_NODELAY` on the runner's SMTP connections.
//!
//! lettre 0.11's `SmtpConnection::message` writes the message and then, in a
//! second write, the closing `"\r\n.\r\n"`. With Nagle's algorithm on, the
//! kernel holds that 5-byte write until the server has acknowledged the
//! message, and a server delays that acknowledgement (40 ms on Linux) because
//! it has nothing to say before the dot arrives: one message per ~45 ms per
//! connection whatever the speed of both ends (measured: 22 messages a second
//! against Postfix's smtp-sink, which takes 5,000 from smtp-source).
//!
//! lettre neither sets `TCP_NODELAY` nor exposes its socket. The option
//! belongs to the socket, not to a descriptor, so [`set_on_all_sockets`]
//! takes a duplicate of each socket descriptor of this process with
//! pidfd_getfd(2) (Linux 5.6) and sets it there. The runner's only sockets
//! are its SMTP connections; setting the option on one twice is harmless.
//! Where this cannot be done (an older kernel, a seccomp filter, no /proc)
//! delivery works the same, only slower.

use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

/// Sets `TCP_NODELAY` on every TCP socket of this process. Returns how many
/// sockets it was set on (0 where it cannot be done).
pub fn set_on_all_sockets() -> usize {
    let Ok(pidfd) = pidfd_open(getpid(), PidfdFlags::empty()) else {
        return 0;
    };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut set = 0;
    for entry in dir.flatten() {
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|target| {
            target
                .as_os_str()
                .as_encoded_bytes()
                .starts_with(b"socket:")
        });
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // A socket that is not TCP refuses the option: nothing to do there.
        if let Ok(dup) = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty())
            && rustix::net::sockopt::set_tcp_nodelay(&dup, true).is_ok()
        {
            set += 1;
        }
    }
    set
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_connected_socket_gets_tcp_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!stream.nodelay().unwrap());
        assert!(super::set_on_all_sockets() >= 1);
        assert!(stream.nodelay().unwrap(), "TCP_NODELAY was not set");
    }
}
