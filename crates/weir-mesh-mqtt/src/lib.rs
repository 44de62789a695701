//! weir's MQTT source: subscribes with QoS 1 on a persistent session (clean session off,
//! a client id stable across restarts) and acknowledges each message (`PUBACK`) only when
//! the engine says its event is durable, so a message received but not yet stored is
//! delivered again by the broker after a crash or a lost connection. MQTT 3.1.1 messages
//! carry no id: redeliveries are not deduplicated (at-least-once).
//!
//! `rumqttc`'s event loop is polled by a task of its own without pause (it sends the
//! keep-alive pings and reconnects); messages reach [`MqttSource::next`] through a channel,
//! acknowledgements go back through the client's request channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use weir_mesh::{Error, Health, Message, Source, SourceOptions};

/// Messages received and not yet taken by the engine. The broker's window of unacknowledged
/// QoS 1 messages (Mosquitto's `max_inflight_messages`, 20 by default) bounds it for QoS 1;
/// a flood of QoS 0 messages waits here, and the poller with it.
const RECEIVED: usize = 4096;

/// The longest wait between two connection attempts.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// A subscription to an MQTT broker; see the crate docs.
pub struct MqttSource {
    client: AsyncClient,
    received: mpsc::Receiver<rumqttc::Publish>,
    /// What each handed-out token acknowledges: the packet id of a QoS 1 or 2 message.
    unacked: HashMap<u64, rumqttc::Publish>,
    next_token: u64,
    health: Arc<Mutex<Health>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for MqttSource {
    fn drop(&mut self) {
        // As a crash would: unacknowledged messages stay with the broker's session.
        self.poller.abort();
    }
}

/// The MQTT options `url` says: `mqtt://[user[:password]@]host[:port][?client_id=ID]`.
/// The client id defaults to `weir-APP-SOURCE`, the same on every start, so the broker
/// keeps the session and its unacknowledged messages between them.
pub fn options(opts: &SourceOptions) -> Result<MqttOptions, Error> {
    let url = url::Url::parse(&opts.url)
        .map_err(|e| Error::config(format!("{:?} is not a URL: {e}", opts.url)))?;
    match url.scheme() {
        "mqtt" | "tcp" => {}
        "mqtts" | "ssl" => {
            return Err(Error::config(
                "mqtts:// is not supported yet: weir's MQTT source connects without TLS (mqtt://)",
            ));
        }
        other => return Err(Error::config(format!("{other}:// is not an MQTT URL"))),
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::config(format!("{:?} names no broker host", opts.url)))?;
    let port = url.port().unwrap_or(1883);
    let mut client_id = format!("weir-{}-{}", opts.app, opts.name);
    for (key, value) in url.query_pairs() {
        match &*key {
            "client_id" if !value.is_empty() => client_id = value.into_owned(),
            other => {
                return Err(Error::config(format!(
                    "{other:?} is not an MQTT URL setting; the one there is: client_id"
                )));
            }
        }
    }
    let mut options = MqttOptions::new(client_id, host, port);
    options
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(Duration::from_secs(10))
        .set_request_channel_capacity(RECEIVED)
        .set_max_packet_size(1 << 20, 1 << 20);
    if !url.username().is_empty() {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| Error::config("the URL's credentials are not UTF-8"))
        };
        options.set_credentials(
            decode(url.username())?,
            decode(url.password().unwrap_or(""))?,
        );
    }
    Ok(options)
}

impl MqttSource {
    /// Connects (in the background: the first [`MqttSource::next`] waits for it) and
    /// subscribes to `opts.subscribe` with QoS 1 each time a connection is made.
    pub fn open(opts: &SourceOptions) -> Result<MqttSource, Error> {
        if opts.subscribe.is_empty() {
            return Err(Error::config(
                "an MQTT source subscribes to at least one topic filter",
            ));
        }
        let (client, mut events) = AsyncClient::new(options(opts)?, RECEIVED);
        let (deliver, received) = mpsc::channel(RECEIVED);
        let health = Arc::new(Mutex::new(Health::default()));
        let (filters, name) = (opts.subscribe.clone(), opts.name.clone());
        // The session outlives the connection, and its subscriptions with it.
        let dropped: Vec<String> = opts
            .unsubscribe
            .iter()
            .filter(|f| !filters.contains(f))
            .cloned()
            .collect();
        let (subscriber, state) = (client.clone(), health.clone());
        let set = move |f: &dyn Fn(&mut Health)| {
            f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
        };
        let poller = tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if deliver.send(publish).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        tracing::info!(source = %name, session_present = ack.session_present, "MQTT source connected");
                        wait = Duration::from_millis(100);
                        for filter in &dropped {
                            if let Err(e) = subscriber.try_unsubscribe(filter.clone()) {
                                tracing::error!(source = %name, error = %e, "MQTT unsubscribe not sent");
                            }
                        }
                        for filter in &filters {
                            // Never awaited here: the request channel is drained by this task.
                            if let Err(e) =
                                subscriber.try_subscribe(filter.clone(), QoS::AtLeastOnce)
                            {
                                tracing::error!(source = %name, error = %e, "MQTT subscribe not sent");
                            }
                        }
                        set(&|h| {
                            *h = Health {
                                connected: true,
                                error: None,
                            }
                        });
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.contains(&SubscribeReasonCode::Failure) {
                            let error = format!(
                                "the broker refused a subscription of {:?} (return codes {:?})",
                                filters, ack.return_codes
                            );
                            tracing::error!(source = %name, %error, "MQTT subscription refused");
                            set(&|h| h.error = Some(error.clone()));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let error = format!("MQTT connection: {e}");
                        tracing::warn!(source = %name, %error, "MQTT source disconnected; reconnecting");
                        set(&|h| {
                            *h = Health {
                                connected: false,
                                error: Some(error.clone()),
                            }
                        });
                        if deliver.is_closed() {
                            return;
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
                    }
                }
            }
        });
        Ok(MqttSource {
            client,
            received,
            unacked: HashMap::new(),
            next_token: 0,
            health,
            poller,
        })
    }

    fn hand_out(&mut self, publish: rumqttc::Publish) -> Message {
        let token = self.next_token;
        self.next_token += 1;
        let message = Message {
            subject: publish.topic.clone(),
            headers: Vec::new(),
            payload: publish.payload.clone(),
            id: None,
            redelivered: publish.dup,
            token,
        };
        if publish.qos != QoS::AtMostOnce {
            self.unacked.insert(token, publish);
        }
        message
    }
}

#[async_trait]
impl Source for MqttSource {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    fn separator(&self) -> char {
        '/'
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Message>, Error> {
        let Some(first) = self.received.recv().await else {
            return Err(Error::closed("the MQTT source's connection task ended"));
        };
        let mut batch = vec![self.hand_out(first)];
        while batch.len() < max {
            match self.received.try_recv() {
                Ok(publish) => batch.push(self.hand_out(publish)),
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, tokens: &[u64]) -> Result<(), Error> {
        for token in tokens {
            if let Some(publish) = self.unacked.remove(token) {
                self.client
                    .ack(&publish)
                    .await
                    .map_err(|e| Error::closed(format!("MQTT acknowledgement not sent: {e}")))?;
            }
        }
        Ok(())
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests;
