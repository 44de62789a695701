//! The pure part of replay: the diff of two versions' outcomes, and range checks.

use serde_json::{Value, json};

use super::diff::{
    ComparedOutput, DiffCounts, DiffKind, FieldChange, InputRef, Outcome, Tally, VersionCounts,
    field_changes,
};
use super::{ReplayBound, check_bounds};

fn input(offset: u64) -> InputRef {
    InputRef {
        topic: "erp.sales-orders".into(),
        partition: 1,
        offset,
        id: format!("in-{offset}"),
    }
}

fn out(topic: &str, event: Value) -> ComparedOutput {
    ComparedOutput {
        topic: topic.into(),
        event,
    }
}

fn order(amount: Value) -> Value {
    json!({"id": "p:t:1:0:0", "type": "crm.order.created", "data": {"amount": amount, "lines": [{"amount": amount}]}})
}

#[test]
fn equal_outputs_are_unchanged_and_keep_no_example() {
    let mut tally = Tally::new(true, 5);
    let a: Outcome = Ok(vec![out("crm.orders", order(json!(1.5)))]);
    tally.add(&input(0), &a, Some(&a.clone()));
    assert_eq!(tally.inputs, 1);
    assert_eq!(
        tally.a,
        VersionCounts {
            outputs: 1,
            errors: 0
        }
    );
    assert_eq!(tally.b, Some(tally.a));
    assert_eq!(
        tally.diff,
        Some(DiffCounts {
            unchanged: 1,
            ..DiffCounts::default()
        })
    );
    assert!(!tally.diff.unwrap().differs());
    assert!(tally.examples.is_empty());
}

#[test]
fn outputs_pair_by_index_into_changed_added_and_removed() {
    let mut tally = Tally::new(true, 10);
    let a: Outcome = Ok(vec![out("crm.orders", order(json!(91.54)))]);
    let b: Outcome = Ok(vec![
        out("crm.orders", order(json!(92.0))),
        out("crm.audit", json!({"id": "x"})),
    ]);
    tally.add(&input(3), &a, Some(&b));
    // The reverse: B made fewer outputs than A.
    tally.add(&input(4), &b, Some(&a));
    let diff = tally.diff.unwrap();
    assert_eq!(
        (diff.unchanged, diff.changed, diff.added, diff.removed),
        (0, 2, 1, 1)
    );
    assert!(diff.differs());
    assert_eq!(tally.a.outputs, 3);
    assert_eq!(tally.b.unwrap().outputs, 3);

    let kinds: Vec<DiffKind> = tally.examples.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            DiffKind::Changed,
            DiffKind::Added,
            DiffKind::Changed,
            DiffKind::Removed
        ]
    );
    let changed = &tally.examples[0];
    assert_eq!((changed.offset, changed.output_index), (3, Some(0)));
    assert_eq!(changed.input_id, "in-3");
    assert_eq!(
        changed.fields,
        [
            FieldChange {
                path: "data.amount".into(),
                a: Some(json!(91.54)),
                b: Some(json!(92.0)),
            },
            FieldChange {
                path: "data.lines[0].amount".into(),
                a: Some(json!(91.54)),
                b: Some(json!(92.0)),
            },
        ]
    );
    let added = &tally.examples[1];
    assert_eq!(added.output_index, Some(1));
    assert_eq!(added.target_b.as_deref(), Some("crm.audit"));
    assert_eq!(added.target_a, None);
    assert_eq!(added.output, Some(json!({"id": "x"})));
    let removed = &tally.examples[3];
    assert_eq!(removed.target_a.as_deref(), Some("crm.audit"));
    assert_eq!(removed.offset, 4);
}

#[test]
fn a_different_topic_alone_is_a_change() {
    let mut tally = Tally::new(true, 5);
    let a: Outcome = Ok(vec![out("crm.orders", json!({"id": "1"}))]);
    let b: Outcome = Ok(vec![out("crm.other", json!({"id": "1"}))]);
    tally.add(&input(0), &a, Some(&b));
    assert_eq!(tally.diff.unwrap().changed, 1);
    let e = &tally.examples[0];
    assert!(e.fields.is_empty());
    assert_eq!(
        (e.target_a.as_deref(), e.target_b.as_deref()),
        (Some("crm.orders"), Some("crm.other"))
    );
}

#[test]
fn errors_count_per_input_and_keep_their_messages() {
    let mut tally = Tally::new(true, 5);
    let ok: Outcome = Ok(vec![out("crm.orders", json!({"id": "1"}))]);
    let failed_a: Outcome = Err("function \"f\" aaa trapped: boom".into());
    let failed_b: Outcome = Err("function \"f\" bbb rejected the event: no".into());
    tally.add(&input(0), &failed_a, Some(&ok));
    tally.add(&input(1), &ok, Some(&failed_b));
    tally.add(&input(2), &failed_a, Some(&failed_b));
    let diff = tally.diff.unwrap();
    assert_eq!(
        (diff.errors_only_a, diff.errors_only_b, diff.errors_both),
        (1, 1, 1)
    );
    // Outputs of an input only one version handled are not paired.
    assert_eq!(
        (diff.unchanged, diff.changed, diff.added, diff.removed),
        (0, 0, 0, 0)
    );
    assert_eq!(
        tally.a,
        VersionCounts {
            outputs: 1,
            errors: 2
        }
    );
    assert_eq!(
        tally.b,
        Some(VersionCounts {
            outputs: 1,
            errors: 2
        })
    );
    let e = &tally.examples;
    assert_eq!(e[0].kind, DiffKind::ErrorOnlyA);
    assert_eq!(
        e[0].error_a.as_deref(),
        Some("function \"f\" aaa trapped: boom")
    );
    assert_eq!(e[0].error_b, None);
    assert_eq!(e[1].kind, DiffKind::ErrorOnlyB);
    assert_eq!(e[2].kind, DiffKind::ErrorBoth);
    assert!(e[2].error_a.is_some() && e[2].error_b.is_some());
    assert_eq!(e[2].output_index, None);
}

#[test]
fn one_version_counts_outputs_and_shows_errors_with_no_diff() {
    let mut tally = Tally::new(false, 1);
    let ok: Outcome = Ok(vec![out("t", json!({})), out("t", json!({}))]);
    tally.add(&input(0), &ok, None);
    tally.add(&input(1), &Err("first".into()), None);
    tally.add(&input(2), &Err("second".into()), None);
    assert_eq!(tally.inputs, 3);
    assert_eq!(
        tally.a,
        VersionCounts {
            outputs: 2,
            errors: 2
        }
    );
    assert_eq!((tally.b, tally.diff), (None, None));
    // Only as many examples as asked for.
    assert_eq!(tally.examples.len(), 1);
    assert_eq!(tally.examples[0].kind, DiffKind::Error);
    assert_eq!(tally.examples[0].error_a.as_deref(), Some("first"));
}

#[test]
fn examples_stop_at_the_limit_but_counts_go_on() {
    let mut tally = Tally::new(true, 2);
    for offset in 0..10 {
        let a: Outcome = Ok(vec![out("t", json!({"n": offset}))]);
        let b: Outcome = Ok(vec![out("t", json!({"n": offset + 1}))]);
        tally.add(&input(offset), &a, Some(&b));
    }
    assert_eq!(tally.diff.unwrap().changed, 10);
    assert_eq!(tally.examples.len(), 2);
    assert_eq!(tally.examples[1].offset, 1);
}

#[test]
fn field_changes_walk_objects_and_arrays() {
    let a =
        json!({"id": "1", "subject": "s", "data": {"keep": 1, "gone": true, "list": [1, 2, 3]}});
    let b = json!({"id": "1", "data": {"keep": 1, "list": [1, 5], "new": "x"}, "ext": 7});
    let paths: Vec<(String, Option<Value>, Option<Value>)> = field_changes(&a, &b)
        .into_iter()
        .map(|c| (c.path, c.a, c.b))
        .collect();
    assert_eq!(
        paths,
        [
            ("subject".into(), Some(json!("s")), None),
            ("data.gone".into(), Some(json!(true)), None),
            ("data.list[1]".into(), Some(json!(2)), Some(json!(5))),
            ("data.list[2]".into(), Some(json!(3)), None),
            ("data.new".into(), None, Some(json!("x"))),
            ("ext".into(), None, Some(json!(7))),
        ]
    );
    assert!(field_changes(&a, &a).is_empty());
    // Values of different kinds differ as a whole; so do differing roots.
    assert_eq!(
        field_changes(&json!({"d": [1]}), &json!({"d": {"0": 1}}))[0].path,
        "d"
    );
    assert_eq!(field_changes(&json!(1), &json!(2))[0].path, "$");
}

#[test]
fn ranges_with_ends_in_the_wrong_order_are_refused() {
    use ReplayBound::{Offset, Time};
    assert!(check_bounds(Some(Offset(5)), Some(Offset(2))).is_err());
    assert!(check_bounds(Some(Time(5)), Some(Time(2))).is_err());
    assert!(check_bounds(Some(Offset(2)), Some(Offset(2))).is_ok());
    assert!(check_bounds(Some(Offset(9)), Some(Time(2))).is_ok());
    assert!(check_bounds(None, Some(Offset(0))).is_ok());
    assert!(check_bounds(Some(Offset(3)), None).is_ok());
}
