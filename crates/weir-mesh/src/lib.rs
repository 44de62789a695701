//! weir's event mesh: the [`Source`] interface every broker kind implements (MQTT in
//! `weir-mesh-mqtt`, Redis Streams in `weir-mesh-redis`, NATS core and JetStream in
//! `weir-mesh-nats`, Kafka in `weir-mesh-kafka`, schedules' ticks in [`schedule`]; AMQP
//! next), the [`Message`] a source
//! hands the engine, and the [`EventTemplate`] that turns a message into the CloudEvent
//! weir stores, or into the reason it cannot ([`Poison`]).
//!
//! **API Boundary:** what every source promises, and the engine relies on:
//!
//! 1. **Nothing is acknowledged before the engine says so.** A message goes back to its
//!    broker as consumed only through [`Source::ack`], which the engine calls after the
//!    log acknowledged the events the messages became (or their dead letters). A source
//!    that loses its connection with messages unacknowledged leaves them to the broker,
//!    which delivers them again.
//! 2. **Order.** [`Source::next`] hands out messages in the order the broker delivered
//!    them; a redelivery may repeat messages already handed out (at-least-once kinds).
//! 3. **Reconnection is the source's job.** [`Source::next`] returns an error for the
//!    engine to report (status, logs) and keeps reconnecting behind it; the engine calls
//!    it again after a pause. An error of [`ErrorKind::Config`] will not heal by waiting.
//! 4. **Positions.** A positional source ([`Source::positional`]: Redis Streams,
//!    JetStream, Kafka, schedules) keeps no progress at its broker: every message carries its [`Position`],
//!    the engine stores the positions in the same log transaction as the events, and opens
//!    the source again with them ([`SourceOptions::resume`]); the source then hands out
//!    exactly the messages after them, so nothing is stored twice or skipped.

mod inbox;
pub mod schedule;
mod template;

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::inbox::{Inbox, SharedHealth, inbox};
pub use crate::template::{DataMode, EventTemplate, KeyTemplate, Poison};

/// One message from a broker, as a source hands it to the engine.
#[derive(Debug, Clone)]
pub struct Message {
    /// Where the broker says it was published: the MQTT topic, NATS subject, AMQP routing
    /// key. It becomes the event's `subject`.
    pub subject: String,
    /// Headers or properties the message carried (MQTT 3.1.1 has none).
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// The broker's own id of the message, where it has one (AMQP `message-id`,
    /// `Nats-Msg-Id`, a Redis stream entry id); it becomes the event's `id`.
    pub id: Option<String>,
    /// Whether the broker says it delivered this message before.
    pub redelivered: bool,
    /// The source's handle of the message, given back to [`Source::ack`].
    pub token: u64,
    /// Where a positional source resumes after this message.
    pub position: Option<Position>,
}

/// Where a message of a positional source sits in its broker: the lane it was read from
/// (a Redis stream's key, a JetStream stream) and the position to resume after it there
/// (the entry id, the stream sequence), as the source spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub lane: String,
    pub after: String,
}

/// Where a positional source that has no position yet in a lane begins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Start {
    /// The oldest message the broker keeps.
    #[default]
    Earliest,
    /// Messages published from the moment the source first opens.
    Latest,
}

/// A connection to a broker that delivers messages for weir to store.
#[async_trait]
pub trait Source: Send {
    /// The kind, as the URL's scheme names it (`mqtt`).
    fn kind(&self) -> &'static str;
    /// Whether every message carries its [`Position`] and the source resumes from
    /// [`SourceOptions::resume`] (its broker keeps no acknowledgements: `ack` is not
    /// called).
    fn positional(&self) -> bool {
        false
    }
    /// What separates the levels of a subject (`/` in MQTT topics, `.` in NATS subjects),
    /// for `{subject.N}` in key templates.
    fn separator(&self) -> char;
    /// Up to `max` messages in delivery order; waits for the first one.
    async fn next(&mut self, max: usize) -> Result<Vec<Message>, Error>;
    /// Tells the broker the messages with these tokens are consumed: their events (or
    /// dead letters) are durable in weir.
    async fn ack(&mut self, tokens: &[u64]) -> Result<(), Error>;
    /// Stops gracefully: acknowledgements already given reach the broker (as far as it
    /// can within a moment), then the connection closes. Dropping a source without it
    /// is a crash: the broker delivers again what it did not get acknowledged.
    async fn close(&mut self) {}
    /// Whether the source is connected to its broker now, and what went wrong last.
    fn health(&self) -> Health;
}

/// What one attempt to deliver an event to a sink's destination came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The destination took it (a 2xx, a broker's acknowledgement).
    Delivered,
    /// Worth another attempt: no answer, a timeout, the destination down or busy. `after`
    /// is how long the destination asked to wait, if it said.
    Retry {
        error: String,
        after: Option<std::time::Duration>,
    },
    /// The destination refused this event for good: it goes to the dead-letter topic.
    Refused { error: String },
}

/// A destination the engine delivers a topic's events to, one attempt at a time; the
/// engine keeps order, retries, the circuit breaker, dead letters and the commits.
#[async_trait]
pub trait Sink: Send + Sync {
    /// The kind, as the URL's scheme names it (`https`, `nats`).
    fn kind(&self) -> &'static str;
    /// One attempt. The event's `id` goes with it where the destination has a place for
    /// one (`webhook-id`, `Nats-Msg-Id`), so repeats can be recognised.
    async fn deliver(&self, event: &weir_cloudevents::CloudEvent) -> Delivery;
}

/// A source's connection as `weir status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    pub connected: bool,
    /// The last connection or subscription failure, until the source connects again.
    pub error: Option<String>,
}

/// What made a source fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The URL or settings cannot work (a scheme no kind serves, a malformed address):
    /// waiting will not help.
    Config,
    /// The broker is unreachable, refused us, or the connection broke; the source
    /// reconnects.
    Connection,
    /// The source was closed.
    Closed,
}

/// A source's failure, with what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn config(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Config,
            message: message.into(),
        }
    }

    pub fn connection(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Connection,
            message: message.into(),
        }
    }

    pub fn closed(message: impl Into<String>) -> Error {
        Error {
            kind: ErrorKind::Closed,
            message: message.into(),
        }
    }
}

/// How the engine asks a kind to open a source.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// The source's name in the app (`[sources.NAME]`).
    pub name: String,
    /// The app's name: kinds that need a stable client identity build it from both.
    pub app: String,
    /// The broker's URL; its scheme picked the kind.
    pub url: String,
    /// What to subscribe to: MQTT topic filters, NATS subjects, queue names.
    pub subscribe: Vec<String>,
    /// Subscriptions the broker may still keep for this source from before (a deploy
    /// removed them) and that are to be dropped.
    pub unsubscribe: Vec<String>,
    /// A positional source's positions to resume after, by lane, as its messages carried
    /// them.
    pub resume: std::collections::BTreeMap<String, String>,
    /// Where a positional source begins in a lane it has no position in.
    pub start: Start,
}

/// The URL as it may be shown (status, logs, the events' default `source`): without
/// credentials, query or fragment.
pub fn display_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => return String::new(),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let path = path.split(['?', '#']).next().unwrap_or("");
    format!("{scheme}://{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::display_url;

    #[test]
    fn a_displayed_url_has_no_credentials_query_or_fragment() {
        assert_eq!(
            display_url("mqtt://user:pw@broker:1883/x?client_id=a#f"),
            "mqtt://broker:1883/x"
        );
        assert_eq!(display_url("mqtt://broker"), "mqtt://broker");
        assert_eq!(display_url("amqp://u@h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(display_url("not a url"), "");
    }
}
