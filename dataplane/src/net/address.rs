//! Endpoint addresses: `host[:port]` as resources write them, split into the host to connect
//! to, the port and the TLS server name. One parser for every endpoint kind.

use std::net::{IpAddr, Ipv6Addr};

use rustls::pki_types::ServerName;

/// An address that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {input:?}: {reason}")]
pub struct AddressError {
    /// The address as written.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Splits `host:port` into the host to connect to, the port, and the TLS server name.
///
/// Accepts `name`, `name:port`, `1.2.3.4:port`, `[::1]:port`, `[::1]` and a bare `::1`; the
/// port is `default_port` when absent. The host comes back without brackets. An IP address
/// becomes [`ServerName::IpAddress`] (the certificate must list it as an IP subjectAltName),
/// anything else must be a valid DNS name.
///
/// # Errors
///
/// [`AddressError`] for an empty host, a bad port (0, not a number, above
/// 65,535), unbalanced brackets, or a host that is neither an IP address nor a DNS name.
pub fn parse_host_port(
    s: &str,
    default_port: u16,
) -> Result<(String, u16, ServerName<'static>), AddressError> {
    let invalid = |reason| AddressError {
        input: s.to_owned(),
        reason,
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid("'[' without ']'"))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(invalid("not an IPv6 address in brackets"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid("text after ']' that is not ':port'"))?,
            ),
        };
        (host, port)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s, None)
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(invalid("port 0")),
            Ok(port) if p.bytes().all(|b| b.is_ascii_digit()) => port,
            _ => return Err(invalid("the port is not a number from 1 to 65535")),
        },
    };
    if host.is_empty() {
        return Err(invalid("empty host"));
    }
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::from(ip),
        Err(_) => ServerName::try_from(host.to_owned())
            .map_err(|_| invalid("the host is neither an IP address nor a DNS name"))?,
    };
    Ok((host.to_owned(), port, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port() {
        let ip = |s: &str| ServerName::from(s.parse::<IpAddr>().unwrap());
        let dns = |s: &str| ServerName::try_from(s.to_owned()).unwrap();
        for (input, host, port, name) in [
            (
                "broker.example.com:8883",
                "broker.example.com",
                8883,
                dns("broker.example.com"),
            ),
            ("broker", "broker", 1883, dns("broker")),
            ("localhost:1", "localhost", 1, dns("localhost")),
            ("10.0.0.1:65535", "10.0.0.1", 65535, ip("10.0.0.1")),
            ("10.0.0.1", "10.0.0.1", 1883, ip("10.0.0.1")),
            ("[::1]:8883", "::1", 8883, ip("::1")),
            ("[2001:db8::7]", "2001:db8::7", 1883, ip("2001:db8::7")),
            ("::1", "::1", 1883, ip("::1")),
        ] {
            let (h, p, n) = parse_host_port(input, 1883).unwrap();
            assert_eq!((h.as_str(), p, n), (host, port, name), "{input}");
        }
        for input in [
            "",
            ":1883",
            "host:",
            "host:0",
            "host:65536",
            "host:+1",
            "host:x",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[host]:1",
            "bad host:1",
            "a:b:c",
            "[]:1",
        ] {
            match parse_host_port(input, 1883) {
                Err(AddressError { input: i, .. }) => assert_eq!(i, input),
                other => panic!("{input:?}: {other:?}"),
            }
        }
    }
}
