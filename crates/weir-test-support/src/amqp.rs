//! The machine's RabbitMQ (127.0.0.1:5672, guest/guest) for the AMQP source's tests: a
//! queue declared and filled with confirmed publishes.

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};

/// The broker's URL (the default virtual host).
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Declares `queue` (if needed) and publishes `payloads` to it in order through the
/// default exchange, each confirmed by the broker; the i-th (from `first_id`) with
/// message-id `m-i` and the header `device` when `device` gives one.
pub async fn publish(
    queue: &str,
    first_id: usize,
    payloads: &[Vec<u8>],
    device: impl Fn(usize) -> Option<String>,
) {
    let connection = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("the AMQP tests need RabbitMQ on 127.0.0.1:5672 (guest/guest) running");
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut confirms = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        let i = first_id + i;
        let mut headers = FieldTable::default();
        if let Some(device) = device(i) {
            headers.insert("device".into(), AMQPValue::LongString(device.into()));
        }
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                payload,
                BasicProperties::default()
                    .with_message_id(ShortString::from(format!("m-{i}")))
                    .with_headers(headers),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    for confirm in confirms {
        confirm.await.unwrap();
    }
    connection.close(200, "done".into()).await.unwrap();
}
