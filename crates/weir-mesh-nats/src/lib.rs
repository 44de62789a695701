//! weir's NATS sources.
//!
//! - **`nats://`**: core NATS subjects. Core NATS has no acknowledgement and keeps
//!   nothing: a message published while weir is down or disconnected, or received and not
//!   yet appended when weir crashes, is gone (at-most-once).
//! - **`jetstream://HOST[:PORT]/STREAM`**: a JetStream stream, read by an ordered consumer
//!   (ephemeral, flow-controlled, recreated by the client after a gap) from the stream
//!   sequence after the one weir stored with the events it appended
//!   ([`SourceOptions::resume`]). The source is positional: it keeps no durable consumer
//!   on the server, and after a crash it reads again exactly what follows the last
//!   position weir committed. `subscribe` filters the stream's subjects (all when empty).
//!
//! A message's `Nats-Msg-Id` header is its id; a JetStream message without one gets
//! `STREAM:SEQUENCE`, the same on every read. A task of its own feeds a channel that
//! [`Source::next`] takes from, so `next` is cancel-safe; the client reconnects by itself.

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::mpsc;
use weir_mesh::{
    Error, Health, Inbox, Message, Position, SharedHealth, Source, SourceOptions, Start,
};

/// Messages received and not yet taken by the engine.
const READ_AHEAD: usize = 1024;
/// The longest pause between two attempts to connect or to create the consumer.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(5);

/// What the URL names: the server to connect to and, for JetStream, the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// `nats://…` with the URL's credentials, host and port.
    server: String,
    stream: Option<String>,
}

fn target(url: &str) -> Result<Target, Error> {
    let shown = weir_mesh::display_url(url);
    let parsed =
        url::Url::parse(url).map_err(|e| Error::config(format!("{shown:?} is not a URL: {e}")))?;
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| Error::config(format!("{shown:?} names no NATS server host")))?;
    let credentials = match (parsed.username(), parsed.password()) {
        ("", None) => String::new(),
        (user, None) => format!("{user}@"),
        (user, Some(password)) => format!("{user}:{password}@"),
    };
    let server = format!(
        "nats://{credentials}{host}:{}",
        parsed.port().unwrap_or(4222)
    );
    let path = parsed.path().trim_matches('/');
    match parsed.scheme() {
        "nats" if path.is_empty() => Ok(Target {
            server,
            stream: None,
        }),
        "nats" => Err(Error::config(format!(
            "{shown:?}: a nats:// source reads core subjects and takes no path; read a JetStream \
             stream with jetstream://HOST[:PORT]/STREAM"
        ))),
        "jetstream" if !path.is_empty() && !path.contains(['/', '.', '*', '>', ' ']) => {
            Ok(Target {
                server,
                stream: Some(path.to_owned()),
            })
        }
        "jetstream" => Err(Error::config(format!(
            "{shown:?} names no stream; write jetstream://HOST[:PORT]/STREAM"
        ))),
        other => Err(Error::config(format!("{other}:// is not a NATS URL"))),
    }
}

/// A NATS source; see the crate docs.
pub struct NatsSource {
    kind: &'static str,
    inbox: Inbox<Message>,
    health: SharedHealth,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for NatsSource {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl NatsSource {
    /// Checks the URL (`nats://` or `jetstream://`) and starts receiving.
    pub fn open(options: &SourceOptions) -> Result<NatsSource, Error> {
        let target = target(&options.url)?;
        if options.subscribe.iter().any(String::is_empty) {
            return Err(Error::config("`subscribe` lists an empty subject"));
        }
        let (sender, inbox) = weir_mesh::inbox(READ_AHEAD);
        let health = SharedHealth::default();
        let reader = Reader {
            server: target.server,
            subjects: options.subscribe.clone(),
            sender,
            health: health.clone(),
            next_token: 0,
        };
        let (kind, reader) = match target.stream {
            None => {
                if options.subscribe.is_empty() {
                    return Err(Error::config("name the subjects to subscribe to"));
                }
                ("nats", tokio::spawn(reader.core()))
            }
            Some(stream) => {
                let after = match options.resume.get(&stream) {
                    Some(after) => Some(after.parse::<u64>().map_err(|_| {
                        Error::config(format!(
                            "the stored position {after:?} in stream {stream:?} is not a sequence"
                        ))
                    })?),
                    None => None,
                };
                (
                    "jetstream",
                    tokio::spawn(reader.jetstream(stream, after, options.start)),
                )
            }
        };
        Ok(NatsSource {
            kind,
            inbox,
            health,
            reader,
        })
    }
}

#[async_trait]
impl Source for NatsSource {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn separator(&self) -> char {
        '.'
    }

    fn positional(&self) -> bool {
        self.kind == "jetstream"
    }

    async fn next(&mut self, max: usize) -> Result<Vec<Message>, Error> {
        self.inbox
            .next(max)
            .await
            .ok_or_else(|| Error::closed("the NATS reader stopped"))
    }

    /// Nothing to do: core NATS has no acknowledgement, JetStream positions travel with
    /// the events.
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

struct Reader {
    server: String,
    subjects: Vec<String>,
    sender: mpsc::Sender<Message>,
    health: SharedHealth,
    next_token: u64,
}

/// `Ok(true)`: go on; `Ok(false)`: the source is gone.
type Step = Result<bool, String>;

impl Reader {
    async fn connect(&self) -> async_nats::Client {
        let mut wait = Duration::from_millis(100);
        loop {
            let connecting = async_nats::ConnectOptions::new()
                .connection_timeout(Duration::from_secs(5))
                .connect(self.server.as_str());
            match connecting.await {
                Ok(client) => return client,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS source cannot connect; trying again");
                    self.health.set(false, Some(format!("connecting: {e}")));
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY_WAIT);
        }
    }

    fn message(&mut self, m: async_nats::Message, position: Option<Position>) -> Message {
        let headers: Vec<(String, String)> = m
            .headers
            .iter()
            .flat_map(|headers| headers.iter())
            .flat_map(|(name, values)| {
                values
                    .iter()
                    .map(move |v| (name.to_string(), v.as_str().to_owned()))
            })
            .collect();
        let id = headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("Nats-Msg-Id"))
            .map(|(_, v)| v.clone())
            .or_else(|| position.as_ref().map(|p| format!("{}:{}", p.lane, p.after)));
        let token = self.next_token;
        self.next_token += 1;
        Message {
            subject: m.subject.to_string(),
            headers,
            payload: m.payload,
            id,
            redelivered: false,
            token,
            position,
        }
    }

    /// Core subjects: subscribed once; the client resubscribes after a reconnection.
    async fn core(mut self) {
        let client = self.connect().await;
        let mut subscriptions = Vec::new();
        for subject in &self.subjects {
            match client.subscribe(subject.clone()).await {
                Ok(subscription) => subscriptions.push(subscription),
                Err(e) => {
                    self.health
                        .set(false, Some(format!("subscribing to {subject:?}: {e}")));
                    return;
                }
            }
        }
        let mut messages = futures::stream::select_all(subscriptions);
        let mut health = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else { return };
                    let message = self.message(message, None);
                    if self.sender.send(message).await.is_err() {
                        return;
                    }
                }
                _ = health.tick() => {
                    let connected =
                        client.connection_state() == async_nats::connection::State::Connected;
                    self.health.set(connected, (!connected).then(|| "disconnected; reconnecting".to_owned()));
                }
            }
        }
    }

    /// A stream from after sequence `after` (or where `start` says), on ordered consumers
    /// created again from the last sequence taken whenever one fails.
    async fn jetstream(mut self, stream: String, mut after: Option<u64>, start: Start) {
        let client = self.connect().await;
        let context = async_nats::jetstream::new(client);
        let mut wait = Duration::from_millis(100);
        loop {
            match self.read(&context, &stream, &mut after, start).await {
                Ok(false) => return,
                Ok(true) => wait = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(stream, error = %e, "JetStream source failed; reading again");
                    self.health.set(false, Some(e));
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY_WAIT);
        }
    }

    async fn read(
        &mut self,
        context: &async_nats::jetstream::Context,
        stream: &str,
        after: &mut Option<u64>,
        start: Start,
    ) -> Step {
        let mut handle = context
            .get_stream(stream)
            .await
            .map_err(|e| format!("stream {stream:?}: {e}"))?;
        let deliver_policy = match (*after, start) {
            (Some(after), _) => DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            (None, Start::Earliest) => DeliverPolicy::All,
            (None, Start::Latest) => {
                let last = handle
                    .info()
                    .await
                    .map_err(|e| format!("stream {stream:?}: {e}"))?
                    .state
                    .last_sequence;
                // From here on, restarts of the consumer resume after it.
                *after = Some(last);
                DeliverPolicy::ByStartSequence {
                    start_sequence: last + 1,
                }
            }
        };
        let config = async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subjects: self.subjects.clone(),
            deliver_policy,
            ..Default::default()
        };
        let consumer = handle
            .create_consumer(config)
            .await
            .map_err(|e| format!("creating a consumer on stream {stream:?}: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("reading stream {stream:?}: {e}"))?;
        self.health.set(true, None);
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| format!("reading stream {stream:?}: {e}"))?;
            let sequence = message
                .info()
                .map_err(|e| format!("a message of stream {stream:?} has no sequence: {e}"))?
                .stream_sequence;
            if after.is_some_and(|after| sequence <= after) {
                continue;
            }
            *after = Some(sequence);
            let position = Position {
                lane: stream.to_owned(),
                after: sequence.to_string(),
            };
            let message = self.message(message.split().0, Some(position));
            if self.sender.send(message).await.is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

mod sink;
pub use sink::NatsSink;

#[cfg(test)]
mod tests;
