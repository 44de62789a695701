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

    /// A topic that must exist.
    pub(crate) async fn topic_info(&self, topic: &str) -> Result<weir_log::TopicInfo> {
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
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for record in records {
            // A subscriber that stops reading must not hold the node up: waiting to hand
            // out an event ends on cancellation too.
            tokio::select! {
                sent = tx.send(decode_event(&topic, record)) => if sent.is_err() { return },
                _ = cancel.cancelled() => return,
            }
        }
    }
}
