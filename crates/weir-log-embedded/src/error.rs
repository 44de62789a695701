//! The one error type of weir-log-embedded, and a helper to give IO errors their context.

use std::{io, path::PathBuf};

/// Everything that can go wrong in the log. Messages are lower case and say what to do next.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "topic \"{topic}\" does not exist; create it with PUT /v1/topics/{topic} or declare it in weir.toml"
    )]
    UnknownTopic { topic: String },

    #[error(
        "topic \"{topic}\" has {partitions} partition(s), so partition {partition} does not exist; use a partition below {partitions}"
    )]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    #[error(
        "invalid topic name \"{name}\": {reason}; use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', other than \".\" and \"..\""
    )]
    InvalidTopicName { name: String, reason: &'static str },

    #[error(
        "invalid consumer group name \"{name}\": {reason}; use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', other than \".\" and \"..\""
    )]
    InvalidGroupName { name: String, reason: &'static str },

    /// `max` is the log's [`crate::LogOptions::max_partitions_per_topic`].
    #[error(
        "topic \"{topic}\" cannot have {partitions} partitions; use 1 to {max} (the log's max_partitions_per_topic)"
    )]
    InvalidPartitionCount {
        topic: String,
        partitions: u32,
        max: u32,
    },

    /// The topic would take the log past [`crate::LogOptions::max_partitions`], which
    /// bounds the files and threads the partitions hold.
    #[error(
        "topic \"{topic}\" cannot have {partitions} partitions: the log has {in_use} of its limit of {max} (max_partitions); use fewer partitions or raise max_partitions"
    )]
    TooManyPartitions {
        topic: String,
        partitions: u32,
        in_use: u32,
        max: u32,
    },

    #[error(
        "topic \"{topic}\" already exists with {existing} partition(s), not {requested}; use {existing} or pick another topic name"
    )]
    TopicExists {
        topic: String,
        existing: u32,
        requested: u32,
    },

    /// `index` is the record's position in the slice given to the append call.
    #[error(
        "record {index} for topic \"{topic}\" has {size} bytes of key and value, over the limit of {max}; make it smaller or raise max_record_bytes"
    )]
    RecordTooLarge {
        topic: String,
        index: usize,
        size: usize,
        max: usize,
    },

    #[error(
        "a batch of {records} record(s) for partition {partition} of topic \"{topic}\" takes {size} bytes, over the limit of {max}; append fewer records per call or raise max_batch_bytes"
    )]
    BatchTooLarge {
        topic: String,
        partition: u32,
        records: usize,
        size: usize,
        max: usize,
    },

    #[error(
        "offset {offset} is past the end ({end_offset}) of partition {partition} of topic \"{topic}\"; commit only offsets of records that exist"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: u64,
        end_offset: u64,
    },

    #[error(
        "partition {partition} of topic \"{topic}\" refuses writes after a disk error; fix the disk, then restart the node"
    )]
    Poisoned { topic: String, partition: u32 },

    #[error(
        "{what} is corrupt ({reason}); check the disk and restore the data directory from a backup"
    )]
    Corrupt { what: String, reason: String },

    #[error("data directory {} is in use by another process; stop that process or use another directory", dir.display())]
    Locked { dir: PathBuf },

    #[error(
        "partition {partition} of topic \"{topic}\" was closed while waiting for offset {offset}; retry after reopening the log"
    )]
    Closed {
        topic: String,
        partition: u32,
        offset: u64,
    },

    #[error(
        "partition {partition} of topic \"{topic}\" is out of disk space; nothing was written, free space or lower retention, then retry"
    )]
    DiskFull { topic: String, partition: u32 },

    /// Offsets stop at `u64::MAX - 1`, so that the end offset, one past the last record,
    /// always fits in a `u64`.
    #[error(
        "partition {partition} of topic \"{topic}\" has no offsets left for {records} more record(s): its next offset is {next_offset} and the last offset a partition can hold is {}; nothing was written, append to another partition or topic",
        u64::MAX - 1
    )]
    OffsetsExhausted {
        topic: String,
        partition: u32,
        next_offset: u64,
        records: usize,
    },

    #[error(
        "topic \"{topic}\" is compacted, so every record needs a key; set a key (the partitionkey or subject of an event)"
    )]
    KeyRequired { topic: String },

    #[error(
        "invalid configuration for topic \"{topic}\": {reason}; fix it and create the topic again"
    )]
    InvalidTopicConfig { topic: String, reason: String },

    #[error("invalid transaction producer name \"{name}\": {reason}; use 1 to 255 bytes of UTF-8")]
    InvalidProducerName { name: String, reason: &'static str },

    #[error(
        "a transaction of producer \"{producer}\" takes {size} bytes in the journal, over the limit of {max}; commit fewer or smaller records per transaction or raise max_transaction_bytes"
    )]
    TransactionTooLarge {
        producer: String,
        size: usize,
        max: usize,
    },

    /// The call's own transaction is durable and will complete: send the same
    /// transaction again (it completes this one and writes nothing twice), or open the log.
    #[error(
        "transaction {sequence} of producer \"{producer}\" is durable but not complete ({source}); send the same transaction again to complete it (nothing is written twice), or it completes at the next open of the log"
    )]
    TransactionIncomplete {
        producer: String,
        sequence: u64,
        #[source]
        source: Box<Error>,
    },

    /// An earlier transaction of the producer is still incomplete, so nothing of this
    /// call's transaction was written.
    #[error(
        "an earlier transaction ({sequence}) of producer \"{producer}\" still cannot be completed ({source}); nothing of this transaction was written: fix the cause, then retry it (the retry completes the earlier one first)"
    )]
    EarlierTransactionIncomplete {
        producer: String,
        sequence: u64,
        #[source]
        source: Box<Error>,
    },

    #[error(
        "the transaction journal refuses writes after a disk error; fix the disk, then restart the node"
    )]
    JournalPoisoned,

    /// A commit of an owner that lost the partition to a newer claim.
    #[error(
        "group \"{group}\" has a newer owner of partition {partition} of topic \"{topic}\" (generation {current}, this commit's is {generation}); this owner must stop: nothing was committed"
    )]
    Fenced {
        group: String,
        topic: String,
        partition: u32,
        generation: u64,
        current: u64,
    },

    /// An append's expected end offset did not hold.
    #[error(
        "partition {partition} of topic \"{topic}\" ends at offset {end}, not {expected} as the append expected; nothing was written: read what was appended since, then decide again"
    )]
    Conflict {
        topic: String,
        partition: u32,
        expected: u64,
        end: u64,
    },

    #[error("the embedded log cannot {what}; {instead}")]
    Unsupported {
        what: &'static str,
        instead: &'static str,
    },

    #[error(
        "the transaction journal is out of disk space; nothing was written, free space or lower retention, then retry"
    )]
    JournalDiskFull,

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The interface's kind of this error: what a caller can do about it.
    pub fn kind(&self) -> weir_log::ErrorKind {
        use weir_log::ErrorKind as K;
        match self {
            Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => K::NotFound,
            Error::InvalidTopicName { .. }
            | Error::InvalidGroupName { .. }
            | Error::InvalidPartitionCount { .. }
            | Error::TooManyPartitions { .. }
            | Error::OffsetsExhausted { .. }
            | Error::InvalidTopicConfig { .. }
            | Error::InvalidProducerName { .. }
            | Error::KeyRequired { .. }
            | Error::OffsetOutOfRange { .. }
            | Error::Unsupported { .. } => K::Invalid,
            Error::TopicExists { .. } => K::Exists,
            Error::RecordTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::TransactionTooLarge { .. } => K::TooLarge,
            Error::Locked { .. }
            | Error::Closed { .. }
            | Error::TransactionIncomplete { .. }
            | Error::EarlierTransactionIncomplete { .. } => K::Unavailable,
            Error::DiskFull { .. } | Error::JournalDiskFull => K::DiskFull,
            Error::Fenced { .. } => K::Fenced,
            Error::Conflict { .. } => K::Conflict,
            Error::Poisoned { .. }
            | Error::JournalPoisoned
            | Error::Corrupt { .. }
            | Error::Io { .. } => K::Failed,
        }
    }
}

impl Error {
    /// The interface's code of this error: the specific problem, for problem documents.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UnknownTopic { .. } => "unknown-topic",
            Error::UnknownPartition { .. } => "unknown-partition",
            Error::InvalidTopicName { .. }
            | Error::InvalidPartitionCount { .. }
            | Error::InvalidTopicConfig { .. } => "invalid-topic",
            Error::TooManyPartitions { .. } => "too-many-partitions",
            Error::OffsetsExhausted { .. } => "offsets-exhausted",
            // A group's offset past the end is an invalid group commit, as the API has
            // always called it.
            Error::InvalidGroupName { .. } | Error::OffsetOutOfRange { .. } => "invalid-group",
            Error::InvalidProducerName { .. } => "invalid-producer",
            Error::KeyRequired { .. } => "key-required",
            Error::TopicExists { .. } => "topic-exists",
            Error::RecordTooLarge { .. }
            | Error::BatchTooLarge { .. }
            | Error::TransactionTooLarge { .. } => "too-large",
            Error::DiskFull { .. } | Error::JournalDiskFull => "disk-full",
            Error::Fenced { .. } => "fenced",
            Error::Conflict { .. } => "conflict",
            Error::Unsupported { .. } => "unsupported",
            Error::Locked { .. } => "locked",
            Error::Closed { .. } => "closed",
            Error::TransactionIncomplete { .. } | Error::EarlierTransactionIncomplete { .. } => {
                "transaction-incomplete"
            }
            Error::Poisoned { .. } | Error::JournalPoisoned => "poisoned",
            Error::Corrupt { .. } => "corrupt",
            Error::Io { .. } => "io",
        }
    }
}

impl From<Error> for weir_log::Error {
    fn from(error: Error) -> weir_log::Error {
        let (kind, code) = (error.kind(), error.code());
        weir_log::Error::from_backend(kind, error).with_code(code)
    }
}

/// Result of the log's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a lazily built context to an IO error.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
