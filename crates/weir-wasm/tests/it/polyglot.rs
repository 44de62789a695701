//! The example transform, `enrich-order`, written in Rust (`examples/orders/enrich-order`),
//! JavaScript (`enrich-order-js`, componentize-js) and Python (`enrich-order-py`,
//! componentize-py): each is loaded into the host with the same config and key-value
//! grant and must give the same outputs and the same errors.
//!
//! Numbers are compared as f64: JavaScript and Python print `5` where Rust prints `5.0`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use weir_cloudevents::{CloudEvent, Data, ExtensionValue};
use weir_wasm::{
    CallError, Function, FunctionHost, FunctionSettings, HostOptions, KeyValueStore, Limits,
    MemoryKeyValue,
};

#[derive(Debug, Clone, Copy)]
enum Lang {
    Rust,
    JavaScript,
    Python,
}

impl Lang {
    fn component(self) -> PathBuf {
        match self {
            Lang::Rust => weir_test_support::example_function(),
            Lang::JavaScript => weir_test_support::example_function_js(),
            Lang::Python => weir_test_support::example_function_py(),
        }
    }
}

/// A host whose key-value store is `kv`. Compiled components are cached under `target/`:
/// compiling the JavaScript and Python runtimes (13 and 18 MB) takes a while.
fn host(kv: Arc<dyn KeyValueStore>) -> FunctionHost {
    FunctionHost::new(HostOptions {
        cache_dir: Some(weir_test_support::repo_root().join("target/wasm-cache-tests")),
        keyvalue: Some(kv),
        max_instances: 16,
        ..HostOptions::default()
    })
    .unwrap()
}

fn customers() -> Arc<MemoryKeyValue> {
    let kv = Arc::new(MemoryKeyValue::new());
    kv.set(
        "customers",
        "CUST-42",
        br#"{"name":"Acme GmbH","segment":"enterprise"}"#,
    )
    .unwrap();
    kv
}

/// `enrich-order` in `lang` with `config` and the `customers` namespace granted.
fn load(lang: Lang, host: &FunctionHost, config: &[(&str, &str)]) -> Function {
    let mut settings = FunctionSettings {
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        // Generous: this test is about what the function computes; the runtimes'
        // instantiation under a loaded CI machine is not what it measures.
        limits: Limits {
            deadline: Duration::from_secs(10),
            ..Limits::default()
        },
        ..FunctionSettings::default()
    };
    settings.grants.keyvalue.insert("customers".to_owned());
    let wasm = std::fs::read(lang.component()).unwrap();
    host.load("enrich-order", &wasm, settings)
        .unwrap_or_else(|e| panic!("{lang:?}: {e}"))
}

const EXAMPLE_CONFIG: &[(&str, &str)] = &[("currency", "EUR"), ("rate.USD", "0.92")];

fn sales_order() -> CloudEvent {
    let path = weir_test_support::example_dir().join("sales-order-created.json");
    CloudEvent::from_json_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn with_data(mut event: CloudEvent, edit: impl FnOnce(&mut Value)) -> CloudEvent {
    match &mut event.data {
        Some(Data::Json(data)) => {
            let mut value = data.value();
            edit(&mut value);
            *data = value.into();
        }
        other => panic!("expected JSON data, got {other:?}"),
    }
    event
}

fn json_data(event: &CloudEvent) -> Value {
    match &event.data {
        Some(Data::Json(data)) => data.value(),
        other => panic!("expected JSON data, got {other:?}"),
    }
}

fn expected_data(customer: Value) -> Value {
    json!({
        "orderId": "SO-1001",
        "customerId": "CUST-42",
        "orderDate": "2026-11-22",
        "amount": 1150.0,
        "currency": "EUR",
        "originalAmount": 1250.0,
        "originalCurrency": "USD",
        "customer": customer,
        "lines": [
            {"sku": "MAT-7", "quantity": 5.0, "amount": 920.0},
            {"sku": "MAT-9", "quantity": 1.0, "amount": 230.0},
        ],
    })
}

fn assert_fatal_naming(
    lang: Lang,
    result: Result<Vec<weir_wasm::OutputEvent>, CallError>,
    needle: &str,
) {
    match result {
        Err(err @ CallError::Fatal { .. }) => {
            assert!(err.to_string().contains(needle), "{lang:?}: {err}")
        }
        other => panic!("{lang:?}: expected a fatal error naming {needle}, got {other:?}"),
    }
}

fn enriches_orders_as_specified(lang: Lang) {
    let host = host(customers());
    let f = load(lang, &host, EXAMPLE_CONFIG);

    let outputs = f
        .call(&sales_order())
        .unwrap_or_else(|e| panic!("{lang:?}: {e}"));
    assert_eq!(outputs.len(), 1, "{lang:?}: {outputs:?}");
    let out = &outputs[0];
    assert_eq!(out.target, "crm.orders", "{lang:?}");
    let event = &out.event;
    assert_eq!(event.id, "", "{lang:?}: weir fills in the id");
    assert_eq!(event.source, "weir://functions/enrich-order", "{lang:?}");
    assert_eq!(event.ty, "crm.order.created", "{lang:?}");
    assert_eq!(event.subject.as_deref(), Some("SO-1001"), "{lang:?}");
    assert_eq!(
        event.time.as_deref(),
        Some("2026-11-22T09:00:00Z"),
        "{lang:?}"
    );
    assert_eq!(
        event.datacontenttype.as_deref(),
        Some("application/json"),
        "{lang:?}"
    );
    assert_eq!(event.dataschema, None, "{lang:?}");
    assert_eq!(
        event.extensions.iter().collect::<Vec<_>>(),
        vec![(
            &"partitionkey".to_owned(),
            &ExtensionValue::String("CUST-42".to_owned())
        )],
        "{lang:?}: only the partition key is carried over"
    );
    assert_eq!(
        weir_test_support::numbers_as_f64(json_data(event)),
        weir_test_support::numbers_as_f64(expected_data(
            json!({"name": "Acme GmbH", "segment": "enterprise"})
        )),
        "{lang:?}"
    );

    // A customer the store does not know is enriched with null, not an error.
    let unknown = with_data(sales_order(), |d| d["SoldToParty"] = "CUST-404".into());
    let outputs = f.call(&unknown).unwrap_or_else(|e| panic!("{lang:?}: {e}"));
    let data = json_data(&outputs[0].event);
    assert_eq!(data["customer"], Value::Null, "{lang:?}: {data}");
    assert_eq!(data["customerId"], "CUST-404", "{lang:?}");

    // Events of other types are not this function's business.
    let mut other = sales_order();
    other.ty = "SalesOrderChanged".to_owned();
    assert_eq!(f.call(&other).unwrap(), vec![], "{lang:?}");
}

fn config_and_data_errors_are_fatal(lang: Lang) {
    let host = host(customers());

    let no_rate = load(lang, &host, &[("currency", "EUR")]);
    assert_fatal_naming(lang, no_rate.call(&sales_order()), "rate.USD");

    let bad_rate = load(lang, &host, &[("currency", "EUR"), ("rate.USD", "lots")]);
    assert_fatal_naming(lang, bad_rate.call(&sales_order()), "rate.USD");

    let f = load(lang, &host, EXAMPLE_CONFIG);
    let mut not_json = sales_order();
    not_json.data = Some(Data::Binary(b"{not json".to_vec().into()));
    assert!(
        matches!(f.call(&not_json), Err(CallError::Fatal { .. })),
        "{lang:?}"
    );
    let no_amount = with_data(sales_order(), |d| {
        d.as_object_mut().unwrap().remove("NetAmount");
    });
    assert!(
        matches!(f.call(&no_amount), Err(CallError::Fatal { .. })),
        "{lang:?}"
    );
}

/// Amounts round half away from zero in every language, as Rust's `f64::round` does
/// (JavaScript's `Math.round` rounds half up, Python's `round` half to even).
fn rounds_half_away_from_zero(lang: Lang) {
    let host = host(customers());
    let f = load(lang, &host, EXAMPLE_CONFIG);
    let order = with_data(sales_order(), |d| {
        d["TransactionCurrency"] = "EUR".into();
        d["NetAmount"] = json!(0.125);
        d["Items"] = json!([
            {"Material": "A", "OrderQuantity": 1, "NetAmount": 0.125},
            {"Material": "B", "OrderQuantity": 2, "NetAmount": -0.125},
            {"Material": "C", "OrderQuantity": 3, "NetAmount": 2.675},
        ]);
    });
    let data = json_data(&f.call(&order).unwrap()[0].event);
    assert_eq!(data["amount"].as_f64(), Some(0.13), "{lang:?}: {data}");
    let amounts: Vec<_> = data["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["amount"].as_f64().unwrap())
        .collect();
    // 2.675 is 2.67499999... as a double, but 2.675 * 100 rounds to 267.5 exactly.
    assert_eq!(amounts, vec![0.13, -0.13, 2.68], "{lang:?}: {data}");
}

/// A store that is down: every call fails.
struct DownStore;

impl KeyValueStore for DownStore {
    fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Err("the store is down".to_owned())
    }
    fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), String> {
        Err("the store is down".to_owned())
    }
    fn delete(&self, _: &str, _: &str) -> Result<(), String> {
        Err("the store is down".to_owned())
    }
    fn exists(&self, _: &str, _: &str) -> Result<bool, String> {
        Err("the store is down".to_owned())
    }
    fn list_keys(&self, _: &str, _: Option<u64>) -> Result<(Vec<String>, Option<u64>), String> {
        Err("the store is down".to_owned())
    }
}

fn a_key_value_failure_is_retryable(lang: Lang) {
    let host = host(Arc::new(DownStore));
    let f = load(lang, &host, EXAMPLE_CONFIG);
    match f.call(&sales_order()) {
        Err(err @ CallError::Retryable { .. }) => {
            assert!(
                err.to_string().contains("the store is down"),
                "{lang:?}: {err}"
            )
        }
        other => panic!("{lang:?}: expected a retryable error, got {other:?}"),
    }
}

/// One test per language, so that each language's runtime is compiled once (in
/// parallel with the others; later hosts find it in the compiled cache), and a failure
/// names the language.
macro_rules! per_language {
    ($($lang:ident => $variant:ident),* $(,)?) => {
        $(
            #[test]
            fn $lang() {
                let lang = Lang::$variant;
                enriches_orders_as_specified(lang);
                config_and_data_errors_are_fatal(lang);
                rounds_half_away_from_zero(lang);
                a_key_value_failure_is_retryable(lang);
            }
        )*
    };
}

per_language!(rust => Rust, javascript => JavaScript, python => Python);
