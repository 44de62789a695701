//! Re-driving a pipeline's dead letters back to their source topics.

use std::collections::BTreeMap;

use weir_cloudevents::CloudEvent;
use weir_log::Record;

use crate::codec::encode_event;
use crate::consumer::{PartitionConsumer, Progress, commit_until_done};
use crate::{Node, Result, StartFrom, routing};

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
