//! A webhook receiver in a child process (`scripts/webhook_receiver.py`) that checks each
//! request's Standard Webhooks signature with the reference verifier (PyPI
//! `standardwebhooks`) and logs what it received.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A signing secret for tests (24 random bytes, base64).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The receiver process, killed when dropped.
pub struct WebhookReceiver {
    child: Child,
    dir: tempfile::TempDir,
    pub url: String,
}

/// How the receiver answers.
#[derive(Debug, Default, Clone)]
pub struct Behaviour {
    /// Answer 503 to the first N requests.
    pub fail_first: u32,
    /// Answer 400 to events with this subject.
    pub refuse_subject: Option<String>,
    /// Listen on this port (default: a free one).
    pub port: Option<u16>,
    /// Answer no request before this many were open at once (each waits up to 10 s for
    /// it, then gets 503): a sink that sends fewer at once never gets an answer but 503.
    pub hold_until: u32,
}

impl WebhookReceiver {
    /// Starts a receiver verifying with `secret` on a free loopback port.
    pub fn start(secret: &str, behaviour: Behaviour) -> WebhookReceiver {
        let python = crate::script_guests::ensure_standardwebhooks()
            .unwrap_or_else(|e| panic!("the webhook tests need PyPI's standardwebhooks: {e:#}"));
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let mut command = Command::new(python);
        command
            .arg(crate::repo_root().join("crates/weir-test-support/scripts/webhook_receiver.py"))
            .arg(secret)
            .arg(&port_file)
            .arg(dir.path().join("requests.jsonl"))
            .args(["--fail-first", &behaviour.fail_first.to_string()])
            .stdout(Stdio::null());
        if behaviour.hold_until > 0 {
            command.args(["--hold-until", &behaviour.hold_until.to_string()]);
        }
        if let Some(port) = behaviour.port {
            command.args(["--port", &port.to_string()]);
        }
        if let Some(subject) = &behaviour.refuse_subject {
            command.args(["--refuse-subject", subject]);
        }
        let mut child = command.spawn().expect("python3 runs the webhook receiver");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Ok(port) = std::fs::read_to_string(&port_file) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the webhook receiver exited: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "the webhook receiver did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        WebhookReceiver {
            child,
            dir,
            url: format!("http://127.0.0.1:{}/hook", port.trim()),
        }
    }

    /// Every request received so far, in arrival order: `id`, `timestamp`, `verified`,
    /// `tamper_rejected`, `status` (the answer) and `event` (the body as JSON).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let Ok(text) = std::fs::read_to_string(self.log()) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("requests.jsonl")
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
