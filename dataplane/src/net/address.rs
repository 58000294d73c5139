//! Endpoint addresses: `host[:port][/path]` as resources write them, split into the host to
//! connect to, the port, the WebSocket path and the TLS server name. The parsing is
//! [`sluice_config_agent::address`]'s, the one `config-agent validate` uses, so an address that
//! validates is one the data plane can connect to; this module adds the port defaults and the
//! rustls [`ServerName`].

use std::net::IpAddr;

use rustls::pki_types::ServerName;
pub use sluice_config_agent::address::{Address, AddressError, AddressProblem, parse_address};

/// An endpoint's address, resolved for connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The host, without brackets.
    pub host: String,
    /// The port as written, else the default.
    pub port: u16,
    /// The WebSocket request path as written (`/mqtt`); `None` when there is none.
    pub path: Option<String>,
    /// The TLS server name: [`ServerName::IpAddress`] for an IP address (the certificate must
    /// list it as an IP subjectAltName), else the DNS name.
    pub server_name: ServerName<'static>,
}

/// Splits `host[:port][/path]` with [`parse_address`]; the port is `default_port` when absent.
/// `allow_path`: whether a path may follow (MQTT over WebSockets).
///
/// # Errors
///
/// [`AddressError`] as [`parse_address`] gives it.
pub fn parse_endpoint_address(
    s: &str,
    default_port: u16,
    allow_path: bool,
) -> Result<HostPort, AddressError> {
    let a = parse_address(s, allow_path)?;
    let server_name = match a.host.parse::<IpAddr>() {
        Ok(ip) => ServerName::from(ip),
        // parse_address has checked that it is a DNS name.
        Err(_) => ServerName::try_from(a.host.to_owned()).map_err(|_| AddressError {
            input: s.to_owned(),
            problem: AddressProblem::BadHost,
        })?,
    };
    Ok(HostPort {
        host: a.host.to_owned(),
        port: a.port.unwrap_or(default_port),
        path: a.path.map(str::to_owned),
        server_name,
    })
}

/// Splits `host[:port]` (no path) into the host to connect to, the port, and the TLS server
/// name; [`parse_endpoint_address`] without a path.
///
/// Accepts `name`, `name:port`, `1.2.3.4:port`, `[::1]:port`, `[::1]` and a bare `::1`; the
/// port is `default_port` when absent. The host comes back without brackets.
///
/// # Errors
///
/// [`AddressError`] for an empty host, a bad port (0, not a number, above
/// 65,535), unbalanced brackets, a path, or a host that is neither an IP address nor a DNS name.
pub fn parse_host_port(
    s: &str,
    default_port: u16,
) -> Result<(String, u16, ServerName<'static>), AddressError> {
    let a = parse_endpoint_address(s, default_port, false)?;
    Ok((a.host, a.port, a.server_name))
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

    #[test]
    fn websocket_paths() {
        let a = parse_endpoint_address("eg.westeurope-1.ts.eventgrid.azure.net:443/mqtt", 80, true)
            .unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.path.as_deref()),
            ("eg.westeurope-1.ts.eventgrid.azure.net", 443, Some("/mqtt"))
        );
        let a = parse_endpoint_address("[::1]/ws", 80, true).unwrap();
        assert_eq!((a.port, a.path.as_deref()), (80, Some("/ws")));
        assert_eq!(
            a.server_name,
            ServerName::from("::1".parse::<IpAddr>().unwrap())
        );
        assert_eq!(parse_endpoint_address("h:80", 80, true).unwrap().path, None);
        // The same refusal as config-agent validate's, for the same reason.
        for (input, allow_path) in [("h:443/mqtt", false), ("h:443/a b", true), ("a:b:1", true)] {
            let ours = parse_endpoint_address(input, 80, allow_path).unwrap_err();
            let agents = parse_address(input, allow_path).unwrap_err();
            assert_eq!(ours, agents, "{input}");
        }
        assert_eq!(
            parse_host_port("h:443/mqtt", 80).unwrap_err().problem,
            AddressProblem::PathNotAllowed
        );
    }
}
