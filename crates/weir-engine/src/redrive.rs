//! Re-driving dead letters: a pipeline's back to their source topics, a sink's to its
//! destination again.

use std::collections::BTreeMap;

use weir_cloudevents::CloudEvent;
use weir_log::Record;

use crate::codec::encode_event;
use crate::consumer::{PartitionConsumer, Progress, commit_until_done};
use crate::{Node, Result, StartFrom, routing};

/// What `Node::redrive_sink` did.
#[derive(Debug, Clone, Default)]
pub struct SinkRedriveReport {
    pub sink: String,
    pub dead_letter: String,
    /// Dead letters the destination took this time.
    pub delivered: u64,
    /// Dead letters it refused again (they stay in the dead-letter topic; a later
    /// re-drive does not offer them again).
    pub refused: u64,
    /// Dead letters passed over: another sink's or a pipeline's, or not CloudEvents.
    pub skipped: u64,
    /// Why the re-drive stopped before the end: the destination could not take an event
    /// now (down, busy). What came before it is committed; a re-drive later starts there.
    pub stopped: Option<String>,
}

/// What `Node::redrive` did.
#[derive(Debug, Clone)]
pub struct RedriveReport {
    pub pipeline: String,
    pub dead_letter: String,
    /// Events sent back to their source topics.
    pub redriven: u64,
    /// Dead letters passed over: another pipeline's, or not re-drivable (their source
    /// topic no longer exists, or the stored record was not a CloudEvent to begin with).
    pub skipped: u64,
    /// Events re-driven per source topic.
    pub topics: BTreeMap<String, u64>,
}

impl Node {
    /// Re-drive a pipeline's dead letters (`weir redrive`): each event in its dead-letter
    /// topic that this pipeline dead-lettered, and that no earlier re-drive took, goes back
    /// to the topic it was read from, without its `dlq*` attributes and with its `id`
    /// unchanged. Progress is the consumer group `<pipeline>.redrive` on the dead-letter
    /// topic, committed in the same transaction as the re-driven events, so a crash
    /// neither loses nor doubles one. At most `limit` events if given.
    #[tracing::instrument(skip_all, err, fields(pipeline = name))]
    pub async fn redrive(&self, name: &str, limit: Option<u64>) -> Result<RedriveReport> {
        let pipeline = self.pipeline(name)?;
        let _one = self.redriving.lock().await;
        let dlq = pipeline.dead_letter_topic().to_owned();
        let group = format!("{name}.redrive");
        let info = self.topic_info(&dlq).await?;
        let mut report = RedriveReport {
            pipeline: name.to_owned(),
            dead_letter: dlq.clone(),
            redriven: 0,
            skipped: 0,
            topics: BTreeMap::new(),
        };
        let mut left = limit.unwrap_or(u64::MAX);
        for partition in 0..info.partitions {
            let end = info.end_offsets[partition as usize];
            // Only this re-drive commits the group (one at a time, `redriving`): opening
            // claims the partition, which fences a re-drive of another node on a shared log.
            let progress = Progress::Transactions {
                group: group.clone(),
                producer: format!("redrive/{name}/{dlq}/{partition}"),
            };
            let mut consumer = PartitionConsumer::open(
                &self.log,
                &dlq,
                partition,
                format!("redrive of pipeline {name:?}"),
                progress,
                StartFrom::Earliest,
                &self.cancel,
            )
            .await?
            .until(end);
            let commits = consumer.transactions()?;
            while left > 0 {
                let next = consumer.position();
                let records = consumer.poll(left.min(256) as usize).await?;
                if records.is_empty() {
                    break;
                }
                let mut appends: BTreeMap<String, Vec<Record>> = BTreeMap::new();
                let mut through = next;
                for record in records {
                    if left == 0 {
                        break;
                    }
                    through = record.offset + 1;
                    let back = CloudEvent::from_json_slice(&record.value)
                        .ok()
                        .filter(|e| e.ty != routing::UNDECODABLE_TYPE)
                        .and_then(|e| routing::redriven_event(name, e));
                    // Never back into an entity's journal: only its writer appends there.
                    let back = match back {
                        Some((topic, event))
                            if self.entities.journal(&topic).is_none()
                                && self.log.topic(&topic).await?.is_some() =>
                        {
                            Some((topic, event))
                        }
                        _ => None,
                    };
                    match back {
                        Some((topic, event)) => {
                            left -= 1;
                            report.redriven += 1;
                            *report.topics.entry(topic.clone()).or_default() += 1;
                            appends.entry(topic).or_default().push(encode_event(&event));
                        }
                        None => report.skipped += 1,
                    }
                }
                let txn = commits.transaction(appends.into_iter().collect(), through);
                commit_until_done(&self.log, txn, &self.cancel).await?;
                // Records read past the limit are read again by the next re-drive.
                consumer.seek(through);
            }
        }
        tracing::info!(
            pipeline = name,
            redriven = report.redriven,
            skipped = report.skipped,
            "dead letters re-driven"
        );
        Ok(report)
    }
}

impl Node {
    /// Re-drive a sink's dead letters (`weir redrive --sink`): each event of its
    /// dead-letter topic that this sink dead-lettered, and that no earlier re-drive took,
    /// is delivered once more to the sink's destination, without its `dlq*` attributes
    /// and with its `id` unchanged (the receiver's idempotency key). An attempt the
    /// destination cannot take now stops the re-drive there; one it refuses for good is
    /// counted and passed. Progress is the consumer group `sink.<sink>.redrive` on the
    /// dead-letter topic, committed after each delivered batch: a crash may deliver an
    /// event again (at-least-once, as the sink itself), never skip one. The live sink
    /// keeps running meanwhile; re-driven events are older than what it delivers.
    #[tracing::instrument(skip_all, err, fields(sink = name))]
    pub async fn redrive_sink(&self, name: &str, limit: Option<u64>) -> Result<SinkRedriveReport> {
        let spec = {
            let manifest = self
                .manifest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let sinks = manifest.as_ref().map(|m| &m.sinks);
            sinks
                .and_then(|s| s.get(name))
                .cloned()
                .ok_or_else(|| crate::Error::UnknownSink {
                    sink: name.to_owned(),
                    declared: sinks
                        .into_iter()
                        .flatten()
                        .map(|(n, _)| n.clone())
                        .collect(),
                })?
        };
        let sink = crate::sinks::open(name, &spec)?;
        let _one = self.redriving.lock().await;
        let dlq = spec.dead_letter.clone();
        // Not `NAME.redrive`: a pipeline of the same name re-drives its own dead letters
        // with that group, perhaps from the same topic.
        let group = format!("sink.{name}.redrive");
        let info = self.topic_info(&dlq).await?;
        let mut report = SinkRedriveReport {
            sink: name.to_owned(),
            dead_letter: dlq.clone(),
            ..SinkRedriveReport::default()
        };
        let mut left = limit.unwrap_or(u64::MAX);
        'partitions: for partition in 0..info.partitions {
            let end = info.end_offsets[partition as usize];
            let progress = Progress::Transactions {
                group: group.clone(),
                producer: format!("redrive-sink/{name}/{dlq}/{partition}"),
            };
            let mut consumer = PartitionConsumer::open(
                &self.log,
                &dlq,
                partition,
                format!("redrive of sink {name:?}"),
                progress,
                StartFrom::Earliest,
                &self.cancel,
            )
            .await?
            .until(end);
            let commits = consumer.transactions()?;
            while left > 0 {
                let next = consumer.position();
                let records = consumer.poll(left.min(64) as usize).await?;
                if records.is_empty() {
                    break;
                }
                let mut through = next;
                for record in records {
                    if left == 0 {
                        break;
                    }
                    let ours = CloudEvent::from_json_slice(&record.value).ok().filter(|e| {
                        matches!(
                            e.extensions.get(crate::sinks::DLQ_SINK),
                            Some(weir_cloudevents::ExtensionValue::String(s)) if s == name
                        )
                    });
                    let Some(mut event) = ours else {
                        report.skipped += 1;
                        through = record.offset + 1;
                        continue;
                    };
                    event.extensions.remove(crate::sinks::DLQ_SINK);
                    for attribute in routing::dead_letter::ALL {
                        event.extensions.remove(attribute);
                    }
                    match sink.deliver(&event).await {
                        weir_mesh::Delivery::Delivered => report.delivered += 1,
                        weir_mesh::Delivery::Refused { error } => {
                            tracing::info!(sink = name, id = %event.id, %error, "re-driven event refused again");
                            report.refused += 1;
                        }
                        weir_mesh::Delivery::Retry { error, .. } => {
                            report.stopped = Some(format!(
                                "event {:?} (offset {} of partition {partition} of {dlq:?}): {error}",
                                event.id, record.offset
                            ));
                            let txn = commits.transaction(Vec::new(), through);
                            commit_until_done(&self.log, txn, &self.cancel).await?;
                            break 'partitions;
                        }
                    }
                    left -= 1;
                    through = record.offset + 1;
                }
                let txn = commits.transaction(Vec::new(), through);
                commit_until_done(&self.log, txn, &self.cancel).await?;
                consumer.seek(through);
            }
        }
        tracing::info!(
            sink = name,
            delivered = report.delivered,
            refused = report.refused,
            skipped = report.skipped,
            stopped = ?report.stopped,
            "sink dead letters re-driven"
        );
        Ok(report)
    }
}
