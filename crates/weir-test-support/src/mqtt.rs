//! The machine's Mosquitto (127.0.0.1:1883) for the MQTT source's tests: started when it is
//! down, and a QoS 1 publisher.

use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Where the tests' MQTT broker listens.
pub const ADDRESS: &str = "127.0.0.1:1883";

/// The broker's URL, after making sure it runs: when nothing listens on [`ADDRESS`], runs
/// `mosquitto -d -c /etc/mosquitto/mosquitto.conf` and waits for it. Panics with what to do
/// when it cannot.
pub fn mosquitto() -> String {
    let up =
        || TcpStream::connect_timeout(&ADDRESS.parse().unwrap(), Duration::from_secs(1)).is_ok();
    if !up() {
        let started = std::process::Command::new("mosquitto")
            .args(["-d", "-c", "/etc/mosquitto/mosquitto.conf"])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !up() {
            assert!(
                Instant::now() < deadline,
                "the MQTT tests need Mosquitto on {ADDRESS}; starting it with \
                 `mosquitto -d -c /etc/mosquitto/mosquitto.conf` gave {started:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    format!("mqtt://{ADDRESS}")
}

/// A name (topic prefix, client id) no other run or test shares: `what`, the process id
/// and the time in nanoseconds.
pub fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Publishes `payloads` to `topic` with QoS 1, in order, and returns once the broker
/// acknowledged every one.
pub async fn publish(client_id: &str, topic: &str, payloads: &[Vec<u8>]) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", 1883);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = AsyncClient::new(options, payloads.len() + 10);
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.clone())
            .await
            .expect("an MQTT publish queued");
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked < payloads.len() {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .expect("Mosquitto acknowledged the test's publishes within 30 s")
            .expect("the test's MQTT publisher stays connected");
        match event {
            Event::Incoming(Packet::PubAck(_)) => acked += 1,
            Event::Outgoing(Outgoing::Disconnect) => break,
            _ => {}
        }
    }
    let _ = client.disconnect().await;
}
