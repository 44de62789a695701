use serde_json::json;

use super::*;

fn order_v1() -> Value {
    json!({
        "type": "object",
        "properties": {
            "orderId": {"type": "string", "minLength": 1},
            "amount": {"type": "number", "minimum": 0},
            "email": {"type": "string", "format": "email"}
        },
        "required": ["orderId", "amount"]
    })
}

#[test]
fn a_schema_compiles_and_reports_each_broken_rule_by_pointer_without_the_values() {
    let schema = Schema::compile("SalesOrderCreated", 1, order_v1()).unwrap();
    assert_eq!(
        schema.validate(&json!({"orderId": "SO-1", "amount": 3})),
        Ok(())
    );
    let violations = schema
        .validate(&json!({"amount": -5, "email": "secret-not-an-email"}))
        .unwrap_err();
    let found: Vec<(&str, &str, &str)> = violations
        .iter()
        .map(|v| (v.pointer.as_str(), v.keyword.as_str(), v.rule.as_str()))
        .collect();
    assert!(
        found.contains(&("", "required", "/required")),
        "{violations:?}"
    );
    assert!(
        found.contains(&("/amount", "minimum", "/properties/amount/minimum")),
        "{violations:?}"
    );
    assert!(
        found.contains(&("/email", "format", "/properties/email/format")),
        "formats are checked: {violations:?}"
    );
    for v in &violations {
        assert!(
            !v.message.contains("secret") && !v.message.contains("-5"),
            "a violation must not echo the event's values: {v}"
        );
    }
    // Property names may be personal data: the messages that would name them do not.
    let closed = Schema::compile(
        "t",
        1,
        json!({"type": "object", "additionalProperties": false, "propertyNames": {"pattern": "^[a-z]+$"}}),
    )
    .unwrap();
    for v in closed
        .validate(&json!({"alice@secret.example": 1}))
        .unwrap_err()
    {
        assert!(!v.message.contains("alice"), "{v}");
    }
    let no_data = schema.validate(&Value::Null).unwrap_err();
    assert_eq!(no_data[0].keyword, "type");
}

#[test]
fn what_is_not_a_draft_2020_12_schema_is_refused_with_the_reason() {
    let err = Schema::compile("t", 1, json!({"type": "strin"})).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidSchema { reason, .. } if reason.contains("/type")),
        "{err}"
    );
    let err = Schema::compile(
        "t",
        1,
        json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
    )
    .unwrap_err();
    assert!(err.to_string().contains("draft 2020-12 only"), "{err}");
    let err = Schema::compile("t", 1, json!(["not", "a", "schema"])).unwrap_err();
    assert!(err.to_string().contains("a JSON object"), "{err}");
    // Never fetched: a reference outside the document fails to compile.
    let err = Schema::compile("t", 1, json!({"$ref": "https://example.com/s.json"})).unwrap_err();
    assert!(err.to_string().contains("may only point inside"), "{err}");
    // Inside the document is fine.
    let local = json!({"$defs": {"id": {"type": "string"}}, "$ref": "#/$defs/id"});
    let schema = Schema::compile("t", 1, local).unwrap();
    assert!(schema.validate(&json!(7)).is_err());
    assert!(Schema::compile("t", 0, json!({})).is_err());
    assert!(Schema::compile("a/b", 1, json!({})).is_err());
    assert!(Schema::compile("", 1, json!({})).is_err());
}

#[test]
fn a_dataschema_names_a_version_by_the_route_on_any_host() {
    assert_eq!(
        route("com.example.order created", 3),
        "/v1/schemas/com.example.order%20created/3"
    );
    for uri in [
        "http://localhost:7700/v1/schemas/com.example.order%20created/3",
        "https://weir.example.com/base/v1/schemas/com.example.order%20created/3?x=1#frag",
    ] {
        assert_eq!(
            parse_dataschema(uri),
            Some(("com.example.order created".to_owned(), 3)),
            "{uri}"
        );
    }
    for foreign in [
        "https://example.com/schemas/order.json",
        "http://h/v1/schemas/t/0",
        "http://h/v1/schemas/t/latest",
        "http://h/v1/schemas//1",
        "http://h/v1/schemas/%zz/1",
    ] {
        assert_eq!(parse_dataschema(foreign), None, "{foreign}");
    }
}

#[test]
fn versions_are_registered_in_order_once_and_never_change() {
    let mut registry = Registry::default();
    let gap = registry.prepare("t", 2, order_v1(), None).unwrap_err();
    assert_eq!(
        gap.to_string(),
        "\"t\" has no versions yet so the next version is 1, not 2"
    );
    let Prepared::New(v1) = registry.prepare("t", 1, order_v1(), None).unwrap() else {
        panic!("version 1 is new")
    };
    registry.insert(v1);
    assert!(matches!(
        registry.prepare("t", 1, order_v1(), None).unwrap(),
        Prepared::Unchanged
    ));
    let taken = registry.prepare("t", 1, json!({}), None).unwrap_err();
    assert!(
        taken
            .to_string()
            .contains("register the new schema as version 2"),
        "{taken}"
    );
    // Backward, the default: a new required property breaks reading version 1's events.
    let mut v2 = order_v1();
    v2["required"] = json!(["orderId", "amount", "currency"]);
    v2["properties"]["currency"] = json!({"type": "string"});
    let err = registry.prepare("t", 2, v2.clone(), None).unwrap_err();
    let message = err.to_string();
    assert!(
        message.starts_with("version 2 of \"t\" breaks its compatibility mode backward:"),
        "{message}"
    );
    assert!(message.contains("currency"), "{message}");
    // Mode none accepts it.
    assert!(matches!(
        registry
            .prepare("t", 2, v2, Some(Compatibility::None))
            .unwrap(),
        Prepared::New(_)
    ));
}

#[test]
fn an_event_is_checked_against_the_version_its_dataschema_names_else_the_latest() {
    let mut registry = Registry::default();
    assert!(matches!(registry.resolve("t", None), Resolved::None));
    for (version, document) in [
        (1, json!({"type": "object"})),
        (2, json!({"type": "object", "properties": {"x": {}}})),
    ] {
        let Prepared::New(schema) = registry.prepare("t", version, document, None).unwrap() else {
            panic!()
        };
        registry.insert(schema);
    }
    let version = |r: Resolved<'_>| match r {
        Resolved::Schema(s) => s.version(),
        other => panic!("{other:?}"),
    };
    assert_eq!(version(registry.resolve("t", None)), 2);
    assert_eq!(
        version(registry.resolve("t", Some("https://example.com/other.json"))),
        2
    );
    assert_eq!(
        version(registry.resolve("t", Some("http://node:7700/v1/schemas/t/1"))),
        1
    );
    assert!(matches!(
        registry.resolve("t", Some("http://node:7700/v1/schemas/t/9")),
        Resolved::UnknownVersion {
            version: 9,
            latest: Some(2)
        }
    ));
    assert!(matches!(
        registry.resolve("t", Some("http://node:7700/v1/schemas/u/1")),
        Resolved::OtherType { named } if named == "u"
    ));
    // A type without a schema has no contract, whatever its dataschema names.
    assert!(matches!(
        registry.resolve("u", Some("http://other:7700/v1/schemas/u/3")),
        Resolved::None
    ));
}

fn no_functions(function: &str, _: u32, _: serde_json::Value) -> Result<serde_json::Value, String> {
    panic!("no function step here, yet {function} was called")
}

#[test]
fn an_upcaster_maps_each_step_and_its_result_must_match_the_latest_version() {
    let mut registry = Registry::default();
    let versions = [
        json!({"type": "object", "properties": {"client": {"type": "string"}}}),
        json!({"type": "object", "required": ["customer"],
            "properties": {"customer": {"type": "object", "required": ["id"]}}}),
        json!({"type": "object", "required": ["customer", "channel"],
            "properties": {"channel": {"type": "string"}, "legacy": false,
                "customer": {"type": "object", "required": ["id"]}}}),
    ];
    for (version, document) in (1..).zip(versions) {
        registry.insert(Arc::new(Schema::compile("t", version, document).unwrap()));
    }
    let mut upcasters = Upcasters::default();
    upcasters.insert(
        "t",
        1,
        Step::Mapping(Mapping {
            remove: vec![],
            rename: vec![("client".into(), "/customer/id".into())],
            default: vec![],
        }),
    );
    upcasters.insert(
        "t",
        2,
        Step::Mapping(Mapping {
            remove: vec!["legacy".into()],
            rename: vec![],
            default: vec![
                ("channel".into(), json!("erp")),
                ("/customer/tier".into(), json!(1)),
            ],
        }),
    );
    // Version 1 through both steps to 3.
    let up = upcasters
        .upcast(
            &registry,
            "t",
            1,
            &json!({"client": "C-1", "legacy": true}),
            &no_functions,
        )
        .unwrap()
        .unwrap();
    assert_eq!((up.from, up.to), (1, 3));
    assert_eq!(
        up.data,
        json!({"customer": {"id": "C-1", "tier": 1}, "channel": "erp"})
    );
    // A default never overwrites what the event has.
    let up = upcasters
        .upcast(
            &registry,
            "t",
            2,
            &json!({"customer": {"id": "C-2", "tier": 5}, "channel": "web"}),
            &no_functions,
        )
        .unwrap()
        .unwrap();
    assert_eq!(up.data["channel"], "web");
    assert_eq!(up.data["customer"]["tier"], 5);
    // Already the latest, or a type without upcasters: nothing to do.
    assert_eq!(
        upcasters
            .upcast(&registry, "t", 3, &json!({}), &no_functions)
            .unwrap(),
        None
    );
    assert_eq!(
        upcasters
            .upcast(&registry, "u", 1, &json!({}), &no_functions)
            .unwrap(),
        None
    );
    // A result that does not match the latest version fails, naming the rule.
    let error = upcasters
        .upcast(&registry, "t", 1, &json!({"other": 1}), &no_functions)
        .unwrap_err();
    assert!(
        error.contains("version 1 upcast to version 3") && error.contains("required"),
        "{error}"
    );
    // Where the steps stop, so does the upcast: without a step from 2, version 1 goes to
    // 2 and is checked against 2 (a version registered before its upcaster is deployed
    // does not fail the events of the one before); without one from 1, nothing happens.
    let mut first = Upcasters::default();
    first.insert(
        "t",
        1,
        Step::Mapping(Mapping {
            rename: vec![("client".into(), "/customer/id".into())],
            ..Mapping::default()
        }),
    );
    let up = first
        .upcast(&registry, "t", 1, &json!({"client": "C-3"}), &no_functions)
        .unwrap()
        .unwrap();
    assert_eq!((up.to, up.data), (2, json!({"customer": {"id": "C-3"}})));
    assert_eq!(
        first
            .upcast(&registry, "t", 2, &json!({}), &no_functions)
            .unwrap(),
        None
    );
    let mut gap = Upcasters::default();
    gap.insert("t", 2, Step::Mapping(Mapping::default()));
    assert_eq!(
        gap.upcast(&registry, "t", 1, &json!({}), &no_functions)
            .unwrap(),
        None
    );
    // A step to a version the registry does not have (yet) is not taken.
    let mut ahead = Upcasters::default();
    ahead.insert("t", 3, Step::Mapping(Mapping::default()));
    assert_eq!(
        ahead
            .upcast(&registry, "t", 3, &json!({}), &no_functions)
            .unwrap(),
        None
    );
    // A field inside a member that is not an object cannot be set.
    let mut scalar = Upcasters::default();
    scalar.insert(
        "t",
        2,
        Step::Mapping(Mapping {
            default: vec![("/channel/x".into(), json!(1))],
            ..Mapping::default()
        }),
    );
    let error = scalar
        .upcast(
            &registry,
            "t",
            2,
            &json!({"customer": {"id": "a"}, "channel": "web"}),
            &no_functions,
        )
        .unwrap_err();
    assert!(error.contains("not an object"), "{error}");
    assert!(upcast::check_field("/a//b").is_err() && upcast::check_field("").is_err());
    assert!(upcast::check_field("/a/b").is_ok() && upcast::check_field("name").is_ok());
}

#[test]
fn a_function_step_gets_the_data_and_its_result_is_checked_like_a_mappings() {
    let mut registry = Registry::default();
    let versions = [
        json!({"type": "object", "properties": {"total": {"type": "string"}}}),
        json!({"type": "object", "required": ["total_cents"],
            "properties": {"total_cents": {"type": "integer"}}}),
        json!({"type": "object", "required": ["total_cents", "channel"],
            "properties": {"total_cents": {"type": "integer"}}}),
    ];
    for (version, document) in (1..).zip(versions) {
        registry.insert(Arc::new(Schema::compile("t", version, document).unwrap()));
    }
    let mut upcasters = Upcasters::default();
    upcasters.insert("t", 1, Step::Function("cents".into()));
    upcasters.insert(
        "t",
        2,
        Step::Mapping(Mapping {
            default: vec![("channel".into(), json!("erp"))],
            ..Mapping::default()
        }),
    );
    assert_eq!(upcasters.functions().collect::<Vec<_>>(), ["cents"]);
    let cents = |function: &str, from: u32, data: serde_json::Value| {
        assert_eq!((function, from), ("cents", 1));
        let total: f64 = data["total"]
            .as_str()
            .ok_or("no total")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        Ok(json!({"total_cents": (total * 100.0).round() as i64}))
    };
    let up = upcasters
        .upcast(&registry, "t", 1, &json!({"total": "12.50"}), &cents)
        .unwrap()
        .unwrap();
    assert_eq!(
        (up.from, up.to, up.data),
        (1, 3, json!({"total_cents": 1250, "channel": "erp"}))
    );
    // The function's error is the upcast's, naming the step.
    let error = upcasters
        .upcast(&registry, "t", 1, &json!({}), &cents)
        .unwrap_err();
    assert!(
        error.contains("from version 1") && error.contains("no total"),
        "{error}"
    );
    // What it returns is checked against the version reached.
    let wrong = |_: &str, _: u32, _: serde_json::Value| Ok(json!({"total_cents": "many"}));
    let error = upcasters
        .upcast(&registry, "t", 1, &json!({"total": "1"}), &wrong)
        .unwrap_err();
    assert!(error.contains("upcast to version 3"), "{error}");
}

#[test]
fn a_dataschema_is_renamed_to_another_version_in_its_version_segment_only() {
    for (uri, expected) in [
        ("https://h/v1/schemas/T/1", "https://h/v1/schemas/T/2"),
        (
            "http://10.0.0.5/v1/schemas/T/01",
            "http://10.0.0.5/v1/schemas/T/2",
        ),
        (
            "/v1/schemas/T/1?x=1#/properties/10",
            "/v1/schemas/T/2?x=1#/properties/10",
        ),
        (
            "https://h/p/v1/schemas/a%2Fb/1",
            "https://h/p/v1/schemas/a%2Fb/2",
        ),
    ] {
        assert_eq!(with_version(uri, 2).as_deref(), Some(expected), "{uri}");
    }
    assert_eq!(with_version("https://h/other/1", 2), None);
}

/// Schemas that use the keywords whose answers depend on how the data is represented:
/// member lookups and passes, names, string lengths, numbers, equality, uniqueness.
fn representation_schemas() -> Vec<Schema> {
    let documents = [
        json!({"type": "object", "required": ["a", "b"],
            "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 3},
                "b": {"type": "integer", "minimum": 0, "multipleOf": 2},
                "c": {"enum": ["x", 1, null, [1], {"k": "v"}]}},
            "additionalProperties": {"type": ["number", "boolean"]}}),
        json!({"type": "object", "propertyNames": {"pattern": "^[a-c]$"},
            "patternProperties": {"^a": {"const": 1.0}}, "maxProperties": 3,
            "dependentRequired": {"a": ["b"]}}),
        json!({"type": "array", "uniqueItems": true, "maxItems": 4,
            "prefixItems": [{"type": "string", "format": "date"}],
            "items": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMaximum": 10}]},
            "contains": {"type": "null"}}),
        json!({"$defs": {"node": {"type": "object", "properties": {"b": {"$ref": "#/$defs/node"}},
                "unevaluatedProperties": false}},
            "oneOf": [{"$ref": "#/$defs/node"}, {"type": "string", "pattern": "é"}]}),
        json!({"type": "object", "properties": {"a": {"type": "array", "items": {"const": {"b": [1, 2.0]}}}},
            "not": {"required": ["c"]}}),
    ];
    (1..)
        .zip(documents)
        .map(|(v, d)| Schema::compile("t", v, d).unwrap())
        .collect()
}

/// JSON text, with what trips representations up: repeated and escaped names, escaped
/// and multi-byte strings, integers written as floats, big objects.
fn json_text() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let name = prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("c".to_owned()),
        Just("\\u0061".to_owned()),
        Just("$serde_json::private::RawValue".to_owned()),
        "[a-e]{1,2}",
    ];
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("1.0".to_owned()),
        Just("2e0".to_owned()),
        Just("-0".to_owned()),
        Just("18446744073709551616".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        (-20i32..20).prop_map(|n| n.to_string()),
        (-100.0f64..100.0).prop_map(|f| format!("{f:?}")),
        Just("\"2026-12-07\"".to_owned()),
        Just("\"2026-13-07\"".to_owned()),
        Just("\"x\"".to_owned()),
        Just("\"\\u0078\"".to_owned()),
        Just("\"éé\"".to_owned()),
        "\"[a-c]{0,4}\"",
    ];
    leaf.prop_recursive(4, 64, 24, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((name.clone(), inner), 0..24).prop_map(|members| {
                let members: Vec<String> = members
                    .iter()
                    .map(|(n, v)| format!("\"{n}\":{v}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(2000))]

    /// The fast path passes exactly the data a `Value` passes (and leaves what serde_json
    /// reads its own way to the `Value`).
    #[test]
    fn data_parsed_for_validation_passes_what_a_value_passes(text in json_text()) {
        let value = serde_json::from_str::<serde_json::Value>(&text);
        for schema in representation_schemas() {
            let fast = schema.passes_json(&text);
            match &value {
                Err(_) => proptest::prop_assert!(!fast, "schema {} on {}", schema.version(), text),
                // Where the token is a first name the `Value` is not an object; elsewhere
                // it is a name like any other. A fast pass is a `Value` pass either way.
                Ok(value) if text.contains("$serde_json::private::") => proptest::prop_assert!(
                    !fast || schema.validate(value).is_ok(),
                    "schema {} on {}", schema.version(), text
                ),
                Ok(value) => proptest::prop_assert_eq!(
                    fast,
                    schema.validate(value).is_ok(),
                    "schema {} on {}", schema.version(), text
                ),
            }
        }
    }
}

#[test]
fn the_fast_path_reads_repeated_names_big_objects_and_non_json_as_a_value_does() {
    let schema = Schema::compile(
        "t",
        1,
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "k20": {"const": 2}}}),
    )
    .unwrap();
    // The last of a repeated member counts, as in a `Value`.
    assert!(schema.passes_json(r#"{"a": "x", "a": 1}"#));
    assert!(!schema.passes_json(r#"{"a": 1, "\u0061": "x"}"#));
    // A big object is looked up by name too.
    let members: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {}", i / 10)).collect();
    let big = format!("{{{}}}", members.join(","));
    assert!(schema.passes_json(&big));
    assert!(!schema.passes_json(&big.replace("\"k20\": 2", "\"k20\": 3")));
    let repeated = format!("{{{}, \"k20\": 2, \"k20\": 9}}", members.join(","));
    assert!(!schema.passes_json(&repeated));
    // serde_json's raw-value token: a `Value` parse reads it as the number 123, or
    // refuses it; either way it is the `Value`'s to decide.
    assert!(!schema.passes_json(r#"{"$serde_json::private::RawValue": "123"}"#));
    assert!(!schema.passes_json(r#"{"$serde_json::private::RawValue": 5}"#));
    // Not JSON, or nested past serde_json's limit: not a pass (the `Value` parse says why).
    assert!(!schema.passes_json("{\"a\": 1"));
    assert!(!schema.passes_json(&"[".repeat(200)));
}
