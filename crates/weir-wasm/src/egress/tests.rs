//! Which addresses of an answer are connected to, given the grants that allowed the request.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use super::{Exceptions, sort_answer};
use crate::state::HttpGrant;

fn grant(host: &str) -> HttpGrant {
    HttpGrant {
        scheme: None,
        host: host.to_owned(),
        port: None,
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

#[test]
fn a_wildcard_or_a_name_grant_reaches_only_public_addresses() {
    for host in ["*.example.com", "api.example.com"] {
        let g = grant(host);
        let exceptions = Exceptions::of(&[&g]);
        assert_eq!(exceptions, Exceptions::default(), "{host}");
        let (allowed, refused) = sort_answer(
            &ips(&[
                "127.0.0.1",
                "10.0.0.5",
                "93.184.215.14",
                "::ffff:127.0.0.1",
                "::1",
            ]),
            &exceptions,
        );
        assert_eq!(allowed, ips(&["93.184.215.14"]), "{host}");
        assert_eq!(
            refused.iter().map(|r| r.0).collect::<Vec<_>>(),
            ips(&["127.0.0.1", "10.0.0.5", "::ffff:127.0.0.1", "::1"])
        );
    }
}

#[test]
fn a_literal_grant_reaches_exactly_its_address() {
    let g = grant("127.0.0.1");
    let exceptions = Exceptions::of(&[&g]);
    let (allowed, refused) = sort_answer(&ips(&["127.0.0.1", "127.0.0.2"]), &exceptions);
    assert_eq!(allowed, ips(&["127.0.0.1"]));
    assert_eq!(refused.len(), 1);
}

#[test]
fn a_localhost_grant_reaches_loopback_and_nothing_else_private() {
    let g = grant("localhost");
    let exceptions = Exceptions::of(&[&g]);
    let (allowed, refused) = sort_answer(
        &ips(&[
            "127.0.0.1",
            "::1",
            "::ffff:127.0.0.1",
            "10.0.0.1",
            "169.254.169.254",
        ]),
        &exceptions,
    );
    assert_eq!(allowed, ips(&["127.0.0.1", "::1", "::ffff:127.0.0.1"]));
    assert_eq!(
        refused.iter().map(|r| r.0).collect::<Vec<_>>(),
        ips(&["10.0.0.1", "169.254.169.254"])
    );
}

/// A server on loopback that answers the first request of each connection `200` with the
/// request's body, then reads the next request in full and closes the connection without
/// answering it: the race of a server closing an idle connection just as a request is
/// written to it, made certain. Its port and the requests it read (`METHOD body`).
fn closes_after_one_answer() -> (u16, Arc<Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut pending = Vec::new();
                let mut read_request = |stream: &mut std::net::TcpStream| {
                    let mut buf = [0u8; 4096];
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return None,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while pending.len() < end + length {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return None,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    let method = head.split(' ').next().unwrap().to_uppercase();
                    let body = String::from_utf8_lossy(&pending[end..end + length]).into_owned();
                    pending.drain(..end + length);
                    log.lock().unwrap().push(format!("{method} {body}"));
                    Some(body)
                };
                let Some(body) = read_request(&mut stream) else {
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(answer.as_bytes()).is_err() {
                    return;
                }
                // The next request is read, never answered.
                let _ = read_request(&mut stream);
            });
        }
    });
    (port, seen)
}

/// Sends `method` with `body` to `127.0.0.1:port` through `pool`; the response's body.
async fn send_to(
    pool: &Arc<super::Pool>,
    port: u16,
    method: &str,
    body: &str,
) -> Result<String, wasmtime_wasi_http::Error> {
    use http_body_util::BodyExt;
    let length = body.len();
    let body = http_body_util::Full::new(bytes::Bytes::from(body.to_owned()))
        .map_err(|never| match never {})
        .boxed_unsync();
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}/"))
        .header("content-length", length)
        .body(body)
        .unwrap();
    let to = super::Destination {
        scheme: "http".into(),
        host: "127.0.0.1".into(),
        port,
        function: Arc::from("f"),
        exceptions: Exceptions::of(&[&grant("127.0.0.1")]),
    };
    let (response, _) = super::send(
        request,
        to,
        wasmtime_wasi_http::RequestOptions::default(),
        Arc::new(super::SystemResolver),
        pool.clone(),
        Arc::new(Mutex::new(None)),
    )
    .await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn a_reused_connection_closed_under_a_request_sends_it_again_only_if_idempotent() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (port, seen) = closes_after_one_answer();
        let pool = Arc::new(super::Pool::default());
        // A PUT with a body: the second goes out on the kept connection, is read and
        // dropped, and goes again, body and all, on a new one.
        assert_eq!(send_to(&pool, port, "PUT", "first").await.unwrap(), "first");
        assert_eq!(
            send_to(&pool, port, "PUT", "second").await.unwrap(),
            "second"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            ["PUT first", "PUT second", "PUT second"]
        );
        // A POST may have been acted on: it fails rather than going twice.
        let pool = Arc::new(super::Pool::default());
        assert_eq!(
            send_to(&pool, port, "POST", "third").await.unwrap(),
            "third"
        );
        let err = send_to(&pool, port, "POST", "fourth").await.unwrap_err();
        assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}");
        assert_eq!(seen.lock().unwrap()[3..], ["POST third", "POST fourth"]);
        // A GET without a body goes again; a PUT of more than the 64 KiB kept does not.
        let pool = Arc::new(super::Pool::default());
        assert_eq!(send_to(&pool, port, "GET", "").await.unwrap(), "");
        assert_eq!(send_to(&pool, port, "GET", "").await.unwrap(), "");
        assert_eq!(seen.lock().unwrap()[5..], ["GET ", "GET ", "GET "]);
        let large = "x".repeat(65 * 1024);
        let pool = Arc::new(super::Pool::default());
        assert_eq!(send_to(&pool, port, "PUT", &large).await.unwrap(), large);
        let err = send_to(&pool, port, "PUT", &large).await.unwrap_err();
        assert!(format!("{err:?}").contains("IncompleteMessage"), "{err:?}");
        assert_eq!(seen.lock().unwrap().len(), 10);
    });
}
