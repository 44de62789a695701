//! The MQTT sink: each event published with QoS 1 to one topic as structured CloudEvents
//! JSON, delivered once the broker's `PUBACK` for it arrived. One publish is in flight at
//! a time per sink (simple and ordered; a sink serves a node's partitions one after
//! another). MQTT 3.1.1 has no message id: a redelivery after a crash is published again
//! (same `id` inside the JSON). The client id is `weir-APP-SINK-` and a random suffix (so
//! fleet members do not take each other's connection over), on a clean session.

use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use tokio::sync::{Mutex, OnceCell, mpsc};
use weir_cloudevents::CloudEvent;
use weir_mesh::{Delivery, Error, Sink, SourceOptions};

/// What the event loop reports to the publisher.
enum Report {
    Sent(u16),
    Acked(u16),
    Failed(String),
}

struct Connected {
    client: AsyncClient,
    reports: Mutex<mpsc::UnboundedReceiver<Report>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

/// A QoS 1 publisher to one topic; connects on the first delivery.
pub struct MqttSink {
    options: rumqttc::MqttOptions,
    topic: String,
    timeout: Duration,
    connected: OnceCell<Connected>,
}

impl MqttSink {
    /// A sink to `topic` on the broker `url` names (`mqtt://`, as the source's), for sink
    /// `name` of `app`, each attempt given `timeout`.
    pub fn new(
        app: &str,
        name: &str,
        url: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<MqttSink, Error> {
        let unique = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut options = crate::options(&SourceOptions {
            name: unique,
            app: app.to_owned(),
            url: url.to_owned(),
            ..SourceOptions::default()
        })?;
        options
            .set_clean_session(true)
            .set_manual_acks(false)
            .set_request_channel_capacity(16);
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(Error::config(format!(
                "{topic:?} is not an MQTT topic to publish to (no wildcards)"
            )));
        }
        Ok(MqttSink {
            options,
            topic: topic.to_owned(),
            timeout,
            connected: OnceCell::new(),
        })
    }

    async fn connected(&self) -> &Connected {
        self.connected
            .get_or_init(|| async {
                let (client, mut events) = AsyncClient::new(self.options.clone(), 16);
                let (report, reports) = mpsc::unbounded_channel();
                let poller = tokio::spawn(async move {
                    loop {
                        let sent = match events.poll().await {
                            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                                report.send(Report::Sent(pkid))
                            }
                            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                                report.send(Report::Acked(ack.pkid))
                            }
                            Ok(_) => Ok(()),
                            Err(e) => {
                                let sent = report.send(Report::Failed(e.to_string()));
                                // rumqttc connects again on the next poll.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                sent
                            }
                        };
                        if sent.is_err() {
                            return;
                        }
                    }
                });
                Connected {
                    client,
                    reports: Mutex::new(reports),
                    poller,
                }
            })
            .await
    }

    async fn publish(&self, event: &CloudEvent) -> Result<(), String> {
        let connected = self.connected().await;
        // One publish at a time: the reports after it are its own.
        let mut reports = connected.reports.lock().await;
        while reports.try_recv().is_ok() {}
        connected
            .client
            .publish(&self.topic, QoS::AtLeastOnce, false, event.to_json_vec())
            .await
            .map_err(|e| format!("publishing: {e}"))?;
        let mut ours = None;
        let mut failure = None;
        loop {
            match reports.recv().await {
                Some(Report::Sent(pkid)) if ours.is_none() => ours = Some(pkid),
                Some(Report::Acked(pkid)) if Some(pkid) == ours => return Ok(()),
                Some(Report::Failed(error)) => failure = Some(error),
                Some(_) => {}
                None => {
                    return Err(failure.unwrap_or_else(|| "the MQTT client stopped".to_owned()));
                }
            }
        }
    }
}

#[async_trait]
impl Sink for MqttSink {
    fn kind(&self) -> &'static str {
        "mqtt"
    }

    async fn deliver(&self, event: &CloudEvent) -> Delivery {
        match tokio::time::timeout(self.timeout, self.publish(event)).await {
            Ok(Ok(())) => Delivery::Delivered,
            Ok(Err(error)) => Delivery::Retry { error, after: None },
            Err(_) => Delivery::Retry {
                error: format!("no PUBACK within {:?}", self.timeout),
                after: None,
            },
        }
    }
}
