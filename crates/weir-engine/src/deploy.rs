//! Deploys: a new version of one function, a rollback, or a new version of the whole app
//! (`weir deploy`), applied as the pure [`plan`] says.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};

use weir_manifest::Manifest;

use crate::keyvalue::seed_namespace;
use crate::topics::topic_spec;
use crate::{Deployed, Error, FunctionInfo, Node, Result, blocking, registry};

mod plan;
pub(crate) mod shared;

/// What `Node::deploy_app` did, for `weir deploy`.
#[derive(Debug, Clone)]
pub struct AppDeployed {
    pub app: String,
    /// Every function of the app; `previous` is none for a new one, and equals `version`
    /// for one that did not change (or changed only its settings, see `reconfigured`).
    pub functions: Vec<FunctionChange>,
    /// Topics created or whose settings were updated.
    pub topics: Vec<String>,
    /// Pipelines started.
    pub pipelines: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FunctionChange {
    pub name: String,
    pub previous: Option<String>,
    pub version: String,
    /// Whether it was reloaded (a new component or new settings).
    pub reloaded: bool,
}

impl Node {
    /// Parses and validates a manifest as [`Node::deploy_app`] would, without applying it:
    /// relative paths resolve against the running app's directory.
    pub fn parse_app(&self, manifest_text: &str) -> Result<Manifest> {
        Ok(Manifest::from_toml_str(manifest_text, &self.base_dir)?)
    }

    /// The running app's `[auth]`, if it has one.
    pub fn auth_spec(&self) -> Option<weir_manifest::AuthSpec> {
        self.manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(|m| m.auth.clone())
    }

    /// Every function with its active version and deployment history.
    pub fn functions(&self) -> Vec<FunctionInfo> {
        self.registry.list()
    }

    /// Deploy `wasm` as the new version of the app's function `name`, with its current
    /// settings. It is compiled first: a module that does not compile is an error and the
    /// active version keeps serving. Pipelines switch at their next batch. On a fleet the
    /// version is shared first, and every node activates it.
    #[tracing::instrument(skip(self, wasm), err, fields(bytes = wasm.len()))]
    pub async fn deploy_function(&self, name: &str, wasm: Vec<u8>) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let wasm = Arc::new(wasm);
        let (registry, fname, bytes) = (self.registry.clone(), name.to_owned(), wasm.clone());
        let (spec, function) = blocking(move || {
            let spec = registry
                .spec(&fname)
                .ok_or_else(|| registry.unknown(&fname))?;
            let function = registry.compile(&fname, &spec, &bytes)?;
            Ok((spec, function))
        })
        .await?;
        self.share_function(name, &wasm, registry::Origin::Deploy)
            .await?;
        let (registry, name) = (self.registry.clone(), name.to_owned());
        blocking(move || registry.activate(&name, &spec, function, &wasm)).await
    }

    /// Make a kept version of `name` active again: `to`, or the one before the active one.
    /// On a fleet it is shared first, and every node activates it.
    #[tracing::instrument(skip(self), err)]
    pub async fn rollback_function(&self, name: &str, to: Option<String>) -> Result<Deployed> {
        let _one = self.deploying.lock().await;
        let (registry, fname) = (self.registry.clone(), name.to_owned());
        let (target, wasm) = blocking(move || {
            let target = registry.rollback_target(&fname, to.as_deref())?;
            let wasm = registry.read_stored(&fname, &target)?;
            Ok((target, wasm))
        })
        .await?;
        self.share_function(name, &wasm, registry::Origin::Rollback)
            .await?;
        let (registry, name) = (self.registry.clone(), name.to_owned());
        blocking(move || registry.rollback(&name, Some(&target))).await
    }

    /// Apply a new version of the app without a restart (`weir deploy`): `manifest_text`
    /// is its `weir.toml` (relative paths resolve against the running app's directory),
    /// `components` each declared function's wasm. Every changed function is compiled
    /// before anything changes; then new topics are created, changed functions swapped
    /// in and new pipelines started. What needs a restart is refused
    /// ([`Error::DeployRefused`]).
    /// On a fleet the deploy is shared once everything compiled and its topics exist, and
    /// every node started from the same `weir.toml` applies it.
    #[tracing::instrument(skip_all, err)]
    pub async fn deploy_app(
        &self,
        manifest_text: &str,
        components: BTreeMap<String, Vec<u8>>,
    ) -> Result<AppDeployed> {
        let _one = self.deploying.lock().await;
        self.apply_app(manifest_text, components, None, true).await
    }

    /// [`Node::deploy_app`] with the app's schema documents sent along (`weir deploy`
    /// sends them), instead of read from the files `[schemas]` names on this node. Every
    /// version of every declared type must be there.
    pub async fn deploy_app_with_schemas(
        &self,
        manifest_text: &str,
        components: BTreeMap<String, Vec<u8>>,
        schemas: crate::SchemaDocuments,
    ) -> Result<AppDeployed> {
        let _one = self.deploying.lock().await;
        self.apply_app(manifest_text, components, Some(schemas), true)
            .await
    }

    /// [`Node::deploy_app`] with the deploy lock held; `share`: put it in the fleet's
    /// records (a deploy made here, not one applied from them, whose schemas the deploying
    /// node registered in the log's store already).
    pub(crate) async fn apply_app(
        &self,
        manifest_text: &str,
        components: BTreeMap<String, Vec<u8>>,
        schemas: Option<crate::SchemaDocuments>,
        share: bool,
    ) -> Result<AppDeployed> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let next = Manifest::from_toml_str(manifest_text, &self.base_dir)?;
        // The schemas' compatibility before anything changes, against what the fleet
        // registered up to now.
        self.schemas.catch_up(&self.log).await?;
        let schemas = match (share, schemas) {
            (false, _) => None,
            (true, Some(documents)) => {
                for (ty, spec) in &next.schemas {
                    let sent = documents.get(ty).map_or(0, Vec::len);
                    if sent != spec.versions.len() {
                        return Err(Error::InvalidDeploy {
                            reason: format!(
                                "schema {ty:?} has {} versions in weir.toml and {sent} were sent; send every version file (weir deploy does)",
                                spec.versions.len()
                            ),
                        });
                    }
                }
                Some(documents)
            }
            (true, None) => {
                let m = next.clone();
                Some(blocking(move || crate::schemas::read_documents(&m)).await?)
            }
        };
        if let Some(documents) = &schemas {
            self.schemas.check_app(&next, documents)?;
        }
        let current = self
            .manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let active: BTreeMap<String, String> = self
            .registry
            .list()
            .into_iter()
            .map(|f| (f.name, f.version))
            .collect();
        let incoming: BTreeMap<String, String> = components
            .iter()
            .map(|(name, wasm)| (name.clone(), registry::sha256_hex(wasm)[..12].to_owned()))
            .collect();
        let plan = plan::plan(current.as_ref(), &next, &active, &incoming)?;

        // Compile everything first: all or nothing.
        let components = Arc::new(components);
        let mut compiled = Vec::new();
        for name in &plan.functions {
            let spec = next.functions[name].clone();
            let (registry, name, components) =
                (self.registry.clone(), name.clone(), components.clone());
            let function =
                blocking(move || registry.compile(&name, &spec, &components[&name])).await?;
            compiled.push(function);
        }

        // Routes (their functions' worlds, webhooks' secrets) before anything changes.
        let routes = {
            let named: Vec<(&str, &weir_wasm::Function)> = plan
                .functions
                .iter()
                .map(String::as_str)
                .zip(compiled.iter())
                .collect();
            self.route_table(Some(&next), &named)?
        };
        // Upcaster functions: declared and handlers, in the versions this deploy makes
        // active.
        crate::schemas::check_upcaster_functions(&next, |name| {
            match plan.functions.iter().position(|f| f == name) {
                Some(i) => Some(compiled[i].world()),
                None => self.registry.active(name).map(|(_, f)| f.world()),
            }
        })?;

        let mut topics = Vec::new();
        for name in &plan.topics {
            self.log
                .create_topic(name, &topic_spec(&next.topics[name]))
                .await?;
            topics.push(name.clone());
        }
        for namespace in &plan.namespaces {
            if let Some(seed) = &next.keyvalue[namespace].seed {
                if seed.exists() {
                    seed_namespace(&self.kv, namespace, seed).await?;
                } else {
                    tracing::warn!(namespace, seed = %seed.display(), "the seed file is not on this node; fill the namespace with `weir kv load`");
                }
            }
        }
        // A sink's secrets come from this node's environment and files: a missing one
        // refuses the deploy before anything changes.
        for name in &plan.sinks_started {
            crate::sinks::open(name, &next.sinks[name])?;
        }
        match &schemas {
            Some(documents) => {
                self.schemas
                    .register_app(&self.log, &next, documents)
                    .await?
            }
            None => self.schemas.set_modes(&self.log, &next).await?,
        }
        if share {
            // Each changed function's record first, so a node whose app already declares
            // it switches even if it never applies the app record.
            for name in &plan.functions {
                self.share_function(name, &components[name], registry::Origin::Deploy)
                    .await?;
            }
            self.share_app(manifest_text, &components).await?;
        }
        let mut reloaded = BTreeMap::new();
        for (name, function) in plan.functions.iter().zip(compiled) {
            let spec = next.functions[name].clone();
            let (registry, fname, components) =
                (self.registry.clone(), name.clone(), components.clone());
            let deployed =
                blocking(move || registry.activate(&fname, &spec, function, &components[&fname]))
                    .await?;
            reloaded.insert(name.clone(), deployed);
        }
        *self.manifest.lock().unwrap_or_else(PoisonError::into_inner) = Some(next.clone());
        self.schemas.set_policies(&next, &self.registry);
        self.swap_routes(routes);
        for name in &plan.pipelines {
            self.start_pipeline(name, &next.pipelines[name]).await?;
        }
        // A changed sink commits what it delivered, then starts again from there.
        for name in &plan.sinks_stopped {
            self.sinks.stop(name).await;
        }
        for name in &plan.sinks_started {
            self.start_sink(name, &next.sinks[name]).await?;
        }
        for name in plan.sources_stopped.iter().chain(&plan.schedules_stopped) {
            self.sources.stop(name).await;
        }
        for name in &plan.schedules_started {
            self.start_schedule(&next.app.name, name, &next.schedules[name])
                .await?;
        }
        for name in &plan.sources_started {
            let before = current
                .as_ref()
                .and_then(|m| m.sources.get(name))
                .map(|s| s.subscribe.clone())
                .unwrap_or_default();
            self.start_source(&next.app.name, name, &next.sources[name], before)
                .await?;
        }

        let functions = next
            .functions
            .keys()
            .map(|name| match reloaded.remove(name) {
                Some(d) => FunctionChange {
                    name: d.name,
                    previous: d.previous,
                    version: d.version,
                    reloaded: true,
                },
                None => FunctionChange {
                    name: name.clone(),
                    previous: active.get(name).cloned(),
                    version: active.get(name).cloned().unwrap_or_default(),
                    reloaded: false,
                },
            })
            .collect();
        tracing::info!(app = %next.app.name, ?topics, pipelines = ?plan.pipelines, sources_stopped = ?plan.sources_stopped, sources_started = ?plan.sources_started, "app deployed");
        Ok(AppDeployed {
            app: next.app.name.clone(),
            functions,
            topics,
            pipelines: plan.pipelines,
        })
    }
}
