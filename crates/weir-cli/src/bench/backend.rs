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
    check_counts(&args)?;
    let options = NatsOptions::from_url(&args.backend).with_context(|| {
        format!(
            "--backend {} is not a backend the bench knows",
            args.backend
        )
    })?;
    let log = Arc::new(NatsLog::open(options.clone()).await?);
    // A call of one record is a plain publish through weir too.
    let atomic = args.batch > 1
        && log.guarantees(&TopicSpec::with_partitions(1)).atomicity
            == weir_log::Atomicity::CallPerPartition;
    let value = bytes::Bytes::from(vec![b'x'; args.event_bytes]);
    let per_producer = args.events.div_ceil(args.producers);

    // weir, a plain client's publishes and (where the server has them) a plain client's
    // atomic batches: weir's promise for a call's records, all or none, bought from the
    // server directly. Interleaved, the order turning each round.
    let (mut through, mut raw, mut raw_atomic) =
        (Rounds::default(), Rounds::default(), Rounds::default());
    let contenders = if atomic { 3 } else { 2 };
    for round in 0..args.rounds {
        for k in 0..contenders {
            match (k + round) % contenders {
                0 => {
                    let topic = format!("bench-{}-{round}", std::process::id());
                    log.create_topic(&topic, &TopicSpec::with_partitions(args.partitions))
                        .await?;
                    through
                        .add(through_weir(log.clone(), &topic, &args, &value, per_producer).await?);
                    log.delete_topic(&topic).await?;
                }
                1 => raw.add(raw_client(&options, &args, &value, per_producer, false).await?),
                _ => raw_atomic.add(raw_client(&options, &args, &value, per_producer, true).await?),
            }
        }
    }

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

    let mut result = result("nats", &args, &through, &raw, &embedded);
    result["server_sync"] = json!(embedded_fsync);
    if atomic {
        let rate = raw_atomic.median_rate();
        result["raw_client_atomic_events_per_sec"] = json!(rate.round());
        result["backend_raw_atomic_ratio"] = json!(round2(through.median_rate() / rate));
    }
    print_result(&result, args.json)
}

/// Refuses counts the bench divides by or loops over when they are not positive.
pub(super) fn check_counts(args: &LogBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.producers > 0
            && args.batch > 0
            && args.events > 0
            && args.partitions > 0
            && args.rounds > 0,
        "--producers, --batch, --events, --partitions and --rounds must be positive"
    );
    Ok(())
}

/// One side's rounds: each round's rate, every call's latency in microseconds, and (for
/// weir) each round's read-back rate.
#[derive(Default)]
pub(super) struct Rounds {
    rates: Vec<f64>,
    latencies: Vec<u64>,
    read_rates: Vec<f64>,
    events: usize,
}

impl Rounds {
    pub(super) fn add(&mut self, measured: Through) {
        self.rates.push(measured.appended as f64 / measured.secs);
        self.latencies.extend(measured.latencies);
        self.latencies.sort_unstable();
        if let Some(read) = measured.read_events_per_sec {
            self.read_rates.push(read);
        }
        self.events = measured.appended;
    }

    pub(super) fn median_rate(&self) -> f64 {
        median(&self.rates)
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// What the bench measured through weir on a backend.
pub(super) struct Through {
    pub(super) secs: f64,
    pub(super) latencies: Vec<u64>,
    pub(super) appended: usize,
    /// Reading back, for weir's side.
    pub(super) read_events_per_sec: Option<f64>,
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
        read_events_per_sec: Some(read as f64 / read_secs),
    })
}

/// The bench's result: weir on `backend`, the plain client's rounds of the same workload,
/// and the embedded log's; rates are medians of the rounds.
pub(super) fn result(
    backend: &str,
    args: &LogBenchArgs,
    through: &Rounds,
    raw: &Rounds,
    embedded: &serde_json::Value,
) -> serde_json::Value {
    let weir_rate = through.median_rate();
    let raw_rate = raw.median_rate();
    json!({
        "bench": "log",
        "backend": backend,
        "event_bytes": args.event_bytes,
        "producers": args.producers,
        "batch": args.batch,
        "partitions": args.partitions,
        "events": through.events,
        "rounds": args.rounds,
        "append_events_per_sec": weir_rate.round(),
        "append_events_per_sec_rounds": through.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "append_p50_us": percentile(&through.latencies, 0.50),
        "append_p99_us": percentile(&through.latencies, 0.99),
        "read_events_per_sec": median(&through.read_rates).round(),
        "raw_client_events_per_sec": raw_rate.round(),
        "raw_client_events_per_sec_rounds": raw.rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "raw_client_p50_us": percentile(&raw.latencies, 0.50),
        "raw_client_p99_us": percentile(&raw.latencies, 0.99),
        "backend_raw_ratio": round2(weir_rate / raw_rate),
        "embedded_fsync": embedded["fsync"],
        "embedded_events_per_sec": embedded["append_events_per_sec"],
        "disk_seq_write_mb_per_sec": embedded["disk_seq_write_mb_per_sec"],
    })
}

/// `per_producer` events from each of `args.producers` producers sent with a plain
/// JetStream client into streams of the same kind: a publish per event, a call's
/// acknowledgements awaited together, or with `atomic` a call's events as one atomic batch
/// (`Nats-Batch-Id`, `Nats-Batch-Sequence`, the last with `Nats-Batch-Commit` and a reply).
async fn raw_client(
    options: &NatsOptions,
    args: &LogBenchArgs,
    value: &bytes::Bytes,
    per_producer: usize,
    atomic: bool,
) -> anyhow::Result<Through> {
    let client = async_nats::connect(options.servers.clone())
        .await
        .context("cannot connect the plain client")?;
    let js = jetstream::ContextBuilder::new()
        .max_ack_inflight(10_000)
        .build(client.clone());
    let prefix = format!(
        "{}_rawbench{}{}",
        options.prefix,
        std::process::id(),
        if atomic { "a" } else { "" }
    );
    let name = move |p: u32| format!("{prefix}_{p}");
    for p in 0..args.partitions {
        js.create_stream(stream::Config {
            name: name(p),
            subjects: vec![format!("{}.{p}", name(p))],
            storage: stream::StorageType::File,
            num_replicas: options.replicas,
            allow_atomic_publish: atomic,
            ..Default::default()
        })
        .await
        .context("cannot make the plain client's stream")?;
    }
    let partitions = args.partitions;
    let (secs, latencies) = produce(args.producers, per_producer, args.batch, {
        let (js, value, name) = (js.clone(), value.clone(), name.clone());
        move |p, n| {
            let (js, client, value) = (js.clone(), client.clone(), value.clone());
            let partition = p as u32 % partitions;
            let subject = format!("{}.{partition}", name(partition));
            async move {
                if atomic {
                    return atomic_batch(&client, subject, value, n).await;
                }
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
    Ok(Through {
        secs,
        latencies,
        appended: per_producer * args.producers,
        read_events_per_sec: None,
    })
}

/// `n` copies of `value` to `subject` as one atomic batch, with a plain client.
async fn atomic_batch(
    client: &async_nats::Client,
    subject: String,
    value: bytes::Bytes,
    n: usize,
) -> anyhow::Result<()> {
    static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    for i in 1..=n {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", i.to_string().as_str());
        if i < n {
            client
                .publish_with_headers(subject.clone(), headers, value.clone())
                .await?;
        } else {
            headers.insert("Nats-Batch-Commit", "1");
            let reply = client
                .request_with_headers(subject.clone(), headers, value.clone())
                .await?;
            let answer: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            anyhow::ensure!(
                answer.get("error").is_none() && answer["count"] == json!(n),
                "the server refused a plain atomic batch: {answer}"
            );
        }
    }
    Ok(())
}
