//! The node's metrics: every family the engine records, named and described here, and
//! the handles the hot paths keep so that an event costs an atomic add, not a lookup of
//! its labels. Recorded into whatever `metrics` recorder the process installed (`weir
//! serve` installs the Prometheus one before the node starts); without one they cost
//! next to nothing.
//!
//! Labels are names the app declares (topic, group, pipeline, key-value namespace), a
//! partition number, or a word from a fixed set (outcome, op), never event data.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use metrics::{Counter, Unit, counter, describe_counter, describe_gauge, gauge};

pub(crate) const TOPIC_EVENTS_IN: &str = "weir_topic_events_in_total";
pub(crate) const TOPIC_EVENTS_OUT: &str = "weir_topic_events_out_total";
pub(crate) const CONSUMER_LAG: &str = "weir_consumer_lag_events";
pub(crate) const PIPELINE_EVENTS: &str = "weir_pipeline_events_total";
pub(crate) const PIPELINE_RETRIES: &str = "weir_pipeline_retries_total";
pub(crate) const KV_OPERATIONS: &str = "weir_kv_operations_total";
pub(crate) const SOURCE_MESSAGES: &str = "weir_source_messages_total";
pub(crate) const SOURCE_CONNECTED: &str = "weir_source_connected";
pub(crate) const SINK_EVENTS: &str = "weir_sink_events_total";
pub(crate) const SINK_RETRIES: &str = "weir_sink_retries_total";
pub(crate) const SINK_CIRCUIT: &str = "weir_sink_circuit_transitions_total";

/// Describe the engine's families (and the function host's) to the installed recorder.
/// Run when a node starts; describing again is harmless.
pub(crate) fn describe_metrics() {
    describe_counter!(
        "weir_route_requests_total",
        Unit::Count,
        "requests served by an HTTP route's function, by route and status (failed: the call failed, answered 5xx by the gateway)"
    );
    metrics::describe_histogram!(
        "weir_route_request_seconds",
        Unit::Seconds,
        "time an HTTP route's function took to answer, response body included"
    );
    describe_counter!(
        TOPIC_EVENTS_IN,
        Unit::Count,
        "events appended to a topic: published (HTTP, weir publish) or written by a pipeline (outputs and dead letters)"
    );
    describe_counter!(
        TOPIC_EVENTS_OUT,
        Unit::Count,
        "events read from a topic: by pipelines, live subscriptions, consumer groups, re-drives, replays and GET .../events"
    );
    describe_gauge!(
        CONSUMER_LAG,
        Unit::Count,
        "events in a partition not yet committed by a consumer group (pipelines' and subscribers' groups), as of the last scrape"
    );
    describe_counter!(
        PIPELINE_EVENTS,
        Unit::Count,
        "source events a pipeline committed, by outcome: processed (the function's outputs written), filtered (kept from the function), dead_lettered"
    );
    describe_counter!(
        PIPELINE_RETRIES,
        Unit::Count,
        "function calls a pipeline tried again after a retryable failure"
    );
    describe_counter!(
        KV_OPERATIONS,
        Unit::Count,
        "key-value store operations (functions, HTTP and seeds), by namespace and op"
    );
    describe_counter!(
        SOURCE_MESSAGES,
        Unit::Count,
        "messages a source took from its broker and made durable, by outcome: appended (as events of its topic), dead_lettered"
    );
    describe_counter!(
        SINK_EVENTS,
        Unit::Count,
        "events a sink finished with, by outcome: delivered (the receiver answered 2xx), dead_lettered"
    );
    describe_counter!(
        SINK_RETRIES,
        Unit::Count,
        "deliveries a sink tried again after a failed attempt"
    );
    describe_counter!(
        SINK_CIRCUIT,
        Unit::Count,
        "a sink's circuit breaker changing state, by the state it went to: open, half_open, closed"
    );
    describe_gauge!(
        SOURCE_CONNECTED,
        Unit::Count,
        "1 while this node runs the source and it is connected to its broker, else 0, as of the last scrape"
    );
    weir_wasm::describe_metrics();
}

/// Per topic, a counter of one family, made on first use: a lookup by `&str` (no
/// allocation) after that. Topic names are declared, so the map stays small.
pub(crate) struct PerTopic {
    name: &'static str,
    counters: RwLock<HashMap<String, Counter>>,
}

impl PerTopic {
    fn new(name: &'static str) -> PerTopic {
        PerTopic {
            name,
            counters: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn get(&self, topic: &str) -> Counter {
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
        {
            return c.clone();
        }
        let made = counter!(self.name, "topic" => topic.to_owned());
        self.counters
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(topic.to_owned())
            .or_insert(made)
            .clone()
    }
}

/// Events appended to each topic.
pub(crate) fn events_in(topic: &str) -> Counter {
    static IN: OnceLock<PerTopic> = OnceLock::new();
    IN.get_or_init(|| PerTopic::new(TOPIC_EVENTS_IN)).get(topic)
}

/// Events sink `sink` finished with, by outcome (`delivered`, `dead_lettered`).
pub(crate) fn sink_events(sink: &str, outcome: &'static str) -> Counter {
    counter!(SINK_EVENTS, "sink" => sink.to_owned(), "outcome" => outcome)
}

/// Deliveries sink `sink` tried again.
pub(crate) fn sink_retries(sink: &str) -> Counter {
    counter!(SINK_RETRIES, "sink" => sink.to_owned())
}

/// Sink `sink`'s circuit went to `to` (`open`, `half_open`, `closed`).
pub(crate) fn sink_circuit_transitions(sink: &str, to: &'static str) -> Counter {
    counter!(SINK_CIRCUIT, "sink" => sink.to_owned(), "to" => to)
}

/// Whether this node runs source `source`, connected (1) or not (0).
pub(crate) fn source_connected(source: &str, connected: bool) {
    gauge!(SOURCE_CONNECTED, "source" => source.to_owned()).set(if connected { 1.0 } else { 0.0 });
}

/// Messages source `source` made durable, by outcome (`appended`, `dead_lettered`).
pub(crate) fn source_messages(source: &str, outcome: &'static str) -> Counter {
    counter!(SOURCE_MESSAGES, "source" => source.to_owned(), "outcome" => outcome)
}

/// Events read from each topic.
pub(crate) fn events_out(topic: &str) -> Counter {
    static OUT: OnceLock<PerTopic> = OnceLock::new();
    OUT.get_or_init(|| PerTopic::new(TOPIC_EVENTS_OUT))
        .get(topic)
}

/// A pipeline's handles, made when it is made.
pub(crate) struct PipelineMetrics {
    pub(crate) processed: Counter,
    pub(crate) filtered: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) retries: Counter,
    /// Events in to each topic it writes (its `to` topics and its dead-letter topic).
    targets: Vec<(String, Counter)>,
}

impl PipelineMetrics {
    pub(crate) fn new<'a>(
        pipeline: &str,
        targets: impl IntoIterator<Item = &'a String>,
    ) -> PipelineMetrics {
        let outcome = |outcome: &'static str| counter!(PIPELINE_EVENTS, "pipeline" => pipeline.to_owned(), "outcome" => outcome);
        PipelineMetrics {
            processed: outcome("processed"),
            filtered: outcome("filtered"),
            dead_lettered: outcome("dead_lettered"),
            retries: counter!(PIPELINE_RETRIES, "pipeline" => pipeline.to_owned()),
            targets: targets
                .into_iter()
                .map(|t| (t.clone(), events_in(t)))
                .collect(),
        }
    }

    /// Count a committed transaction's records into their topics.
    pub(crate) fn appended(&self, appends: &[(String, Vec<weir_log::Record>)]) {
        for (topic, records) in appends {
            let n = records.len() as u64;
            match self.targets.iter().find(|(t, _)| t == topic) {
                Some((_, c)) => c.increment(n),
                None => events_in(topic).increment(n),
            }
        }
    }
}

/// Set the lag gauge of `group` in `topic`'s `partition`.
pub(crate) fn record_lag(group: &str, topic: &str, partition: u32, lag: u64) {
    gauge!(
        CONSUMER_LAG,
        "group" => group.to_owned(),
        "topic" => topic.to_owned(),
        "partition" => partition.to_string()
    )
    .set(lag as f64);
}

/// The key-value operations counted, as their `op` label.
#[derive(Clone, Copy)]
pub(crate) enum KvOp {
    Get,
    Set,
    Delete,
    Exists,
    ListKeys,
    WriteEntries,
}

/// The `op` labels, in the order of [`KvOp`].
const KV_OPS: [&str; 6] = [
    "get",
    "set",
    "delete",
    "exists",
    "list_keys",
    "write_entries",
];

/// Per namespace, a counter per op, made on first use.
#[derive(Default)]
pub(crate) struct KvMetrics {
    namespaces: RwLock<HashMap<String, Arc<[Counter; 6]>>>,
}

impl KvMetrics {
    pub(crate) fn count(&self, namespace: &str, op: KvOp) {
        self.counters(namespace)[op as usize].increment(1);
    }

    fn counters(&self, namespace: &str) -> Arc<[Counter; 6]> {
        if let Some(c) = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
        {
            return c.clone();
        }
        let made = Arc::new(
            KV_OPS
                .map(|op| counter!(KV_OPERATIONS, "namespace" => namespace.to_owned(), "op" => op)),
        );
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(namespace.to_owned())
            .or_insert(made)
            .clone()
    }
}

/// The node's key-value metrics, shared by its store wrapper.
pub(crate) fn kv_metrics() -> &'static KvMetrics {
    static KV: OnceLock<KvMetrics> = OnceLock::new();
    KV.get_or_init(KvMetrics::default)
}
