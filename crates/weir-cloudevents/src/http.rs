//! The CloudEvents 1.0.2 HTTP protocol binding over the `http` crate's types: structured,
//! batched and binary content modes, for requests and responses alike.
//!
//! In binary mode each attribute but `datacontenttype` travels as a `ce-<name>` header,
//! percent-encoded as the binding prescribes; `datacontenttype` is the Content-Type and
//! the data is the body. An empty body means no data.

use std::collections::BTreeMap;

use ::http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};

use crate::validate::{Integers, essence, is_json};
use crate::{CloudEvent, Data, Error, ExtensionValue, Json, Result, SPEC_VERSION};

pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// What the binding requires encoded: space, double quote, percent and everything outside
/// printable ASCII (non-ASCII is always encoded by `utf8_percent_encode`).
const HEADER_VALUE_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// The content mode of an HTTP message, chosen by the sender and told by Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Content-Type starts with `application/cloudevents`: one event as the body.
    Structured,
    /// Content-Type is anything else: attributes in `ce-` headers, data as the body.
    Binary,
    /// Content-Type starts with `application/cloudevents-batch`: an array of events.
    Batch,
}

/// The content mode by the binding's rule: a Content-Type prefix of
/// `application/cloudevents-batch` means batch, `application/cloudevents` structured,
/// anything else (or none) binary.
pub fn detect_mode(headers: &HeaderMap) -> Mode {
    let content_type = content_type(headers)
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/cloudevents-batch") {
        Mode::Batch
    } else if content_type.starts_with("application/cloudevents") {
        Mode::Structured
    } else {
        Mode::Binary
    }
}

/// Decode a request/response into events: structured, batch, or binary (`ce-*` headers,
/// Content-Type -> datacontenttype, body -> data). Content-Type params like
/// `; charset=utf-8` are tolerated. `ce-` header values are unquoted and percent-decoded as
/// the binding spec requires. Every event returned has passed [`CloudEvent::validate`]
/// (integers in the spec's 32-bit range included), and JSON anywhere (the event, its data,
/// a binary-mode body of a JSON content type) is I-JSON: an object that repeats a key is
/// refused with [`Error::DuplicateKey`]. JSON data is kept as it was sent (see [`Json`]).
pub fn decode(headers: &HeaderMap, body: &[u8]) -> Result<Vec<CloudEvent>> {
    let format = || content_type(headers).map(essence).unwrap_or_default();
    match detect_mode(headers) {
        Mode::Structured if format() == STRUCTURED_CONTENT_TYPE => {
            Ok(vec![CloudEvent::read_json(body, Integers::InRange)?])
        }
        Mode::Batch if format() == BATCH_CONTENT_TYPE => {
            crate::json::read_batch(body, Integers::InRange)
        }
        Mode::Structured | Mode::Batch => Err(Error::UnsupportedFormat {
            content_type: format(),
        }),
        Mode::Binary => Ok(vec![decode_binary(headers, body)?]),
    }
}

/// The event in structured mode: Content-Type `application/cloudevents+json`, the event as
/// the body.
pub fn encode_structured(ev: &CloudEvent) -> (HeaderMap, Bytes) {
    (
        content_type_header(STRUCTURED_CONTENT_TYPE),
        Bytes::from(ev.to_json_vec()),
    )
}

/// The event in binary mode: percent-encoded `ce-` headers, `datacontenttype` as
/// Content-Type and the data as the body. JSON data without a `datacontenttype` gets
/// `application/json`, the type the JSON format implies, as the spec recommends. Expects a
/// validated event: an extension whose name cannot be a header name is left out.
pub fn encode_binary(ev: &CloudEvent) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let mut put = |name: &str, value: &str| {
        let name = HeaderName::try_from(format!("ce-{name}"));
        let value =
            HeaderValue::try_from(utf8_percent_encode(value, HEADER_VALUE_ENCODE).to_string());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    };
    put("specversion", SPEC_VERSION);
    put("id", &ev.id);
    put("source", &ev.source);
    put("type", &ev.ty);
    let optional = [
        ("dataschema", &ev.dataschema),
        ("subject", &ev.subject),
        ("time", &ev.time),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            put(name, value);
        }
    }
    for (name, value) in &ev.extensions {
        put(name, &value.to_string());
    }
    let content_type = match (&ev.datacontenttype, &ev.data) {
        (Some(content_type), _) => Some(content_type.as_str()),
        (None, Some(Data::Json(_))) => Some("application/json"),
        (None, _) => None,
    };
    if let Some(value) = content_type.and_then(|ct| HeaderValue::try_from(ct).ok()) {
        headers.insert(CONTENT_TYPE, value);
    }
    (headers, ev.data_bytes().unwrap_or_default())
}

/// The events in batched mode: Content-Type `application/cloudevents-batch+json`, a JSON
/// array as the body.
pub fn encode_batch(evs: &[CloudEvent]) -> (HeaderMap, Bytes) {
    (
        content_type_header(BATCH_CONTENT_TYPE),
        Bytes::from(crate::batch_to_json_vec(evs)),
    )
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

fn content_type_header(value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(value));
    headers
}

fn decode_binary(headers: &HeaderMap, body: &[u8]) -> Result<CloudEvent> {
    let mut attributes = BTreeMap::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let value = decode_header_value(attribute, value.as_bytes())?;
        if attributes.insert(attribute, value).is_some() {
            return Err(Error::invalid(
                attribute,
                format!("appears in more than one ce-{attribute} header; send it once"),
            ));
        }
    }
    if attributes.is_empty() {
        return Err(Error::NotACloudEvent);
    }
    if attributes.contains_key("datacontenttype") {
        return Err(Error::invalid(
            "datacontenttype",
            "must travel as the Content-Type header in binary mode; drop the \
             ce-datacontenttype header",
        ));
    }
    let mut required =
        |name: &'static str| attributes.remove(name).ok_or(Error::MissingAttribute(name));
    let specversion = required("specversion")?;
    if specversion != SPEC_VERSION {
        return Err(Error::UnsupportedSpecVersion(specversion));
    }
    let mut event = CloudEvent::new(required("id")?, required("source")?, required("type")?);
    event.dataschema = attributes.remove("dataschema");
    event.subject = attributes.remove("subject");
    event.time = attributes.remove("time");
    event.extensions = attributes
        .into_iter()
        .map(|(name, value)| (name.to_owned(), ExtensionValue::String(value)))
        .collect();
    event.datacontenttype = match headers.get(CONTENT_TYPE) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| {
                    Error::invalid(
                        "datacontenttype",
                        "is not printable ASCII; send a media type like application/json as \
                         Content-Type",
                    )
                })?
                .to_owned(),
        ),
        None => None,
    };
    event.data = body_data(event.datacontenttype.as_deref(), body)?;
    event.validate()?;
    Ok(event)
}

/// A header value per the binding: first undo RFC 7230 quoted strings (older producers
/// quote instead of encoding spaces), then one round of percent-decoding, which must yield
/// UTF-8.
fn decode_header_value(attribute: &str, raw: &[u8]) -> Result<String> {
    let unquoted = unquote(raw).ok_or_else(|| {
        Error::invalid(
            attribute,
            format!("has an unterminated quoted string in header ce-{attribute}; close the quote or percent-encode the value"),
        )
    })?;
    percent_decode(&unquoted)
        .decode_utf8()
        .map(|value| value.into_owned())
        .map_err(|_| {
            Error::invalid(
                attribute,
                format!(
                    "is not UTF-8 after percent-decoding header ce-{attribute}; percent-encode \
                     the value's UTF-8 bytes"
                ),
            )
        })
}

/// Removes the quotes and backslash escapes of RFC 7230 quoted strings; `None` when a
/// quote is left open.
fn unquote(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut quoted = false;
    let mut bytes = raw.iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'"' => quoted = !quoted,
            b'\\' if quoted => out.push(bytes.next()?),
            _ => out.push(byte),
        }
    }
    (!quoted).then_some(out)
}

/// The body as data (see [`Data::from_body`]); an empty body is no data.
fn body_data(content_type: Option<&str>, body: &[u8]) -> Result<Option<Data>> {
    if body.is_empty() {
        return Ok(None);
    }
    Data::from_body(content_type, body).map(Some)
}

impl Data {
    /// Bytes and their media type as data, the way the HTTP binary mode reads a body:
    /// JSON for a JSON content type (checked and kept as sent, see [`Json::from_slice`]),
    /// text for valid UTF-8 `text/*`, bytes otherwise (including when the content type is
    /// missing).
    pub fn from_body(content_type: Option<&str>, body: &[u8]) -> Result<Data> {
        match content_type {
            Some(ct) if is_json(ct) => Json::from_slice(body)
                .map(Data::Json)
                .map_err(|e| not_json(ct, e)),
            Some(ct) if essence(ct).starts_with("text/") => Ok(match std::str::from_utf8(body) {
                Ok(text) => Data::Text(text.to_owned()),
                Err(_) => Data::Binary(Bytes::copy_from_slice(body)),
            }),
            _ => Ok(Data::Binary(Bytes::copy_from_slice(body))),
        }
    }

    /// [`Data::from_body`] for a body the caller owns: text, bytes and JSON without
    /// whitespace between its tokens keep its buffer.
    pub fn from_body_vec(content_type: Option<&str>, body: Vec<u8>) -> Result<Data> {
        match content_type {
            Some(ct) if is_json(ct) => Json::from_vec(body)
                .map(Data::Json)
                .map_err(|e| not_json(ct, e)),
            Some(ct) if essence(ct).starts_with("text/") => Ok(match String::from_utf8(body) {
                Ok(text) => Data::Text(text),
                Err(e) => Data::Binary(e.into_bytes().into()),
            }),
            _ => Ok(Data::Binary(body.into())),
        }
    }
}

/// The error for a body that [`Json`] refused: malformed JSON is said to be data of a
/// JSON content type; a repeated key says so itself.
fn not_json(content_type: &str, e: Error) -> Error {
    match e {
        Error::MalformedJson(e) => Error::invalid(
            "data",
            format!(
                "is not valid JSON ({e}) though the content type is {content_type:?}; send JSON or change the content type"
            ),
        ),
        other => other,
    }
}
