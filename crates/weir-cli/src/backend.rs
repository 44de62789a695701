//! `--backend`: which member of the log family a node runs on, picked from its URL.

use std::path::Path;

use anyhow::{Context, bail};
use weir_log::SharedLog;

/// The log `backend` names: `embedded` (the default) opens the embedded log in `data`;
/// `nats://…` (or `tls://…`) the NATS JetStream log on that server; `kafka://…` names a
/// backend that is not built yet.
pub async fn open(backend: &str, data: &Path) -> anyhow::Result<SharedLog> {
    match backend
        .split_once("://")
        .map_or(backend, |(scheme, _)| scheme)
    {
        "embedded" => {
            weir_log_embedded::open_shared(data, weir_log_embedded::LogOptions::default())
                .await
                .with_context(|| format!("cannot open the embedded log in {}", data.display()))
        }
        "nats" | "tls" => weir_log_nats::open_shared(backend)
            .await
            .with_context(|| format!("cannot open the NATS JetStream log at {backend}")),
        "kafka" => bail!(
            "the {backend} backend is not built yet; run with --backend embedded (the default)"
        ),
        other => bail!(
            "unknown backend \"{other}\"; use embedded (the default), nats://HOST:PORT[/PREFIX][?sync=always&replicas=N] or kafka://HOST:PORT"
        ),
    }
}

/// The log `backend` names, and the key-value store a node on it uses: NATS KV on the same
/// server and connection for a NATS backend (every node on the server shares it); none
/// otherwise, so the node opens its embedded store in its data directory.
pub async fn open_with_kv(
    backend: &str,
    data: &Path,
) -> anyhow::Result<(SharedLog, Option<std::sync::Arc<dyn weir_kv::KeyValue>>)> {
    if !(backend.starts_with("nats://") || backend.starts_with("tls://")) {
        return Ok((open(backend, data).await?, None));
    }
    let log = weir_log_nats::NatsLog::open(weir_log_nats::NatsOptions::from_url(backend)?)
        .await
        .with_context(|| format!("cannot open the NATS JetStream log at {backend}"))?;
    let kv = weir_log_nats::NatsKv::on(&log);
    Ok((std::sync::Arc::new(log), Some(std::sync::Arc::new(kv))))
}
