//! `weir bench mesh`: MQTT → function → signed webhook, durable, against its two
//! references measured in the same run: the MQTT broker's own QoS 1 rate for the same
//! messages (a publisher to a subscriber that acknowledges each at once) and the bench's
//! webhook receiver alone (signed requests from as many concurrent senders as the sink
//! has partitions).
//!
//! The app is the telemetry example's shape: a source on the broker (4 partitions, keyed
//! by device), `telemetry-alert` with a threshold every reading passes, and a sink to the
//! receiver. Each reading carries its publish time (µs since the bench started) as its
//! value, which the alert keeps, so the receiver measures each message's way from the
//! publisher to the webhook. The publisher of that figure keeps at most `--backlog`
//! messages in front of what the receiver took, so a long run measures weir's rate, not
//! the rate of a broker with a long queue for one client (Mosquitto slows down as it
//! grows: 100,000 messages unbounded gave 1,283 events/s where 60,000 gave 22,719).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;
use weir_engine::{Node, NodeOptions};
use weir_manifest::Manifest;

use super::{percentile, print_result, repo_path, round2, temp_dir};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PARTITIONS: usize = 4;
/// The receiver alone takes requests from as many senders as the sink can have in flight:
/// each partition's `max_in_flight`.
const SENDERS: usize = PARTITIONS * weir_manifest::SinkSpec::DEFAULT_MAX_IN_FLIGHT as usize;

#[derive(Debug, clap::Args)]
pub struct MeshBenchArgs {
    /// Messages in each figure.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// The MQTT broker (HOST:PORT); default: a Mosquitto the bench starts on a free port
    /// (`mosquitto` on the PATH) with its defaults but no limit on queued messages, so a
    /// backlog waits in the broker instead of being dropped.
    #[arg(long)]
    broker: Option<String>,
    /// With the bench's own Mosquitto: its `max_inflight_messages`, the unacknowledged QoS 1
    /// messages it sends a client at once (Mosquitto's default is 20; weir acknowledges a
    /// message only once it is durable, so this bounds what one fsync can carry).
    #[arg(long, default_value_t = 20)]
    max_inflight: u32,
    /// Messages the publisher of the weir figure may be ahead of the webhook receiver;
    /// 0: no bound (it publishes at the broker's rate and the backlog queues in the
    /// broker, whose delivery slows down as a client's queue grows long: Mosquitto walks
    /// the queue per message sent).
    #[arg(long, default_value_t = 5_000)]
    backlog: usize,
    /// The alerting function; default: the telemetry example's `telemetry-alert`.
    #[arg(long)]
    function: Option<PathBuf>,
    /// Where to put the temporary data directory (removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// What the receiver took: requests, and each alert's way from its publish (µs).
#[derive(Default)]
struct Received {
    requests: usize,
    latencies_us: Vec<u64>,
}

/// A webhook receiver answering 204 to every POST, recording the latency of alerts whose
/// `celsius` is a publish time.
async fn receiver(started: Instant) -> anyhow::Result<(SocketAddr, Arc<Mutex<Received>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let received = shared.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let received = received.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            let now = started.elapsed().as_micros() as u64;
                            let sent = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|e| e["data"]["celsius"].as_f64());
                            let mut r = received.lock().unwrap();
                            r.requests += 1;
                            if let Some(sent) = sent {
                                r.latencies_us.push(now.saturating_sub(sent as u64));
                            }
                            drop(r);
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .status(204)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok((addr, received))
}

fn mqtt_options(id: &str, broker: &str) -> anyhow::Result<MqttOptions> {
    let (host, port) = broker.rsplit_once(':').context("--broker is HOST:PORT")?;
    let mut options = MqttOptions::new(id, host, port.parse()?);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    Ok(options)
}

/// Publishes `n` messages made by `make(i)` (topic, payload) with QoS 1 from one client,
/// as fast as the broker acknowledges (100 in flight), and with `ahead` at most that many
/// messages in front of what the receiver took. Each is made as it is queued, at most a
/// few in front of the connection.
async fn publish(
    broker: &str,
    id: &str,
    n: usize,
    make: impl Fn(usize) -> (String, Vec<u8>) + Send + 'static,
    ahead: Option<(Arc<Mutex<Received>>, usize)>,
) -> anyhow::Result<()> {
    let (client, mut events) = AsyncClient::new(mqtt_options(id, broker)?, 10);
    let sender = tokio::spawn(async move {
        for i in 0..n {
            if let Some((received, backlog)) = &ahead {
                while i >= received.lock().unwrap().requests + backlog {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            let (topic, payload) = make(i);
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = events.poll().await? {
            acked += 1;
        }
    }
    let client = sender.await??;
    let _ = client.disconnect().await;
    Ok(())
}

/// The broker alone: a subscriber acknowledging each message at once, a publisher
/// sending `n`; messages per second from the first publish to the last receipt.
async fn broker_rate(broker: &str, base: &str, n: usize) -> anyhow::Result<f64> {
    let mut options = mqtt_options(&format!("{base}-sub"), broker)?;
    options.set_clean_session(true);
    let (client, mut events) = AsyncClient::new(options, 1000);
    client
        .subscribe(format!("{base}/ref/+"), QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
            break;
        }
    }
    let started = Instant::now();
    let publisher = {
        let (broker, id, make) = (
            broker.to_owned(),
            format!("{base}-pub"),
            readings(base, "ref", started),
        );
        tokio::spawn(async move { publish(&broker, &id, n, make, None).await })
    };
    let mut got = 0;
    while got < n {
        if let Event::Incoming(Packet::Publish(_)) =
            tokio::time::timeout(Duration::from_secs(60), events.poll()).await??
        {
            got += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    publisher.await??;
    let _ = client.disconnect().await;
    Ok(n as f64 / elapsed)
}

/// Reading `i` of 64 devices under `base/KIND/<device>`, its value the time it is made
/// (µs since `started`).
fn readings(
    base: &str,
    kind: &str,
    started: Instant,
) -> impl Fn(usize) -> (String, Vec<u8>) + Send + 'static {
    let prefix = format!("{base}/{kind}");
    move |i| {
        let at = started.elapsed().as_micros() as u64;
        (
            format!("{prefix}/d{}", i % 64),
            format!(r#"{{"celsius": {at}}}"#).into_bytes(),
        )
    }
}

/// The receiver alone: `n` signed alerts from [`SENDERS`] concurrent senders, one
/// request at a time each, as the sink's deliveries in flight send.
async fn receiver_rate(addr: SocketAddr, n: usize) -> anyhow::Result<f64> {
    let secret = weir_mesh_webhook::Secret::parse(SECRET).map_err(anyhow::Error::msg)?;
    let sink = Arc::new(
        weir_mesh_webhook::WebhookSink::new(
            &format!("http://{addr}/ref"),
            vec![secret],
            weir_mesh_webhook::Mode::Structured,
            Duration::from_secs(10),
        )
        .map_err(anyhow::Error::msg)?,
    );
    let started = Instant::now();
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let sink = sink.clone();
        senders.push(tokio::spawn(async move {
            for i in (s..n).step_by(SENDERS) {
                let mut event = weir_cloudevents::CloudEvent::new(
                    format!("ref-{i}"),
                    "weir://functions/telemetry-alert",
                    "com.example.telemetry.alert",
                );
                event.data = Some(weir_cloudevents::Data::Json(
                    weir_cloudevents::Json::from_value(
                        &json!({"device": format!("d{}", i % 64), "threshold": 0.0}),
                    ),
                ));
                match sink.deliver(&event).await {
                    weir_mesh_webhook::Delivery::Delivered => {}
                    other => bail!("the bench's receiver failed: {other:?}"),
                }
            }
            Ok(())
        }));
    }
    for sender in senders {
        sender.await??;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn manifest(
    dir: &std::path::Path,
    function: &std::path::Path,
    broker: &str,
    base: &str,
    hook: SocketAddr,
) -> anyhow::Result<Manifest> {
    std::fs::write(dir.join("hook.secret"), SECRET)?;
    let text = format!(
        r#"
[app]
name = "bench-mesh"
[topics.telemetry]
partitions = {PARTITIONS}
[topics.alerts]
partitions = {PARTITIONS}
[sources.sensors]
url = "mqtt://{broker}?client_id={base}-weir"
subscribe = "{base}/app/+"
topic = "telemetry"
type = "com.example.telemetry.reading"
key = "{{subject.2}}"
[functions.telemetry-alert]
source = {function:?}
config = {{ threshold = -1 }}
[pipelines.alerting]
from = "telemetry"
function = "telemetry-alert"
to = ["alerts"]
concurrency = {PARTITIONS}
[sinks.hook]
topic = "alerts"
url = "http://{hook}/alerts"
secret = {{ file = "hook.secret" }}
"#
    );
    Ok(Manifest::from_toml_str(&text, dir)?)
}

/// A Mosquitto of the bench's own, killed when dropped.
struct Mosquitto {
    child: std::process::Child,
    _dir: tempfile::TempDir,
    address: String,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto(max_inflight: u32) -> anyhow::Result<Mosquitto> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_queued_messages 0\nmax_inflight_messages {max_inflight}\n"
        ),
    )?;
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("weir bench mesh starts a Mosquitto of its own: is `mosquitto` on the PATH? (or pass --broker HOST:PORT)")?;
    let address = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_err() {
        if Instant::now() > deadline {
            bail!("the bench's Mosquitto did not listen on {address}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Mosquitto {
        child,
        _dir: dir,
        address,
    })
}

pub async fn run(args: MeshBenchArgs) -> anyhow::Result<()> {
    let (own, broker) = match &args.broker {
        Some(broker) => (None, broker.clone()),
        None => {
            let own = mosquitto(args.max_inflight)?;
            let address = own.address.clone();
            (Some(own), address)
        }
    };
    let function = match &args.function {
        Some(f) => f.clone(),
        None => repo_path(
            "examples/telemetry/telemetry-alert/target/wasm32-wasip2/release/telemetry_alert.wasm",
        ),
    };
    if !function.exists() {
        bail!(
            "{} is not built; run `cargo xtask build-guests` (or pass --function)",
            function.display()
        );
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let base = format!("weir-bench-{}-{nanos}", std::process::id());
    let started = Instant::now();
    let (hook, received) = receiver(started).await?;

    let broker_events_per_sec = broker_rate(&broker, &base, args.messages).await?;
    let receiver_requests_per_sec = receiver_rate(hook, args.messages).await?;
    *received.lock().unwrap() = Received::default();

    let dir = temp_dir(&args.dir, "weir-bench-mesh-")?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let log = crate::backend::open("embedded", &data).await?.0;
    let manifest = manifest(dir.path(), &function, &broker, &base, hook)?;
    let node = Node::start(NodeOptions::new(&data, Some(manifest), log)).await?;
    // The source's subscription is in place once a probe is appended.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let topic = format!("{base}/app/probe");
        let probe = move |_| (topic.clone(), br#"{"celsius": 0}"#.to_vec());
        publish(&broker, &format!("{base}-probe"), 1, probe, None).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        if node.status().await?.sources[0].appended > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the source never took a message from {broker}");
        }
    }
    while received.lock().unwrap().requests < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    *received.lock().unwrap() = Received::default();

    let first = Instant::now();
    let cpu_started = super::pipeline::process_cpu_secs()?;
    let publisher = {
        let (broker, id, n) = (broker.clone(), format!("{base}-app-pub"), args.messages);
        let make = readings(&base, "app", started);
        let ahead = (args.backlog > 0).then(|| (received.clone(), args.backlog));
        tokio::spawn(async move { publish(&broker, &id, n, make, ahead).await })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    // Where the backlog waits: each stage's largest lag, from the node's status every
    // 250 ms (a stalled run says which stage stopped).
    let (mut pipeline_lag_max, mut sink_lag_max) = (0, 0);
    let mut sampled = Instant::now();
    while received.lock().unwrap().requests < args.messages {
        if sampled.elapsed() >= Duration::from_millis(250) {
            sampled = Instant::now();
            let status = node.status().await?;
            let pipelines = status.pipelines.iter().map(|p| p.lag);
            pipeline_lag_max = pipelines.fold(pipeline_lag_max, u64::max);
            sink_lag_max = status
                .sinks
                .iter()
                .map(|s| s.lag)
                .fold(sink_lag_max, u64::max);
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} alerts reached the webhook in 300 s",
                received.lock().unwrap().requests,
                args.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = first.elapsed().as_secs_f64();
    let cpus_busy = (super::pipeline::process_cpu_secs()? - cpu_started) / elapsed;
    publisher.await??;
    let mut latencies = std::mem::take(&mut received.lock().unwrap().latencies_us);
    latencies.sort_unstable();
    let status = node.status().await?;
    node.shutdown().await;
    drop(node);

    let rate = args.messages as f64 / elapsed;
    let reference = broker_events_per_sec.min(receiver_requests_per_sec);
    let result = json!({
        "messages": args.messages,
        "broker_max_inflight": own.as_ref().map(|_| args.max_inflight),
        "publisher_backlog": args.backlog,
        "mqtt_to_webhook_events_per_sec": rate.round(),
        "mqtt_to_webhook_p50_us": percentile(&latencies, 0.5),
        "mqtt_to_webhook_p99_us": percentile(&latencies, 0.99),
        "broker_events_per_sec": broker_events_per_sec.round(),
        "receiver_requests_per_sec": receiver_requests_per_sec.round(),
        "mesh_ratio": round2(rate / reference),
        "dead_lettered": status.sinks[0].dead_lettered + status.sources[0].dead_lettered,
        "sink_retries": status.sinks[0].retries,
        "pipeline_lag_max": pipeline_lag_max,
        "sink_lag_max": sink_lag_max,
        "cpus_busy": round2(cpus_busy),
    });
    print_result(&result, args.json)
}
