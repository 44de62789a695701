//! An event's payload, and JSON payloads carried as the text they were sent as.
//!
//! JSON data travels from a request to the log, to a function and back without ever
//! becoming a `serde_json::Value`, and without being written again: [`Json`] holds the
//! text it was made from, checked once. A quick scan (`scan.rs`) passes almost every text;
//! on any doubt serde_json reads it, which decides and makes the errors. Only what needs
//! the parsed value (a test, a comparison) calls [`Json::value`].
//!
//! **Invariant:** a [`Json`] holds one JSON value as text that serde_json reads as a
//! `Value` (so it is valid JSON, every number is within `f64`'s range and every `\u`
//! escape of a surrogate is half of a pair), in which no object repeats a key (I-JSON,
//! RFC 7493, compares keys after unescaping) and no whitespace stands between tokens.
//! Every string, number and literal is byte for byte as in the text the `Json` was made
//! from: `1E+2`, `123456789012345678901234567890` and `"\u00e9"` stay as they were sent.
//! Only the whitespace between tokens is left out, so that an event stays on one line (an
//! SSE `data:` line, a line of JSONL). A `Json` made from a `Value` (data weir builds
//! itself) holds the canonical text serde_json writes for it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::scan::{Scan, scan, strip_whitespace};
use crate::{Error, Result};

/// The event payload, in the runtime type the JSON event format distinguishes.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Written as the `data` member; `Json::null()` is an explicit null payload.
    Json(Json),
    /// Written as a `data` string, for content types that are not JSON.
    Text(String),
    /// Written as `data_base64`.
    Binary(Bytes),
}

impl From<Value> for Data {
    fn from(value: Value) -> Self {
        Data::Json(Json::from(value))
    }
}

/// A JSON value held as its text, as it was sent (see the module docs). Made only from
/// text that passed the check ([`Json::from_slice`], [`Json::from_vec`]) or from a
/// `Value`.
#[derive(Clone)]
pub struct Json(String);

/// How many arrays and objects serde_json lets one text open: it refuses the 128th.
pub(crate) const MAX_LEVELS: usize = 127;

impl Json {
    /// Checks `bytes` as one JSON value and keeps its text, less the whitespace between
    /// tokens. Fails with [`Error::MalformedJson`] where and as
    /// `serde_json::from_slice::<Value>` fails, and with [`Error::DuplicateKey`] when an
    /// object repeats a key.
    pub fn from_slice(bytes: &[u8]) -> Result<Json> {
        match std::str::from_utf8(bytes) {
            Ok(text) => read_json(text, MAX_LEVELS)
                .map(|kept| Json(kept.into_owned()))
                .map_err(|refusal| refusal.into_error(bytes)),
            Err(_) => Err(Error::MalformedJson(value_error(bytes))),
        }
    }

    /// [`Json::from_slice`] for bytes the caller owns: text without whitespace between its
    /// tokens (as serde_json and `JSON.stringify` write it) keeps their buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Json> {
        match String::from_utf8(bytes) {
            Ok(text) => {
                let stripped = match read_json(&text, MAX_LEVELS) {
                    Ok(Cow::Borrowed(_)) => None,
                    Ok(Cow::Owned(stripped)) => Some(stripped),
                    Err(refusal) => return Err(refusal.into_error(text.as_bytes())),
                };
                Ok(Json(stripped.unwrap_or(text)))
            }
            Err(e) => Err(Error::MalformedJson(value_error(e.as_bytes()))),
        }
    }

    /// The canonical text of `value`.
    pub fn from_value(value: &Value) -> Json {
        Json(value.to_string())
    }

    /// `null`.
    pub fn null() -> Json {
        Json("null".to_owned())
    }

    /// The text: valid JSON, on one line, as it was sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The parsed value. Parses the text on every call: keep the result if you need it
    /// more than once. A `Value` holds numbers as `u64`, `i64` or `f64`, so a number
    /// beyond them (`123456789012345678901234567890`) comes back rounded; the text keeps
    /// it exactly.
    pub fn value(&self) -> Value {
        // The text always reads as a `Value`; `Null` is unreachable but keeps this total.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// The text of a JSON string value, unescaped; `None` for any other value.
    pub(crate) fn as_string_value(&self) -> Option<String> {
        if self.0.starts_with('"') {
            serde_json::from_str(&self.0).ok()
        } else {
            None
        }
    }

    /// Data as read from inside an event: checked already.
    pub(crate) fn checked(text: String) -> Json {
        Json(text)
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Self {
        Json::from_value(&value)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Self {
        Json::from_value(value)
    }
}

/// Equal when the values are equal, as for `Value`: objects compare without regard to
/// the order of their keys, and `1E+2` equals `100.0`. Compare [`Json::as_str`] for the
/// text.
impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.0 == other.0 || self.value() == other.value()
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({})", self.0)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why JSON text (or an event) is not kept.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The event repeats the member so named.
    Member(String),
    /// An object repeats `key`; `pointer` (RFC 6901) names the object.
    Duplicate { key: String, pointer: String },
    /// serde_json does not read the text as a `Value` (or, for data inside an event, not
    /// the event as one): the error is made by reading the whole input as a `Value`,
    /// which fails where this did.
    NotAValue,
}

impl Refusal {
    /// The error for data refused from `whole`, the input it was part of.
    pub(crate) fn into_error(self, whole: &[u8]) -> Error {
        match self {
            Refusal::Member(name) => Error::DuplicateKey {
                key: name,
                pointer: None,
            },
            Refusal::Duplicate { key, pointer } => Error::DuplicateKey {
                key,
                pointer: Some(pointer),
            },
            Refusal::NotAValue => Error::MalformedJson(value_error(whole)),
        }
    }
}

/// What serde_json says about reading `bytes` as a `Value`: the reference for every JSON
/// error this crate reports. Called only for text already found wanting.
pub(crate) fn value_error(bytes: &[u8]) -> serde_json::Error {
    match serde_json::from_slice::<Value>(bytes) {
        Err(e) => e,
        // Unreachable: the caller found the text wanting as a `Value` would.
        Ok(_) => de::Error::custom("the JSON text cannot be read"),
    }
}

/// Checks `text`, one JSON value which may open at most `levels` arrays and objects, for
/// what a [`Json`] holds: the text itself when it has no whitespace between tokens, else
/// the text without it.
pub(crate) fn read_json(text: &str, levels: usize) -> Result<Cow<'_, str>, Refusal> {
    let spaced = match scan(text) {
        Scan::Valid { spaced } => spaced,
        Scan::Doubt => {
            check_with_serde_json(text, levels)?;
            text.bytes()
                .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        }
    };
    Ok(if spaced {
        Cow::Owned(strip_whitespace(text))
    } else {
        Cow::Borrowed(text)
    })
}

/// The slow and sure check: serde_json reads the text, without building a `Value`, and
/// [`Checker`] looks at each object's keys and the nesting.
fn check_with_serde_json(text: &str, levels: usize) -> Result<(), Refusal> {
    let mut duplicate = None;
    let mut path = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text);
    let checker = Checker {
        levels_left: levels,
        path: &mut path,
        duplicate: &mut duplicate,
    };
    // A repeated key does not stop the reading: text that is not a `Value` at all is
    // refused as that first, wherever it fails.
    match (
        checker.deserialize(&mut de).and_then(|()| de.end()),
        duplicate,
    ) {
        (Err(_), _) => Err(Refusal::NotAValue),
        (Ok(()), Some(duplicate)) => Err(duplicate),
        (Ok(()), None) => Ok(()),
    }
}

/// One step of the path from the top of the text to a value.
enum Segment {
    Key(String),
    Index(usize),
}

/// `path` as a JSON Pointer (RFC 6901).
fn pointer(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        out.push('/');
        match segment {
            Segment::Key(key) => out.push_str(&key.replace('~', "~0").replace('/', "~1")),
            Segment::Index(index) => out.push_str(&index.to_string()),
        }
    }
    out
}

/// Reads a value and everything in it, refusing more than `levels_left` levels of
/// nesting, and notes the first repeated key in `duplicate`, with where it is.
struct Checker<'a> {
    levels_left: usize,
    path: &'a mut Vec<Segment>,
    duplicate: &'a mut Option<Refusal>,
}

impl Checker<'_> {
    /// The checker for the values inside an array or object, one level down.
    fn enter<E: de::Error>(&mut self) -> Result<Checker<'_>, E> {
        match self.levels_left.checked_sub(1) {
            Some(levels_left) => Ok(Checker {
                levels_left,
                path: self.path,
                duplicate: self.duplicate,
            }),
            None => Err(E::custom("nested too deeply")),
        }
    }

    fn reborrow(&mut self) -> Checker<'_> {
        Checker {
            levels_left: self.levels_left,
            path: self.path,
            duplicate: self.duplicate,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Checker<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Checker<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let mut inner = self.enter()?;
        for index in 0.. {
            inner.path.push(Segment::Index(index));
            let more = seq.next_element_seed(inner.reborrow())?.is_some();
            inner.path.pop();
            if !more {
                break;
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut inner = self.enter()?;
        let mut keys = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if keys.contains(&key) {
                if inner.duplicate.is_none() {
                    *inner.duplicate = Some(Refusal::Duplicate {
                        key: key.clone(),
                        pointer: pointer(&inner.path[..]),
                    });
                }
            } else {
                keys.insert(key.clone());
            }
            inner.path.push(Segment::Key(key));
            map.next_value_seed(inner.reborrow())?;
            inner.path.pop();
        }
        Ok(())
    }
}
