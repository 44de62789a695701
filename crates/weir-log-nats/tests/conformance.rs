//! The log family's conformance suite against a real nats-server (2.12 or newer, with
//! `sync_interval: always`), one private server per test.

use async_trait::async_trait;
use weir_log::{SharedLog, TopicSpec};
use weir_log_conformance::Harness;
use weir_test_support::nats::NatsServer;

struct Nats {
    server: NatsServer,
}

fn nats() -> Nats {
    Nats {
        server: NatsServer::start(true),
    }
}

#[async_trait]
impl Harness for Nats {
    async fn open(&self) -> SharedLog {
        weir_log_nats::open_shared(&format!("{}?sync=always", self.server.url()))
            .await
            .expect("open the NATS log")
    }

    fn retention_spec(&self, partitions: u32) -> TopicSpec {
        TopicSpec {
            retention_bytes: Some(4096),
            ..TopicSpec::with_partitions(partitions)
        }
    }
}

weir_log_conformance::conformance_tests!(crate::nats());
