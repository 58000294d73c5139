//! Bounded reads of mounted secret files: a service account token, a user name and a password.
//! Every read stops at [`MAX_SECRET_FILE_BYTES`], so a file that is not what it claims to be (a
//! device, a huge file) cannot make the process allocate without bound.
//!
//! Blocking: these read files; call them before connecting or off the event loop.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use sluice_codec::ByteStr;

use super::AuthError;

/// Largest secret or token file accepted, bytes. Kubernetes tokens are about 1 KiB.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads at most [`MAX_SECRET_FILE_BYTES`] of `path`; `None` when it holds more.
fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    File::open(path).and_then(|f| f.take(MAX_SECRET_FILE_BYTES + 1).read_to_end(&mut raw))?;
    Ok((raw.len() as u64 <= MAX_SECRET_FILE_BYTES).then_some(raw))
}

/// Reads a Kubernetes service account token (a projected volume file, which the kubelet
/// rewrites as the token rotates: read it again before every connection). Leading and trailing
/// whitespace, such as a final newline, is removed.
///
/// # Errors
/// [`AuthError::ReadToken`] when the file cannot be read, [`AuthError::EmptyToken`] when it holds
/// nothing but whitespace, [`AuthError::TokenFileTooLarge`] beyond [`MAX_SECRET_FILE_BYTES`]. Each
/// names the file.
pub fn read_service_account_token(path: &Path) -> Result<Bytes, AuthError> {
    let read_error = |source| AuthError::ReadToken {
        path: path.to_path_buf(),
        source,
    };
    let Some(raw) = read_bounded(path).map_err(read_error)? else {
        return Err(AuthError::TokenFileTooLarge {
            path: path.to_path_buf(),
        });
    };
    let end = raw.trim_ascii_end().len();
    let start = end - raw[..end].trim_ascii_start().len();
    if start == end {
        return Err(AuthError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(Bytes::from(raw).slice(start..end))
}

/// Reads a user name and password secret (trailing line ends trimmed).
///
/// # Errors
/// A file that cannot be read or is larger than [`MAX_SECRET_FILE_BYTES`], or a user name that
/// is not UTF-8.
pub fn read_login(username_file: &Path, password_file: &Path) -> Result<(ByteStr, Bytes), String> {
    let username = read_trimmed(username_file)?;
    let password = read_trimmed(password_file)?;
    let username = String::from_utf8(username).map_err(|_| "username is not UTF-8".to_string())?;
    Ok((ByteStr::from(username), Bytes::from(password)))
}

fn read_trimmed(path: &Path) -> Result<Vec<u8>, String> {
    let mut v = read_bounded(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .ok_or_else(|| {
            format!(
                "{}: larger than {MAX_SECRET_FILE_BYTES} bytes",
                path.display()
            )
        })?;
    while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        v.pop();
    }
    Ok(v)
}
