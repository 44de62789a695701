//! Deploys shared by a fleet ([`weir_log::SharedDeploys`]): a deploy or rollback sent to
//! any node reaches every node on the backend.
//!
//! Two kinds of record, JSON, each under its own key:
//! - `function.NAME`: the function's active version for the fleet, the SHA-256 of its
//!   component (stored under that digest beside the records), the digest of the manifest
//!   `source` it belongs to, and how it became active.
//! - `app`: the last `weir deploy`: its manifest as sent, the components it named, and the
//!   digest of the `weir.toml` the deploying node started from.
//!
//! **Architecture Invariant:** the records are the fleet's truth and every node converges
//! to them. A node that deploys compiles first (a component that does not compile is
//! refused and nothing is shared), stores the component, then the record, then activates
//! it itself; every node watches the records and activates what differs from what it runs
//! (fetching the component from its own kept versions or the backend), so a node that
//! missed a change (down, disconnected, deploying at the same moment) applies the last
//! record when it watches again. The last record put wins. A node starting compares each
//! function's record with its manifest: a `source` digest the fleet has run before (the
//! record's, or an older release's) means the fleet may have deployed over it, so the
//! node runs the record's version; one it never ran is a new release of the app (a
//! rolling upgrade), which the node publishes for the fleet. So a node restarted from an
//! older release mid-upgrade follows the newer one instead of turning the fleet back.
//! An `app` record is applied only by nodes that started from the same `weir.toml`
//! as the node that deployed it: a node started from another one runs its own.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use weir_log::SharedDeploys;

use crate::registry::{Origin, sha256_hex};
use crate::{Error, Node, Result, blocking};

const FORMAT: u32 = 1;
const APP_KEY: &str = "app";
const FUNCTION_PREFIX: &str = "function.";
/// Manifest `source` digests a function record remembers.
const KEPT_RELEASES: usize = 50;
/// How long a node waits before it tries again a record it could not apply.
const RETRY_APPLY: Duration = Duration::from_secs(5);

/// `function.NAME`: the fleet's active version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FunctionRecord {
    pub(crate) format: u32,
    /// The first 12 hex digits of `sha256`, as `Function::version`.
    pub(crate) version: String,
    /// The component's SHA-256, the name it is stored under.
    pub(crate) sha256: String,
    /// The digest of the manifest `source` this version was deployed over.
    pub(crate) manifest_sha256: Option<String>,
    /// The digests of every manifest `source` the fleet has run, oldest first (at most
    /// [`KEPT_RELEASES`]): a node starting from one of them is behind, not new.
    #[serde(default)]
    pub(crate) releases: Vec<String>,
    pub(crate) origin: Origin,
    /// The member that made it active.
    pub(crate) by: String,
}

/// `app`: the fleet's last `weir deploy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AppRecord {
    pub(crate) format: u32,
    /// The manifest as sent.
    pub(crate) manifest: String,
    /// The SHA-256 of the `weir.toml` the deploying node started from.
    pub(crate) started_from: Option<String>,
    /// Each component sent, by function name: its SHA-256.
    pub(crate) components: BTreeMap<String, String>,
    pub(crate) by: String,
}

fn unavailable(e: weir_log::Error) -> Error {
    Error::Log(e)
}

fn json<T: Serialize>(record: &T) -> Bytes {
    serde_json::to_vec(record)
        .expect("a deploy record serializes")
        .into()
}

impl Node {
    /// This node's id in the fleet, for the records it puts.
    fn member(&self) -> String {
        self.units
            .fleet
            .as_ref()
            .map_or_else(String::new, |f| f.me.id.clone())
    }

    /// Shares `wasm` as the active version of `name` (a deploy or rollback this node is
    /// making): the component, then the record. Nothing on a node without a fleet.
    pub(crate) async fn share_function(
        &self,
        name: &str,
        wasm: &[u8],
        origin: Origin,
    ) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let key = format!("{FUNCTION_PREFIX}{name}");
        let before = self.function_record(shared.as_ref(), &key).await?;
        let sha256 = sha256_hex(wasm);
        shared
            .put_component(&sha256, Bytes::copy_from_slice(wasm))
            .await
            .map_err(unavailable)?;
        let manifest_sha256 = self.registry.recorded_manifest_sha(name)?;
        let mut releases = before.map(|r| r.releases).unwrap_or_default();
        if let Some(sha) = &manifest_sha256
            && !releases.contains(sha)
        {
            releases.push(sha.clone());
            let excess = releases.len().saturating_sub(KEPT_RELEASES);
            releases.drain(..excess);
        }
        let record = FunctionRecord {
            format: FORMAT,
            version: sha256[..12].to_owned(),
            manifest_sha256,
            releases,
            sha256,
            origin,
            by: self.member(),
        };
        shared
            .put_record(&key, json(&record))
            .await
            .map_err(unavailable)
    }

    /// The function record `key`, if there is one this weir reads.
    async fn function_record(
        &self,
        shared: &dyn SharedDeploys,
        key: &str,
    ) -> Result<Option<FunctionRecord>> {
        let record = shared.record(key).await.map_err(unavailable)?;
        Ok(record.and_then(|r| serde_json::from_slice(&r).ok()))
    }

    /// Shares a `weir deploy` this node is applying: its components, then the record.
    pub(crate) async fn share_app(
        &self,
        manifest: &str,
        components: &BTreeMap<String, Vec<u8>>,
    ) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let mut digests = BTreeMap::new();
        for (name, wasm) in components {
            let sha256 = sha256_hex(wasm);
            shared
                .put_component(&sha256, Bytes::copy_from_slice(wasm))
                .await
                .map_err(unavailable)?;
            digests.insert(name.clone(), sha256);
        }
        let record = AppRecord {
            format: FORMAT,
            manifest: manifest.to_owned(),
            started_from: self.started_from.clone(),
            components: digests,
            by: self.member(),
        };
        shared
            .put_record(APP_KEY, json(&record))
            .await
            .map_err(unavailable)
    }

    /// At start, on a fleet: each function whose record is missing, or whose manifest
    /// `source` the fleet has never run, is published (a first node, or a new release);
    /// the others are left to [`follow`], which activates the record's version (so a node
    /// restarted from an older release during a rolling upgrade runs the newer one).
    pub(crate) async fn share_at_start(&self) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        for info in self.registry.list() {
            let key = format!("{FUNCTION_PREFIX}{}", info.name);
            let record = self.function_record(shared.as_ref(), &key).await?;
            let manifest_sha = self.registry.recorded_manifest_sha(&info.name)?;
            let known = record.is_some_and(|r| {
                r.manifest_sha256 == manifest_sha
                    || manifest_sha
                        .as_ref()
                        .is_some_and(|m| r.releases.contains(m))
            });
            if known {
                continue;
            }
            let wasm = self.registry.read_stored(&info.name, &info.version)?;
            tracing::info!(function = %info.name, version = %info.version, "this node's manifest is new to the fleet: its version is shared");
            self.share_function(&info.name, &wasm, Origin::Manifest)
                .await?;
        }
        Ok(())
    }

    /// Applies one record another node (or this one) put.
    async fn apply_record(&self, key: &str, value: &[u8]) -> Result<()> {
        if let Some(name) = key.strip_prefix(FUNCTION_PREFIX) {
            let record: FunctionRecord = serde_json::from_slice(value).map_err(|e| {
                Error::Log(weir_log::Error::new(
                    weir_log::ErrorKind::Failed,
                    format!("the deploy record {key} is not one this weir reads: {e}"),
                ))
            })?;
            return self.adopt_function(name, record).await;
        }
        if key == APP_KEY {
            let record: AppRecord = serde_json::from_slice(value).map_err(|e| {
                Error::Log(weir_log::Error::new(
                    weir_log::ErrorKind::Failed,
                    format!("the deploy record {key} is not one this weir reads: {e}"),
                ))
            })?;
            return self.adopt_app(record).await;
        }
        Ok(())
    }

    /// The component stored as `sha256`: from this node's kept versions of `name`, or the
    /// fleet's store.
    async fn component(&self, name: &str, sha256: &str) -> Result<Vec<u8>> {
        if let Some(wasm) = self.registry.stored(name, &sha256[..12.min(sha256.len())])
            && sha256_hex(&wasm) == sha256
        {
            return Ok(wasm);
        }
        let shared = self.shared.as_ref().expect("records come from a fleet");
        let wasm = shared
            .component(sha256)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Error::Log(weir_log::Error::new(
                    weir_log::ErrorKind::Unavailable,
                    format!(
                        "component {sha256} of function \"{name}\" is not in the fleet's store"
                    ),
                ))
            })?;
        if sha256_hex(&wasm) != sha256 {
            return Err(Error::Log(weir_log::Error::new(
                weir_log::ErrorKind::Failed,
                format!("component {sha256} of function \"{name}\" does not match its digest"),
            )));
        }
        Ok(wasm.to_vec())
    }

    async fn adopt_function(&self, name: &str, record: FunctionRecord) -> Result<()> {
        let _one = self.deploying.lock().await;
        if self.registry.spec(name).is_none() {
            // Not in the app this node runs (yet): the `app` record brings it.
            return Ok(());
        }
        if self
            .registry
            .active(name)
            .is_some_and(|(_, f)| f.version() == record.version)
        {
            return Ok(());
        }
        let wasm = self.component(name, &record.sha256).await?;
        let (registry, fname) = (self.registry.clone(), name.to_owned());
        let deployed = blocking(move || {
            let spec = registry
                .spec(&fname)
                .ok_or_else(|| registry.unknown(&fname))?;
            let function = registry.compile(&fname, &spec, &wasm)?;
            registry.adopt(
                &fname,
                function,
                &wasm,
                record.origin,
                record.manifest_sha256,
            )
        })
        .await?;
        tracing::info!(function = name, version = %deployed.version, previous = ?deployed.previous, by = %record.by, "the fleet's version of the function is active");
        Ok(())
    }

    async fn adopt_app(&self, record: AppRecord) -> Result<()> {
        let running = self
            .manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|m| sha256_hex(m.text.as_bytes()));
        if running.as_deref() == Some(&sha256_hex(record.manifest.as_bytes())) {
            return Ok(());
        }
        if record.started_from != self.started_from {
            tracing::info!(by = %record.by, "the fleet's last deploy was made on a node started from another weir.toml; this node runs its own");
            return Ok(());
        }
        // The function records say which version runs (a deploy or a release may have
        // followed this one); the app record only which functions and settings.
        let shared = self.shared.as_ref().expect("records come from a fleet");
        let mut components = BTreeMap::new();
        for (name, sha256) in &record.components {
            let key = format!("{FUNCTION_PREFIX}{name}");
            let sha256 = match self.function_record(shared.as_ref(), &key).await? {
                Some(function) => function.sha256,
                None => sha256.clone(),
            };
            components.insert(name.clone(), self.component(name, &sha256).await?);
        }
        let _one = self.deploying.lock().await;
        let deployed = self
            .apply_app(&record.manifest, components, None, false)
            .await?;
        tracing::info!(app = %deployed.app, by = %record.by, "the fleet's last deploy is applied");
        Ok(())
    }
}

/// Follows the fleet's deploy records until `cancel`: each record as the watch delivers
/// it (every current one first, then each change) is applied; a watch that ends (the
/// backend lost) is started again a second later, and one whose record could not be
/// applied [`RETRY_APPLY`] later, which delivers every record again.
pub(crate) async fn follow(
    node: Weak<Node>,
    shared: Arc<dyn SharedDeploys>,
    cancel: CancellationToken,
) {
    loop {
        let mut retry = Duration::from_secs(1);
        match shared.watch().await {
            Ok(mut watch) => loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = watch.next() => next,
                };
                let Some(next) = next else { break };
                let (key, value) = match next {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::warn!(error = %e, "the watch of the fleet's deploys failed; watching again");
                        break;
                    }
                };
                let Some(node) = node.upgrade() else { return };
                if let Err(e) = node.apply_record(&key, &value).await {
                    // Watching again delivers every record again: the apply is retried.
                    tracing::warn!(record = %key, error = %e, "cannot apply the fleet's deploy; trying again in a few seconds");
                    retry = RETRY_APPLY;
                    break;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the fleet's deploys; trying again every second")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
    }
}
