//! The AsyncAPI 3.0 document of a weir app, generated from what runs: its manifest, its
//! topics and its schema registry. A pure function; the gateway serves it at
//! `GET /v1/asyncapi` and `weir asyncapi` prints it.
//!
//! The document is written from the app's side (AsyncAPI's `send` is what the app sends):
//! - **channels**: every topic (address: the topic's name, on the node's HTTP server),
//!   each source's subscriptions and each sink's destination (on the broker or webhook
//!   server they name), and each inbound-webhook route (address: its path);
//! - **operations**: clients publishing to topics (`receive`) and subscribing to them
//!   (`send`), pipelines reading and writing, sources, sinks, webhook routes, schedules,
//!   entities appending to their journals, views reading their topics;
//! - **messages**: one per registered schema version, its payload the JSON Schema (draft
//!   2020-12) with its local `$ref`s inlined, its headers the CloudEvents attributes as
//!   HTTP binary-mode headers; a generic CloudEvent for the types nothing declares;
//! - **security schemes** from the front door (API keys, JWTs), on the node's server.
//!
//! A topic's messages are the types known to be on it: those its sources, schedules and
//! webhook routes append, and those a pipeline's `type` filter names; every other event
//! is the generic CloudEvent message, whose `ce-type` excludes the known ones (AsyncAPI
//! asks that a message match one message object of its channel, not two).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use weir_manifest::{EntitySpec, Manifest, SourceSpec};
use weir_schema::{Registry, Schema};

/// The AsyncAPI version of the documents.
pub const ASYNCAPI_VERSION: &str = "3.0.0";

/// The `schemaFormat` of payloads: JSON Schema draft 2020-12, as registered.
pub const SCHEMA_FORMAT: &str = "application/schema+json;version=draft-2020-12";

/// The key of the generic CloudEvent message in `components.messages`.
pub const CLOUDEVENT_MESSAGE: &str = "CloudEvent";

/// The key of the CloudEvents headers schema in `components.schemas`.
const HEADERS_SCHEMA: &str = "CloudEventHeaders";

/// The node's own HTTP server, as its clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `host[:port]`.
    pub host: String,
    /// HTTPS rather than HTTP.
    pub tls: bool,
}

/// The credentials the front door takes (`[auth]`); `None` in [`App::security`] for an
/// open node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    /// API keys made by `weir auth key create`.
    pub api_keys: bool,
    /// JWTs from an identity provider (`[auth.jwt]`).
    pub jwt: bool,
}

impl Security {
    /// What `[auth]` of `manifest` accepts.
    pub fn of(manifest: &Manifest) -> Option<Security> {
        manifest.auth.as_ref().map(|auth| Security {
            api_keys: auth.api_keys,
            jwt: auth.jwt.is_some(),
        })
    }
}

/// What the document is generated from.
#[derive(Debug, Clone, Copy)]
pub struct App<'a> {
    /// The app's manifest; `None` for a node running without one.
    pub manifest: Option<&'a Manifest>,
    /// Every topic the node has, the manifest's and those made over HTTP.
    pub topics: &'a [String],
    pub registry: &'a Registry,
    pub server: &'a Server,
    pub security: Option<Security>,
}

/// The AsyncAPI 3.0 document of `app`.
pub fn document(app: &App<'_>) -> Value {
    let mut doc = Doc::default();
    let app_name = app
        .manifest
        .map_or(weir_manifest::AppSection::DEFAULT_NAME, |m| &m.app.name);
    let servers = server_object(app);
    doc.server("weir", servers);
    doc.messages(app.registry);
    let known = known_types(app.manifest);
    for topic in visible_topics(app) {
        let required = app
            .manifest
            .and_then(|m| m.topics.get(&topic))
            .is_some_and(|t| t.schema == weir_manifest::SchemaPolicy::Required);
        doc.topic_channel(&topic, known.get(topic.as_str()), required);
    }
    if let Some(manifest) = app.manifest {
        doc.app_operations(manifest);
    }
    let mut components = Map::new();
    components.insert(
        "schemas".into(),
        json!({ HEADERS_SCHEMA: headers_schema() }),
    );
    components.insert("messages".into(), Value::Object(doc.messages));
    if let Some(schemes) = security_schemes(app.security) {
        components.insert("securitySchemes".into(), schemes);
    }
    json!({
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": app_name,
            "version": app_version(app.manifest),
            "description": format!(
                "The events of the weir app {app_name:?}, generated from what the node runs: its topics, pipelines, sources, sinks, routes, schedules, entities and views, and the schemas registered for its event types. Messages are CloudEvents; their headers are the CloudEvents attributes as HTTP binary-mode headers (`ce-*`), which weir also takes as one structured `application/cloudevents+json` body."
            ),
        },
        "defaultContentType": "application/json",
        "servers": Value::Object(doc.servers),
        "channels": Value::Object(doc.channels),
        "operations": Value::Object(doc.operations),
        "components": Value::Object(components),
    })
}

/// The topics the document shows: the app's and the node's, without weir's own
/// (`weir.*`: the schema registry) and the bookkeeping of sources and entities (positions,
/// snapshots), which only weir writes.
fn visible_topics(app: &App<'_>) -> Vec<String> {
    let mut hidden: BTreeSet<String> = BTreeSet::new();
    if let Some(manifest) = app.manifest {
        for name in manifest.sources.keys() {
            hidden.insert(SourceSpec::positions_topic(name));
        }
        for ty in manifest.entities.keys() {
            hidden.insert(EntitySpec::snapshot_topic(ty));
        }
    }
    // Dead-letter topics are created at start when the manifest does not declare them.
    let declared = app.manifest.into_iter().flat_map(|m| {
        m.topics
            .keys()
            .chain(m.pipelines.values().map(|p| &p.dead_letter))
            .chain(m.sources.values().map(|s| &s.dead_letter))
            .chain(m.sinks.values().map(|s| &s.dead_letter))
    });
    let all: BTreeSet<&String> = declared.chain(app.topics).collect();
    all.into_iter()
        .filter(|t| !t.starts_with("weir.") && !hidden.contains(*t))
        .cloned()
        .collect()
}

/// The event types known to be on each topic: those its sources, schedules and webhook
/// routes append, and the exact types a pipeline's filter takes from it.
fn known_types(manifest: Option<&Manifest>) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut known: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let Some(m) = manifest else {
        return known;
    };
    for source in m.sources.values() {
        known.entry(&source.topic).or_default().insert(&source.ty);
    }
    for schedule in m.schedules.values() {
        known
            .entry(&schedule.topic)
            .or_default()
            .insert(&schedule.ty);
    }
    for route in m.routes.values() {
        if let (Some(topic), Some(ty)) = (&route.topic, &route.ty) {
            known.entry(topic).or_default().insert(ty);
        }
    }
    for pipeline in m.pipelines.values() {
        let Some(types) = pipeline
            .filter
            .as_ref()
            .and_then(|f| f.attributes.get("type"))
        else {
            continue;
        };
        for topic in &pipeline.from {
            for ty in types.iter().filter(|t| !t.contains('*')) {
                known.entry(topic).or_default().insert(ty);
            }
        }
    }
    known
}

/// The `info.version`: the first 12 hex digits of a 64-bit FNV-1a hash of the manifest's
/// text, so the version changes with every deploy that changes the app.
fn app_version(manifest: Option<&Manifest>) -> String {
    let text = manifest.map_or("", |m| m.text.as_str());
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")[..12].to_owned()
}

fn server_object(app: &App<'_>) -> Value {
    let mut server = json!({
        "host": app.server.host,
        "protocol": if app.server.tls { "https" } else { "http" },
        "title": "weir",
        "description": "The weir node's HTTP API. A topic's events are published with POST /v1/topics/{topic}/events (one event, structured or binary mode, or a batch: application/cloudevents-batch+json), read from an offset with GET /v1/topics/{topic}/events and followed live with GET /v1/topics/{topic}/stream (Server-Sent Events). An event whose type has a schema is checked against it at publish: a violation is refused with 422 application/problem+json naming the JSON pointer and the rule.",
    });
    if let Some(security) = app.security {
        let mut refs = Vec::new();
        if security.api_keys {
            refs.push(json!({ "$ref": "#/components/securitySchemes/apiKey" }));
        }
        if security.jwt {
            refs.push(json!({ "$ref": "#/components/securitySchemes/jwt" }));
        }
        server["security"] = Value::Array(refs);
    }
    server
}

fn security_schemes(security: Option<Security>) -> Option<Value> {
    let security = security?;
    let mut schemes = Map::new();
    if security.api_keys {
        schemes.insert(
            "apiKey".into(),
            json!({
                "type": "http",
                "scheme": "bearer",
                "description": "An API key made by `weir auth key create` (`weir_<id>_<secret>`), sent as `Authorization: Bearer <key>`; its roles decide the topics it may publish to and subscribe to.",
            }),
        );
    }
    if security.jwt {
        schemes.insert(
            "jwt".into(),
            json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A JWT from the identity provider of [auth.jwt], sent as `Authorization: Bearer <token>`; its roles claim decides the topics it may publish to and subscribe to.",
            }),
        );
    }
    Some(Value::Object(schemes))
}

/// The CloudEvents context attributes as HTTP binary-mode headers.
fn headers_schema() -> Value {
    json!({
        "type": "object",
        "description": "The CloudEvents 1.0 context attributes, as HTTP binary-mode headers.",
        "required": ["ce-specversion", "ce-id", "ce-source", "ce-type"],
        "properties": {
            "ce-specversion": { "type": "string", "const": "1.0" },
            "ce-id": { "type": "string", "minLength": 1, "description": "Unique per source." },
            "ce-source": { "type": "string", "minLength": 1, "description": "A URI-reference naming the producer." },
            "ce-type": { "type": "string", "minLength": 1 },
            "ce-subject": { "type": "string" },
            "ce-time": { "type": "string", "format": "date-time" },
            "ce-dataschema": { "type": "string", "description": "The schema of the data: a URI whose path ends in /v1/schemas/{type}/{version}, on any host." },
            "ce-partitionkey": { "type": "string", "description": "Picks the partition and orders events with the same key." },
            "ce-traceparent": { "type": "string", "description": "W3C trace context, carried through pipelines." },
            "content-type": { "type": "string", "description": "The data's media type (datacontenttype)." },
        },
    })
}

/// The headers of a message of type `ty` (`None`: any type but `except`).
fn message_headers(ty: Option<&str>, except: &[&str]) -> Value {
    let ce_type = match ty {
        Some(ty) => json!({ "type": "string", "const": ty }),
        None if except.is_empty() => json!({ "type": "string" }),
        None => json!({ "type": "string", "not": { "enum": except } }),
    };
    json!({
        "allOf": [
            { "$ref": format!("#/components/schemas/{HEADERS_SCHEMA}") },
            { "type": "object", "properties": { "ce-type": ce_type } },
        ]
    })
}

/// A key of `components.*`: AsyncAPI allows `[A-Za-z0-9._-]`.
fn component_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `name` as one JSON-pointer token (RFC 6901).
fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn reference(path: &[&str]) -> Value {
    let tokens: Vec<String> = path.iter().map(|t| pointer_token(t)).collect();
    json!({ "$ref": format!("#/{}", tokens.join("/")) })
}

#[derive(Default)]
struct Doc {
    servers: Map<String, Value>,
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    messages: Map<String, Value>,
    /// The message keys of each (type, version); version 0: a type without a schema.
    message_keys: BTreeMap<(String, u32), String>,
}

impl Doc {
    fn server(&mut self, key: &str, server: Value) {
        self.servers.insert(key.to_owned(), server);
    }

    /// A fresh key in `components.messages` for `name`.
    fn message_key(&self, name: &str) -> String {
        let base = component_key(name);
        let mut key = base.clone();
        let mut n = 2;
        while self.messages.contains_key(&key) || key == CLOUDEVENT_MESSAGE {
            key = format!("{base}-{n}");
            n += 1;
        }
        key
    }

    /// One message per registered version.
    fn messages(&mut self, registry: &Registry) {
        for (ty, subject) in registry.subjects() {
            for schema in subject.versions() {
                let key = self.message_key(&format!("{ty}.v{}", schema.version()));
                self.messages
                    .insert(key.clone(), schema_message(schema, registry));
                self.message_keys
                    .insert((ty.to_owned(), schema.version()), key);
            }
        }
    }

    /// The keys of the messages of type `ty`, adding one without a payload schema if it
    /// has none registered.
    fn type_messages(&mut self, ty: &str) -> Vec<String> {
        let keys: Vec<String> = self
            .message_keys
            .range((ty.to_owned(), 1)..=(ty.to_owned(), u32::MAX))
            .map(|(_, key)| key.clone())
            .collect();
        if !keys.is_empty() {
            return keys;
        }
        if let Some(key) = self.message_keys.get(&(ty.to_owned(), 0)) {
            return vec![key.clone()];
        }
        let key = self.message_key(ty);
        self.messages.insert(
            key.clone(),
            json!({
                "name": ty,
                "title": ty,
                "summary": format!("A {ty} event; no schema is registered for its type, so its data is not checked."),
                "headers": message_headers(Some(ty), &[]),
                "payload": {},
            }),
        );
        self.message_keys.insert((ty.to_owned(), 0), key.clone());
        vec![key]
    }

    fn topic_channel(&mut self, topic: &str, known: Option<&BTreeSet<&str>>, required: bool) {
        let known: Vec<&str> = known
            .map(|k| k.iter().copied().collect())
            .unwrap_or_default();
        let mut messages = Map::new();
        for ty in &known {
            for key in self.type_messages(ty) {
                messages.insert(key.clone(), reference(&["components", "messages", &key]));
            }
        }
        // Any other type: the generic message, which excludes the known ones.
        let generic = if known.is_empty() {
            CLOUDEVENT_MESSAGE.to_owned()
        } else {
            let key = self.message_key(&format!("{topic}.other"));
            self.messages.insert(key.clone(), generic_message(&known));
            key
        };
        if known.is_empty() && !self.messages.contains_key(CLOUDEVENT_MESSAGE) {
            self.messages
                .insert(CLOUDEVENT_MESSAGE.to_owned(), generic_message(&[]));
        }
        messages.insert(
            generic.clone(),
            reference(&["components", "messages", &generic]),
        );
        self.channels.insert(
            topic.to_owned(),
            json!({
                "address": topic,
                "title": topic,
                "description": format!(
                    "The topic {topic:?}. {}",
                    if required {
                        "Every event published to it must have a registered schema and match it (schema = \"required\")."
                    } else {
                        "An event whose type has a registered schema is checked against it when it is published; others pass."
                    }
                ),
                "servers": [reference(&["servers", "weir"])],
                "messages": Value::Object(messages),
            }),
        );
        self.operation(
            &format!("publish:{topic}"),
            "receive",
            topic,
            &format!("Clients publish events to {topic:?}: POST /v1/topics/{topic}/events."),
        );
        self.operation(
            &format!("subscribe:{topic}"),
            "send",
            topic,
            &format!(
                "Clients read {topic:?}: GET /v1/topics/{topic}/events from an offset, GET /v1/topics/{topic}/stream live (Server-Sent Events)."
            ),
        );
    }

    /// An operation on a channel, if the document has that channel.
    fn operation(&mut self, key: &str, action: &str, channel: &str, summary: &str) {
        if !self.channels.contains_key(channel) {
            return;
        }
        self.operations.insert(
            key.to_owned(),
            json!({
                "action": action,
                "channel": reference(&["channels", channel]),
                "summary": summary,
            }),
        );
    }

    fn app_operations(&mut self, m: &Manifest) {
        for (name, p) in &m.pipelines {
            for topic in &p.from {
                self.operation(
                    &format!("pipeline:{name}:from:{topic}"),
                    "receive",
                    topic,
                    &format!(
                        "Pipeline {name:?} reads {topic:?} as group {:?} and calls function {:?}.",
                        p.group, p.function
                    ),
                );
            }
            for topic in &p.to {
                self.operation(
                    &format!("pipeline:{name}:to:{topic}"),
                    "send",
                    topic,
                    &format!(
                        "Pipeline {name:?} appends function {:?}'s outputs to {topic:?}; an output that breaks its type's schema dead-letters the input.",
                        p.function
                    ),
                );
            }
            self.operation(
                &format!("pipeline:{name}:dead-letter"),
                "send",
                &p.dead_letter,
                &format!(
                    "Pipeline {name:?} appends the events it could not handle to {:?}, with dlq* attributes saying why.",
                    p.dead_letter
                ),
            );
        }
        for (name, source) in &m.sources {
            self.source(name, source);
        }
        for (name, sink) in &m.sinks {
            let key = format!("sink:{name}");
            let (protocol, host, path) = split_url(&sink.url);
            self.servers.insert(
                key.clone(),
                json!({
                    "host": host,
                    "protocol": protocol,
                    "title": format!("sink {name}"),
                    "description": format!("Where sink {name:?} delivers the events of {:?}.", sink.topic),
                }),
            );
            let address = sink.to.clone().unwrap_or(path);
            let messages = self.channel_messages(&sink.topic);
            self.channels.insert(
                key.clone(),
                json!({
                    "address": address,
                    "title": format!("sink {name}"),
                    "servers": [reference(&["servers", &key])],
                    "messages": messages,
                }),
            );
            self.operation(
                &format!("sink:{name}:from"),
                "receive",
                &sink.topic,
                &format!(
                    "Sink {name:?} reads {:?} as group {:?}.",
                    sink.topic, sink.group
                ),
            );
            self.operation(
                &key,
                "send",
                &key,
                &format!(
                    "Sink {name:?} delivers each event in order per partition, retried and then dead-lettered to {:?}.",
                    sink.dead_letter
                ),
            );
        }
        for (name, route) in &m.routes {
            let Some(topic) = &route.topic else {
                continue;
            };
            let key = format!("route:{name}");
            let (address, parameters) = route_address(&route.path);
            let messages = self.channel_messages(topic);
            let mut channel = json!({
                "address": address,
                "title": format!("route {name}"),
                "description": format!(
                    "{}: each request to {} becomes one event appended to {topic:?}{}.",
                    if route.job { "A long-running job route" } else { "An inbound webhook" },
                    route.path,
                    route.verify.as_ref().map_or(String::new(), |v| format!(", its {v} signature checked"))
                ),
                "servers": [reference(&["servers", "weir"])],
                "messages": messages,
            });
            if !parameters.is_empty() {
                channel["parameters"] = Value::Object(parameters);
            }
            self.channels.insert(key.clone(), channel);
            self.operation(
                &key,
                "receive",
                &key,
                &format!("Route {name:?} takes webhook requests."),
            );
            self.operation(
                &format!("route:{name}:to"),
                "send",
                topic,
                &format!("Route {name:?} appends each request to {topic:?}."),
            );
        }
        for (name, schedule) in &m.schedules {
            self.operation(
                &format!("schedule:{name}"),
                "send",
                &schedule.topic,
                &format!(
                    "Schedule {name:?} ({}) appends a {} tick to {:?} at each occurrence.",
                    schedule.cron, schedule.ty, schedule.topic
                ),
            );
        }
        for (ty, entity) in &m.entities {
            self.operation(
                &format!("entity:{ty}"),
                "send",
                &entity.journal,
                &format!(
                    "Entity type {ty:?} (function {:?}) appends the events its commands emit to its journal {:?}, keyed by entity id.",
                    entity.function, entity.journal
                ),
            );
        }
        for (name, view) in &m.views {
            for topic in &view.sources {
                self.operation(
                    &format!("view:{name}:from:{topic}"),
                    "receive",
                    topic,
                    &format!(
                        "View {name:?} (function {:?}) projects {topic:?} into its table.",
                        view.function
                    ),
                );
            }
        }
    }

    fn source(&mut self, name: &str, source: &SourceSpec) {
        let server = format!("source:{name}");
        let (protocol, host, _) = split_url(&source.url);
        self.servers.insert(
            server.clone(),
            json!({
                "host": host,
                "protocol": protocol,
                "title": format!("source {name}"),
                "description": format!("The broker source {name:?} takes messages from."),
            }),
        );
        let messages = self.channel_messages(&source.topic);
        for (i, filter) in source.subscribe.iter().enumerate() {
            let key = format!("source:{name}:{i}");
            self.channels.insert(
                key.clone(),
                json!({
                    "address": filter,
                    "title": format!("source {name}: {filter}"),
                    "description": format!(
                        "Messages whose payload ({}) becomes a {} event on {:?}; those that cannot are dead-lettered to {:?}.",
                        source.data.as_str(), source.ty, source.topic, source.dead_letter
                    ),
                    "servers": [reference(&["servers", &server])],
                    "messages": messages.clone(),
                }),
            );
            self.operation(
                &key,
                "receive",
                &key,
                &format!("Source {name:?} subscribes to {filter:?}."),
            );
        }
        self.operation(
            &format!("source:{name}:to"),
            "send",
            &source.topic,
            &format!(
                "Source {name:?} appends each message as a {} event to {:?}.",
                source.ty, source.topic
            ),
        );
    }

    /// The messages of topic `topic`'s channel, for a channel carrying the same events.
    fn channel_messages(&self, topic: &str) -> Value {
        self.channels
            .get(topic)
            .and_then(|c| c.get("messages"))
            .cloned()
            .unwrap_or_else(|| json!({}))
    }
}

fn generic_message(except: &[&str]) -> Value {
    json!({
        "name": CLOUDEVENT_MESSAGE,
        "title": "CloudEvent",
        "summary": if except.is_empty() {
            "A CloudEvents 1.0 event of any type.".to_owned()
        } else {
            format!("A CloudEvents 1.0 event of any type but {}.", except.join(", "))
        },
        "headers": message_headers(None, except),
        "payload": {},
    })
}

fn schema_message(schema: &Schema, registry: &Registry) -> Value {
    let ty = schema.ty();
    let version = schema.version();
    let document = schema.document();
    let mut message = json!({
        "name": ty,
        "title": document.get("title").and_then(Value::as_str).unwrap_or(ty),
        "summary": format!(
            "{ty}, version {version} of its schema ({} compatibility); an event names it with dataschema {}.",
            registry.compatibility(ty).as_str(),
            schema.route()
        ),
        "contentType": "application/json",
        "headers": message_headers(Some(ty), &[]),
        "payload": {
            "schemaFormat": SCHEMA_FORMAT,
            "schema": inline_refs(document.as_ref()),
        },
        "x-weir-dataschema": schema.route(),
        "x-weir-version": version,
    });
    if let Some(description) = document.get("description").and_then(Value::as_str) {
        message["description"] = Value::String(description.to_owned());
    }
    message
}

/// `(protocol, host[:port], path)` of a source's or sink's URL, without its credentials
/// or query.
fn split_url(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let protocol = match scheme {
        "mqtt" | "tcp" => "mqtt",
        "jetstream" => "nats",
        other => other,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest
        .find('/')
        .map_or((rest, ""), |at| (&rest[..at], &rest[at..]));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    (protocol.to_owned(), host.to_owned(), path.to_owned())
}

/// A route's path as a channel address (`{name}` for its parameters, `{*rest}` becoming
/// `{rest}`) and the channel's parameters.
fn route_address(path: &str) -> (String, Map<String, Value>) {
    let mut parameters = Map::new();
    let segments: Vec<String> = path
        .split('/')
        .map(|segment| {
            let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                return segment.to_owned();
            };
            let (name, description) = match name.strip_prefix('*') {
                Some(rest) => (rest, "the rest of the path"),
                None => (name, "one segment of the path"),
            };
            parameters.insert(name.to_owned(), json!({ "description": description }));
            format!("{{{name}}}")
        })
        .collect();
    (segments.join("/"), parameters)
}

/// Most schema nodes [`inline_refs`] writes for one payload; past it, a reference is
/// left as `{}` (a schema whose definitions refer to each other many times over would
/// otherwise grow exponentially).
pub const INLINE_BUDGET: usize = 100_000;

/// `schema` with each local `$ref` (`#...`) replaced by what it points to, so that the
/// payload stands alone in the AsyncAPI document, whose parser resolves a `$ref` from
/// the document's root. A reference back into a definition being inlined (a recursive
/// schema), one that resolves to nothing, and any past [`INLINE_BUDGET`] become `{}`,
/// which accepts anything there. The root's `$defs` and `definitions` are dropped once
/// inlined.
pub fn inline_refs(schema: &Value) -> Value {
    struct Inliner<'a> {
        root: &'a Value,
        stack: Vec<String>,
        written: usize,
    }
    impl Inliner<'_> {
        fn walk(&mut self, node: &Value) -> Value {
            self.written += 1;
            match node {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        return self.reference(target, map);
                    }
                    Value::Object(map.iter().map(|(k, v)| (k.clone(), self.walk(v))).collect())
                }
                Value::Array(items) => Value::Array(items.iter().map(|v| self.walk(v)).collect()),
                other => other.clone(),
            }
        }

        fn reference(&mut self, target: &str, map: &Map<String, Value>) -> Value {
            let root = self.root;
            let resolved = target
                .strip_prefix('#')
                .filter(|_| self.written < INLINE_BUDGET && !self.stack.iter().any(|t| t == target))
                .and_then(|pointer| root.pointer(pointer));
            let inlined = match resolved {
                Some(found) => {
                    self.stack.push(target.to_owned());
                    let inlined = self.walk(found);
                    self.stack.pop();
                    inlined
                }
                None => json!({}),
            };
            let siblings: Map<String, Value> = map
                .iter()
                .filter(|(k, _)| *k != "$ref")
                .map(|(k, v)| (k.clone(), self.walk(v)))
                .collect();
            if siblings.is_empty() {
                inlined
            } else {
                json!({ "allOf": [inlined, Value::Object(siblings)] })
            }
        }
    }
    let mut inliner = Inliner {
        root: schema,
        stack: Vec::new(),
        written: 0,
    };
    let mut out = inliner.walk(schema);
    if let Value::Object(map) = &mut out {
        map.remove("$defs");
        map.remove("definitions");
    }
    out
}

#[cfg(test)]
mod tests;
