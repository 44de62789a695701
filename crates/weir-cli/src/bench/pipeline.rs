//! `weir bench pipeline`: a whole pipeline in one node — topic → the example's JSON
//! transform (`enrich-order`) → topic, fsync `always`, exactly-once commits.
//!
//! Four figures, from one run:
//! - sustained throughput: a backlog of events published before the pipeline starts,
//!   drained to the end, with the CPU it took, and its ratio to the function's own rate
//!   on this machine (`ceiling_ratio`);
//! - end-to-end latency at a fixed offered rate (by default a quarter of the drain rate):
//!   from the moment a publish is acknowledged to the moment its output is readable, with
//!   the CPU per event at that rate, beside the disk's own fdatasync latency;
//! - the drain rate again while a neighbour pipeline's function spins to its deadline on
//!   every event under a CPU quota, over the rate alone (`neighbour_ratio`);
//! - the drain rate with the input and output types validated against the example's
//!   schemas, over the rate without (`validation_cost_ratio`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::json;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_engine::{Node, NodeOptions, StartFrom};
use weir_manifest::Manifest;

use super::{percentile, print_result, repo_path, round2};

#[derive(Debug, clap::Args)]
pub struct PipelineBenchArgs {
    /// The function; default: the example's `enrich-order`.
    #[arg(long)]
    function: Option<PathBuf>,
    /// Partitions of the source and output topics.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// The pipeline's `concurrency`; default: the example's own (and the manifest's
    /// default), 4.
    #[arg(long, default_value_t = 4)]
    concurrency: u32,
    /// The pipeline's `linger_ms`: how long a partition waits for a fuller batch.
    #[arg(long, default_value_t = 0)]
    linger_ms: u32,
    /// Events in the backlog the throughput figure drains.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Offered rate (events/s) of the latency figure, in steps of 1,000 (events are
    /// published every millisecond); default: a quarter of the drain rate just measured.
    #[arg(long)]
    rate: Option<u64>,
    /// The neighbour's function, which spins to its deadline on every event; default:
    /// the test guests' `guest-infinite-loop`.
    #[arg(long)]
    neighbour_function: Option<PathBuf>,
    /// The neighbour function's `limits.cpu_percent` (0: no quota).
    #[arg(long, default_value_t = 10)]
    neighbour_cpu_percent: u32,
    /// Skip the neighbour figure.
    #[arg(long)]
    no_neighbour: bool,
    /// Seconds the latency figure is measured for.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Where to put the temporary data directory (removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
    /// Run without the logging `weir serve` installs (stderr, `WEIR_LOG`, default `info`),
    /// to see what it costs.
    #[arg(long)]
    no_logging: bool,
    /// Run without the Prometheus recorder `weir serve` installs, to see what recording
    /// the metrics costs.
    #[arg(long)]
    no_metrics: bool,
    /// Open the embedded log with its write-ahead file (`--backend
    /// 'embedded?write_ahead=true'`): small groups of every partition share fdatasyncs,
    /// to compare with each partition fsyncing its own segment, the default.
    #[arg(long)]
    write_ahead: bool,
    /// The embedded log's `commit_delay_us` (`--backend 'embedded?commit_delay_us=N'`): a
    /// partition holds a small group's first append up to this long for others to share
    /// its fdatasync.
    #[arg(long, default_value_t = 0)]
    commit_delay_us: u64,
}

/// The embedded log in `data`, with or without its write-ahead file, opened as `weir
/// serve --backend` opens it.
async fn open_log(args: &PipelineBenchArgs, data: &Path) -> anyhow::Result<weir_log::SharedLog> {
    let backend = format!(
        "embedded?write_ahead={}&commit_delay_us={}",
        args.write_ahead, args.commit_delay_us
    );
    Ok(crate::backend::open(&backend, data).await?.0)
}

/// The example's topics: its function publishes to `crm.orders`.
const IN: &str = "erp.sales-orders";
const OUT: &str = "crm.orders";
/// The neighbour pipeline's input.
const NEIGHBOUR_IN: &str = "bench.neighbour";
/// Where the publishes alone go: no pipeline reads it.
const PUBLISH_ONLY: &str = "bench.publish-only";

/// What the bench app runs.
enum Stage<'a> {
    /// Topics and functions only: the backlog is published.
    Backlog,
    /// The bench pipeline.
    Pipeline,
    /// The bench pipeline and a neighbour pipeline calling this spinning function with
    /// this CPU quota (percent of one core; 0 is none).
    WithNeighbour(&'a Path, u32),
    /// The bench pipeline with the example's schemas for its input and output types, so
    /// that every output is checked before it is committed.
    Validated,
}

/// The example's schema files, by event type.
const SCHEMAS: [(&str, &str); 2] = [
    (
        "SalesOrderCreated",
        "examples/orders/schemas/sales-order-created.v1.json",
    ),
    (
        "crm.order.created",
        "examples/orders/schemas/crm-order-created.v1.json",
    ),
];

/// The bench app: the example's function, config and customers, on topics sized by
/// `args`, with the pipelines `stage` asks for.
fn manifest(args: &PipelineBenchArgs, function: &Path, stage: Stage) -> anyhow::Result<Manifest> {
    let customers = repo_path("examples/orders/customers.json");
    let mut text = format!(
        r#"
[topics."erp.sales-orders"]
partitions = {p}
[topics."crm.orders"]
partitions = {p}
[topics."{PUBLISH_ONLY}"]
partitions = {p}
[functions.enrich-order]
source = {function:?}
config = {{ currency = "EUR", "rate.USD" = "0.92", "rate.GBP" = "1.17" }}
capabilities = {{ keyvalue = ["customers"] }}
[keyvalue.customers]
seed = {customers:?}
[topics."{NEIGHBOUR_IN}"]
partitions = 4
"#,
        p = args.partitions,
        function = function.display().to_string(),
        customers = customers.display().to_string(),
    );
    if !matches!(stage, Stage::Backlog) {
        text.push_str(&format!(
            "[pipelines.bench]\nfrom = \"erp.sales-orders\"\nfunction = \"enrich-order\"\nto = [\"crm.orders\"]\nconcurrency = {}\nlinger_ms = {}\n",
            args.concurrency, args.linger_ms
        ));
    }
    if let Stage::Validated = stage {
        for (ty, file) in SCHEMAS {
            text.push_str(&format!(
                "[schemas.{ty:?}]\nversions = [{:?}]\n",
                repo_path(file).display().to_string()
            ));
        }
    }
    if let Stage::WithNeighbour(spinner, cpu_percent) = stage {
        let quota = match cpu_percent {
            0 => String::new(),
            percent => format!(", cpu_percent = {percent}"),
        };
        // Its calls all end at their deadline, are not retried and go to its dead-letter
        // topic; it never falls behind far enough to idle during the drain.
        text.push_str(&format!(
            r#"[functions.spinner]
source = {spinner:?}
limits = {{ deadline_ms = 100{quota} }}
[pipelines.neighbour]
from = "{NEIGHBOUR_IN}"
function = "spinner"
to = []
concurrency = 4
ordering = "none"
"#,
            spinner = spinner.display().to_string(),
        ));
    }
    Ok(Manifest::from_toml_str(&text, Path::new("."))?)
}

fn order(sample: &CloudEvent, n: usize) -> CloudEvent {
    let mut event = sample.clone();
    event.id = format!("bench-{n}");
    event.extensions.insert(
        "partitionkey".into(),
        ExtensionValue::String(format!("CUST-{}", n % 1000)),
    );
    event
}

async fn total(node: &Node, topic: &str) -> u64 {
    match node.log().topic(topic).await {
        Ok(Some(t)) => t.end_offsets.iter().sum(),
        _ => 0,
    }
}

pub async fn run(args: PipelineBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.partitions > 0 && args.concurrency > 0 && args.events > 0 && args.rate != Some(0),
        "--partitions, --concurrency, --events and --rate must be positive"
    );
    let spinner = args.neighbour_function.clone().unwrap_or_else(|| {
        repo_path("guests/target/wasm32-wasip2/release/guest_infinite_loop.wasm")
    });
    anyhow::ensure!(
        args.no_neighbour || spinner.exists(),
        "{} does not exist; build it with `cargo xtask build-guests`, pass --neighbour-function or --no-neighbour",
        spinner.display()
    );
    let function = args.function.clone().unwrap_or_else(|| {
        repo_path("examples/orders/enrich-order/target/wasm32-wasip2/release/enrich_order.wasm")
    });
    anyhow::ensure!(
        function.exists(),
        "{} does not exist; build it with `cargo xtask example` or pass --function",
        function.display()
    );
    let sample = CloudEvent::from_json_slice(&std::fs::read(repo_path(
        "examples/orders/sales-order-created.json",
    ))?)?;
    // What `weir serve` installs, so the bench pays what a served node pays for its
    // spans (and exports traces when the OTEL_EXPORTER_OTLP_* variables say where).
    let telemetry = match args.no_logging {
        false => Some(crate::subscriber::TelemetryArgs::default().init()?),
        true => None,
    };
    if !args.no_metrics {
        weir_gateway::metrics::install()?;
    }
    let dir = super::temp_dir(&args.dir, "weir-bench-pipeline-")?;
    let data = dir.path().join("data");

    // The disk's own fdatasync latency, the floor of a durable publish's.
    let fsyncs = super::fsync_latencies_us(dir.path())?;

    // The backlog, published before the pipeline exists.
    publish_backlog(&args, &function, &data, &sample, 0, false).await?;

    // Throughput: from the pipeline's start until every output is readable.
    let log = open_log(&args, &data).await?;
    let node = Node::start(NodeOptions::new(
        &data,
        Some(manifest(&args, &function, Stage::Pipeline)?),
        log,
    ))
    .await?;
    let switches_started = process_context_switches()?;
    let (drain, drain_cpu) = drain_backlog(&node, args.events as u64).await?;
    let drain_switches = process_context_switches()? - switches_started;
    let events_per_sec = args.events as f64 / drain;

    // Latency at a fixed offered rate: each event's publish acknowledgement, then the
    // moment its output is readable (outputs carry their input's position in their id).
    let acked: Moments = Arc::default();
    let seen: Moments = Arc::default();
    let mut outputs = node.subscribe(OUT, StartFrom::Latest).await?;
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = outputs.next().await {
                let at = Instant::now();
                // bench:erp.sales-orders:<partition>:<offset>:0
                let mut parts = event.event.id.rsplitn(3, ':').skip(1);
                let (Some(offset), Some(rest)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let partition = rest.rsplit(':').next().and_then(|p| p.parse().ok());
                if let (Some(p), Ok(o)) = (partition, offset.parse::<u64>()) {
                    seen.lock().unwrap().insert((p, o), at);
                }
            }
        })
    };
    let node = Arc::new(node);
    let rate = args.rate.unwrap_or((events_per_sec / 4.0) as u64);
    let per_tick = (rate / 1000).max(1) as usize;
    let batches_started = bench_batches(&node).await?;
    let cpu_started = process_cpu_secs();
    let switches_started = process_context_switches()?;
    let ticks = (args.seconds * 1000.0) as usize;
    let paced = Paced {
        node: &node,
        sample: &sample,
        per_tick,
        ticks,
    };
    paced.publish(IN, args.events, Some(&acked)).await?;
    let expected = acked.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let e2e_cpu = process_cpu_secs()? - cpu_started?;
    let e2e_switches = process_context_switches()? - switches_started;
    let e2e_batches = bench_batches(&node).await? - batches_started;
    watcher.abort();
    let mut latencies: Vec<u64> = {
        let (acked, seen) = (acked.lock().unwrap(), seen.lock().unwrap());
        anyhow::ensure!(
            seen.len() >= expected,
            "only {} of {expected} outputs arrived",
            seen.len()
        );
        acked
            .iter()
            .filter_map(|(pos, at)| {
                seen.get(pos)
                    .map(|s| s.saturating_duration_since(*at).as_micros() as u64)
            })
            .collect()
    };
    latencies.sort_unstable();

    // The same publishes alone, to a topic no pipeline reads: what the e2e figure's CPU
    // holds that the drain's does not (the bench publishes in-process, as a gateway
    // would on the same node).
    let cpu_started = process_cpu_secs();
    let publish_latencies = paced.publish(PUBLISH_ONLY, 0, None).await?;
    let publish_cpu = process_cpu_secs()? - cpu_started?;
    node.shutdown().await;
    drop(node);

    // The drain again, beside a neighbour pipeline whose function spins to its deadline
    // on every event under its CPU quota.
    let neighbour = match args.no_neighbour {
        true => None,
        false => {
            let first = (args.events + ticks * per_tick) as u64;
            publish_backlog(&args, &function, &data, &sample, first as usize, true).await?;
            let log = open_log(&args, &data).await?;
            let node = Node::start(NodeOptions::new(
                &data,
                Some(manifest(
                    &args,
                    &function,
                    Stage::WithNeighbour(&spinner, args.neighbour_cpu_percent),
                )?),
                log,
            ))
            .await?;
            let (seconds, cpu) = drain_backlog(&node, first + args.events as u64).await?;
            // Its outputs are readable a moment before its status counts them: once it
            // has committed everything, it must have handled exactly the new events.
            let settled = Instant::now() + Duration::from_secs(10);
            let bench = loop {
                let status = node.status().await?;
                let bench = status.pipelines.into_iter().find(|p| p.name == "bench");
                if bench.as_ref().is_none_or(|b| b.lag == 0) || Instant::now() > settled {
                    break bench;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            };
            anyhow::ensure!(
                bench
                    .as_ref()
                    .is_some_and(|b| b.processed == args.events as u64),
                "the bench pipeline handled other than the {} new events beside its neighbour: {bench:?}",
                args.events
            );
            node.shutdown().await;
            Some((args.events as f64 / seconds, cpu / seconds))
        }
    };

    // The drain with the input and output types' schemas: the pipeline checks each output
    // before its commit; the inputs were checked when they were published, which a drain
    // does not time, so that check is timed apart, on one thread, as a publish runs it
    // (find the schema, parse the data, validate), and added in full, as if serial.
    // Its reference is the same drain without schemas, measured beside it: a pair of
    // drains (plain, validated), each from a data directory of its own holding only the
    // backlog, run twice in alternating order, the better of each kept. The first drain
    // above is not the reference: the latency and neighbour phases since have left the
    // disk and the page cache in another state, which moved a later drain's rate by more
    // than the validation costs.
    let validated = {
        let mut plain = (0.0f64, f64::MAX);
        let mut checked = (0.0f64, f64::MAX);
        for (round, stage_first) in [(0, false), (1, true)] {
            for validate in [stage_first, !stage_first] {
                let name = format!(
                    "data-{}-{round}",
                    if validate { "validated" } else { "plain" }
                );
                let stage = if validate {
                    Stage::Validated
                } else {
                    Stage::Pipeline
                };
                let (rate, cpu) =
                    drain_fresh(&args, &function, &dir.path().join(name), &sample, stage).await?;
                let best = if validate { &mut checked } else { &mut plain };
                *best = (best.0.max(rate), best.1.min(cpu));
            }
        }
        let input_check = input_check_secs(&sample, args.events)?;
        (plain, checked, input_check)
    };

    // What the function alone costs on this machine now: the pipeline's ceiling.
    let function_rate = {
        let host = super::wasm::transform_host()?;
        let transform = super::wasm::load_transform(&host, &std::fs::read(&function)?)?;
        let pool = transform.instances();
        let event = order(&sample, 0);
        super::wasm::rate(2.0, || Ok(pool.call(&event).map(drop)?))?
    };

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let e2e_events = expected.max(1) as f64;
    let publish_events = (ticks * per_tick).max(1) as f64;
    let mut result = json!({
        "bench": "pipeline",
        "function": function.file_name().and_then(|f| f.to_str()).unwrap_or_default(),
        "fsync": "always",
        "events": args.events,
        "events_per_sec": round2(events_per_sec),
        "e2e_rate": per_tick * 1000,
        "e2e_cpu_us_per_event": round2(e2e_cpu * 1e6 / e2e_events),
        "e2e_context_switches_per_event": round2(e2e_switches as f64 / e2e_events),
        "e2e_events_per_batch": round2(e2e_events / e2e_batches.max(1) as f64),
        "publish_cpu_us_per_event": round2(publish_cpu * 1e6 / publish_events),
        "publish_p50_us": percentile(&publish_latencies, 0.50),
        "publish_p99_us": percentile(&publish_latencies, 0.99),
        "e2e_samples": latencies.len(),
        "e2e_p50_us": percentile(&latencies, 0.50),
        "e2e_p99_us": percentile(&latencies, 0.99),
        "e2e_max_us": latencies.last().copied().unwrap_or(0),
        "partitions": args.partitions,
        "concurrency": args.concurrency,
        "linger_ms": args.linger_ms,
        "logging": !args.no_logging,
        "metrics": !args.no_metrics,
        "write_ahead": args.write_ahead,
        "commit_delay_us": args.commit_delay_us,
        "drain_cpu_us_per_event": round2(drain_cpu * 1e6 / args.events as f64),
        "drain_context_switches_per_event": round2(drain_switches as f64 / args.events as f64),
        "function_calls_per_sec_one_core": function_rate.round(),
        "function_cpu_us_per_call": round2(1e6 / function_rate),
        "cores": cores,
        "ceiling_ratio": round2(events_per_sec / function_rate / cores),
        "fsync_p50_us": percentile(&fsyncs, 0.50),
        "fsync_p99_us": percentile(&fsyncs, 0.99),
        "e2e_cpu_to_drain": round2(e2e_cpu / e2e_events / (drain_cpu / args.events as f64)),
        "e2e_less_publish_cpu_to_drain": round2(
            (e2e_cpu / e2e_events - publish_cpu / publish_events)
                / (drain_cpu / args.events as f64)
        ),
        "e2e_p99_to_fsync_p99": round2(
            percentile(&latencies, 0.99) as f64 / percentile(&fsyncs, 0.99).max(1) as f64
        ),
    });
    if let (Some((rate, cores_busy)), Some(map)) = (neighbour, result.as_object_mut()) {
        map.insert("neighbour_events_per_sec".into(), json!(round2(rate)));
        map.insert(
            "neighbour_cpu_percent".into(),
            json!(args.neighbour_cpu_percent),
        );
        // The node's CPU (both pipelines) over the wall time of that drain, in cores.
        map.insert(
            "neighbour_drain_cores_busy".into(),
            json!(round2(cores_busy)),
        );
        map.insert("drain_cores_busy".into(), json!(round2(drain_cpu / drain)));
        map.insert(
            "neighbour_ratio".into(),
            json!(round2(rate / events_per_sec)),
        );
    }
    if let Some(map) = result.as_object_mut() {
        let ((plain_rate, plain_cpu), (checked_rate, checked_cpu), input_check) = validated;
        let events = args.events as f64;
        let validated_rate = events / (events / checked_rate + input_check);
        let us = |seconds: f64| round2(seconds * 1e6 / events);
        for (key, value) in [
            ("drain_events_per_sec_plain", round2(plain_rate)),
            ("drain_cpu_us_per_event_plain", us(plain_cpu)),
            (
                "drain_events_per_sec_outputs_validated",
                round2(checked_rate),
            ),
            ("drain_cpu_us_per_event_outputs_validated", us(checked_cpu)),
            ("input_validation_us_per_event", us(input_check)),
            ("events_per_sec_validated", round2(validated_rate)),
            ("validation_cost_ratio", round2(plain_rate / validated_rate)),
            // The same cost in CPU, steadier than wall time on a shared machine.
            (
                "validation_cpu_ratio",
                round2((checked_cpu + input_check) / plain_cpu),
            ),
        ] {
            map.insert(key.into(), json!(value));
        }
    }
    if let Some(telemetry) = telemetry {
        telemetry.shutdown().await;
    }
    print_result(&result, args.json)
}

/// The seconds one thread takes to check `events` orders against the example's input
/// schema as a publish does: find the version, parse the data, validate.
fn input_check_secs(sample: &CloudEvent, events: usize) -> anyhow::Result<f64> {
    let mut registry = weir_schema::Registry::default();
    for (ty, file) in SCHEMAS {
        let document = serde_json::from_slice(&std::fs::read(repo_path(file))?)?;
        if let weir_schema::Prepared::New(schema) = registry.prepare(ty, 1, document, None)? {
            registry.insert(schema);
        }
    }
    let orders: Vec<CloudEvent> = (0..events.min(100_000)).map(|n| order(sample, n)).collect();
    let started = Instant::now();
    for event in &orders {
        // Required, so that an order without a schema would fail rather than pass unchecked.
        weir_engine::check_schema(&registry, IN, true, event)
            .map_err(|e| anyhow::anyhow!("the sample order fails the example's schema: {e}"))?;
    }
    Ok(started.elapsed().as_secs_f64() * events as f64 / orders.len() as f64)
}

/// When each position (partition, offset) was acknowledged or seen.
type Moments = Arc<Mutex<HashMap<(u32, u64), Instant>>>;

/// Single-event publishes at a fixed rate: `per_tick` every millisecond for `ticks`.
struct Paced<'a> {
    node: &'a Arc<Node>,
    sample: &'a CloudEvent,
    per_tick: usize,
    ticks: usize,
}

impl Paced<'_> {
    /// Publishes orders numbered from `first` to `topic`, each on its own, and notes
    /// when each was acknowledged in `acked`; returns each publish's latency (µs, from
    /// the call to its acknowledgement), sorted.
    async fn publish(
        &self,
        topic: &'static str,
        first: usize,
        acked: Option<&Moments>,
    ) -> anyhow::Result<Vec<u64>> {
        let mut interval = tokio::time::interval(Duration::from_millis(1));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut publishes = Vec::with_capacity(self.ticks * self.per_tick);
        for t in 0..self.ticks {
            interval.tick().await;
            for i in 0..self.per_tick {
                let (node, acked, event) = (
                    self.node.clone(),
                    acked.cloned(),
                    order(self.sample, first + t * self.per_tick + i),
                );
                publishes.push(tokio::spawn(async move {
                    let called = Instant::now();
                    let positions = node.publish(topic, std::slice::from_ref(&event)).await?;
                    let at = Instant::now();
                    if let Some(acked) = acked {
                        let mut acked = acked.lock().unwrap();
                        for p in positions {
                            acked.insert((p.partition, p.offset), at);
                        }
                    }
                    anyhow::Ok(at.saturating_duration_since(called).as_micros() as u64)
                }));
            }
        }
        let mut latencies = Vec::with_capacity(publishes.len());
        for p in publishes {
            latencies.push(p.await??);
        }
        latencies.sort_unstable();
        Ok(latencies)
    }
}

/// The batches the bench pipeline has committed.
async fn bench_batches(node: &Node) -> anyhow::Result<u64> {
    let status = node.status().await?;
    let bench = status.pipelines.iter().find(|p| p.name == "bench");
    bench
        .map(|p| p.batches)
        .ok_or_else(|| anyhow::anyhow!("the bench pipeline is not running"))
}

/// Publish `args.events` orders numbered from `first` to the bench's input (and, with
/// `neighbour`, as many to the neighbour's), on a node running no pipeline.
async fn publish_backlog(
    args: &PipelineBenchArgs,
    function: &Path,
    data: &Path,
    sample: &CloudEvent,
    first: usize,
    neighbour: bool,
) -> anyhow::Result<()> {
    let log = open_log(args, data).await?;
    let node = Node::start(NodeOptions::new(
        data,
        Some(manifest(args, function, Stage::Backlog)?),
        log,
    ))
    .await?;
    let mut n = first;
    while n < first + args.events {
        let batch: Vec<_> = (n..(n + 1000).min(first + args.events))
            .map(|i| order(sample, i))
            .collect();
        n += batch.len();
        node.publish(IN, &batch).await?;
        if neighbour {
            node.publish(NEIGHBOUR_IN, &batch).await?;
        }
    }
    node.shutdown().await;
    Ok(())
}

/// A backlog published into `data` (a new directory), drained by a node running `stage`:
/// events per second, and CPU seconds the drain took.
async fn drain_fresh(
    args: &PipelineBenchArgs,
    function: &Path,
    data: &Path,
    sample: &CloudEvent,
    stage: Stage<'_>,
) -> anyhow::Result<(f64, f64)> {
    publish_backlog(args, function, data, sample, 0, false).await?;
    let log = open_log(args, data).await?;
    let node = Node::start(NodeOptions::new(
        data,
        Some(manifest(args, function, stage)?),
        log,
    ))
    .await?;
    let (seconds, cpu) = drain_backlog(&node, args.events as u64).await?;
    node.shutdown().await;
    // The next drain writes to a disk without this one's files.
    std::fs::remove_dir_all(data).with_context(|| format!("cannot remove {}", data.display()))?;
    Ok((args.events as f64 / seconds, cpu))
}

/// Wait until the bench pipeline's outputs number `target`: the seconds and the
/// process's CPU seconds it took.
async fn drain_backlog(node: &Node, target: u64) -> anyhow::Result<(f64, f64)> {
    let started = Instant::now();
    let cpu_started = process_cpu_secs();
    while total(node, OUT).await < target {
        let status = node.status().await?;
        let Some(status) = status.pipelines.iter().find(|p| p.name == "bench") else {
            anyhow::bail!("the bench pipeline is not running");
        };
        if status.dead_lettered > 0 {
            let first = node.read("bench.dlq", 0, 0, 1).await?;
            let error = first
                .first()
                .and_then(|e| e.event.extensions.get("dlqerror").cloned());
            anyhow::bail!("the function dead-lettered events of the bench: {error:?}");
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the pipeline did not finish the backlog in 10 minutes: {} of {target}; {status:?}",
            total(node, OUT).await
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok((
        started.elapsed().as_secs_f64(),
        process_cpu_secs()? - cpu_started?,
    ))
}

/// Context switches (voluntary and involuntary) of every thread this process has had,
/// from `getrusage`: how often an event's work crosses between threads.
pub(super) fn process_context_switches() -> anyhow::Result<u64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .context("getrusage failed")?;
    let switches = usage.voluntary_context_switches() + usage.involuntary_context_switches();
    Ok(u64::try_from(switches).unwrap_or_default())
}

/// CPU seconds (user and system) this process has used, from `/proc/self/stat`: on a
/// shared machine the CPU an event costs is steadier than the wall time it takes.
pub(super) fn process_cpu_secs() -> anyhow::Result<f64> {
    cpu_secs_of("self")
}

/// CPU seconds (user and system) process `pid` (or `self`) has used, from
/// `/proc/PID/stat`.
pub(super) fn cpu_secs_of(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at its closing paren;
    // utime and stime are the 14th and 15th fields of the whole line.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("/proc/self/stat has no command name")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .context("/proc/self/stat is too short")?
        .iter()
        .map(|f| f.parse::<f64>())
        .sum::<Result<f64, _>>()?;
    // The kernel reports in USER_HZ, 100 on every Linux weir runs on.
    Ok(ticks / 100.0)
}
