//! The Kafka sink: each event produced to one topic as structured CloudEvents JSON
//! (`content-type: application/cloudevents+json`), keyed by the event's `partitionkey`
//! (else its `id`), so Kafka keeps each key's events in one partition and in order.
//! Delivered once the brokers acknowledged it (`acks=all`); at-least-once: a redelivery
//! after a crash is produced again (same `id` inside).

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use weir_cloudevents::CloudEvent;
use weir_mesh::{Delivery, Error, Sink};

use crate::target;

/// A producer to one topic.
pub struct KafkaSink {
    producer: Option<FutureProducer>,
    topic: String,
    timeout: Duration,
}

impl Drop for KafkaSink {
    /// librdkafka's destroy waits for outstanding requests: off the runtime's threads.
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            std::thread::spawn(move || drop(producer));
        }
    }
}

impl KafkaSink {
    /// A sink to `topic` of the brokers `url` names, each attempt given `timeout`.
    pub fn new(url: &str, topic: &str, timeout: Duration) -> Result<KafkaSink, Error> {
        let target = target(url)?;
        if topic.is_empty() {
            return Err(Error::config("name the Kafka topic in `to`"));
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &target.brokers)
            .set("acks", "all")
            .set("message.timeout.ms", timeout.as_millis().max(1).to_string())
            .set("log_level", "4")
            .create()
            .map_err(|e| Error::config(format!("cannot make a Kafka producer: {e}")))?;
        Ok(KafkaSink {
            producer: Some(producer),
            topic: topic.to_owned(),
            timeout,
        })
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn deliver(&self, event: &CloudEvent) -> Delivery {
        let Some(producer) = &self.producer else {
            return Delivery::Retry {
                error: "the producer is gone".to_owned(),
                after: None,
            };
        };
        let body = event.to_json_vec();
        let key = event.partition_key().unwrap_or(&event.id);
        let headers = OwnedHeaders::new().insert(Header {
            key: "content-type",
            value: Some("application/cloudevents+json"),
        });
        let record = FutureRecord::to(&self.topic)
            .key(key)
            .payload(&body)
            .headers(headers);
        match producer.send(record, self.timeout).await {
            Ok(_) => Delivery::Delivered,
            Err((e, _)) => {
                let error = format!("producing to {:?}: {e}", self.topic);
                match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => Delivery::Refused { error },
                    _ => Delivery::Retry { error, after: None },
                }
            }
        }
    }
}
