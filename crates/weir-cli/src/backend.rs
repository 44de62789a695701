//! `--backend`: which member of the log family a node runs on, picked from its URL.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use weir_log::SharedLog;

/// The log `backend` names, and the key-value store a node on it uses. `embedded` (the
/// default) opens the embedded log in `data` (`embedded?write_ahead=true` with its
/// write-ahead file, see [`embedded_options`]), and no store, so the node opens its
/// embedded one there; `nats://…` (or `tls://…`) the NATS JetStream log on that server and
/// NATS KV over the same connection (every node on the server shares it); `kafka://…` the
/// Kafka log on those brokers, and the embedded store in `data` (Kafka has none).
pub async fn open(
    backend: &str,
    data: &Path,
) -> anyhow::Result<(SharedLog, Option<Arc<dyn weir_kv::KeyValue>>)> {
    match backend.split_once("://").map_or_else(
        || backend.split_once('?').map_or(backend, |(kind, _)| kind),
        |(scheme, _)| scheme,
    ) {
        "embedded" => {
            let opts = embedded_options(backend)?;
            let log = weir_log_embedded::open_shared(data, opts)
                .await
                .with_context(|| format!("cannot open the embedded log in {}", data.display()))?;
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
            "unknown backend \"{other}\"; use embedded[?write_ahead=true][&commit_delay_us=N] (the default), nats://HOST:PORT[/PREFIX][?sync=always&replicas=N] or kafka://HOST:PORT[,HOST:PORT…][/PREFIX][?replicas=N]"
        ),
    }
}

/// The embedded log's options from `embedded[?write_ahead=true|false][&commit_delay_us=N]`:
/// with `write_ahead=true`, partitions under `fsync = "always"` make their small groups
/// durable through one write-ahead file, sharing fdatasyncs across partitions; with
/// `commit_delay_us`, a partition under `always` holds a small group's first append up to
/// that long for others to share its fdatasync (see the README).
pub fn embedded_options(backend: &str) -> anyhow::Result<weir_log_embedded::LogOptions> {
    let mut opts = weir_log_embedded::LogOptions::default();
    let Some((_, query)) = backend.split_once('?') else {
        return Ok(opts);
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("write_ahead", "true")) => opts.write_ahead = true,
            Some(("write_ahead", "false")) => opts.write_ahead = false,
            Some(("commit_delay_us", us)) => {
                let max = weir_log_embedded::MAX_COMMIT_DELAY.as_micros();
                match us.parse::<u64>() {
                    Ok(us) if u128::from(us) <= max => {
                        opts.commit_delay = std::time::Duration::from_micros(us);
                    }
                    _ => bail!(
                        "commit_delay_us of the embedded backend \"{backend}\" must be a whole number of microseconds from 0 to {max}, not \"{us}\""
                    ),
                }
            }
            _ => bail!(
                "unknown setting \"{pair}\" of the embedded backend \"{backend}\"; it takes write_ahead=true|false and commit_delay_us=N"
            ),
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_backend_takes_write_ahead_and_refuses_other_settings() {
        assert!(!embedded_options("embedded").unwrap().write_ahead);
        assert!(
            embedded_options("embedded?write_ahead=true")
                .unwrap()
                .write_ahead
        );
        assert!(
            !embedded_options("embedded?write_ahead=false")
                .unwrap()
                .write_ahead
        );
        let error = embedded_options("embedded?write_ahead=yes").unwrap_err();
        assert!(error.to_string().contains("write_ahead=true"), "{error}");
        assert!(embedded_options("embedded?sync=always").is_err());
    }

    #[test]
    fn the_embedded_backend_takes_a_commit_delay_up_to_its_limit() {
        assert!(embedded_options("embedded").unwrap().commit_delay.is_zero());
        let opts = embedded_options("embedded?write_ahead=true&commit_delay_us=2000").unwrap();
        assert!(opts.write_ahead);
        assert_eq!(opts.commit_delay, std::time::Duration::from_micros(2000));
        let max = embedded_options("embedded?commit_delay_us=100000").unwrap();
        assert_eq!(max.commit_delay, weir_log_embedded::MAX_COMMIT_DELAY);
        for bad in ["100001", "-1", "2ms", ""] {
            let error = embedded_options(&format!("embedded?commit_delay_us={bad}")).unwrap_err();
            assert!(
                error.to_string().contains("from 0 to 100000"),
                "{bad}: {error}"
            );
        }
    }

    /// Reached the way `weir serve --backend` reaches it: the data directory gets the
    /// write-ahead file's directory, and the log works on it.
    #[tokio::test]
    async fn embedded_with_write_ahead_opens_a_log_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (log, kv) = open("embedded?write_ahead=true", dir.path()).await.unwrap();
        assert!(kv.is_none());
        assert_eq!(log.backend(), "embedded");
        let wal = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
        assert_eq!(wal, 1, "one write-ahead file");
    }
}
