//! Topics: publish, read, and topic settings over the API.

use weir_cloudevents::CloudEvent;
use weir_log::{RecordPosition, TopicSpec};

use crate::codec::{decode_event, encode_event};
use crate::{Error, LoggedEvent, Node, Result};

/// What `PUT /v1/topics/{topic}` asks for: each setting left out keeps the topic's (or
/// the default, for a new topic).
#[derive(Debug, Clone, Default)]
pub struct TopicUpdate {
    pub partitions: Option<u32>,
    pub durability: Option<weir_log::Durability>,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// The embedded log's own setting.
    pub segment_bytes: Option<u64>,
    pub compaction: Option<bool>,
    /// Allows lowering an existing topic's durability (see [`Node::put_topic`]).
    pub lower_durability: bool,
}

/// How much a durability promises, to compare two: `Always` above any interval, a
/// shorter interval above a longer one, `Never` last.
fn durability_rank(durability: weir_log::Durability) -> (u8, std::cmp::Reverse<u64>) {
    match durability {
        weir_log::Durability::Always => (2, std::cmp::Reverse(0)),
        weir_log::Durability::Interval { ms } => (1, std::cmp::Reverse(ms)),
        weir_log::Durability::Never => (0, std::cmp::Reverse(0)),
    }
}

fn durability_name(durability: weir_log::Durability) -> String {
    match durability {
        weir_log::Durability::Always => "after fsync (\"always\")".to_owned(),
        weir_log::Durability::Interval { ms } => {
            format!("with an fsync at most every {ms} ms (\"interval\")")
        }
        weir_log::Durability::Never => "without fsync (\"never\")".to_owned(),
    }
}

impl Node {
    /// Creates a topic or changes an existing one's settings (`PUT /v1/topics/{topic}`),
    /// within the bounds `weir.toml` has for topics. An existing topic's durability is not
    /// lowered (a `202` would silently stop meaning durable) unless
    /// [`TopicUpdate::lower_durability`] says so.
    pub async fn put_topic(
        &self,
        name: &str,
        update: TopicUpdate,
    ) -> Result<(weir_log::TopicCreated, Option<weir_log::TopicInfo>)> {
        let existing = self.log.topic(name).await?;
        let mut spec = existing
            .as_ref()
            .map(|t| t.config.clone())
            .unwrap_or_default();
        if let Some(partitions) = update.partitions {
            spec.partitions = partitions;
        }
        if let Some(durability) = update.durability {
            spec.durability = durability;
        }
        if update.retention_ms.is_some() {
            spec.retention_ms = update.retention_ms;
        }
        if update.retention_bytes.is_some() {
            spec.retention_bytes = update.retention_bytes;
        }
        if let Some(compaction) = update.compaction {
            spec.compaction = compaction;
        }
        if let Some(segment_bytes) = update.segment_bytes {
            // The embedded log's own setting; another backend refuses it by name.
            spec = spec.with_backend_setting("segment_bytes", segment_bytes);
        }
        let bounds = weir_manifest::TopicSpec {
            partitions: spec.partitions,
            fsync: match spec.durability {
                weir_log::Durability::Always => weir_manifest::FsyncSpec::Always,
                weir_log::Durability::Interval { ms } => weir_manifest::FsyncSpec::Interval { ms },
                weir_log::Durability::Never => weir_manifest::FsyncSpec::Never,
            },
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            segment_bytes: spec
                .backend
                .get("segment_bytes")
                .and_then(serde_json::Value::as_u64),
            compaction: spec.compaction,
        };
        // The settings' bounds (the log checks the name itself, with its own message).
        const SETTINGS: [&str; 5] = [
            "partitions",
            "fsync_interval_ms",
            "segment_bytes",
            "retention_ms",
            "retention_bytes",
        ];
        let problems: Vec<String> = bounds
            .problems(name)
            .into_iter()
            .filter_map(|p| {
                let setting = p.key.rsplit('.').next()?;
                SETTINGS
                    .contains(&setting)
                    .then(|| format!("{setting} {}", p.message))
            })
            .collect();
        if !problems.is_empty() {
            return Err(Error::InvalidTopic {
                topic: name.to_owned(),
                reason: problems.join("; "),
            });
        }
        if let Some(existing) = &existing
            && durability_rank(spec.durability) < durability_rank(existing.config.durability)
            && !update.lower_durability
        {
            return Err(Error::DurabilityLowered {
                topic: name.to_owned(),
                from: durability_name(existing.config.durability),
                to: durability_name(spec.durability),
            });
        }
        let created = self.log.create_topic(name, &spec).await?;
        if created == weir_log::TopicCreated::Updated {
            tracing::info!(topic = name, ?spec, "topic settings changed");
        }
        Ok((created, self.log.topic(name).await?))
    }

    /// Append events to a topic; resolves once they are durable. The events must be
    /// valid (everything `weir_cloudevents` decodes is).
    #[tracing::instrument(skip_all, err, fields(topic, events = events.len()))]
    pub async fn publish(&self, topic: &str, events: &[CloudEvent]) -> Result<Vec<RecordPosition>> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let records = events.iter().map(encode_event).collect();
        // A batch is all or nothing, across partitions too, where the backend can.
        Ok(self.log.append_atomic(topic, records).await?)
    }

    /// Read up to `limit` events of one partition from `offset`.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>> {
        self.log
            .read(topic, partition, offset, limit)
            .await?
            .into_iter()
            .map(|r| decode_event(topic, r))
            .collect()
    }
}

/// The log's spec for a topic declared in the manifest (the manifest wins over what the
/// topic had). `segment_bytes`, the embedded log's own setting, goes to the backend only
/// when the manifest sets it.
pub fn topic_spec(spec: &weir_manifest::TopicSpec) -> TopicSpec {
    let mut topic = TopicSpec {
        partitions: spec.partitions,
        durability: match spec.fsync {
            weir_manifest::FsyncSpec::Always => weir_log::Durability::Always,
            weir_manifest::FsyncSpec::Interval { ms } => weir_log::Durability::Interval { ms },
            weir_manifest::FsyncSpec::Never => weir_log::Durability::Never,
        },
        retention_ms: spec.retention_ms,
        retention_bytes: spec.retention_bytes,
        compaction: spec.compaction,
        backend: Default::default(),
    };
    if let Some(segment_bytes) = spec.segment_bytes {
        topic = topic.with_backend_setting("segment_bytes", segment_bytes);
    }
    topic
}
