//! Live subscriptions: following every partition of a topic (`weir tail`, SSE without a
//! group); members of a consumer group follow theirs the same way (`groups::members`).

use futures::Stream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::codec::decode_event;
use crate::consumer::{PartitionConsumer, Progress, resolve_start, topic_info};
use crate::{LoggedEvent, Node, Result, StartFrom};

impl Node {
    /// Follow every partition of a topic from `from`, live. The stream ends when the
    /// node shuts down; dropping it stops the readers.
    pub async fn subscribe(
        &self,
        topic: &str,
        from: StartFrom,
    ) -> Result<impl Stream<Item = Result<LoggedEvent>> + Send + use<>> {
        let info = self.topic_info(topic).await?;
        let (tx, rx) = mpsc::channel(256);
        for partition in 0..info.partitions {
            let consumer = PartitionConsumer::open(
                &self.log,
                topic,
                partition,
                format!("subscriber of {topic:?}"),
                Progress::None,
                from,
                &self.cancel,
            )
            .await?;
            let (tx, cancel) = (tx.clone(), self.cancel.clone());
            self.tasks.spawn(follow_partition(consumer, tx, cancel));
        }
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// A topic that must exist (else unknown-topic).
    pub async fn topic_info(&self, topic: &str) -> Result<weir_log::TopicInfo> {
        topic_info(&self.log, topic).await
    }

    /// The offset `from` means in one partition.
    pub(crate) async fn resolve_start(
        &self,
        topic: &str,
        partition: u32,
        from: StartFrom,
    ) -> Result<u64> {
        resolve_start(&self.log, topic, partition, from).await
    }
}

/// Hand out a partition's events to `tx` as they come, until `cancel` fires or `tx` is
/// closed.
pub(crate) async fn follow_partition(
    mut consumer: PartitionConsumer,
    tx: mpsc::Sender<Result<LoggedEvent>>,
    cancel: CancellationToken,
) {
    let topic = consumer.topic().to_owned();
    loop {
        let records = match consumer.next_batch(256, &cancel, tx.closed()).await {
            Ok(Some(records)) => records,
            Ok(None) => return,
            Err(e) => {
                send_unless_cancelled(&tx, Err(e), &cancel).await;
                return;
            }
        };
        for record in records {
            if !send_unless_cancelled(&tx, decode_event(&topic, record), &cancel).await {
                return;
            }
        }
    }
}

/// Sends `item` unless `cancel` fires first, so a subscriber that stopped reading (its
/// channel full) cannot hold up the node's shutdown. False if the receiver is gone or
/// the node is stopping.
pub(crate) async fn send_unless_cancelled<T>(
    tx: &mpsc::Sender<T>,
    item: T,
    cancel: &CancellationToken,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = cancel.cancelled() => false,
    }
}
