use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_wasm::OutputEvent;

use super::*;

const POS: InputPosition<'static> = InputPosition {
    pipeline: "p",
    topic: "in",
    partition: 2,
    offset: 7,
};

fn output(target: &str, id: &str) -> OutputEvent {
    OutputEvent {
        target: target.into(),
        event: CloudEvent::new(id, "weir://test", "t"),
    }
}

#[test]
fn key_is_partitionkey_then_subject() {
    let mut ev = CloudEvent::new("1", "s", "t");
    assert_eq!(event_key(&ev), None);
    ev.subject = Some("sub".into());
    assert_eq!(event_key(&ev).as_deref(), Some(&b"sub"[..]));
    ev.extensions
        .insert("partitionkey".into(), ExtensionValue::String("k".into()));
    assert_eq!(event_key(&ev).as_deref(), Some(&b"k"[..]));
}

#[test]
fn empty_ids_are_derived_from_the_position_and_stable() {
    let input = CloudEvent::new("in-1", "s", "t");
    let out = complete_outputs(
        POS,
        &["out".into()],
        &input,
        vec![output("out", ""), output("out", "mine")],
    )
    .unwrap();
    assert_eq!(out[0].1.id, "p:in:2:7:0");
    assert_eq!(out[1].1.id, "mine");
    let again = complete_outputs(POS, &["out".into()], &input, vec![output("out", "")]).unwrap();
    assert_eq!(again[0].1.id, out[0].1.id);
}

#[test]
fn undeclared_target_is_refused() {
    let input = CloudEvent::new("in-1", "s", "t");
    let err =
        complete_outputs(POS, &["out".into()], &input, vec![output("elsewhere", "x")]).unwrap_err();
    assert!(err.contains("\"elsewhere\""), "{err}");
    assert!(err.contains("`to`"), "{err}");
}

#[test]
fn invalid_output_is_refused() {
    let input = CloudEvent::new("in-1", "s", "t");
    let mut bad = output("out", "x");
    bad.event.source = String::new();
    let err = complete_outputs(POS, &["out".into()], &input, vec![bad]).unwrap_err();
    assert!(err.contains("source"), "{err}");
}

#[test]
fn trace_context_is_carried_unless_the_output_sets_its_own() {
    let mut input = CloudEvent::new("in-1", "s", "t");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    input
        .extensions
        .insert("traceparent".into(), ExtensionValue::String(tp.into()));
    let mut own = output("out", "b");
    own.event
        .extensions
        .insert("traceparent".into(), ExtensionValue::String("own".into()));
    let out =
        complete_outputs(POS, &["out".into()], &input, vec![output("out", "a"), own]).unwrap();
    assert_eq!(
        out[0].1.extensions["traceparent"],
        ExtensionValue::String(tp.into())
    );
    assert_eq!(
        out[1].1.extensions["traceparent"],
        ExtensionValue::String("own".into())
    );
}
