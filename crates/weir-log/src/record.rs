//! Records as they go into a log and come back out of it.

use bytes::Bytes;
use serde::Serialize;

/// A record to append.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Chooses the partition in [`crate::EventLog::append`]: records with equal keys share
    /// one.
    pub key: Option<Bytes>,
    pub value: Bytes,
    /// Milliseconds since the Unix epoch; `None` means the time of the append.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// A record without key, stamped at append time.
    pub fn new(value: impl Into<Bytes>) -> Record {
        Record {
            key: None,
            value: value.into(),
            timestamp_ms: None,
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    pub fn with_timestamp(mut self, timestamp_ms: i64) -> Record {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}

/// A record as read back from the log.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub partition: u32,
    pub offset: u64,
    /// When it was appended (or the time its producer gave), in milliseconds since the
    /// Unix epoch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
}

/// Where an appended record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordPosition {
    pub partition: u32,
    pub offset: u64,
}
