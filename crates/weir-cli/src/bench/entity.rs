//! `weir bench entity`: commands to the example's order entity over HTTP against
//! single-event publishes of a similar size at the same concurrency, and the disk's own
//! fdatasync latency, all in one run.
//!
//! Each of the `--connections` clients owns `--entities / connections` orders and takes
//! them through place, pay and ship, a step at a time across all of its orders (so
//! consecutive commands of one client go to different entities); when its orders are
//! shipped it starts new ones. Every command is accepted, durable (fsync always) and
//! answered with its events and state.
//!
//! Then the view lag: on a node of its own with the example's `orders-by-customer` view
//! over the order journal, orders are placed at a quarter of the measured command rate,
//! and each one's lag is the time from its command's answer (its event durable) to a query
//! of the view that waited for the command's consistency token returning the order's row.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use weir_engine::{Node, NodeOptions};
use weir_gateway::GatewayOptions;
use weir_manifest::Manifest;

use super::http::{Gateway, Measured, drive, publish};
use super::{percentile, print_result, repo_path, round2, temp_dir};

#[derive(Debug, clap::Args)]
pub struct EntityBenchArgs {
    /// Seconds each figure is measured for.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Keep-alive connections (concurrent clients) of both figures.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Orders in play at once, spread over the clients.
    #[arg(long, default_value_t = 10_000)]
    entities: usize,
    /// Rounds of both figures, interleaved; each is the median of its rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The entity component; default: the example's `order-entity`.
    #[arg(long)]
    function: Option<PathBuf>,
    /// The projection of the view-lag figure; default: the example's `orders-by-customer`.
    #[arg(long)]
    projection: Option<PathBuf>,
    /// Where to put the temporary data directory (removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// The view-lag app: the order entity and the example's view of it.
fn view_manifest(dir: &Path, function: &Path, projection: &Path) -> anyhow::Result<Manifest> {
    let text = format!(
        r#"
[functions.order-entity]
source = {:?}
[functions.orders-by-customer]
source = {:?}
[entities.order]
function = "order-entity"
partitions = 4
[views.orders-by-customer]
function = "orders-by-customer"
entities = ["order"]
key = "order_id"
indexes = ["customer", "status"]
[views.orders-by-customer.columns]
order_id = "text"
customer = "text"
amount = "real"
currency = "text"
status = "text"
version = "integer"
"#,
        function.display().to_string(),
        projection.display().to_string()
    );
    Ok(Manifest::from_toml_str(&text, dir)?)
}

/// Orders placed at `rate` per second for `seconds` on `node`; each one's lag from its
/// command's answer to a view query returning its row, in microseconds, sorted.
async fn view_lags_us(
    node: &std::sync::Arc<Node>,
    rate: f64,
    seconds: f64,
) -> anyhow::Result<Vec<u64>> {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1.0)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        n += 1;
        let node = node.clone();
        tasks.spawn(async move {
            let id = format!("LAG-{n}");
            let outcome = node
                .entity_command("order", &id, "place", STEPS[0].1.as_bytes().to_vec(), None)
                .await?;
            let acked = Instant::now();
            let request = weir_engine::ViewRequest {
                filters: vec![weir_engine::ViewFilter {
                    column: "order_id".into(),
                    op: "eq".into(),
                    value: id.clone(),
                }],
                consistency: vec![outcome.token.to_string()],
                wait: Duration::from_secs(30),
                ..weir_engine::ViewRequest::default()
            };
            let page = node.view_query("orders-by-customer", request).await?;
            let lag = acked.elapsed().as_micros() as u64;
            anyhow::ensure!(page.rows.len() == 1, "order {id} is not in the view");
            anyhow::Ok(lag)
        });
    }
    let mut lags = Vec::new();
    while let Some(lag) = tasks.join_next().await {
        lags.push(lag??);
    }
    lags.sort_unstable();
    Ok(lags)
}

/// The bench app: the order entity (4 journal partitions) and a topic of 4 partitions
/// for the publishes, both fsync always.
fn manifest(dir: &Path, function: &Path) -> anyhow::Result<Manifest> {
    let text = format!(
        r#"
[topics.bench]
partitions = 4
fsync = "always"
[functions.order-entity]
source = {:?}
[entities.order]
function = "order-entity"
partitions = 4
"#,
        function.display().to_string()
    );
    Ok(Manifest::from_toml_str(&text, dir)?)
}

const STEPS: [(&str, &str); 3] = [
    (
        "place",
        r#"{"customer":"CUST-0042","amount":129.95,"currency":"EUR"}"#,
    ),
    ("pay", r#"{"amount":129.95}"#),
    ("ship", ""),
];

/// `connections` clients sending commands for `seconds`; `pass` keeps each round's
/// orders new.
async fn commands(
    addr: std::net::SocketAddr,
    args: &EntityBenchArgs,
    pass: usize,
) -> anyhow::Result<Measured> {
    let per_client = args.entities.div_ceil(args.connections).max(1);
    let (go, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let mut tasks = Vec::with_capacity(args.connections);
    for client in 0..args.connections {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the bench's gateway on {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let mut go = go.subscribe();
        tasks.push(tokio::spawn(async move {
            let deadline = go.recv().await?;
            let mut latencies_us = Vec::new();
            let mut generation = 0usize;
            'run: loop {
                for (command, body) in STEPS {
                    for order in 0..per_client {
                        if Instant::now() >= deadline {
                            break 'run;
                        }
                        let path = format!(
                            "/v1/entities/order/R{pass}G{generation}C{client}-{order}/commands/{command}"
                        );
                        let request = Request::post(path.as_str())
                            .header(hyper::header::HOST, "127.0.0.1")
                            .header(hyper::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from_static(body.as_bytes())))?;
                        let started = Instant::now();
                        sender.ready().await?;
                        let response = sender.send_request(request).await?;
                        let status = response.status();
                        let answer = response.into_body().collect().await?.to_bytes();
                        latencies_us.push(started.elapsed().as_micros() as u64);
                        anyhow::ensure!(
                            status == StatusCode::OK,
                            "POST {path} answered {status}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                    }
                }
                generation += 1;
            }
            drop(sender);
            let _ = connection.await;
            anyhow::Ok(latencies_us)
        }));
    }
    let started = Instant::now();
    go.send(started + Duration::from_secs_f64(args.seconds))?;
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Measured {
        requests_per_sec: latencies.len() as f64 / secs,
        p99_us: percentile(&latencies, 0.99),
    })
}

pub async fn run(args: EntityBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.connections > 0 && args.entities > 0 && args.rounds > 0,
        "--seconds, --connections, --entities and --rounds must be positive"
    );
    let function = args.function.clone().unwrap_or_else(|| {
        repo_path("examples/orders/order-entity/target/wasm32-wasip2/release/order_entity.wasm")
    });
    anyhow::ensure!(
        function.exists(),
        "{} does not exist; build it with `cargo xtask bench entity` or pass --function",
        function.display()
    );
    let projection = args.projection.clone().unwrap_or_else(|| {
        repo_path(
            "examples/orders/orders-by-customer/target/wasm32-wasip2/release/orders_by_customer.wasm",
        )
    });
    anyhow::ensure!(
        projection.exists(),
        "{} does not exist; build it with `cargo xtask bench entity` or pass --projection",
        projection.display()
    );
    let dir = temp_dir(&args.dir, "weir-bench-entity-")?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;
    let fsync_p99 = percentile(&super::fsync_latencies_us(dir.path())?, 0.99);

    let log = crate::backend::open("embedded", &data).await?.0;
    let node = Node::start(NodeOptions::new(
        &data,
        Some(manifest(&data, &function)?),
        log,
    ))
    .await?;
    let gateway = Gateway::start(node.clone(), GatewayOptions::default()).await?;
    let mut command_rounds = Vec::new();
    let mut publish_rounds = Vec::new();
    for round in 0..args.rounds {
        command_rounds.push(commands(gateway.addr, &args, round).await?);
        publish_rounds
            .push(drive(gateway.addr, publish(None), args.connections, args.seconds).await?);
    }
    gateway.stop().await?;
    node.shutdown().await;
    drop(node);

    let median = |values: &[Measured], figure: fn(&Measured) -> f64| {
        let mut values: Vec<f64> = values.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let commands_per_sec = median(&command_rounds, |m| m.requests_per_sec);
    let publishes_per_sec = median(&publish_rounds, |m| m.requests_per_sec);

    let view_data = dir.path().join("view-data");
    std::fs::create_dir_all(&view_data)?;
    let log = crate::backend::open("embedded", &view_data).await?.0;
    let node = Node::start(NodeOptions::new(
        &view_data,
        Some(view_manifest(&view_data, &function, &projection)?),
        log,
    ))
    .await?;
    let view_rate = commands_per_sec / 4.0;
    let lags = view_lags_us(&node, view_rate, args.seconds * args.rounds as f64).await?;
    node.shutdown().await;
    drop(node);
    let view_lag_p99_ms = percentile(&lags, 0.99) as f64 / 1000.0;
    let result = json!({
        "bench": "entity",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "entities": args.entities,
        "fsync": "always",
        "commands_per_sec": commands_per_sec.round(),
        "command_p99_us": median(&command_rounds, |m| m.p99_us as f64) as u64,
        "publish_requests_per_sec": publishes_per_sec.round(),
        "publish_p99_us": median(&publish_rounds, |m| m.p99_us as f64) as u64,
        "fsync_p99_us": fsync_p99,
        "commands_to_publishes": round2(commands_per_sec / publishes_per_sec),
        "view_rate_per_sec": view_rate.round(),
        "view_lag_p50_ms": round2(percentile(&lags, 0.5) as f64 / 1000.0),
        "view_lag_p99_ms": round2(view_lag_p99_ms),
        // The target: view_lag_p99_ms <= 20 x fsync_p99_us (in ms), so <= 1.
        "view_lag_to_20_fsyncs": round2(view_lag_p99_ms * 1000.0 / (20.0 * fsync_p99 as f64)),
    });
    print_result(&result, args.json)
}
