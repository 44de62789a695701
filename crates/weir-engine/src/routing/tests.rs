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

#[test]
fn a_traced_step_gives_outputs_its_own_context_unless_the_function_chose_another() {
    let mut input = CloudEvent::new("in-1", "s", "t");
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let step = "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01";
    for (name, value) in [("traceparent", tp), ("tracestate", "v=1")] {
        input
            .extensions
            .insert(name.into(), ExtensionValue::String(value.into()));
    }
    // A function that copies its input (extensions and all), one that sets nothing, and
    // one that chose another trace context.
    let mut copied = output("out", "a");
    copied.event.extensions = input.extensions.clone();
    let mut own = output("out", "c");
    own.event
        .extensions
        .insert("traceparent".into(), ExtensionValue::String("own".into()));
    let out = complete_outputs_in_step(
        POS,
        &["out".into()],
        &input,
        vec![copied, output("out", "b"), own],
        Some(step),
    )
    .unwrap();
    let traceparent = |i: usize| out[i].1.extensions["traceparent"].clone();
    assert_eq!(traceparent(0), ExtensionValue::String(step.into()));
    assert_eq!(traceparent(1), ExtensionValue::String(step.into()));
    assert_eq!(traceparent(2), ExtensionValue::String("own".into()));
    assert_eq!(
        out[1].1.extensions["tracestate"],
        ExtensionValue::String("v=1".into())
    );
}

#[test]
fn a_dead_letter_is_a_valid_event_whatever_the_error_says() {
    let input = CloudEvent::new("in-1", "s", "t");
    let long = format!("trapped:\n  0: backtrace\u{7}\u{FFFE}{}", "x".repeat(5000));
    let cause = DeadLetterCause {
        function: "f",
        version: "abc",
        reason: "trap",
        error: &long,
        attempts: 1,
        time: "2026-11-22T10:00:00Z".into(),
    };
    let dead = dead_letter_event(POS, input, &cause);
    dead.validate().unwrap();
    let Some(ExtensionValue::String(error)) = dead.extensions.get("dlqerror") else {
        panic!()
    };
    assert!(error.starts_with("trapped:   0: backtrace  "), "{error}");
    assert!(error.ends_with("..."));
    assert_eq!(error.chars().count(), 2003);
    assert_eq!(
        dead.extensions.get("dlqoffset"),
        Some(&ExtensionValue::Integer(7))
    );
    // Re-driving takes exactly the dlq attributes away again.
    let (topic, back) = redriven_event("p", dead.clone()).unwrap();
    assert_eq!(topic, "in");
    assert_eq!(back, CloudEvent::new("in-1", "s", "t"));
    assert!(redriven_event("other", dead).is_none());
}

#[test]
fn dead_letter_numbers_beyond_32_bits_are_decimal_strings() {
    let cause = DeadLetterCause {
        function: "f",
        version: "abc",
        reason: "trap",
        error: "trapped",
        attempts: 3,
        time: "2026-11-22T10:00:00Z".into(),
    };
    for (offset, expected) in [
        (0, ExtensionValue::Integer(0)),
        (2_147_483_647, ExtensionValue::Integer(2_147_483_647)),
        (2_147_483_648, ExtensionValue::String("2147483648".into())),
        (1 << 40, ExtensionValue::String("1099511627776".into())),
        (u64::MAX, ExtensionValue::String(u64::MAX.to_string())),
    ] {
        let pos = InputPosition { offset, ..POS };
        let dead = dead_letter_event(pos, CloudEvent::new("in-1", "s", "t"), &cause);
        assert_eq!(dead.extensions["dlqoffset"], expected, "{offset}");
        assert_eq!(dead.extensions["dlqpartition"], ExtensionValue::Integer(2));
        assert_eq!(dead.extensions["dlqattempts"], ExtensionValue::Integer(3));
        dead.validate().unwrap();
        // Stored and read back, it is re-driven in either form.
        let stored = CloudEvent::from_json_slice(&dead.to_json_vec()).unwrap();
        let (topic, back) = redriven_event("p", stored).unwrap();
        assert_eq!(
            (topic.as_str(), back),
            ("in", CloudEvent::new("in-1", "s", "t"))
        );
    }
    let pos = InputPosition {
        partition: u32::MAX,
        ..POS
    };
    let dead = dead_letter_event(pos, CloudEvent::new("in-1", "s", "t"), &cause);
    assert_eq!(
        dead.extensions["dlqpartition"],
        ExtensionValue::String(u32::MAX.to_string())
    );
    // A dead letter stored before weir wrote strings holds a bigger integer: still read
    // from the log and re-driven.
    let old = br#"{"specversion":"1.0","id":"in-1","source":"s","type":"t","dlqpipeline":"p","dlqtopic":"in","dlqpartition":2,"dlqoffset":1099511627776}"#;
    let (topic, back) = redriven_event("p", CloudEvent::from_json_slice(old).unwrap()).unwrap();
    assert_eq!(
        (topic.as_str(), back),
        ("in", CloudEvent::new("in-1", "s", "t"))
    );
}

#[test]
fn an_output_with_an_integer_beyond_32_bits_is_invalid() {
    let input = CloudEvent::new("in-1", "s", "t");
    let mut fits = output("out", "a");
    fits.event
        .extensions
        .insert("count".into(), ExtensionValue::Integer(i64::from(i32::MIN)));
    assert!(complete_outputs(POS, &["out".into()], &input, vec![fits]).is_ok());
    let mut big = output("out", "b");
    big.event
        .extensions
        .insert("count".into(), ExtensionValue::Integer(1 << 31));
    let err = complete_outputs(POS, &["out".into()], &input, vec![big]).unwrap_err();
    assert!(
        err.contains("\"count\"") && err.contains("-2147483648 to 2147483647"),
        "{err}"
    );
}

#[test]
fn filters_match_every_listed_attribute_by_pattern() {
    use weir_manifest::PipelineFilter;
    let filter = PipelineFilter {
        attributes: [
            ("type".to_owned(), vec!["order.*".to_owned()]),
            ("region".to_owned(), vec!["eu".to_owned(), "uk".to_owned()]),
            ("subject".to_owned(), vec!["*".to_owned()]),
        ]
        .into(),
    };
    let mut ev = CloudEvent::new("1", "s", "order.created");
    ev.subject = Some("x".into());
    ev.extensions
        .insert("region".into(), ExtensionValue::String("uk".into()));
    assert!(filter_accepts(Some(&filter), &ev));
    assert!(filter_accepts(None, &ev));
    ev.ty = "invoice.created".into();
    assert!(!filter_accepts(Some(&filter), &ev));
    ev.ty = "order.updated".into();
    ev.subject = None;
    assert!(
        !filter_accepts(Some(&filter), &ev),
        "subject must be present"
    );
}

#[test]
fn outputs_carry_the_correlation_id_or_the_inputs_id() {
    let input = CloudEvent::new("in-1", "s", "t");
    let out = complete_outputs(POS, &["out".into()], &input, vec![output("out", "")]).unwrap();
    assert_eq!(
        out[0].1.extensions.get(CORRELATION_ID),
        Some(&ExtensionValue::String("in-1".into()))
    );
    let mut input = input;
    input.extensions.insert(
        CORRELATION_ID.into(),
        ExtensionValue::String("order-9".into()),
    );
    let out = complete_outputs(POS, &["out".into()], &input, vec![output("out", "")]).unwrap();
    assert_eq!(
        out[0].1.extensions.get(CORRELATION_ID),
        Some(&ExtensionValue::String("order-9".into()))
    );
}

#[test]
fn a_requests_trace_headers_reach_events_without_their_own() {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut own = CloudEvent::new("2", "s", "t");
    own.extensions.insert(
        "traceparent".into(),
        ExtensionValue::String("00-11111111111111111111111111111111-2222222222222222-01".into()),
    );
    let mut events = vec![CloudEvent::new("1", "s", "t"), own.clone()];
    adopt_trace_context(&mut events, tp, Some("congo=t61rcWkgMzE"));
    assert_eq!(
        events[0].extensions.get("traceparent"),
        Some(&ExtensionValue::String(tp.into()))
    );
    assert_eq!(
        events[0].extensions.get("tracestate"),
        Some(&ExtensionValue::String("congo=t61rcWkgMzE".into()))
    );
    assert_eq!(events[1], own, "an event's own trace context wins");
    for bad in [
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    ] {
        let mut events = vec![CloudEvent::new("1", "s", "t")];
        adopt_trace_context(&mut events, bad, None);
        assert!(events[0].extensions.is_empty(), "{bad}");
    }
}
