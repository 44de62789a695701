use std::sync::{Arc, Mutex};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use weir_cloudevents::{CloudEvent, ExtensionValue};

use super::*;

const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// Keeps every exported span.
#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// Run `f` with the OpenTelemetry layer on [`TARGET`], as `weir serve` installs it with
/// an OTLP endpoint, and return the spans it exported.
fn exported(f: impl FnOnce()) -> Vec<SpanData> {
    let collect = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(collect.clone())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("test"))
        .with_filter(
            tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::TRACE),
        );
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, f);
    provider.shutdown().unwrap();
    collect.0.lock().unwrap().clone()
}

fn event(id: &str, traceparent: Option<&str>) -> CloudEvent {
    let mut event = CloudEvent::new(id, "test", "t");
    if let Some(tp) = traceparent {
        event
            .extensions
            .insert("traceparent".into(), ExtensionValue::String(tp.into()));
    }
    event
}

#[test]
fn without_the_opentelemetry_layer_events_keep_their_context() {
    // A subscriber that logs but exports nothing, as `weir serve` without an endpoint.
    let subscriber = tracing_subscriber::registry();
    tracing::subscriber::with_default(subscriber, || {
        let events = [event("a", Some(PARENT)), event("b", None)];
        let span = publish_span("t", &events);
        assert_eq!(span_traceparent(&span), None);
        assert_eq!(publish_traceparents(&span, &events), None);
    });
}

#[test]
fn remote_parent_reads_a_w3c_traceparent() {
    let cx = remote_parent(PARENT, Some("vendor=x")).unwrap();
    let span = cx.span();
    let sc = span.span_context();
    assert_eq!(
        sc.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
    assert!(sc.is_sampled() && sc.is_remote());
    assert_eq!(sc.trace_state().header(), "vendor=x");
    assert!(
        remote_parent(
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            None
        )
        .is_none()
    );
    assert!(remote_parent("garbage", None).is_none());
}

#[test]
fn publish_step_and_call_spans_chain_through_traceparents() {
    let mut stored = Vec::new();
    let mut output_traceparent = None;
    let spans = exported(|| {
        let events = [
            event("a", Some(PARENT)),
            event("b", None),
            event(
                "c",
                Some("00-11111111111111111111111111111111-2222222222222222-01"),
            ),
        ];
        let publish = publish_span("in", &events);
        stored = publish_traceparents(&publish, &events).unwrap();
        let tp = stored[0].clone().unwrap();
        drop(publish);

        // The pipeline reads event `a` back with the publish span's traceparent.
        let input = event("a", Some(&tp));
        let step = step_span("p", "in", 0, 7, &input);
        drop(call_span(&step, "f", "v1", 1));
        output_traceparent = span_traceparent(&step);
    });
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name} in {spans:?}"))
    };
    let (publish, step, call) = (
        by_name("publish in"),
        by_name("process in"),
        by_name("call f"),
    );
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    for span in [publish, step, call] {
        assert_eq!(span.span_context.trace_id().to_string(), trace_id);
    }
    assert_eq!(publish.parent_span_id.to_string(), "b7ad6b7169203331");
    assert_eq!(step.parent_span_id, publish.span_context.span_id());
    assert_eq!(call.parent_span_id, step.span_context.span_id());
    assert_eq!(publish.span_kind, opentelemetry::trace::SpanKind::Producer);
    assert_eq!(step.span_kind, opentelemetry::trace::SpanKind::Consumer);

    // `a` (the parent's) and `b` (none) are stored with the publish span's context; `c`,
    // of another trace, keeps its own.
    let publish_tp = format!("00-{trace_id}-{}-01", publish.span_context.span_id());
    assert_eq!(
        stored,
        vec![Some(publish_tp.clone()), Some(publish_tp), None]
    );
    assert_eq!(
        output_traceparent,
        Some(format!("00-{trace_id}-{}-01", step.span_context.span_id()))
    );
}
