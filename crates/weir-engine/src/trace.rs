//! Traces: the spans of a publish, of a pipeline step (one event through filter, call,
//! routing and commit) and of a function call, joined across topics by the W3C
//! `traceparent` (and `tracestate`) each CloudEvent carries as the CloudEvents
//! distributed-tracing extension.
//!
//! The model:
//! - a **publish** span (`publish <topic>`, kind producer) is the child of the trace
//!   context it was published with (the event's `traceparent`, which the gateway fills
//!   from the request's `traceparent` header when the event has none); each event
//!   published under it is stored with the publish span's `traceparent`;
//! - a **pipeline step** span (`process <topic>`, kind consumer) is the child of its input
//!   event's `traceparent`, and lasts until the step's batch is committed; the function's
//!   outputs are stored with the step span's `traceparent`, unless the function set one of
//!   its own (an output that copied the input's counts as not set);
//! - a **function call** span (`call <function>`) is the child of its step, one per try.
//!
//! So a trace crosses every pipeline an event flows through: publish, step, call, step of
//! the next pipeline, call, and so on.
//!
//! The spans are `tracing` spans on the target [`TARGET`], which only the OpenTelemetry
//! layer that `weir serve` installs when OTLP export is configured listens to (the log
//! output leaves them out). Without that layer their callsites are disabled: a span costs
//! one check of its callsite's cached interest, and events keep the `traceparent` they
//! came with (a step's outputs get their input's), as before traces existed.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use weir_cloudevents::{CloudEvent, ExtensionValue};

use crate::routing::is_traceparent;

/// The `tracing` target of weir's trace spans. Exported over OTLP when configured; left
/// out of the logs unless `WEIR_LOG` names it (`WEIR_LOG=info,weir::trace=info`).
pub const TARGET: &str = "weir::trace";

/// The event's `traceparent` extension, if it is a string.
pub(crate) fn traceparent(event: &CloudEvent) -> Option<&str> {
    match event.extensions.get("traceparent") {
        Some(ExtensionValue::String(tp)) => Some(tp),
        _ => None,
    }
}

/// The event's `tracestate` extension, if it is a string.
pub(crate) fn tracestate(event: &CloudEvent) -> Option<&str> {
    match event.extensions.get("tracestate") {
        Some(ExtensionValue::String(ts)) => Some(ts),
        _ => None,
    }
}

/// The span context a W3C `traceparent` (and `tracestate`) names, as a remote parent;
/// `None` if the `traceparent` is not one weir can carry.
fn remote_parent(traceparent: &str, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    if !is_traceparent(traceparent) {
        return None;
    }
    let mut parts = traceparent.split('-').skip(1);
    let trace_id = TraceId::from_hex(parts.next()?).ok()?;
    let span_id = SpanId::from_hex(parts.next()?).ok()?;
    let flags = u8::from_str_radix(parts.next()?, 16).ok()?;
    let state = tracestate
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let context = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}

/// Make `span` a child of the trace context `traceparent` names. Does nothing when the
/// span is not recorded or the `traceparent` is not valid (the span then starts a trace).
pub(crate) fn continue_trace(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if span.is_disabled() {
        return;
    }
    if let Some(parent) = traceparent.and_then(|tp| remote_parent(tp, tracestate)) {
        // Fails only if the OpenTelemetry layer is missing: the span then is not exported.
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` of `span` as the OpenTelemetry layer exports it, or `None` when
/// nothing records it (no OTLP export configured).
pub(crate) fn span_traceparent(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            span_context.trace_id(),
            span_context.span_id(),
            span_context.trace_flags().to_u8()
        )
    })
}

/// The span of publishing `events` to `topic`: the child of the first event's valid
/// `traceparent` (see [`publish_traceparents`] for the others).
pub(crate) fn publish_span(topic: &str, events: &[CloudEvent]) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "producer",
        messaging.system = "weir",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = events.len(),
        otel.status_description = tracing::field::Empty,
    );
    if !span.is_disabled()
        && let Some(event) = events
            .iter()
            .find(|e| traceparent(e).is_some_and(is_traceparent))
    {
        continue_trace(&span, traceparent(event), tracestate(event));
    }
    span
}

/// Which `traceparent` each event is stored with when published under `span`: `None`
/// keeps the event's own. An event without a valid `traceparent`, or with the one the
/// publish span continues, gets the publish span's; an event of another trace (in a batch
/// of several) keeps its own, so its steps stay in its trace.
pub(crate) fn publish_traceparents(
    span: &Span,
    events: &[CloudEvent],
) -> Option<Vec<Option<String>>> {
    let own = span_traceparent(span)?;
    let parent = events
        .iter()
        .filter_map(traceparent)
        .find(|tp| is_traceparent(tp));
    Some(
        events
            .iter()
            .map(|event| match traceparent(event) {
                Some(tp) if is_traceparent(tp) && Some(tp) != parent => None,
                _ => Some(own.clone()),
            })
            .collect(),
    )
}

/// The span of one event's step through a pipeline: the child of the event's
/// `traceparent`. Disabled (and free) unless traces are exported.
pub(crate) fn step_span(
    pipeline: &str,
    topic: &str,
    partition: u32,
    offset: u64,
    event: &CloudEvent,
) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "pipeline_step",
        otel.name = %format_args!("process {topic}"),
        otel.kind = "consumer",
        messaging.system = "weir",
        messaging.operation.type = "process",
        messaging.destination.name = topic,
        messaging.destination.partition.id = partition,
        messaging.message.id = %event.id,
        weir.pipeline = pipeline,
        weir.offset = offset,
        weir.outcome = tracing::field::Empty,
    );
    continue_trace(&span, traceparent(event), tracestate(event));
    span
}

/// The span of one call of a function on a step's event (one per try).
pub(crate) fn call_span(step: &Span, function: &str, version: &str, attempt: u32) -> Span {
    tracing::info_span!(
        target: TARGET,
        parent: step,
        "function_call",
        otel.name = %format_args!("call {function}"),
        otel.kind = "internal",
        weir.function = function,
        weir.function.version = version,
        weir.attempt = attempt,
        otel.status_description = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests;
