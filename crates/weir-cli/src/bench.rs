//! `weir bench`: measure weir on this machine. With `--json`, the last line of stdout is
//! one JSON object with the figures, for scripts and `docs/benchmarks.md`.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use weir_log_embedded::{Log, LogOptions, Record};

mod backend;
mod entity;
mod fleet;
mod http;
mod kafka;
mod mesh;
mod native;
mod pipeline;
mod wasm;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The embedded log: append throughput and acknowledgement latency, read throughput,
    /// and the disk's own sequential fdatasync bandwidth for comparison. With
    /// `--backend nats://…`: the same workload through weir on that server, sent again by
    /// a plain client of the server, and on the embedded log at equal durability.
    Log(LogBenchArgs),
    /// The function host: cold start, warm call rates, the example's JSON transform, and
    /// memory and restart time with many functions deployed.
    Wasm(wasm::WasmBenchArgs),
    /// A whole pipeline (topic -> the example's JSON transform -> topic, fsync always):
    /// sustained events/s, and end-to-end latency at a fixed offered rate.
    Pipeline(pipeline::PipelineBenchArgs),
    /// The HTTP front door, load generated in-process: /healthz, single-event and batch
    /// publishes (fsync always), the log's own batched rate, and publishes with API-key,
    /// HS256 and ES256 auth.
    Http(http::HttpBenchArgs),
    /// Commands to the example's order entity over HTTP (10,000 entities, 64 clients,
    /// durable) against single-event publishes at the same concurrency, and the disk's
    /// own fdatasync latency.
    Entity(entity::EntityBenchArgs),
    /// A fleet on a shared backend (`--backend nats://…`): one, two, then three workers
    /// run a pipeline whose function waits on a slow HTTP dependency the bench starts;
    /// events/s of each and `fleet_scaling` (three workers' rate ÷ one's).
    Fleet(fleet::FleetBenchArgs),
    /// The event mesh: MQTT → function → signed webhook (durable), against the MQTT
    /// broker's own QoS 1 rate and the bench's webhook receiver alone, in one run.
    Mesh(mesh::MeshBenchArgs),
    #[command(hide = true)]
    WasmRestart(wasm::WasmRestartArgs),
}

#[derive(Debug, clap::Args)]
pub struct LogBenchArgs {
    /// The log to measure: `embedded`, or a broker's URL (`nats://HOST:PORT?sync=always`,
    /// `kafka://HOST:PORT`; the bench makes its own topic and removes it afterwards).
    #[arg(long, default_value = "embedded")]
    backend: String,
    /// Where to put the temporary log (it is removed afterwards); measure the disk you
    /// will run on.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Bytes of each event's value.
    #[arg(long, default_value_t = 100)]
    event_bytes: usize,
    /// Concurrent producers, each awaiting its own acknowledgements.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Events per append call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Events to append in total.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Partitions of the benchmark topic; producer i appends to partition i % partitions.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// always (acknowledge after fsync, group-committed), never, or interval:MS.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Also measure batches spread over every partition, once with `append` (all or
    /// nothing per partition) and once with `append_atomic` (all or nothing across
    /// partitions, through a transaction), each with `--events` events in batches of
    /// `--batch` from `--producers` producers, in the same run.
    #[arg(long)]
    atomic: bool,
    /// On a broker: rounds of weir and the plain client, interleaved (the order
    /// alternating), reporting each rate's median, so a drift of the machine or the
    /// server during the run does not land on one side.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Log(args) if args.backend == "embedded" => {
            let result = log(&args).await?;
            print_result(&result, args.json)
        }
        BenchCommand::Log(args) if args.backend.starts_with("kafka://") => kafka::run(args).await,
        BenchCommand::Log(args) => backend::run(args).await,
        BenchCommand::Pipeline(args) => pipeline::run(args).await,
        BenchCommand::Http(args) => http::run(args).await,
        BenchCommand::Entity(args) => entity::run(args).await,
        BenchCommand::Fleet(args) => fleet::run(args).await,
        BenchCommand::Mesh(args) => mesh::run(args).await,
        BenchCommand::Wasm(args) => tokio::task::spawn_blocking(move || wasm::run(args)).await?,
        BenchCommand::WasmRestart(args) => {
            tokio::task::spawn_blocking(move || wasm::restart(args)).await?
        }
    }
}

/// The embedded log's figures for `args`' workload.
async fn log(args: &LogBenchArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        args.producers > 0 && args.batch > 0 && args.events > 0,
        "--producers, --batch and --events must be positive"
    );
    let dir = temp_dir(&args.dir, "weir-bench-log-")?;

    let disk_mb_per_sec = disk_seq_write_mb_per_sec(dir.path())?;

    let log = Log::open(&dir.path().join("log"), LogOptions::default())?;
    let fsync = match args.fsync.as_str() {
        "always" => weir_log_embedded::FsyncPolicy::Always,
        "never" => weir_log_embedded::FsyncPolicy::Never,
        other => match other
            .strip_prefix("interval:")
            .and_then(|ms| ms.parse().ok())
        {
            Some(ms) => weir_log_embedded::FsyncPolicy::Interval { ms },
            None => anyhow::bail!("--fsync is {other:?}; use always, never or interval:MS"),
        },
    };
    let config = weir_log_embedded::TopicConfig {
        fsync,
        ..weir_log_embedded::TopicConfig::with_partitions(args.partitions)
    };
    log.create_topic("bench", &config)?;
    let fsync = args.fsync.clone();

    let per_producer = args.events.div_ceil(args.producers);
    let value = bytes::Bytes::from(vec![b'x'; args.event_bytes]);
    let (append_secs, latencies) = {
        let (log, value, partitions) = (log.clone(), value.clone(), args.partitions);
        produce(args.producers, per_producer, args.batch, move |p, n| {
            let (log, value) = (log.clone(), value.clone());
            async move {
                let records = (0..n).map(|_| Record::new(value.clone())).collect();
                log.append_to("bench", p as u32 % partitions, records)
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    let appended = per_producer * args.producers;

    // Read partition 0 from the start, as one consumer would.
    let end = log.end_offset("bench", 0)?;
    let started = Instant::now();
    let mut next = 0;
    let mut read = 0u64;
    while next < end {
        let records = log.read("bench", 0, next, 10_000)?;
        let Some(last) = records.last() else { break };
        next = last.offset + 1;
        read += records.len() as u64;
    }
    let read_secs = started.elapsed().as_secs_f64().max(1e-9);

    let spread = if args.atomic {
        let plain = spread_append(&log, args, &value, false).await?;
        let atomic = spread_append(&log, args, &value, true).await?;
        Some((plain, atomic))
    } else {
        None
    };
    drop(log);

    let append_mb = appended as f64 * args.event_bytes as f64 / 1e6;
    let result = json!({
        "bench": "log",
        "backend": "embedded",
        "event_bytes": args.event_bytes,
        "producers": args.producers,
        "batch": args.batch,
        "partitions": args.partitions,
        "fsync": fsync,
        "events": appended,
        "append_events_per_sec": (appended as f64 / append_secs).round(),
        "append_mb_per_sec": round2(append_mb / append_secs),
        "append_p50_us": percentile(&latencies, 0.50),
        "append_p99_us": percentile(&latencies, 0.99),
        "read_events_per_sec": (read as f64 / read_secs).round(),
        "disk_seq_write_mb_per_sec": round2(disk_mb_per_sec),
    });
    let mut result = result;
    if let Some((plain, atomic)) = spread {
        result["spread_append_events_per_sec"] = json!(plain.round());
        result["spread_atomic_events_per_sec"] = json!(atomic.round());
        result["atomic_cost_ratio"] = json!(round2(plain / atomic));
    }
    Ok(result)
}

/// Runs `producers` tasks, each sending `per_producer` events in calls of at most `batch`
/// (`send(producer, events)`, awaited one after the other); the seconds all took, and each
/// call's latency in microseconds, sorted.
async fn produce<F, Fut>(
    producers: usize,
    per_producer: usize,
    batch: usize,
    send: F,
) -> anyhow::Result<(f64, Vec<u64>)>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let send = send.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::with_capacity(per_producer / batch + 1);
            let mut sent = 0;
            while sent < per_producer {
                let n = batch.min(per_producer - sent);
                let t = Instant::now();
                send(p, n).await?;
                latencies_us.push(t.elapsed().as_micros() as u64);
                sent += n;
            }
            anyhow::Ok(latencies_us)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok((secs, latencies))
}

/// Events per second of batches spread round robin over every partition of `bench`:
/// through `append` or, with `atomic`, `append_atomic`.
async fn spread_append(
    log: &Log,
    args: &LogBenchArgs,
    value: &bytes::Bytes,
    atomic: bool,
) -> anyhow::Result<f64> {
    let per_producer = args.events.div_ceil(args.producers);
    let started = Instant::now();
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        let (log, value, batch) = (log.clone(), value.clone(), args.batch);
        producers.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                let n = batch.min(per_producer - sent);
                let records = (0..n).map(|_| Record::new(value.clone())).collect();
                if atomic {
                    log.append_atomic("bench", records).await?;
                } else {
                    log.append("bench", records).await?;
                }
                sent += n;
            }
            anyhow::Ok(())
        }));
    }
    for p in producers {
        p.await??;
    }
    Ok((per_producer * args.producers) as f64 / started.elapsed().as_secs_f64())
}

/// A path in the repository the `weir` binary was built from (guests, the example).
fn repo_path(relative: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// A temporary directory under `parent` (created if needed), removed when dropped.
fn temp_dir(parent: &std::path::Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    std::fs::create_dir_all(parent)?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(parent)
        .with_context(|| format!("cannot make a temporary directory in {}", parent.display()))
}

/// The disk's own fdatasync latency: 4 KiB appended to a file under `dir` that is
/// zero-filled ahead, as the log's segments are, and fdatasynced, over and over for
/// about a second (at least 100 times); the latencies in microseconds, sorted.
fn fsync_latencies_us(dir: &std::path::Path) -> anyhow::Result<Vec<u64>> {
    use std::os::unix::fs::FileExt;
    /// Zero-filled ahead of the writes, 1 MiB at a time, as the log's segments are.
    const AHEAD: u64 = 1 << 20;
    let path = dir.join("fsync-probe");
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = vec![0x5a_u8; 4096];
    let mut latencies = Vec::new();
    let (mut position, mut allocated) = (0u64, 0u64);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) || latencies.len() < 100 {
        if position + 4096 > allocated {
            file.write_all_at(&vec![0; AHEAD as usize], allocated)?;
            allocated += AHEAD;
        }
        let t = Instant::now();
        file.write_all_at(&block, position)?;
        file.sync_data()?;
        latencies.push(t.elapsed().as_micros() as u64);
        position += 4096;
    }
    drop(file);
    std::fs::remove_file(&path)?;
    latencies.sort_unstable();
    Ok(latencies)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Sequential writes of 1 MiB, each followed by fdatasync: the physical limit a durable
/// log is measured against.
fn disk_seq_write_mb_per_sec(dir: &std::path::Path) -> anyhow::Result<f64> {
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 128;
    let path = dir.join("disk-probe");
    let mut file = std::fs::File::create(&path)?;
    let buf = vec![0xA5u8; CHUNK];
    let started = Instant::now();
    for _ in 0..CHUNKS {
        file.write_all(&buf)?;
        file.sync_data()?;
    }
    let secs = started
        .elapsed()
        .max(Duration::from_micros(1))
        .as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok((CHUNK * CHUNKS) as f64 / 1e6 / secs)
}

fn print_result(result: &serde_json::Value, json: bool) -> anyhow::Result<()> {
    if !json {
        if let Some(map) = result.as_object() {
            for (key, value) in map {
                println!("{key:>28}  {value}");
            }
        }
        return Ok(());
    }
    println!("{result}");
    Ok(())
}
