//! The NATS sinks: each event published as structured CloudEvents JSON
//! (`application/cloudevents+json`) to one subject, with `Nats-Msg-Id` = the event's id.
//! `nats://`: core NATS, delivered once written to the server's connection (a flush;
//! core NATS confirms nothing, and keeps nothing if no one subscribes). `jetstream://`: delivered on the stream's acknowledgement; the
//! stream drops a repeat of an id within its duplicate window (2 minutes by default), so
//! a redelivery after a crash is stored once.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;
use weir_cloudevents::CloudEvent;
use weir_mesh::{Delivery, Error, Sink};

use crate::target;

/// A publisher to one subject; connects on the first delivery.
pub struct NatsSink {
    server: String,
    jetstream: bool,
    subject: String,
    timeout: Duration,
    client: OnceCell<async_nats::Client>,
}

impl NatsSink {
    /// A sink to `subject` of the server `url` names (`nats://HOST[:PORT]` or
    /// `jetstream://HOST[:PORT]`), each attempt given `timeout`.
    pub fn new(url: &str, subject: &str, timeout: Duration) -> Result<NatsSink, Error> {
        let jetstream = url.starts_with("jetstream://");
        // The sink's URL names a server only; a JetStream sink finds the stream by subject.
        let bare = if jetstream {
            let rest = url.trim_start_matches("jetstream://");
            if rest.contains('/') && !rest.ends_with('/') {
                return Err(Error::config(
                    "a jetstream:// sink takes no stream in its URL: the subject in `to` picks it",
                ));
            }
            format!("nats://{}", rest.trim_end_matches('/'))
        } else {
            url.to_owned()
        };
        let server = target(&bare)?.server;
        if subject.is_empty() || subject.contains(['*', '>', ' ']) {
            return Err(Error::config(format!(
                "{subject:?} is not a subject to publish to (no wildcards)"
            )));
        }
        Ok(NatsSink {
            server,
            jetstream,
            subject: subject.to_owned(),
            timeout,
            client: OnceCell::new(),
        })
    }

    async fn client(&self) -> Result<&async_nats::Client, String> {
        self.client
            .get_or_try_init(|| async {
                async_nats::ConnectOptions::new()
                    .connection_timeout(self.timeout)
                    .connect(self.server.as_str())
                    .await
                    .map_err(|e| format!("connecting: {e}"))
            })
            .await
    }

    async fn publish(&self, event: &CloudEvent) -> Result<(), Delivery> {
        let retry = |error: String| Delivery::Retry { error, after: None };
        let client = self.client().await.map_err(retry)?;
        let body = event.to_json_vec();
        let max = client.server_info().max_payload;
        if max > 0 && body.len() > max {
            return Err(Delivery::Refused {
                error: format!(
                    "the event is {} bytes, over the server's max_payload of {max}",
                    body.len()
                ),
            });
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        headers.insert("Content-Type", "application/cloudevents+json");
        let body = body.into();
        if self.jetstream {
            let context = async_nats::jetstream::new(client.clone());
            context
                .publish_with_headers(self.subject.clone(), headers, body)
                .await
                .map_err(|e| retry(format!("publishing: {e}")))?
                .await
                .map_err(|e| retry(format!("the stream did not acknowledge: {e}")))?;
        } else {
            client
                .publish_with_headers(self.subject.clone(), headers, body)
                .await
                .map_err(|e| retry(format!("publishing: {e}")))?;
            client
                .flush()
                .await
                .map_err(|e| retry(format!("not written to the server: {e}")))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Sink for NatsSink {
    fn kind(&self) -> &'static str {
        if self.jetstream { "jetstream" } else { "nats" }
    }

    async fn deliver(&self, event: &CloudEvent) -> Delivery {
        match tokio::time::timeout(self.timeout, self.publish(event)).await {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(delivery)) => delivery,
            Err(_) => Delivery::Retry {
                error: format!("no answer within {:?}", self.timeout),
                after: None,
            },
        }
    }
}
