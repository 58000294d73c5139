//! TLS with rustls (ring provider, TLS 1.2 and 1.3): the client connection as a layer over bytes,
//! and the [`rustls::ClientConfig`] built from an endpoint's files. Certificates are always
//! verified (webpki, against the configured CAs or the system store); there is no switch to turn
//! verification off. No ALPN is offered.

use std::fmt;
use std::io::{self, BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::{Buf as _, BytesMut};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sluice_config_agent::pem::{PemError, read_certificates_file, read_private_key_file};

use super::TransportError;

/// Files for TLS client authentication (mutual TLS), as a `secretRef` folder holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthFiles {
    /// PEM file with the client certificate, optionally followed by its intermediates.
    pub cert: PathBuf,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM file with intermediate certificates to send after those in `cert`.
    pub intermediates: Option<PathBuf>,
}

/// Why a file of the TLS configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// The folder could not be read.
    #[error("cannot read it: {0}")]
    Io(#[source] io::Error),
    /// The PEM reader that `config-agent validate` uses refused the file (unreadable, not PEM,
    /// no section of the kind wanted, a section that is not what its label says).
    #[error("it {0}")]
    Pem(#[source] PemError),
    /// A folder holds no `*.pem` or `*.crt` file.
    #[error("no *.pem or *.crt file in it")]
    NoCertificateFiles,
    /// rustls refused the content (a malformed certificate, an unsupported key, a key that does
    /// not match the certificate).
    #[error("{0}")]
    Rejected(#[source] rustls::Error),
}

/// The ring provider, built once.
fn provider() -> &'static Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Fills `buf` from the operating system's secure random source.
pub(crate) fn secure_random(buf: &mut [u8]) -> Result<(), TransportError> {
    provider()
        .secure_random
        .fill(buf)
        .map_err(|e| TransportError::Tls(e.into()))
}

/// Builds the TLS client configuration of an endpoint.
///
/// `ca_pem_files`: every certificate in these PEM files is a trust anchor (see [`ca_files_in`]
/// for a ConfigMap folder); `None` trusts the operating system's store (rustls-native-certs,
/// which honours `SSL_CERT_FILE` and `SSL_CERT_DIR`). `client_auth`: the certificate chain and
/// key to present when the server asks for one (mutual TLS).
///
/// # Errors
///
/// [`TransportError::Config`] naming the file and the problem; [`TransportError::NoTrustAnchors`]
/// when no CA certificate could be loaded at all.
pub fn client_config(
    ca_pem_files: Option<&[PathBuf]>,
    client_auth: Option<ClientAuthFiles>,
) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    match ca_pem_files {
        Some(files) => {
            for path in files {
                for cert in read_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| config_error(path, ConfigProblem::Rejected(e)))?;
                }
            }
            if roots.is_empty() {
                return Err(TransportError::NoTrustAnchors(
                    "the endpoint names no CA certificate file".to_owned(),
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                return Err(TransportError::NoTrustAnchors(format!(
                    "the system trust store has no usable certificate{}{}",
                    if errors.is_empty() { "" } else { ": " },
                    errors.join("; ")
                )));
            }
        }
    }

    let builder = ClientConfig::builder_with_provider(Arc::clone(provider()))
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Tls)?
        .with_root_certificates(roots);
    let config = match client_auth {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let mut chain = read_certs(&files.cert)?;
            if let Some(intermediates) = &files.intermediates {
                chain.extend(read_certs(intermediates)?);
            }
            let key = read_private_key_file(&files.key)
                .map_err(|e| config_error(&files.key, ConfigProblem::Pem(e)))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| config_error(&files.key, ConfigProblem::Rejected(e)))?
        }
    };
    Ok(Arc::new(config))
}

/// Every `*.pem` and `*.crt` file in `dir` (a mounted ConfigMap or Secret), sorted by name.
/// Dotfiles are skipped, and so are the `..data` and `..<timestamp>` folders that kubelet
/// creates: the keys appear as symlinks into them, which are followed.
///
/// # Errors
///
/// [`TransportError::Config`] when `dir` cannot be read or holds no such file.
pub fn ca_files_in(dir: &Path) -> Result<Vec<PathBuf>, TransportError> {
    let entries = std::fs::read_dir(dir).map_err(|e| config_error(dir, ConfigProblem::Io(e)))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| config_error(dir, ConfigProblem::Io(e)))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let lower = name.to_ascii_lowercase();
        if name.starts_with('.') || !(lower.ends_with(".pem") || lower.ends_with(".crt")) {
            continue;
        }
        let path = entry.path();
        // metadata() follows symlinks: a ConfigMap key is a link into ..data.
        let meta =
            std::fs::metadata(&path).map_err(|e| config_error(&path, ConfigProblem::Io(e)))?;
        if meta.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(config_error(dir, ConfigProblem::NoCertificateFiles));
    }
    files.sort();
    Ok(files)
}

fn config_error(path: &Path, problem: ConfigProblem) -> TransportError {
    TransportError::Config {
        path: path.to_owned(),
        problem,
    }
}

/// Every certificate in a PEM file; at least one. The reader is `config-agent`'s, so that a
/// file `validate` accepts loads here and one it refuses is refused here too.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    read_certificates_file(path).map_err(|e| config_error(path, ConfigProblem::Pem(e)))
}

/// What a read found besides application data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsStatus {
    Open,
    /// The server sent close_notify (our own is queued in answer).
    PeerClosed,
}

/// One TLS client connection over bytes.
pub(crate) struct TlsLayer {
    conn: ClientConnection,
}

impl fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("wants_write", &self.conn.wants_write())
            .finish_non_exhaustive()
    }
}

/// `io::Write` that appends to a `BytesMut`, for `write_tls`.
struct Append<'a>(&'a mut BytesMut);

impl io::Write for Append<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.0.reserve(len);
        for b in bufs {
            self.0.extend_from_slice(b);
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsLayer {
    /// A client connection to `server_name` (SNI, and the name the certificate must hold).
    ///
    /// rustls's own bound on plaintext written before the handshake completes (64 KiB) is lifted:
    /// [`TlsLayer::write`] must not fail halfway, and the caller bounds what it writes between
    /// two [`TlsLayer::poll_write`] calls.
    pub(crate) fn new(
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        let mut conn = ClientConnection::new(config, server_name)?;
        conn.set_buffer_limit(None);
        Ok(Self { conn })
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Consumes all of `socket_in`; rustls keeps partial records. Each run of decrypted
    /// application data goes to `sink` (borrowed from rustls's buffer, not copied here).
    ///
    /// # Errors
    ///
    /// [`TransportError::Tls`] for a handshake or record failure (rustls queues the alert, which
    /// [`TlsLayer::poll_write`] then emits), or what `sink` returns.
    pub(crate) fn read(
        &mut self,
        socket_in: &mut BytesMut,
        mut sink: impl FnMut(&[u8]) -> Result<(), TransportError>,
    ) -> Result<TlsStatus, TransportError> {
        while !socket_in.is_empty() {
            let n = self
                .conn
                .read_tls(&mut &socket_in[..])
                .map_err(TransportError::TlsIo)?;
            socket_in.advance(n);
            let state = self.conn.process_new_packets()?;
            let mut reader = self.conn.reader();
            let mut closed = state.peer_has_closed();
            loop {
                match reader.fill_buf() {
                    Ok([]) => {
                        closed = true;
                        break;
                    }
                    Ok(chunk) => {
                        let len = chunk.len();
                        sink(chunk)?;
                        reader.consume(len);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(TransportError::TlsIo(e)),
                }
            }
            if closed {
                socket_in.clear();
                self.conn.send_close_notify();
                return Ok(TlsStatus::PeerClosed);
            }
            if n == 0 {
                // Not expected while input remains; do not spin.
                break;
            }
        }
        Ok(TlsStatus::Open)
    }

    /// Plaintext to send: encrypted at once after the handshake, buffered by rustls before.
    pub(crate) fn write(&mut self, plain: &[u8]) -> Result<(), TransportError> {
        self.conn
            .writer()
            .write_all(plain)
            .map_err(TransportError::TlsIo)
    }

    /// Appends the TLS records waiting to go out to `socket_out`; returns whether there were any.
    pub(crate) fn poll_write(&mut self, socket_out: &mut BytesMut) -> bool {
        let mut any = false;
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut Append(socket_out)) {
                Ok(0) | Err(_) => break,
                Ok(_) => any = true,
            }
        }
        any
    }

    /// Queues close_notify.
    pub(crate) fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::process::Command;

    use rustls::server::WebPkiClientVerifier;
    use rustls::{ServerConfig, ServerConnection};

    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject as _;

    use super::super::{PeerClose, Transport, WsSettings, ws};
    use super::*;

    /// A throwaway PKI from scripts/gen-certs (openssl): ca, server (127.0.0.1, localhost),
    /// client.
    fn pki() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/gen-certs");
        let out = Command::new(script)
            .arg(dir.path())
            .output()
            .expect("run scripts/gen-certs (needs openssl: scripts/setup installs it)");
        assert!(
            out.status.success(),
            "scripts/gen-certs failed (needs openssl: scripts/setup installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    }

    fn server_config(pki: &Path, require_client_cert: bool) -> Arc<ServerConfig> {
        let chain = read_certs(&pki.join("server.crt")).unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.join("server.key")).unwrap();
        let builder = ServerConfig::builder_with_provider(Arc::clone(provider()))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(read_certs(&pki.join("ca.crt")).unwrap());
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(provider()),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(chain, key).unwrap())
    }

    fn client(pki: &Path, name: &str, client_auth: bool) -> Transport {
        client_ws(pki, name, client_auth, None)
    }

    fn client_ws(pki: &Path, name: &str, client_auth: bool, ws: Option<WsSettings>) -> Transport {
        let auth = client_auth.then(|| ClientAuthFiles {
            cert: pki.join("client.crt"),
            key: pki.join("client.key"),
            intermediates: None,
        });
        let config = client_config(Some(&[pki.join("ca.crt")]), auth).unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        Transport::new(Some((config, name)), ws).unwrap()
    }

    /// An in-memory link between a client `Transport` and a rustls server.
    struct Link {
        client: Transport,
        server: ServerConnection,
        /// MQTT bytes the client received.
        client_app: BytesMut,
        /// Plaintext the server received.
        server_app: Vec<u8>,
        /// Feed the client this many bytes per `read` (to split records anywhere).
        chunk: usize,
    }

    impl Link {
        fn new(client: Transport, config: Arc<ServerConfig>) -> Self {
            let mut server = ServerConnection::new(config).unwrap();
            server.set_buffer_limit(None);
            Self {
                client,
                server,
                client_app: BytesMut::new(),
                server_app: Vec::new(),
                chunk: usize::MAX,
            }
        }

        /// Moves bytes both ways until neither side has anything to send. The client's errors
        /// come back; the server's are returned as `Err(Tls)` as well, after its alert was
        /// delivered to the client.
        fn run(&mut self) -> Result<(), TransportError> {
            loop {
                let mut progress = false;
                let mut wire = BytesMut::new();
                if self.client.poll_write(&mut wire) {
                    progress = true;
                    let mut rd = &wire[..];
                    while !rd.is_empty() {
                        self.server.read_tls(&mut rd).unwrap();
                        if let Err(e) = self.server.process_new_packets() {
                            // Deliver the server's alert, then report.
                            let mut alert = Vec::new();
                            self.server.write_tls(&mut alert).unwrap();
                            let r = self
                                .client
                                .read(&mut BytesMut::from(&alert[..]), &mut self.client_app);
                            return r.and(Err(TransportError::Tls(e)));
                        }
                        let _ = self.server.reader().read_to_end(&mut self.server_app);
                    }
                }
                let mut out = Vec::new();
                while self.server.wants_write() {
                    self.server.write_tls(&mut out).unwrap();
                }
                if !out.is_empty() {
                    progress = true;
                    for piece in out.chunks(self.chunk.min(out.len())) {
                        let mut input = BytesMut::from(piece);
                        self.client.read(&mut input, &mut self.client_app)?;
                        assert!(input.is_empty(), "read consumes all of socket_in");
                    }
                }
                if !progress {
                    return Ok(());
                }
            }
        }
    }

    #[test]
    fn handshake_then_data_both_ways_with_writes_held_until_ready() {
        let pki = pki();
        let mut c = client(pki.path(), "localhost", false);
        assert!(!c.is_plain() && !c.is_ready());
        c.write(b"CONNECT before the handshake").unwrap();
        let mut link = Link::new(c, server_config(pki.path(), false));
        link.run().unwrap();
        assert!(link.client.is_ready());
        assert_eq!(link.server_app, b"CONNECT before the handshake");

        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        link.server.writer().write_all(&big).unwrap();
        link.client.write(&big[..50_000]).unwrap();
        link.run().unwrap();
        assert!(link.client_app[..] == big[..]);
        assert!(link.server_app[28..] == big[..50_000]);
    }

    #[test]
    fn records_fed_one_byte_at_a_time() {
        let pki = pki();
        let mut link = Link::new(
            client(pki.path(), "127.0.0.1", false),
            server_config(pki.path(), false),
        );
        link.chunk = 1;
        link.run().unwrap();
        assert!(link.client.is_ready());
        link.server.writer().write_all(b"CONNACK and more").unwrap();
        link.run().unwrap();
        assert_eq!(&link.client_app[..], b"CONNACK and more");
    }

    #[test]
    fn close_notify_both_ways() {
        let pki = pki();
        let mut link = Link::new(
            client(pki.path(), "localhost", false),
            server_config(pki.path(), false),
        );
        link.run().unwrap();
        link.server.writer().write_all(b"DISCONNECT").unwrap();
        link.server.send_close_notify();
        match link.run() {
            Err(TransportError::Closed(PeerClose::TlsCloseNotify)) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            &link.client_app[..],
            b"DISCONNECT",
            "data before close_notify is kept"
        );
        assert!(matches!(
            link.client.write(b"x"),
            Err(TransportError::WriteAfterClose)
        ));
        // Our close_notify answers theirs.
        link.run().unwrap();
        assert!(link.server.process_new_packets().unwrap().peer_has_closed());

        // The client starts the close.
        let mut link = Link::new(
            client(pki.path(), "localhost", false),
            server_config(pki.path(), false),
        );
        link.run().unwrap();
        link.client.close();
        link.run().unwrap();
        assert!(link.server.process_new_packets().unwrap().peer_has_closed());
    }

    #[test]
    fn an_untrusted_certificate_is_refused() {
        let (pki, other) = (pki(), pki());
        // Trusting another CA (of the same name: the signature does not verify).
        let mut link = Link::new(
            client(other.path(), "localhost", false),
            server_config(pki.path(), false),
        );
        match link.run() {
            Err(TransportError::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadSignature,
            ))) => {}
            other => panic!("{other:?}"),
        }
        // The alert for the server is queued.
        let mut alert = BytesMut::new();
        assert!(link.client.poll_write(&mut alert));
        // A name the certificate does not hold.
        let mut link = Link::new(
            client(pki.path(), "example.com", false),
            server_config(pki.path(), false),
        );
        match link.run() {
            Err(TransportError::Tls(rustls::Error::InvalidCertificate(_))) => {}
            other => panic!("{other:?}"),
        }
        // An IP address it does not hold.
        let mut link = Link::new(
            client(pki.path(), "127.0.0.2", false),
            server_config(pki.path(), false),
        );
        assert!(matches!(
            link.run(),
            Err(TransportError::Tls(rustls::Error::InvalidCertificate(_)))
        ));
    }

    #[test]
    fn mutual_tls() {
        let pki = pki();
        let mut link = Link::new(
            client(pki.path(), "localhost", true),
            server_config(pki.path(), true),
        );
        link.client.write(b"hello").unwrap();
        link.run().unwrap();
        assert_eq!(link.server_app, b"hello");
        assert_eq!(link.server.peer_certificates().map(<[_]>::len), Some(1));

        // Without a client certificate the server refuses the handshake.
        let mut link = Link::new(
            client(pki.path(), "localhost", false),
            server_config(pki.path(), true),
        );
        link.client.write(b"hello").unwrap();
        let r = link.run();
        assert!(matches!(r, Err(TransportError::Tls(_))), "{r:?}");
        assert!(link.server_app.is_empty());
    }

    #[test]
    fn websocket_over_tls() {
        let pki = pki();
        let mut c = client_ws(
            pki.path(),
            "localhost",
            false,
            Some(WsSettings::new("localhost:8443")),
        );
        c.write(b"CONNECT").unwrap();
        let mut link = Link::new(c, server_config(pki.path(), false));
        link.run().unwrap();
        assert!(!link.client.is_ready(), "TLS is up, the upgrade is not");
        let request = String::from_utf8(std::mem::take(&mut link.server_app)).unwrap();
        assert!(request.starts_with("GET / HTTP/1.1\r\nHost: localhost:8443\r\n"));
        assert!(
            request.ends_with("\r\n\r\n"),
            "only the request: CONNECT waits for 101"
        );
        let key = request
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            ws::accept_key(key)
        );
        let mut wire = response.into_bytes();
        wire.extend_from_slice(&[0x82, 7]);
        wire.extend_from_slice(b"CONNACK");
        link.server.writer().write_all(&wire).unwrap();
        link.run().unwrap();
        assert!(link.client.is_ready());
        assert_eq!(&link.client_app[..], b"CONNACK");
        // The held CONNECT follows as one masked binary frame.
        let frame = &link.server_app;
        assert_eq!(frame[..2], [0x82, 0x80 | 7]);
        let mut payload = frame[6..].to_vec();
        ws::apply_mask(&mut payload, frame[2..6].try_into().unwrap());
        assert_eq!(payload, b"CONNECT");
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn problem(r: Result<Arc<ClientConfig>, TransportError>) -> (PathBuf, ConfigProblem) {
        match r {
            Err(TransportError::Config { path, problem }) => (path, problem),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configuration_errors_name_the_file() {
        let pki = pki();
        let p = pki.path();
        let missing = p.join("missing.pem");
        let (path, e) = problem(client_config(Some(std::slice::from_ref(&missing)), None));
        assert_eq!(path, missing);
        assert!(
            matches!(
                e,
                ConfigProblem::Pem(PemError::Read(io::ErrorKind::NotFound))
            ),
            "{e:?}"
        );

        let empty = write(p, "empty.pem", "");
        let (path, e) = problem(client_config(
            Some(&[p.join("ca.crt"), empty.clone()]),
            None,
        ));
        assert_eq!(path, empty);
        assert!(matches!(e, ConfigProblem::Pem(PemError::NoCertificate)));

        let broken = write(p, "broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let (path, e) = problem(client_config(Some(std::slice::from_ref(&broken)), None));
        assert_eq!(path, broken);
        assert!(
            matches!(e, ConfigProblem::Pem(PemError::MissingEnd)),
            "{e:?}"
        );

        let not_der = write(
            p,
            "notder.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let (_, e) = problem(client_config(Some(&[not_der]), None));
        assert!(
            matches!(e, ConfigProblem::Pem(PemError::NotCertificate)),
            "{e:?}"
        );
        // Shaped as a certificate (empty parts), which only rustls can tell is none.
        let outline = write(
            p,
            "outline.pem",
            "-----BEGIN CERTIFICATE-----\nMAcwADAAAwEA\n-----END CERTIFICATE-----\n",
        );
        let (_, e) = problem(client_config(Some(&[outline]), None));
        assert!(matches!(e, ConfigProblem::Rejected(_)), "{e:?}");

        assert!(matches!(
            client_config(Some(&[]), None),
            Err(TransportError::NoTrustAnchors(_))
        ));

        let ca = [p.join("ca.crt")];
        let auth = |cert: &str, key: &str| ClientAuthFiles {
            cert: p.join(cert),
            key: p.join(key),
            intermediates: None,
        };
        // A key file with no key in it.
        let (path, e) = problem(client_config(
            Some(&ca),
            Some(auth("client.crt", "client.crt")),
        ));
        assert_eq!(path, p.join("client.crt"));
        assert!(
            matches!(e, ConfigProblem::Pem(PemError::NoPrivateKey)),
            "{e:?}"
        );
        // The server's key with the client's certificate.
        let (path, e) = problem(client_config(
            Some(&ca),
            Some(auth("client.crt", "server.key")),
        ));
        assert_eq!(path, p.join("server.key"));
        assert!(
            matches!(
                e,
                ConfigProblem::Rejected(rustls::Error::InconsistentKeys(_))
            ),
            "{e:?}"
        );
        // A certificate file with no certificate in it.
        let (path, e) = problem(client_config(
            Some(&ca),
            Some(auth("client.key", "client.key")),
        ));
        assert_eq!(path, p.join("client.key"));
        assert!(
            matches!(e, ConfigProblem::Pem(PemError::NoCertificate)),
            "{e:?}"
        );
        // Intermediates are appended to the chain.
        let mut with_intermediates = auth("client.crt", "client.key");
        with_intermediates.intermediates = Some(p.join("ca.crt"));
        client_config(Some(&ca), Some(with_intermediates)).unwrap();

        let text = TransportError::Config {
            path: PathBuf::from("/s/ca.pem"),
            problem: ConfigProblem::Pem(PemError::NoCertificate),
        }
        .to_string();
        assert_eq!(text, "/s/ca.pem: it holds no PEM CERTIFICATE");
    }

    /// `config-agent validate` (through `sluice_config_agent::pem`) and the data plane's TLS
    /// set-up accept and refuse the same files.
    #[test]
    fn validation_and_the_data_plane_agree_on_pem_files() {
        use sluice_config_agent::pem::{check_certificates_file, check_private_key_file};

        let pki = pki();
        let p = pki.path();
        let body = |file: &str| {
            let text = std::fs::read_to_string(p.join(file)).unwrap();
            text.lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let labelled = |name: &str, label: &str, body: &str| {
            write(
                p,
                name,
                &format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"),
            )
        };
        // The EC key of scripts/gen-certs as a CA certificate, and a CA whose base64 is broken.
        let key_as_cert = labelled("key-as-cert.pem", "CERTIFICATE", &body("client.key"));
        let bad_base64 = labelled(
            "bad-base64.pem",
            "CERTIFICATE",
            &body("ca.crt").replacen('A', "!", 1),
        );
        let ca = p.join("ca.crt");
        for (file, accepted) in [(&ca, true), (&key_as_cert, false), (&bad_base64, false)] {
            let agent = check_certificates_file(file);
            let dataplane = client_config(Some(std::slice::from_ref(file)), None);
            assert_eq!(
                agent.is_ok(),
                accepted,
                "validate, {}: {agent:?}",
                file.display()
            );
            assert_eq!(
                dataplane.is_ok(),
                accepted,
                "data plane, {}: {:?}",
                file.display(),
                dataplane.err()
            );
        }
        // The client's certificate as its key, and a key with a broken body.
        let cert_as_key = labelled("cert-as-key.pem", "PRIVATE KEY", &body("client.crt"));
        let bad_key = labelled(
            "bad-key.pem",
            "PRIVATE KEY",
            &body("client.key").replacen('A', "!", 1),
        );
        let good_key = p.join("client.key");
        for (key, accepted) in [(&good_key, true), (&cert_as_key, false), (&bad_key, false)] {
            let agent = check_private_key_file(key);
            let dataplane = client_config(
                Some(std::slice::from_ref(&ca)),
                Some(ClientAuthFiles {
                    cert: p.join("client.crt"),
                    key: key.clone(),
                    intermediates: None,
                }),
            );
            assert_eq!(
                agent.is_ok(),
                accepted,
                "validate, {}: {agent:?}",
                key.display()
            );
            assert_eq!(
                dataplane.is_ok(),
                accepted,
                "data plane, {}: {:?}",
                key.display(),
                dataplane.err()
            );
        }
    }

    #[test]
    fn ca_files_of_a_configmap_folder() {
        // As kubelet mounts a ConfigMap: keys are links into ..data, a link to a timestamped
        // folder.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stamp = d.join("..2026_01_01_00_00_00.000000001");
        std::fs::create_dir(&stamp).unwrap();
        for name in ["ca.crt", "b.PEM", "notes.txt"] {
            std::fs::write(stamp.join(name), "x").unwrap();
        }
        std::os::unix::fs::symlink(&stamp, d.join("..data")).unwrap();
        for name in ["ca.crt", "b.PEM", "notes.txt"] {
            std::os::unix::fs::symlink(Path::new("..data").join(name), d.join(name)).unwrap();
        }
        std::fs::write(d.join(".hidden.pem"), "x").unwrap();
        std::fs::create_dir(d.join("dir.pem")).unwrap();
        assert_eq!(ca_files_in(d).unwrap(), [d.join("b.PEM"), d.join("ca.crt")]);

        let empty = tempfile::tempdir().unwrap();
        match ca_files_in(empty.path()) {
            Err(TransportError::Config {
                path,
                problem: ConfigProblem::NoCertificateFiles,
            }) => assert_eq!(path, empty.path()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ca_files_in(&d.join("missing")),
            Err(TransportError::Config {
                problem: ConfigProblem::Io(_),
                ..
            })
        ));
    }
}
