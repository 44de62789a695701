//! weir-log-embedded's integration tests, one binary: a model test that drives random appends,
//! reads, commits, claims, crashes, power cuts and reopenings against an in-memory model
//! (`model`), power cuts at every disk operation of fixed workloads (`power`), and a
//! crash test that SIGKILLs a process appending under load (`crash`).
//!
//! Everything here goes through the public API only, plus the data directory's files
//! where a test damages them the way a crash or a bad disk would. The power-cut tests run
//! the log on the simulated disk (`weir_log_embedded::io::SimDisk`, the `sim` feature):
//! SIGKILL keeps the page cache, so `crash` would pass without a single fsync; a power
//! cut on the simulated disk loses whatever was not synced.
//!
//! # Every fsync, and the test that fails without it
//!
//! Each sync call site of the log was removed alone and the power-cut tests run (the
//! `power` tests, `model::log_matches_model_through_power_cuts` (abbreviated `model`),
//! and the unit tests `transactions_survive_a_power_cut_at_every_step` and
//! `a_transaction_whose_batch_fails_on_the_simulated_disk_…` beside `transaction.rs`).
//! Where nothing failed, the row says why the fsync is not needed on its own; for each
//! pair that covers the other, removing both fails the tests named. The interval fsync
//! of `FsyncPolicy::Interval` is not on the durable path (that policy is lossy).
//!
//! After the merge with main (owner generations, clamped group offsets, the roll that
//! writes the recovery point before the switch and removes a next segment it could not
//! start, topic directories removed after a failed creation), the rows of the roll, the
//! recovery point, the group files, the topic removal and the clamp were run again,
//! with the tests added for those operations; the other rows name the tests of their
//! last run, and the tests added since may fail without those syncs too. `model` runs on
//! random seeds: a row that names it failed on the run recorded.
//!
//! | call site | fails without it |
//! |---|---|
//! | partition writer: fdatasync of a group before it is acknowledged | every power-cut test, e.g. `power::appends_across_segment_rolls_survive_a_cut_at_every_step` |
//! | roll: fdatasync of the segment it closes | `power::appends_across_segment_rolls_…` (a lossy topic's closed segment), `model` (run again after the merge: the same) |
//! | partition close: fdatasync | `power::appends_across_segment_rolls_…`, `power::a_new_log_…`, `power::a_batch_refused_…`, `model` |
//! | `Partition::open`: directory fsync after creating segment 0 | eight tests: the log does not open |
//! | `Partition::open`, create mode: directory fsync when the segments are there already | `power::a_topic_created_again_after_a_process_crash_…` |
//! | `Partition::open`: fsync after cutting a torn tail | `power::a_batch_refused_by_a_full_disk_…` |
//! | `Partition::open`: fdatasync of each segment it scans | six tests, each after a process crash and a power cut |
//! | roll: directory fsync after creating the next segment | none alone: the roll writes `recovery-point.json`, which fsyncs the same directory, before the next segment takes a write; both removed: `model`, `power::appends_across_segment_rolls_…`, `power::a_roll_refused_by_a_full_disk_…`, `power::compaction_and_retention_…`, `power::a_transaction_completed_…`, `transactions_survive_…` |
//! | failed roll: directory fsync after removing the next segment's file | `power::a_roll_refused_by_a_full_disk_…` (the empty file comes back, is taken for the next segment, and cuts off a batch acknowledged after the failed roll) |
//! | retention: directory fsync after each deleted segment | `power::compaction_and_retention_…` (a hole), `power::a_done_entry_…`, `model` |
//! | compaction: fsync of the rewritten segment | `power::compaction_and_retention_…` (a key's latest record lost) |
//! | compaction: directory fsync after its rename | none alone: writing the index files right after fsyncs the same directory, and a lost rename only brings back the segment as it was; both removed: `power::compaction_and_retention_…` (compaction undone after an open showed it done) |
//! | `recovery-point.json`: fsync of the file, directory fsync | none (both removed, run again after the merge): it only says how far open may trust index files; an older, missing or unreadable one makes open scan more (its directory fsync also covers the roll's, above) |
//! | index files: fsync of the files | none: open checks them (CRC, the `.log` length) and rebuilds them by a scan |
//! | index files: directory fsync | `power::compaction_and_retention_…` (after a process crash mid-compaction, the open's index rewrite is what makes the compacted segment's rename durable) |
//! | `topic.json`: fsync of the file | every power-cut test: `topic.json` is corrupt, the log does not open |
//! | `topic.json`: directory fsync | nine tests: the topic is gone |
//! | topic directory: fsync of `topics/` after `mkdir` | every power-cut test |
//! | `Topic::recover`: fsync of the topic directory | `power::a_new_log_…`, `power::a_topic_created_again_…` |
//! | removal of a topic directory (a failed creation, or one open finds without `topic.json`): fsync of the topic directory after deleting `topic.json` | none, alone or with the next: a creation fails at the latest at the fsync that would make its `topic.json` durable, and a failed fsync forgets its writes (in `SimDisk` as on Linux), so the file removed first never was durable; it guards a file system that kept the rename anyway, where a `topic.json` left beside removed partitions would fail every open |
//! | removal of a topic directory: fsync of `topics/` after the removal | none, alone or with the previous: what comes back has no durable `topic.json` and holds no records, and the next open removes it again (`power::a_failed_topic_creation_…` cuts at every step of both removals) |
//! | partition directory: fsync of the topic directory after `mkdir` | `power::a_new_log_…` |
//! | data directory: fsync of its parent after `mkdir` | nine tests: everything is gone |
//! | `topics/` and `groups/`: fsync of the data directory | none alone: `transactions/` is made next in the same open and fsyncs the same directory; both removed: nine tests |
//! | `transactions/`: fsync of the data directory | `model`, `a_transaction_whose_batch_fails_…` |
//! | `fsutil::create_dir`: fsync of the parent when the directory was there | `power::a_topic_created_again_…` |
//! | group file: fsync of the file | nine tests: the group file is corrupt (`model`, `transactions_survive_…`, `power::claims_and_fenced_commits_…`, `power::a_group_offset_lowered_…`, `power::a_new_log_…`, `power::a_topic_created_again_…`, `power::a_transaction_completed_…`, `power::a_done_entry_…`, `power::a_transaction_left_pending_…`) |
//! | group file: directory fsync | eight tests: `power::claims_and_fenced_commits_…` (an acknowledged claim's generation is gone), `power::a_group_offset_lowered_…`, `transactions_survive_a_power_cut_at_every_step`, `model`, `power::a_new_log_…`, `power::a_topic_created_again_…`, `power::a_transaction_completed_…`, `power::a_transaction_left_pending_…` |
//! | write-ahead file (`LogOptions::write_ahead`, run 2026-12-06): fdatasync of a group before it is acknowledged | `power::a_new_log_…` (with the file), `power::appends_across_write_ahead_files_…`, `power::a_group_the_write_ahead_file_refused_…`, `tests::acknowledged_groups_come_back_…` |
//! | write-ahead file: directory fsync after creating a file | the same four |
//! | write-ahead file: fsync of a new file's header | none alone: the first group's fdatasync of the file makes the header durable with it, before anything is acknowledged |
//! | write-ahead file: fsync of its cut-back after a full disk | `tests::a_group_the_write_ahead_file_refused_never_comes_back_after_a_cut` |
//! | partition: fsync of its segment's cut-back when the write-ahead file refused a group | `tests::a_group_the_write_ahead_file_refused_…`, `power::a_group_the_write_ahead_file_refused_…` |
//! | write-ahead checkpoint: fdatasync of each segment before the file goes | `power::appends_across_write_ahead_files_…` |
//! | write-ahead checkpoint: directory fsync after removing the file | none alone: a file that comes back is replayed, which writes bytes the segments hold already or skips segments that rolled since |
//! | write-ahead replay at open: fdatasync of the segments it wrote | `power::an_open_that_replays_the_write_ahead_file_…` |
//! | write-ahead replay at open: directory fsync after removing the files | none alone: with the file on, creating the next file fsyncs the same directory; without it, files that come back are replayed again, writing bytes the segments hold already |
//! | open: writing the offsets `Groups::clamp_to_end` lowered (the clamp marks the group dirty for open's checkpoint) | `power::a_group_offset_lowered_…` (the old commit comes back over records the group never read), `model` |
//! | `Groups::load`: fsync of `groups/` | `transactions_survive_…`, `power::a_new_log_…`, `power::a_transaction_completed_…` |
//! | journal writer: fdatasync of a group of intents | five tests, e.g. `transactions_survive_…` (a transaction in part) |
//! | journal, first file: fdatasync of its start entry | none alone: the same group's intent fdatasync follows before any reply (a first group always holds an intent); both removed: five tests |
//! | journal, first file: directory fsync | five tests |
//! | journal rotation: fdatasync and directory fsync of the new file | `power::a_transaction_left_pending_survives_new_journal_files_…` |
//! | journal rotation: fdatasync of the old file (its `done` entries) | `power::a_done_entry_in_a_superseded_journal_file_…` |
//! | open: fdatasync of the file that replaces the recovered ones | none since recovery looks for tags only from an intent's own end offset (before: `model`, a transaction came back in part); it holds only the sequence counter, and one that starts again from the group files' highest sequence still orders every commit |
//! | open: directory fsync of that file | none alone: the directory fsync after deleting the recovered files covers it; both removed: `power::a_transaction_completed_…`, `model` |
//! | open: directory fsync after deleting the recovered files | `power::a_transaction_completed_at_open_is_not_repeated_…` (appended again), `model` |
//! | open: fsync after cutting a journal file's torn tail | none: the same open deletes the file once recovery is done; if it fails first, the next one cuts the tail again |
//! | journal close: fdatasync of unsynced `done` entries | none: a lost `done` makes the next open look for the batches by tag, and it finds them, because retention and compaction sync the journal before they delete or rewrite anything, and recovery runs before them |
//! | checkpointer: directory fsync after deleting old journal files | none: a file that comes back holds only intents whose `done` it holds durably (the rotation synced it) or that were carried into the newer file |

mod conformance;
mod crash;
mod model;
mod power;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use weir_log_embedded::{Error, Log, LogOptions, Result, io::Io};

/// Creates a topic with `partitions` partitions: the only place these tests create one,
/// so a change to `Log::create_topic`'s signature is a change here alone.
pub fn create_topic(log: &Log, name: &str, partitions: u32) -> Result<bool> {
    log.create_topic(
        name,
        &weir_log_embedded::TopicConfig::with_partitions(partitions),
    )
}

/// Opens the log in `dir`, waiting up to five seconds while it is locked.
///
/// The log's flock belongs to the open file, which a child process forked by another
/// test in this binary (see `crash`) shares until it execs; a log dropped in that window
/// stays locked for a moment after the drop.
pub fn open_log(dir: &Path) -> Log {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Log::open(dir, LogOptions::default()) {
            Err(Error::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            result => return result.expect("open the log"),
        }
    }
}

/// The file that takes a partition's next writes: the highest-named `.log` file in its
/// directory, `<dir>/.../<topic>/<partition>/`. Walks the data directory rather than
/// building the path so that one file per partition and segmented partitions both work.
pub fn last_log_file(io: &dyn Io, data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    let partition = partition.to_string();
    let mut logs = Vec::new();
    let mut dirs = vec![data_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for name in io.read_dir(&dir).expect("list the data directory") {
            let path = dir.join(name);
            if io.metadata(&path).expect("stat").is_dir {
                dirs.push(path);
                continue;
            }
            let in_partition_dir = path.parent().is_some_and(|parent| {
                parent.file_name().is_some_and(|n| n == partition.as_str())
                    && parent
                        .parent()
                        .and_then(Path::file_name)
                        .is_some_and(|n| n == topic)
            });
            if in_partition_dir && path.extension().is_some_and(|e| e == "log") {
                logs.push(path);
            }
        }
    }
    logs.into_iter().max().unwrap_or_else(|| {
        panic!(
            "no .log file for partition {partition} of topic {topic:?} under {}",
            data_dir.display()
        )
    })
}

/// xorshift64*: enough randomness for picking crash moments, reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `WEIR_TEST_SEED` if set, else from the clock; prints the seed so that a
    /// failing run can be repeated.
    pub fn from_env_or_clock(what: &str) -> Rng {
        let seed = std::env::var("WEIR_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{what}: WEIR_TEST_SEED={seed}");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}
