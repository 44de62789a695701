//! `GET /v1/openapi.json` of a running node is a valid OpenAPI document, as
//! openapi-spec-validator (pinned, in the repo's virtualenv) judges it.

use std::process::Command;

use weir_test_support::WeirProcess;

use crate::weir;

#[test]
fn the_served_openapi_document_validates() {
    let validator = weir_test_support::script_guests::ensure_openapi_spec_validator()
        .unwrap_or_else(|e| {
            panic!("cannot install openapi-spec-validator, which checks /v1/openapi.json: {e:#}")
        });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let node = WeirProcess::start(weir(), &["--data", data.to_str().unwrap()]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, content_type, body) = rt.block_on(async {
        let res = reqwest::get(format!("{}/v1/openapi.json", node.url))
            .await
            .unwrap();
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        (
            res.status().as_u16(),
            content_type,
            res.bytes().await.unwrap(),
        )
    });
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");
    let document: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/v1/topics/{topic}/events",
        "/v1/topics/{topic}/stream",
        "/v1/status",
        "/v1/openapi.json",
    ] {
        assert!(document["paths"].get(path).is_some(), "{path} is missing");
    }

    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &body).unwrap();
    let output = Command::new(&validator).arg(&file).output().unwrap();
    assert!(
        output.status.success(),
        "openapi-spec-validator refuses /v1/openapi.json:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(node.stop());
}
