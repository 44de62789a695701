//! Topics: name rules, the topic directory and its `topic.json`, and the choice of
//! partition for each record.
//!
//! # On disk
//!
//! ```text
//! topics/<topic>/topic.json     {"version":2,"partitions":3,"config":{…TopicConfig…}}
//! topics/<topic>/<partition>/   see `partition`
//! ```
//!
//! Version 1 files (`{"version":1,"partitions":3}`) are read with the default
//! configuration. Version 3 is version 2 in a log opened with a write-ahead file (see
//! `wal`): such an open rewrites older files as version 3 before a partition can write,
//! so weir before it, which would miss the frames only that file holds after a crash,
//! refuses the log. A log opened without the file writes version 2 (its open replayed
//! and removed what an earlier open left in the file).
//!
//! # Invariants
//!
//! - A topic exists exactly when its `topic.json` does. Creation makes every partition
//!   directory and file durable first and writes `topic.json` last, atomically (temporary
//!   file, fsync, rename, fsync of the directory), so a crash mid-creation leaves a
//!   directory without `topic.json`, which open removes (and the next creation of that
//!   topic would reuse, fsyncing the directories it finds again: a crashed process may
//!   have made them without). A creation that fails removes its directory itself,
//!   `topic.json` first and durably, so that neither a crash during the removal nor a
//!   power cut after it can leave a `topic.json` whose partitions are gone. Such a
//!   directory never holds records; one that does is left alone, ignored, and blocks the
//!   creation of its topic. Open fsyncs the directory of each topic it finds, in case a
//!   crash came between renaming `topic.json` and that fsync.
//! - The partition count never changes once `topic.json` exists; the rest of the
//!   configuration may, by replacing `topic.json` atomically.

use std::{
    path::Path,
    sync::{
        Arc, PoisonError,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    Error, Result, RetentionReport, TopicInfo,
    error::IoContext,
    fsutil,
    groups::Groups,
    io::Io,
    partition::{OpenMode, Partition, Settings},
    segment, telemetry,
    wal::Wal,
};

/// When an append's bytes are fsynced before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Acknowledge and show to readers only after `fdatasync`; appends waiting at the same
    /// time share one (group commit). Nothing acknowledged is lost in a crash.
    #[default]
    Always,
    /// Acknowledge once written; the writer fsyncs at most `ms` milliseconds later. A
    /// crash may lose the last `ms` of acknowledged records.
    Interval { ms: u64 },
    /// Acknowledge once written; the OS flushes when it likes (and on close). A crash may
    /// lose acknowledged records.
    Never,
}

/// How a topic stores its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    pub partitions: u32,
    pub fsync: FsyncPolicy,
    /// Closed segments whose newest record is older than this are deleted.
    pub retention_ms: Option<u64>,
    /// Per partition: the oldest closed segments are deleted while the rest still take at
    /// least this many bytes.
    pub retention_bytes: Option<u64>,
    /// The active segment rolls before it would grow past this. Default 64 MiB.
    pub segment_bytes: u64,
    /// Keep only the latest record per key in closed segments; appends need a key, and a
    /// record with an empty value (a tombstone) deletes its key at the next compaction.
    pub compaction: bool,
}

/// Smallest and largest `segment_bytes`; positions in a segment must fit 32 bits.
const SEGMENT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1..=(1 << 30);

impl Default for TopicConfig {
    fn default() -> TopicConfig {
        TopicConfig {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: 64 << 20,
            compaction: false,
        }
    }
}

impl TopicConfig {
    /// The default configuration with `partitions` partitions.
    pub fn with_partitions(partitions: u32) -> TopicConfig {
        TopicConfig {
            partitions,
            ..TopicConfig::default()
        }
    }

    /// Checks the configuration of a topic that may have up to `max_partitions`.
    pub(crate) fn validate(&self, topic: &str, max_partitions: u32) -> Result<()> {
        if !(1..=max_partitions).contains(&self.partitions) {
            return Err(Error::InvalidPartitionCount {
                topic: topic.to_owned(),
                partitions: self.partitions,
                max: max_partitions,
            });
        }
        let invalid = |reason: String| {
            Err(Error::InvalidTopicConfig {
                topic: topic.to_owned(),
                reason,
            })
        };
        if !SEGMENT_BYTES_RANGE.contains(&self.segment_bytes) {
            return invalid(format!(
                "segment_bytes is {}, it must be 1 to {}",
                self.segment_bytes,
                SEGMENT_BYTES_RANGE.end()
            ));
        }
        if self.fsync == (FsyncPolicy::Interval { ms: 0 }) {
            return invalid("an fsync interval of 0 ms; use Always instead".into());
        }
        Ok(())
    }

    fn settings(&self) -> Settings {
        Settings {
            fsync: self.fsync,
            segment_bytes: self.segment_bytes,
        }
    }
}

const TOPIC_FILE: &str = "topic.json";
/// Version 3 says the log may hold acknowledged frames only in its write-ahead file
/// (see `wal`); weir before it refuses it.
const TOPIC_FILE_VERSION: u32 = 3;

#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    version: u32,
    partitions: u32,
    /// Absent in version 1.
    #[serde(default)]
    config: Option<TopicConfig>,
}

pub(crate) use weir_log::check_name;

pub(crate) fn validate_topic_name(name: &str) -> Result<()> {
    check_name(name).map_err(|reason| Error::InvalidTopicName {
        name: name.to_owned(),
        reason,
    })
}

pub(crate) struct Topic {
    io: Arc<dyn Io>,
    name: String,
    dir: std::path::PathBuf,
    config: std::sync::RwLock<TopicConfig>,
    /// What `topic.json` is written as: version 3 while the log has a write-ahead file.
    file_version: u32,
    partitions: Vec<Arc<Partition>>,
    next_round_robin: AtomicU32,
}

impl Topic {
    /// Creates the topic's files under `dir` (which is `topics/<name>`). If that fails
    /// part-way, removes `dir` again, so a failed creation leaves nothing behind. A
    /// directory an earlier unfinished creation left is reused, unless it holds records.
    pub(crate) fn create(
        io: &Arc<dyn Io>,
        dir: &Path,
        name: &str,
        config: &TopicConfig,
        groups: &Arc<Groups>,
        wal: Option<&Arc<Wal>>,
    ) -> Result<Topic> {
        if fsutil::exists(&**io, dir)
            && holds_records(&**io, dir).context(|| format!("could not list {}", dir.display()))?
        {
            return Err(Error::Corrupt {
                what: dir.display().to_string(),
                reason: "it has no topic.json but its partitions hold records".into(),
            });
        }
        fsutil::create_dir(&**io, dir).context(|| format!("could not create {}", dir.display()))?;
        match Topic::create_files(io, dir, name, config, groups, wal) {
            Ok(opened) => Ok(Topic::new(
                io,
                dir,
                name,
                config.clone(),
                file_version(wal),
                opened,
            )),
            Err(error) => {
                // Nothing of it holds records yet (the topic never existed), and its
                // partitions are closed again.
                if let Err(removal) = remove_dir(&**io, dir) {
                    telemetry::EntryIgnored {
                        path: dir,
                        reason: &format!(
                            "could not remove what a failed topic creation left ({removal}); the next open removes it"
                        ),
                    }
                    .emit();
                }
                Err(error)
            }
        }
    }

    /// Makes every partition of a new topic, then its `topic.json`.
    fn create_files(
        io: &Arc<dyn Io>,
        dir: &Path,
        name: &str,
        config: &TopicConfig,
        groups: &Arc<Groups>,
        wal: Option<&Arc<Wal>>,
    ) -> Result<Vec<Partition>> {
        let opened = (0..config.partitions)
            .map(|id| {
                Partition::open(
                    io,
                    name,
                    id,
                    &dir.join(id.to_string()),
                    OpenMode::Create,
                    config.settings(),
                    groups,
                    wal,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        write_topic_file(&**io, dir, name, config, file_version(wal))?;
        Ok(opened)
    }

    /// Replaces the configuration (all but the partition count) durably.
    pub(crate) fn update_config(&self, config: &TopicConfig) -> Result<()> {
        let mut current = self.config.write().unwrap_or_else(PoisonError::into_inner);
        if *current == *config {
            return Ok(());
        }
        write_topic_file(&*self.io, &self.dir, &self.name, config, self.file_version)?;
        for partition in &self.partitions {
            partition.set_settings(config.settings());
        }
        *current = config.clone();
        Ok(())
    }

    pub(crate) fn config(&self) -> TopicConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Per partition, the offset below which retention may work; see
    /// [`Partition::retention_limit`].
    pub(crate) fn retention_limits(&self) -> Vec<u64> {
        self.partitions
            .iter()
            .map(|p| p.retention_limit())
            .collect()
    }

    /// Applies the topic's retention and compaction to every partition, below the limits
    /// from [`Topic::retention_limits`].
    pub(crate) fn enforce_retention(
        &self,
        now_ms: i64,
        limits: &[u64],
        report: &mut RetentionReport,
    ) -> Result<()> {
        let config = self.config();
        for (partition, &limit) in self.partitions.iter().zip(limits) {
            partition.enforce_retention(
                config.retention_ms,
                config.retention_bytes,
                config.compaction,
                now_ms,
                limit,
                report,
            )?;
        }
        Ok(())
    }

    /// Opens the topic in `dir`, or `None` if its creation never finished.
    pub(crate) fn recover(
        io: &Arc<dyn Io>,
        dir: &Path,
        name: &str,
        groups: &Arc<Groups>,
        wal: Option<&Arc<Wal>>,
    ) -> Result<Option<Topic>> {
        let path = dir.join(TOPIC_FILE);
        let contents = match io.read(&path) {
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
        if !(1..=TOPIC_FILE_VERSION).contains(&file.version) {
            return Err(corrupt(format!("unknown version {}", file.version)));
        }
        let config = match (file.version, file.config) {
            (1, None) => TopicConfig::with_partitions(file.partitions),
            (2 | 3, Some(config)) if config.partitions == file.partitions => config,
            _ => return Err(corrupt("unexpected contents".into())),
        };
        // Any count: the limits of `LogOptions` bound new topics, not the existing ones.
        config
            .validate(name, u32::MAX)
            .map_err(|e| corrupt(e.to_string()))?;
        // A process that crashed between renaming topic.json into place and fsyncing the
        // directory left a topic a power cut could still take, acknowledged records and all.
        io.sync_dir(dir)
            .context(|| format!("could not fsync {}", dir.display()))?;
        // Before anything of it can be in the write-ahead file, weir before version 3
        // must refuse the topic (see `wal`); without the file (whose replay just removed
        // what an earlier open left there) it may read it again.
        let version = file_version(wal);
        if file.version != version && !(file.version == 1 && version == 2) {
            write_topic_file(&**io, dir, name, &config, version)?;
        }
        let opened = (0..file.partitions)
            .map(|id| {
                Partition::open(
                    io,
                    name,
                    id,
                    &dir.join(id.to_string()),
                    OpenMode::Recover,
                    config.settings(),
                    groups,
                    wal,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Topic::new(
            io,
            dir,
            name,
            config,
            file_version(wal),
            opened,
        )))
    }

    fn new(
        io: &Arc<dyn Io>,
        dir: &Path,
        name: &str,
        config: TopicConfig,
        file_version: u32,
        partitions: Vec<Partition>,
    ) -> Topic {
        Topic {
            io: Arc::clone(io),
            dir: dir.to_owned(),
            config: std::sync::RwLock::new(config),
            file_version,
            name: name.to_owned(),
            partitions: partitions.into_iter().map(Arc::new).collect(),
            next_round_robin: AtomicU32::new(0),
        }
    }

    /// Sets every partition's commit delay (see `LogOptions::commit_delay`), capped at
    /// `MAX_COMMIT_DELAY`.
    pub(crate) fn set_commit_delay(&self, delay: Duration) {
        for partition in &self.partitions {
            partition.set_commit_delay(delay.min(crate::MAX_COMMIT_DELAY));
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
            Some(key) => weir_log::partition_for_key(key, self.partition_count()),
            None => self.next_round_robin.fetch_add(1, Ordering::Relaxed) % self.partition_count(),
        }
    }

    pub(crate) fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            partitions: self.partition_count(),
            end_offsets: self.partitions.iter().map(|p| p.end_offset()).collect(),
            start_offsets: self.partitions.iter().map(|p| p.start_offset()).collect(),
            config: self.config(),
        }
    }
}

/// Removes `dir`, left by a topic creation that did not finish (it has no `topic.json`),
/// unless one of its partitions holds records, which a creation never writes: then it is
/// not ours to delete. Returns whether it was removed.
pub(crate) fn remove_unfinished(io: &dyn Io, dir: &Path) -> std::io::Result<bool> {
    if holds_records(io, dir)? {
        return Ok(false);
    }
    remove_dir(io, dir)?;
    Ok(true)
}

/// Whether a segment file in a partition directory of `dir` is not empty.
fn holds_records(io: &dyn Io, dir: &Path) -> std::io::Result<bool> {
    for entry in io.read_dir(dir)? {
        let partition = dir.join(entry);
        if !io.metadata(&partition)?.is_dir {
            continue;
        }
        for file in io.read_dir(&partition)? {
            let is_segment = file
                .to_str()
                .is_some_and(|n| segment::parse_log_file_name(n).is_some());
            if is_segment && io.metadata(&partition.join(file))?.len > 0 {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Removes `dir` and everything in it, durably. `topic.json` goes first, durably on its
/// own: the rest of the removal may be cut short by a crash, or partly taken back by a
/// power cut, and a `topic.json` left beside missing partitions would fail every open.
fn remove_dir(io: &dyn Io, dir: &Path) -> std::io::Result<()> {
    match io.remove_file(&dir.join(TOPIC_FILE)) {
        Ok(()) => io.sync_dir(dir)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    io.remove_dir_all(dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => io.sync_dir(parent),
        _ => Ok(()),
    }
}

/// The version a topic's file is written as: 3 with a write-ahead file, else 2 (which
/// weir before version 3 reads: a log opened without the file has none left).
fn file_version(wal: Option<&Arc<Wal>>) -> u32 {
    match wal {
        Some(_) => TOPIC_FILE_VERSION,
        None => 2,
    }
}

fn write_topic_file(
    io: &dyn Io,
    dir: &Path,
    name: &str,
    config: &TopicConfig,
    version: u32,
) -> Result<()> {
    let contents = serde_json::to_vec(&TopicFile {
        version,
        partitions: config.partitions,
        config: Some(config.clone()),
    })
    .map_err(std::io::Error::from)
    .context(|| format!("could not encode {TOPIC_FILE} of topic \"{name}\""))?;
    let path = dir.join(TOPIC_FILE);
    fsutil::write_atomically(io, &path, &contents)
        .context(|| format!("could not write {}", path.display()))
}
