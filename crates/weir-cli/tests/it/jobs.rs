//! Long-running jobs through a real `weir serve`: a job route answers `202` with the job's
//! URL, and `weir job ID --wait` follows it to its outcome (exit 0 on success, non-zero
//! with the function's error when it failed).

use std::process::Command;

use weir_test_support::WeirProcess;

use super::{cli, http_post, weir};

#[test]
fn weir_job_follows_a_job_a_route_accepted_to_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("weir.toml");
    std::fs::write(
        &app,
        format!(
            r#"
[topics.work]
[topics.out]
[functions.worker]
source = "{wasm}"
[pipelines.work]
from = "work"
function = "worker"
to = "out"
[routes.thumbnail]
path = "/thumbnails"
topic = "work"
type = "test.echo"
job = true
[routes.broken]
path = "/broken"
topic = "work"
type = "test.fatal"
job = true
"#,
            wasm = weir_test_support::test_guest("guest-trap").display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let node = WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    );
    let (status, accepted) = http_post(
        &format!("{}/thumbnails", node.url),
        "application/json",
        br#"{"image":"cat.png"}"#.to_vec(),
    );
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(accepted["job"], format!("/v1/jobs/{id}"));
    let job: serde_json::Value =
        serde_json::from_str(&cli(&node, &["job", id, "--wait", "30"])).unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["results"][0]["data"]["image"], "cat.png", "{job}");

    let (status, accepted) = http_post(
        &format!("{}/broken", node.url),
        "application/json",
        b"{}".to_vec(),
    );
    assert_eq!(status, 202, "{accepted}");
    let output = Command::new(weir())
        .args(["job", accepted["id"].as_str().unwrap(), "--wait", "30"])
        .args(["--url", &node.url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("failed") && stderr.contains("is poison"),
        "{stderr}"
    );
    let stdout: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stdout["status"], "failed");

    let output = Command::new(weir())
        .args(["job", "no-such-job", "--url", &node.url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no job"));
}
