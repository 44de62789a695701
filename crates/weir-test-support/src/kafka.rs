//! A private Kafka-protocol broker for tests: tansu (crates.io) with its in-memory
//! storage, one per test, on a free loopback port. Apache Kafka itself cannot be fetched
//! on the machines weir is built on (no JVM artifacts); tansu speaks the same protocol
//! to the same clients (librdkafka here), without transactions.
//!
//! The binary is `$WEIR_TANSU`, else `tansu` in cargo's bin directory or on the PATH
//! (`cargo xtask test` installs it with `cargo install tansu --features dynostore` when
//! missing).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker child process, killed when dropped. Its storage is memory: a restart
/// loses everything, so tests restart clients, never the broker.
pub struct KafkaBroker {
    child: Child,
    port: u16,
}

impl KafkaBroker {
    pub fn start() -> KafkaBroker {
        let binary = tansu_binary();
        let port = free_port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(&binary)
            .args([
                "broker",
                "--kafka-listener-url",
                &listener,
                "--kafka-advertised-listener-url",
                &listener,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("{} exited ({status}) before it listened", binary.display());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within 20 s",
                binary.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        KafkaBroker { child, port }
    }

    /// `host:port` of the broker.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The weir backend URL of this broker, with one record per produce batch (tansu
    /// 0.6.0 reports a partition's end as its last batch's first offset plus one, and
    /// answers no fetch that starts inside a multi-record batch) and fetches held 10 ms
    /// (tansu holds each fetch for the longest wait the client allows, records or not).
    pub fn url(&self) -> String {
        format!(
            "kafka://{}?batch_records=1&fetch_wait_ms=10",
            self.address()
        )
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The tansu binary to run.
pub fn tansu_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("WEIR_TANSU") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/tansu"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/tansu"));
    }
    candidates.push(PathBuf::from("tansu"));
    for candidate in &candidates {
        if Command::new(candidate)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            return candidate.clone();
        }
    }
    panic!(
        "no tansu broker for this test (tried {candidates:?}); run `cargo install tansu --features dynostore` (cargo xtask test does) or set WEIR_TANSU"
    );
}
