//! Committed consumer-group offsets: for each group, topic and partition, the next offset
//! the group has to process, and the sequence number of the commit that set it.
//!
//! # On disk
//!
//! One file per group, `groups/<group>.json`:
//!
//! ```text
//! {"version":2,"offsets":[{"topic":"orders","partition":0,"next_offset":42,"sequence":7}]}
//! ```
//!
//! Version 1 files (without `sequence`) are read with sequence 0 and rewritten as version
//! 2 at the group's next write.
//!
//! # Invariants
//!
//! - Every commit carries a sequence number from the log-wide counter that also numbers
//!   transactions (see `journal`): [`crate::Log::commit_offset`] draws one when it is
//!   called, a transaction before it writes anything. Of two commits to one group, topic
//!   and partition, the one with the higher sequence wins, in whatever order they are
//!   applied; so re-applying a transaction's commit from the journal or from a frame at
//!   recovery never undoes a later commit, transactional or not.
//! - [`crate::Log::commit_offset`] replaces the group's file atomically (temporary file,
//!   fsync, rename, fsync of the directory) before it returns and shows the new offset only
//!   once that succeeded; after a crash a group's file holds one completed write, never a
//!   mix.
//! - A transaction's commit is durable in the journal or in its frame (version 4, see
//!   `transaction`) before it is applied here, in memory only, marking the group dirty.
//!   The group's file catches up at a checkpoint (when the journal starts a new file,
//!   when a partition rolls a segment, at open, at a clean close, and at any plain commit
//!   of the group); the journal deletes a file, and a partition moves its recovery point,
//!   only after a checkpoint that followed every commit they hold.
//! - [`Groups::checkpoint`] returns `Ok` only once every commit applied before the call is
//!   in a group file: it takes each group's file lock before it looks at the group, so a
//!   write of the group still in flight on another thread (which took the group's commits
//!   and cleared its dirty mark) is waited for, and a failed one has marked it dirty
//!   again.
//! - A file write snapshots the group under the group's own file lock, so the writes of one
//!   group land in order and a later snapshot never loses to an earlier one. No lock shared
//!   between groups is held across an fsync.
//! - At open, once the partitions are recovered, a committed offset past its partition's
//!   end offset (records a crash took back under fsync `Interval` or `Never`, while the
//!   group file, fsynced on its own, kept the commit) is lowered to the end offset and
//!   written before the open returns, so the group reads the records that take those
//!   offsets next.
//! - Group names follow the topic name rules, so they are safe file names; files whose
//!   names do not end in `.json` (such as leftover `.json.tmp` files) are ignored.
//! - [`Groups::load`] fsyncs the directory, so an offset it reads from a file renamed into
//!   place just before a crash cannot be taken back by a power cut after the open.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result, error::IoContext, fsutil, io::Io, journal::IntentCommit, telemetry,
    topic::check_name,
};

const GROUP_FILE_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct GroupFile {
    version: u32,
    offsets: Vec<CommittedOffset>,
    /// Absent in files written before owners were fenced, and while nobody claimed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    owners: Vec<Owner>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Owner {
    topic: String,
    partition: u32,
    generation: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommittedOffset {
    topic: String,
    partition: u32,
    next_offset: u64,
    /// Absent in version 1.
    #[serde(default)]
    sequence: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Committed {
    next_offset: u64,
    sequence: u64,
}

type GroupOffsets = BTreeMap<(String, u32), Committed>;
/// The newest generation claimed, per topic and partition.
type Owners = BTreeMap<(String, u32), u64>;

#[derive(Debug, Default)]
struct GroupState {
    offsets: GroupOffsets,
    owners: Owners,
    /// Holds commits applied since the group's file was last written.
    dirty: bool,
}

pub(crate) struct Groups {
    io: Arc<dyn Io>,
    dir: PathBuf,
    groups: Mutex<BTreeMap<String, GroupState>>,
    /// One lock per group, held across that group's file write.
    file_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

pub(crate) fn validate_group_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidGroupName {
        name: name.to_owned(),
        reason,
    })
}

/// Sets `key` to `commit` unless it holds a commit with a higher or equal sequence.
/// Returns whether it changed anything.
fn merge(offsets: &mut GroupOffsets, key: (String, u32), commit: Committed) -> bool {
    match offsets.get_mut(&key) {
        Some(existing) if existing.sequence >= commit.sequence => false,
        Some(existing) => {
            *existing = commit;
            true
        }
        None => {
            offsets.insert(key, commit);
            true
        }
    }
}

impl Groups {
    /// Loads every group file in `dir`.
    pub(crate) fn load(io: &Arc<dyn Io>, dir: &Path) -> Result<Groups> {
        let mut groups = BTreeMap::new();
        let entries = io
            .read_dir(dir)
            .context(|| format!("could not list {}", dir.display()))?;
        for file_name in entries {
            let path = dir.join(&file_name);
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
            let (offsets, owners) = read_group_file(&**io, &path)?;
            groups.insert(
                group.to_owned(),
                GroupState {
                    offsets,
                    owners,
                    dirty: false,
                },
            );
        }
        // A process that crashed between renaming a group file into place and fsyncing
        // the directory left an offset a power cut could still take back.
        io.sync_dir(dir)
            .context(|| format!("could not fsync {}", dir.display()))?;
        Ok(Groups {
            io: Arc::clone(io),
            dir: dir.to_owned(),
            groups: Mutex::new(groups),
            file_locks: Mutex::new(HashMap::new()),
        })
    }

    /// The highest sequence of any commit held.
    pub(crate) fn max_sequence(&self) -> u64 {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups
            .values()
            .flat_map(|g| g.offsets.values())
            .map(|c| c.sequence)
            .max()
            .unwrap_or(0)
    }

    pub(crate) fn committed(&self, group: &str, topic: &str, partition: u32) -> Option<u64> {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups
            .get(group)?
            .offsets
            .get(&(topic.to_owned(), partition))
            .map(|c| c.next_offset)
    }

    /// The newest generation claimed for the group's partition; 0 if none was.
    pub(crate) fn generation(&self, group: &str, topic: &str, partition: u32) -> u64 {
        let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups
            .get(group)
            .and_then(|g| g.owners.get(&(topic.to_owned(), partition)))
            .copied()
            .unwrap_or(0)
    }

    /// Refuses a commit of `generation` once a newer one was claimed.
    pub(crate) fn check_generation(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        generation: u64,
    ) -> Result<()> {
        let current = self.generation(group, topic, partition);
        if generation < current {
            return Err(Error::Fenced {
                group: group.to_owned(),
                topic: topic.to_owned(),
                partition,
                generation,
                current,
            });
        }
        Ok(())
    }

    /// Durably claims the group's partition for a new owner: returns a generation above
    /// every one claimed before, after the group's file holds it.
    pub(crate) fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        let key = (topic.to_owned(), partition);
        let file_lock = self.file_lock(group);
        let _writing = file_lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (offsets, mut owners) = self.snapshot(group);
        let generation = owners.get(&key).copied().unwrap_or(0) + 1;
        owners.insert(key.clone(), generation);
        self.write_file(group, &offsets, &owners)
            .inspect_err(|_| self.mark_dirty(group))
            .context(|| {
                format!(
                    "could not claim partition {partition} of topic \"{topic}\" for group \"{group}\" in {}",
                    self.path(group).display()
                )
            })?;
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let owned = groups
            .entry(group.to_owned())
            .or_default()
            .owners
            .entry(key)
            .or_default();
        *owned = (*owned).max(generation);
        Ok(generation)
    }

    /// The group's offsets and owners, marked written: the caller holds the group's file
    /// lock and writes them (or marks the group dirty again if that fails).
    fn snapshot(&self, group: &str) -> (GroupOffsets, Owners) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let state = groups.entry(group.to_owned()).or_default();
        state.dirty = false;
        (state.offsets.clone(), state.owners.clone())
    }

    /// Durably records `next_offset`, with `sequence`, for the group, topic and partition,
    /// unless a generation newer than `generation` was claimed ([`Error::Fenced`]).
    pub(crate) fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        next_offset: u64,
        sequence: u64,
        generation: u64,
    ) -> Result<()> {
        let key = (topic.to_owned(), partition);
        let commit = Committed {
            next_offset,
            sequence,
        };
        let file_lock = self.file_lock(group);
        let _writing = file_lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the file lock, which a claim holds until its generation is durable.
        self.check_generation(group, topic, partition, generation)?;
        // The snapshot holds every commit applied so far.
        let (mut snapshot, owners) = self.snapshot(group);
        merge(&mut snapshot, key.clone(), commit);
        let written = self
            .write_file(group, &snapshot, &owners)
            .inspect_err(|_| self.mark_dirty(group));
        written.context(|| {
            format!(
                "could not commit offset {next_offset} of group \"{group}\" for partition {partition} of topic \"{topic}\" to {}",
                self.path(group).display()
            )
        })?;
        // Only a durable commit becomes visible.
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        merge(
            &mut groups.entry(group.to_owned()).or_default().offsets,
            key,
            commit,
        );
        Ok(())
    }

    /// Records a transaction's `commit`, with `sequence`, in memory only: it is durable
    /// elsewhere already (in the journal or in its frame). The group's file catches up at
    /// the next [`Groups::checkpoint`].
    pub(crate) fn apply(&self, commit: &IntentCommit, sequence: u64) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let state = groups.entry(commit.group.clone()).or_default();
        let key = (commit.topic.clone(), commit.partition);
        let commit = Committed {
            next_offset: commit.next_offset,
            sequence,
        };
        if merge(&mut state.offsets, key, commit) {
            state.dirty = true;
        }
    }

    /// Lowers every committed offset past its partition's end offset (`end_offset` of a
    /// topic and partition; `None` for one the log does not have) to that end, in memory,
    /// marking its group dirty for the next checkpoint. The commit keeps its sequence, so
    /// applying again the commit that set the old offset (from the journal or a frame)
    /// leaves the clamp alone.
    pub(crate) fn clamp_to_end(&self, end_offset: impl Fn(&str, u32) -> Option<u64>) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        for (group, state) in groups.iter_mut() {
            for ((topic, partition), committed) in state.offsets.iter_mut() {
                let Some(end) = end_offset(topic, *partition) else {
                    continue;
                };
                if committed.next_offset > end {
                    telemetry::GroupOffsetClamped {
                        group,
                        topic,
                        partition: *partition,
                        was: committed.next_offset,
                        now: end,
                    }
                    .emit();
                    committed.next_offset = end;
                    state.dirty = true;
                }
            }
        }
    }

    /// Writes the file of every group with commits applied since its last write; see the
    /// module docs for what `Ok` promises.
    pub(crate) fn checkpoint(&self) -> Result<()> {
        let names: Vec<String> = {
            let groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
            groups.keys().cloned().collect()
        };
        for group in names {
            // Taken before the dirty mark is read: a write of this group in flight elsewhere
            // finishes first, or marks the group dirty again if it failed.
            let file_lock = self.file_lock(&group);
            let _writing = file_lock.lock().unwrap_or_else(PoisonError::into_inner);
            let (offsets, owners) = {
                let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(state) = groups.get_mut(&group).filter(|s| s.dirty) else {
                    continue;
                };
                state.dirty = false;
                (state.offsets.clone(), state.owners.clone())
            };
            if let Err(error) = self.write_file(&group, &offsets, &owners) {
                self.mark_dirty(&group);
                return Err(Error::Io {
                    context: format!(
                        "could not checkpoint the offsets of group \"{group}\" to {}",
                        self.path(&group).display()
                    ),
                    source: error,
                });
            }
        }
        Ok(())
    }

    fn mark_dirty(&self, group: &str) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        groups.entry(group.to_owned()).or_default().dirty = true;
    }

    fn file_lock(&self, group: &str) -> Arc<Mutex<()>> {
        let mut locks = self
            .file_locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(group.to_owned()).or_default())
    }

    fn path(&self, group: &str) -> PathBuf {
        self.dir.join(format!("{group}.json"))
    }

    fn write_file(
        &self,
        group: &str,
        offsets: &GroupOffsets,
        owners: &Owners,
    ) -> std::io::Result<()> {
        let file = GroupFile {
            version: GROUP_FILE_VERSION,
            offsets: offsets
                .iter()
                .map(|((topic, partition), committed)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    next_offset: committed.next_offset,
                    sequence: committed.sequence,
                })
                .collect(),
            owners: owners
                .iter()
                .map(|((topic, partition), generation)| Owner {
                    topic: topic.clone(),
                    partition: *partition,
                    generation: *generation,
                })
                .collect(),
        };
        let contents = serde_json::to_vec(&file).map_err(std::io::Error::from)?;
        fsutil::write_atomically(&*self.io, &self.path(group), &contents)
    }
}

fn read_group_file(io: &dyn Io, path: &Path) -> Result<(GroupOffsets, Owners)> {
    let contents = io
        .read(path)
        .context(|| format!("could not read {}", path.display()))?;
    let corrupt = |reason: String| Error::Corrupt {
        what: path.display().to_string(),
        reason,
    };
    let file: GroupFile = serde_json::from_slice(&contents).map_err(|e| corrupt(e.to_string()))?;
    if !(1..=GROUP_FILE_VERSION).contains(&file.version) {
        return Err(corrupt(format!("unknown version {}", file.version)));
    }
    let offsets = file
        .offsets
        .into_iter()
        .map(|o| {
            (
                (o.topic, o.partition),
                Committed {
                    next_offset: o.next_offset,
                    sequence: o.sequence,
                },
            )
        })
        .collect();
    let owners = file
        .owners
        .into_iter()
        .map(|o| ((o.topic, o.partition), o.generation))
        .collect();
    Ok((offsets, owners))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A checkpoint that meets a write of the group in flight elsewhere waits for it, and
    /// then writes the group if that write failed (and marked it dirty again).
    #[test]
    fn a_checkpoint_waits_for_a_write_of_the_group_in_flight_elsewhere() {
        let dir = tempfile::tempdir().expect("tempdir");
        let io: Arc<dyn Io> = Arc::new(crate::io::RealIo);
        let groups = Arc::new(Groups::load(&io, dir.path()).expect("load"));
        let commit = IntentCommit {
            group: "g".into(),
            topic: "in".into(),
            partition: 0,
            next_offset: 5,
        };
        groups.apply(&commit, 1);
        // Another thread's write of "g" in flight: it holds the file lock and has taken
        // the commits (cleared the dirty mark), but its file is not there yet.
        let file_lock = groups.file_lock("g");
        let writing = file_lock.lock().expect("lock");
        groups
            .groups
            .lock()
            .expect("groups")
            .get_mut("g")
            .expect("g")
            .dirty = false;
        let checkpoint = std::thread::spawn({
            let groups = Arc::clone(&groups);
            move || groups.checkpoint()
        });
        // The checkpoint has the group's lock in hand (its own handle on it, besides the
        // registry's and this test's) before it reads the dirty mark; from then on it
        // can only wait for this test to let go. A checkpoint that read the mark without
        // the lock never takes a handle, and would have skipped the group.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while Arc::strong_count(&file_lock) < 3 {
            assert!(
                !checkpoint.is_finished() && std::time::Instant::now() < deadline,
                "the checkpoint did not wait for the write of the group in flight"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            !checkpoint.is_finished(),
            "a checkpoint must not report the group durable before its write is"
        );
        // The write fails: it marks the group dirty again, and the checkpoint writes it.
        groups.mark_dirty("g");
        drop(writing);
        checkpoint.join().expect("join").expect("checkpoint");
        let reloaded = Groups::load(&io, dir.path()).expect("reload");
        assert_eq!(reloaded.committed("g", "in", 0), Some(5));
    }
}
