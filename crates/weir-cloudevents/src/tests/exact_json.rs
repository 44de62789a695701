//! JSON kept as it was sent: every number and every string escape byte for byte, through
//! `Json`, the JSON event format, the batch format and the binary mode; an object that
//! repeats a key refused; integers held to the spec's 32-bit range where weir takes events
//! in. Each is checked against an oracle written independently of the code: serde_json's
//! `Value` for what is valid and its errors, a tree that keeps every member for repeated
//! keys, and a plain loop for whitespace.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{binary_headers, headers};
use crate::http::{self as binding};
use crate::{CloudEvent, Data, Error, ExtensionValue, Json, batch_to_json_vec, parse_batch};

// --- The oracle ----------------------------------------------------------------------

/// A JSON value as read, every member kept, even a repeated one.
pub(super) enum Node {
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Leaf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut members = Vec::new();
                while let Some((key, value)) = map.next_entry()? {
                    members.push((key, value));
                }
                Ok(Node::Object(members))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// The first key an object repeats, in the order the text is read (a member's value
/// before the next member), and the JSON Pointer of that object.
pub(super) fn first_duplicate(node: &Node, pointer: &str) -> Option<(String, String)> {
    match node {
        Node::Leaf => None,
        Node::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_duplicate(item, &format!("{pointer}/{i}"))),
        Node::Object(members) => members.iter().enumerate().find_map(|(i, (key, value))| {
            if members[..i].iter().any(|(earlier, _)| earlier == key) {
                return Some((key.clone(), pointer.to_owned()));
            }
            let escaped = key.replace('~', "~0").replace('/', "~1");
            first_duplicate(value, &format!("{pointer}/{escaped}"))
        }),
    }
}

/// `text` without whitespace outside strings.
pub(super) fn without_whitespace(text: &str) -> String {
    let mut out = String::new();
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if !matches!(c, ' ' | '\n' | '\r' | '\t') {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// What a `Json` made from `text` must hold, or the error it must give.
pub(super) fn reference(text: &[u8]) -> Result<String, String> {
    if let Err(e) = serde_json::from_slice::<Value>(text) {
        return Err(Error::MalformedJson(e).to_string());
    }
    let node: Node = serde_json::from_slice(text).expect("valid as a Value");
    if let Some((key, pointer)) = first_duplicate(&node, "") {
        return Err(Error::DuplicateKey {
            key,
            pointer: Some(pointer),
        }
        .to_string());
    }
    Ok(without_whitespace(
        std::str::from_utf8(text).expect("valid"),
    ))
}

fn kept(text: &[u8]) -> Result<String, String> {
    Json::from_slice(text)
        .map(Json::into_string)
        .map_err(|e| e.to_string())
}

const EVENT_START: &str = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":"#;

/// What a binary-mode body of type `application/json` must give: the oracle's text, or
/// its error as the binding words it.
fn body_reference(text: &[u8]) -> Result<String, String> {
    match serde_json::from_slice::<Value>(text) {
        Err(e) => Err(format!(
            "attribute \"data\" is not valid JSON ({e}) though the content type is \"application/json\"; send JSON or change the content type"
        )),
        Ok(_) => reference(text),
    }
}

/// Every way of reading `text` as JSON data gives what the oracle says: `Json` from a
/// slice and from a vector, a binary-mode body, the `data` of a structured event and of
/// the events of a batch (written back out with the data as it was sent). `Ok` if so,
/// else what differed.
pub(super) fn reads_as_reference(text: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(text);
    let expected = reference(text);
    let from_vec = Json::from_vec(text.to_vec())
        .map(Json::into_string)
        .map_err(|e| e.to_string());
    for (how, found) in [("from_slice", kept(text)), ("from_vec", from_vec)] {
        if found != expected {
            return Err(format!(
                "{how}({shown:?}) gave {found:?}, the oracle {expected:?}"
            ));
        }
    }
    let expected_body = body_reference(text);
    for owned in [false, true] {
        let data = if owned {
            Data::from_body_vec(Some("application/json"), text.to_vec())
        } else {
            Data::from_body(Some("application/json"), text)
        };
        let found = match data {
            Ok(Data::Json(json)) => Ok(json.into_string()),
            Ok(other) => Err(format!("not JSON data: {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        if found != expected_body {
            return Err(format!(
                "Data::from_body (owned: {owned}) of {shown:?} gave {found:?}, the oracle {expected_body:?}"
            ));
        }
    }
    // In an event, and twice in a batch.
    let event = [EVENT_START.as_bytes(), text, b"}"].concat();
    let batch = [b"[".as_slice(), &event, b",", &event, b"]"].concat();
    compare_document(
        &event,
        CloudEvent::from_json_slice(&event).map(|e| e.to_json_vec()),
        &expected,
        |data| format!("{EVENT_START}{data}}}"),
        |message| message.to_owned(),
    )
    .map_err(|e| format!("as an event, {shown:?}: {e}"))?;
    compare_document(
        &batch,
        parse_batch(&batch).map(|events| batch_to_json_vec(&events)),
        &expected,
        |data| format!("[{EVENT_START}{data}}},{EVENT_START}{data}}}]"),
        |message| format!("event [0] in batch: {message}"),
    )
    .map_err(|e| format!("in a batch, {shown:?}: {e}"))
}

/// Whether `found`, what reading `document` gave (written back out), is what the oracle
/// says, given what it says of the data alone.
fn compare_document(
    document: &[u8],
    found: Result<Vec<u8>, Error>,
    data: &Result<String, String>,
    written: impl Fn(&str) -> String,
    in_document: impl Fn(&str) -> String,
) -> Result<(), String> {
    let found = found
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| e.to_string());
    let expected = match (serde_json::from_slice::<Value>(document), data) {
        (Err(e), _) => Err(Error::MalformedJson(e).to_string()),
        (Ok(_), Ok(data)) => Ok(written(data)),
        (Ok(_), Err(message)) if message.contains("RFC 7493") => Err(in_document(message)),
        // Not one value alone, but members that fit into the event (`1,"x":2`).
        (Ok(_), Err(_)) => return Ok(()),
    };
    if found == expected {
        Ok(())
    } else {
        Err(format!("gave {found:?}, the oracle {expected:?}"))
    }
}

// --- Numbers and escapes come back as sent ------------------------------------------

/// Texts of every kind, valid or not: numbers at the edges of `u64`, `i64` and `f64`,
/// strings with every escape, whitespace, repeated keys, nesting around serde_json's
/// limit.
fn texts() -> Vec<String> {
    let nested = |depth: usize, open: &str, close: &str, inner: &str| {
        open.repeat(depth) + inner + &close.repeat(depth)
    };
    let mut texts: Vec<String> = [
        // Integers.
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
        "123456789012345678901234567890",
        "-123456789012345678901234567890",
        // Floats, in every form.
        "0.0",
        "-0.0",
        "1.0",
        "1.00",
        "1.50",
        "0.1",
        "0.1e-7",
        "0.30000000000000004",
        "1e2",
        "1E2",
        "1e+2",
        "1E+2",
        "1e02",
        "100.0",
        "1.5E300",
        "-1.5e-7",
        "1.7976931348623157e308",
        "1.7976931348623159e308",
        "1e308",
        "10e307",
        "1e309",
        "0.1e309",
        "0e999",
        "0.0000e400",
        "1e-400",
        "1e400",
        "-1e400",
        "5e-324",
        "2.2250738585072014e-308",
        "1.",
        ".5",
        "1.e5",
        "1e",
        "1e+",
        "-.5",
        // Strings, with every escape.
        r#""""#,
        r#""plain text""#,
        r#""\"\\\/\b\f\n\r\t""#,
        r#""\u0000\u001f\u001F\u007f\u00e9\u00E9""#,
        r#""é""#,
        r#""\/path\/to""#,
        "\"é 😀 \u{2028}\"",
        r#""\ud83d\ude00""#,
        r#""\uD83D\uDE00""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        r#""\ud800x""#,
        r#""\x""#,
        r#""\u00""#,
        r#""\u00g0""#,
        "\"tab\there\"",
        "\"new\nline\"",
        "\"open",
        "\"a\\",
        // Structure and whitespace.
        "{}",
        "[]",
        " [ ] ",
        "\t{\r\n}\n",
        "[{},[],{\"\":[]}]",
        " 1",
        "1 ",
        "[1, 2]",
        "{\"a\" :1}",
        "{\"a\": \"x y\" , \"b\" : [ 1 , \"\\\" \" ] }",
        "{\"a\":1,}",
        "[1,]",
        "[,1]",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{1:2}",
        "[1 2]",
        "{} {}",
        "[]]",
        "nul",
        "truex",
        "",
        // Repeated keys, at every level, and keys equal only once unescaped.
        "{\"a\":1,\"a\":2}",
        "{\"a\":1,\"b\":2,\"a\":3}",
        "{\"a\":{\"a\":1},\"b\":{\"a\":2}}",
        "{\"x\":{\"a\":1,\"a\":2}}",
        "{\"x\":[{\"k\":1},{\"k\":2,\"k\":3}]}",
        "[{\"a\":1},{\"a\":2}]",
        "{\"a\\n\":1,\"a\\n\":2}",
        "{\"\\u0061\":1,\"a\":2}",
        "{\"a/b~c\":{\"k\":1,\"k\":1}}",
        "{\"a\":{\"a\":1,\"a\":2},\"a\":3}",
        "{\"a\":[1],\"a\":{\"b\":1,\"b\":2}}",
        "{\"ab\":1,\"ba\":2,\"aab\":3,\"abb\":4}",
        r#"{"$serde_json::private::Number":"1"}"#,
        r#"{"orderId":"SO-1001","customer":{"id":"CUST-42","name":"Acme GmbH"},"amount":1150.0,"lines":[{"sku":"MAT-7","quantity":5,"amount":920.0}]}"#,
    ]
    .map(str::to_owned)
    .to_vec();
    // Many keys take the hashing path of the duplicate checks.
    let many = |keys: usize, distinct: usize| {
        let members: Vec<String> = (0..keys)
            .map(|i| format!("\"k{}\":{i}", i % distinct))
            .collect();
        format!("{{{}}}", members.join(","))
    };
    texts.extend([many(17, 17), many(40, 40), many(40, 39), many(17, 16)]);
    // Numbers of hundreds of digits, around `f64::MAX`.
    texts.extend([
        "1".repeat(308),
        "9".repeat(308),
        "1".repeat(309),
        format!("{}.5e-10", "9".repeat(310)),
        format!("0.{}1e309", "0".repeat(3)),
    ]);
    // Around the nesting the quick scan takes (100) and the depth serde_json refuses:
    // 128 levels alone, fewer inside an event or a batch.
    for depth in [99, 100, 101, 102, 124, 125, 126, 127, 128, 129, 300] {
        texts.push(nested(depth, "[", "]", ""));
        texts.push(nested(depth, "[", "]", "1"));
        texts.push(nested(depth, "{\"a\":", "}", "1"));
    }
    texts
}

#[test]
fn every_text_reads_as_the_oracle_says() {
    for text in texts() {
        if let Err(difference) = reads_as_reference(text.as_bytes()) {
            panic!("{difference}");
        }
    }
    for text in [
        &b"\"\xff\""[..],
        b"[\"\xc3\"]",
        b"\xef\xbb\xbf1",
        b"{\"\xe9\":1}",
    ] {
        if let Err(difference) = reads_as_reference(text) {
            panic!("{difference}");
        }
    }
}

#[test]
fn numbers_and_escapes_come_back_byte_for_byte() {
    // The issue's report: these came back as 1.2345678901234568e+29 and 100.0.
    let data = r#"{"big":123456789012345678901234567890,"exp":1E+2,"negzero":-0,"one":1.0,"small":0.1e-7,"trail":1.50,"neg":-1.5E-300,"u64":18446744073709551616,"e":"\u00e9","raw":"é","slash":"\/","pair":"\ud83d\ude00","ctl":"\u001F\t","nested":[{"deep":[1e2,{"x":-0.0}]}]}"#;
    assert_eq!(kept(data.as_bytes()), Ok(data.to_owned()));
    let event = format!("{EVENT_START}{data}}}");
    let read = CloudEvent::from_json_slice(event.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(read.to_json_vec()).unwrap(), event);
    let batch = format!("[{event},{event}]");
    let read = parse_batch(batch.as_bytes()).unwrap();
    assert_eq!(String::from_utf8(batch_to_json_vec(&read)).unwrap(), batch);
    // Through the HTTP binding: structured, batch and binary mode, out and back.
    let structured = headers(&[("content-type", crate::http::STRUCTURED_CONTENT_TYPE)]);
    let [read] =
        <[CloudEvent; 1]>::try_from(binding::decode(&structured, event.as_bytes()).unwrap())
            .unwrap();
    let (_, body) = binding::encode_structured(&read);
    assert_eq!(body, event.as_bytes());
    let (headers, body) = binding::encode_binary(&read);
    assert_eq!(body, data.as_bytes());
    let [back] = <[CloudEvent; 1]>::try_from(binding::decode(&headers, &body).unwrap()).unwrap();
    assert_eq!(back.data_bytes().unwrap(), data.as_bytes());
    let binary = binary_headers(&[("content-type", "application/json")]);
    let [read] =
        <[CloudEvent; 1]>::try_from(binding::decode(&binary, data.as_bytes()).unwrap()).unwrap();
    assert_eq!(read.data_bytes().unwrap(), data.as_bytes());
    // A string escape is not a string: each kept as it came.
    for (a, b) in [
        (r#""\u00e9""#, r#""é""#),
        (r#""\/""#, r#""/""#),
        (r#""\u0041""#, r#""A""#),
    ] {
        let (a_json, b_json) = (
            Json::from_slice(a.as_bytes()).unwrap(),
            Json::from_slice(b.as_bytes()).unwrap(),
        );
        assert_eq!((a_json.as_str(), b_json.as_str()), (a, b));
        // Still the same value.
        assert_eq!(a_json, b_json);
    }
}

#[test]
fn whitespace_between_tokens_is_left_out_and_nothing_else() {
    let sent = "{ \"a b\" : [ 1E+2 ,\r\n\t\"x \\\" y\" ] ,\n \"c\":{ } }";
    let stored = r#"{"a b":[1E+2,"x \" y"],"c":{}}"#;
    assert_eq!(kept(sent.as_bytes()), Ok(stored.to_owned()));
    let event = format!(
        "{{ \"specversion\" : \"1.0\", \"id\":\"1\",\"source\":\"/s\",\"type\":\"t\", \"data\" :  {sent}  }}"
    );
    let read = CloudEvent::from_json_slice(event.as_bytes()).unwrap();
    assert_eq!(
        read.to_json_vec(),
        format!("{EVENT_START}{stored}}}").as_bytes()
    );
}

#[test]
fn compact_text_keeps_its_buffer() {
    let text = br#"{"orderId":"SO-1001","amount":1150.0,"big":1E+400,"lines":[{"sku":"MAT-7"}]}"#;
    // 1E+400 is out of `f64`'s range: not this one.
    assert!(Json::from_vec(text.to_vec()).is_err());
    let text =
        br#"{"orderId":"SO-1001","amount":1E+2,"e":"\u00e9","lines":[{"sku":"MAT-7"}]}"#.to_vec();
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

#[test]
fn typical_payloads_pass_the_quick_scan() {
    use crate::scan::{Scan, scan};
    for text in [
        r#"{"orderId":"SO-1001","customer":{"id":"CUST-42","name":"Acme GmbH","segment":"enterprise","country":"DE"},"amount":1150.0,"currency":"EUR","lines":[{"sku":"MAT-7","quantity":5,"amount":920.0}]}"#,
        r#"[123456789012345678901234567890,1E+2,-0,0.1e-7,"\u00e9\/\ud83d\ude00",true,null]"#,
    ] {
        assert_eq!(scan(text), Scan::Valid { spaced: false }, "{text}");
        let spaced = text.replace(',', ", ");
        assert_eq!(scan(&spaced), Scan::Valid { spaced: true }, "{spaced}");
    }
}

#[test]
fn minus_zero_data_stays_minus_zero() {
    for data in ["-0", "-0.0", "[-0]", "{\"n\":-0}"] {
        let event = format!("{EVENT_START}{data}}}");
        let read = CloudEvent::from_json_slice(event.as_bytes()).unwrap();
        assert_eq!(read.to_json_vec(), event.as_bytes());
    }
}

// --- Repeated keys are refused ------------------------------------------------------

fn structured(body: &str) -> Result<Vec<CloudEvent>, Error> {
    binding::decode(
        &headers(&[("content-type", crate::http::STRUCTURED_CONTENT_TYPE)]),
        body.as_bytes(),
    )
}

fn batch(body: &str) -> Result<Vec<CloudEvent>, Error> {
    binding::decode(
        &headers(&[("content-type", crate::http::BATCH_CONTENT_TYPE)]),
        body.as_bytes(),
    )
}

fn duplicate(err: &Error) -> (&str, Option<&str>) {
    match err {
        Error::DuplicateKey { key, pointer } => (key, pointer.as_deref()),
        Error::InBatch { error, .. } => duplicate(error),
        other => panic!("not a duplicate key: {other}"),
    }
}

#[test]
fn repeated_members_of_an_event_are_refused() {
    let core = r#""specversion":"1.0","id":"1","source":"/s","type":"t""#;
    for (members, key) in [
        (r#""id":"2""#, "id"),
        (r#""\u0069d":"2""#, "id"),
        (r#""specversion":"1.0""#, "specversion"),
        (r#""subject":"a","subject":null"#, "subject"),
        (r#""time":null,"time":null"#, "time"),
        (r#""data":1,"data":1"#, "data"),
        (r#""data":{"a":1},"data":{"a":1,"a":2}"#, "data"),
        (
            r#""data_base64":"aGk=","data_base64":"aGk=""#,
            "data_base64",
        ),
        (r#""ext":1,"other":true,"ext":1"#, "ext"),
        (r#""ext":"x","\u0065xt":"x""#, "ext"),
        (r#""ext":null,"ext":"x""#, "ext"),
        (r#""Bad":1,"Bad":2"#, "Bad"),
    ] {
        let document = format!("{{{core},{members}}}");
        let err = CloudEvent::from_json_slice(document.as_bytes()).expect_err(&document);
        assert_eq!(duplicate(&err), (key, None), "{document}: {err}");
        assert_eq!(err.attribute(), Some(key), "{document}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("\"{key}\"")) && message.contains("RFC 7493"),
            "{message}"
        );
        assert_eq!(structured(&document).unwrap_err().to_string(), message);
        let err = batch(&format!("[{{{core}}},{document}]")).unwrap_err();
        assert_eq!(err.batch_index(), Some(1), "{err}");
        assert_eq!(duplicate(&err), (key, None));
    }
    // Many extensions take the hashing path.
    let many: Vec<String> = (0..40).map(|i| format!("\"x{}\":{i}", i % 39)).collect();
    let document = format!("{{{core},{}}}", many.join(","));
    let err = CloudEvent::from_json_slice(document.as_bytes()).unwrap_err();
    assert_eq!(duplicate(&err), ("x0", None));
}

#[test]
fn repeated_keys_in_data_are_refused_naming_the_key_and_the_object() {
    for (data, key, pointer) in [
        (r#"{"a":1,"a":2}"#, "a", ""),
        (r#"{"a":1,"\u0061":2}"#, "a", ""),
        (r#"{"a":{"b":{"c":1,"d":2,"c":3}}}"#, "c", "/a/b"),
        (r#"{"items":[{"k":1},{"k":1,"k":1}]}"#, "k", "/items/1"),
        (r#"[[{"x":1}],[{"x":1,"x":1}]]"#, "x", "/1/0"),
        (r#"{"a/b":{"~":{"q":1,"q":2}}}"#, "q", "/a~1b/~0"),
        (r#"{"a":{"z":1,"z":2},"a":1}"#, "z", "/a"),
    ] {
        let document = format!("{EVENT_START}{data}}}");
        let err = CloudEvent::from_json_slice(document.as_bytes()).expect_err(&document);
        assert_eq!(duplicate(&err), (key, Some(pointer)), "{document}: {err}");
        assert_eq!(err.attribute(), Some("data"));
        let message = err.to_string();
        assert!(message.contains(&format!("\"{key}\"")), "{message}");
        if pointer.is_empty() {
            assert!(message.contains("top-level object"), "{message}");
        } else {
            assert!(message.contains(pointer), "{message}");
        }
        // The same in a batch, and as a binary-mode body of a JSON type.
        let err = batch(&format!("[{document}]")).unwrap_err();
        assert_eq!(
            (err.batch_index(), duplicate(&err)),
            (Some(0), (key, Some(pointer)))
        );
        for content_type in ["application/json", "application/vnd.x+json; charset=utf-8"] {
            let err = binding::decode(
                &binary_headers(&[("content-type", content_type)]),
                data.as_bytes(),
            )
            .unwrap_err();
            assert_eq!(duplicate(&err), (key, Some(pointer)));
            assert_eq!(err.to_string(), message);
        }
        // A body that is not JSON is not read as JSON.
        let binary = binding::decode(
            &binary_headers(&[("content-type", "text/plain")]),
            data.as_bytes(),
        );
        assert!(binary.is_ok());
        // Data of a non-JSON type that is a JSON value (not a string) is still JSON.
        let document = format!(
            r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":{data}}}"#
        );
        assert!(CloudEvent::from_json_slice(document.as_bytes()).is_err());
    }
}

#[test]
fn malformed_json_beats_a_repeated_key() {
    // Data serde_json does not read is malformed JSON wherever it is, and is reported as
    // reading a `Value` reports it.
    for document in [
        r#"{"id":"1","id":"2","specversion":"1.0","source":"/s","type":"t","data":[1e400]}"#
            .to_owned(),
        format!(r#"{EVENT_START}{{"a":1,"a":2,"b":"\ud800"}}}}"#),
        format!(r#"{EVENT_START}{{"a":1,"a":2}},"data":"\udc00"}}"#),
    ] {
        let err = CloudEvent::from_json_slice(document.as_bytes()).unwrap_err();
        let expected = serde_json::from_str::<Value>(&document).unwrap_err();
        assert_eq!(err.to_string(), Error::MalformedJson(expected).to_string());
    }
    let good = format!("{EVENT_START}1}}");
    let batch = format!(r#"[{good},{EVENT_START}{{"a":1,"a":2}}}},{EVENT_START}-1e999}}]"#);
    let err = parse_batch(batch.as_bytes()).unwrap_err();
    assert!(matches!(err, Error::MalformedJson(_)), "{err}");
    assert!(err.to_string().contains("number out of range"), "{err}");
}

// --- Integers in the spec's range ---------------------------------------------------

#[test]
fn integers_outside_32_bits_are_refused_from_requests_and_kept_from_the_log() {
    let event = |value: &str| {
        format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{value}}}"#)
    };
    for (value, expected) in [
        ("2147483647", i64::from(i32::MAX)),
        ("-2147483648", i64::from(i32::MIN)),
        ("0", 0),
        ("-0", 0),
    ] {
        let [read] = <[CloudEvent; 1]>::try_from(structured(&event(value)).unwrap()).unwrap();
        assert_eq!(read.extensions["ext"], ExtensionValue::Integer(expected));
    }
    for value in [
        "2147483648",
        "-2147483649",
        "9223372036854775807",
        "-9223372036854775808",
    ] {
        let err = structured(&event(value)).unwrap_err();
        assert_eq!(err.attribute(), Some("ext"));
        let message = err.to_string();
        assert!(
            message.contains(value) && message.contains("-2147483648 to 2147483647"),
            "{message}"
        );
        let err = batch(&format!("[{},{}]", event("1"), event(value))).unwrap_err();
        assert_eq!(err.batch_index(), Some(1));
        assert_eq!(err.attribute(), Some("ext"));
        // An event read back from the log keeps it: weir stored such events before.
        let stored = CloudEvent::from_json_slice(event(value).as_bytes()).unwrap();
        let ExtensionValue::Integer(kept) = stored.extensions["ext"] else {
            panic!("not an integer")
        };
        assert_eq!(kept.to_string(), value);
        assert_eq!(stored.to_json_vec(), event(value).as_bytes());
        assert!(parse_batch(format!("[{}]", event(value)).as_bytes()).is_ok());
        // `validate` holds events built by hand (a function's outputs) to the range.
        assert_eq!(stored.validate().unwrap_err().to_string(), message);
    }
    // Beyond `i64` nothing can hold it.
    for value in ["9223372036854775808", "18446744073709551615"] {
        let err = CloudEvent::from_json_slice(event(value).as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("-2147483648 to 2147483647"),
            "{err}"
        );
    }
    // Binary mode carries strings only.
    let [read] = <[CloudEvent; 1]>::try_from(
        binding::decode(&binary_headers(&[("ce-ext", "99999999999")]), b"").unwrap(),
    )
    .unwrap();
    assert_eq!(
        read.extensions["ext"],
        ExtensionValue::String("99999999999".into())
    );
}

// --- Random JSON, random number forms ----------------------------------------------

mod random {
    use proptest::prelude::*;

    use super::{Json, kept, reads_as_reference, reference};

    /// A JSON value as a tree of texts: numbers and strings spelled in many ways.
    #[derive(Debug, Clone)]
    enum Tree {
        Literal(String),
        Str(String),
        Array(Vec<Tree>),
        Object(Vec<(String, Tree)>),
    }

    /// Number texts, valid or not, in every form JSON allows and around every edge.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
            "-?[1-9][0-9]{15,40}",
            "-?[1-9][0-9]{12,16}\\.[0-9]{1,20}",
            "-?0\\.0{0,8}[1-9][0-9]{0,17}",
            "-?(0|[1-9][0-9]{0,5})\\.[0-9]{0,2}0{1,3}",
            "-?[0-9]{1,3}(\\.[0-9]{1,3})?[eE][+-]?0{0,2}[0-9]{1,3}",
            "-?[1-9](\\.[0-9]{1,5})?[eE]\\+?30[5-9]",
            "-?[1-9][0-9]{300,310}",
            "-?0[0-9]{0,2}",
            prop::sample::select(
                &[
                    "-0", "-0.0", "0.0", "1.0", "1.50", "1E+2", "1e+2", "0.1e-7", "1.", "-", "2e-5"
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
            1 => prop::sample::select(&["null", "true", "false"][..])
                .prop_map(|s| Tree::Literal(s.to_owned())),
            3 => number().prop_map(Tree::Literal),
            2 => string().prop_map(Tree::Str),
        ];
        leaf.prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Tree::Array),
                // Few names, so keys repeat unless they are made unique.
                (
                    prop::collection::vec(("[ab\"é\n/~]{0,2}", inner), 0..6),
                    prop::bool::weighted(0.8)
                )
                    .prop_map(|(mut members, unique)| {
                        if unique {
                            let mut seen = std::collections::HashSet::new();
                            members.retain(|(key, _)| seen.insert(key.clone()));
                        }
                        Tree::Object(members)
                    }),
            ]
        })
    }

    /// The text as sent, and as it must be kept: the same tokens without the whitespace.
    #[derive(Default)]
    struct Texts {
        sent: String,
        kept: String,
    }

    impl Texts {
        fn token(&mut self, token: &str) {
            self.sent.push_str(token);
            self.kept.push_str(token);
        }
    }

    #[derive(Debug, Clone, Copy)]
    struct Style {
        spaced: bool,
        escapes: bool,
    }

    /// Writes `tree` in `style`, `choices` (cycled) deciding each loose spot.
    fn write(tree: &Tree, style: Style, choices: &mut impl Iterator<Item = u8>, out: &mut Texts) {
        let mut space = |out: &mut Texts| {
            if style.spaced {
                let choice = choices.next().unwrap_or(0) % 6;
                out.sent
                    .push_str(["", "", " ", "\n  ", "\t", "\r\n"][usize::from(choice)]);
            }
        };
        space(out);
        match tree {
            Tree::Literal(text) => out.token(text),
            Tree::Str(s) => write_string(s, style, choices, out),
            Tree::Array(items) => {
                out.token("[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.token(",");
                    }
                    write(item, style, choices, out);
                }
                out.token("]");
            }
            Tree::Object(members) => {
                out.token("{");
                for (i, (key, item)) in members.iter().enumerate() {
                    if i > 0 {
                        out.token(",");
                    }
                    write_string(key, style, choices, out);
                    out.token(":");
                    write(item, style, choices, out);
                }
                out.token("}");
            }
        }
        if style.spaced && choices.next().unwrap_or(0).is_multiple_of(3) {
            out.sent.push(' ');
        }
    }

    fn write_string(
        s: &str,
        style: Style,
        choices: &mut impl Iterator<Item = u8>,
        out: &mut Texts,
    ) {
        if !style.escapes {
            out.token(&serde_json::to_string(s).unwrap_or_default());
            return;
        }
        out.token("\"");
        for c in s.chars() {
            let mut units = [0u16; 2];
            match (c, choices.next().unwrap_or(0) % 8) {
                (c, 0) => {
                    for unit in c.encode_utf16(&mut units) {
                        out.token(&format!("\\u{unit:04x}"));
                    }
                }
                (c, 1) => {
                    for unit in c.encode_utf16(&mut units) {
                        out.token(&format!("\\u{unit:04X}"));
                    }
                }
                ('/', 2) => out.token("\\/"),
                // Raw, even where JSON forbids it.
                (c, 3) => out.token(&c.to_string()),
                (c, _) => {
                    let quoted = serde_json::to_string(&c.to_string()).unwrap_or_default();
                    out.token(&quoted[1..quoted.len() - 1]);
                }
            }
        }
        out.token("\"");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random JSON in random number forms and escapes comes back byte for byte (less
        /// whitespace) from `Json`, a body, an event and a batch; what is not valid or
        /// repeats a key is refused as the oracle says.
        #[test]
        fn any_json_text_comes_back_as_sent(
            tree in tree(),
            spaced in any::<bool>(),
            escapes in any::<bool>(),
            choices in prop::collection::vec(any::<u8>(), 1..64),
            edit in prop::option::weighted(0.2, (any::<prop::sample::Index>(), 0..3u8,
                prop::sample::select(&b"{}[]\":,\\u0e-+. x\xff\t"[..]))),
        ) {
            let mut texts = Texts::default();
            write(&tree, Style { spaced, escapes }, &mut choices.into_iter().cycle(), &mut texts);
            let mut sent = texts.sent.clone().into_bytes();
            match edit {
                None => {
                    // The writer's own idea of the kept text agrees with the oracle's.
                    if let Ok(expected) = reference(&sent) {
                        prop_assert_eq!(&expected, &texts.kept);
                        prop_assert_eq!(kept(&sent), Ok(texts.kept.clone()));
                        let json = Json::from_slice(&sent).unwrap();
                        let value: serde_json::Value = serde_json::from_slice(&sent).unwrap();
                        prop_assert_eq!(json.value(), value);
                    }
                }
                Some((at, kind, byte)) => {
                    let at = at.index(sent.len() + 1);
                    match kind {
                        0 if at < sent.len() => { sent.remove(at); }
                        1 if at < sent.len() => sent[at] = byte,
                        _ => sent.insert(at, byte),
                    }
                }
            }
            if let Err(difference) = reads_as_reference(&sent) {
                prop_assert!(false, "{}", difference);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_number_comes_back_as_sent(number in number()) {
            for text in [number.clone(), format!("[{number}]"), format!("{{\"n\":{number}}}")] {
                if let Err(difference) = reads_as_reference(text.as_bytes()) {
                    prop_assert!(false, "{}", difference);
                }
            }
        }

        #[test]
        fn any_string_comes_back_as_sent(
            s in string(),
            choices in prop::collection::vec(any::<u8>(), 1..8),
        ) {
            let mut texts = Texts::default();
            let style = Style { spaced: false, escapes: true };
            write_string(&s, style, &mut choices.into_iter().cycle(), &mut texts);
            let quoted = texts.sent;
            for text in [quoted.clone(), format!("{{{quoted}:[{quoted}]}}")] {
                if let Err(difference) = reads_as_reference(text.as_bytes()) {
                    prop_assert!(false, "{}", difference);
                }
            }
        }
    }
}
