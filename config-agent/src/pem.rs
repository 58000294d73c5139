//! The PEM checks of certificates and private keys that endpoints reference, on
//! `rustls-pki-types`' PEM reader, so that the agent's validation and the data plane's TLS set-up
//! accept and refuse exactly the same files.
//!
//! Only the framing is checked: BEGIN and END lines, base64, a section of the kind wanted. What
//! the DER inside says (a valid certificate, a key matching it) is for the TLS library. Errors
//! never carry any of the file's content.

use std::io;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

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
    /// No `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` section.
    #[error("holds no PEM PRIVATE KEY")]
    NoPrivateKey,
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

/// Checks that `pem` holds at least one `CERTIFICATE` and that every section parses; returns
/// how many certificates it holds.
///
/// # Errors
/// The first problem found.
pub fn check_certificates(pem: &[u8]) -> Result<usize, PemError> {
    count_certificates(CertificateDer::pem_slice_iter(pem))
}

/// [`check_certificates`] on a file (a CA bundle, `client_cert.pem`).
///
/// # Errors
/// The first problem found, or [`PemError::Read`].
pub fn check_certificates_file(path: &Path) -> Result<usize, PemError> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| PemError::from_pem(e, PemError::NoCertificate))?;
    count_certificates(iter)
}

fn count_certificates<'a>(
    iter: impl Iterator<Item = Result<CertificateDer<'a>, pem::Error>>,
) -> Result<usize, PemError> {
    let mut n = 0;
    for cert in iter {
        cert.map_err(|e| PemError::from_pem(e, PemError::NoCertificate))?;
        n += 1;
    }
    if n == 0 {
        return Err(PemError::NoCertificate);
    }
    Ok(n)
}

/// Checks that `pem` holds an unencrypted private key (PKCS #8, PKCS #1 or SEC1).
///
/// # Errors
/// [`PemError::EncryptedKey`] for a password-protected key, else the first problem found.
pub fn check_private_key(pem: &[u8]) -> Result<(), PemError> {
    if is_encrypted_key(pem) {
        return Err(PemError::EncryptedKey);
    }
    PrivateKeyDer::from_pem_slice(pem)
        .map(drop)
        .map_err(|e| PemError::from_pem(e, PemError::NoPrivateKey))
}

/// [`check_private_key`] on a file (`client_key.pem`).
///
/// # Errors
/// As [`check_private_key`], or [`PemError::Read`].
pub fn check_private_key_file(path: &Path) -> Result<(), PemError> {
    let bytes = std::fs::read(path).map_err(|e| PemError::Read(e.kind()))?;
    check_private_key(&bytes)
}

/// The PEM reader skips sections of kinds it does not know, `ENCRYPTED PRIVATE KEY` among them;
/// such a key deserves its own message rather than "no private key".
fn is_encrypted_key(pem: &[u8]) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    pem.windows(BEGIN.len()).any(|w| w == BEGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2VydA==\n-----END CERTIFICATE-----\n";
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n";

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
        let rsa = KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY");
        check_private_key(rsa.as_bytes()).unwrap();
        let ec = KEY.replace("PRIVATE KEY", "EC PRIVATE KEY");
        check_private_key(ec.as_bytes()).unwrap();
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
