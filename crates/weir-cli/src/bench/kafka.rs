//! `weir bench log --backend kafka://…`: the log bench's workload through weir on Kafka,
//! the same workload sent by a plain rdkafka producer (idempotent, `acks=all`, the same
//! settings weir uses: every acknowledgement of a batch awaited together) in the same
//! run, and the embedded log at equal durability (`fsync = always`, as weir asks the
//! topic to flush every message).

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use weir_log::{EventLog, Expect, Record, TopicSpec};
use weir_log_kafka::{KafkaLog, KafkaOptions};

use super::{LogBenchArgs, percentile, print_result, produce, round2};

pub(super) async fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.producers > 0 && args.batch > 0 && args.events > 0 && args.partitions > 0,
        "--producers, --batch, --events and --partitions must be positive"
    );
    let options = KafkaOptions::from_url(&args.backend)?;
    let log = Arc::new(KafkaLog::open(options.clone()).await?);
    let topic = format!("bench-{}", std::process::id());
    log.create_topic(&topic, &TopicSpec::with_partitions(args.partitions))
        .await?;
    let value = bytes::Bytes::from(vec![b'x'; args.event_bytes]);
    let per_producer = args.events.div_ceil(args.producers);

    // Through weir.
    let (weir_secs, latencies) = {
        let (log, value, topic, partitions) =
            (log.clone(), value.clone(), topic.clone(), args.partitions);
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
    let appended = per_producer * args.producers;

    // Read partition 0 back with a reader, as a pipeline does.
    let end = log.offsets(&topic, 0).await?.end;
    let mut reader = log.reader(&topic, 0, 0).await?;
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
    drop(reader);
    log.delete_topic(&topic).await?;

    let (raw_secs, raw_latencies) = raw_client(&options, &args, &value, per_producer).await?;

    let embedded = super::log(&LogBenchArgs {
        backend: "embedded".into(),
        fsync: "always".into(),
        atomic: false,
        json: false,
        dir: args.dir.clone(),
        ..args
    })
    .await?;

    let weir_rate = appended as f64 / weir_secs;
    let raw_rate = appended as f64 / raw_secs;
    let result = json!({
        "bench": "log",
        "backend": "kafka",
        "event_bytes": args.event_bytes,
        "producers": args.producers,
        "batch": args.batch,
        "partitions": args.partitions,
        "events": appended,
        "append_events_per_sec": weir_rate.round(),
        "append_p50_us": percentile(&latencies, 0.50),
        "append_p99_us": percentile(&latencies, 0.99),
        "read_events_per_sec": (read as f64 / read_secs).round(),
        "raw_client_events_per_sec": raw_rate.round(),
        "raw_client_p50_us": percentile(&raw_latencies, 0.50),
        "raw_client_p99_us": percentile(&raw_latencies, 0.99),
        "backend_raw_ratio": round2(weir_rate / raw_rate),
        "embedded_fsync": embedded["fsync"],
        "embedded_events_per_sec": embedded["append_events_per_sec"],
        "disk_seq_write_mb_per_sec": embedded["disk_seq_write_mb_per_sec"],
    });
    print_result(&result, args.json)
}

/// Seconds to send `per_producer` events from each of `args.producers` producers with a
/// plain rdkafka producer into a topic of the same partitions, and each batch's latency
/// in microseconds, sorted.
async fn raw_client(
    options: &KafkaOptions,
    args: &LogBenchArgs,
    value: &bytes::Bytes,
    per_producer: usize,
) -> anyhow::Result<(f64, Vec<u64>)> {
    let brokers = options.brokers.join(",");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("cannot start the plain client's admin client")?;
    let name = options.kafka_topic(&format!("rawbench-{}", std::process::id()));
    let admin_options = AdminOptions::new().operation_timeout(Some(options.timeout));
    let made = admin
        .create_topics(
            [&NewTopic::new(
                &name,
                args.partitions as i32,
                TopicReplication::Fixed(i32::from(options.replicas)),
            )],
            &admin_options,
        )
        .await
        .context("cannot make the plain client's topic")?;
    for result in made {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot make {topic}: {code}"))?;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .set("batch.num.messages", options.batch_records.to_string())
        .create()
        .context("cannot start the plain client's producer")?;
    let partitions = args.partitions;
    let (secs, latencies) = produce(args.producers, per_producer, args.batch, {
        let (producer, value, name) = (producer.clone(), value.clone(), name.clone());
        move |p, n| {
            let (producer, value, name) = (producer.clone(), value.clone(), name.clone());
            let partition = (p as u32 % partitions) as i32;
            async move {
                let mut acks = Vec::with_capacity(n);
                for _ in 0..n {
                    let record = FutureRecord::<[u8], [u8]>::to(&name)
                        .partition(partition)
                        .payload(value.as_ref());
                    acks.push(
                        producer
                            .send_result(record)
                            .map_err(|(e, _)| anyhow::anyhow!("cannot send: {e}"))?,
                    );
                }
                for ack in acks {
                    ack.await?
                        .map_err(|(e, _)| anyhow::anyhow!("not acknowledged: {e}"))?;
                }
                Ok(())
            }
        }
    })
    .await?;
    admin
        .delete_topics(&[&name], &admin_options)
        .await
        .context("cannot delete the plain client's topic")?;
    Ok((secs, latencies))
}
