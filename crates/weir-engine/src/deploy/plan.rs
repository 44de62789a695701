//! The plan of a `weir deploy`: what a new manifest and its components change on a running
//! node, and what it asks for that only a restart can do. Pure: the node applies the plan.
//!
//! A deploy adds and changes; it does not take away. New topics are created and changed
//! topic settings applied; functions whose component or settings changed are compiled
//! (all before any is swapped in) and activated; new pipelines start; the declared
//! key-value namespaces become the new manifest's. Changing or removing a pipeline,
//! removing a function, changing a topic's partition count or the app's name is refused,
//! and so is a secret or seed file the running app does not already read (they come from
//! the node's environment and disk, which a deploy over the network must not reach).
//! Of the front door, `[http]` and `[limits]` are read at start, so changing them is
//! refused; `[auth]` may change (the gateway checks who asks) but not be removed, and its
//! JWT keys only from sources the running app already reads.

use std::collections::BTreeMap;
use std::path::PathBuf;

use weir_manifest::{FunctionSpec, Manifest};

use crate::{Error, Result};

/// What a deploy does, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Topics to create or whose settings to update.
    pub(crate) topics: Vec<String>,
    /// Functions to compile and activate: new, with a new component, or new settings.
    pub(crate) functions: Vec<String>,
    /// Pipelines to start.
    pub(crate) pipelines: Vec<String>,
    /// Key-value namespaces the running app does not declare yet.
    pub(crate) namespaces: Vec<String>,
    /// Sources to stop: removed, or changed (then also in `sources_started`).
    pub(crate) sources_stopped: Vec<String>,
    /// Sources to start: new, or changed.
    pub(crate) sources_started: Vec<String>,
    /// Schedules to stop: removed, or changed (then also in `schedules_started`).
    pub(crate) schedules_stopped: Vec<String>,
    /// Schedules to start: new, or changed.
    pub(crate) schedules_started: Vec<String>,
    /// Sinks to stop: removed, or changed (then also in `sinks_started`).
    pub(crate) sinks_stopped: Vec<String>,
    /// Sinks to start: new, or changed.
    pub(crate) sinks_started: Vec<String>,
}

/// Plan the move from `current` (the running app, if any) to `next`. `active` holds the
/// active version of each running function, `incoming` the version of each component
/// sent (the 12-hex content hash). Every function of `next` needs a component.
pub(crate) fn plan(
    current: Option<&Manifest>,
    next: &Manifest,
    active: &BTreeMap<String, String>,
    incoming: &BTreeMap<String, String>,
) -> Result<Plan> {
    let missing: Vec<_> = next
        .functions
        .keys()
        .filter(|f| !incoming.contains_key(*f))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidDeploy {
            reason: format!(
                "no component for function(s) {missing:?}; send every function the manifest declares"
            ),
        });
    }
    let extra: Vec<_> = incoming
        .keys()
        .filter(|f| !next.functions.contains_key(*f))
        .cloned()
        .collect();
    if !extra.is_empty() {
        return Err(Error::InvalidDeploy {
            reason: format!(
                "component(s) for {extra:?}, which the manifest does not declare; declare them under [functions.<name>]"
            ),
        });
    }

    let empty =
        Manifest::from_toml_str("", std::path::Path::new("")).expect("an empty manifest is valid");
    let has_app = current.is_some();
    let current = current.unwrap_or(&empty);
    let mut refused = Vec::new();
    if has_app && current.app.name != next.app.name {
        refused.push(format!(
            "the app is {:?}, not {:?}",
            current.app.name, next.app.name
        ));
    }
    if has_app && current.app.backend != next.app.backend {
        refused.push(format!(
            "[app] backend changes from {:?} to {:?}; a node's log is chosen when it starts, so restart it with the new weir.toml",
            current.app.backend, next.app.backend
        ));
    }
    for (name, spec) in &current.pipelines {
        match next.pipelines.get(name) {
            None => refused.push(format!("pipeline {name:?} is removed")),
            Some(new) if new != spec => refused.push(format!("pipeline {name:?} changes")),
            Some(_) => {}
        }
    }
    if current.views != next.views {
        refused.push(
            "[views] changes; views start with the node, so restart it with the new weir.toml"
                .to_owned(),
        );
    }
    if crate::jobs::jobs_view(current) != crate::jobs::jobs_view(next) {
        refused.push(
            "the job routes or their pipelines' `to` or dead-letter topics change; the jobs view starts with the node, so restart it with the new weir.toml".to_owned(),
        );
    }
    if current.entities != next.entities {
        refused.push(
            "[entities] changes; entity types start with the node, so restart it with the new weir.toml".to_owned(),
        );
    }
    for name in current.functions.keys() {
        if !next.functions.contains_key(name) {
            refused.push(format!("function {name:?} is removed"));
        }
    }
    // Secrets and seeds are read from the node's own environment and disk. A deploy comes
    // over the network, so it may only keep the sources the running app already reads;
    // otherwise anyone who can deploy could read any file or variable of the node.
    for (name, spec) in &next.functions {
        let running = current.functions.get(name).map(|f| &f.secrets);
        for (key, source) in &spec.secrets {
            if running.and_then(|s| s.get(key)) != Some(source) {
                refused.push(format!(
                    "function {name:?} reads secret {key:?} from a source the running app does not; secrets come from the node's environment and files, so only a restart with the new weir.toml can add or change one"
                ));
            }
        }
    }
    for (namespace, spec) in &next.keyvalue {
        let running = current.keyvalue.get(namespace).map(|k| &k.seed);
        if spec.seed.is_some() && running != Some(&spec.seed) {
            refused.push(format!(
                "key-value namespace {namespace:?} has a seed file the running app does not read; load the data with `weir kv load` or restart with the new weir.toml"
            ));
        }
    }
    // The front door is read at start: TLS, CORS and limits need a restart. Auth may
    // change (the gateway lets only the built-in admin role do it) but not be removed, and
    // its JWT keys, like secrets, only from sources the running app already reads.
    if has_app {
        if current.http != next.http {
            refused.push("[http] changes (TLS and CORS are set up at start)".to_owned());
        }
        if current.limits != next.limits {
            refused.push("[limits] changes (limits are set up at start)".to_owned());
        }
        if current.auth.is_some() && next.auth.is_none() {
            refused.push("[auth] is removed; a deploy cannot open the API".to_owned());
        }
    }
    let running_jwt = current.auth.as_ref().and_then(|a| a.jwt.as_ref());
    if let Some(jwt) = next.auth.as_ref().and_then(|a| a.jwt.as_ref()) {
        let same = |read: &dyn Fn(&weir_manifest::JwtSpec) -> bool| running_jwt.is_some_and(read);
        if jwt.secret.is_some() && !same(&|r| r.secret == jwt.secret) {
            refused.push("[auth.jwt] reads its secret from a source the running app does not; only a restart with the new weir.toml can change it".to_owned());
        }
        if jwt.public_key.is_some() && !same(&|r| r.public_key == jwt.public_key) {
            refused.push("[auth.jwt] reads a public key file the running app does not; only a restart with the new weir.toml can change it".to_owned());
        }
        if jwt.jwks.is_some() && !same(&|r| r.jwks == jwt.jwks) {
            refused.push("[auth.jwt] reads a JWKS the running app does not; only a restart with the new weir.toml can change it".to_owned());
        }
    }
    let mut plan = Plan::default();
    for (name, spec) in &next.topics {
        match current.topics.get(name) {
            Some(old) if old.partitions != spec.partitions => refused.push(format!(
                "topic {name:?} changes from {} to {} partitions",
                old.partitions, spec.partitions
            )),
            Some(old) if old == spec => {}
            _ => plan.topics.push(name.clone()),
        }
    }
    if !refused.is_empty() {
        return Err(Error::DeployRefused { reasons: refused });
    }

    for (name, spec) in &next.functions {
        let settings_changed = current
            .functions
            .get(name)
            .is_none_or(|old| settings(old) != settings(spec));
        let content_changed = active.get(name) != incoming.get(name);
        if settings_changed || content_changed {
            plan.functions.push(name.clone());
        }
    }
    plan.pipelines = next
        .pipelines
        .keys()
        .filter(|p| !current.pipelines.contains_key(*p))
        .cloned()
        .collect();
    // A source restarts when it changes: at-least-once delivery makes that safe.
    plan.sources_stopped = current
        .sources
        .iter()
        .filter(|(name, spec)| next.sources.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    plan.sources_started = next
        .sources
        .iter()
        .filter(|(name, spec)| current.sources.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    // A schedule restarts when it changes: its last tick is committed with the tick.
    plan.schedules_stopped = current
        .schedules
        .iter()
        .filter(|(name, spec)| next.schedules.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    plan.schedules_started = next
        .schedules
        .iter()
        .filter(|(name, spec)| current.schedules.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    plan.sinks_stopped = current
        .sinks
        .iter()
        .filter(|(name, spec)| next.sinks.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    plan.sinks_started = next
        .sinks
        .iter()
        .filter(|(name, spec)| current.sinks.get(*name) != Some(*spec))
        .map(|(name, _)| name.clone())
        .collect();
    plan.namespaces = next
        .keyvalue
        .keys()
        .filter(|ns| !current.keyvalue.contains_key(*ns))
        .cloned()
        .collect();
    Ok(plan)
}

/// A function's settings: everything but where its component came from.
fn settings(spec: &FunctionSpec) -> FunctionSpec {
    FunctionSpec {
        source: PathBuf::new(),
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests;
