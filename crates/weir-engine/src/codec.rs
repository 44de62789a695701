//! The event codec: how an event is stored in the log and read back.

use weir_cloudevents::CloudEvent;
use weir_log::{Record, StoredRecord};

use crate::{Error, Result, routing};

/// An event read back from the log, with where it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// When the log appended it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub event: CloudEvent,
}

/// The log record for an event.
pub(crate) fn encode_event(event: &CloudEvent) -> Record {
    Record {
        key: routing::event_key(event),
        value: event.to_json_vec().into(),
        timestamp_ms: None,
    }
}

pub(crate) fn decode_event(topic: &str, record: StoredRecord) -> Result<LoggedEvent> {
    let event = CloudEvent::from_json_slice(&record.value).map_err(|e| Error::CorruptEvent {
        topic: topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        reason: e.to_string(),
    })?;
    Ok(LoggedEvent {
        topic: topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        event,
    })
}
