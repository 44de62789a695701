//! Topics: publish, read, and topic settings over the API.

use weir_cloudevents::CloudEvent;
use weir_log::{RecordPosition, StoredRecord, TopicInfo, TopicSpec};

use tracing::Instrument;

use crate::codec::{decode_event, encode_event};
use crate::trace;
use crate::{Error, LoggedEvent, Node, Result, blocking};

/// [`Node::read_bounded`] decodes a read of more bytes than this on the blocking pool.
pub const READ_INLINE_BYTES: usize = 64 * 1024;

/// What [`Node::read_bounded`] read.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadEvents {
    pub events: Vec<LoggedEvent>,
    /// Their size as a JSON array of their stored encoding.
    pub bytes: usize,
}

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
        if name == weir_schema::STORE_TOPIC {
            return Err(Error::ReservedTopic {
                topic: name.to_owned(),
            });
        }
        // An entity's journal keeps every event (states are rebuilt from them), and its
        // topics' partitions match: their settings come from weir.toml only.
        if let Some(ty) = self.entities.journal(name) {
            return Err(Error::EntityTopic {
                topic: name.to_owned(),
                ty: ty.to_owned(),
            });
        }
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
            // Set in weir.toml only.
            schema: weir_manifest::SchemaPolicy::Optional,
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
        if let Some(ty) = self.entities.journal(topic) {
            return Err(Error::EntityTopic {
                topic: topic.to_owned(),
                ty: ty.to_owned(),
            });
        }
        if topic == weir_schema::STORE_TOPIC {
            return Err(Error::ReservedTopic {
                topic: topic.to_owned(),
            });
        }
        self.schemas.check(topic, events)?;
        let span = trace::publish_span(topic, events);
        // With traces exported, events are stored with the publish span's trace context.
        let records = match trace::publish_traceparents(&span, events) {
            None => events.iter().map(encode_event).collect(),
            Some(traceparents) => events
                .iter()
                .zip(traceparents)
                .map(|(event, traceparent)| match traceparent {
                    None => encode_event(event),
                    Some(traceparent) => {
                        let mut event = event.clone();
                        event.extensions.insert(
                            "traceparent".into(),
                            weir_cloudevents::ExtensionValue::String(traceparent),
                        );
                        encode_event(&event)
                    }
                })
                .collect(),
        };
        // A batch is all or nothing, across partitions too, where the backend can.
        let appended = self
            .log
            .append_atomic(topic, records)
            .instrument(span.clone())
            .await;
        if let Err(e) = &appended
            && !span.is_disabled()
        {
            span.record("otel.status_description", e.to_string().as_str());
        }
        let positions = appended?;
        crate::telemetry::events_in(topic).increment(positions.len() as u64);
        Ok(positions)
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

    /// Every topic with its settings and positions, sorted by name.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        Ok(self.log.topics().await?)
    }

    /// Read events of one partition from `offset`: at most `limit`, and at most
    /// `max_bytes` as a JSON array of their stored encoding (`[`, each event followed by
    /// `,` or `]`), but always the first event there is, whatever its size. The log is
    /// read in steps sized by the events read so far, so a read holds about `max_bytes`
    /// however large `limit` is; events over [`READ_INLINE_BYTES`] in all are decoded on
    /// the blocking pool, off the async workers.
    pub async fn read_bounded(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<ReadEvents> {
        let mut records: Vec<StoredRecord> = Vec::new();
        let mut bytes: usize = 1; // `[`
        let mut next = offset;
        'read: while records.len() < limit {
            let left = limit - records.len();
            let want = match bytes.checked_div(records.len()) {
                // Ask for as many as the bytes left hold at the average size so far.
                Some(average) if average > 0 => (max_bytes.saturating_sub(bytes) / average).max(1),
                // A first step small enough that a read of the log's largest events
                // holds little more than `max_bytes`.
                _ => 8,
            }
            .min(left);
            let chunk = self.log.read(topic, partition, next, want).await?;
            let got = chunk.len();
            for record in chunk {
                let size = record.value.len() + 1;
                if !records.is_empty() && bytes + size > max_bytes {
                    break 'read;
                }
                next = record.offset + 1;
                bytes += size;
                records.push(record);
            }
            if got < want || bytes >= max_bytes {
                break;
            }
        }
        if records.is_empty() {
            bytes = 2; // `[]`
        }
        crate::telemetry::events_out(topic).increment(records.len() as u64);
        let topic = topic.to_owned();
        let decode = move || {
            records
                .into_iter()
                .map(|r| decode_event(&topic, r))
                .collect::<Result<Vec<_>>>()
        };
        let events = if bytes > READ_INLINE_BYTES {
            blocking(decode).await?
        } else {
            decode()?
        };
        Ok(ReadEvents { events, bytes })
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
