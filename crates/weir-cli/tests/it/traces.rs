//! Traces exported over OTLP/HTTP to a real receiver (the OpenTelemetry project's
//! oteltest sink, run by `otlp_sink.py`), following one event through two chained
//! pipelines; and `--log-format json`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_test_support::WeirProcess;

use crate::{example_app, weir};

/// The trace context the event is published with.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// The OTLP receiver, killed when dropped.
struct Sink {
    child: Child,
    port: u16,
    spans: mpsc::Receiver<Value>,
}

impl Sink {
    fn start() -> Sink {
        let python = weir_test_support::script_guests::ensure_oteltest().unwrap_or_else(|e| {
            panic!(
                "the trace test needs oteltest (PyPI) in target/py-venv and could not install it: {e:#}"
            )
        });
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/otlp_sink.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = match lines.next() {
            Some(Ok(line)) if line.starts_with("listening ") => line["listening ".len()..]
                .parse()
                .unwrap_or_else(|e| panic!("{line:?}: {e}")),
            other => panic!("the OTLP receiver did not start: {other:?}; see its output above"),
        };
        let (send, spans) = mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let span = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("the receiver printed {line:?}: {e}"));
                if send.send(span).is_err() {
                    return;
                }
            }
        });
        Sink { child, port, spans }
    }

    /// Spans received until every name in `names` is among them, or 20 s passed.
    fn spans_named(&self, names: &[&str]) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut spans: Vec<Value> = Vec::new();
        while !names.iter().all(|n| spans.iter().any(|s| s["name"] == *n)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.spans.recv_timeout(left) {
                Ok(span) => spans.push(span),
                Err(_) => panic!("the receiver did not get spans {names:?}; it got {spans:#?}"),
            }
        }
        spans
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example app plus a second pipeline that sends the first one's outputs
/// (`crm.orders`) through `guest-echo` (which copies each event, extensions and all) to
/// `out`: `erp.sales-orders` → enrich-order → `crm.orders` → echo → `out`.
fn chained_app(dir: &Path) -> std::path::PathBuf {
    let path = example_app(dir);
    let echo = weir_test_support::test_guest("guest-echo");
    let mut manifest = std::fs::read_to_string(&path).unwrap();
    manifest.push_str(&format!(
        r#"
[topics.out]
partitions = 1

[topics."crm-to-out.dlq"]
partitions = 1

[functions.echo]
source = {:?}

[pipelines.crm-to-out]
from = "crm.orders"
function = "echo"
to = ["out"]
dead_letter = "crm-to-out.dlq"
"#,
        echo.display().to_string()
    ));
    std::fs::write(&path, manifest).unwrap();
    path
}

fn http() -> (tokio::runtime::Runtime, reqwest::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    (rt, reqwest::Client::new())
}

#[test]
fn one_trace_crosses_two_pipelines_and_reaches_a_real_otlp_receiver() {
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let app = chained_app(dir.path());
    let data = dir.path().join("data");
    let endpoint = format!("http://127.0.0.1:{}", sink.port);
    let node = WeirProcess::start(
        weir(),
        &[
            "--app",
            app.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--otlp-endpoint",
            &endpoint,
        ],
    );

    let mut event: Value = serde_json::from_slice(
        &std::fs::read(weir_test_support::example_dir().join("sales-order-created.json")).unwrap(),
    )
    .unwrap();
    event["traceparent"] = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01").into();
    let (rt, http) = http();
    let out = rt.block_on(async {
        let res = http
            .post(format!("{}/v1/topics/erp.sales-orders/events", node.url))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let batch: Value = http
                .get(format!(
                    "{}/v1/topics/out/events?partition=0&offset=0",
                    node.url
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(first) = batch.as_array().and_then(|b| b.first()) {
                return first.clone();
            }
            assert!(Instant::now() < deadline, "nothing reached `out`");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // A graceful stop flushes the spans still buffered.
    assert!(node.stop(), "weir serve exits cleanly on SIGTERM");

    let names = [
        "publish erp.sales-orders",
        "process erp.sales-orders",
        "call enrich-order",
        "process crm.orders",
        "call echo",
    ];
    let spans = sink.spans_named(&names);
    let span = |name: &str| spans.iter().find(|s| s["name"] == name).unwrap();
    let [publish, step_a, call_a, step_b, call_b] = names.map(span);
    for s in [publish, step_a, call_a, step_b, call_b] {
        assert_eq!(s["trace_id"], TRACE_ID, "one trace: {spans:#?}");
        assert_eq!(s["service"], "weir");
        assert_eq!(s["content_type"], "application/x-protobuf");
    }
    assert_eq!(publish["parent_span_id"], PARENT_SPAN_ID);
    assert_eq!(step_a["parent_span_id"], publish["span_id"]);
    assert_eq!(call_a["parent_span_id"], step_a["span_id"]);
    assert_eq!(step_b["parent_span_id"], step_a["span_id"]);
    assert_eq!(call_b["parent_span_id"], step_b["span_id"]);
    // OTLP span kinds: 3 server... 4 producer, 5 consumer, 1 internal.
    assert_eq!(publish["kind"], 4);
    assert_eq!(step_a["kind"], 5);
    assert_eq!(call_a["kind"], 1);
    assert_eq!(step_a["attributes"]["weir.pipeline"], "erp-to-crm");
    assert_eq!(step_b["attributes"]["weir.pipeline"], "crm-to-out");
    assert_eq!(step_b["attributes"]["weir.outcome"], "outputs");
    assert_eq!(call_b["attributes"]["weir.function"], "echo");
    // The last output carries the context of the step that made it (echo copied its
    // input's, which counts as not setting one).
    assert_eq!(
        out["traceparent"],
        format!("00-{TRACE_ID}-{}-01", step_b["span_id"].as_str().unwrap()),
        "{out}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(weir())
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--data")
        .arg(&data)
        .env("WEIR_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap().starts_with("weir listening on ") {
            break;
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    // (A SIGTERM before the node installs its handler ends it at once: the exit status
    // says nothing here; what it logged until then does.)
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    let opened = lines
        .iter()
        .find(|l| l["fields"]["message"] == "log opened")
        .unwrap_or_else(|| panic!("no `log opened` line in {stderr}"));
    assert_eq!(opened["level"], "INFO");
    assert_eq!(opened["fields"]["backend"], "embedded");
    assert!(opened["timestamp"].is_string() && opened["target"].is_string());
}
