//! Topics: name rules, the topic directory and its `topic.json`, and the choice of
//! partition for each record.
//!
//! # On disk
//!
//! ```text
//! topics/<topic>/topic.json                          {"version":1,"partitions":3}
//! topics/<topic>/<partition>/00000000000000000000.log   see `partition`
//! ```
//!
//! # Invariants
//!
//! - A topic exists exactly when its `topic.json` does. Creation makes every partition
//!   directory and file durable first and writes `topic.json` last, atomically (temporary
//!   file, fsync, rename, fsync of the directory), so a crash mid-creation leaves a
//!   directory without `topic.json`, which is ignored on open and reused by the next
//!   creation of that topic.
//! - The partition count never changes once `topic.json` exists.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result, TopicInfo,
    error::IoContext,
    fsutil,
    partition::{OpenMode, Partition},
    partitioner,
};

/// Most partitions one topic may have; each costs a directory and open files.
pub const MAX_PARTITIONS: u32 = 10_000;
/// Longest topic or group name, as in Kafka.
const MAX_NAME_LEN: usize = 249;
const TOPIC_FILE: &str = "topic.json";
const TOPIC_FILE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    version: u32,
    partitions: u32,
}

/// Checks a topic or group name against Kafka's rules; `Err` holds the reason.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("it is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("\".\" and \"..\" are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("it has a character other than a-z, A-Z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidTopicName {
        name: name.to_owned(),
        reason,
    })
}

pub(crate) struct Topic {
    name: String,
    partitions: Vec<Arc<Partition>>,
    next_round_robin: AtomicU32,
}

impl Topic {
    /// Creates the topic's files under `dir` (which is `topics/<name>`).
    pub(crate) fn create(dir: &Path, name: &str, partitions: u32) -> Result<Topic> {
        fsutil::create_dir(dir).context(|| format!("could not create {}", dir.display()))?;
        let opened = (0..partitions)
            .map(|id| Partition::open(name, id, &dir.join(id.to_string()), OpenMode::Create))
            .collect::<Result<Vec<_>>>()?;
        let contents = serde_json::to_vec(&TopicFile {
            version: TOPIC_FILE_VERSION,
            partitions,
        })
        .map_err(std::io::Error::from)
        .context(|| format!("could not encode {TOPIC_FILE} of topic \"{name}\""))?;
        let path = dir.join(TOPIC_FILE);
        fsutil::write_atomically(&path, &contents)
            .context(|| format!("could not write {}", path.display()))?;
        Ok(Topic::new(name, opened))
    }

    /// Opens the topic in `dir`, or `None` if its creation never finished.
    pub(crate) fn recover(dir: &Path, name: &str) -> Result<Option<Topic>> {
        let path = dir.join(TOPIC_FILE);
        let contents = match std::fs::read(&path) {
            Ok(contents) => contents,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    context: format!("could not read {}", path.display()),
                    source: e,
                });
            }
        };
        let corrupt = |reason: String| Error::Corrupt {
            what: path.display().to_string(),
            reason,
        };
        let file: TopicFile =
            serde_json::from_slice(&contents).map_err(|e| corrupt(e.to_string()))?;
        if file.version != TOPIC_FILE_VERSION {
            return Err(corrupt(format!("unknown version {}", file.version)));
        }
        if !(1..=MAX_PARTITIONS).contains(&file.partitions) {
            return Err(corrupt(format!("{} partitions", file.partitions)));
        }
        let opened = (0..file.partitions)
            .map(|id| Partition::open(name, id, &dir.join(id.to_string()), OpenMode::Recover))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Topic::new(name, opened)))
    }

    fn new(name: &str, partitions: Vec<Partition>) -> Topic {
        Topic {
            name: name.to_owned(),
            partitions: partitions.into_iter().map(Arc::new).collect(),
            next_round_robin: AtomicU32::new(0),
        }
    }

    pub(crate) fn partition_count(&self) -> u32 {
        self.partitions.len() as u32
    }

    pub(crate) fn partition(&self, id: u32) -> Result<&Arc<Partition>> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| Error::UnknownPartition {
                topic: self.name.clone(),
                partition: id,
                partitions: self.partition_count(),
            })
    }

    /// The partition for a record: murmur2 of its key, or round robin without one.
    pub(crate) fn choose_partition(&self, key: Option<&[u8]>) -> u32 {
        match key {
            Some(key) => partitioner::partition_for_key(key, self.partition_count()),
            None => self.next_round_robin.fetch_add(1, Ordering::Relaxed) % self.partition_count(),
        }
    }

    pub(crate) fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            partitions: self.partition_count(),
            end_offsets: self.partitions.iter().map(|p| p.end_offset()).collect(),
        }
    }
}
