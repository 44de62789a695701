//! Transactions: outputs and a group commit together, a transaction sent again, and a
//! fenced one.

use std::collections::BTreeMap;

use weir_log::{
    ErrorKind, Expect, GroupCommit, SharedLog, TopicSpec, Transaction, TransactionGuarantee,
};

use crate::{Harness, read_all, records, values};

/// `in` with ten records to consume, `out-a` (two partitions) and `out-b`.
async fn setup(log: &SharedLog) {
    for (name, partitions) in [("in", 1), ("out-a", 2), ("out-b", 1)] {
        log.create_topic(name, &TopicSpec::with_partitions(partitions))
            .await
            .expect("create");
    }
    log.append_to("in", 0, records("in", 10, 0), Expect::Any)
        .await
        .expect("append the input");
}

/// Transaction `n`: three keyed records to `out-a`, two to `out-b`, and the group past
/// input `n`.
fn txn(n: u64, generation: u64) -> Transaction {
    Transaction {
        producer: "pipeline/p/in/0".into(),
        appends: vec![
            ("out-a".into(), records(&format!("a{n}"), 3, 3)),
            ("out-b".into(), records(&format!("b{n}"), 2, 0)),
        ],
        commit: Some(GroupCommit {
            group: "p".into(),
            topic: "in".into(),
            partition: 0,
            next_offset: n + 1,
            generation,
        }),
    }
}

/// How many times each output value is stored.
async fn stored(log: &SharedLog) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (topic, partitions) in [("out-a", 2), ("out-b", 1)] {
        for partition in 0..partitions {
            for value in values(&read_all(log, topic, partition).await) {
                *counts.entry(value).or_default() += 1;
            }
        }
    }
    counts
}

fn expected(transactions: &[u64]) -> BTreeMap<String, usize> {
    transactions
        .iter()
        .flat_map(|n| {
            (0..3)
                .map(move |i| format!("a{n}-{i}"))
                .chain((0..2).map(move |i| format!("b{n}-{i}")))
        })
        .map(|v| (v, 1))
        .collect()
}

pub async fn a_transaction_stores_outputs_and_commit_together(harness: &impl Harness) {
    let log = harness.open().await;
    setup(&log).await;
    let generation = log.claim("p", "in", 0).await.expect("claim");
    for n in 0..3 {
        log.commit_transaction(txn(n, generation))
            .await
            .expect("commit");
        assert_eq!(
            log.committed_offset("p", "in", 0).await.expect("committed"),
            Some(n + 1)
        );
    }
    assert_eq!(stored(&log).await, expected(&[0, 1, 2]));
    // A transaction with only a commit moves the group, and back.
    let reset = Transaction {
        appends: Vec::new(),
        ..txn(0, generation)
    };
    log.commit_transaction(reset).await.expect("reset");
    assert_eq!(
        log.committed_offset("p", "in", 0).await.expect("committed"),
        Some(1)
    );
    drop(log);
    let log = harness.open().await;
    assert_eq!(stored(&log).await, expected(&[0, 1, 2]));
    assert_eq!(
        log.committed_offset("p", "in", 0).await.expect("committed"),
        Some(1)
    );
}

pub async fn a_transaction_sent_again_is_stored_as_declared(harness: &impl Harness) {
    let log = harness.open().await;
    setup(&log).await;
    let declared = log.guarantees(&TopicSpec::default()).transactions;
    let generation = log.claim("p", "in", 0).await.expect("claim");
    log.commit_transaction(txn(0, generation))
        .await
        .expect("commit");
    // The caller did not see the answer and sends it again, unchanged.
    log.commit_transaction(txn(0, generation))
        .await
        .expect("sent again");
    let counts = stored(&log).await;
    match declared {
        TransactionGuarantee::ExactlyOnce => {
            assert_eq!(counts, expected(&[0]), "exactly once: stored once");
        }
        TransactionGuarantee::AtLeastOnce => {
            assert_eq!(counts.len(), 5, "every output stored");
            assert!(counts.values().all(|&n| (1..=2).contains(&n)), "{counts:?}");
        }
    }
    assert_eq!(
        log.committed_offset("p", "in", 0).await.expect("committed"),
        Some(1)
    );
    // The next one goes on as usual.
    log.commit_transaction(txn(1, generation))
        .await
        .expect("next");
    assert_eq!(stored(&log).await.len(), 10);
}

pub async fn a_fenced_transaction_writes_nothing(harness: &impl Harness) {
    let log = harness.open().await;
    if !log.guarantees(&TopicSpec::default()).fenced_commits {
        return;
    }
    setup(&log).await;
    let old = log.claim("p", "in", 0).await.expect("claim");
    log.commit_transaction(txn(0, old)).await.expect("commit");
    let new = log.claim("p", "in", 0).await.expect("a new owner");
    let err = log
        .commit_transaction(txn(1, old))
        .await
        .expect_err("fenced");
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert_eq!(stored(&log).await, expected(&[0]), "nothing of it written");
    assert_eq!(
        log.committed_offset("p", "in", 0).await.expect("committed"),
        Some(1)
    );
    log.commit_transaction(txn(1, new))
        .await
        .expect("the new owner commits");
    assert_eq!(stored(&log).await, expected(&[0, 1]));
}

/// A transaction's records for one partition are stored in the order given, keys
/// repeated or not (a backend may send them in several steps, never out of order).
pub async fn a_transactions_records_keep_their_order(harness: &impl Harness) {
    let log = harness.open().await;
    setup(&log).await;
    log.create_topic("ordered", &TopicSpec::with_partitions(1))
        .await
        .expect("create");
    let generation = log.claim("p", "in", 0).await.expect("claim");
    // Three keys twice, then two records without a key; then two keys six times each.
    let mut first = records("x", 6, 3);
    first.extend(records("y", 2, 0));
    let second = records("z", 12, 2);
    let mut given = Vec::new();
    for (n, batch) in [first, second].into_iter().enumerate() {
        given.extend(
            batch
                .iter()
                .map(|r| String::from_utf8_lossy(&r.value).into_owned()),
        );
        let txn = Transaction {
            producer: "pipeline/p/in/0".into(),
            appends: vec![("ordered".into(), batch)],
            commit: Some(GroupCommit {
                group: "p".into(),
                topic: "in".into(),
                partition: 0,
                next_offset: n as u64 + 1,
                generation,
            }),
        };
        log.commit_transaction(txn).await.expect("commit");
    }
    let stored = read_all(&log, "ordered", 0).await;
    assert_eq!(values(&stored), given, "stored in the order given");
    let keys: Vec<Option<String>> = stored
        .iter()
        .map(|r| {
            r.key
                .as_ref()
                .map(|k| String::from_utf8_lossy(k).into_owned())
        })
        .collect();
    assert_eq!(
        keys[..8],
        [
            Some("k0".into()),
            Some("k1".into()),
            Some("k2".into()),
            Some("k0".into()),
            Some("k1".into()),
            Some("k2".into()),
            None,
            None,
        ]
    );
}
