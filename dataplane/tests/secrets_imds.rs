//! `ImdsClient` against a local stand-in for the IMDS token endpoint: a `TcpListener` on
//! 127.0.0.1:0 in a thread that checks the request and answers as told.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use sluice_dataplane::secrets::AuthError;
use sluice_dataplane::secrets::imds::{ImdsClient, MAX_RESPONSE_BYTES};

const RESOURCE: &str = "https://eventgrid.azure.net/";

/// One accepted connection: reads the request head, hands it to `respond` with the stream, and
/// returns the head from the join handle.
fn stand_in(
    respond: impl FnOnce(&str, &mut TcpStream) + Send + 'static,
) -> (String, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let head = String::from_utf8(head).expect("UTF-8 request");
        respond(&head, &mut stream);
        head
    });
    (endpoint, handle)
}

/// The value of header `name` (case-insensitive) in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn token_json(token: &str) -> String {
    let expires_on = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 86_399;
    format!(
        r#"{{"access_token":"{token}","refresh_token":"","expires_in":"86399","expires_on":"{expires_on}","not_before":"0","resource":"{RESOURCE}","token_type":"Bearer"}}"#
    )
}

fn assert_expires_in_about_a_day(token: &sluice_dataplane::secrets::tokens::Token) {
    let lifetime = token.lifetime();
    assert!(
        lifetime > Duration::from_secs(86_390) && lifetime <= Duration::from_secs(86_399),
        "{lifetime:?}"
    );
    assert!(token.refresh_at() < token.expires_at);
}

#[test]
fn token_with_content_length() {
    let (endpoint, server) = stand_in(|_, stream| {
        let body = token_json("eyJ0eXAiOiJKV1QifQ.payload.sig");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).expect("write");
        // Keep the connection open: the client must stop at Content-Length.
        let _ = stream.read(&mut [0u8; 1]);
    });
    let client = ImdsClient::new(&endpoint).expect("endpoint");
    let token = client.fetch(RESOURCE, None).expect("token");
    assert_eq!(token.value, "eyJ0eXAiOiJKV1QifQ.payload.sig");
    assert_expires_in_about_a_day(&token);

    let head = server.join().expect("server");
    let request_line = head.lines().next().expect("request line");
    assert_eq!(
        request_line,
        "GET /metadata/identity/oauth2/token?api-version=2018-02-01\
         &resource=https%3A%2F%2Feventgrid.azure.net%2F HTTP/1.1"
    );
    assert_eq!(header(&head, "metadata"), Some("true"));
    assert_eq!(
        header(&head, "host"),
        Some(endpoint.trim_start_matches("http://"))
    );
}

#[test]
fn token_chunked_for_a_user_assigned_identity() {
    let (endpoint, server) = stand_in(|_, stream| {
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .expect("write");
        let body = token_json("chunked-token");
        for piece in body.as_bytes().chunks(7) {
            let chunk = format!("{:x}\r\n", piece.len());
            stream.write_all(chunk.as_bytes()).expect("write");
            stream.write_all(piece).expect("write");
            stream.write_all(b"\r\n").expect("write");
            stream.flush().expect("flush");
        }
        stream.write_all(b"0\r\n\r\n").expect("write");
        let _ = stream.read(&mut [0u8; 1]);
    });
    let client = ImdsClient::new(&format!("{endpoint}/")).expect("endpoint");
    let token = client
        .fetch(RESOURCE, Some("11111111-2222-3333-4444-555555555555"))
        .expect("token");
    assert_eq!(token.value, "chunked-token");
    assert_expires_in_about_a_day(&token);

    let head = server.join().expect("server");
    let target = head.split(' ').nth(1).expect("request target");
    let (path, query) = target.split_once('?').expect("query");
    assert_eq!(path, "/metadata/identity/oauth2/token");
    let params: Vec<&str> = query.split('&').collect();
    assert_eq!(
        params,
        [
            "api-version=2018-02-01",
            "resource=https%3A%2F%2Feventgrid.azure.net%2F",
            "client_id=11111111-2222-3333-4444-555555555555"
        ]
    );
    assert_eq!(header(&head, "Metadata"), Some("true"));
}

#[test]
fn token_delimited_by_the_end_of_the_connection() {
    let (endpoint, server) = stand_in(|_, stream| {
        let response = format!("HTTP/1.0 200 OK\r\n\r\n{}", token_json("eof-token"));
        stream.write_all(response.as_bytes()).expect("write");
    });
    let token = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch(RESOURCE, None)
        .expect("token");
    assert_eq!(token.value, "eof-token");
    server.join().expect("server");
}

#[test]
fn error_status_carries_the_body_message() {
    let (endpoint, server) = stand_in(|_, stream| {
        let body = r#"{"error":"invalid_resource","error_description":"AADSTS500011: The resource principal named https://nope was not found."}"#;
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).expect("write");
    });
    let err = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch("https://nope", None)
        .expect_err("400");
    let AuthError::Status {
        status,
        error,
        message,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 400);
    assert_eq!(error.as_deref(), Some("invalid_resource"));
    assert!(message.starts_with("AADSTS500011"), "{message}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains(&endpoint), "{err}");
    server.join().expect("server");
}

#[test]
fn transient_status_is_retryable() {
    let (endpoint, server) = stand_in(|_, stream| {
        stream
            .write_all(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
            .expect("write");
    });
    let err = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch(RESOURCE, None)
        .expect_err("429");
    assert!(
        matches!(err, AuthError::Status { status: 429, .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
    server.join().expect("server");
}

/// A stand-in that sends `prefix` and then holds the connection until the test is done.
fn stalling(prefix: &'static [u8]) -> (String, mpsc::Sender<()>, JoinHandle<String>) {
    let (done, wait) = mpsc::channel::<()>();
    let (endpoint, server) = stand_in(move |_, stream| {
        stream.write_all(prefix).expect("write");
        let _ = wait.recv();
    });
    (endpoint, done, server)
}

#[test]
fn slow_server_times_out() {
    for prefix in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"access_token\":",
    ] {
        let (endpoint, done, server) = stalling(prefix);
        let client = ImdsClient::new(&endpoint)
            .expect("endpoint")
            .with_timeouts(Duration::from_secs(5), Duration::from_millis(200));
        let started = Instant::now();
        let err = client.fetch(RESOURCE, None).expect_err("timeout");
        let took = started.elapsed();
        assert!(
            matches!(
                err,
                AuthError::Timeout {
                    what: "response",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        assert!(err.is_retryable());
        done.send(()).expect("server waiting");
        server.join().expect("server");
    }
}

#[test]
fn oversized_response_is_refused() {
    let (endpoint, server) = stand_in(|_, stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n");
        let filler = vec![b' '; MAX_RESPONSE_BYTES];
        // The client gives up part way; its close may fail these writes.
        let _ = stream.write_all(&filler);
        let _ = stream.write_all(&filler);
    });
    let err = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch(RESOURCE, None)
        .expect_err("too large");
    assert!(matches!(err, AuthError::ResponseTooLarge { .. }), "{err:?}");
    server.join().expect("server");
}

#[test]
fn malformed_response_is_refused() {
    let (endpoint, server) = stand_in(|_, stream| {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n");
    });
    let err = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch(RESOURCE, None)
        .expect_err("not HTTP");
    assert!(
        matches!(err, AuthError::MalformedResponse { .. }),
        "{err:?}"
    );
    server.join().expect("server");
}

#[test]
fn success_without_a_token_is_refused() {
    let (endpoint, server) = stand_in(|_, stream| {
        let body = r#"{"token_type":"Bearer"}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(response.as_bytes()).expect("write");
    });
    let err = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch(RESOURCE, None)
        .expect_err("no token");
    assert!(
        matches!(err, AuthError::InvalidTokenResponse { .. }),
        "{err:?}"
    );
    server.join().expect("server");
}

#[test]
fn nobody_listening_is_an_io_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = ImdsClient::new(&endpoint)
        .expect("endpoint")
        .fetch(RESOURCE, None)
        .expect_err("refused");
    assert!(matches!(err, AuthError::Io { .. }), "{err:?}");
    assert!(err.is_retryable());
}
