//! weir-log-embedded's integration tests, one binary: a model test that drives random appends,
//! reads, commits, crashes, power cuts and reopenings against an in-memory model
//! (`model`), power cuts at every disk operation of fixed workloads (`power`), and a
//! crash test that SIGKILLs a process appending under load (`crash`).
//!
//! Everything here goes through the public API only, plus the data directory's files
//! where a test damages them the way a crash or a bad disk would. The power-cut tests run
//! the log on the simulated disk (`weir_log_embedded::io::SimDisk`, the `sim` feature):
//! SIGKILL keeps the page cache, so `crash` would pass without a single fsync; a power
//! cut on the simulated disk loses whatever was not synced.

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
