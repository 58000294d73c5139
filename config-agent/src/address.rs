//! Endpoint addresses as resources write them, `host[:port][/path]`: the one parser, used by the
//! agent's validation and by the data plane (which adds the TLS server name), so that an address
//! validates exactly when the data plane can connect to it.
//!
//! The host is a DNS name, an IPv4 address, an IPv6 address in brackets (`[::1]:8883`) or a
//! bare IPv6 address without port or path (`::1`). A path is the WebSocket upgrade's request
//! target (`broker.example.com:443/mqtt`), allowed only where the caller says so.

use std::net::{IpAddr, Ipv6Addr};

use rustls_pki_types::ServerName;

/// An address split into its parts, borrowing from the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address<'a> {
    /// The host, without brackets: a DNS name or an IP address.
    pub host: &'a str,
    /// The port, when one was written (1 to 65535).
    pub port: Option<u16>,
    /// The path from its `/` on (`/mqtt`), when one was written and allowed.
    pub path: Option<&'a str>,
}

impl Address<'_> {
    /// `host:port` as a `Host` header or a URL writes it, with an IPv6 address in brackets.
    #[must_use]
    pub fn authority(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

/// What is wrong with an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    /// Nothing before the port or path.
    #[error("empty host")]
    EmptyHost,
    /// `[` without `]`.
    #[error("'[' without ']'")]
    UnclosedBracket,
    /// Brackets around something that is not an IPv6 address.
    #[error("not an IPv6 address in brackets")]
    NotIpv6InBrackets,
    /// Text after `]` that is neither `:port` nor a path.
    #[error("text after ']' that is not ':port'")]
    AfterBracket,
    /// Port 0.
    #[error("port 0")]
    PortZero,
    /// A port that is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    /// The host is neither an IP address nor a valid DNS name.
    #[error("the host is neither an IP address nor a DNS name")]
    BadHost,
    /// A path where none is allowed.
    #[error("a path is only allowed when mqttSettings.protocol is WebSockets")]
    PathNotAllowed,
    /// A path with a space, a control character, non-ASCII or a fragment (`#`).
    #[error("the path holds a space, a control character, non-ASCII or '#'")]
    BadPath,
}

/// An address that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {input:?}: {problem}")]
pub struct AddressError {
    /// The address as written.
    pub input: String,
    /// What is wrong with it.
    pub problem: AddressProblem,
}

/// Splits `host[:port][/path]`. `allow_path`: whether a path may follow (MQTT over
/// WebSockets); the port is `None` when absent, for the caller to default or require.
///
/// # Errors
/// [`AddressError`] with the [`AddressProblem`]: an empty host, unbalanced brackets, a bad port
/// (0, not a number, above 65,535), a host that is neither an IP address nor a DNS name, a path
/// where none is allowed, or a path that cannot go in a request line.
pub fn parse_address(s: &str, allow_path: bool) -> Result<Address<'_>, AddressError> {
    let invalid = |problem| AddressError {
        input: s.to_owned(),
        problem,
    };
    // The path starts at the first '/' (after the brackets of an IPv6 address).
    let path_at = match s.strip_prefix('[') {
        Some(rest) => rest.find(']').and_then(|close| {
            let after = close + 2;
            s[after..].find('/').map(|i| after + i)
        }),
        None => s.find('/'),
    };
    let (host_port, path) = match path_at {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    if let Some(path) = path {
        if !allow_path {
            return Err(invalid(AddressProblem::PathNotAllowed));
        }
        if !path.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
            return Err(invalid(AddressProblem::BadPath));
        }
    }
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| invalid(AddressProblem::UnclosedBracket))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(invalid(AddressProblem::NotIpv6InBrackets));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid(AddressProblem::AfterBracket))?,
            ),
        };
        (host, port)
    } else if host_port.parse::<Ipv6Addr>().is_ok() {
        (host_port, None)
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(invalid(AddressProblem::PortZero)),
            Ok(port) if p.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(invalid(AddressProblem::BadPort)),
        },
    };
    if host.is_empty() {
        return Err(invalid(AddressProblem::EmptyHost));
    }
    if host.parse::<IpAddr>().is_err() && ServerName::try_from(host).is_err() {
        return Err(invalid(AddressProblem::BadHost));
    }
    Ok(Address { host, port, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ports_and_paths() {
        for (input, allow_path, host, port, path) in [
            (
                "broker.example.com:8883",
                false,
                "broker.example.com",
                Some(8883),
                None,
            ),
            ("broker", false, "broker", None, None),
            ("localhost:1", false, "localhost", Some(1), None),
            ("10.0.0.1:65535", false, "10.0.0.1", Some(65535), None),
            ("10.0.0.1", false, "10.0.0.1", None, None),
            ("[::1]:8883", false, "::1", Some(8883), None),
            ("[2001:db8::7]", false, "2001:db8::7", None, None),
            ("::1", false, "::1", None, None),
            (
                "eg.westeurope-1.ts.eventgrid.azure.net:443/mqtt",
                true,
                "eg.westeurope-1.ts.eventgrid.azure.net",
                Some(443),
                Some("/mqtt"),
            ),
            ("h/", true, "h", None, Some("/")),
            ("[::1]:80/a/b?c=d", true, "::1", Some(80), Some("/a/b?c=d")),
            ("[::1]/ws", true, "::1", None, Some("/ws")),
            ("h:80", true, "h", Some(80), None),
        ] {
            assert_eq!(
                parse_address(input, allow_path),
                Ok(Address { host, port, path }),
                "{input}"
            );
        }
        use AddressProblem as P;
        for (input, allow_path, problem) in [
            ("", false, P::EmptyHost),
            (":1883", false, P::EmptyHost),
            ("/mqtt", true, P::EmptyHost),
            ("host:", false, P::BadPort),
            ("host:0", false, P::PortZero),
            ("host:65536", false, P::BadPort),
            ("host:+1", false, P::BadPort),
            ("host:x", false, P::BadPort),
            ("[::1", false, P::UnclosedBracket),
            ("[::1]x", false, P::AfterBracket),
            ("[::1]:", false, P::BadPort),
            ("[host]:1", false, P::NotIpv6InBrackets),
            ("[]:1", false, P::NotIpv6InBrackets),
            ("bad host:1", false, P::BadHost),
            ("a:b:c", false, P::BadPort),
            ("a:b:1", false, P::BadHost),
            ("h:443/mqtt", false, P::PathNotAllowed),
            ("[::1]:443/mqtt", false, P::PathNotAllowed),
            ("h:443/a b", true, P::BadPath),
            ("h:443/a#b", true, P::BadPath),
            ("h:443/é", true, P::BadPath),
            ("h:4x3/mqtt", true, P::BadPort),
        ] {
            assert_eq!(
                parse_address(input, allow_path),
                Err(AddressError {
                    input: input.to_owned(),
                    problem,
                }),
                "{input}"
            );
        }
        assert_eq!(
            parse_address("h:1/x", false).unwrap_err().to_string(),
            "address \"h:1/x\": a path is only allowed when mqttSettings.protocol is WebSockets"
        );
    }

    #[test]
    fn authorities() {
        assert_eq!(Address::authority("h", 80), "h:80");
        assert_eq!(Address::authority("::1", 443), "[::1]:443");
    }
}
