//! Unit tests for the CloudEvents model, the JSON event and batch formats, and the HTTP
//! binding.

use ::http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::http::{self as binding, Mode};
use crate::{CloudEvent, Data, Error, ExtensionValue, Json, batch_to_json_vec, parse_batch};

fn full_event(data: Option<Data>, content_type: Option<&str>) -> CloudEvent {
    let mut ev = CloudEvent::new("A234-1234-1234", "/mycontext", "com.example.someevent");
    ev.datacontenttype = content_type.map(str::to_owned);
    ev.dataschema = Some("https://example.com/schema.json".to_owned());
    ev.subject = Some("mynewfile.jpg".to_owned());
    ev.time = Some("2018-04-05T17:31:00Z".to_owned());
    ev.extensions
        .insert("partitionkey".to_owned(), "order-7".into());
    ev.extensions
        .insert("comexampleothervalue".to_owned(), 5.into());
    ev.extensions.insert("sampled".to_owned(), true.into());
    ev.data = data;
    ev
}

fn minimal_json() -> Value {
    json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
}

/// The minimal event with `members` merged in (a `null` member is kept as `null`).
fn json_with(members: Value) -> Value {
    let mut event = minimal_json();
    if let (Value::Object(event), Value::Object(members)) = (&mut event, members) {
        event.extend(members);
    }
    event
}

fn json_error(value: Value) -> Error {
    CloudEvent::from_json_value(value).expect_err("event should be rejected")
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                name.parse().expect("test header name"),
                HeaderValue::from_str(value).expect("test header value"),
            )
        })
        .collect()
}

fn binary_headers(extra: &[(&str, &str)]) -> HeaderMap {
    let mut all = vec![
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/s"),
        ("ce-type", "t"),
    ];
    all.extend_from_slice(extra);
    headers(&all)
}

fn decode_one(headers: &HeaderMap, body: &[u8]) -> CloudEvent {
    let mut events = binding::decode(headers, body).expect("message should decode");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn binary_round_trip(ev: &CloudEvent) -> CloudEvent {
    let (headers, body) = binding::encode_binary(ev);
    assert_eq!(binding::detect_mode(&headers), Mode::Binary);
    decode_one(&headers, &body)
}

/// Binary mode carries every extension as a string.
fn with_string_extensions(mut ev: CloudEvent) -> CloudEvent {
    for value in ev.extensions.values_mut() {
        *value = ExtensionValue::String(value.to_string());
    }
    ev
}

// --- JSON event format ------------------------------------------------------------------

#[test]
fn json_round_trips_each_data_kind() {
    let cases = [
        (
            Some(Data::Json(
                json!({"appinfoA": "abc", "appinfoB": 123}).into(),
            )),
            Some("application/json"),
        ),
        (Some(Data::Json(json!("just a string").into())), None),
        (
            Some(Data::Json(Value::Null.into())),
            Some("application/json"),
        ),
        (
            Some(Data::Text("<much wow=\"xml\"/>".to_owned())),
            Some("application/xml"),
        ),
        (
            Some(Data::Binary(Bytes::from_static(&[0, 159, 146, 150, 255]))),
            Some("application/octet-stream"),
        ),
        (None, None),
    ];
    for (data, content_type) in cases {
        let ev = full_event(data, content_type);
        ev.validate().expect("fixture is valid");
        let back = CloudEvent::from_json_slice(&ev.to_json_vec()).expect("round trip");
        assert_eq!(back, ev);
    }
}

#[test]
fn json_writes_specversion_and_the_right_data_member() {
    let binary = full_event(Some(Data::Binary(Bytes::from_static(b"hi!"))), None);
    let value = binary.to_json_value();
    assert_eq!(value["specversion"], "1.0");
    assert_eq!(value["type"], "com.example.someevent");
    assert_eq!(value["data_base64"], "aGkh");
    assert!(value.get("data").is_none());
    assert_eq!(value["comexampleothervalue"], 5);
    assert_eq!(value["sampled"], true);

    let text = full_event(Some(Data::Text("hello".to_owned())), Some("text/plain"));
    assert_eq!(text.to_json_value()["data"], "hello");
    assert_eq!(
        CloudEvent::new("1", "/s", "t").to_json_value(),
        minimal_json()
    );
}

#[test]
fn json_data_follows_datacontenttype() {
    let data_of = |content_type: Value, data: Value| {
        CloudEvent::from_json_value(json_with(
            json!({"datacontenttype": content_type, "data": data}),
        ))
        .expect("valid event")
        .data
    };
    let string = json!("<a/>");
    assert_eq!(
        data_of(Value::Null, string.clone()),
        Some(Data::Json(string.clone().into()))
    );
    assert_eq!(
        data_of(json!("application/json"), string.clone()),
        Some(Data::Json(string.clone().into()))
    );
    assert_eq!(
        data_of(json!("text/json"), string.clone()),
        Some(Data::Json(string.clone().into()))
    );
    assert_eq!(
        data_of(json!("application/vnd.x+json"), string.clone()),
        Some(Data::Json(string.clone().into()))
    );
    assert_eq!(
        data_of(json!("Application/JSON; charset=utf-8"), string.clone()),
        Some(Data::Json(string.clone().into()))
    );
    assert_eq!(
        data_of(json!("application/xml"), string),
        Some(Data::Text("<a/>".to_owned()))
    );
    assert_eq!(
        data_of(json!("text/plain"), json!({"a": 1})),
        Some(Data::Json(json!({"a": 1}).into()))
    );
    assert_eq!(
        data_of(json!("application/json"), Value::Null),
        Some(Data::Json(Value::Null.into()))
    );
}

#[test]
fn json_null_attributes_are_absent() {
    let ev = CloudEvent::from_json_value(json_with(json!({
        "subject": null, "time": null, "datacontenttype": null, "dataschema": null,
        "unsetextension": null, "data_base64": null,
    })))
    .expect("nulls are allowed for optional attributes");
    assert_eq!(ev, CloudEvent::new("1", "/s", "t"));
}

#[test]
fn json_accepts_unpadded_base64_and_long_extension_names() {
    let ev = CloudEvent::from_json_value(json_with(json!({
        "data_base64": "aGk", "averyveryverylongextensionname": "x",
    })))
    .expect("valid event");
    assert_eq!(ev.data, Some(Data::Binary(Bytes::from_static(b"hi"))));
    assert!(ev.extensions.contains_key("averyveryverylongextensionname"));
}

#[test]
fn malformed_json_reports_line_and_column() {
    let err = CloudEvent::from_json_slice(b"{\"id\": \n  oops}").expect_err("not JSON");
    assert!(matches!(err, Error::MalformedJson(_)));
    let message = err.to_string();
    assert!(message.starts_with("malformed JSON: "), "{message}");
    assert!(message.contains("line 2 column 3"), "{message}");
    assert_eq!(err.attribute(), None);

    let err = parse_batch(b"[{]").expect_err("not JSON");
    assert!(err.to_string().contains("line 1 column"), "{err}");
    assert_eq!(err.batch_index(), None);
}

#[test]
fn non_object_event_is_rejected() {
    let err = CloudEvent::from_json_slice(b"[]").expect_err("array is not an event");
    assert_eq!(
        err.to_string(),
        "an event must be a JSON object, found an array"
    );
}

#[test]
fn wrong_specversion_is_its_own_error() {
    let err = json_error(json_with(json!({"specversion": "0.3"})));
    assert!(matches!(&err, Error::UnsupportedSpecVersion(found) if found == "0.3"));
    assert_eq!(
        err.to_string(),
        "attribute \"specversion\" is \"0.3\"; weir accepts CloudEvents 1.0 only"
    );
    assert_eq!(err.attribute(), Some("specversion"));

    let err = json_error(json_with(json!({"specversion": 1.0})));
    assert_eq!(err.attribute(), Some("specversion"));
    assert_eq!(
        err.to_string(),
        "attribute \"specversion\" must be a string, found a number"
    );
}

#[test]
fn missing_required_attributes_are_named() {
    for name in ["specversion", "id", "source", "type"] {
        let mut event = minimal_json();
        if let Some(members) = event.as_object_mut() {
            members.remove(name);
        }
        let err = json_error(event);
        assert!(matches!(err, Error::MissingAttribute(_)), "{err}");
        assert_eq!(err.attribute(), Some(name));
        assert_eq!(
            err.to_string(),
            format!("missing required attribute \"{name}\"")
        );

        let err = json_error(json_with(json!({ name: null })));
        assert_eq!(err.attribute(), Some(name), "null counts as missing: {err}");
    }
}

#[test]
fn every_validation_error_names_its_attribute() {
    let too_big = Value::Number("9223372036854775808".parse().expect("u64 literal"));
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"id": ""}), "id", "must be a non-empty string"),
        (json!({"id": 7}), "id", "must be a string, found a number"),
        (
            json!({"source": ""}),
            "source",
            "must be a non-empty string",
        ),
        (
            json!({"source": "/my source"}),
            "source",
            "percent-encode it",
        ),
        (
            json!({"source": "/caf\u{e9}"}),
            "source",
            "percent-encode it",
        ),
        (
            json!({"source": "/100%"}),
            "source",
            "write a literal % as %25",
        ),
        (json!({"type": ""}), "type", "must be a non-empty string"),
        (json!({"type": ["a"]}), "type", "found an array"),
        (
            json!({"subject": ""}),
            "subject",
            "must be a non-empty string",
        ),
        (json!({"subject": true}), "subject", "found a boolean"),
        (
            json!({"subject": "bell\u{7}"}),
            "subject",
            "contains U+0007",
        ),
        (
            json!({"subject": "non\u{fffe}char"}),
            "subject",
            "contains U+FFFE",
        ),
        (
            json!({"time": "yesterday"}),
            "time",
            "not an RFC 3339 timestamp",
        ),
        (
            json!({"time": "2018-04-05 17:31:00"}),
            "time",
            "not an RFC 3339 timestamp",
        ),
        (
            json!({"dataschema": "/schema.json"}),
            "dataschema",
            "not an absolute URI",
        ),
        (
            json!({"dataschema": ""}),
            "dataschema",
            "must be a non-empty string",
        ),
        (
            json!({"datacontenttype": "json"}),
            "datacontenttype",
            "not a media type",
        ),
        (
            json!({"datacontenttype": "application/json; charset=\u{e9}"}),
            "datacontenttype",
            "not a media type",
        ),
        (
            json!({"datacontenttype": {}}),
            "datacontenttype",
            "found an object",
        ),
        (json!({"Upper": "x"}), "Upper", "invalid name"),
        (json!({"with-dash": "x"}), "with-dash", "invalid name"),
        (json!({"ext": 1.5}), "ext", "not an integer"),
        (
            json!({"ext": too_big}),
            "ext",
            "outside the CloudEvents integer range",
        ),
        (
            json!({"ext": {"a": 1}}),
            "ext",
            "must be a string, integer or boolean, found an object",
        ),
        (json!({"ext": "tab\there"}), "ext", "contains U+0009"),
        (
            json!({"partitionkey": 5}),
            "partitionkey",
            "partitioning extension",
        ),
        (
            json!({"partitionkey": ""}),
            "partitionkey",
            "partitioning extension",
        ),
        (
            json!({"data_base64": "not base64!"}),
            "data_base64",
            "not valid base64",
        ),
        (json!({"data_base64": 5}), "data_base64", "must be a string"),
        (
            json!({"data": {}, "data_base64": "aGk="}),
            "data",
            "not both",
        ),
    ];
    for (members, attribute, fragment) in cases {
        let err = json_error(json_with(members.clone()));
        assert_eq!(err.attribute(), Some(attribute), "{members}: {err}");
        let message = err.to_string();
        assert!(message.contains(fragment), "{members}: {message}");
    }
}

#[test]
fn validate_rejects_extensions_that_shadow_core_attributes() {
    for (name, fragment) in [
        ("data", "reserved for the event payload"),
        ("subject", "core attribute"),
    ] {
        let mut ev = CloudEvent::new("1", "/s", "t");
        ev.extensions.insert(name.to_owned(), "x".into());
        let err = ev.validate().expect_err("reserved name");
        assert_eq!(err.attribute(), Some(name));
        assert!(err.to_string().contains(fragment), "{err}");
    }
}

#[test]
fn error_messages_repeat_long_values_only_in_part() {
    let err = json_error(json_with(json!({"time": "x".repeat(10_000)})));
    assert!(err.to_string().len() < 200, "{err}");
}

#[test]
fn error_messages_are_lower_case_without_trailing_period() {
    let errors = [
        json_error(json_with(json!({"specversion": "0.3"}))),
        json_error(json_with(json!({"time": "later"}))),
        json_error(json_with(json!({"data": 1, "data_base64": "aGk="}))),
        json_error(json!(null)),
        parse_batch(b"{}").expect_err("not an array"),
        parse_batch(b"[").expect_err("not JSON"),
        binding::decode(&HeaderMap::new(), b"").expect_err("no event"),
    ];
    for err in errors {
        let message = err.to_string();
        assert!(
            message.starts_with(|c: char| c.is_lowercase() || c == '"'),
            "{message}"
        );
        assert!(!message.ends_with('.'), "{message}");
    }
}

#[test]
fn accessors() {
    let ev = full_event(Some(Data::Json(json!({"a": 1}).into())), None);
    assert_eq!(ev.partition_key(), Some("order-7"));
    assert_eq!(ev.data_bytes(), Some(Bytes::from_static(b"{\"a\":1}")));
    let mut ev = CloudEvent::new("1", "/s", "t");
    assert_eq!(ev.data_bytes(), None);
    ev.extensions.insert("partitionkey".to_owned(), 5.into());
    assert_eq!(ev.partition_key(), None);
    ev.data = Some(Data::Text("héllo".to_owned()));
    assert_eq!(ev.data_bytes(), Some(Bytes::from("héllo")));
}

// --- JSON batch format ------------------------------------------------------------------

#[test]
fn batch_round_trips() {
    let events = vec![
        full_event(
            Some(Data::Binary(Bytes::from_static(b"\x00\x01"))),
            Some("application/vnd.apache.thrift.binary"),
        ),
        full_event(
            Some(Data::Json(json!({"appinfoC": true}).into())),
            Some("application/json"),
        ),
    ];
    assert_eq!(
        parse_batch(&batch_to_json_vec(&events)).expect("round trip"),
        events
    );
    assert_eq!(parse_batch(b"[]").expect("empty batch is valid"), vec![]);
    assert_eq!(batch_to_json_vec(&[]), b"[]");
}

#[test]
fn batch_errors_name_the_index() {
    let batch = json!([
        minimal_json(),
        minimal_json(),
        json_with(json!({"source": ""}))
    ]);
    let err = parse_batch(batch.to_string().as_bytes()).expect_err("third event is invalid");
    assert_eq!(err.batch_index(), Some(2));
    assert_eq!(err.attribute(), Some("source"));
    assert_eq!(
        err.to_string(),
        "event [2] in batch: attribute \"source\" must be a non-empty string"
    );

    let batch = json!([minimal_json(), json_with(json!({"specversion": "0.3"}))]);
    let err = parse_batch(batch.to_string().as_bytes()).expect_err("second event is 0.3");
    assert_eq!(err.batch_index(), Some(1));
    assert_eq!(err.attribute(), Some("specversion"));

    let err = parse_batch(b"[1]").expect_err("not an object");
    assert_eq!(
        err.to_string(),
        "event [0] in batch: an event must be a JSON object, found a number"
    );

    let err = parse_batch(b"{}").expect_err("not an array");
    assert_eq!(
        err.to_string(),
        "a batch must be a JSON array of events, found an object"
    );
    assert_eq!(err.batch_index(), None);
}

// --- HTTP binding -----------------------------------------------------------------------

#[test]
fn detect_mode_follows_content_type_prefix() {
    let mode =
        |content_type: &str| binding::detect_mode(&headers(&[("content-type", content_type)]));
    assert_eq!(mode("application/cloudevents+json"), Mode::Structured);
    assert_eq!(
        mode("Application/CloudEvents+JSON; charset=UTF-8"),
        Mode::Structured
    );
    assert_eq!(mode("application/cloudevents+avro"), Mode::Structured);
    assert_eq!(
        mode("application/cloudevents-batch+json; charset=utf-8"),
        Mode::Batch
    );
    assert_eq!(mode("application/json"), Mode::Binary);
    assert_eq!(binding::detect_mode(&HeaderMap::new()), Mode::Binary);
}

#[test]
fn binary_mode_round_trips_each_data_kind() {
    let cases = [
        full_event(
            Some(Data::Json(json!({"appinfoA": "abc"}).into())),
            Some("application/json; charset=utf-8"),
        ),
        full_event(
            Some(Data::Json(json!("I'm just a string").into())),
            Some("application/json"),
        ),
        full_event(
            Some(Data::Text("<much wow=\"xml\"/>".to_owned())),
            Some("text/xml"),
        ),
        full_event(
            Some(Data::Binary(Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef]))),
            Some("application/octet-stream"),
        ),
        full_event(None, None),
    ];
    for ev in cases {
        assert_eq!(binary_round_trip(&ev), with_string_extensions(ev.clone()));
    }
}

#[test]
fn binary_mode_writes_headers_per_spec() {
    let ev = full_event(Some(Data::Json(json!("I'm just a string").into())), None);
    let (headers, body) = binding::encode_binary(&ev);
    assert_eq!(headers["ce-specversion"], "1.0");
    assert_eq!(headers["ce-type"], "com.example.someevent");
    assert_eq!(headers["ce-time"], "2018-04-05T17:31:00Z");
    assert_eq!(headers["ce-comexampleothervalue"], "5");
    assert_eq!(headers["ce-sampled"], "true");
    assert_eq!(
        headers[CONTENT_TYPE], "application/json",
        "the implied JSON type is made explicit"
    );
    assert!(!headers.contains_key("ce-datacontenttype"));
    assert_eq!(body, Bytes::from_static(b"\"I'm just a string\""));

    let mut decoded = decode_one(&headers, &body);
    assert_eq!(decoded.datacontenttype.as_deref(), Some("application/json"));
    decoded.datacontenttype = None;
    assert_eq!(decoded, with_string_extensions(ev));
}

#[test]
fn binary_mode_body_becomes_json_text_or_bytes() {
    let data = |content_type: Option<&str>, body: &[u8]| {
        let mut extra = vec![];
        extra.extend(content_type.map(|ct| ("content-type", ct)));
        decode_one(&binary_headers(&extra), body).data
    };
    assert_eq!(
        data(Some("application/json"), b"[1,2]"),
        Some(Data::Json(json!([1, 2]).into()))
    );
    assert_eq!(
        data(Some("application/vnd.api+json"), b"{}"),
        Some(Data::Json(json!({}).into()))
    );
    assert_eq!(
        data(Some("text/plain; charset=utf-8"), b"hi"),
        Some(Data::Text("hi".to_owned()))
    );
    assert_eq!(
        data(Some("text/plain"), b"\xff"),
        Some(Data::Binary(Bytes::from_static(b"\xff")))
    );
    assert_eq!(
        data(None, b"hi"),
        Some(Data::Binary(Bytes::from_static(b"hi")))
    );
    assert_eq!(data(Some("application/json"), b""), None);

    let err = binding::decode(
        &binary_headers(&[("content-type", "application/json")]),
        b"{oops",
    )
    .expect_err("body is not JSON");
    assert_eq!(err.attribute(), Some("data"));
    assert!(err.to_string().contains("line 1 column 2"), "{err}");
}

#[test]
fn binary_mode_extensions_are_strings() {
    let ev = decode_one(
        &binary_headers(&[("CE-PartitionKey", "k1"), ("ce-count", "5")]),
        b"",
    );
    assert_eq!(ev.partition_key(), Some("k1"));
    assert_eq!(
        ev.extensions["count"],
        ExtensionValue::String("5".to_owned())
    );
}

#[test]
fn percent_encoding_follows_the_spec_example_and_round_trips() {
    let mut ev = CloudEvent::new("id 1", "/my%20context", "com.example.\"quoted\"");
    ev.subject = Some("Euro \u{20ac} \u{1f600}".to_owned());
    ev.extensions
        .insert("note".to_owned(), "100% sure, ü".into());
    let (headers, body) = binding::encode_binary(&ev);
    assert_eq!(headers["ce-subject"], "Euro%20%E2%82%AC%20%F0%9F%98%80");
    assert_eq!(headers["ce-id"], "id%201");
    assert_eq!(headers["ce-source"], "/my%2520context");
    assert_eq!(headers["ce-type"], "com.example.%22quoted%22");
    assert_eq!(decode_one(&headers, &body), ev);
}

#[test]
fn percent_decoding_accepts_lower_case_unneeded_escapes_and_quoted_strings() {
    let ev = decode_one(
        &binary_headers(&[
            ("ce-subject", "euro%e2%82%ac%41"),
            ("ce-note", "\"a \\\"quoted\\\" value\" tail"),
        ]),
        b"",
    );
    assert_eq!(ev.subject.as_deref(), Some("euro\u{20ac}A"));
    assert_eq!(
        ev.extensions["note"],
        ExtensionValue::String("a \"quoted\" value tail".to_owned())
    );
}

#[test]
fn percent_decoding_rejects_invalid_utf8_and_open_quotes() {
    let err =
        binding::decode(&binary_headers(&[("ce-subject", "%C0%A0")]), b"").expect_err("overlong");
    assert_eq!(err.attribute(), Some("subject"));
    assert!(err.to_string().contains("not UTF-8"), "{err}");

    let err =
        binding::decode(&binary_headers(&[("ce-subject", "\"open")]), b"").expect_err("open quote");
    assert_eq!(err.attribute(), Some("subject"));

    let err = binding::decode(&binary_headers(&[("ce-subject", "line%0Abreak")]), b"")
        .expect_err("control");
    assert_eq!(err.attribute(), Some("subject"));
}

#[test]
fn binary_mode_errors_name_the_attribute() {
    let without = |name: &str| {
        let mut headers = binary_headers(&[]);
        headers.remove(name);
        binding::decode(&headers, b"").expect_err("required header missing")
    };
    for (header, attribute) in [
        ("ce-id", "id"),
        ("ce-source", "source"),
        ("ce-type", "type"),
        ("ce-specversion", "specversion"),
    ] {
        let err = without(header);
        assert_eq!(err.attribute(), Some(attribute), "{err}");
        assert_eq!(
            err.to_string(),
            format!("missing required attribute \"{attribute}\"")
        );
    }

    let mut headers = binary_headers(&[]);
    headers.insert("ce-specversion", HeaderValue::from_static("0.3"));
    let err = binding::decode(&headers, b"").expect_err("0.3");
    assert!(matches!(err, Error::UnsupportedSpecVersion(_)), "{err}");

    let err = binding::decode(
        &binary_headers(&[("ce-datacontenttype", "text/plain")]),
        b"",
    )
    .expect_err("ce-datacontenttype is not allowed");
    assert_eq!(err.attribute(), Some("datacontenttype"));

    let err = binding::decode(&binary_headers(&[("ce-time", "soon")]), b"").expect_err("bad time");
    assert_eq!(err.attribute(), Some("time"));

    let err = binding::decode(&binary_headers(&[("ce-my_ext", "x")]), b"").expect_err("bad name");
    assert_eq!(err.attribute(), Some("my_ext"));

    let err =
        binding::decode(&binary_headers(&[("ce-data", "x")]), b"").expect_err("reserved name");
    assert_eq!(err.attribute(), Some("data"));

    let err = binding::decode(&binary_headers(&[("ce-x", "1"), ("ce-x", "2")]), b"")
        .expect_err("duplicate");
    assert_eq!(err.attribute(), Some("x"));

    let err = binding::decode(&binary_headers(&[("content-type", "no media type")]), b"x")
        .expect_err("bad content type");
    assert_eq!(err.attribute(), Some("datacontenttype"));
}

#[test]
fn message_without_cloudevent_is_rejected() {
    let err = binding::decode(&headers(&[("content-type", "application/json")]), b"{}")
        .expect_err("plain JSON request");
    assert!(matches!(err, Error::NotACloudEvent), "{err}");
    assert_eq!(err.attribute(), None);
}

#[test]
fn structured_mode_round_trips_and_tolerates_parameters() {
    let ev = full_event(Some(Data::Text("hello".to_owned())), Some("text/plain"));
    let (headers, body) = binding::encode_structured(&ev);
    assert_eq!(headers[CONTENT_TYPE], binding::STRUCTURED_CONTENT_TYPE);
    assert_eq!(binding::detect_mode(&headers), Mode::Structured);
    assert_eq!(decode_one(&headers, &body), ev);

    let with_params = headers_for("Application/CloudEvents+json; charset=UTF-8");
    assert_eq!(decode_one(&with_params, &body), ev);
    // ce- headers are ignored in structured mode.
    let mut with_ce = headers_for(binding::STRUCTURED_CONTENT_TYPE);
    with_ce.insert("ce-id", HeaderValue::from_static("other"));
    assert_eq!(decode_one(&with_ce, &body).id, ev.id);

    let err = binding::decode(&headers_for(binding::STRUCTURED_CONTENT_TYPE), b"{")
        .expect_err("malformed");
    assert!(matches!(err, Error::MalformedJson(_)), "{err}");
}

#[test]
fn batch_mode_round_trips() {
    let events = vec![
        full_event(Some(Data::Json(json!({"n": 1}).into())), None),
        CloudEvent::new("2", "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", "t"),
    ];
    let (headers, body) = binding::encode_batch(&events);
    assert_eq!(headers[CONTENT_TYPE], binding::BATCH_CONTENT_TYPE);
    assert_eq!(binding::detect_mode(&headers), Mode::Batch);
    assert_eq!(
        binding::decode(&headers, &body).expect("round trip"),
        events
    );
    let with_params = headers_for("application/cloudevents-batch+json; charset=utf-8");
    assert_eq!(
        binding::decode(&with_params, &body).expect("round trip"),
        events
    );

    let bad = json!([minimal_json(), {"specversion": "1.0", "id": "2", "type": "t"}]);
    let err = binding::decode(&headers, bad.to_string().as_bytes()).expect_err("missing source");
    assert_eq!(
        (err.batch_index(), err.attribute()),
        (Some(1), Some("source"))
    );
}

#[test]
fn other_event_formats_are_unsupported() {
    for content_type in [
        "application/cloudevents+avro",
        "application/cloudevents-batch+xml",
    ] {
        let err = binding::decode(&headers_for(content_type), b"").expect_err("unsupported format");
        assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
        assert!(err.to_string().contains(content_type), "{err}");
    }
}

fn headers_for(content_type: &str) -> HeaderMap {
    headers(&[("content-type", content_type)])
}

#[test]
fn spec_example_values_are_accepted() {
    let sources = [
        "https://github.com/cloudevents",
        "mailto:cncf-wg-serverless@lists.cncf.io",
        "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
        "/cloudevents/spec/pull/123",
        "1-555-123-4567",
        "/caf%C3%A9",
    ];
    let times = [
        "2018-04-05T17:31:00Z",
        "2018-04-05t17:31:00z",
        "2018-04-05T17:31:00.123456789+02:00",
        "1985-04-12T23:20:50.52-08:00",
    ];
    for (source, time) in sources.iter().zip(times.iter().cycle()) {
        let mut ev = CloudEvent::new("1", *source, "com.github.pull_request.opened");
        ev.time = Some((*time).to_owned());
        ev.dataschema = Some("https://example.com/schema.json#/definitions/order".to_owned());
        ev.datacontenttype = Some("application/vnd.apache.thrift.binary".to_owned());
        ev.validate()
            .unwrap_or_else(|e| panic!("{source} {time}: {e}"));
    }
}

// --- JSON read as serde_json reads a `Value`, repeated keys refused --------------------

mod exact_json;

use exact_json::{Node, first_duplicate, reads_as_reference};

#[test]
fn malformed_json_data_fails_as_reading_a_value_does() {
    let deep = "[".repeat(200) + &"]".repeat(200);
    let texts: &[&[u8]] = &[
        b"",
        b" ",
        b"{",
        b"[1, 2",
        b"{\"a\": 1,}",
        b"[1,]",
        b"{\"a\" 1}",
        b"{1: 2}",
        b"nul",
        b"01",
        b"1.",
        b"-",
        b"1e400",
        b"-1e400",
        b"\"\\ud800\"",
        b"\"\\udc00\"",
        b"\"\\x\"",
        b"\"tab\there\"",
        b"\"\xff\"",
        b"\"open",
        b"{} {}",
        b"[] x",
        deep.as_bytes(),
    ];
    for text in texts {
        let shown = String::from_utf8_lossy(text);
        let expected = serde_json::from_slice::<Value>(text).expect_err(&shown);
        let found = Json::from_slice(text).expect_err(&shown);
        assert_eq!(
            found.to_string(),
            Error::MalformedJson(expected).to_string(),
            "{shown}"
        );
        reads_as_reference(text).unwrap();
    }
}

/// The member an event repeats, or else the key its data repeats and where: what
/// reading `document` must refuse, if it reads as a `Value` at all.
fn repeated_in_event(document: &[u8]) -> Option<(String, Option<String>)> {
    let Ok(Node::Object(members)) = serde_json::from_slice::<Node>(document) else {
        return None;
    };
    let repeated = members.iter().enumerate().find_map(|(i, (name, _))| {
        members[..i]
            .iter()
            .any(|(earlier, _)| earlier == name)
            .then(|| (name.clone(), None))
    });
    repeated.or_else(|| {
        members
            .iter()
            .filter(|(name, _)| name == "data")
            .find_map(|(_, data)| first_duplicate(data, ""))
            .map(|(key, pointer)| (key, Some(pointer)))
    })
}

/// The error reading `document` must give for what it repeats, if it does.
fn duplicate_error(document: &[u8]) -> Option<Error> {
    serde_json::from_slice::<Value>(document).ok()?;
    repeated_in_event(document).map(|(key, pointer)| Error::DuplicateKey { key, pointer })
}

#[test]
fn events_read_as_through_a_value() {
    let documents: &[&str] = &[
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data": {"b": 1.50, "a": [1e3, "\u00e9"]}}"#,
        r#"{"data": null, "specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"x":1},"data":{"x":2, "x": 3}}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"x":2, "x": 3}}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi\u0021"}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":{"a":1}}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"aGk="}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":[1,}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1e400}"#,
        r#"{"specversion":"0.3","data":[1,2,3]}"#,
        r#"{"id":"1","source":"/s","type":"t","data":{}}"#,
        r#"[{"data": 1}, 2, {"a": [}]"#,
        r#""an event?""#,
        "7",
        "null",
        "{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"data\":\"\\ud800\"}",
    ];
    let through_value = |bytes: &[u8]| {
        serde_json::from_slice(bytes)
            .map_err(Error::MalformedJson)
            .and_then(CloudEvent::from_json_value)
    };
    for document in documents {
        let direct = CloudEvent::from_json_slice(document.as_bytes());
        let expected = match duplicate_error(document.as_bytes()) {
            Some(duplicate) => Err(duplicate),
            None => through_value(document.as_bytes()),
        };
        match (&direct, &expected) {
            // Equal as values; the data's text is the one sent (see `exact_json`).
            (Ok(direct), Ok(expected)) => assert_eq!(direct, expected, "{document}"),
            (Err(direct), Err(expected)) => {
                assert_eq!(direct.to_string(), expected.to_string(), "{document}")
            }
            _ => panic!("{document}: {direct:?} but through a Value {expected:?}"),
        }
        let batch = format!("[{document}]");
        let expected = serde_json::from_slice::<Value>(batch.as_bytes())
            .map_err(Error::MalformedJson)
            .and_then(|v| match v {
                Value::Array(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(index, item)| {
                        let in_batch = |error| Error::InBatch {
                            index,
                            error: Box::new(error),
                        };
                        match duplicate_error(document.as_bytes()) {
                            Some(duplicate) => Err(in_batch(duplicate)),
                            None => CloudEvent::from_json_value(item).map_err(in_batch),
                        }
                    })
                    .collect(),
                _ => unreachable!(),
            });
        assert_eq!(
            parse_batch(batch.as_bytes()).map_err(|e| e.to_string()),
            expected.map_err(|e| e.to_string()),
            "{batch}"
        );
    }
    for not_a_batch in ["{\"a\": [1,]}", "{\"a\": 1}", "\"x\"", "1", "null", "true"] {
        let expected = serde_json::from_slice::<Value>(not_a_batch.as_bytes())
            .map_err(|e| Error::MalformedJson(e).to_string());
        let found = parse_batch(not_a_batch.as_bytes()).expect_err("not a batch");
        match expected {
            Err(expected) => assert_eq!(found.to_string(), expected),
            Ok(_) => assert!(matches!(found, Error::NotAnArray { .. }), "{found}"),
        }
    }
}

#[test]
fn json_writer_matches_the_value_writer_even_for_unvalidated_events() {
    let mut odd = CloudEvent::new("1", "/s", "t");
    odd.time = Some("2018-04-05T17:31:00Z".to_owned());
    for (name, value) in [
        ("id", ExtensionValue::from("shadow")),
        ("specversion", "0.3".into()),
        ("subject", "kept, no subject set".into()),
        ("time", "dropped, time is set".into()),
        ("data", "replaced by the data, in its place".into()),
        ("aaa", (-7).into()),
        ("zzz", false.into()),
        ("quote\"d", "\u{1}".into()),
    ] {
        odd.extensions.insert(name.to_owned(), value);
    }
    let mut cases = vec![odd.clone()];
    for data in [
        None,
        Some(Data::Json(json!({"z": 1, "a": [1.5, null]}).into())),
        Some(Data::Text("t\"xt".to_owned())),
        Some(Data::Binary(Bytes::from_static(b"\x00\xff"))),
    ] {
        let mut with_data = odd.clone();
        with_data.data = data.clone();
        cases.push(with_data);
        let mut plain = full_event(data, Some("application/json"));
        plain.extensions.insert("data_base64".to_owned(), 1.into());
        cases.push(plain);
    }
    for event in &cases {
        assert_eq!(
            String::from_utf8(event.to_json_vec()).unwrap(),
            event.to_json_value().to_string()
        );
    }
    assert_eq!(
        String::from_utf8(batch_to_json_vec(&cases)).unwrap(),
        Value::Array(cases.iter().map(CloudEvent::to_json_value).collect()).to_string()
    );
}

#[test]
fn json_data_compares_as_values() {
    let a = Json::from_slice(br#"{"a": 1, "b": [2]}"#).unwrap();
    let b = Json::from_slice(br#"{"b":[2],"a":1}"#).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.as_str(), b.as_str());
    assert_ne!(a, Json::from_slice(b"{\"a\": 1.0, \"b\": [2]}").unwrap());
    assert_eq!(a.value(), json!({"a": 1, "b": [2]}));
    assert_eq!(
        Json::from_slice(b"1E+2").unwrap(),
        Json::from_slice(b"100.0").unwrap()
    );
    assert_eq!(Json::null().as_str(), "null");
    assert_eq!(Json::from(json!("x")).to_string(), "\"x\"");
}

/// What `from_json_slice` gave when it read the members other than `data` into a `Map`:
/// `from_json_value` on the same members in the same order. It takes `data` out with a
/// `swap_remove`, so `data` goes last, where that leaves the others in place.
fn through_a_map(bytes: &[u8]) -> Result<CloudEvent, Error> {
    match serde_json::from_slice(bytes).map_err(Error::MalformedJson)? {
        Value::Object(mut members) => {
            if let Some(data) = members.shift_remove("data") {
                members.insert("data".to_owned(), data);
            }
            CloudEvent::from_json_value(Value::Object(members))
        }
        other => CloudEvent::from_json_value(other),
    }
}

/// `from_json_slice` and `parse_batch` give what reading through a `Map` gave, except
/// that a repeated member, or a key repeated inside the data, is refused.
fn assert_read_as_through_a_map(document: &[u8]) {
    let shown = String::from_utf8_lossy(document);
    let expected = match duplicate_error(document) {
        Some(duplicate) => Err(duplicate),
        None => through_a_map(document),
    };
    match (CloudEvent::from_json_slice(document), &expected) {
        (Ok(direct), Ok(expected)) => {
            assert_eq!(&direct, expected, "{shown}");
            // The same but for the data's text, which is kept as sent.
            let written: Value = serde_json::from_slice(&direct.to_json_vec()).unwrap();
            assert_eq!(written, expected.to_json_value(), "{shown}");
        }
        (Err(direct), Err(expected)) => {
            assert_eq!(direct.to_string(), expected.to_string(), "{shown}");
            assert_eq!(direct.attribute(), expected.attribute(), "{shown}");
        }
        (direct, expected) => panic!("{shown}: {direct:?} but through a Map {expected:?}"),
    }
    let batch = [b"[".as_slice(), document, b", ", document, b"]"].concat();
    let expected = serde_json::from_slice::<Value>(&batch)
        .map_err(Error::MalformedJson)
        .and_then(|_| {
            [document, document]
                .iter()
                .enumerate()
                .map(|(index, document)| {
                    match duplicate_error(document) {
                        Some(duplicate) => Err(duplicate),
                        None => through_a_map(document),
                    }
                    .map_err(|error| Error::InBatch {
                        index,
                        error: Box::new(error),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        });
    assert_eq!(
        parse_batch(&batch).map_err(|e| e.to_string()),
        expected.map_err(|e| e.to_string()),
        "[{shown}, …]"
    );
}

#[test]
fn events_read_as_through_a_map() {
    let documents: &[&[u8]] = &[
        // Names with escapes are the names they spell.
        br#"{"specversion":"1.0","\u0069d":"1","source":"/s","typ\u0065":"t","\u0064ata":[1]}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","\u0061b":1}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","\u0041b":1}"#,
        // Of duplicates the last counts, null too.
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","id":"2","subject":"x","subject":null}"#,
        br#"{"specversion":"1.0","id":5,"source":"/s","type":"t","id":"2"}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":1.5,"ext":"ok","other":true,"other":null}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":"ok","ext":[1]}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":"ok","Ext":1,"ext":"again"}"#,
        // Of several bad extensions, the one the map met first: not always the first
        // in the document, since taking out the attributes reordered the map.
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","a":1.5,"b":1.5}"#,
        br#"{"a":1.5,"specversion":"1.0","b":{},"id":"1","c":null,"source":"/s","type":"t","d":[],"a":2.5}"#,
        br#"{"x":1.5,"y":18446744073709551615,"z":[],"specversion":"1.0","id":"1","source":"/s","type":"t","time":null}"#,
        br#"{"specversion":"1.0","data":1,"id":"1","a":1.5,"source":"/s","b":1.5,"type":"t","data_base64":null,"c":1.5}"#,
        // Bad names and bad values: values are checked first, names by `validate`.
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad":"x","ext":1.5}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","Bad":"x","zz":"tab\tx"}"#,
        // Not UTF-8, in a string and outside one.
        b"{\"specversion\":\"1.0\",\"id\":\"\xff\",\"source\":\"/s\",\"type\":\"t\"}",
        b"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\"}\xff",
        b"{\"specversion\":\"1.0\",\"id\":\"1\",\"source\":\"/s\",\"type\":\"t\",\"\xc3\":1}",
        // Malformed inside values the reader does not keep.
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":[1,]}"#,
        br#"{"specversion":"1.0","id":{"a":1e400},"source":"/s","type":"t"}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":1e400}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":"\ud800"}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t",5:1}"#,
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":1,}"#,
    ];
    for document in documents {
        assert_read_as_through_a_map(document);
    }
    let err = CloudEvent::from_json_slice(documents[8]).expect_err("two bad extensions");
    assert_eq!(err.attribute(), Some("b"), "{err}");
}

#[test]
fn is_json_agrees_with_the_essence() {
    for content_type in [
        "application/json",
        "APPLICATION/JSON",
        " Text/Json ; charset=utf-8",
        "application/vnd.x+JSON",
        "application/+json",
        "application/json+xml",
        "json",
        "/json",
        "a/b/json",
        "é/json",
        "application/jsoné",
        "application/xjson",
        "\u{a0}application/json\u{a0}",
        "",
    ] {
        let expected = crate::validate::essence(content_type)
            .split_once('/')
            .is_some_and(|(_, subtype)| subtype == "json" || subtype.ends_with("+json"));
        assert_eq!(
            crate::validate::is_json(content_type),
            expected,
            "{content_type:?}"
        );
    }
}

mod envelopes {
    use proptest::prelude::*;

    use super::assert_read_as_through_a_map;

    const NAMES: &[&str] = &[
        "specversion",
        "id",
        "source",
        "type",
        "datacontenttype",
        "dataschema",
        "subject",
        "time",
        "data",
        "data_base64",
        "partitionkey",
        "a",
        "b",
        "ext1",
        "Bad",
        "with-dash",
        "é",
    ];

    const VALUES: &[&str] = &[
        "null",
        r#""1.0""#,
        r#""0.3""#,
        r#""""#,
        r#""x""#,
        r#""/s""#,
        r#""t""#,
        r#""bell\u0007""#,
        r#""/caf\u00e9""#,
        r#""2018-04-05T17:31:00Z""#,
        r#""application/json""#,
        r#""Text/Plain""#,
        r#""https://example.com/s""#,
        r#""aGk=""#,
        r#""not base64!""#,
        "1",
        "-5",
        "1.5",
        "18446744073709551615",
        "true",
        r#"[1, {"a": []}]"#,
        r#"{"a": 1, "a": "2"}"#,
    ];

    /// A member's name as JSON text, its first character `\u` escaped if `escape`.
    fn quoted(name: &str, escape: bool) -> String {
        let mut chars = name.chars();
        match (escape, chars.next()) {
            (true, Some(first)) => format!("\"\\u{:04x}{}\"", u32::from(first), chars.as_str()),
            _ => format!("\"{name}\""),
        }
    }

    fn members() -> impl Strategy<Value = Vec<(usize, usize, bool)>> {
        // Mostly a valid core, so that later checks are reached too.
        let core = [(0, 1), (1, 4), (2, 5), (3, 6)].map(|(name, value)| {
            prop_oneof![
                4 => Just((name, value, false)),
                1 => (0..NAMES.len(), 0..VALUES.len(), any::<bool>()),
            ]
        });
        let others = prop::collection::vec((0..NAMES.len(), 0..VALUES.len(), any::<bool>()), 0..8);
        (core, others)
            .prop_map(|(core, others)| core.into_iter().chain(others).collect::<Vec<_>>())
            .prop_shuffle()
    }

    proptest! {
        #[test]
        fn any_envelope_reads_as_through_a_map(
            members in members(),
            spaced in any::<bool>(),
            edit in prop::option::weighted(0.2, (any::<prop::sample::Index>(), 0..3u8,
                prop::sample::select(&b"{}[]\":,\\u0e-+. x\xff"[..]))),
        ) {
            let separator = if spaced { ", " } else { "," };
            let text = members
                .iter()
                .map(|&(name, value, escape)| {
                    format!("{}:{}", quoted(NAMES[name], escape), VALUES[value])
                })
                .collect::<Vec<_>>()
                .join(separator);
            let mut document = format!("{{{text}}}").into_bytes();
            if let Some((at, kind, byte)) = edit {
                let at = at.index(document.len() + 1);
                match kind {
                    0 if at < document.len() => { document.remove(at); }
                    1 if at < document.len() => document[at] = byte,
                    _ => document.insert(at, byte),
                }
            }
            assert_read_as_through_a_map(&document);
        }
    }
}

#[test]
fn minus_zero_is_the_integer_zero() {
    // `-0` is an integer literal of JSON; serde_json reads it as the float -0.0.
    let ev = CloudEvent::from_json_slice(
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":-0}"#,
    )
    .expect("-0 is an integer");
    assert_eq!(ev.extensions.get("ext"), Some(&ExtensionValue::Integer(0)));
    let err = CloudEvent::from_json_slice(
        br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":-0.5}"#,
    )
    .expect_err("not whole");
    assert!(err.to_string().contains("not an integer"), "{err}");
}
