//! Committed consumer-group offsets: for each group, topic and partition, the next offset
//! the group has to process.
//!
//! # On disk
//!
//! One file per group, `groups/<group>.json`:
//!
//! ```text
//! {"version":1,"offsets":[{"topic":"orders","partition":0,"next_offset":42}]}
//! ```
//!
//! # Invariants
//!
//! - A commit replaces the group's file atomically (temporary file, fsync, rename, fsync of
//!   the directory) before it returns, so after a crash a group's offsets are those of
//!   one completed commit, never a mix.
//! - Group names follow the topic name rules, so they are safe file names; files whose
//!   names do not end in `.json` (such as leftover `.json.tmp` files) are ignored.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};

use crate::{Error, Result, error::IoContext, fsutil, telemetry, topic::check_name};

const GROUP_FILE_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct GroupFile {
    version: u32,
    offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommittedOffset {
    topic: String,
    partition: u32,
    next_offset: u64,
}

type GroupOffsets = BTreeMap<(String, u32), u64>;

pub(crate) struct Groups {
    dir: PathBuf,
    /// Held across the file write so that commits to one group do not overwrite each
    /// other. One lock for all groups is enough for now.
    offsets: Mutex<BTreeMap<String, GroupOffsets>>,
}

pub(crate) fn validate_group_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidGroupName {
        name: name.to_owned(),
        reason,
    })
}

impl Groups {
    /// Loads every group file in `dir`.
    pub(crate) fn load(dir: &Path) -> Result<Groups> {
        let mut offsets = BTreeMap::new();
        let entries = fs::read_dir(dir).context(|| format!("could not list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.context(|| format!("could not list {}", dir.display()))?;
            let path = entry.path();
            let file_name = entry.file_name();
            let Some(group) = file_name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if check_name(group).is_err() {
                telemetry::EntryIgnored {
                    path: &path,
                    reason: "not a valid consumer group name",
                }
                .emit();
                continue;
            }
            offsets.insert(group.to_owned(), read_group_file(&path)?);
        }
        Ok(Groups {
            dir: dir.to_owned(),
            offsets: Mutex::new(offsets),
        })
    }

    pub(crate) fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let offsets = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        offsets
            .get(group)?
            .get(&(topic.to_owned(), partition))
            .copied()
    }

    /// Durably records `next_offset` for the group, topic and partition.
    pub(crate) fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
    ) -> Result<()> {
        let mut offsets = self.offsets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut updated = offsets.get(group).cloned().unwrap_or_default();
        updated.insert((topic.to_owned(), partition), next_offset);

        let file = GroupFile {
            version: GROUP_FILE_VERSION,
            offsets: updated
                .iter()
                .map(|((topic, partition), next_offset)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: *next_offset,
                })
                .collect(),
        };
        let path = self.dir.join(format!("{group}.json"));
        let contents = serde_json::to_vec(&file)
            .map_err(std::io::Error::from)
            .context(|| format!("could not encode {}", path.display()))?;
        fsutil::write_atomically(&path, &contents).context(|| {
            format!(
                "could not commit offset {next_offset} of group \"{group}\" for partition {partition} of topic \"{topic}\" to {}",
                path.display()
            )
        })?;
        // Only a durable commit becomes visible.
        offsets.insert(group.to_owned(), updated);
        Ok(())
    }
}

fn read_group_file(path: &Path) -> Result<GroupOffsets> {
    let contents = fs::read(path).context(|| format!("could not read {}", path.display()))?;
    let corrupt = |reason: String| Error::Corrupt {
        what: path.display().to_string(),
        reason,
    };
    let file: GroupFile = serde_json::from_slice(&contents).map_err(|e| corrupt(e.to_string()))?;
    if file.version != GROUP_FILE_VERSION {
        return Err(corrupt(format!("unknown version {}", file.version)));
    }
    Ok(file
        .offsets
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.next_offset))
        .collect())
}
