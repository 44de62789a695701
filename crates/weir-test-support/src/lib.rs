//! Fixtures shared by weir's tests: the wasm guests built for `wasm32-wasip2`, and the
//! repository's paths.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

pub mod amqp;
mod asyncapi;
pub use asyncapi::asyncapi_check;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod redis;
pub mod script_guests;
pub mod webhook;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/weir-test-support sits two levels below the root")
        .to_path_buf()
}

/// A file of `fixtures/auth/`: test-only keys and certificates (see its README).
pub fn auth_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

/// Build (if needed) the cargo project at `project` for `wasm32-wasip2` in release mode
/// and return the path of the component `artifact` (`artifact.wasm`). Cargo makes this a
/// no-op when nothing changed; a missing target is reported with the command that adds it.
pub fn build_guest(project: &Path, artifact: &str) -> PathBuf {
    // One build at a time within a process; cargo's own lock covers other processes.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(project)
        // Do not let the outer build's settings (profile, target dir) leak into the guest's.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {}: {e}", project.display()));
    if !output.status.success() {
        panic!(
            "building the wasm guest {} failed (is the target installed? `rustup target add wasm32-wasip2`, or run `cargo xtask test`):\n{}",
            project.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let wasm = project
        .join("target/wasm32-wasip2/release")
        .join(format!("{artifact}.wasm"));
    assert!(
        wasm.exists(),
        "the guest build did not produce {}",
        wasm.display()
    );
    wasm
}

/// A test guest from `guests/` by crate name, e.g. `guest-trap`.
pub fn test_guest(name: &str) -> PathBuf {
    build_guest(&repo_root().join("guests"), &name.replace('-', "_"))
}

/// `value` with every number as an f64, so the same function in several languages can be
/// compared: JavaScript and Python write `5` where Rust writes `5.0`.
pub fn numbers_as_f64(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) => Value::from(n.as_f64().expect("a finite number")),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_f64).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_f64(v)))
                .collect(),
        ),
        other => other,
    }
}

/// The example app's directory, `examples/orders`.
pub fn example_dir() -> PathBuf {
    repo_root().join("examples/orders")
}

/// The example app's `enrich-order` function, built.
pub fn example_function() -> PathBuf {
    build_guest(&example_dir().join("enrich-order"), "enrich_order")
}

/// The telemetry example's directory, `examples/telemetry`.
pub fn telemetry_example_dir() -> PathBuf {
    repo_root().join("examples/telemetry")
}

/// The telemetry example's `telemetry-alert` function, built.
pub fn telemetry_alert_function() -> PathBuf {
    build_guest(
        &telemetry_example_dir().join("telemetry-alert"),
        "telemetry_alert",
    )
}

/// The example app's `order-entity` (an event-sourced order), built.
pub fn example_entity() -> PathBuf {
    build_guest(&example_dir().join("order-entity"), "order_entity")
}

/// The example app's `orders-by-customer` (a view's projection of the order entity's
/// events), built.
pub fn example_projection() -> PathBuf {
    build_guest(
        &example_dir().join("orders-by-customer"),
        "orders_by_customer",
    )
}

/// The example app's `enrich-order` function in JavaScript (`enrich-order-js`), built
/// with componentize-js if it is older than its sources.
pub fn example_function_js() -> PathBuf {
    build_example_js().unwrap_or_else(|e| {
        panic!("cannot build enrich-order-js ({e:#}); run `cargo xtask build-guests` to see why")
    })
}

/// The example app's `enrich-order` function in Python (`enrich-order-py`), built with
/// componentize-py if it is older than its sources.
pub fn example_function_py() -> PathBuf {
    build_example_py().unwrap_or_else(|e| {
        panic!("cannot build enrich-order-py ({e:#}); run `cargo xtask build-guests` to see why")
    })
}

/// The example app's order entity in JavaScript (`order-entity-js`), built with
/// componentize-js if it is older than its sources.
pub fn example_entity_js() -> PathBuf {
    build_example_entity_js().unwrap_or_else(|e| {
        panic!("cannot build order-entity-js ({e:#}); run `cargo xtask build-guests` to see why")
    })
}

/// Build `examples/orders/enrich-order-js` if needed; returns the component's path.
pub fn build_example_js() -> anyhow::Result<PathBuf> {
    build_example_js_project("enrich-order-js", "enrich_order")
}

/// Build `examples/orders/order-entity-js` if needed; returns the component's path.
pub fn build_example_entity_js() -> anyhow::Result<PathBuf> {
    build_example_js_project("order-entity-js", "order_entity")
}

/// Build the JavaScript project `examples/orders/{project}` into `dist/{wasm}.wasm`.
fn build_example_js_project(project: &str, wasm: &str) -> anyhow::Result<PathBuf> {
    let project = example_dir().join(project);
    let output = project.join(format!("dist/{wasm}.wasm"));
    script_guests::build_javascript(&project, &output, &[&repo_root().join("wit")])?;
    Ok(output)
}

/// Build `examples/orders/enrich-order-py` if needed; returns the component's path.
pub fn build_example_py() -> anyhow::Result<PathBuf> {
    let project = example_dir().join("enrich-order-py");
    let output = project.join("dist/enrich_order.wasm");
    script_guests::build_python(&project, &repo_root().join("wit"), &output, &[])?;
    Ok(output)
}

/// A `weir serve` child process on a free port, killed when dropped.
pub struct WeirProcess {
    child: std::process::Child,
    /// The node's base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
}

impl WeirProcess {
    /// Start `weir serve --listen 127.0.0.1:0` with `args` added, and wait until it
    /// prints the address it listens on.
    pub fn start(weir: &Path, args: &[&str]) -> WeirProcess {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(weir)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("WEIR_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", weir.display()));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("weir listening on ") {
                        break rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("weir serve exited before listening ({status:?}); see its log above");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        WeirProcess { child, url }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL the child and reap it: a crash, with no chance to clean up.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for a graceful exit; returns whether it exited successfully.
    pub fn stop(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Send SIGTERM and wait at most `limit` for the child to exit: whether it exited
    /// successfully, or none if it was still running then (it is killed when dropped).
    pub fn stop_within(mut self, limit: std::time::Duration) -> Option<bool> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.success());
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small tmpfs mounted for a test that needs a disk it can fill, unmounted when dropped.
/// Mounting needs root (CI runs as root); without it the test fails saying so.
#[derive(Debug)]
pub struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mount a tmpfs of `mib` MiB at `path` (created if needed).
    pub fn mount(path: &Path, mib: u32) -> SmallDisk {
        std::fs::create_dir_all(path).unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .expect("cannot run mount");
        assert!(
            output.status.success(),
            "this test mounts a {mib} MiB tmpfs at {} to have a disk it can fill, which needs root: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        SmallDisk {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fill the disk with `ballast` until only about `leave` bytes are free.
    pub fn fill(&self, ballast: &Path, leave: u64) {
        use std::io::Write;
        let mut file = std::fs::File::create(ballast).unwrap();
        let chunk = vec![0xA5u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling {}: {e}", ballast.display()),
            }
        }
        file.set_len(written.saturating_sub(leave)).unwrap();
        file.sync_all().unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: a node's threads may still hold files open while the test unwinds.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}
