//! The log family's conformance suite against a real Kafka-protocol broker (tansu, with
//! its in-memory storage), one private broker per test.

use async_trait::async_trait;
use weir_log::{SharedLog, TopicSpec};
use weir_log_conformance::Harness;
use weir_test_support::kafka::KafkaBroker;

struct Kafka {
    broker: KafkaBroker,
}

fn kafka() -> Kafka {
    Kafka {
        broker: KafkaBroker::start(),
    }
}

#[async_trait]
impl Harness for Kafka {
    async fn open(&self) -> SharedLog {
        weir_log_kafka::open_shared(&self.broker.url())
            .await
            .expect("open the Kafka log")
    }

    fn retention_spec(&self, partitions: u32) -> TopicSpec {
        TopicSpec {
            retention_bytes: Some(4096),
            ..TopicSpec::with_partitions(partitions)
        }
    }
}

weir_log_conformance::conformance_tests!(crate::kafka());
