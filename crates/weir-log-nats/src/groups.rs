//! Group offsets and owner generations, one KV entry per group's partition
//! (`{group}.{topic}.{partition}` in the groups bucket, holding `{generation, offset}`).
//!
//! Both `claim` and `commit` read the entry and write it back only if its revision is
//! still the one they read (the server checks it with the write); a writer that lost the
//! race reads again. So a commit of an owner whose generation is older than the entry's
//! is refused and changes nothing, even while a claim races with it.

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use serde::{Deserialize, Serialize};
use weir_log::{Error, ErrorKind, GroupCommit, Result};

use crate::names::Names;
use crate::{Inner, failed, unavailable};

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub(crate) struct GroupEntry {
    pub(crate) generation: u64,
    pub(crate) offset: Option<u64>,
}

/// Group names follow topic names (as on the embedded log): their token is a KV key.
fn check_group(group: &str) -> Result<()> {
    weir_log::check_name(group).map_err(|reason| {
        Error::invalid(format!(
            "invalid consumer group name \"{group}\": {reason}; use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', other than \".\" and \"..\""
        ))
    })
}

/// The entry and its revision, if there is one.
pub(crate) async fn read(
    inner: &Inner,
    group: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<(GroupEntry, u64)>> {
    check_group(group)?;
    if weir_log::check_name(topic).is_err() {
        // No topic has that name, so no group has a position in it.
        return Ok(None);
    }
    let key = Names::group_key(group, topic, partition);
    let entry = inner
        .groups
        .entry(&key)
        .await
        .map_err(|e| unavailable(format!("cannot read group entry {key}"), e))?;
    match entry {
        Some(entry) if entry.operation == kv::Operation::Put => {
            let value: GroupEntry = serde_json::from_slice(&entry.value)
                .map_err(|e| failed(format!("the group entry {key} is unreadable"), e))?;
            Ok(Some((value, entry.revision)))
        }
        _ => Ok(None),
    }
}

/// Writes `value` if the entry is still at `revision` (`None`: there is none); `false`
/// when another writer got there first.
async fn write(inner: &Inner, key: &str, value: GroupEntry, revision: Option<u64>) -> Result<bool> {
    let bytes = serde_json::to_vec(&value)
        .map_err(|e| failed("encode".into(), e))?
        .into();
    match revision {
        None => match inner.groups.create(key, bytes).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(format!("cannot write group entry {key}"), e)),
        },
        Some(revision) => match inner.groups.update(key, bytes, revision).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(unavailable(format!("cannot write group entry {key}"), e)),
        },
    }
}

/// How often a claim or commit reads again after losing a race before it gives up.
const MAX_RACES: usize = 1000;

pub(crate) async fn claim(inner: &Inner, group: &str, topic: &str, partition: u32) -> Result<u64> {
    let key = Names::group_key(group, topic, partition);
    for _ in 0..MAX_RACES {
        let (mut entry, revision) = match read(inner, group, topic, partition).await? {
            Some((entry, revision)) => (entry, Some(revision)),
            None => (GroupEntry::default(), None),
        };
        entry.generation += 1;
        if write(inner, &key, entry, revision).await? {
            return Ok(entry.generation);
        }
    }
    Err(Error::new(
        ErrorKind::Unavailable,
        format!("cannot claim {key}: it changed {MAX_RACES} times while this claim tried"),
    ))
}

/// Moves the group's offset if `commit` is from its current owner; `first` is the entry
/// as the caller just read it (its revision is tried first), `None` to read it here.
pub(crate) async fn commit(
    inner: &Inner,
    commit: &GroupCommit,
    mut first: Option<Option<(GroupEntry, u64)>>,
) -> Result<()> {
    let key = Names::group_key(&commit.group, &commit.topic, commit.partition);
    for _ in 0..MAX_RACES {
        let current = match first.take() {
            Some(current) => current,
            None => read(inner, &commit.group, &commit.topic, commit.partition).await?,
        };
        let (mut entry, revision) = match current {
            Some((entry, revision)) => (entry, Some(revision)),
            None => (GroupEntry::default(), None),
        };
        if commit.generation < entry.generation {
            return Err(Error::new(
                ErrorKind::Fenced,
                format!(
                    "group \"{}\" has a newer owner of partition {} of topic \"{}\" (generation {}, this commit's is {}); this owner must stop",
                    commit.group, commit.partition, commit.topic, entry.generation, commit.generation
                ),
            )
            .with_code("fenced"));
        }
        entry.offset = Some(commit.next_offset);
        if write(inner, &key, entry, revision).await? {
            return Ok(());
        }
    }
    Err(Error::new(
        ErrorKind::Unavailable,
        format!("cannot commit {key}: it changed {MAX_RACES} times while this commit tried"),
    ))
}
