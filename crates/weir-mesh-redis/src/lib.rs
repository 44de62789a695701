//! weir's Redis Streams source: reads the streams named in `subscribe` with `XREAD`, from
//! the entry ids weir stored with the events it appended ([`SourceOptions::resume`]), so
//! the source is positional: it keeps no consumer group or pending list in Redis, and
//! after a crash it reads again exactly what follows the last position weir committed.
//!
//! An entry becomes a message: its stream key the `subject`, `KEY:ENTRY-ID` its `id` (the
//! same on every read), its field `data` the payload and its other fields headers; an
//! entry without a `data` field has a JSON object of all its fields as payload.
//!
//! A task of its own reads (a blocking `XREAD` of at most a second on a connection without
//! response timeout) into a channel; [`RedisSource::next`] takes from the channel, so it is
//! cancel-safe, and the task reconnects with a growing pause when the connection breaks.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use tokio::sync::mpsc;
use weir_mesh::{
    Error, Health, Inbox, Message, Position, SharedHealth, Source, SourceOptions, Start,
};

/// Entries asked for in one `XREAD` (per stream).
const READ_COUNT: usize = 256;
/// How long one `XREAD` waits for new entries, in milliseconds.
const BLOCK_MS: usize = 1000;
/// Reads of entries not yet taken by the engine: what the reader runs ahead by.
const READ_AHEAD: usize = 4;
/// The longest pause between two connection attempts.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// A reader of Redis streams; see the crate docs.
pub struct RedisSource {
    inbox: Inbox<Message>,
    health: SharedHealth,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for RedisSource {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl RedisSource {
    /// Checks the URL (`redis://[[user]:password@]host[:port][/db]`) and starts reading the
    /// streams `options.subscribe` names.
    pub fn open(options: &SourceOptions) -> Result<RedisSource, Error> {
        match options.url.split_once("://") {
            Some(("redis", _)) => {}
            Some(("rediss", _)) => {
                return Err(Error::config(
                    "rediss:// is not supported yet: weir's Redis source connects without TLS (redis://)",
                ));
            }
            _ => {
                return Err(Error::config(format!(
                    "{:?} is not a Redis URL (redis://HOST[:PORT][/DB])",
                    weir_mesh::display_url(&options.url)
                )));
            }
        }
        let client = redis::Client::open(options.url.as_str()).map_err(|e| {
            Error::config(format!(
                "{:?} is not a Redis URL: {e}",
                weir_mesh::display_url(&options.url)
            ))
        })?;
        if options.subscribe.is_empty() || options.subscribe.iter().any(String::is_empty) {
            return Err(Error::config("name the stream keys to read in `subscribe`"));
        }
        let cursors = options
            .subscribe
            .iter()
            .map(|key| (key.clone(), options.resume.get(key).cloned()))
            .collect();
        let (sender, inbox) = weir_mesh::inbox(READ_AHEAD * READ_COUNT);
        let health = SharedHealth::default();
        let reader = tokio::spawn(
            Reader {
                client,
                cursors,
                start: options.start,
                sender,
                health: health.clone(),
                next_token: 0,
            }
            .run(),
        );
        Ok(RedisSource {
            inbox,
            health,
            reader,
        })
    }
}

#[async_trait]
impl Source for RedisSource {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn separator(&self) -> char {
        ':'
    }

    fn positional(&self) -> bool {
        true
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Message>, Error> {
        self.inbox
            .next(max)
            .await
            .ok_or_else(|| Error::closed("the Redis stream reader stopped"))
    }

    /// Nothing to do: the positions travel with the events.
    async fn ack(&mut self, _tokens: &[u64]) -> Result<(), Error> {
        Ok(())
    }

    async fn close(&mut self) {
        self.reader.abort();
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}

/// The reading task: a connection, and the entry id read last in each stream (`None`:
/// where `start` says, resolved on the first connection).
struct Reader {
    client: redis::Client,
    cursors: BTreeMap<String, Option<String>>,
    start: Start,
    sender: mpsc::Sender<Message>,
    health: SharedHealth,
    next_token: u64,
}

impl Reader {
    async fn run(mut self) {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            // XREAD BLOCK waits on purpose, a second; a connection silent far longer is
            // dead (a half-open TCP connection would otherwise block forever).
            .set_response_timeout(Some(Duration::from_secs(30)));
        let mut wait = Duration::from_millis(100);
        loop {
            let failure = match self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
            {
                Ok(mut connection) => {
                    wait = Duration::from_millis(100);
                    match self.read(&mut connection).await {
                        Ok(()) => return,
                        Err(e) => format!("reading the streams: {e}"),
                    }
                }
                Err(e) => format!("connecting: {e}"),
            };
            tracing::warn!(error = %failure, "Redis source disconnected; connecting again");
            self.health.set(false, Some(failure));
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RECONNECT_WAIT);
        }
    }

    /// Reads until the connection fails (`Err`) or the source is gone (`Ok`).
    async fn read(&mut self, connection: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        for (key, cursor) in self.cursors.iter_mut() {
            if cursor.is_none() {
                *cursor = Some(match self.start {
                    Start::Earliest => "0-0".to_owned(),
                    Start::Latest => {
                        let last: redis::streams::StreamRangeReply =
                            connection.xrevrange_count(key, "+", "-", 1).await?;
                        last.ids
                            .into_iter()
                            .next()
                            .map_or_else(|| "0-0".to_owned(), |entry| entry.id)
                    }
                });
            }
        }
        // Connected, and where to begin in every stream is settled.
        self.health.set(true, None);
        let options = StreamReadOptions::default()
            .count(READ_COUNT)
            .block(BLOCK_MS);
        let keys: Vec<String> = self.cursors.keys().cloned().collect();
        loop {
            let ids: Vec<String> = self.cursors.values().flatten().cloned().collect();
            let reply: Option<StreamReadReply> =
                connection.xread_options(&keys, &ids, &options).await?;
            let Some(reply) = reply else { continue };
            for stream in reply.keys {
                for entry in stream.ids {
                    let token = self.next_token;
                    self.next_token += 1;
                    if let Some(cursor) = self.cursors.get_mut(&stream.key) {
                        *cursor = Some(entry.id.clone());
                    }
                    if self
                        .sender
                        .send(message(&stream.key, entry, token))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// The bytes of a field's value.
fn bytes_of(value: &redis::Value) -> Vec<u8> {
    match value {
        redis::Value::BulkString(bytes) => bytes.clone(),
        redis::Value::SimpleString(text) => text.clone().into_bytes(),
        redis::Value::Int(n) => n.to_string().into_bytes(),
        other => format!("{other:?}").into_bytes(),
    }
}

/// An entry of stream `key` as a message; see the crate docs.
fn message(key: &str, entry: StreamId, token: u64) -> Message {
    let mut fields: Vec<(String, Vec<u8>)> = entry
        .map
        .iter()
        .map(|(name, value)| (name.clone(), bytes_of(value)))
        .collect();
    fields.sort();
    let data = fields.iter().position(|(name, _)| name == "data");
    let payload = match data {
        Some(at) => Bytes::from(fields.remove(at).1),
        None => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(name, value)| {
                    let text = String::from_utf8_lossy(value).into_owned();
                    (name.clone(), serde_json::Value::String(text))
                })
                .collect();
            Bytes::from(serde_json::to_vec(&object).unwrap_or_default())
        }
    };
    Message {
        subject: key.to_owned(),
        headers: fields
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect(),
        payload,
        id: Some(format!("{key}:{}", entry.id)),
        redelivered: false,
        token,
        position: Some(Position {
            lane: key.to_owned(),
            after: entry.id,
        }),
    }
}

mod sink;
pub use sink::RedisSink;

#[cfg(test)]
mod tests;
