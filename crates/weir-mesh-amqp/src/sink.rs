//! The AMQP sink: each event published as structured CloudEvents JSON
//! (`application/cloudevents+json`, persistent, `message-id` = the event's `id`) with
//! publisher confirms, to the default exchange with `to` as the routing key (a queue of
//! that name), or to exchange `E` with routing key `K` when `to` is `E/K`. Mandatory: a
//! message no queue takes comes back and counts as not delivered. At-least-once: a
//! redelivery after a crash is published again with the same `message-id`.

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use std::time::Duration;
use tokio::sync::Mutex;
use weir_cloudevents::CloudEvent;
use weir_mesh::{Delivery, Error, Sink};

/// A publisher; connects on the first delivery and again after a failure.
pub struct AmqpSink {
    url: String,
    exchange: String,
    routing_key: String,
    timeout: Duration,
    /// The connections made so far, and the current one with its channel, numbered so a
    /// failed publish drops the one it used, not a newer one another delivery made since.
    channel: Mutex<(u64, Option<Numbered>)>,
}

/// A connection, its number and its channel.
type Numbered = (u64, Connection, Channel);

impl AmqpSink {
    /// A sink publishing per `to` on the broker `url` names, each attempt given `timeout`.
    pub fn new(url: &str, to: &str, timeout: Duration) -> Result<AmqpSink, Error> {
        let shown = weir_mesh::display_url(url);
        if !url.starts_with("amqp://") {
            return Err(Error::config(format!(
                "{shown:?} is not an AMQP URL (amqp://; amqps:// is not supported yet)"
            )));
        }
        url.parse::<lapin::uri::AMQPUri>()
            .map_err(|e| Error::config(format!("{shown:?} is not an AMQP URL: {e}")))?;
        let (exchange, routing_key) = to.split_once('/').unwrap_or(("", to));
        // (A fanout exchange takes an empty routing key: `EXCHANGE/`.)
        if routing_key.is_empty() && exchange.is_empty() {
            return Err(Error::config(
                "name the routing key in `to` (QUEUE, or EXCHANGE/ROUTING-KEY)",
            ));
        }
        Ok(AmqpSink {
            url: url.to_owned(),
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            timeout,
            channel: Mutex::new((0, None)),
        })
    }

    /// The connection's channel, connecting first if there is none. The lock is held only
    /// for this: a sink's deliveries (up to `max_in_flight` per partition) publish at once
    /// on the one channel, each waiting for its own confirm.
    async fn channel(&self) -> Result<(u64, Channel), String> {
        let mut guard = self.channel.lock().await;
        let (made, held) = &mut *guard;
        if held.is_none() {
            let connection = Connection::connect(&self.url, ConnectionProperties::default())
                .await
                .map_err(|e| format!("connecting: {e}"))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("opening a channel: {e}"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("turning on confirms: {e}"))?;
            *made += 1;
            *held = Some((*made, connection, channel));
        }
        match held.as_ref() {
            Some((number, _, channel)) => Ok((*number, channel.clone())),
            None => Err("not connected".to_owned()),
        }
    }

    /// Drops connection `number` if it is still the current one: the next attempt
    /// connects afresh.
    async fn drop_connection(&self, number: u64) {
        let held = &mut self.channel.lock().await.1;
        if held.as_ref().is_some_and(|(n, ..)| *n == number) {
            *held = None;
        }
    }

    async fn publish(
        &self,
        (number, channel): (u64, Channel),
        event: &CloudEvent,
    ) -> Result<(), String> {
        let properties = BasicProperties::default()
            .with_message_id(ShortString::from(event.id.clone()))
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2);
        let published = async {
            channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    self.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &event.to_json_vec(),
                    properties,
                )
                .await?
                .await
        }
        .await;
        match published {
            Ok(Confirmation::Ack(None)) => Ok(()),
            Ok(Confirmation::Ack(Some(_))) => Err(format!(
                "no queue takes routing key {:?} (the message came back)",
                self.routing_key
            )),
            Ok(other) => Err(format!("the broker did not confirm: {other:?}")),
            Err(e) => {
                self.drop_connection(number).await;
                Err(format!("publishing: {e}"))
            }
        }
    }
}

#[async_trait]
impl Sink for AmqpSink {
    fn kind(&self) -> &'static str {
        "amqp"
    }

    async fn deliver(&self, event: &CloudEvent) -> Delivery {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let retry = |error| Delivery::Retry { error, after: None };
        let channel = match tokio::time::timeout_at(deadline, self.channel()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => return retry(error),
            Err(_) => return retry(format!("not connected within {:?}", self.timeout)),
        };
        let number = channel.0;
        match tokio::time::timeout_at(deadline, self.publish(channel, event)).await {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(error)) => retry(error),
            Err(_) => {
                self.drop_connection(number).await;
                retry(format!("no confirmation within {:?}", self.timeout))
            }
        }
    }
}
