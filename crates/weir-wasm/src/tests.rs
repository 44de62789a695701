use std::collections::BTreeMap;

use weir_cloudevents::{CloudEvent, Data};

use crate::{CallError, Error, FunctionHost, FunctionSettings};

fn example_event() -> CloudEvent {
    let path = weir_test_support::example_dir().join("sales-order-created.json");
    CloudEvent::from_json_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn settings(config: &[(&str, &str)]) -> FunctionSettings {
    FunctionSettings {
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..FunctionSettings::default()
    }
}

#[test]
fn example_function_renames_and_converts() {
    let host = FunctionHost::new().unwrap();
    let wasm = std::fs::read(weir_test_support::example_function()).unwrap();
    let f = host
        .load(
            "enrich-order",
            &wasm,
            settings(&[("currency", "EUR"), ("rate.USD", "0.9")]),
        )
        .unwrap();
    assert_eq!(f.version().len(), 12);

    let outputs = f.call(&example_event()).unwrap();
    assert_eq!(outputs.len(), 1);
    let out = &outputs[0];
    assert_eq!(out.target, "crm.orders");
    assert_eq!(out.event.ty, "crm.order.created");
    assert_eq!(out.event.id, "", "the host derives the id, not the guest");
    let Some(Data::Json(data)) = &out.event.data else {
        panic!("expected JSON data, got {:?}", out.event.data)
    };
    assert_eq!(data["orderId"], "SO-1001");
    assert_eq!(data["customerId"], "CUST-42");
    assert_eq!(data["amount"], 1125.0);
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["lines"][0]["sku"], "MAT-7");
    assert_eq!(out.event.partition_key(), Some("CUST-42"));
}

#[test]
fn missing_config_is_a_fatal_error_naming_the_key() {
    let host = FunctionHost::new().unwrap();
    let wasm = std::fs::read(weir_test_support::example_function()).unwrap();
    let f = host.load("enrich-order", &wasm, settings(&[])).unwrap();
    let err = f.call(&example_event()).unwrap_err();
    assert!(matches!(err, CallError::Fatal { .. }), "{err:?}");
    assert!(err.to_string().contains("rate.USD"), "{err}");
}

#[test]
fn a_trap_is_reported_with_the_function_name_and_the_host_keeps_working() {
    let host = FunctionHost::new().unwrap();
    let wasm = std::fs::read(weir_test_support::test_guest("guest-trap")).unwrap();
    let f = host.load("trapper", &wasm, settings(&[])).unwrap();

    let err = f
        .call(&CloudEvent::new("e1", "test://trap", "test.trap"))
        .unwrap_err();
    assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    assert!(err.to_string().starts_with("function \"trapper\""), "{err}");

    let err = f
        .call(&CloudEvent::new("e2", "test://trap", "test.fatal"))
        .unwrap_err();
    assert!(matches!(err, CallError::Fatal { .. }), "{err:?}");

    // The next call gets a fresh instance and works.
    let ok = f
        .call(&CloudEvent::new("e3", "test://trap", "test.ok"))
        .unwrap();
    assert_eq!(ok[0].target, "out");
    assert_eq!(ok[0].event.id, "e3");
}

#[test]
fn a_module_that_is_not_a_component_is_rejected() {
    let host = FunctionHost::new().unwrap();
    let err = host
        .load("broken", b"\0asm\x01\0\0\0", settings(&[]))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err:?}");
    let err = host
        .load("garbage", b"not wasm at all", settings(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("\"garbage\""), "{err}");
}
