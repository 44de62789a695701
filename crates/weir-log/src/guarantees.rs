//! What a backend promises for a topic, declared rather than implied, so the engine adapts
//! to the declaration (never to one backend's internals) and `weir status` can show it.

use serde::Serialize;

/// A backend's promises for one topic's settings; see [`crate::EventLog::guarantees`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Guarantees {
    /// What an acknowledged append means.
    pub acknowledged: Acknowledgement,
    /// What one `append` call's records are atomic as.
    pub atomicity: Atomicity,
    /// Whether `append_atomic`'s records are all or nothing across partitions (else as
    /// `atomicity`).
    pub atomic_batches: bool,
    /// Whether appends are deduplicated by an id, and for how long.
    pub deduplication: Deduplication,
    /// What [`crate::EventLog::commit_transaction`] gives across a crash.
    pub transactions: TransactionGuarantee,
    /// Whether [`crate::Expect`] is checked by the storage itself, atomically with the
    /// write, for a partition's end and for a key's last offset.
    pub conditional_appends: ConditionalAppends,
    /// Whether a group commit with an older generation than the partition's owner is
    /// refused ([`crate::ErrorKind::Fenced`]).
    pub fenced_commits: bool,
}

/// What an acknowledged append means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Acknowledgement {
    /// fdatasynced on this machine before the acknowledgement.
    Fsynced,
    /// Held by a quorum of replicas before the acknowledgement (their own sync policy
    /// applies on each).
    Replicated,
    /// Written; synced at least every `ms` milliseconds. A power loss may take back the
    /// last `ms` of acknowledged records.
    PeriodicSync { ms: u64 },
    /// Written; synced when the operating system or broker likes. A power loss may take
    /// back acknowledged records.
    Written,
}

impl Acknowledgement {
    /// Whether an acknowledged record survives a power loss.
    pub fn is_durable(self) -> bool {
        matches!(self, Acknowledgement::Fsynced | Acknowledgement::Replicated)
    }
}

/// The scope within which one call's records are all there or none after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Atomicity {
    /// One call's records bound for one partition.
    CallPerPartition,
    /// Each record alone.
    Record,
}

/// Whether appends are deduplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Deduplication {
    None,
    /// A record whose id was appended within `window_ms` is acknowledged without being
    /// stored again.
    ById {
        window_ms: u64,
    },
}

/// What a transaction gives across a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionGuarantee {
    /// Its records and commit are all there exactly once, or none of them.
    ExactlyOnce,
    /// Its records may be stored again when it is retried after a failure or a crash
    /// (consumers see duplicates, with the same ids).
    AtLeastOnce,
}

/// Which [`crate::Expect`] conditions the storage checks atomically with the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConditionalAppends {
    /// [`crate::Expect::End`].
    pub partition_end: bool,
    /// [`crate::Expect::KeyLast`].
    pub key_last: bool,
}
