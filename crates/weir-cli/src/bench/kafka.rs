//! `weir bench log --backend kafka://…`: the log bench's workload through weir on Kafka,
//! the same workload sent by a plain rdkafka producer (idempotent, `acks=all`, the same
//! settings weir uses: every acknowledgement of a batch awaited together) in the same
//! run, and the embedded log at equal durability (`fsync = always`, as weir asks the
//! topic to flush every message).

use std::sync::Arc;

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use weir_log::{EventLog, TopicSpec};
use weir_log_kafka::{KafkaLog, KafkaOptions};

use super::backend::{Rounds, Through, check_counts, result, through_weir};
use super::{LogBenchArgs, print_result, produce};

pub(super) async fn run(args: LogBenchArgs) -> anyhow::Result<()> {
    check_counts(&args)?;
    let options = KafkaOptions::from_url(&args.backend)?;
    let log = Arc::new(KafkaLog::open(options.clone()).await?);
    let value = bytes::Bytes::from(vec![b'x'; args.event_bytes]);
    let per_producer = args.events.div_ceil(args.producers);
    // Rounds of weir and the plain producer, interleaved, the order turning each round.
    let (mut through, mut raw) = (Rounds::default(), Rounds::default());
    for round in 0..args.rounds {
        for k in 0..2 {
            if (k + round) % 2 == 0 {
                let topic = format!("bench-{}-{round}", std::process::id());
                log.create_topic(&topic, &TopicSpec::with_partitions(args.partitions))
                    .await?;
                through.add(through_weir(log.clone(), &topic, &args, &value, per_producer).await?);
                log.delete_topic(&topic).await?;
            } else {
                raw.add(raw_client(&options, &args, &value, per_producer, round).await?);
            }
        }
    }

    let embedded = super::log(&LogBenchArgs {
        backend: "embedded".into(),
        fsync: "always".into(),
        atomic: false,
        json: false,
        dir: args.dir.clone(),
        ..args
    })
    .await?;

    let result = result("kafka", &args, &through, &raw, &embedded);
    print_result(&result, args.json)
}

/// `per_producer` events from each of `args.producers` producers sent with a plain
/// rdkafka producer into a topic of the same partitions (a new one each `round`): the
/// seconds taken and each batch's latency.
async fn raw_client(
    options: &KafkaOptions,
    args: &LogBenchArgs,
    value: &bytes::Bytes,
    per_producer: usize,
    round: usize,
) -> anyhow::Result<Through> {
    let brokers = options.brokers.join(",");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .context("cannot start the plain client's admin client")?;
    let name = options.kafka_topic(&format!("rawbench-{}-{round}", std::process::id()));
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
    // One record to each partition first, untimed: a new topic's first produce waits for
    // its metadata and leaders, which weir's `create_topic` has waited for already.
    for partition in 0..args.partitions {
        let record = FutureRecord::<[u8], [u8]>::to(&name)
            .partition(partition as i32)
            .payload(value.as_ref());
        producer
            .send(record, options.timeout)
            .await
            .map_err(|(e, _)| anyhow::anyhow!("the plain client's first record: {e}"))?;
    }
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
    Ok(Through {
        secs,
        latencies,
        appended: per_producer * args.producers,
        read_events_per_sec: None,
    })
}
