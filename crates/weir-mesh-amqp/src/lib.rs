//! weir's AMQP 0.9.1 source (RabbitMQ): consumes the queues named in `subscribe` with
//! manual acknowledgements and a prefetch window, and acknowledges each delivery
//! (`basic.ack`) only when the engine says its event is durable, so a delivery received
//! but not yet stored is requeued by the broker after a crash or a lost connection
//! (at-least-once; the broker marks it redelivered). The queues, exchanges and bindings
//! are the broker's: the source consumes queues that exist.
//!
//! A delivery becomes a message: its routing key the `subject`, its `message-id` property
//! the `id` (so a redelivered copy keeps its id), its headers the message's headers.
//!
//! A task of its own connects, consumes and feeds a channel that [`Source::next`] takes
//! from (cancel-safe), and connects again with a growing pause when the connection or
//! the channel fails. A delivery tag names a delivery on one channel only: tokens of a
//! channel that failed are never acknowledged on its successor (the broker has requeued
//! those deliveries already).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::mpsc;
use weir_mesh::{Error, Health, Inbox, Message, SharedHealth, Source, SourceOptions};

/// Deliveries the broker sends before the first is acknowledged (`basic.qos`).
const PREFETCH: u16 = 512;
/// The longest pause between two connection attempts.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// The channel deliveries come on now, and how many channels came before it.
#[derive(Default)]
struct Current {
    generation: u64,
    channel: Option<Channel>,
}

/// A consumer of AMQP queues; see the crate docs.
pub struct AmqpSource {
    inbox: Inbox<(u64, u64, Message)>,
    /// What each handed-out token acknowledges: a delivery tag on a channel generation.
    unacked: HashMap<u64, (u64, u64)>,
    next_token: u64,
    current: Arc<Mutex<Current>>,
    health: SharedHealth,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for AmqpSource {
    fn drop(&mut self) {
        // As a crash would: the broker requeues what was not acknowledged.
        self.reader.abort();
    }
}

impl AmqpSource {
    /// Checks the URL (`amqp://[user[:password]@]host[:port][/vhost]`) and starts
    /// consuming the queues `options.subscribe` names.
    pub fn open(options: &SourceOptions) -> Result<AmqpSource, Error> {
        let shown = weir_mesh::display_url(&options.url);
        match options.url.split_once("://") {
            Some(("amqp", rest)) if !rest.is_empty() => {}
            Some(("amqps", _)) => {
                return Err(Error::config(
                    "amqps:// is not supported yet: weir's AMQP source connects without TLS (amqp://)",
                ));
            }
            _ => return Err(Error::config(format!("{shown:?} is not an AMQP URL"))),
        }
        options
            .url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| Error::config(format!("{shown:?} is not an AMQP URL: {e}")))?;
        if options.subscribe.is_empty() || options.subscribe.iter().any(String::is_empty) {
            return Err(Error::config("name the queues to consume in `subscribe`"));
        }
        let (sender, inbox) = weir_mesh::inbox(usize::from(PREFETCH) * 2);
        let health = SharedHealth::default();
        let current = Arc::new(Mutex::new(Current::default()));
        let reader = tokio::spawn(
            Reader {
                url: options.url.clone(),
                queues: options.subscribe.clone(),
                tag: format!("weir-{}-{}", options.app, options.name),
                sender,
                current: current.clone(),
                health: health.clone(),
            }
            .run(),
        );
        Ok(AmqpSource {
            inbox,
            unacked: HashMap::new(),
            next_token: 0,
            current,
            health,
            reader,
        })
    }

    fn hand_out(&mut self, (generation, tag, mut message): (u64, u64, Message)) -> Message {
        message.token = self.next_token;
        self.unacked.insert(self.next_token, (generation, tag));
        self.next_token += 1;
        message
    }
}

#[async_trait]
impl Source for AmqpSource {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn separator(&self) -> char {
        '.'
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Message>, Error> {
        let deliveries = self
            .inbox
            .next(max)
            .await
            .ok_or_else(|| Error::closed("the AMQP consumer stopped"))?;
        Ok(deliveries.into_iter().map(|d| self.hand_out(d)).collect())
    }

    async fn ack(&mut self, tokens: &[u64]) -> Result<(), Error> {
        let (generation, channel) = {
            let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            (current.generation, current.channel.clone())
        };
        for token in tokens {
            let Some((of, tag)) = self.unacked.remove(token) else {
                continue;
            };
            // A delivery of a failed channel was requeued by the broker: its tag would
            // name another delivery now.
            let Some(channel) = channel.as_ref().filter(|_| of == generation) else {
                continue;
            };
            if let Err(e) = channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await
            {
                // The channel failed: the broker requeues the rest, whose tokens go too.
                tracing::warn!(error = %e, "AMQP acknowledgement not sent; the broker delivers again");
                for token in tokens {
                    self.unacked.remove(token);
                }
                break;
            }
        }
        Ok(())
    }

    async fn close(&mut self) {
        let channel = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .channel
            .take();
        self.reader.abort();
        if let Some(channel) = channel {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                channel.close(200, "weir source stopped".into()),
            )
            .await;
        }
    }

    fn health(&self) -> Health {
        self.health.get()
    }
}

struct Reader {
    url: String,
    queues: Vec<String>,
    tag: String,
    sender: mpsc::Sender<(u64, u64, Message)>,
    current: Arc<Mutex<Current>>,
    health: SharedHealth,
}

impl Reader {
    async fn run(self) {
        let mut wait = Duration::from_millis(100);
        loop {
            let failure = match self.consume().await {
                Ok(()) => return,
                Err(e) => e,
            };
            {
                let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
                current.channel = None;
            }
            tracing::warn!(error = %failure, "AMQP source disconnected; connecting again");
            self.health.set(false, Some(failure));
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RECONNECT_WAIT);
        }
    }

    /// Consumes on one connection until it fails (`Err`) or the source is gone (`Ok`).
    async fn consume(&self) -> Result<(), String> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions { global: false })
            .await
            .map_err(|e| format!("setting the prefetch: {e}"))?;
        let mut consumers = Vec::new();
        for (i, queue) in self.queues.iter().enumerate() {
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    format!("{}-{i}", self.tag).into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("consuming queue {queue:?}: {e}"))?;
            consumers.push(consumer);
        }
        let generation = {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            current.generation += 1;
            current.channel = Some(channel);
            current.generation
        };
        self.health.set(true, None);
        // A queue's consumer that ends (the broker cancelled it: the queue was deleted)
        // ends this connection, so the source consumes every queue again or says why not.
        let ended = |queue: String| {
            futures::stream::once(async move {
                Err::<lapin::message::Delivery, _>(format!(
                    "the broker cancelled the consumer of queue {queue:?}"
                ))
            })
        };
        let streams = consumers
            .into_iter()
            .zip(&self.queues)
            .map(|(consumer, queue)| {
                consumer
                    .map(|delivery| delivery.map_err(|e| format!("receiving: {e}")))
                    .chain(ended(queue.clone()))
                    .boxed()
            });
        let mut deliveries = futures::stream::select_all(streams);
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery?;
            let properties = &delivery.properties;
            let headers = properties
                .headers()
                .as_ref()
                .map(|table| {
                    table
                        .inner()
                        .iter()
                        .filter_map(|(name, value)| Some((name.to_string(), text(value)?)))
                        .collect()
                })
                .unwrap_or_default();
            let message = Message {
                subject: delivery.routing_key.to_string(),
                headers,
                payload: Bytes::from(delivery.data),
                id: properties.message_id().as_ref().map(ToString::to_string),
                redelivered: delivery.redelivered,
                token: 0,
                position: None,
            };
            if self
                .sender
                .send((generation, delivery.delivery_tag, message))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        Err("the broker cancelled the consumer".to_owned())
    }
}

/// A header value as text, when it is a string, a number or a boolean.
fn text(value: &AMQPValue) -> Option<String> {
    Some(match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        _ => return None,
    })
}

mod sink;
pub use sink::AmqpSink;

#[cfg(test)]
mod tests;
