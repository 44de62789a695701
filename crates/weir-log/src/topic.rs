//! Topics as every backend describes them: a backend-neutral [`TopicSpec`] with room for
//! a backend's own settings, and [`TopicInfo`], a topic's spec and positions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// When an acknowledged append is safe from a crash. What each value means on a given
/// backend (an fdatasync, a replicated write, a broker's own sync interval) is that
/// backend's [`crate::Guarantees::acknowledged`] for the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Acknowledge only once the records are on stable storage (or replicated, on a
    /// backend that says so). Nothing acknowledged is lost in a crash.
    #[default]
    Always,
    /// Acknowledge once written; stable storage follows within `ms` milliseconds. A crash
    /// may lose the last `ms` of acknowledged records.
    Interval { ms: u64 },
    /// Acknowledge once written; storage syncs when it likes. A crash may lose
    /// acknowledged records.
    Never,
}

/// How a topic is to be stored, in terms every backend understands.
///
/// Its JSON form is the one `PUT /v1/topics/{topic}` and `GET /v1/topics` have always
/// used: `fsync` for the durability, and a backend's own settings (`segment_bytes` for the
/// embedded log) as top-level keys beside the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicSpec {
    pub partitions: u32,
    #[serde(rename = "fsync")]
    pub durability: Durability,
    /// Records older than this may be deleted (a backend deletes in its own units: the
    /// embedded log whole closed segments).
    pub retention_ms: Option<u64>,
    /// Per partition: the oldest records may be deleted while the rest still take at least
    /// this many bytes.
    pub retention_bytes: Option<u64>,
    /// Keep only the latest record per key; appends need a key, and a record with an empty
    /// value (a tombstone) deletes its key.
    pub compaction: bool,
    /// A backend's own settings, by name. A backend refuses a name it does not know with
    /// [`crate::ErrorKind::Invalid`].
    #[serde(flatten)]
    pub backend: BTreeMap<String, serde_json::Value>,
}

impl Default for TopicSpec {
    fn default() -> TopicSpec {
        TopicSpec {
            partitions: 1,
            durability: Durability::Always,
            retention_ms: None,
            retention_bytes: None,
            compaction: false,
            backend: BTreeMap::new(),
        }
    }
}

impl TopicSpec {
    /// The default spec with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> TopicSpec {
        TopicSpec {
            partitions,
            ..TopicSpec::default()
        }
    }

    /// Sets one of the backend's own settings.
    pub fn with_backend_setting(
        mut self,
        name: &str,
        value: impl Into<serde_json::Value>,
    ) -> TopicSpec {
        self.backend.insert(name.to_owned(), value.into());
        self
    }
}

/// A topic's spec and where each of its partitions starts and ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: u32,
    /// Per partition, the next offset to be assigned.
    pub end_offsets: Vec<u64>,
    /// Per partition, the first offset still stored; nothing below it can be read.
    pub start_offsets: Vec<u64>,
    pub config: TopicSpec,
}

/// Whether [`crate::EventLog::create_topic`] made the topic or updated an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCreated {
    Created,
    /// It existed with the same partition count; its other settings were replaced.
    Updated,
}

/// What one retention pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    pub segments_deleted: u64,
    pub bytes_deleted: u64,
    pub segments_compacted: u64,
    pub records_removed: u64,
}
