//! `weir bench log --backend nats://…`: the log bench's workload through weir on a
//! broker, the same workload sent by a plain client of that broker (async-nats: a
//! publish per event, every acknowledgement awaited, batches pipelined) in the same run,
//! and the embedded log at equal durability.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use async_nats::jetstream::{self, stream};
use serde_json::json;
use weir_log::{EventLog, Expect, Record, TopicSpec};
use weir_log_nats::{NatsLog, NatsOptions, ServerSync};

use super::{LogBenchArgs, percentile, print_result, produce, round2};

pub(super) async fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.producers > 0 && args.batch > 0 && args.events > 0 && args.partitions > 0,
        "--producers, --batch, --events and --partitions must be positive"
    );
    let options = NatsOptions::from_url(&args.backend).with_context(|| {
        format!(
            "--backend {} is not a backend the bench knows",
            args.backend
        )
    })?;
    let log = Arc::new(NatsLog::open(options.clone()).await?);
    let topic = format!("bench-{}", std::process::id());
    log.create_topic(&topic, &TopicSpec::with_partitions(args.partitions))
        .await?;
    let value = bytes::Bytes::from(vec![b'x'; args.event_bytes]);
    let per_producer = args.events.div_ceil(args.producers);
    let through = through_weir(log.clone(), &topic, &args, &value, per_producer).await?;
    log.delete_topic(&topic).await?;

    // The same workload from a plain async-nats client, into streams of the same kind.
    let (raw_secs, raw_latencies) = raw_client(&options, &args, &value, per_producer).await?;

    // The embedded log at the durability the server declares.
    let embedded_fsync = match options.sync {
        ServerSync::Always => "always".to_owned(),
        ServerSync::Interval { ms } => format!("interval:{ms}"),
    };
    let embedded = super::log(&LogBenchArgs {
        backend: "embedded".into(),
        fsync: embedded_fsync.clone(),
        atomic: false,
        json: false,
        dir: args.dir.clone(),
        ..args
    })
    .await?;

    let mut result = result("nats", &args, &through, raw_secs, &raw_latencies, &embedded);
    result["server_sync"] = json!(embedded_fsync);
    print_result(&result, args.json)
}

/// What the bench measured through weir on a backend.
pub(super) struct Through {
    secs: f64,
    latencies: Vec<u64>,
    appended: usize,
    read_events_per_sec: f64,
}

/// Appends `per_producer` events from each of `args.producers` producers to `topic`
/// through weir, then reads partition 0 back with a reader, as a pipeline does.
pub(super) async fn through_weir(
    log: weir_log::SharedLog,
    topic: &str,
    args: &LogBenchArgs,
    value: &bytes::Bytes,
    per_producer: usize,
) -> anyhow::Result<Through> {
    let (secs, latencies) = {
        let (log, value, topic, partitions) = (
            log.clone(),
            value.clone(),
            topic.to_owned(),
            args.partitions,
        );
        produce(args.producers, per_producer, args.batch, move |p, n| {
            let (log, value, topic) = (log.clone(), value.clone(), topic.clone());
            async move {
                let records = (0..n).map(|_| Record::new(value.clone())).collect();
                log.append_to(&topic, p as u32 % partitions, records, Expect::Any)
                    .await?;
                Ok(())
            }
        })
        .await?
    };
    let end = log.offsets(topic, 0).await?.end;
    let mut reader = log.reader(topic, 0, 0).await?;
    let started = Instant::now();
    let mut read = 0u64;
    while reader.position() < end {
        let batch = reader.read(10_000).await?;
        if batch.records.is_empty() {
            break;
        }
        read += batch.records.len() as u64;
    }
    let read_secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok(Through {
        secs,
        latencies,
        appended: per_producer * args.producers,
        read_events_per_sec: read as f64 / read_secs,
    })
}

/// The bench's result: weir on `backend`, the plain client's run of the same workload,
/// and the embedded log's.
pub(super) fn result(
    backend: &str,
    args: &LogBenchArgs,
    through: &Through,
    raw_secs: f64,
    raw_latencies: &[u64],
    embedded: &serde_json::Value,
) -> serde_json::Value {
    let weir_rate = through.appended as f64 / through.secs;
    let raw_rate = through.appended as f64 / raw_secs;
    json!({
        "bench": "log",
        "backend": backend,
        "event_bytes": args.event_bytes,
        "producers": args.producers,
        "batch": args.batch,
        "partitions": args.partitions,
        "events": through.appended,
        "append_events_per_sec": weir_rate.round(),
        "append_p50_us": percentile(&through.latencies, 0.50),
        "append_p99_us": percentile(&through.latencies, 0.99),
        "read_events_per_sec": through.read_events_per_sec.round(),
        "raw_client_events_per_sec": raw_rate.round(),
        "raw_client_p50_us": percentile(raw_latencies, 0.50),
        "raw_client_p99_us": percentile(raw_latencies, 0.99),
        "backend_raw_ratio": round2(weir_rate / raw_rate),
        "embedded_fsync": embedded["fsync"],
        "embedded_events_per_sec": embedded["append_events_per_sec"],
        "disk_seq_write_mb_per_sec": embedded["disk_seq_write_mb_per_sec"],
    })
}

/// Seconds to send `per_producer` events from each of `args.producers` producers with a
/// plain JetStream client (a publish per event, a batch's acknowledgements awaited
/// together), and each batch's latency in microseconds, sorted.
async fn raw_client(
    options: &NatsOptions,
    args: &LogBenchArgs,
    value: &bytes::Bytes,
    per_producer: usize,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let client = async_nats::connect(options.servers.clone())
        .await
        .context("cannot connect the plain client")?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(10_000)
        .build(client);
    let prefix = options.prefix.clone();
    let name = move |p: u32| format!("{prefix}_rawbench{}_{p}", std::process::id());
    for p in 0..args.partitions {
        js.create_stream(stream::Config {
            name: name(p),
            subjects: vec![format!("{}.{p}", name(p))],
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            ..Default::default()
        })
        .await
        .context("cannot make the plain client's stream")?;
    }
    let partitions = args.partitions;
    let (secs, latencies) = produce(args.producers, per_producer, args.batch, {
        let (js, value, name) = (js.clone(), value.clone(), name.clone());
        move |p, n| {
            let (js, value) = (js.clone(), value.clone());
            let partition = p as u32 % partitions;
            let subject = format!("{}.{partition}", name(partition));
            async move {
                let mut acks = Vec::with_capacity(n);
                for _ in 0..n {
                    acks.push(js.publish(subject.clone(), value.clone()).await?);
                }
                for ack in acks {
                    ack.await?;
                }
                Ok(())
            }
        }
    })
    .await?;
    for p in 0..args.partitions {
        js.delete_stream(name(p)).await?;
    }
    Ok((secs, latencies))
}
