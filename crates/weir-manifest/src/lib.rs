//! The app manifest `weir.toml`: parsing, defaults and validation, as pure functions over
//! text and plain data.
//!
//! [`Manifest::from_toml_str`] turns the text into a [`Manifest`] with every default filled
//! in and every path resolved, and returns it only if [`Manifest::validate`] finds no
//! problem. Validation reports all problems at once, each naming the dotted key it is
//! about (`pipelines.erp-to-crm.function`), so one round of edits can fix them all.
//!
//! **API Boundary:** the only IO is [`Manifest::load`], which reads one file. Whether a
//! function's `source` exists or is a valid component is for whoever loads it to find out.
//!
//! **Architecture Invariant:** every table of the format denies unknown keys, so a typo is
//! an error naming the key rather than a setting silently ignored.
//!
//! # The format
//!
//! ```toml
//! [app]
//! name = "orders"           # optional; 1 to 63 of a-z, 0-9, '-'; default "app"
//!
//! [topics."erp.sales-orders"]
//! partitions = 4            # optional; 1 to 10000; default 1
//! schema = "required"       # optional; "optional" (default): events whose type has a
//!                           # schema must match it; "required": every event's type must
//!
//! [schemas.SalesOrderCreated]   # the JSON Schema (draft 2020-12) of a CloudEvents type
//! versions = ["schemas/sales-order-created.v1.json"]  # version N is the Nth file
//! compatibility = "backward" # optional; none, backward (default), forward, full, or one of
//!                            # them with _transitive (checked against every version)
//!
//! [functions.enrich-order]
//! # the component's path, relative to the manifest's directory
//! source = "enrich-order/target/wasm32-wasip2/release/enrich_order.wasm"
//! # optional; deadline 1 to 60000 ms (default 100), memory 1 to 4096 MiB (default 64),
//! # output bytes per call (default 1 MiB), outputs per call (default 100), fuel (default
//! # off), cpu_percent: a CPU quota in % of one core for all the function's calls (default off)
//! limits = { deadline_ms = 100, memory_mb = 64, max_output_bytes = 1048576, max_outputs = 100 }
//! instance_reuse = 1000     # optional; calls per warm instance, 1 = fresh per event
//!
//! [functions.enrich-order.config]   # optional; read by the function via wasi:config
//! currency = "EUR"          # strings, integers, floats and booleans; kept as strings
//! "rate.USD" = 0.92
//!
//! [functions.enrich-order.secrets]  # optional; read like config, never printed
//! api-token = { env = "MASTERDATA_TOKEN" }       # or { file = "secrets/token" }
//!
//! [functions.enrich-order.capabilities]         # optional; everything else is denied
//! keyvalue = ["customers"]  # declared [keyvalue.<name>] namespaces it may use
//! http = ["masterdata.example.com", "127.0.0.1:8080"]  # hosts it may call
//! http_timeout_ms = 5000    # optional; per request, capped by the call's deadline
//!
//! [keyvalue.customers]      # a namespace of the embedded key-value store
//! seed = "customers.json"   # optional; {"key": value} written at start where missing
//!
//! [pipelines.erp-to-crm]
//! from = "erp.sales-orders" # one declared topic, a pattern ("erp.*"), or a list of them
//! function = "enrich-order" # a declared function
//! to = ["crm.orders"]       # optional; the declared topics the function may publish to
//! group = "erp-to-crm"      # optional; consumer group, default the pipeline's name
//! start = "earliest"        # optional; where a new group starts: "earliest" or "latest"
//! ordering = "key"          # optional; "key" (default), "partition" or "none"
//! concurrency = 4           # optional; 1 to 1024 calls at once across the pipeline
//! linger_ms = 0             # optional; 0 to 1000: wait this long for a fuller batch
//! dead_letter = "erp-to-crm.dlq"  # optional; the default is "<pipeline>.dlq"
//!
//! [pipelines.erp-to-crm.retry]    # optional; for errors the function says are retryable
//! max_attempts = 5          # calls in all, 1 to 100 (default 5; 1 = no retry)
//! initial_backoff_ms = 100  # wait before the second attempt (default 100)
//! max_backoff_ms = 10000    # longest wait (default 10000)
//! multiplier = 2.0          # each wait is the previous one times this (default 2.0)
//! jitter = 0.2              # each wait varies randomly by up to this fraction (default 0.2)
//!
//! [pipelines.erp-to-crm.filter]   # optional; events that do not match skip the function
//! type = ["com.erp.SalesOrderCreated"]  # one pattern or a list; any may match
//! source = "erp/*"          # a trailing '*' matches any rest, "*" only presence
//! extensions = { region = "eu" }
//! ```
//!
//! Topic and group names follow Kafka's rules: 1 to 249 of a-z, A-Z, 0-9, '.', '_', '-',
//! other than "." and "..". Function, pipeline and app names are 1 to 63 of a-z, 0-9 and
//! '-', not starting or ending with '-'.
//!
//! `[auth]`, `[http]` and `[limits]`, the node's front door, are described in
//! `front_door`.
//!
//! A new section is three additions: its serde table in `document`, its resolved type in
//! `manifest`, its rules in `validate`.

mod document;
mod error;
mod front_door;
mod manifest;
mod validate;

pub use error::{Error, Problem, Result};
pub use front_door::{
    ADMIN_OPERATIONS, ADMIN_ROLE, AuthSpec, CorsSpec, HttpSpec, JWT_ALGORITHMS, JwtSpec,
    NodeLimits, RoleSpec, topic_pattern_fault,
};
pub use manifest::{
    AppSection, CapabilitiesSpec, EntitySpec, FsyncSpec, FunctionSpec, KeyValueSpec, LimitsSpec,
    Manifest, MissedTicks, Ordering, PipelineFilter, PipelineSpec, RetrySpec, RouteSpec,
    ScheduleSpec, SchemaPolicy, SchemaSpec, SecretSource, SinkMode, SinkSpec, SourceData,
    SourceSpec, StartPosition, TopicSpec, UpcastSpec, ViewColumnType, ViewSpec, ViewStoreSpec,
    expand_sources, glob_match,
};
pub use validate::{HttpGrantSpec, name_fault, parse_http_grant};

#[cfg(test)]
mod tests;
