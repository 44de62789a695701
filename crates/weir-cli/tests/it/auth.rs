//! Auth end to end: the first key made offline, the CLI's --token and WEIR_TOKEN, keys
//! made and revoked over the API, roles enforced; and the warning an open node gives when
//! it listens beyond loopback.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use weir_test_support::WeirProcess;

use super::{example_app, weir};

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(weir())
        .args(args)
        .env_remove("WEIR_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn ok(output: std::process::Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn failed(output: std::process::Output, what: &str) -> String {
    assert!(!output.status.success(), "{what} should have failed");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn keys_tokens_and_roles_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let app = example_app(dir.path());
    let mut manifest = std::fs::read_to_string(&app).unwrap();
    manifest.push_str(
        r#"
[auth]
[auth.roles.erp-writer]
publish = ["erp.*"]
subscribe = ["crm.*"]
"#,
    );
    std::fs::write(&app, manifest).unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    // The first admin key, made in the data directory before the node starts.
    let created: serde_json::Value = serde_json::from_str(&ok(
        run(
            &[
                "auth",
                "key",
                "create",
                "--data",
                data,
                "--principal",
                "root",
                "--role",
                "admin",
                "--json",
            ],
            &[],
        ),
        "offline key create",
    ))
    .unwrap();
    let admin = created["key"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("weir_"));

    let node = WeirProcess::start(weir(), &["--app", app.to_str().unwrap(), "--data", data]);
    let url = node.url.as_str();
    let publish = |token: Option<&str>| {
        let mut args = vec![
            "publish",
            "erp.sales-orders",
            "--type",
            "t",
            "--data",
            "{}",
            "--url",
            url,
        ];
        if let Some(token) = token {
            args.extend(["--token", token]);
        }
        run(&args, &[])
    };
    let stderr = failed(publish(None), "publish without a token");
    assert!(
        stderr.contains("401") && stderr.contains("credential"),
        "{stderr}"
    );
    ok(publish(Some(&admin)), "publish as admin");

    // A key for a service, made over the API with WEIR_TOKEN.
    let created: serde_json::Value = serde_json::from_str(&ok(
        run(
            &[
                "auth",
                "key",
                "create",
                "--principal",
                "erp",
                "--role",
                "erp-writer",
                "--expires-in",
                "1d",
                "--json",
                "--url",
                url,
            ],
            &[("WEIR_TOKEN", &admin)],
        ),
        "key create over HTTP",
    ))
    .unwrap();
    let erp = created["key"].as_str().unwrap().to_owned();
    let erp_id = created["id"].as_str().unwrap().to_owned();
    assert!(created["expires_at"].is_string());
    ok(publish(Some(&erp)), "publish as erp");
    ok(
        run(&["status", "--url", url, "--token", &erp], &[]),
        "status as erp",
    );
    let stderr = failed(
        run(
            &["kv", "list", "customers", "--url", url, "--token", &erp],
            &[],
        ),
        "kv as erp",
    );
    assert!(
        stderr.contains("403") && stderr.contains("\"kv\""),
        "{stderr}"
    );
    let stderr = failed(
        run(
            &[
                "publish",
                "crm.orders",
                "--type",
                "t",
                "--data",
                "{}",
                "--url",
                url,
                "--token",
                &erp,
            ],
            &[],
        ),
        "publish to crm as erp",
    );
    assert!(stderr.contains("403"), "{stderr}");

    let listed = ok(
        run(
            &["auth", "key", "list", "--url", url, "--token", &admin],
            &[],
        ),
        "key list",
    );
    assert!(
        listed.contains(&erp_id) && listed.contains("erp-writer"),
        "{listed}"
    );
    assert!(!listed.contains(&erp), "a listing never shows a key");
    ok(
        run(
            &[
                "auth", "key", "revoke", &erp_id, "--url", url, "--token", &admin,
            ],
            &[],
        ),
        "revoke",
    );
    let stderr = failed(publish(Some(&erp)), "publish with a revoked key");
    assert!(stderr.contains("revoked"), "{stderr}");

    // Revoked offline, beside the running node: seen within a second.
    let created: serde_json::Value = serde_json::from_str(&ok(
        run(
            &[
                "auth",
                "key",
                "create",
                "--data",
                data,
                "--principal",
                "tmp",
                "--role",
                "admin",
                "--json",
            ],
            &[],
        ),
        "offline key create",
    ))
    .unwrap();
    let tmp = created["key"].as_str().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    ok(publish(Some(tmp)), "publish with an offline-made key");
    ok(
        run(
            &[
                "auth",
                "key",
                "revoke",
                created["id"].as_str().unwrap(),
                "--data",
                data,
            ],
            &[],
        ),
        "offline revoke",
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    failed(publish(Some(tmp)), "publish with an offline-revoked key");
}

#[test]
fn an_open_node_beyond_loopback_warns_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(weir())
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("WITHOUT AUTHENTICATION") {
                let _ = tx.send(());
            }
        }
    });
    let warned = rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok();
    let _ = child.kill();
    let _ = child.wait();
    assert!(warned, "no warning on stderr");
}
