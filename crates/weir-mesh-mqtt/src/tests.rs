//! Against the machine's Mosquitto (`weir_test_support::mqtt`).

use std::time::Duration;

use weir_mesh::{Message, Source, SourceOptions};
use weir_test_support::mqtt::{self, unique};

use super::MqttSource;

fn options(name: &str, filter: &str) -> SourceOptions {
    SourceOptions {
        name: name.into(),
        app: "mqtt-tests".into(),
        url: mqtt::mosquitto(),
        subscribe: vec![filter.into()],
        unsubscribe: Vec::new(),
        ..SourceOptions::default()
    }
}

async fn next(source: &mut MqttSource, max: usize) -> Vec<Message> {
    tokio::time::timeout(Duration::from_secs(20), source.next(max))
        .await
        .expect("a message within 20 s")
        .expect("the source delivers")
}

/// Publishes `ready` to `topic` until the source receives one (its subscription is in
/// place), acknowledging what it takes.
async fn until_subscribed(source: &mut MqttSource, topic: &str) {
    for _ in 0..100 {
        mqtt::publish(&unique("ready"), topic, &[b"ready".to_vec()]).await;
        if let Ok(Ok(batch)) =
            tokio::time::timeout(Duration::from_millis(200), source.next(100)).await
        {
            let tokens: Vec<u64> = batch.iter().map(|m| m.token).collect();
            source.ack(&tokens).await.unwrap();
            return;
        }
    }
    panic!("the MQTT source never received what was published to {topic}");
}

/// The payloads of `messages` that are not the readiness probe.
fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .filter(|p| p != "ready")
        .collect()
}

/// Takes messages until `n` besides probes came, acknowledging each batch if `ack` (the
/// broker sends no more than its window of unacknowledged messages: 20 in Mosquitto).
async fn take(source: &mut MqttSource, n: usize, ack: bool) -> Vec<Message> {
    let mut got: Vec<Message> = Vec::new();
    while payloads(&got).len() < n {
        let batch = next(source, 64).await;
        if ack {
            let tokens: Vec<u64> = batch.iter().map(|m| m.token).collect();
            source.ack(&tokens).await.unwrap();
        }
        got.extend(batch);
    }
    got
}

#[tokio::test]
async fn messages_arrive_in_order_each_once_with_their_topic() {
    let base = unique("weir-test/order");
    let mut source = MqttSource::open(&options(&unique("s"), &format!("{base}/#"))).unwrap();
    until_subscribed(&mut source, &format!("{base}/ready")).await;
    let sent: Vec<Vec<u8>> = (0..200).map(|i| format!("m{i}").into_bytes()).collect();
    mqtt::publish(&unique("p"), &format!("{base}/dev-7/temp"), &sent).await;
    let got = take(&mut source, 200, true).await;
    let expected: Vec<String> = (0..200).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads(&got), expected);
    let message = got.iter().find(|m| m.payload.as_ref() == b"m0").unwrap();
    assert_eq!(message.subject, format!("{base}/dev-7/temp"));
    assert!(!message.redelivered);
    assert!(source.health().connected);
    // Nothing more comes: each message once.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), source.next(10))
            .await
            .is_err()
    );
}

/// A source that stops without acknowledging (as a killed weir would) leaves its messages
/// to the broker's session: the next one with the same client id gets them again, and the
/// messages published while it was away, and not those it acknowledged.
#[tokio::test]
async fn what_was_not_acknowledged_comes_again_after_a_kill() {
    let base = unique("weir-test/redeliver");
    let name = unique("s");
    let opts = options(&name, &format!("{base}/#"));
    let mut source = MqttSource::open(&opts).unwrap();
    until_subscribed(&mut source, &format!("{base}/ready")).await;
    let sent: Vec<Vec<u8>> = (0..10).map(|i| format!("m{i}").into_bytes()).collect();
    mqtt::publish(&unique("p"), &format!("{base}/t"), &sent).await;
    let got = take(&mut source, 10, false).await;
    let acked: Vec<u64> = got
        .iter()
        .filter(|m| ["m0", "m1", "m2", "m3"].contains(&std::str::from_utf8(&m.payload).unwrap()))
        .map(|m| m.token)
        .collect();
    source.ack(&acked).await.unwrap();
    // The acknowledgements leave with the poller; give them time to reach the broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(source);
    let later: Vec<Vec<u8>> = (10..13).map(|i| format!("m{i}").into_bytes()).collect();
    mqtt::publish(&unique("p"), &format!("{base}/t"), &later).await;

    let mut source = MqttSource::open(&opts).unwrap();
    let got = take(&mut source, 9, true).await;
    let expected: Vec<String> = (4..13).map(|i| format!("m{i}")).collect();
    assert_eq!(payloads(&got), expected);
    assert!(
        got.iter()
            .filter(|m| ["m4", "m9"].contains(&std::str::from_utf8(&m.payload).unwrap()))
            .all(|m| m.redelivered),
        "the broker marks what it delivered before"
    );
}

#[tokio::test]
async fn a_bad_url_is_refused_with_what_to_write() {
    let mut opts = options("s", "a/#");
    for (url, says) in [
        ("mqtts://127.0.0.1:8883", "not supported yet"),
        ("mqtt://127.0.0.1:1883?clientid=x", "client_id"),
        ("mqtt:///nohost", "names no broker host"),
        ("http://127.0.0.1", "not an MQTT URL"),
    ] {
        opts.url = url.into();
        let Err(e) = MqttSource::open(&opts) else {
            panic!("{url} was taken")
        };
        assert!(e.message.contains(says), "{url}: {e}");
        assert_eq!(e.kind, weir_mesh::ErrorKind::Config);
    }
    opts.url = mqtt::mosquitto();
    opts.subscribe.clear();
    assert!(MqttSource::open(&opts).is_err());
}

/// The broker loses the session (here: another client takes the client id with a clean
/// session) while the source holds messages it has not acknowledged. Packet ids start
/// again in the new session, so acknowledging the old messages now must not acknowledge
/// the new session's messages that have the same ids: those come again after a kill.
#[tokio::test]
async fn acknowledgements_of_a_lost_session_do_not_reach_the_new_ones_messages() {
    let base = unique("weir-test/lost-session");
    let opts = options(&unique("s"), &format!("{base}/#"));
    let mut source = MqttSource::open(&opts).unwrap();
    until_subscribed(&mut source, &format!("{base}/ready")).await;
    let sent: Vec<Vec<u8>> = (0..5).map(|i| format!("old{i}").into_bytes()).collect();
    mqtt::publish(&unique("p"), &format!("{base}/t"), &sent).await;
    let old = take(&mut source, 5, false).await;

    // Wipe the session: connect with the source's client id and a clean session.
    let client_id = format!("weir-{}-{}", opts.app, opts.name);
    let mut wipe = rumqttc::MqttOptions::new(client_id, "127.0.0.1", 1883);
    wipe.set_clean_session(true);
    let (client, mut events) = rumqttc::AsyncClient::new(wipe, 10);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = events.poll().await.unwrap()
        {
            break;
        }
    }
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}

    // The source reconnects to a new session and subscribes again.
    until_subscribed(&mut source, &format!("{base}/ready")).await;
    let new: Vec<Vec<u8>> = (0..5).map(|i| format!("new{i}").into_bytes()).collect();
    mqtt::publish(&unique("p"), &format!("{base}/t"), &new).await;
    let got = take(&mut source, 5, false).await;
    assert_eq!(payloads(&got), ["new0", "new1", "new2", "new3", "new4"]);
    // The old messages become durable now: their acknowledgements belong to the lost
    // session and are not sent.
    let tokens: Vec<u64> = old.iter().map(|m| m.token).collect();
    source.ack(&tokens).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(source);

    let mut source = MqttSource::open(&opts).unwrap();
    let again = take(&mut source, 5, true).await;
    assert_eq!(payloads(&again), ["new0", "new1", "new2", "new3", "new4"]);
}
