//! Event contracts on a node: the registry of event schemas, kept in the log's
//! `weir.schemas` topic, and the check of every published event against it.
//!
//! The store is one partition of JSON records, one per event type (the record's key):
//! `{"format": 1, "compatibility": "backward", "versions": [schema 1, schema 2, ...]}`.
//! The newest record of a type is the whole of what is registered for it, so compaction
//! keeps what matters. Every node reads the topic at start and follows it, so a version
//! registered on one node of a fleet reaches every node.
//!
//! **Architecture Invariant:** a node registers one version at a time: it reads the store
//! to its end, checks the new version against what it read ([`Registry::prepare`]), and
//! appends the type's new record only if the partition's end is still where it read it
//! (`Expect::End`, where the backend checks it: the embedded log and NATS), so two nodes
//! registering at once cannot both pass a check against a state the other changed. A
//! record read back applies only if it is newer than what the node holds for its type.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use weir_cloudevents::{CloudEvent, Data};
use weir_log::{Expect, Record, TopicSpec};
use weir_manifest::{Manifest, SchemaPolicy};
use weir_schema::{
    Compatibility, Prepared, Registry, Resolved, STORE_TOPIC, Step, Subject, Upcasters,
};
use weir_wasm::{InstancePool, World};

use crate::{Error, Result, SharedLog};

const FORMAT: u32 = 1;
/// How many times a registration is checked again after another node's append.
const MAX_MOVED: u32 = 5;
/// The largest record of the store: every version of a type, under the log's 1 MiB
/// record limit with room for the record's framing.
const MAX_RECORD_BYTES: usize = 1_000_000;
/// Records read from the store per read.
const READ_BATCH: usize = 256;
/// How often a node looks for the store topic before any schema is registered.
const LOOK_FOR_STORE: std::time::Duration = std::time::Duration::from_secs(2);

/// One record of the store: everything registered for one type.
#[derive(Debug, Serialize, Deserialize)]
struct SubjectRecord {
    format: u32,
    compatibility: Compatibility,
    versions: Vec<Value>,
}

/// What the node holds: the registry as last read, and where it read up to.
#[derive(Default)]
struct State {
    registry: Arc<Registry>,
    /// The store's offset of the record each type's subject came from.
    applied: BTreeMap<String, u64>,
    /// The next store offset to read.
    next: u64,
    /// Types whose newest record this node cannot read (a newer format, a schema this
    /// build cannot compile): registering one would overwrite what it cannot see.
    unreadable: BTreeMap<String, String>,
    /// The topics whose events must all have a schema (`schema = "required"`): beside
    /// the registry, so that a publish takes both in one read.
    required: Arc<BTreeSet<String>>,
    /// The app's upcasters (`[schemas.<type>.upcast.<N>]`).
    upcasters: Arc<Upcasters>,
    /// Where the functions of function steps are active.
    functions: Option<Arc<crate::registry::Registry>>,
}

/// A node's schemas: see the module docs.
#[derive(Default)]
pub(crate) struct Schemas {
    state: RwLock<State>,
    /// One registration at a time on this node.
    registering: tokio::sync::Mutex<()>,
    /// Warm instances of each upcaster function's active version, shared by every
    /// pipeline, view, replay and read that upcasts (an upcaster keeps no state: it gets
    /// an event and returns its data).
    pools: Mutex<BTreeMap<String, InstancePool>>,
}

/// The schema documents of an app, by type: version N is the Nth.
pub type SchemaDocuments = BTreeMap<String, Vec<Value>>;

impl Schemas {
    /// The registry as it is now, for reads and checks.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .registry
            .clone()
    }

    /// The topics of `manifest` whose events must have a schema, and its upcasters (whose
    /// functions are active in `functions`), from now on.
    pub(crate) fn set_policies(
        &self,
        manifest: &Manifest,
        functions: &Arc<crate::registry::Registry>,
    ) {
        let required = manifest
            .topics
            .iter()
            .filter(|(_, t)| t.schema == SchemaPolicy::Required)
            .map(|(name, _)| name.clone())
            .collect();
        let mut upcasters = Upcasters::default();
        for (ty, spec) in &manifest.schemas {
            for (from, step) in spec.upcasters() {
                upcasters.insert(ty, from, step.clone());
            }
        }
        // Pools of functions no step names any more go (their compiled code with them).
        self.pools
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|name, _| upcasters.functions().any(|f| f == name));
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.required = Arc::new(required);
        state.upcasters = Arc::new(upcasters);
        state.functions = Some(functions.clone());
    }

    /// What upcasting needs, as it is now; `None` when the app has no upcasters (then
    /// events are handed on as written, at no cost).
    pub(crate) fn upcasting(&self) -> Option<Upcasting> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if state.upcasters.is_empty() {
            return None;
        }
        let mut pools = BTreeMap::new();
        if let Some(functions) = &state.functions {
            let mut cached = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            for name in state.upcasters.functions() {
                let Some((_, active)) = functions.active(name) else {
                    continue;
                };
                let pool = match cached.get(name) {
                    Some(pool) if pool.function().is(&active) => pool.clone(),
                    _ => {
                        let pool = active.instances();
                        cached.insert(name.to_owned(), pool.clone());
                        pool
                    }
                };
                pools.insert(name.to_owned(), pool);
            }
        }
        Some(Upcasting {
            registry: state.registry.clone(),
            upcasters: state.upcasters.clone(),
            functions: Arc::new(pools),
        })
    }

    /// The registry and the topics that require a schema, as they are now.
    fn contracts(&self) -> (Arc<Registry>, Arc<BTreeSet<String>>) {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        (state.registry.clone(), state.required.clone())
    }

    /// Checks each event to be published to `topic` against its type's schema (see
    /// [`Registry::resolve`]); the first that fails is the error, naming its index.
    pub(crate) fn check(&self, topic: &str, events: &[CloudEvent]) -> Result<()> {
        let (registry, required) = self.contracts();
        let required = required.contains(topic);
        if registry.is_empty() && !required {
            return Ok(());
        }
        for (index, event) in events.iter().enumerate() {
            check_event(&registry, topic, required, event).map_err(|reason| {
                Error::SchemaRejected {
                    topic: topic.to_owned(),
                    index,
                    ty: event.ty.clone(),
                    reason,
                }
            })?;
        }
        Ok(())
    }

    /// Checks one event bound for `topic` (an entity's): why it breaks the topic's
    /// contract, if it does.
    pub(crate) fn check_one_typed(
        &self,
        topic: &str,
        event: &CloudEvent,
    ) -> std::result::Result<(), SchemaRejection> {
        let (registry, required) = self.contracts();
        let required = required.contains(topic);
        if registry.is_empty() && !required {
            return Ok(());
        }
        check_event(&registry, topic, required, event)
    }

    /// [`Schemas::check_one_typed`] with the reason in words (a source's dead letter).
    pub(crate) fn check_one(
        &self,
        topic: &str,
        event: &CloudEvent,
    ) -> std::result::Result<(), String> {
        self.check_one_typed(topic, event)
            .map_err(|reason| format!("a {:?} event breaks its contract: {reason}", event.ty))
    }

    /// Checks a function's outputs, each against its type's schema and its topic's policy:
    /// why the first that fails does, naming it, for the input's dead letter.
    pub(crate) fn check_outputs(
        &self,
        outputs: &[(String, CloudEvent)],
    ) -> std::result::Result<(), String> {
        let (registry, required) = self.contracts();
        if registry.is_empty() && required.is_empty() {
            return Ok(());
        }
        for (index, (topic, event)) in outputs.iter().enumerate() {
            check_event(&registry, topic, required.contains(topic), event).map_err(|reason| {
                format!(
                    "output {index} ({:?} to {topic:?}) breaks its contract: {reason}",
                    event.ty
                )
            })?;
        }
        Ok(())
    }

    /// Reads the store from where this node stopped to its end (nothing if no schema was
    /// ever registered: the topic is created with the first).
    pub(crate) async fn catch_up(&self, log: &SharedLog) -> Result<()> {
        loop {
            let next = self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .next;
            let records = match log.read(STORE_TOPIC, 0, next, READ_BATCH).await {
                Ok(records) => records,
                Err(e) if e.kind() == weir_log::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            if records.is_empty() {
                return Ok(());
            }
            for record in records {
                self.apply(record.offset, record.key.as_deref(), &record.value);
            }
        }
    }

    /// Applies one record of the store, if it is newer than what is held for its type.
    /// A record this node cannot read is logged and skipped: the others still apply.
    fn apply(&self, offset: u64, key: Option<&[u8]>, value: &[u8]) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.next = state.next.max(offset + 1);
        let Some(ty) = key.and_then(|k| std::str::from_utf8(k).ok()) else {
            tracing::warn!(
                offset,
                "a record of {STORE_TOPIC} has no event type as its key"
            );
            return;
        };
        if state.applied.get(ty).is_some_and(|&at| at >= offset) {
            return;
        }
        let subject = serde_json::from_slice::<SubjectRecord>(value)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                if r.format != FORMAT {
                    return Err(format!(
                        "format {} (this weir reads {FORMAT}); upgrade this node",
                        r.format
                    ));
                }
                Subject::from_documents(ty, r.compatibility, r.versions).map_err(|e| e.to_string())
            });
        state.applied.insert(ty.to_owned(), offset);
        match subject {
            Ok(subject) => {
                Arc::make_mut(&mut state.registry).replace(ty, subject);
                state.unreadable.remove(ty);
            }
            Err(reason) => {
                tracing::error!(offset, ty, %reason, "cannot read the schemas of a type in {STORE_TOPIC}; its events are checked against what this node read before, and it refuses to register versions of it");
                state.unreadable.insert(ty.to_owned(), reason);
            }
        }
    }

    /// Follows the store, applying what other nodes register, until `cancel`. Until the
    /// first schema is registered the topic does not exist; it is looked for every
    /// [`LOOK_FOR_STORE`].
    pub(crate) async fn follow(self: Arc<Self>, log: SharedLog, cancel: CancellationToken) {
        let mut reader = loop {
            let next = self
                .state
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .next;
            match log.reader(STORE_TOPIC, 0, next).await {
                Ok(reader) => break reader,
                Err(e) if e.kind() != weir_log::ErrorKind::NotFound => {
                    tracing::warn!(error = %e, "cannot follow {STORE_TOPIC} yet");
                }
                Err(_) => {}
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(LOOK_FOR_STORE) => {}
            }
        };
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                waited = reader.wait() => {
                    if let Err(e) = waited {
                        tracing::warn!(error = %e, "following {STORE_TOPIC}");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            match reader.read(READ_BATCH).await {
                Ok(batch) => {
                    for record in batch.records {
                        self.apply(record.offset, record.key.as_deref(), &record.value);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading {STORE_TOPIC}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Checks, changing nothing, that every version of `documents` can be registered
    /// under the compatibility modes of `manifest`: what a start or a deploy does first.
    pub(crate) fn check_app(&self, manifest: &Manifest, documents: &SchemaDocuments) -> Result<()> {
        let mut registry = (*self.registry()).clone();
        for (ty, spec) in &manifest.schemas {
            registry.set_compatibility(ty, spec.compatibility);
            for (version, document) in (1..).zip(documents.get(ty).into_iter().flatten()) {
                if let Prepared::New(schema) =
                    registry.prepare(ty, version, document.clone(), None)?
                {
                    registry.insert(schema);
                }
            }
        }
        Ok(())
    }

    /// Registers the app's schemas (see [`Schemas::check_app`]); the caller sets its
    /// topics' policies ([`Schemas::set_policies`]) once the app is in place.
    pub(crate) async fn register_app(
        &self,
        log: &SharedLog,
        manifest: &Manifest,
        documents: &SchemaDocuments,
    ) -> Result<()> {
        for (ty, spec) in &manifest.schemas {
            let versions = documents.get(ty).map_or(&[][..], Vec::as_slice);
            for (version, document) in (1..).zip(versions) {
                self.register(log, ty, version, document.clone(), Some(spec.compatibility))
                    .await?;
            }
        }
        Ok(())
    }

    /// Stores the compatibility modes `manifest` declares where the store holds others: a
    /// deploy applied from a fleet's records, whose versions the deploying node stored,
    /// so that a node restarted from an older `weir.toml` does not leave its modes.
    pub(crate) async fn set_modes(&self, log: &SharedLog, manifest: &Manifest) -> Result<()> {
        for (ty, spec) in &manifest.schemas {
            let registry = self.registry();
            let held = registry.subject(ty).map(|s| s.compatibility);
            if held.is_some_and(|mode| mode != spec.compatibility)
                && let Some(latest) = registry.subject(ty).and_then(|s| s.latest())
            {
                let document = latest.document().as_ref().clone();
                let version = latest.version();
                self.register(log, ty, version, document, Some(spec.compatibility))
                    .await?;
            }
        }
        Ok(())
    }

    /// Registers `document` as `version` of `ty` (see [`Registry::prepare`]); `mode`
    /// replaces the type's compatibility mode, checked against it. True when the version
    /// is new, false when the same document was already that version.
    pub(crate) async fn register(
        &self,
        log: &SharedLog,
        ty: &str,
        version: u32,
        document: Value,
        mode: Option<Compatibility>,
    ) -> Result<bool> {
        let _one = self.registering.lock().await;
        let mut moved = 0;
        loop {
            self.catch_up(log).await?;
            // What the check sees and where the append expects the store's end must be
            // read together: `follow` may apply another node's record in between.
            let (registry, end) = {
                let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
                if let Some(reason) = state.unreadable.get(ty) {
                    return Err(Error::SchemaUnreadable {
                        ty: ty.to_owned(),
                        reason: reason.clone(),
                    });
                }
                (state.registry.clone(), state.next)
            };
            let mode_changed = mode.is_some_and(|m| m != registry.compatibility(ty));
            let schema = match registry.prepare(ty, version, document.clone(), mode)? {
                Prepared::New(schema) => Some(schema),
                Prepared::Unchanged if mode_changed => None,
                Prepared::Unchanged => return Ok(false),
            };
            let mut next = (*registry).clone();
            if let Some(mode) = mode {
                next.set_compatibility(ty, mode);
            }
            let new = schema.is_some();
            if let Some(schema) = schema {
                next.insert(schema);
            }
            match self.store(log, &next, ty, end).await {
                // Another node appended meanwhile (nodes of a fleet starting together
                // register the same app): check again against what it stored.
                Err(Error::SchemaStoreMoved { .. }) if moved < MAX_MOVED => moved += 1,
                Err(e) => return Err(e),
                Ok(()) => return Ok(new),
            }
        }
    }

    /// Appends `registry`'s record of `ty` if the store's end is still `end`, where this
    /// node read it, then applies it.
    async fn store(&self, log: &SharedLog, registry: &Registry, ty: &str, end: u64) -> Result<()> {
        let subject = registry.subject(ty).cloned().unwrap_or_default();
        let record = SubjectRecord {
            format: FORMAT,
            compatibility: subject.compatibility,
            versions: subject
                .versions()
                .iter()
                .map(|s| s.document().as_ref().clone())
                .collect(),
        };
        let value = serde_json::to_vec(&record).expect("a schema record serializes");
        if value.len() > MAX_RECORD_BYTES {
            return Err(weir_schema::Error::InvalidSchema {
                ty: ty.to_owned(),
                version: subject.latest().map_or(0, |s| s.version()),
                reason: format!(
                    "the type's versions together would be {} bytes, over the {MAX_RECORD_BYTES} a record of {STORE_TOPIC} holds; share parts with $defs or start a new event type",
                    value.len()
                ),
            }
            .into());
        }
        if log.topic(STORE_TOPIC).await?.is_none() {
            let spec = TopicSpec {
                compaction: true,
                ..TopicSpec::default()
            };
            log.create_topic(STORE_TOPIC, &spec).await?;
        }
        let guarantees = log.guarantees(&TopicSpec::default());
        let expect = if guarantees.conditional_appends.partition_end {
            Expect::End(end)
        } else {
            Expect::Any
        };
        let record = Record::new(Bytes::from(value.clone())).with_key(Bytes::from(ty.to_owned()));
        let positions = log
            .append_to(STORE_TOPIC, 0, vec![record], expect)
            .await
            .map_err(|e| match e.kind() {
                weir_log::ErrorKind::Conflict => Error::SchemaStoreMoved { ty: ty.to_owned() },
                _ => Error::Log(e),
            })?;
        if let Some(position) = positions.first() {
            self.apply(position.offset, Some(ty.as_bytes()), &value);
        }
        Ok(())
    }
}

/// A snapshot of the registry and the upcasters, taken once per batch (or read).
#[derive(Clone)]
pub struct Upcasting {
    registry: Arc<Registry>,
    upcasters: Arc<Upcasters>,
    /// The upcaster functions' active versions, by name.
    functions: Arc<BTreeMap<String, InstancePool>>,
}

impl Upcasting {
    /// `event` as a function, a view or a replay sees it: when its `dataschema` names an
    /// older version of its type that upcasters lead from, a copy upcast as far as they go
    /// (the latest version for a deployed app), its data replaced and its `dataschema`
    /// naming that version. `Ok(None)`: nothing to do, hand it on as written. `Err` says
    /// why an event that should be upcast cannot be. Blocking when a step is a function:
    /// run it off the async runtime.
    pub fn upcast(
        &self,
        event: &CloudEvent,
    ) -> std::result::Result<Option<CloudEvent>, UpcastFailure> {
        let retryable = std::cell::Cell::new(false);
        self.upcast_noting(event, &retryable)
            .map_err(|reason| UpcastFailure {
                reason,
                retryable: retryable.get(),
            })
    }

    /// Whether [`Upcasting::upcast`] may have something to do for `event`: a cheap look
    /// before handing it to the blocking pool.
    pub fn may_upcast(&self, event: &CloudEvent) -> bool {
        self.upcasters.has(&event.ty) && event.dataschema.is_some()
    }

    fn upcast_noting(
        &self,
        event: &CloudEvent,
        retryable: &std::cell::Cell<bool>,
    ) -> std::result::Result<Option<CloudEvent>, String> {
        if !self.upcasters.has(&event.ty) {
            return Ok(None);
        }
        let Some((named, from)) = event
            .dataschema
            .as_deref()
            .and_then(weir_schema::parse_dataschema)
        else {
            return Ok(None);
        };
        if named != event.ty {
            return Ok(None);
        }
        let data = match &event.data {
            Some(Data::Json(json)) => serde_json::from_str(json.as_str())
                .map_err(|e| format!("its data is not JSON, so it cannot be upcast: {e}"))?,
            None => Value::Null,
            Some(_) => return Err("its data is not JSON, so it cannot be upcast".to_owned()),
        };
        let call = |function: &str, from: u32, data: Value| {
            self.call(function, event, from, data, retryable)
        };
        let Some(upcast) = self
            .upcasters
            .upcast(&self.registry, &event.ty, from, &data, &call)?
        else {
            return Ok(None);
        };
        let mut event = event.clone();
        event.data = Some(Data::from(upcast.data));
        event.dataschema = event
            .dataschema
            .as_deref()
            .and_then(|uri| weir_schema::with_version(uri, upcast.to));
        event.extensions.insert(
            UPCAST_FROM.to_owned(),
            weir_cloudevents::ExtensionValue::Integer(i64::from(upcast.from)),
        );
        Ok(Some(event))
    }

    /// Runs upcaster `function` on `event` with `data` (of version `from`): the function
    /// gets the event with that data and a `dataschema` naming that version, and must
    /// return one event of the same type, whose data is the next version's. It is a
    /// handler: the start and each deploy refuse another world, and a function never
    /// changes world.
    fn call(
        &self,
        function: &str,
        event: &CloudEvent,
        from: u32,
        data: Value,
        retryable: &std::cell::Cell<bool>,
    ) -> std::result::Result<Value, String> {
        let pool = self
            .functions
            .get(function)
            .ok_or_else(|| format!("upcaster function {function:?} is not loaded"))?;
        let mut input = event.clone();
        input.data = Some(Data::from(data));
        input.dataschema = event
            .dataschema
            .as_deref()
            .and_then(|uri| weir_schema::with_version(uri, from))
            .or(input.dataschema);
        let mut outputs = pool.call(&input).map_err(|e| {
            // Out of instances, a failure the guest says is passing: try again later.
            retryable.set(e.is_retryable());
            format!("upcaster function {function:?} failed: {e}")
        })?;
        let output = match (outputs.pop(), outputs.is_empty()) {
            (Some(output), true) => output.event,
            (None, _) => {
                return Err(format!(
                    "upcaster function {function:?} returned no event; it must return one"
                ));
            }
            (Some(_), false) => {
                return Err(format!(
                    "upcaster function {function:?} returned {} events; it must return one",
                    outputs.len() + 1
                ));
            }
        };
        if output.ty != event.ty {
            return Err(format!(
                "upcaster function {function:?} returned an event of type {:?}; an upcaster keeps the type, {:?}",
                output.ty, event.ty
            ));
        }
        match &output.data {
            Some(Data::Json(json)) => serde_json::from_str(json.as_str()).map_err(|e| {
                format!("upcaster function {function:?} returned data that is not JSON: {e}")
            }),
            None => Ok(Value::Null),
            Some(_) => Err(format!(
                "upcaster function {function:?} returned data that is not JSON"
            )),
        }
    }
}

/// Why an upcaster step names a function that is missing from `functions` (the app's
/// active versions, by name) or is not a handler: checked at start and at deploy, so an
/// upcaster that could never run stops them instead of dead-lettering every old event.
pub(crate) fn check_upcaster_functions(
    manifest: &Manifest,
    world_of: impl Fn(&str) -> Option<World>,
) -> Result<()> {
    for (ty, spec) in &manifest.schemas {
        for (from, step) in spec.upcasters() {
            let Step::Function(name) = step else { continue };
            match world_of(name) {
                Some(World::Handler) => {}
                Some(world) => {
                    return Err(Error::WrongWorld {
                        function: name.clone(),
                        world: world.to_string(),
                        wanted: format!(
                            "the upcaster of {ty:?} from version {from} (the handler world)"
                        ),
                    });
                }
                None => {
                    return Err(Error::UnknownFunction {
                        function: name.clone(),
                        declared: manifest.functions.keys().cloned().collect(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Why an event cannot be upcast.
#[derive(Debug, Clone)]
pub struct UpcastFailure {
    pub reason: String,
    /// An upcaster function's failure that may pass (no instance free, a failure the
    /// guest calls retryable): a pipeline tries again, as for its own function.
    pub retryable: bool,
}

impl std::fmt::Display for UpcastFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The extension attribute an upcast event carries: the version it was written in.
pub const UPCAST_FROM: &str = "upcastfrom";

/// Why one event fails its topic's contract (`required`: the topic requires a schema), or
/// `Ok` when it passes: what a publish runs for each event.
pub fn check_event(
    registry: &Registry,
    topic: &str,
    required: bool,
    event: &CloudEvent,
) -> std::result::Result<(), SchemaRejection> {
    let schema = match registry.resolve(&event.ty, event.dataschema.as_deref()) {
        Resolved::Schema(schema) => schema,
        Resolved::None if required => {
            return Err(SchemaRejection::Required {
                topic: topic.to_owned(),
            });
        }
        Resolved::None => return Ok(()),
        Resolved::UnknownVersion { version, latest } => {
            return Err(SchemaRejection::UnknownVersion { version, latest });
        }
        Resolved::OtherType { named } => return Err(SchemaRejection::OtherType { named }),
    };
    let data = match &event.data {
        None => Value::Null,
        // The fast path; a failure is parsed again as a `Value`, to name the violations.
        Some(Data::Json(json)) if schema.passes_json(json.as_str()) => return Ok(()),
        Some(Data::Json(json)) => {
            serde_json::from_str(json.as_str()).map_err(|e| SchemaRejection::NotJson {
                reason: e.to_string(),
            })?
        }
        Some(Data::Text(_) | Data::Binary(_)) => {
            return Err(SchemaRejection::NotJson {
                reason: "its data is not JSON".to_owned(),
            });
        }
    };
    schema
        .validate(&data)
        .map_err(|violations| SchemaRejection::Violations {
            version: schema.version(),
            violations,
        })
}

/// Why an event does not meet its contract.
#[derive(Debug, Clone)]
pub enum SchemaRejection {
    /// Its `data` breaks rules of its schema.
    Violations {
        version: u32,
        violations: Vec<weir_schema::Violation>,
    },
    /// Its topic requires a schema and its type has none.
    Required { topic: String },
    /// Its `dataschema` names a version of its type that is not registered.
    UnknownVersion { version: u32, latest: Option<u32> },
    /// Its `dataschema` names a schema of another type.
    OtherType { named: String },
    /// Its type has a schema but its data is not JSON.
    NotJson { reason: String },
}

impl std::fmt::Display for SchemaRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchemaRejection::Violations {
                version,
                violations,
            } => {
                let all: Vec<String> = violations.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "its data does not match version {version} of its schema: {}",
                    all.join("; ")
                )
            }
            SchemaRejection::Required { topic } => write!(
                f,
                "topic {topic:?} requires a schema for every event type (schema = \"required\") and this type has none; register one (PUT /v1/schemas/TYPE/1 or [schemas.TYPE] in weir.toml)"
            ),
            SchemaRejection::UnknownVersion { version, latest } => match latest {
                Some(latest) => write!(
                    f,
                    "its dataschema names version {version}, which is not registered (the latest is {latest})"
                ),
                None => write!(
                    f,
                    "its dataschema names version {version}, and the type has no registered schema"
                ),
            },
            SchemaRejection::OtherType { named } => write!(
                f,
                "its dataschema names a schema of type {named:?}; name one of its own type, or leave dataschema out to use the latest"
            ),
            SchemaRejection::NotJson { reason } => {
                write!(f, "its type has a JSON Schema but {reason}")
            }
        }
    }
}

/// Reads the schema files a manifest names: for a start, for `weir deploy` to send them
/// along, and for `weir schema check`.
pub fn read_documents(manifest: &Manifest) -> Result<SchemaDocuments> {
    let mut documents = SchemaDocuments::new();
    for (ty, spec) in &manifest.schemas {
        let mut versions = Vec::with_capacity(spec.versions.len());
        for path in &spec.versions {
            let text = std::fs::read(path).map_err(|e| Error::SchemaFile {
                ty: ty.clone(),
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            let document = serde_json::from_slice(&text).map_err(|e| Error::SchemaFile {
                ty: ty.clone(),
                path: path.display().to_string(),
                reason: format!("not JSON: {e}"),
            })?;
            versions.push(document);
        }
        documents.insert(ty.clone(), versions);
    }
    Ok(documents)
}

impl crate::Node {
    /// The app's upcasters and the registry as they are now, for reads that ask for
    /// events upcast (`?upcast=true`); `None` when the app has no upcasters.
    pub fn upcasting(&self) -> Option<Upcasting> {
        self.schemas.upcasting()
    }

    /// Every registered schema (`GET /v1/schemas...`), as this node holds them now.
    pub fn schemas(&self) -> Arc<Registry> {
        self.schemas.registry()
    }

    /// Registers `document` as `version` of `ty` (`PUT /v1/schemas/{type}/{version}`): true
    /// when it is new, false when the same document already is that version. A version
    /// that is taken, out of order, not a draft 2020-12 schema, or incompatible with the
    /// earlier ones under the type's mode is refused, naming why.
    #[tracing::instrument(skip(self, document), err)]
    pub async fn register_schema(&self, ty: &str, version: u32, document: Value) -> Result<bool> {
        if self.cancel.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let new = self
            .schemas
            .register(&self.log, ty, version, document, None)
            .await?;
        if new {
            tracing::info!(ty, version, "schema registered");
        }
        Ok(new)
    }
}
