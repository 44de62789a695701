//! The conformance suite against the machine's shared nats-server (127.0.0.1:4222, Debian's
//! 2.9.10 here: no atomic batches, so the backend declares per-record atomicity and sends a
//! call's records one by one), each test under a prefix of its own, removed afterwards.

use async_trait::async_trait;
use weir_log::{SharedLog, TopicSpec};
use weir_log_conformance::Harness;

const SHARED: &str = "nats://127.0.0.1:4222";

struct Shared {
    prefix: String,
}

fn shared() -> Shared {
    if std::net::TcpStream::connect("127.0.0.1:4222").is_err() {
        panic!(
            "no NATS server on 127.0.0.1:4222; start it: start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log"
        );
    }
    Shared {
        prefix: format!("t{}", uuid_like()),
    }
}

/// A prefix unique to this test process and moment.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos % (1 << 40))
}

#[async_trait]
impl Harness for Shared {
    async fn open(&self) -> SharedLog {
        weir_log_nats::open_shared(&format!("{SHARED}/{}", self.prefix))
            .await
            .expect("open the NATS log on the shared server")
    }

    fn retention_spec(&self, partitions: u32) -> TopicSpec {
        TopicSpec {
            retention_bytes: Some(4096),
            ..TopicSpec::with_partitions(partitions)
        }
    }
}

impl Drop for Shared {
    /// Removes every stream of the prefix (its partitions and buckets) from the server.
    fn drop(&mut self) {
        let prefix = self.prefix.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let _ = runtime.block_on(weir_log_nats::remove_prefix(SHARED, &prefix));
        });
        let _ = cleanup.join();
    }
}

weir_log_conformance::conformance_tests!(crate::shared());
