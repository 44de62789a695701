//! Conditional appends: a condition that does not hold writes nothing, and of appends
//! racing with one expected end exactly one wins.

use bytes::Bytes;
use weir_log::{ErrorKind, Expect, TopicSpec};

use crate::{Harness, read_all, records, values};

pub async fn an_expected_end_admits_one_of_racing_appends(harness: &impl Harness) {
    let log = harness.open().await;
    let declared = log.guarantees(&TopicSpec::default()).conditional_appends;
    log.create_topic("t", &TopicSpec::default())
        .await
        .expect("create");
    if !declared.partition_end {
        let err = log
            .append_to("t", 0, records("x", 1, 0), Expect::End(0))
            .await
            .expect_err("not declared, so refused");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        return;
    }
    let positions = log
        .append_to("t", 0, records("first", 2, 0), Expect::End(0))
        .await
        .expect("the end is 0");
    assert_eq!(positions[0].offset, 0);
    let err = log
        .append_to("t", 0, records("stale", 1, 0), Expect::End(0))
        .await
        .expect_err("the end moved");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        values(&read_all(&log, "t", 0).await),
        ["first-0", "first-1"]
    );

    // Sixteen writers that all read end 2 race: one appends, fifteen conflict.
    let end = log.offsets("t", 0).await.expect("offsets").end;
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move {
                log.append_to(
                    "t",
                    0,
                    records(&format!("racer{i}"), 2, 0),
                    Expect::End(end),
                )
                .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.expect("racer") {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert_eq!(won, 1, "exactly one append meets the expected end");
    assert_eq!(read_all(&log, "t", 0).await.len(), 4);

    // An append without a condition is not held up by them.
    log.append("t", records("free", 1, 0))
        .await
        .expect("append");
}

pub async fn key_conditions_are_checked_or_refused_as_declared(harness: &impl Harness) {
    let log = harness.open().await;
    let declared = log.guarantees(&TopicSpec::default()).conditional_appends;
    log.create_topic("t", &TopicSpec::default())
        .await
        .expect("create");
    let keyed = |v: &str| vec![weir_log::Record::new(v.to_owned()).with_key("entity-1")];
    let first = log
        .append_to(
            "t",
            0,
            keyed("v1"),
            Expect::KeyLast {
                key: Bytes::from_static(b"entity-1"),
                offset: None,
            },
        )
        .await;
    if !declared.key_last {
        let err = first.expect_err("not declared, so refused");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(read_all(&log, "t", 0).await.is_empty(), "nothing written");
        return;
    }
    let first = first.expect("no record of the key yet");
    let err = log
        .append_to(
            "t",
            0,
            keyed("v2"),
            Expect::KeyLast {
                key: Bytes::from_static(b"entity-1"),
                offset: None,
            },
        )
        .await
        .expect_err("the key has a record now");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    log.append_to(
        "t",
        0,
        keyed("v2"),
        Expect::KeyLast {
            key: Bytes::from_static(b"entity-1"),
            offset: Some(first[0].offset),
        },
    )
    .await
    .expect("the key's last offset is the first one");
    assert_eq!(values(&read_all(&log, "t", 0).await), ["v1", "v2"]);
}
