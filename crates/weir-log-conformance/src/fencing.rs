//! Owners of a group's partition: a claim fences every older owner's commits.

use weir_log::{ErrorKind, GroupCommit, SharedLog, TopicSpec};

use crate::{Harness, records};

fn commit(partition: u32, next_offset: u64, generation: u64) -> GroupCommit {
    GroupCommit {
        group: "g".into(),
        topic: "t".into(),
        partition,
        next_offset,
        generation,
    }
}

async fn committed(log: &SharedLog, partition: u32) -> Option<u64> {
    log.committed_offset("g", "t", partition)
        .await
        .expect("committed")
}

pub async fn a_claim_fences_older_owners_across_a_reopen(harness: &impl Harness) {
    let log = harness.open().await;
    if !log.guarantees(&TopicSpec::default()).fenced_commits {
        return;
    }
    log.create_topic("t", &TopicSpec::with_partitions(2))
        .await
        .expect("create");
    log.append_to("t", 0, records("r", 10, 0), weir_log::Expect::Any)
        .await
        .expect("append");
    assert_eq!(log.generation("g", "t", 0).await.expect("generation"), 0);

    // Before any claim, a committer without one may commit.
    log.commit_offset(commit(0, 1, 0)).await.expect("unclaimed");
    let first = log.claim("g", "t", 0).await.expect("claim");
    assert!(first > 0);
    log.commit_offset(commit(0, 2, first)).await.expect("owner");
    let err = log
        .commit_offset(commit(0, 9, 0))
        .await
        .expect_err("a committer that never claimed is fenced now");
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");

    let second = log.claim("g", "t", 0).await.expect("claim again");
    assert!(second > first, "{second} after {first}");
    let err = log
        .commit_offset(commit(0, 5, first))
        .await
        .expect_err("the old owner is fenced");
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert_eq!(
        committed(&log, 0).await,
        Some(2),
        "a fenced commit changes nothing"
    );
    log.commit_offset(commit(0, 4, second))
        .await
        .expect("the new owner");
    assert_eq!(committed(&log, 0).await, Some(4));

    // Partitions are owned one by one.
    assert_eq!(log.generation("g", "t", 1).await.expect("generation"), 0);
    log.commit_offset(commit(1, 0, 0))
        .await
        .expect("another partition is not claimed");

    // Generations are durable: after a reopen the old owner is still fenced, and the
    // next claim is newer than every one before.
    drop(log);
    let log = harness.open().await;
    assert_eq!(
        log.generation("g", "t", 0).await.expect("generation"),
        second
    );
    let err = log
        .commit_offset(commit(0, 6, first))
        .await
        .expect_err("still fenced");
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    let third = log.claim("g", "t", 0).await.expect("claim after reopen");
    assert!(third > second);
    assert_eq!(committed(&log, 0).await, Some(4));
}
