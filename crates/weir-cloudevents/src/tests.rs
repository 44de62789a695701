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
            "too large for a 64-bit integer",
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

// --- JSON data as canonical text -----------------------------------------------------

/// What reading `text` as a `Value` and writing it again gives, or serde_json's error.
fn value_round_trip(text: &[u8]) -> Result<String, String> {
    serde_json::from_slice::<Value>(text)
        .map(|value| value.to_string())
        .map_err(|e| e.to_string())
}

fn canonical(text: &[u8]) -> Result<String, String> {
    Json::from_slice(text)
        .map(Json::into_string)
        .map_err(|e| e.to_string())
}

#[test]
fn json_data_is_the_text_a_value_round_trip_writes() {
    let texts: &[&str] = &[
        "null",
        " true ",
        "false",
        "0",
        "-0",
        "-0.0",
        "1e3",
        "1E+3",
        "1.50",
        "12345678901234567890",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "0.1",
        "1e-7",
        "123456789012345678901234567890e-10",
        "5e-324",
        "1.7976931348623157e308",
        r#""plain""#,
        r#""\u00e9\/\"\\\b\f\n\r\t\u0000\u001f\u007f\u2028""#,
        r#""\ud83d\ude00 é 😀""#,
        "[]",
        "[ ]",
        "{}",
        "{ }",
        "[1, [2, [3, {}]], {\"a\": []}]",
        "{\n  \"b\": 1,\n  \"a\": {\"y\": null, \"x\": [true, false]}\n}",
        r#"{"a": 1, "b": 2, "a": 3}"#,
        r#"{"a": {"x": 1, "x": 2}, "a": [1], "c": {"\u0061": 1, "a": 2}}"#,
        r#"[{"k": 1, "k": {"k": 2, "k": 3}}, {"k": 4}]"#,
        r#"{"$serde_json::private::Number": "1"}"#,
    ];
    for text in texts {
        assert_eq!(
            canonical(text.as_bytes()),
            value_round_trip(text.as_bytes()),
            "{text}"
        );
    }
    // Text that is canonical already, duplicate keys aside.
    for text in [
        r#"{"a":1,"a":2}"#,
        r#"{"b":{"x":[1,""],"x":null}}"#,
        r#"["é"\",{"k":-1.5e-7}]"#,
    ] {
        assert_eq!(
            canonical(text.as_bytes()),
            value_round_trip(text.as_bytes())
        );
    }
    // Many keys take the hashing path of the duplicate check.
    let many: Vec<String> = (0..40).map(|i| format!("\"k{}\": {i}", i % 25)).collect();
    let text = format!("{{{}}}", many.join(", "));
    assert_eq!(
        canonical(text.as_bytes()),
        value_round_trip(text.as_bytes())
    );
}

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
        let expected = value_round_trip(text);
        assert!(expected.is_err(), "{:?}", String::from_utf8_lossy(text));
        assert_eq!(
            canonical(text),
            expected,
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }
}

#[test]
fn events_read_and_written_as_through_a_value() {
    let documents: &[&str] = &[
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data": {"b": 1.50, "a": [1e3, "\u00e9"]}}"#,
        r#"{"data": null, "specversion":"1.0","id":"1","source":"/s","type":"t"}"#,
        r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"x":1},"data":{"x":2, "x": 3}}"#,
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
        let expected = through_value(document.as_bytes());
        match (&direct, &expected) {
            (Ok(direct), Ok(expected)) => {
                assert_eq!(direct, expected, "{document}");
                assert_eq!(direct.to_json_vec(), expected.to_json_vec(), "{document}");
                if let (Some(Data::Json(a)), Some(Data::Json(b))) = (&direct.data, &expected.data) {
                    assert_eq!(a.as_str(), b.as_str(), "{document}");
                }
            }
            (Err(direct), Err(expected)) => {
                assert_eq!(direct.to_string(), expected.to_string(), "{document}")
            }
            _ => panic!("{document}: {direct:?} but through a Value {expected:?}"),
        }
        let batch = format!("[{document}]");
        assert_eq!(
            parse_batch(batch.as_bytes()).map_err(|e| e.to_string()),
            serde_json::from_slice::<Value>(batch.as_bytes())
                .map_err(Error::MalformedJson)
                .and_then(|v| match v {
                    Value::Array(items) => items
                        .into_iter()
                        .enumerate()
                        .map(|(index, item)| {
                            CloudEvent::from_json_value(item).map_err(|error| Error::InBatch {
                                index,
                                error: Box::new(error),
                            })
                        })
                        .collect(),
                    _ => unreachable!(),
                })
                .map_err(|e| e.to_string()),
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

/// `from_json_slice` and `parse_batch` give what reading through a `Map` gave.
fn assert_read_as_through_a_map(document: &[u8]) {
    let shown = String::from_utf8_lossy(document);
    match (
        CloudEvent::from_json_slice(document),
        through_a_map(document),
    ) {
        (Ok(direct), Ok(expected)) => {
            assert_eq!(direct, expected, "{shown}");
            assert_eq!(direct.to_json_vec(), expected.to_json_vec(), "{shown}");
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
                    through_a_map(document).map_err(|error| Error::InBatch {
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

mod canonical_text {
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value};

    use super::{canonical, value_round_trip};

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter_map("finite", Number::from_f64)
                .prop_map(Value::Number),
            ".{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[ab\"\\\\é😀]{0,3}", inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// `value` as JSON text written in one of the many ways JSON allows: whitespace,
    /// `\u` escapes (surrogate pairs too), exponents, repeated keys; `choices` decides.
    fn write_loosely(value: &Value, choices: &mut impl Iterator<Item = u8>, out: &mut String) {
        fn pick(choices: &mut impl Iterator<Item = u8>, n: u8) -> u8 {
            choices.next().unwrap_or(0) % n
        }
        let space = |c: u8| ["", " ", "\n  ", "\t"][usize::from(c % 4)];
        out.push_str(space(pick(choices, 4)));
        match value {
            Value::Number(n) if n.is_f64() && pick(choices, 2) == 0 => {
                out.push_str(&format!("{:e}", n.as_f64().unwrap_or(0.0)))
            }
            Value::String(s) => {
                out.push('"');
                for c in s.chars() {
                    match (c, pick(choices, 3)) {
                        ('"', _) => out.push_str("\\\""),
                        ('\\', _) => out.push_str("\\\\"),
                        ('/', 0) => out.push_str("\\/"),
                        (c, 0) | (c @ '\0'..='\x1f', _) => {
                            let mut units = [0u16; 2];
                            for unit in c.encode_utf16(&mut units) {
                                out.push_str(&format!("\\u{unit:04x}"));
                            }
                        }
                        (c, _) => out.push(c),
                    }
                }
                out.push('"');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_loosely(item, choices, out);
                }
                out.push_str(space(pick(choices, 4)));
                out.push(']');
            }
            Value::Object(members) => {
                out.push('{');
                for (i, (key, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if pick(choices, 4) == 0 {
                        // An earlier value for the same key, which the later one replaces.
                        write_loosely(&Value::String(key.clone()), choices, out);
                        out.push_str(":0,");
                    }
                    write_loosely(&Value::String(key.clone()), choices, out);
                    out.push(':');
                    write_loosely(item, choices, out);
                }
                out.push_str(space(pick(choices, 4)));
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
        out.push_str(space(pick(choices, 4)));
    }

    proptest! {
        #[test]
        fn any_json_text_reads_as_a_value_round_trip_writes_it(
            value in values(),
            choices in prop::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut text = String::new();
            write_loosely(&value, &mut choices.into_iter().cycle(), &mut text);
            prop_assert_eq!(canonical(text.as_bytes()), value_round_trip(text.as_bytes()));
            // Compact text, mostly canonical already (serde_json's float parsing is not
            // always exact, so a few floats come back one bit off, in both routes alike).
            let compact = value.to_string();
            prop_assert_eq!(canonical(compact.as_bytes()), value_round_trip(compact.as_bytes()));
        }

        #[test]
        fn broken_json_text_fails_as_reading_a_value_fails(
            value in values(),
            at in any::<prop::sample::Index>(),
            edit in 0..3u8,
            byte in prop::sample::select(&b"{}[]\":,\\u0e-+. x\xff"[..]),
        ) {
            let mut text = value.to_string().into_bytes();
            let at = at.index(text.len() + 1);
            match edit {
                0 if at < text.len() => { text.remove(at); }
                1 if at < text.len() => text[at] = byte,
                _ => text.insert(at, byte),
            }
            prop_assert_eq!(canonical(&text), value_round_trip(&text));
        }
    }
}

// --- JSON data kept as it is when it is canonical already ------------------------------

/// What the transcoder alone makes of `text`, the way `Json::from_slice` always worked:
/// the reference the quick path must match.
fn transcoded(text: &[u8]) -> Result<String, String> {
    Json::transcode_slice(text)
        .map(Json::into_string)
        .map_err(|e| e.to_string())
}

fn body_data(text: &[u8], owned: bool) -> Result<String, String> {
    let data = if owned {
        Data::from_body_vec(Some("application/json"), text.to_vec())
    } else {
        Data::from_body(Some("application/json"), text)
    };
    match data {
        Ok(Data::Json(json)) => Ok(json.into_string()),
        Ok(other) => Err(format!("not JSON data: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Every way of reading JSON text as `Json` gives what the transcoder gives: `Ok` if so,
/// else what differed.
fn reads_as_transcoded(text: &[u8]) -> Result<(), String> {
    let expected = transcoded(text);
    let from_vec = Json::from_vec(text.to_vec())
        .map(Json::into_string)
        .map_err(|e| e.to_string());
    let shown = String::from_utf8_lossy(text);
    if canonical(text) != expected {
        return Err(format!(
            "from_slice({shown:?}) gave {:?}, the transcoder {expected:?}",
            canonical(text)
        ));
    }
    if from_vec != expected {
        return Err(format!(
            "from_vec({shown:?}) gave {from_vec:?}, the transcoder {expected:?}"
        ));
    }
    if body_data(text, true) != body_data(text, false) {
        return Err(format!(
            "Data::from_body_vec({shown:?}) gave {:?}, Data::from_body {:?}",
            body_data(text, true),
            body_data(text, false)
        ));
    }
    Ok(())
}

#[test]
fn canonical_text_is_kept_and_anything_else_transcoded() {
    let nested = |depth: usize, open: &str, close: &str, inner: &str| {
        open.repeat(depth) + inner + &close.repeat(depth)
    };
    let mut texts: Vec<String> = [
        // Integers, at the edges of u64 and i64.
        "0",
        "-0",
        "1",
        "-1",
        "00",
        "01",
        "-01",
        "+1",
        "-",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "-9223372036854775809",
        "[18446744073709551615,-9223372036854775808]",
        "123456789012345678901234567890",
        // Floats: plain decimals up to and past 15 digits, around 1e-5 and 1e16.
        "0.0",
        "-0.0",
        "0.00",
        "-0.00",
        "1.0",
        "1.00",
        "1.5",
        "1.50",
        "1150.0",
        "-1150.0",
        "0.1",
        "0.10",
        "0.30000000000000004",
        "100000000000000.0",
        "999999999999999.0",
        "1000000000000000.0",
        "10000000000000000.0",
        "1e16",
        "1e15",
        "12345678901234.5",
        "123456789012345.6",
        "1234567890123456.7",
        "0.12345678901234",
        "0.123456789012345",
        "0.1234567890123456",
        "9007199254740993.0",
        "0.0001",
        "0.00001",
        "0.000012345",
        "0.000001",
        "1e-5",
        "1e-6",
        "1.0e-6",
        "1e2",
        "1E2",
        "1e+2",
        "1e02",
        "100.0",
        "1.5e300",
        "1.5E300",
        "-1.5e-7",
        "1.7976931348623157e308",
        "5e-324",
        "2.2250738585072014e-308",
        "1e400",
        "1.",
        ".5",
        "1.e5",
        "1e",
        "1e+",
        "-.5",
        // Strings: serde_json's escapes, and every other way to write the same.
        r#""""#,
        r#""plain text""#,
        r#""\"\\\n\t\r\b\f\u0000\u001f\u0001""#,
        r#""\u000a""#,
        r#""\u0008""#,
        r#""\u001F""#,
        r#""\u007f""#,
        r#""\u0009""#,
        r#""\u000c""#,
        r#""\u000d""#,
        r#""\u000b""#,
        r#""\u0000\u0007\u000e\u0010\u001a""#,
        r#""\u000B""#,
        "\"\u{7f}\"",
        r#""\/""#,
        r#""\u0041""#,
        r#""\u00e9""#,
        "\"é 😀 \u{2028}\"",
        r#""\ud83d\ude00""#,
        r#""\ud800""#,
        r#""\x""#,
        r#""\u00""#,
        r#""\u00g0""#,
        "\"tab\there\"",
        "\"new\nline\"",
        "\"open",
        "\"a\\",
        // Structure, whitespace and duplicate keys.
        "{}",
        "[]",
        "[{},[],{\"\":[]}]",
        " 1",
        "1 ",
        "[1, 2]",
        "{\"a\" :1}",
        "{\"a\": 1}",
        "{\"a\":1 }",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{1:2}",
        "[1 2]",
        "[true false]",
        "{} {}",
        "[]]",
        "[}",
        "{]",
        "nul",
        "truex",
        "[truex]",
        "nullnull",
        "",
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"a\":{\"a\":1},\"b\":{\"a\":2}}",
        "{\"x\":{\"a\":1,\"a\":2}}",
        "[{\"a\":1},{\"a\":2}]",
        "{\"a\\n\":1,\"a\\n\":2}",
        "{\"\\u0061\":1,\"a\":2}",
        "{\"ab\":1,\"ba\":2,\"aab\":3,\"abb\":4}",
        r#"{"$serde_json::private::Number":"1"}"#,
        r#"{"orderId":"SO-1001","customer":{"id":"CUST-42","name":"Acme GmbH","segment":"enterprise","country":"DE"},"amount":1150.0,"currency":"EUR","originalAmount":1250.0,"originalCurrency":"USD","createdOn":"2026-11-22","lines":[{"sku":"MAT-7","quantity":5,"amount":920.0},{"sku":"MAT-9","quantity":1,"amount":230.0}]}"#,
    ]
    .map(str::to_owned)
    .to_vec();
    // Many keys take the hashing path of the duplicate check.
    let many = |keys: usize, distinct: usize| {
        let members: Vec<String> = (0..keys)
            .map(|i| format!("\"k{}\":{i}", i % distinct))
            .collect();
        format!("{{{}}}", members.join(","))
    };
    texts.extend([many(17, 17), many(40, 40), many(40, 39), many(17, 16)]);
    // Around the nesting the quick path takes (100) and the depth serde_json refuses (128).
    for depth in [99, 100, 101, 102, 127, 128, 129, 300] {
        texts.push(nested(depth, "[", "]", ""));
        texts.push(nested(depth, "[", "]", "1"));
        texts.push(nested(depth, "{\"a\":", "}", "1"));
    }
    for text in &texts {
        if let Err(difference) = reads_as_transcoded(text.as_bytes()) {
            panic!("{difference}");
        }
    }
    for text in [
        &b"\"\xff\""[..],
        b"[\"\xc3\"]",
        b"\xef\xbb\xbf1",
        b"{\"\xe9\":1}",
    ] {
        if let Err(difference) = reads_as_transcoded(text) {
            panic!("{difference}");
        }
    }
}

#[test]
fn canonical_text_keeps_its_buffer() {
    let text = br#"{"orderId":"SO-1001","amount":1150.0,"lines":[{"sku":"MAT-7"}]}"#.to_vec();
    let at = text.as_ptr();
    let json = Json::from_vec(text).unwrap();
    assert_eq!(json.as_bytes().as_ptr(), at);
    let Data::Json(json) =
        Data::from_body_vec(Some("application/json"), json.into_string().into_bytes()).unwrap()
    else {
        panic!("not JSON data");
    };
    assert_eq!(json.as_bytes().as_ptr(), at);
}

mod quick_canonical {
    use proptest::prelude::*;

    use super::reads_as_transcoded;

    /// A JSON value as a tree of texts: numbers and keys spelled in many ways, keys
    /// repeated now and then.
    #[derive(Debug, Clone)]
    enum Tree {
        Literal(String),
        Str(String),
        Array(Vec<Tree>),
        Object(Vec<(String, Tree)>),
    }

    /// Number texts, canonical or not, valid or not, around the edges that matter.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
            any::<f32>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f64::from(f)).unwrap_or_default()),
            // Decimals of around 15 to 17 digits, where serde_json's reading stops being
            // exact and the shortest form stops being the digits written.
            (-1e16..1e16f64).prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
            (-1e-3..1e-3f64).prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
            "-?[1-9][0-9]{12,16}\\.[0-9]{1,3}",
            "-?[1-9]\\.[0-9]{12,16}",
            "-?0\\.0{0,5}[1-9][0-9]{11,15}",
            "-?(0|[1-9][0-9]{0,15})\\.[0-9]{1,16}",
            "-?(0|[1-9][0-9]{0,5})\\.[0-9]{0,2}0",
            "-?0\\.0{0,6}[1-9][0-9]{0,10}",
            "-?[1-9][0-9]{0,16}\\.0",
            "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?[0-9]{1,3}",
            "-?(922337203685477[0-9]{4}|1844674407370955[0-9]{4}|[0-9]{21})",
            "-?0[0-9]{0,2}",
            prop::sample::select(
                &[
                    "-0", "-0.0", "0.0", "1.50", "1E2", "1e+2", "1.", "-", "2e-5"
                ][..]
            )
            .prop_map(str::to_owned),
        ]
    }

    fn string() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(
                &[
                    'a', 'z', ' ', '"', '\\', '/', '\n', '\t', '\u{8}', '\u{c}', '\r', '\0',
                    '\u{1f}', '\u{7f}', 'é', '😀', '\u{2028}', 'A',
                ][..],
            ),
            0..6,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn tree() -> impl Strategy<Value = Tree> {
        let leaf = prop_oneof![
            prop::sample::select(&["null", "true", "false"][..])
                .prop_map(|s| Tree::Literal(s.to_owned())),
            number().prop_map(Tree::Literal),
            string().prop_map(Tree::Str),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::Array),
                // Few names, so keys repeat.
                prop::collection::vec(("[ab\"é\n]{0,2}", inner), 0..6).prop_map(Tree::Object),
            ]
        })
    }

    /// How loosely to write: with whitespace, with other escapes than serde_json's (and
    /// raw control characters); neither gives canonical text unless a number or a repeated
    /// key spoils it.
    #[derive(Debug, Clone, Copy)]
    struct Style {
        spaced: bool,
        escapes: bool,
    }

    /// Writes `tree` in `style`, `choices` (cycled) deciding each loose spot.
    fn write(tree: &Tree, style: Style, choices: &mut impl Iterator<Item = u8>, out: &mut String) {
        let mut space = |out: &mut String| {
            if style.spaced {
                let choice = choices.next().unwrap_or(0) % 6;
                out.push_str(["", "", " ", "\n  ", "\t", "\r"][usize::from(choice)]);
            }
        };
        space(out);
        match tree {
            Tree::Literal(text) => out.push_str(text),
            Tree::Str(s) => write_string(s, style, choices, out),
            Tree::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, style, choices, out);
                }
                out.push(']');
            }
            Tree::Object(members) => {
                out.push('{');
                for (i, (key, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(key, style, choices, out);
                    out.push(':');
                    write(item, style, choices, out);
                }
                out.push('}');
            }
        }
        if style.spaced && choices.next().unwrap_or(0).is_multiple_of(3) {
            out.push(' ');
        }
    }

    fn write_string(
        s: &str,
        style: Style,
        choices: &mut impl Iterator<Item = u8>,
        out: &mut String,
    ) {
        if !style.escapes {
            out.push_str(&serde_json::to_string(s).unwrap_or_default());
            return;
        }
        out.push('"');
        for c in s.chars() {
            let mut units = [0u16; 2];
            // Mostly as serde_json writes it, so that one odd spelling is often the only
            // thing that keeps a text from being canonical.
            match (c, choices.next().unwrap_or(0) % 16) {
                (c, 0) => {
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                (c, 1) => {
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                ('/', 2) => out.push_str("\\/"),
                // Raw, even where JSON forbids it.
                (c, 3) => out.push(c),
                (c, _) => {
                    let quoted = serde_json::to_string(&c.to_string()).unwrap_or_default();
                    out.push_str(&quoted[1..quoted.len() - 1]);
                }
            }
        }
        out.push('"');
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_json_text_reads_as_the_transcoder_reads_it(
            tree in tree(),
            spaced in any::<bool>(),
            escapes in any::<bool>(),
            choices in prop::collection::vec(any::<u8>(), 1..64),
            edit in prop::option::weighted(0.2, (any::<prop::sample::Index>(), 0..3u8,
                prop::sample::select(&b"{}[]\":,\\u0e-+. x\xff\t"[..]))),
        ) {
            let mut text = String::new();
            let style = Style { spaced, escapes };
            write(&tree, style, &mut choices.into_iter().cycle(), &mut text);
            let mut text = text.into_bytes();
            if let Some((at, kind, byte)) = edit {
                let at = at.index(text.len() + 1);
                match kind {
                    0 if at < text.len() => { text.remove(at); }
                    1 if at < text.len() => text[at] = byte,
                    _ => text.insert(at, byte),
                }
            }
            if let Err(difference) = reads_as_transcoded(&text) {
                prop_assert!(false, "{}", difference);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_number_reads_as_the_transcoder_reads_it(number in number()) {
            for text in [number.clone(), format!("[{number}]"), format!("{{\"n\":{number}}}")] {
                if let Err(difference) = reads_as_transcoded(text.as_bytes()) {
                    prop_assert!(false, "{}", difference);
                }
            }
        }

        #[test]
        fn any_string_reads_as_the_transcoder_reads_it(
            s in string(),
            choices in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            let style = Style { spaced: false, escapes: true };
            let mut quoted = String::new();
            write_string(&s, style, &mut choices.into_iter().cycle(), &mut quoted);
            for text in [quoted.clone(), format!("{{{quoted}:[{quoted}]}}")] {
                if let Err(difference) = reads_as_transcoded(text.as_bytes()) {
                    prop_assert!(false, "{}", difference);
                }
            }
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
