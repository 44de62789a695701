//! `--backend`: which member of the log family a node runs on, picked from its URL.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use weir_log::SharedLog;

/// The log `backend` names, and the key-value store a node on it uses. `embedded` (the
/// default) opens the embedded log in `data`, and no store, so the node opens its
/// embedded one there; `nats://…` (or `tls://…`) the NATS JetStream log on that server and
/// NATS KV over the same connection (every node on the server shares it); `kafka://…` the
/// Kafka log on those brokers, and the embedded store in `data` (Kafka has none).
pub async fn open(
    backend: &str,
    data: &Path,
) -> anyhow::Result<(SharedLog, Option<Arc<dyn weir_kv::KeyValue>>)> {
    match backend
        .split_once("://")
        .map_or(backend, |(scheme, _)| scheme)
    {
        "embedded" => {
            let log =
                weir_log_embedded::open_shared(data, weir_log_embedded::LogOptions::default())
                    .await
                    .with_context(|| {
                        format!("cannot open the embedded log in {}", data.display())
                    })?;
            Ok((log, None))
        }
        "nats" | "tls" => {
            let log = weir_log_nats::NatsLog::open(weir_log_nats::NatsOptions::from_url(backend)?)
                .await
                .with_context(|| format!("cannot open the NATS JetStream log at {backend}"))?;
            let kv = weir_log_nats::NatsKv::on(&log);
            Ok((Arc::new(log), Some(Arc::new(kv))))
        }
        "kafka" => {
            let log =
                weir_log_kafka::KafkaLog::open(weir_log_kafka::KafkaOptions::from_url(backend)?)
                    .await
                    .with_context(|| format!("cannot open the Kafka log at {backend}"))?;
            Ok((Arc::new(log), None))
        }
        other => bail!(
            "unknown backend \"{other}\"; use embedded (the default), nats://HOST:PORT[/PREFIX][?sync=always&replicas=N] or kafka://HOST:PORT[,HOST:PORT…][/PREFIX][?replicas=N]"
        ),
    }
}
