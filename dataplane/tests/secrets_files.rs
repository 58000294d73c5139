//! `read_service_account_token` on real files.

use std::fs;

use sluice_dataplane::secrets::AuthError;
use sluice_dataplane::secrets::files::{MAX_SECRET_FILE_BYTES, read_service_account_token};

#[test]
fn token_is_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("aio-internal");
    fs::write(&path, "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln\n").expect("write");
    let token = read_service_account_token(&path).expect("token");
    assert_eq!(token, "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln");

    fs::write(&path, "  \r\nabc \t\r\n\n").expect("write");
    assert_eq!(read_service_account_token(&path).expect("token"), "abc");
}

#[test]
fn token_is_read_again_after_rotation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    fs::write(&path, "first").expect("write");
    assert_eq!(read_service_account_token(&path).expect("token"), "first");
    // The kubelet replaces the file (through a symlink swap); a new read sees the new token.
    let next = dir.path().join("token.new");
    fs::write(&next, "second\n").expect("write");
    fs::rename(&next, &path).expect("rename");
    assert_eq!(read_service_account_token(&path).expect("token"), "second");
}

#[test]
fn empty_token_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    for content in ["", "\n", " \t\r\n "] {
        fs::write(&path, content).expect("write");
        let err = read_service_account_token(&path).expect_err("empty");
        assert!(matches!(err, AuthError::EmptyToken { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

#[test]
fn missing_file_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("no-such-token");
    let err = read_service_account_token(&path).expect_err("missing");
    let AuthError::ReadToken { path: p, source } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(p, &path);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    // A directory is not a token either.
    let err = read_service_account_token(dir.path()).expect_err("directory");
    assert!(matches!(err, AuthError::ReadToken { .. }), "{err:?}");
}

#[test]
fn huge_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("token");
    let size = usize::try_from(MAX_SECRET_FILE_BYTES).expect("fits") + 1;
    fs::write(&path, vec![b'a'; size]).expect("write");
    let err = read_service_account_token(&path).expect_err("too large");
    assert!(
        matches!(err, AuthError::TokenFileTooLarge { .. }),
        "{err:?}"
    );
}
