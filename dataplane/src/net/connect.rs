//! Opening TCP connections: name resolution off the event loop, a connect deadline per address,
//! and the jittered exponential backoff between attempts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use monoio::net::TcpStream;

use crate::runtime::sync::off_loop;

/// First reconnect delay; doubles per failure up to [`BACKOFF_MAX`], with full jitter.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// TCP connect timeout, per address.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `host` (off the event loop, unless it is an address already) and connects to the
/// first address that answers within [`CONNECT_TIMEOUT`].
///
/// # Errors
/// The last address's error, `NotFound` when the name has none, `TimedOut`.
pub(crate) async fn connect(host: &str, port: u16) -> std::io::Result<TcpStream> {
    // Name resolution blocks (up to the resolver's timeouts).
    let addrs: Vec<SocketAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            let host = host.to_owned();
            off_loop(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter)).await?
        }
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match monoio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect_addr(addr)).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = e,
            Err(_) => {
                last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
            }
        }
    }
    Err(last)
}

/// Jittered exponential backoff: the n-th delay is uniform in `[cap/2, cap]`, where `cap` is
/// [`BACKOFF_BASE`] doubled n times, at most [`BACKOFF_MAX`].
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    attempt: u32,
}

impl Backoff {
    /// The next delay.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cap = BACKOFF_BASE
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(fastrand::u64(ms / 2..=ms))
    }

    /// Starts over (a connection stayed up).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(
            first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE,
            "{first:?}"
        );
        for _ in 0..20 {
            assert!(b.next_delay() <= BACKOFF_MAX);
        }
        let late = b.next_delay();
        assert!(late >= BACKOFF_MAX / 2, "{late:?}");
        b.reset();
        assert!(b.next_delay() <= BACKOFF_BASE);
    }
}
