//! The rules a manifest must follow. Each check adds every [`Problem`] it finds rather than
//! stopping at the first, and names the key as it is written in TOML.

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    AppSection, CapabilitiesSpec, EntitySpec, FunctionSpec, LimitsSpec, Manifest, PipelineSpec,
    Problem, RouteSpec, ScheduleSpec, SecretSource, SinkSpec, SourceData, SourceSpec, TopicSpec,
    ViewSpec,
};

/// Longest topic or consumer group name, as in Kafka.
const MAX_TOPIC_NAME_LEN: usize = 249;
/// Longest app, function or pipeline name: a DNS label, so it fits in hostnames,
/// Kubernetes object names and metric labels.
const MAX_NAME_LEN: usize = 63;

const TOPIC_NAME_RULE: &str = "use 1 to 249 characters of a-z, A-Z, 0-9, '.', '_' and '-', \
                               other than \".\" and \"..\"";
const NAME_RULE: &str =
    "use 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'";

pub(crate) fn problems(manifest: &Manifest) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_app(&manifest.app, &mut problems);
    for (name, topic) in &manifest.topics {
        check_topic(name, topic, &mut problems);
    }
    for (name, function) in &manifest.functions {
        check_function(manifest, name, function, &mut problems);
    }
    for name in manifest.keyvalue.keys() {
        if let Some(reason) = topic_name_fault(name) {
            problems.push(Problem::new(
                key(&["keyvalue", name]),
                format!(
                    "key-value namespace name {name:?} is invalid: {reason}; {TOPIC_NAME_RULE}"
                ),
            ));
        }
    }
    for (name, pipeline) in &manifest.pipelines {
        check_pipeline(manifest, name, pipeline, &mut problems);
    }
    for (ty, entity) in &manifest.entities {
        check_entity(manifest, ty, entity, &mut problems);
    }
    for (name, view) in &manifest.views {
        check_view(manifest, name, view, &mut problems);
    }
    for (name, sink) in &manifest.sinks {
        check_sink(manifest, name, sink, &mut problems);
    }
    for (name, source) in &manifest.sources {
        check_source(manifest, name, source, &mut problems);
    }
    for (name, schedule) in &manifest.schedules {
        check_schedule(manifest, name, schedule, &mut problems);
    }
    for (ty, schema) in &manifest.schemas {
        check_schema(manifest, ty, schema, &mut problems);
    }
    check_routes(manifest, &mut problems);
    check_groups_are_unique(&manifest.pipelines, &mut problems);
    if let Some(auth) = &manifest.auth {
        crate::front_door::check_auth(auth, &mut problems);
    }
    crate::front_door::check_http(&manifest.http, &mut problems);
    crate::front_door::check_limits(&manifest.limits, &mut problems);
    problems
}

fn check_app(app: &AppSection, problems: &mut Vec<Problem>) {
    if let Some(reason) = name_fault(&app.name) {
        problems.push(Problem::new(
            "app.name",
            format!("app name {:?} is invalid: {reason}; {NAME_RULE}", app.name),
        ));
    }
    if let Some(backend) = &app.backend {
        let scheme = backend.split_once("://").map(|(scheme, _)| scheme);
        let known = backend == "embedded" || matches!(scheme, Some("nats" | "tls" | "kafka"));
        if !known {
            problems.push(Problem::new(
                "app.backend",
                format!(
                    "backend {backend:?} is unknown; use \"embedded\" (the default), \"nats://HOST:PORT[/PREFIX]\" or \"kafka://HOST:PORT\""
                ),
            ));
        }
    }
}

pub(crate) fn check_topic(name: &str, topic: &TopicSpec, problems: &mut Vec<Problem>) {
    if let Some(reason) = topic_name_fault(name) {
        problems.push(Problem::new(
            key(&["topics", name]),
            format!("topic name {name:?} is invalid: {reason}; {TOPIC_NAME_RULE}"),
        ));
    }
    if name == weir_schema::STORE_TOPIC {
        problems.push(Problem::new(
            key(&["topics", name]),
            format!("{name:?} is the topic weir keeps registered schemas in; name yours otherwise"),
        ));
    }
    check_range(
        key(&["topics", name, "partitions"]),
        u64::from(topic.partitions),
        u64::from(TopicSpec::MAX_PARTITIONS),
        "",
        problems,
    );
    if let crate::FsyncSpec::Interval { ms } = topic.fsync {
        check_range(
            key(&["topics", name, "fsync_interval_ms"]),
            ms,
            TopicSpec::MAX_FSYNC_INTERVAL_MS,
            " ms",
            problems,
        );
    }
    if let Some(segment_bytes) = topic.segment_bytes
        && !(TopicSpec::MIN_SEGMENT_BYTES..=TopicSpec::MAX_SEGMENT_BYTES).contains(&segment_bytes)
    {
        problems.push(Problem::new(
            key(&["topics", name, "segment_bytes"]),
            format!(
                "is {}; use a value from {} to {}",
                segment_bytes,
                TopicSpec::MIN_SEGMENT_BYTES,
                TopicSpec::MAX_SEGMENT_BYTES
            ),
        ));
    }
    if topic.retention_ms == Some(0) {
        problems.push(Problem::new(
            key(&["topics", name, "retention_ms"]),
            "is 0, which would delete every event; remove it to keep events forever".to_owned(),
        ));
    }
    if topic.retention_bytes == Some(0) {
        problems.push(Problem::new(
            key(&["topics", name, "retention_bytes"]),
            "is 0, which would delete every event; remove it to keep events forever".to_owned(),
        ));
    }
}

fn check_function(
    manifest: &Manifest,
    name: &str,
    function: &FunctionSpec,
    problems: &mut Vec<Problem>,
) {
    if let Some(reason) = name_fault(name) {
        problems.push(Problem::new(
            key(&["functions", name]),
            format!("function name {name:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    }
    if function.source.as_os_str().is_empty() {
        problems.push(Problem::new(
            key(&["functions", name, "source"]),
            "is empty; give the path of the function's .wasm component, relative to the \
             manifest's directory",
        ));
    }
    check_range(
        key(&["functions", name, "limits", "deadline_ms"]),
        function.limits.deadline_ms,
        LimitsSpec::MAX_DEADLINE_MS,
        " milliseconds",
        problems,
    );
    check_range(
        key(&["functions", name, "limits", "memory_mb"]),
        function.limits.memory_mb,
        LimitsSpec::MAX_MEMORY_MB,
        " MiB",
        problems,
    );
    check_range(
        key(&["functions", name, "limits", "max_output_bytes"]),
        function.limits.max_output_bytes,
        LimitsSpec::MAX_MAX_OUTPUT_BYTES,
        " bytes",
        problems,
    );
    check_range(
        key(&["functions", name, "limits", "max_outputs"]),
        u64::from(function.limits.max_outputs),
        u64::from(LimitsSpec::MAX_MAX_OUTPUTS),
        "",
        problems,
    );
    if let Some(fuel) = function.limits.fuel {
        check_range(
            key(&["functions", name, "limits", "fuel"]),
            fuel,
            u64::MAX,
            "",
            problems,
        );
    }
    if let Some(cpu) = function.limits.cpu_percent {
        check_range(
            key(&["functions", name, "limits", "cpu_percent"]),
            u64::from(cpu),
            u64::from(LimitsSpec::MAX_CPU_PERCENT),
            " % of one core",
            problems,
        );
    }
    check_range(
        key(&["functions", name, "instance_reuse"]),
        u64::from(function.instance_reuse),
        u64::from(FunctionSpec::MAX_INSTANCE_REUSE),
        " calls",
        problems,
    );
    for (secret, source) in &function.secrets {
        let secret_key = key(&["functions", name, "secrets", secret]);
        if function.config.contains_key(secret) {
            problems.push(Problem::new(
                &secret_key,
                format!(
                    "{secret:?} is also a config key; the function reads both through \
                     wasi:config, so rename one"
                ),
            ));
        }
        if names_nothing(source) {
            problems.push(Problem::new(&secret_key, SECRET_NAMES_NOTHING));
        }
    }
    let caps = &function.capabilities;
    for namespace in &caps.keyvalue {
        if !manifest.keyvalue.contains_key(namespace) {
            problems.push(Problem::new(
                key(&["functions", name, "capabilities", "keyvalue"]),
                format!(
                    "grants key-value namespace {namespace:?}, which is not declared; declare \
                     it as [{}]",
                    key(&["keyvalue", namespace])
                ),
            ));
        }
    }
    for grant in &caps.http {
        if let Err(reason) = parse_http_grant(grant) {
            problems.push(Problem::new(
                key(&["functions", name, "capabilities", "http"]),
                format!("{grant:?} is not a host to allow: {reason}"),
            ));
        }
    }
    for topic in &caps.publish {
        if !manifest.topics.contains_key(topic) {
            problems.push(Problem::new(
                key(&["functions", name, "capabilities", "publish"]),
                format!("grants publishing to {}", undeclared_topic(manifest, topic)),
            ));
        }
    }
    check_range(
        key(&["functions", name, "capabilities", "http_timeout_ms"]),
        caps.http_timeout_ms,
        CapabilitiesSpec::MAX_HTTP_TIMEOUT_MS,
        " ms",
        problems,
    );
}

/// One allowed HTTP destination: requests match on host (exactly, or any subdomain for
/// `*.domain`), and on scheme and port where given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrantSpec {
    /// `http` or `https`; none allows both.
    pub scheme: Option<String>,
    /// Lower case; `*.example.com` allows every subdomain of example.com.
    pub host: String,
    /// None allows any port.
    pub port: Option<u16>,
}

/// Parse an entry of `capabilities.http`: `[scheme://]host[:port]`, host possibly
/// `*.domain` with at least two labels in `domain` (`*.example.com`, not `*.com` or `*`).
/// The error says what is wrong.
pub fn parse_http_grant(grant: &str) -> Result<HttpGrantSpec, String> {
    let (scheme, rest) = match grant.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = scheme.to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(format!("scheme {scheme:?} is not http or https"));
            }
            (Some(scheme), rest)
        }
        None => (None, grant),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('@') {
        return Err("give a host and optional port only, no path, query or user".to_owned());
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => {
            let port: u16 = port
                .parse()
                .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))?;
            (host, Some(port))
        }
        None => (rest, None),
    };
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.contains('*') {
        return Err(format!(
            "the wildcard {host:?} is not one weir allows: \"*.\" may only start a host \
             with at least two labels after it, such as \"*.example.com\""
        ));
    }
    let valid = !bare.is_empty()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !bare.starts_with('.')
        && !bare.ends_with('.');
    if !valid {
        return Err(
            "the host must be a DNS name or IPv4 address (letters, digits, '.', '-'), \
             optionally starting with \"*.\""
                .to_owned(),
        );
    }
    if host.starts_with("*.") {
        // `*.com` would allow every host of a top-level domain; `*.0.0.1` an address.
        let labels: Vec<&str> = bare.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(format!(
                "the wildcard {host:?} needs at least two labels below it, such as \
                 \"*.example.com\"; name the hosts of a top-level domain one by one"
            ));
        }
        if labels
            .last()
            .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "the wildcard {host:?} looks like an IP address; a wildcard names DNS \
                 names, so grant the address itself"
            ));
        }
    }
    Ok(HttpGrantSpec {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
    })
}

fn check_pipeline(
    manifest: &Manifest,
    name: &str,
    pipeline: &PipelineSpec,
    problems: &mut Vec<Problem>,
) {
    if let Some(reason) = name_fault(name) {
        problems.push(Problem::new(
            key(&["pipelines", name]),
            format!("pipeline name {name:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    }

    let from_key = key(&["pipelines", name, "from"]);
    if pipeline.from_patterns.is_empty() {
        problems.push(Problem::new(
            &from_key,
            "reads from no topic; list at least one declared topic",
        ));
    }
    let mut seen = BTreeSet::new();
    for topic in &pipeline.from_patterns {
        if !seen.insert(topic) {
            problems.push(Problem::new(
                &from_key,
                format!("lists topic {topic:?} more than once; list each topic once"),
            ));
        } else if crate::manifest::is_pattern(topic) {
            if !manifest
                .topics
                .keys()
                .any(|t| crate::manifest::glob_match(topic, t))
            {
                problems.push(Problem::new(
                    &from_key,
                    format!(
                        "pattern {topic:?} matches no declared topic; declared topics: {}",
                        list(manifest.topics.keys())
                    ),
                ));
            }
        } else if !manifest.topics.contains_key(topic) {
            problems.push(Problem::new(&from_key, undeclared_topic(manifest, topic)));
        }
    }

    let to_key = key(&["pipelines", name, "to"]);
    for topic in &pipeline.to {
        if pipeline.from.contains(topic) {
            problems.push(Problem::new(
                &to_key,
                format!(
                    "publishes to {topic:?}, which the pipeline also reads from, so it would \
                     consume its own output in a loop; publish to another topic"
                ),
            ));
        } else if !manifest.topics.contains_key(topic) {
            problems.push(Problem::new(&to_key, undeclared_topic(manifest, topic)));
        }
    }

    if !manifest.functions.contains_key(&pipeline.function) {
        let function = &pipeline.function;
        let message = if manifest.functions.is_empty() {
            format!(
                "no function named {function:?}; declare it as [{}] with the path of its \
                 .wasm component as source",
                key(&["functions", function])
            )
        } else {
            format!(
                "no function named {function:?}; declared functions: {}",
                list(manifest.functions.keys())
            )
        };
        problems.push(Problem::new(key(&["pipelines", name, "function"]), message));
    }

    if let Some(reason) = topic_name_fault(&pipeline.group) {
        problems.push(Problem::new(
            key(&["pipelines", name, "group"]),
            format!(
                "consumer group name {:?} is invalid: {reason}; {TOPIC_NAME_RULE}",
                pipeline.group
            ),
        ));
    } else if pipeline.group.ends_with(".redrive") {
        problems.push(Problem::new(
            key(&["pipelines", name, "group"]),
            format!(
                "consumer group name {:?} ends in \".redrive\", which weir keeps for the \
                 progress of `weir redrive`; pick another name",
                pipeline.group
            ),
        ));
    }
    check_pipeline_delivery(manifest, name, pipeline, problems);
}

/// Dead-letter topic, concurrency, retry policy and filter.
fn check_pipeline_delivery(
    manifest: &Manifest,
    name: &str,
    pipeline: &PipelineSpec,
    problems: &mut Vec<Problem>,
) {
    let manifest_topic_is_compacted =
        |topic: &str| manifest.topics.get(topic).is_some_and(|t| t.compaction);
    let dead_letter = &pipeline.dead_letter;
    let dl_key = key(&["pipelines", name, "dead_letter"]);
    if let Some(reason) = topic_name_fault(dead_letter) {
        problems.push(Problem::new(
            &dl_key,
            format!(
                "dead-letter topic name {dead_letter:?} is invalid: {reason}; {TOPIC_NAME_RULE}"
            ),
        ));
    } else if manifest_topic_is_compacted(dead_letter) {
        problems.push(Problem::new(
            &dl_key,
            format!(
                "{dead_letter:?} is a compacted topic, which would keep only the latest dead \
                 letter per key and refuse those without a key; use a topic without compaction"
            ),
        ));
    } else if pipeline.from.contains(dead_letter) {
        problems.push(Problem::new(
            &dl_key,
            format!(
                "{dead_letter:?} is also a source of the pipeline, so failed events would \
                 come back to it in a loop; dead-letter to another topic"
            ),
        ));
    }
    if !(1..=PipelineSpec::MAX_CONCURRENCY).contains(&pipeline.concurrency) {
        problems.push(Problem::new(
            key(&["pipelines", name, "concurrency"]),
            format!(
                "is {}; use 1 to {}",
                pipeline.concurrency,
                PipelineSpec::MAX_CONCURRENCY
            ),
        ));
    }
    if pipeline.linger_ms > PipelineSpec::MAX_LINGER_MS {
        problems.push(Problem::new(
            key(&["pipelines", name, "linger_ms"]),
            format!(
                "is {}; use 0 to {} (it delays every event of a partition that is not busy by up to that long)",
                pipeline.linger_ms,
                PipelineSpec::MAX_LINGER_MS
            ),
        ));
    }
    check_retry(&["pipelines", name, "retry"], &pipeline.retry, problems);
    if let Some(filter) = &pipeline.filter {
        for (attribute, patterns) in &filter.attributes {
            let is_core = matches!(attribute.as_str(), "type" | "source" | "subject");
            let filter_key = if is_core {
                key(&["pipelines", name, "filter", attribute])
            } else {
                key(&["pipelines", name, "filter", "extensions", attribute])
            };
            if !is_core
                && matches!(
                    attribute.as_str(),
                    "id" | "specversion" | "time" | "datacontenttype" | "dataschema" | "data"
                )
            {
                problems.push(Problem::new(
                    &filter_key,
                    format!(
                        "{attribute:?} is a CloudEvents context attribute, not an extension; filters take type, source, subject and extensions"
                    ),
                ));
            }
            for pattern in patterns {
                if pattern.trim_end_matches('*').contains('*') {
                    problems.push(Problem::new(
                        &filter_key,
                        format!(
                            "pattern {pattern:?} has a '*' before its end; only a trailing '*' (a prefix match) is supported"
                        ),
                    ));
                }
            }
            if !is_core
                && (attribute.is_empty()
                    || !attribute
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
            {
                problems.push(Problem::new(
                    &filter_key,
                    format!(
                        "{attribute:?} is not a CloudEvents extension name; use a-z and 0-9 only"
                    ),
                ));
            }
            if patterns.is_empty() {
                problems.push(Problem::new(
                    &filter_key,
                    "lists no pattern, so nothing would match; list at least one or remove it",
                ));
            }
        }
    }
}

fn check_entity(manifest: &Manifest, ty: &str, entity: &EntitySpec, problems: &mut Vec<Problem>) {
    if let Some(reason) = name_fault(ty) {
        problems.push(Problem::new(
            key(&["entities", ty]),
            format!("entity type {ty:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    }
    if !manifest.functions.contains_key(&entity.function) {
        problems.push(Problem::new(
            key(&["entities", ty, "function"]),
            format!(
                "no function named {:?}; declare it as [{}] with the path of its entity component as source",
                entity.function,
                key(&["functions", &entity.function])
            ),
        ));
    }
    if manifest
        .pipelines
        .values()
        .any(|p| p.function == entity.function)
    {
        problems.push(Problem::new(
            key(&["entities", ty, "function"]),
            format!(
                "function {:?} is also a pipeline's function; an entity's function implements the entity world, a pipeline's the handler world",
                entity.function
            ),
        ));
    }
    if let Some(journal) = manifest.topics.get(&entity.journal)
        && (journal.compaction
            || journal.retention_ms.is_some()
            || journal.retention_bytes.is_some())
    {
        problems.push(Problem::new(
            key(&["topics", &entity.journal]),
            format!(
                "is the journal of entity type {ty:?}: it keeps every event (its states are rebuilt from them), so it takes no compaction, retention_ms or retention_bytes"
            ),
        ));
    }
    for pipeline in manifest.pipelines.values() {
        if pipeline.to.contains(&entity.journal)
            || pipeline.to.contains(&entity.snapshots)
            || pipeline.dead_letter == entity.journal
            || pipeline.dead_letter == entity.snapshots
        {
            problems.push(Problem::new(
                key(&["pipelines"]),
                format!(
                    "a pipeline publishes or dead-letters to {:?}, which only entity type {ty:?} writes (send it commands instead)",
                    entity.journal
                ),
            ));
        }
    }
}

/// Longest view name: its table's name, and its rebuild's (`NAME__rebuild`), must fit in
/// 63 characters.
const MAX_VIEW_NAME_LEN: usize = 54;

/// A table or column name as both view stores take it.
fn column_name_fault(name: &str) -> Option<&'static str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    (!ok).then_some("use 1 to 63 characters of a-z, 0-9 and '_', not starting with a digit")
}

fn check_view(manifest: &Manifest, name: &str, view: &ViewSpec, problems: &mut Vec<Problem>) {
    let here = |k: &str| key(&["views", name, k]);
    if let Some(reason) = name_fault(name) {
        problems.push(Problem::new(
            key(&["views", name]),
            format!("view name {name:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    } else if name.contains("--") {
        problems.push(Problem::new(
            key(&["views", name]),
            format!("view name {name:?} has \"--\"; its table takes the name with '_' for '-', and \"__\" separates the names of its rebuild and indexes"),
        ));
    } else if name.len() > MAX_VIEW_NAME_LEN {
        problems.push(Problem::new(
            key(&["views", name]),
            format!("view name {name:?} is longer than {MAX_VIEW_NAME_LEN} characters (its rebuild's table adds 9)"),
        ));
    } else if ViewSpec::table(name).as_bytes()[0].is_ascii_digit()
        || ViewSpec::table(name).starts_with("weir_")
    {
        problems.push(Problem::new(
            key(&["views", name]),
            "a view's table takes its name: start it with a letter, and not with \"weir-\" or \"weir_\" (weir's own tables)".to_owned(),
        ));
    }
    if !manifest.functions.contains_key(&view.function) {
        problems.push(Problem::new(
            here("function"),
            format!(
                "no function named {:?}; declare it as [{}] with the path of its projection component as source",
                view.function,
                key(&["functions", &view.function])
            ),
        ));
    }
    let elsewhere = manifest
        .pipelines
        .values()
        .any(|p| p.function == view.function)
        || manifest
            .entities
            .values()
            .any(|e| e.function == view.function);
    if elsewhere {
        problems.push(Problem::new(
            here("function"),
            format!(
                "function {:?} is also a pipeline's or an entity's function; a view's function implements the projection world",
                view.function
            ),
        ));
    }
    for source in &view.sources {
        if !manifest.topics.contains_key(source) {
            problems.push(Problem::new(
                here("sources"),
                format!("no topic named {source:?}; declare it in [topics] (or, for an entity type, list the type in entities)"),
            ));
        }
    }
    if view.columns.is_empty() {
        problems.push(Problem::new(
            here("columns"),
            "declares no column; give each as NAME = \"text\" | \"integer\" | \"real\" | \"boolean\" | \"json\"".to_owned(),
        ));
    }
    for column in view.columns.keys() {
        if let Some(reason) = column_name_fault(column) {
            problems.push(Problem::new(
                key(&["views", name, "columns", column]),
                format!("column name {column:?} is invalid: {reason}"),
            ));
        }
    }
    if view.key.is_empty() {
        problems.push(Problem::new(
            here("key"),
            "names no column; a view needs a key".to_owned(),
        ));
    }
    for (what, columns) in [("key", &view.key), ("indexes", &view.indexes)] {
        for column in columns {
            if !view.columns.contains_key(column) {
                problems.push(Problem::new(
                    here(what),
                    format!("{column:?} is not one of the view's columns"),
                ));
            }
        }
    }
    for index in &view.indexes {
        // The longest name of the index: that of the view's rebuild, TABLE__rebuild__INDEX.
        let longest = ViewSpec::table(name).len() + "__rebuild__".len() + index.len();
        if longest > 63 {
            problems.push(Problem::new(
                here("indexes"),
                format!("index {index:?} makes an index name of {longest} characters with the view's name (at most 63: TABLE__rebuild__COLUMN); shorten the view's or the column's name"),
            ));
        }
    }
    for column in &view.key {
        if view.columns.get(column) == Some(&crate::ViewColumnType::Json) {
            problems.push(Problem::new(
                here("key"),
                format!(
                    "{column:?} is a json column; a key column is text, integer, real or boolean"
                ),
            ));
        }
    }
}

/// A source's broker URL, subscriptions, target topic, event attributes and dead letters.
fn check_source(manifest: &Manifest, name: &str, source: &SourceSpec, problems: &mut Vec<Problem>) {
    let at = |field: &str| key(&["sources", name, field]);
    if let Some(reason) = name_fault(name) {
        problems.push(Problem::new(
            key(&["sources", name]),
            format!("source name {name:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    }
    // What follows the authority: a JetStream source's stream, nothing for NATS.
    let path = |rest: &str| {
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        rest.split_once('/').map_or("", |(_, path)| path).to_owned()
    };
    match source.url.split_once("://") {
        Some(("jetstream", rest))
            if path(rest).is_empty() || path(rest).contains(['/', '.', '*', '>', ' ']) =>
        {
            problems.push(Problem::new(
                at("url"),
                "names no stream; write jetstream://HOST[:PORT]/STREAM".to_owned(),
            ))
        }
        Some(("kafka", rest)) if rest.contains(['@', '/']) => problems.push(Problem::new(
            at("url"),
            "write the brokers as kafka://HOST:PORT[,HOST:PORT…]: no credentials (SASL is not \
             supported yet) and no path"
                .to_owned(),
        )),
        Some(("nats", rest)) if !path(rest).is_empty() => problems.push(Problem::new(
            at("url"),
            "a nats:// source reads core subjects and takes no path; read a JetStream stream \
             with jetstream://HOST[:PORT]/STREAM"
                .to_owned(),
        )),
        Some((scheme, rest)) if SourceSpec::KINDS.contains(&scheme) && !rest.is_empty() => {}
        Some((scheme @ ("mqtts" | "ssl" | "rediss" | "tls" | "amqps"), _)) => problems.push(Problem::new(
            at("url"),
            format!(
                "{scheme}:// is not supported yet: weir's sources connect without TLS \
                 (mqtt://, amqp://, redis://, nats://)"
            ),
        )),
                _ => problems.push(Problem::new(
            at("url"),
            format!(
                "{:?} is not a source URL; write the broker as mqtt://HOST[:PORT], amqp://HOST[:PORT][/VHOST], \
                 redis://HOST[:PORT], nats://HOST[:PORT], jetstream://HOST[:PORT]/STREAM or \
                 kafka://HOST:PORT",
                source.url
            ),
        )),
    }
    let kind = source.kind();
    if source.subscribe.iter().any(String::is_empty)
        || (source.subscribe.is_empty() && kind != "jetstream")
    {
        let example = match kind {
            "redis" => "the stream keys to read, such as \"telemetry\"",
            "kafka" => "the Kafka topics to read, such as \"telemetry\"",
            "amqp" => "the queues to consume, such as \"telemetry\"",
            "nats" => "the subjects to subscribe to, such as \"sensors.*.temp\"",
            "jetstream" => "subjects of the stream to read, or leave it out for all",
            _ => "what to subscribe to, such as \"sensors/+/temp\"",
        };
        problems.push(Problem::new(
            at("subscribe"),
            format!("names nothing to read; list {example}"),
        ));
    }
    let positional = SourceSpec::POSITIONAL.contains(&kind);
    if source.start.is_some() && !positional {
        problems.push(Problem::new(
            at("start"),
            format!(
                "only positional sources (redis://, jetstream://, kafka://) take `start`; a {kind}:// \
                 source receives what its broker delivers from when it subscribes"
            ),
        ));
    }
    let positions = SourceSpec::positions_topic(name);
    if positional && positions_taken(manifest, &positions) {
        problems.push(Problem::new(
            key(&["sources", name]),
            format!(
                "topic {positions:?} is where this source keeps its positions; name the app's \
                 topics and dead-letter topics otherwise"
            ),
        ));
    }
    if !manifest.topics.contains_key(&source.topic) {
        problems.push(Problem::new(
            at("topic"),
            undeclared_topic(manifest, &source.topic),
        ));
    } else if manifest
        .entities
        .values()
        .any(|e| e.journal == source.topic || e.snapshots == source.topic)
    {
        problems.push(Problem::new(
            at("topic"),
            format!(
                "{:?} is an entity type's journal, which only its commands write; use a \
                 topic of its own and a pipeline that sends commands",
                source.topic
            ),
        ));
    }
    if source.ty.is_empty() {
        problems.push(Problem::new(
            at("type"),
            "is empty; name the events' CloudEvents type, such as \"com.example.telemetry\""
                .to_owned(),
        ));
    }
    if source.source.as_deref() == Some("") {
        problems.push(Problem::new(
            at("source"),
            "is empty; leave it out to use the broker's URL".to_owned(),
        ));
    }
    if let Some(template) = &source.key {
        match weir_mesh::KeyTemplate::parse(template) {
            Err(e) => problems.push(Problem::new(at("key"), e)),
            Ok(t) if t.reads_headers() && source.url.starts_with("mqtt") => {
                problems.push(Problem::new(
                    at("key"),
                    "reads {header.…}, but MQTT 3.1.1 messages have no headers; use \
                     {subject.N} or {data.FIELD}"
                        .to_owned(),
                ))
            }
            Ok(t) if t.reads_data() && source.data != SourceData::Json => {
                problems.push(Problem::new(
                    at("key"),
                    format!(
                        "reads {{data.…}} from the payload, which only data = \"json\" parses \
                         (this source has data = {:?})",
                        source.data.as_str()
                    ),
                ))
            }
            Ok(_) => {}
        }
    }
    let dead_letter = &source.dead_letter;
    if let Some(reason) = topic_name_fault(dead_letter) {
        problems.push(Problem::new(
            at("dead_letter"),
            format!(
                "dead-letter topic name {dead_letter:?} is invalid: {reason}; {TOPIC_NAME_RULE}"
            ),
        ));
    } else if *dead_letter == source.topic {
        problems.push(Problem::new(
            at("dead_letter"),
            "is the source's own topic; dead-letter to another topic".to_owned(),
        ));
    }
    check_range(
        at("max_payload_bytes"),
        source.max_payload_bytes,
        SourceSpec::MAX_PAYLOAD_BYTES,
        " bytes",
        problems,
    );
}

/// Whether the app uses `topic`, a positions topic, for something else: a topic or a
/// dead-letter topic.
fn positions_taken(manifest: &Manifest, topic: &str) -> bool {
    manifest.topics.contains_key(topic)
        || manifest.pipelines.values().any(|p| p.dead_letter == topic)
        || manifest.sinks.values().any(|s| s.dead_letter == topic)
        || manifest.sources.values().any(|s| s.dead_letter == topic)
}

/// The signature schemes an inbound webhook route checks (`verify`).
const ROUTE_VERIFY: [&str; 3] = ["standard-webhooks", "github", "stripe"];

/// `[routes]`: names, patterns (each valid, none shadowing weir's API, no two the same),
/// methods and functions.
fn check_routes(manifest: &Manifest, problems: &mut Vec<Problem>) {
    let mut router = matchit::Router::new();
    for (name, route) in &manifest.routes {
        let at = |field: &str| key(&["routes", name, field]);
        if let Some(reason) = name_fault(name) {
            problems.push(Problem::new(
                key(&["routes", name]),
                format!("route name {name:?} is invalid: {reason}; {NAME_RULE}"),
            ));
        }
        if !route.path.starts_with('/') || route.path.contains(['?', '#']) {
            problems.push(Problem::new(
                at("path"),
                format!(
                    "{:?} is not a path pattern: start it with '/', with no query or fragment",
                    route.path
                ),
            ));
        } else if RouteSpec::reserved(&route.path) {
            problems.push(Problem::new(
                at("path"),
                format!(
                    "{:?} is weir's own ({}): give the route another path",
                    route.path,
                    RouteSpec::RESERVED.join(", ")
                ),
            ));
        } else if let Err(e) = router.insert(route.path.as_str(), name.as_str()) {
            let reason = match e {
                matchit::InsertError::Conflict { with } => format!(
                    "it conflicts with the path {with:?} of route {:?}",
                    manifest
                        .routes
                        .iter()
                        .find(|(_, r)| r.path == with)
                        .map_or("", |(n, _)| n.as_str())
                ),
                other => other.to_string(),
            };
            problems.push(Problem::new(
                at("path"),
                format!("{:?} cannot be routed: {reason}", route.path),
            ));
        }
        for method in &route.methods {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                problems.push(Problem::new(
                    at("methods"),
                    format!("{method:?} is not an HTTP method"),
                ));
            }
        }
        check_range(
            at("instance_reuse"),
            u64::from(route.instance_reuse),
            u64::from(FunctionSpec::MAX_INSTANCE_REUSE),
            " requests",
            problems,
        );
        if route.topic.is_some() && route.instance_reuse != 1 {
            problems.push(Problem::new(
                at("instance_reuse"),
                "is for a route served by a function; an inbound webhook runs no function"
                    .to_owned(),
            ));
        }
        match &route.topic {
            None if route.function.is_empty() => problems.push(Problem::new(
                key(&["routes", name]),
                "name the `function` that serves the route, or the `topic` an inbound \
                 webhook's requests are appended to"
                    .to_owned(),
            )),
            None if !manifest.functions.contains_key(&route.function) => {
                problems.push(Problem::new(
                    at("function"),
                    format!(
                        "function {:?} is not declared; declare it as [{}]",
                        route.function,
                        key(&["functions", &route.function])
                    ),
                ))
            }
            None => {
                for (field, set) in [
                    ("verify", route.verify.is_some()),
                    ("secret", !route.secrets.is_empty()),
                    ("type", route.ty.is_some()),
                    ("job", route.job),
                ] {
                    if set {
                        problems.push(Problem::new(
                            at(field),
                            "is for inbound webhooks (a route with `topic`); a function's \
                             handler checks what it must itself"
                                .to_owned(),
                        ));
                    }
                }
            }
            Some(_) if !route.function.is_empty() => problems.push(Problem::new(
                key(&["routes", name]),
                "has both `function` and `topic`: a route is served by a function, or appends \
                 inbound webhooks to a topic"
                    .to_owned(),
            )),
            Some(topic) => {
                if !manifest.topics.contains_key(topic) {
                    problems.push(Problem::new(at("topic"), undeclared_topic(manifest, topic)));
                }
                match &route.verify {
                    Some(scheme) if !ROUTE_VERIFY.contains(&scheme.as_str()) => {
                        problems.push(Problem::new(
                            at("verify"),
                            format!(
                                "{scheme:?} is not a signature scheme; use one of {}",
                                ROUTE_VERIFY.join(", ")
                            ),
                        ))
                    }
                    Some(_) if route.secrets.is_empty() => problems.push(Problem::new(
                        at("secret"),
                        "checking signatures needs the sender's secret: { env = \"NAME\" } or \
                         { file = \"PATH\" }, or a list of them"
                            .to_owned(),
                    )),
                    None if !route.secrets.is_empty() => problems.push(Problem::new(
                        at("secret"),
                        "is used with `verify`; name the sender's signature scheme".to_owned(),
                    )),
                    None if route.public => problems.push(Problem::new(
                        at("public"),
                        "a public webhook route without `verify` would let anyone append to \
                         the topic; name the sender's signature scheme, or drop `public` so \
                         callers need a credential"
                            .to_owned(),
                    )),
                    _ => {}
                }
                if route.secrets.iter().any(names_nothing) {
                    problems.push(Problem::new(at("secret"), SECRET_NAMES_NOTHING));
                }
                if route.job && manifest.topics.contains_key(topic) {
                    let readers: Vec<&str> = manifest
                        .pipelines
                        .iter()
                        .filter(|(_, p)| p.from.contains(topic))
                        .map(|(name, _)| name.as_str())
                        .collect();
                    if readers.len() != 1 {
                        problems.push(Problem::new(
                            at("job"),
                            format!(
                                "a job's work is the one pipeline that reads its topic {topic:?}, \
                                 and {} read it ({readers:?}); declare exactly one \
                                 [pipelines.NAME] with `from = {topic:?}`",
                                readers.len()
                            ),
                        ));
                    }
                }
            }
        }
    }
}

fn check_schedule(
    manifest: &Manifest,
    name: &str,
    schedule: &ScheduleSpec,
    problems: &mut Vec<Problem>,
) {
    let at = |field: &str| key(&["schedules", name, field]);
    if let Some(reason) = name_fault(name) {
        problems.push(Problem::new(
            key(&["schedules", name]),
            format!("schedule name {name:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    }
    if manifest.sources.contains_key(name) {
        problems.push(Problem::new(
            key(&["schedules", name]),
            format!(
                "a source is named {name:?} too; schedules and sources keep their positions \
                 by name, so give them different names"
            ),
        ));
    }
    let positions = SourceSpec::positions_topic(name);
    if positions_taken(manifest, &positions) {
        problems.push(Problem::new(
            key(&["schedules", name]),
            format!(
                "topic {positions:?} is where this schedule keeps its last tick; name the \
                 app's topics otherwise"
            ),
        ));
    }
    if let Err(e) = weir_mesh::schedule::Schedule::parse(&schedule.cron, None) {
        problems.push(Problem::new(at("cron"), e));
    }
    if let Some(zone) = &schedule.timezone
        && let Err(e) = weir_mesh::schedule::Schedule::parse("@daily", Some(zone))
    {
        problems.push(Problem::new(at("timezone"), e));
    }
    if !manifest.topics.contains_key(&schedule.topic) {
        problems.push(Problem::new(
            at("topic"),
            undeclared_topic(manifest, &schedule.topic),
        ));
    } else if manifest
        .entities
        .values()
        .any(|e| e.journal == schedule.topic || e.snapshots == schedule.topic)
    {
        problems.push(Problem::new(
            at("topic"),
            format!(
                "{:?} is an entity type's journal, which only its commands write",
                schedule.topic
            ),
        ));
    }
    if schedule.ty.is_empty() {
        problems.push(Problem::new(
            at("type"),
            "is empty; leave it out for \"dev.weir.schedule.tick\"".to_owned(),
        ));
    }
    for reserved in ["schedule", "scheduled", "missed"] {
        if schedule.data.contains_key(reserved) {
            problems.push(Problem::new(
                at("data"),
                format!("sets {reserved:?}, which every tick carries itself; rename it"),
            ));
        }
    }
}

/// A retry policy's attempts, backoffs, multiplier and jitter; `at` is its table's key.
fn check_retry(at: &[&str], retry: &crate::RetrySpec, problems: &mut Vec<Problem>) {
    let retry_key = |field: &str| {
        let mut path = at.to_vec();
        path.push(field);
        key(&path)
    };
    if !(1..=100).contains(&retry.max_attempts) {
        problems.push(Problem::new(
            retry_key("max_attempts"),
            format!("is {}; use 1 (no retry) to 100", retry.max_attempts),
        ));
    }
    if retry.max_backoff_ms > 3_600_000 {
        problems.push(Problem::new(
            retry_key("max_backoff_ms"),
            format!(
                "is {} ms; use at most 3600000 (an hour)",
                retry.max_backoff_ms
            ),
        ));
    }
    if retry.initial_backoff_ms > retry.max_backoff_ms {
        problems.push(Problem::new(
            retry_key("initial_backoff_ms"),
            format!(
                "is {} ms, more than max_backoff_ms ({} ms); lower it or raise max_backoff_ms",
                retry.initial_backoff_ms, retry.max_backoff_ms
            ),
        ));
    }
    if !(1.0..=10.0).contains(&retry.multiplier) {
        problems.push(Problem::new(
            retry_key("multiplier"),
            format!("is {}; use 1.0 to 10.0", retry.multiplier),
        ));
    }
    if !(0.0..=1.0).contains(&retry.jitter) {
        problems.push(Problem::new(
            retry_key("jitter"),
            format!("is {}; use 0.0 (none) to 1.0", retry.jitter),
        ));
    }
}

const SECRET_NAMES_NOTHING: &str =
    "names no source; use { env = \"VARIABLE\" } or { file = \"path\" }";

/// Whether a secret's source is empty (`{ env = "" }`, `{ file = "" }`).
fn names_nothing(source: &SecretSource) -> bool {
    match source {
        SecretSource::Env(var) => var.is_empty(),
        SecretSource::File(path) => path.as_os_str().is_empty(),
    }
}

/// A sink's topic, URL, secrets, timeout, retry policy, group and dead letters.
fn check_sink(manifest: &Manifest, name: &str, sink: &SinkSpec, problems: &mut Vec<Problem>) {
    let at = |field: &str| key(&["sinks", name, field]);
    if let Some(reason) = name_fault(name) {
        problems.push(Problem::new(
            key(&["sinks", name]),
            format!("sink name {name:?} is invalid: {reason}; {NAME_RULE}"),
        ));
    }
    if !manifest.topics.contains_key(&sink.topic) {
        problems.push(Problem::new(
            at("topic"),
            undeclared_topic(manifest, &sink.topic),
        ));
    }
    let webhook = matches!(sink.url.split_once("://"), Some(("http" | "https", _)));
    let broker = matches!(
        sink.url.split_once("://"),
        Some((
            "nats" | "jetstream" | "redis" | "kafka" | "amqp" | "mqtt" | "tcp",
            _
        ))
    );
    match sink.url.split_once("://") {
        Some(("http" | "https" | "nats" | "jetstream" | "redis" | "kafka" | "amqp" | "mqtt" | "tcp", rest))
            if !rest.is_empty() => {}
        Some((scheme @ ("mqtts" | "ssl" | "amqps" | "rediss"), _)) => {
            problems.push(Problem::new(
                at("url"),
                format!("{scheme}:// is not supported yet: weir's broker sinks connect without TLS"),
            ))
        }
        _ => problems.push(Problem::new(
            at("url"),
            format!("{:?} is not a sink URL; write a webhook as https://HOST/PATH, or a broker as nats://HOST, jetstream://HOST or redis://HOST", sink.url),
        )),
    }
    match (&sink.to, webhook || !broker) {
        (Some(_), true) if webhook => problems.push(Problem::new(
            at("to"),
            "is for broker sinks; a webhook delivers to its URL".to_owned(),
        )),
        (None, false) => problems.push(Problem::new(
            at("to"),
            "is missing: name the subject (NATS, JetStream), stream key (Redis), topic (Kafka) or routing key (AMQP: QUEUE or EXCHANGE/KEY), MQTT topic to publish to".to_owned(),
        )),
        (Some(to), false) if to.is_empty() || to.contains(['*', '>', ' ', '+', '#']) => problems.push(Problem::new(
            at("to"),
            format!("{to:?} is not a subject or stream key to publish to"),
        )),
        _ => {}
    }
    if broker && !sink.secrets.is_empty() {
        problems.push(Problem::new(
            at("secret"),
            "signs webhooks only; a broker sink has no signature".to_owned(),
        ));
    }
    if broker && sink.mode == crate::SinkMode::Binary {
        problems.push(Problem::new(
            at("mode"),
            "is for webhooks; a broker sink publishes structured CloudEvents JSON".to_owned(),
        ));
    }
    if sink.secrets.iter().any(names_nothing) {
        problems.push(Problem::new(at("secret"), SECRET_NAMES_NOTHING));
    }
    check_range(
        at("timeout_ms"),
        sink.timeout_ms,
        SinkSpec::MAX_TIMEOUT_MS,
        " ms",
        problems,
    );
    check_retry(&["sinks", name, "retry"], &sink.retry, problems);
    check_range(
        at("max_in_flight"),
        sink.max_in_flight.into(),
        SinkSpec::MAX_IN_FLIGHT,
        "",
        problems,
    );
    if sink.circuit_failures > sink.retry.max_attempts {
        problems.push(Problem::new(
            at("circuit_failures"),
            format!(
                "is {}, more than retry.max_attempts ({}), so an outage would dead-letter \
                 events before the circuit opens; use 0 (no breaker) to {}",
                sink.circuit_failures, sink.retry.max_attempts, sink.retry.max_attempts
            ),
        ));
    }
    let dead_letter = &sink.dead_letter;
    if let Some(reason) = topic_name_fault(dead_letter) {
        problems.push(Problem::new(
            at("dead_letter"),
            format!(
                "dead-letter topic name {dead_letter:?} is invalid: {reason}; {TOPIC_NAME_RULE}"
            ),
        ));
    } else if *dead_letter == sink.topic {
        problems.push(Problem::new(
            at("dead_letter"),
            "is the topic the sink reads, so failed events would come back in a loop; \
             dead-letter to another topic"
                .to_owned(),
        ));
    }
    if let Some(reason) = topic_name_fault(&sink.group) {
        problems.push(Problem::new(
            at("group"),
            format!(
                "consumer group name {:?} is invalid: {reason}; {TOPIC_NAME_RULE}",
                sink.group
            ),
        ));
    } else if manifest
        .sinks
        .iter()
        .any(|(other, s)| other.as_str() < name && s.group == sink.group)
    {
        problems.push(Problem::new(
            at("group"),
            format!(
                "{:?} is another sink's consumer group too; give each sink its own",
                sink.group
            ),
        ));
    } else if manifest.pipelines.values().any(|p| p.group == sink.group) {
        problems.push(Problem::new(
            at("group"),
            format!(
                "{:?} is a pipeline's consumer group too; give the sink its own",
                sink.group
            ),
        ));
    }
}

/// Two pipelines in one group would split the events between them, each seeing only some.
fn check_groups_are_unique(
    pipelines: &BTreeMap<String, PipelineSpec>,
    problems: &mut Vec<Problem>,
) {
    let mut members: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, pipeline) in pipelines {
        members.entry(&pipeline.group).or_default().push(name);
    }
    for (group, mut names) in members {
        if names.len() < 2 {
            continue;
        }
        // The pipeline the group is named after keeps it, so the problem lands on the
        // pipeline that borrowed the name, which is the one that has a `group` key to edit.
        names.sort_by_key(|name| *name != group);
        let (owner, others) = names.split_first().expect("the group has two members");
        let defaulted = if *owner == group {
            " (a pipeline's group is its name unless set)"
        } else {
            ""
        };
        for name in others {
            problems.push(Problem::new(
                key(&["pipelines", name, "group"]),
                format!(
                    "consumer group {group:?} is also used by pipeline {owner:?}{defaulted}, \
                     and the two would split its events; give each pipeline its own group"
                ),
            ));
        }
    }
}

pub(crate) fn check_range(
    key: String,
    value: u64,
    max: u64,
    unit: &str,
    problems: &mut Vec<Problem>,
) {
    if !(1..=max).contains(&value) {
        problems.push(Problem::new(
            key,
            format!("is {value}{unit}; use a value from 1 to {max}{unit}"),
        ));
    }
}

fn undeclared_topic(manifest: &Manifest, topic: &str) -> String {
    let declare = format!("declare it as [{}]", key(&["topics", topic]));
    if manifest.topics.is_empty() {
        format!("topic {topic:?} is not declared; {declare}")
    } else {
        format!(
            "topic {topic:?} is not declared; {declare} or use a declared topic: {}",
            list(manifest.topics.keys())
        )
    }
}

fn list<'a>(names: impl Iterator<Item = &'a String>) -> String {
    names.map(String::as_str).collect::<Vec<_>>().join(", ")
}

/// Why `name` is not a valid topic or consumer group name under Kafka's rules, if it is
/// not.
fn topic_name_fault(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("it has a character other than a-z, A-Z, 0-9, '.', '_' and '-'")
    } else if name.len() > MAX_TOPIC_NAME_LEN {
        Some("it is longer than 249 characters")
    } else if name == "." || name == ".." {
        Some("\".\" and \"..\" are reserved")
    } else {
        None
    }
}

/// Why `name` is not a valid app, function or pipeline name, if it is not.
pub fn name_fault(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("it has a character other than a-z, 0-9 and '-'")
    } else if name.len() > MAX_NAME_LEN {
        Some("it is longer than 63 characters")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("it starts or ends with '-'")
    } else {
        None
    }
}

/// A dotted TOML key, each segment quoted where TOML requires it:
/// `["topics", "crm.orders", "partitions"]` is `topics."crm.orders".partitions`.
pub(crate) fn key(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|segment| key_segment(segment))
        .collect::<Vec<_>>()
        .join(".")
}

fn key_segment(segment: &str) -> String {
    let bare = !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        return segment.to_owned();
    }
    let mut quoted = String::with_capacity(segment.len() + 2);
    quoted.push('"');
    for c in segment.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `[schemas.<type>]`: a valid event type and at least one version. Whether the files
/// exist and are compatible is for whoever reads them (the node at start and deploy).
fn check_schema(
    manifest: &Manifest,
    ty: &str,
    schema: &crate::SchemaSpec,
    problems: &mut Vec<Problem>,
) {
    if let Err(e) = weir_schema::check_type(ty) {
        problems.push(Problem::new(key(&["schemas", ty]), e.to_string()));
    }
    if schema.versions.is_empty() {
        problems.push(Problem::new(
            key(&["schemas", ty, "versions"]),
            "is empty; list the type's JSON Schema files, version 1 first",
        ));
    }
    let versions = schema.versions.len() as u64;
    // The steps, once they start, lead to the latest version.
    let steps: Vec<u64> = schema
        .upcasters()
        .map(|(from, _)| u64::from(from))
        .collect();
    if let Some(first) = steps.iter().copied().filter(|n| *n >= 1).min() {
        for n in first..versions {
            if !steps.contains(&n) {
                problems.push(Problem::new(
                    key(&["schemas", ty, "upcast"]),
                    format!(
                        "has no step from version {n} to {}: the upcasters must lead from the first one to the latest version, {versions}",
                        n + 1
                    ),
                ));
            }
        }
    }
    for (from, step) in &schema.upcast {
        let at = key(&["schemas", ty, "upcast", from]);
        match from.parse::<u64>() {
            Ok(n) if n >= 1 && n < versions && n.to_string() == *from => {}
            _ => problems.push(Problem::new(
                at.clone(),
                format!(
                    "upcasters are keyed by the version they start from, 1 to {}: this type has {versions} version{}",
                    versions.saturating_sub(1),
                    if versions == 1 { "" } else { "s" }
                ),
            )),
        }
        let mapping = match step {
            crate::UpcastSpec::Step(weir_schema::Step::Mapping(mapping)) => mapping,
            crate::UpcastSpec::Step(weir_schema::Step::Function(function)) => {
                if !manifest.functions.contains_key(function) {
                    problems.push(Problem::new(
                        format!("{at}.function"),
                        format!("names {function:?}, which is not declared under [functions]"),
                    ));
                }
                continue;
            }
            crate::UpcastSpec::Both => {
                problems.push(Problem::new(
                    at.clone(),
                    "has both a function and a mapping (remove, rename, default); a step is one or the other",
                ));
                continue;
            }
        };
        let fields = mapping
            .remove
            .iter()
            .chain(mapping.rename.iter().flat_map(|(a, b)| [a, b]))
            .chain(mapping.default.iter().map(|(f, _)| f));
        for field in fields {
            if let Err(reason) = weir_schema::upcast::check_field(field) {
                problems.push(Problem::new(at.clone(), reason));
            }
        }
    }
}
