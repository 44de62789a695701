//! `weir serve` stops on SIGTERM within its stated bound even while a Server-Sent Events
//! client has stopped reading (its socket buffers full, the server blocked writing to it).

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use weir_test_support::WeirProcess;

use crate::weir;

/// Far above the stated bound (a few seconds), so the test fails only if shutdown hangs.
const EXIT_LIMIT: Duration = Duration::from_secs(30);

/// The send and receive queues (bytes not yet sent or acknowledged, bytes received and
/// not read) of the loopback TCP socket from `local` to `remote`, from the kernel's table
/// of IPv4 sockets.
fn queues(local: u16, remote: u16) -> (u64, u64) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let (local, remote) = (
        format!("0100007F:{local:04X}"),
        format!("0100007F:{remote:04X}"),
    );
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()) {
            let (tx, rx) = fields[4].split_once(':').unwrap();
            return (
                u64::from_str_radix(tx, 16).unwrap(),
                u64::from_str_radix(rx, 16).unwrap(),
            );
        }
    }
    panic!("no socket {local} -> {remote} in /proc/net/tcp");
}

fn sysctl(path: &str, field: usize) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()[field]
        .parse()
        .unwrap()
}

#[test]
fn sigterm_ends_serve_while_an_sse_client_has_stopped_reading() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = WeirProcess::start(weir(), &["--data", data.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = reqwest::Client::new();
    rt.block_on(async {
        let res = http
            .put(format!("{}/v1/topics/live", node.url))
            .body(r#"{"fsync":"never"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    });

    // A subscriber that sends its request and never reads a byte.
    let addr = node.url.trim_start_matches("http://").to_owned();
    let mut client = TcpStream::connect(&addr).unwrap();
    client
        .write_all(
            format!("GET /v1/topics/live/stream?from=earliest HTTP/1.1\r\nHost: {addr}\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let local_port = client.local_addr().unwrap().port();

    // More than the socket buffers (a receive buffer that never grows, since nothing is
    // read; a send buffer at its largest) and the subscription's channel can hold.
    let event_data = "x".repeat(8 * 1024);
    let event = |n: usize| {
        format!(
            r#"{{"specversion":"1.0","id":"e{n}","source":"test","type":"t","data":"{event_data}"}}"#
        )
    };
    let buffers = sysctl("/proc/sys/net/ipv4/tcp_rmem", 1)
        + sysctl("/proc/sys/net/ipv4/tcp_wmem", 2)
        + 256 * event(0).len() as u64;
    let mut published = 0u64;
    let mut n = 0;
    rt.block_on(async {
        while published < 2 * buffers {
            let batch: Vec<String> = (0..100).map(|i| event(n + i)).collect();
            n += 100;
            let body = format!("[{}]", batch.join(","));
            published += body.len() as u64;
            let res = http
                .post(format!("{}/v1/topics/live/events", node.url))
                .header("content-type", "application/cloudevents-batch+json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 202);
        }
    });

    // Wait until the server has pushed all it can: its socket's send queue stands still
    // with the client's receive queue full, and it holds events the sockets do not.
    let deadline = Instant::now() + Duration::from_secs(30);
    let server_port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let mut before = (0, 0);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let (sending, _) = queues(server_port, local_port);
        let (_, unread) = queues(local_port, server_port);
        if (sending, unread) == before && sending > 0 && unread > 0 {
            break;
        }
        before = (sending, unread);
        assert!(
            Instant::now() < deadline,
            "the stream never filled the sockets"
        );
    }
    let in_sockets = before.0 + before.1;
    assert!(
        in_sockets < published,
        "the server must be holding events it cannot deliver ({in_sockets} of {published} bytes are in the sockets)"
    );

    let started = Instant::now();
    let exited = node.stop_within(EXIT_LIMIT);
    assert!(
        exited == Some(true),
        "weir serve did not exit cleanly within {EXIT_LIMIT:?} of SIGTERM ({exited:?}, after {:?})",
        started.elapsed()
    );
    drop(client);
}
