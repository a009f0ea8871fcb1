//! A TCP relay that delays every byte by a fixed time in each direction: a
//! network with a real round-trip time between an SMTP client and a server
//! on the loopback, for the benchmark's delay rows (this kernel has no
//! netem qdisc to do it with `tc`).
//!
//! Each accepted connection gets its own connection to the target and, per
//! direction, a reader thread that stamps every chunk it reads with its
//! arrival time and a writer thread that sends the chunk on at arrival plus
//! the delay. Chunks keep their order, and a chunk read while an earlier one
//! waits is not held back further: the delay is a latency, not a bandwidth
//! limit. A half-close (end of stream) is passed on after the delay too.
//! Both sockets have `TCP_NODELAY`, so the relay adds no Nagle waits of its
//! own. [`DelayRelay::measure_round_trip`] measures what it really adds.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A running relay from a loopback port to `target`; stopped on drop.
pub struct DelayRelay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl DelayRelay {
    /// Listens on a free port of 127.0.0.1 and relays every connection to
    /// `target`, each direction's bytes held for `one_way`.
    pub fn start(target: SocketAddr, one_way: Duration) -> std::io::Result<DelayRelay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            if let Ok(server) = TcpStream::connect(target) {
                                let _ = connect_pair(client, server, one_way);
                            }
                        }
                        // Polled, so that a drop ends the thread.
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(DelayRelay {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The round-trip time a relay with this `one_way` delay really gives,
    /// measured: the median of `samples` one-byte echoes through a relay to
    /// an echo server of its own.
    pub fn measure_round_trip(one_way: Duration, samples: usize) -> std::io::Result<Duration> {
        let echo = TcpListener::bind("127.0.0.1:0")?;
        let echo_addr = echo.local_addr()?;
        let server = std::thread::spawn(move || -> std::io::Result<()> {
            let (mut s, _) = echo.accept()?;
            s.set_nodelay(true)?;
            let mut b = [0u8; 1];
            while s.read(&mut b)? == 1 {
                s.write_all(&b)?;
            }
            Ok(())
        });
        let relay = DelayRelay::start(echo_addr, one_way)?;
        let mut c = TcpStream::connect(relay.addr())?;
        c.set_nodelay(true)?;
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut times = Vec::with_capacity(samples);
        let mut b = [0u8; 1];
        for _ in 0..samples.max(1) {
            let t = Instant::now();
            c.write_all(b"x")?;
            c.read_exact(&mut b)?;
            times.push(t.elapsed());
        }
        drop(c);
        let _ = server.join();
        times.sort();
        Ok(times[times.len() / 2])
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// Relays both directions between `client` and `server`.
fn connect_pair(client: TcpStream, server: TcpStream, one_way: Duration) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (c2, s2) = (client.try_clone()?, server.try_clone()?);
    direction(client, s2, one_way);
    direction(server, c2, one_way);
    Ok(())
}

/// One direction: `from`'s bytes written to `to`, each chunk at its
/// arrival time plus `delay`. Detached threads: they end with the stream.
fn direction(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    // `None` is the end of the stream.
    let (tx, rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send((Instant::now() + delay, None));
                    return;
                }
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, Some(buf[..n].to_vec())))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).is_err() {
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relay adds its delay each way (a round trip of at least twice
    /// it) and not much more: measured, as the benchmark reports it.
    #[test]
    fn delays_each_direction_by_its_time() {
        let one_way = Duration::from_millis(1);
        let rtt = DelayRelay::measure_round_trip(one_way, 30).expect("relay works");
        assert!(rtt >= 2 * one_way, "round trip {rtt:?} under 2 ms");
        // Generous: the machine is shared; a relay that delayed twice (or
        // slept in 10 ms ticks) would be far above.
        assert!(rtt < Duration::from_millis(8), "round trip {rtt:?}");
    }

    /// Bytes arrive whole and in order, and the end of the stream is
    /// passed on.
    #[test]
    fn passes_bytes_in_order_and_the_end() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = DelayRelay::start(server.local_addr().unwrap(), Duration::from_millis(1))
            .expect("relay starts");
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            let addr = relay.addr();
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                c.write_all(&sent).unwrap();
                c.shutdown(Shutdown::Write).unwrap();
            })
        };
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes changed on the way");
    }
}
