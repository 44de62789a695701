//! The MQTT sink: each event published with QoS 1 to one topic as structured CloudEvents
//! JSON, delivered once the broker's `PUBACK` for it arrived. One publish is in flight at
//! a time per sink (simple and ordered; a sink serves a node's partitions one after
//! another). MQTT 3.1.1 has no message id: a redelivery after a crash is published again
//! (same `id` inside the JSON). The client id is `weir-sink-NAME-` and a random suffix (so
//! fleet members do not take each other's connection over), on a clean session. An
//! attempt that fails, times out or is cancelled drops the connection with it, so no
//! request of an earlier attempt can be sent (and acknowledged) in a later one's name;
//! an event over the largest packet is refused at once.

use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use tokio::sync::{Mutex, mpsc};
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
    reports: mpsc::UnboundedReceiver<Report>,
    poller: tokio::task::JoinHandle<()>,
    /// An attempt on this connection began and did not end well (or at all).
    spoiled: bool,
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
    connected: Mutex<Option<Connected>>,
}

/// The largest event published: rumqttc refuses bigger packets (and breaks the
/// connection), with room for the topic.
const MAX_EVENT_BYTES: usize = (1 << 20) - 64 * 1024;

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
            connected: Mutex::new(None),
        })
    }

    fn connect(&self) -> Connected {
        let (client, mut events) = AsyncClient::new(self.options.clone(), 16);
        let (report, reports) = mpsc::unbounded_channel();
        let poller = tokio::spawn(async move {
            loop {
                let sent = match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => report.send(Report::Sent(pkid)),
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
            reports,
            poller,
            spoiled: false,
        }
    }

    /// Publishes on `connected`, whose only request is this one.
    async fn publish(&self, connected: &mut Connected, body: Vec<u8>) -> Result<(), String> {
        connected
            .client
            .publish(&self.topic, QoS::AtLeastOnce, false, body)
            .await
            .map_err(|e| format!("publishing: {e}"))?;
        let mut ours = None;
        let mut failure = None;
        loop {
            match connected.reports.recv().await {
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
        let body = event.to_json_vec();
        if body.len() > MAX_EVENT_BYTES {
            return Delivery::Refused {
                error: format!(
                    "the event is {} bytes, over the {MAX_EVENT_BYTES} an MQTT publish takes",
                    body.len()
                ),
            };
        }
        // One attempt at a time, on a connection no earlier attempt left a request in.
        let mut held = self.connected.lock().await;
        if held.as_ref().is_some_and(|c| c.spoiled) {
            *held = None;
        }
        let connected = held.get_or_insert_with(|| self.connect());
        connected.spoiled = true;
        let answer = tokio::time::timeout(self.timeout, self.publish(connected, body)).await;
        match answer {
            Ok(Ok(())) => {
                connected.spoiled = false;
                Delivery::Delivered
            }
            Ok(Err(error)) => Delivery::Retry { error, after: None },
            Err(_) => Delivery::Retry {
                error: format!("no PUBACK within {:?}", self.timeout),
                after: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weir_cloudevents::{CloudEvent, Data};
    use weir_mesh::{Delivery, Sink};

    use super::MqttSink;

    #[tokio::test]
    async fn an_event_over_the_largest_packet_is_refused_not_retried() {
        let sink = MqttSink::new(
            "app",
            "out",
            &weir_test_support::mqtt::mosquitto(),
            "alerts",
            Duration::from_secs(5),
        )
        .unwrap();
        let mut event = CloudEvent::new("big", "/test", "com.example.big");
        event.data = Some(Data::Text("x".repeat(1 << 20)));
        assert!(matches!(
            sink.deliver(&event).await,
            Delivery::Refused { .. }
        ));
        assert!(MqttSink::new("app", "out", "mqtt://h", "a/#", Duration::from_secs(1)).is_err());
    }
}
