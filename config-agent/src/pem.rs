//! The PEM readers of certificates and private keys that endpoints reference, on
//! `rustls-pki-types`' PEM reader: the agent's validation checks files with them and the data
//! plane's TLS set-up loads files with them, so the two accept and refuse exactly the same files.
//!
//! Checked: the framing (BEGIN and END lines, base64, a section of the kind wanted), and the DER
//! shape of each section (a certificate is a SEQUENCE of a SEQUENCE, a SEQUENCE and a BIT
//! STRING; a key is the SEQUENCE its label names), so that a key labelled as a certificate, or
//! the other way round, is refused here rather than later by the TLS library. Whether the
//! content is valid beyond that (a certificate's extensions, a key matching its certificate) is
//! for the TLS library. Errors never carry any of the file's content.

use std::io;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::{MAX_FILE_BYTES, read_bounded};

/// Why a PEM file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot be read: {0}")]
    Read(io::ErrorKind),
    /// A BEGIN line without its END line.
    #[error("is not valid PEM: missing END line")]
    MissingEnd,
    /// A malformed BEGIN line.
    #[error("is not valid PEM: malformed BEGIN line")]
    MalformedBegin,
    /// The data between BEGIN and END is not base64.
    #[error("is not valid PEM: invalid base64 data")]
    InvalidBase64,
    /// A section larger than the reader accepts.
    #[error("is not valid PEM: a section is too large")]
    TooLarge,
    /// No `CERTIFICATE` section.
    #[error("holds no PEM CERTIFICATE")]
    NoCertificate,
    /// A `CERTIFICATE` section whose DER is not shaped as a certificate (a key with the wrong
    /// label, for example).
    #[error("holds a CERTIFICATE section that is not a certificate")]
    NotCertificate,
    /// No `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section.
    #[error("holds no PEM PRIVATE KEY")]
    NoPrivateKey,
    /// A private key section whose DER is not shaped as the key its label names.
    #[error("holds a private key section that is not a key of its kind")]
    NotPrivateKey,
    /// An `ENCRYPTED PRIVATE KEY`: a password-protected key, which Sluice cannot use.
    #[error("is a password-protected key, which is not supported")]
    EncryptedKey,
}

impl PemError {
    fn from_pem(e: pem::Error, none: Self) -> Self {
        match e {
            pem::Error::MissingSectionEnd { .. } => Self::MissingEnd,
            pem::Error::IllegalSectionStart { .. } => Self::MalformedBegin,
            pem::Error::Base64Decode(_) => Self::InvalidBase64,
            pem::Error::Io(e) => Self::Read(e.kind()),
            pem::Error::SectionTooLarge => Self::TooLarge,
            // `NoItemsFound` and any kind added later.
            _ => none,
        }
    }
}

/// Every certificate in `pem`, in order; at least one, each shaped as a certificate.
///
/// # Errors
/// The first problem found.
pub fn read_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    collect_certificates(CertificateDer::pem_slice_iter(pem))
}

/// [`read_certificates`] on a file (a CA bundle, `client_cert.pem`).
///
/// # Errors
/// The first problem found, or [`PemError::Read`].
pub fn read_certificates_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read_bounded(path, MAX_FILE_BYTES).map_err(|e| PemError::Read(e.kind()))?;
    read_certificates(&bytes)
}

fn collect_certificates(
    iter: impl Iterator<Item = Result<CertificateDer<'static>, pem::Error>>,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut certs = Vec::new();
    for cert in iter {
        let cert = cert.map_err(|e| PemError::from_pem(e, PemError::NoCertificate))?;
        if !der::is_certificate(&cert) {
            return Err(PemError::NotCertificate);
        }
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(PemError::NoCertificate);
    }
    Ok(certs)
}

/// Checks that `pem` holds at least one `CERTIFICATE` and that every section parses; returns
/// how many certificates it holds.
///
/// # Errors
/// The first problem found.
pub fn check_certificates(pem: &[u8]) -> Result<usize, PemError> {
    read_certificates(pem).map(|c| c.len())
}

/// [`check_certificates`] on a file (a CA bundle, `client_cert.pem`).
///
/// # Errors
/// The first problem found, or [`PemError::Read`].
pub fn check_certificates_file(path: &Path) -> Result<usize, PemError> {
    read_certificates_file(path).map(|c| c.len())
}

/// The first unencrypted private key in `pem` (PKCS #8, PKCS #1 or SEC1), shaped as its label
/// says.
///
/// # Errors
/// [`PemError::EncryptedKey`] for a password-protected key, else the first problem found.
pub fn read_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, PemError> {
    if is_encrypted_key(pem) {
        return Err(PemError::EncryptedKey);
    }
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| PemError::from_pem(e, PemError::NoPrivateKey))?;
    if !der::is_private_key(&key) {
        return Err(PemError::NotPrivateKey);
    }
    Ok(key)
}

/// [`read_private_key`] on a file (`client_key.pem`).
///
/// # Errors
/// As [`read_private_key`], or [`PemError::Read`].
pub fn read_private_key_file(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read_bounded(path, MAX_FILE_BYTES).map_err(|e| PemError::Read(e.kind()))?;
    read_private_key(&bytes)
}

/// Checks that `pem` holds an unencrypted private key (PKCS #8, PKCS #1 or SEC1).
///
/// # Errors
/// [`PemError::EncryptedKey`] for a password-protected key, else the first problem found.
pub fn check_private_key(pem: &[u8]) -> Result<(), PemError> {
    read_private_key(pem).map(drop)
}

/// [`check_private_key`] on a file (`client_key.pem`).
///
/// # Errors
/// As [`check_private_key`], or [`PemError::Read`].
pub fn check_private_key_file(path: &Path) -> Result<(), PemError> {
    read_private_key_file(path).map(drop)
}

/// The PEM reader skips sections of kinds it does not know, `ENCRYPTED PRIVATE KEY` among them;
/// such a key deserves its own message rather than "no private key".
fn is_encrypted_key(pem: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    pem.windows(BEGIN.len()).any(|w| w == BEGIN)
}

/// The outline of DER (X.690) that tells a certificate from a key: tags and definite lengths
/// of the outer elements, nothing deeper.
mod der {
    use rustls_pki_types::PrivateKeyDer;

    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const OCTET_STRING: u8 = 0x04;
    const SEQUENCE: u8 = 0x30;

    /// The element at the start of `der`: its tag, its contents and what follows it.
    fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = der.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let (len, rest) = rest.split_at(n);
            (
                len.iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b)),
                rest,
            )
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The tags of the elements of the SEQUENCE that is the whole of `der`.
    fn sequence_tags(der: &[u8]) -> Option<Vec<u8>> {
        let (SEQUENCE, mut contents, []) = element(der)? else {
            return None;
        };
        let mut tags = Vec::new();
        while !contents.is_empty() {
            let (tag, _, rest) = element(contents)?;
            tags.push(tag);
            contents = rest;
        }
        Some(tags)
    }

    /// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE,
    /// signatureValue BIT STRING } (RFC 5280 section 4.1).
    pub(super) fn is_certificate(der: &[u8]) -> bool {
        sequence_tags(der).is_some_and(|t| t == [SEQUENCE, SEQUENCE, BIT_STRING])
    }

    /// PKCS #8 (RFC 5208, 5958): SEQUENCE { version INTEGER, algorithm SEQUENCE, key OCTET
    /// STRING, ... }; SEC1 (RFC 5915): SEQUENCE { version INTEGER, key OCTET STRING, ... };
    /// PKCS #1 (RFC 8017): SEQUENCE { version INTEGER, modulus INTEGER, ... }.
    pub(super) fn is_private_key(key: &PrivateKeyDer<'_>) -> bool {
        let (der, shape): (&[u8], &[u8]) = match key {
            PrivateKeyDer::Pkcs8(k) => (k.secret_pkcs8_der(), &[INTEGER, SEQUENCE, OCTET_STRING]),
            PrivateKeyDer::Sec1(k) => (k.secret_sec1_der(), &[INTEGER, OCTET_STRING]),
            PrivateKeyDer::Pkcs1(k) => (k.secret_pkcs1_der(), &[INTEGER, INTEGER]),
            _ => return false,
        };
        sequence_tags(der).is_some_and(|t| t.starts_with(shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The outline of a certificate and of a PKCS #8 key with empty parts: what the readers
    // check, and no more (the data plane's tests use real ones).
    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMAcwADAAAwEA\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMAcCAQAwAAQA\n-----END PRIVATE KEY-----\n";
    const SEC1: &str =
        "-----BEGIN EC PRIVATE KEY-----\nMAYCAQEEAQA=\n-----END EC PRIVATE KEY-----\n";
    const PKCS1: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMAYCAQACAQA=\n-----END RSA PRIVATE KEY-----\n";

    #[test]
    fn certificates() {
        assert_eq!(check_certificates(CERT.as_bytes()).unwrap(), 1);
        let two = format!("{CERT}{CERT}");
        assert_eq!(check_certificates(two.as_bytes()).unwrap(), 2);
        assert!(matches!(
            check_certificates(b"this is not PEM\n"),
            Err(PemError::NoCertificate)
        ));
        assert!(matches!(
            check_certificates(KEY.as_bytes()),
            Err(PemError::NoCertificate)
        ));
        assert!(matches!(
            check_certificates(b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
            Err(PemError::InvalidBase64)
        ));
        assert!(matches!(
            check_certificates(b"-----BEGIN CERTIFICATE-----\nMIIB\n"),
            Err(PemError::MissingEnd)
        ));
    }

    #[test]
    fn private_keys() {
        check_private_key(KEY.as_bytes()).unwrap();
        check_private_key(SEC1.as_bytes()).unwrap();
        check_private_key(PKCS1.as_bytes()).unwrap();
        let encrypted = KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY");
        assert!(matches!(
            check_private_key(encrypted.as_bytes()),
            Err(PemError::EncryptedKey)
        ));
        assert!(matches!(
            check_private_key(CERT.as_bytes()),
            Err(PemError::NoPrivateKey)
        ));
    }

    #[test]
    fn labels_must_match_the_content() {
        // A key labelled as a certificate, a certificate or another kind of key labelled as a
        // key.
        for key in [KEY, SEC1, PKCS1] {
            let body = key.lines().nth(1).unwrap();
            let labelled =
                format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            assert!(
                matches!(
                    check_certificates(labelled.as_bytes()),
                    Err(PemError::NotCertificate)
                ),
                "{key}"
            );
        }
        let body = CERT.lines().nth(1).unwrap();
        for label in ["PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"] {
            let labelled = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
            assert!(
                matches!(
                    check_private_key(labelled.as_bytes()),
                    Err(PemError::NotPrivateKey)
                ),
                "{label}"
            );
        }
        assert!(matches!(
            check_private_key(KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY").as_bytes()),
            Err(PemError::NotPrivateKey)
        ));
        // Truncated DER, and bytes after the outer SEQUENCE.
        for body in ["MAgwADAAAwEA", "MAcwADAAAwEAAA=="] {
            let cert = format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n");
            assert!(
                matches!(
                    check_certificates(cert.as_bytes()),
                    Err(PemError::NotCertificate)
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn files() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.crt");
        std::fs::write(&cert, CERT).unwrap();
        assert_eq!(check_certificates_file(&cert).unwrap(), 1);
        let key = dir.path().join("client_key.pem");
        std::fs::write(&key, KEY).unwrap();
        check_private_key_file(&key).unwrap();
        assert!(matches!(
            check_certificates_file(&dir.path().join("nope")),
            Err(PemError::Read(io::ErrorKind::NotFound))
        ));
    }
}
