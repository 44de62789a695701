//! The Redis Streams sink: each event appended (`XADD`) to one stream as an entry whose
//! field `data` is the event as structured CloudEvents JSON, as Dapr's Redis pub/sub
//! writes it (and weir's Redis source reads it back as the payload). At-least-once: `XADD` has no idempotency key, so a redelivery after a
//! crash appends the event again (same `id` in the JSON).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use weir_cloudevents::CloudEvent;
use weir_mesh::{Delivery, Error, Sink};

/// An appender to one stream; connects on the first delivery and again after a failure.
pub struct RedisSink {
    client: redis::Client,
    key: String,
    timeout: Duration,
    /// The connections made so far, and the current one, numbered so a failed append
    /// drops the one it used, not a newer one another delivery made since.
    connection: Mutex<(u64, Option<(u64, MultiplexedConnection)>)>,
}

impl RedisSink {
    /// A sink to stream `key` of the database `url` names, each attempt given `timeout`.
    pub fn new(url: &str, key: &str, timeout: Duration) -> Result<RedisSink, Error> {
        let shown = weir_mesh::display_url(url);
        if url.starts_with("rediss://") {
            return Err(Error::config("rediss:// is not supported yet (redis://)"));
        }
        let client = redis::Client::open(url)
            .map_err(|e| Error::config(format!("{shown:?} is not a Redis URL: {e}")))?;
        if key.is_empty() {
            return Err(Error::config("name the stream key in `to`"));
        }
        Ok(RedisSink {
            client,
            key: key.to_owned(),
            timeout,
            connection: Mutex::new((0, None)),
        })
    }

    /// The multiplexed connection, made first if there is none. The lock is held only for
    /// this: a sink's deliveries (up to `max_in_flight` per partition) send on clones of
    /// the one connection at once.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), String> {
        let mut guard = self.connection.lock().await;
        let (made, connection) = &mut *guard;
        if connection.is_none() {
            let config = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout));
            let fresh = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            *made += 1;
            *connection = Some((*made, fresh));
        }
        connection.clone().ok_or_else(|| "not connected".to_owned())
    }

    async fn append(&self, event: &CloudEvent) -> Result<(), String> {
        let (number, mut conn) = self.connection().await?;
        let appended: redis::RedisResult<String> = redis::cmd("XADD")
            .arg(&self.key)
            .arg("*")
            .arg("data")
            .arg(event.to_json_vec())
            .query_async(&mut conn)
            .await;
        if let Err(e) = appended {
            // A fresh connection for the next attempt, unless one was made since.
            let held = &mut self.connection.lock().await.1;
            if held.as_ref().is_some_and(|(n, _)| *n == number) {
                *held = None;
            }
            return Err(format!("XADD {}: {e}", self.key));
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for RedisSink {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn deliver(&self, event: &CloudEvent) -> Delivery {
        match self.append(event).await {
            Ok(()) => Delivery::Delivered,
            Err(error) => Delivery::Retry { error, after: None },
        }
    }
}
