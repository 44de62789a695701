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
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeReasonCode};
use tokio::sync::mpsc;
use weir_mesh::{Error, Health, Message, Source, SourceOptions};

/// Messages received and not yet taken by the engine. The broker's window of unacknowledged
/// QoS 1 messages (Mosquitto's `max_inflight_messages`, 20 by default) bounds it for QoS 1;
/// a flood of QoS 0 messages waits here, and the poller with it.
const RECEIVED: usize = 4096;

/// The largest message taken: a larger one breaks the connection (rumqttc refuses the
/// packet) and the broker sends it again on the next; weir's own `max_payload_bytes` is
/// far below, so messages up to this size are dead-lettered, not stuck.
const MAX_PACKET_BYTES: usize = 16 << 20;

/// The longest wait between two connection attempts.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// A subscription to an MQTT broker; see the crate docs.
pub struct MqttSource {
    client: AsyncClient,
    /// Messages with the session they came in (a count of new sessions).
    received: mpsc::Receiver<(u64, rumqttc::Publish)>,
    /// What each handed-out token acknowledges: a QoS 1 or 2 message of a session.
    unacked: HashMap<u64, (u64, rumqttc::Publish)>,
    /// The token of the newest copy of each (session, packet id) not yet acknowledged.
    by_packet: HashMap<(u64, u16), u64>,
    next_token: u64,
    /// The current session; acknowledgements of messages of an older one are not sent.
    session: Arc<Mutex<u64>>,
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
        .set_max_packet_size(MAX_PACKET_BYTES, 1 << 20);
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
        let session = Arc::new(Mutex::new(0u64));
        let (filters, name) = (opts.subscribe.clone(), opts.name.clone());
        // The session outlives the connection, and its subscriptions with it.
        let dropped: Vec<String> = opts
            .unsubscribe
            .iter()
            .filter(|f| !filters.contains(f))
            .cloned()
            .collect();
        let (subscriber, state, generation) = (client.clone(), health.clone(), session.clone());
        let set = move |f: &dyn Fn(&mut Health)| {
            f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
        };
        let current = move || *generation.lock().unwrap_or_else(PoisonError::into_inner);
        let new_session = session.clone();
        let poller = tokio::spawn(async move {
            let mut wait = Duration::from_millis(100);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        if deliver.send((current(), publish)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        tracing::info!(source = %name, session_present = ack.session_present, "MQTT source connected");
                        wait = Duration::from_millis(100);
                        // Messages read from the connection that broke, not yet handed
                        // out: they belong to the session before this connection.
                        let stale: Vec<rumqttc::Publish> = events
                            .state
                            .events
                            .drain(..)
                            .filter_map(|e| match e {
                                Event::Incoming(Packet::Publish(p)) => Some(p),
                                _ => None,
                            })
                            .collect();
                        for publish in stale {
                            if deliver.send((current(), publish)).await.is_err() {
                                return;
                            }
                        }
                        if !ack.session_present {
                            // A new session: packet ids start again, so acknowledgements
                            // of the old one's messages must not be sent (those messages
                            // are gone from the broker; weir has them or will get them
                            // from the batch in hand). Before subscribing: no message of
                            // the new session exists yet.
                            *new_session.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                        }
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
                    // `close`: the acknowledgements queued before it are out.
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
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
            by_packet: HashMap::new(),
            next_token: 0,
            session,
            health,
            poller,
        })
    }

    fn hand_out(&mut self, (session, publish): (u64, rumqttc::Publish)) -> Message {
        let token = self.next_token;
        self.next_token += 1;
        let message = Message {
            subject: publish.topic.clone(),
            headers: Vec::new(),
            payload: publish.payload.clone(),
            id: None,
            redelivered: publish.dup,
            token,
            position: None,
        };
        if publish.qos != QoS::AtMostOnce {
            // The broker sent this message again (same session, same packet id) before
            // the first copy was acknowledged: only the newest copy's acknowledgement
            // goes out, so the packet id is not acknowledged twice (the second time it
            // could be a new message's).
            if let Some(earlier) = self.by_packet.insert((session, publish.pkid), token) {
                self.unacked.remove(&earlier);
            }
            self.unacked.insert(token, (session, publish));
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
        // Under the session lock: the poller cannot start a new session between the
        // check and the queueing (and what is queued before a new session starts,
        // rumqttc drops with the old session's pending requests).
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        for token in tokens {
            let Some((of, publish)) = self.unacked.remove(token) else {
                continue;
            };
            if self.by_packet.get(&(of, publish.pkid)) == Some(token) {
                self.by_packet.remove(&(of, publish.pkid));
            }
            if of != *session {
                continue;
            }
            self.client
                .try_ack(&publish)
                .map_err(|e| Error::closed(format!("MQTT acknowledgement not sent: {e}")))?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        // DISCONNECT goes after the acknowledgements queued before it; the session
        // (clean session off) stays with the broker.
        if self.client.try_disconnect().is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.poller).await;
        }
        self.poller.abort();
    }

    fn health(&self) -> Health {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

mod sink;
pub use sink::MqttSink;

#[cfg(test)]
mod tests;
