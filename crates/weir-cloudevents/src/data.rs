//! An event's payload, and JSON payloads carried as their text.
//!
//! JSON data travels from the log to a function and back without ever becoming a
//! `serde_json::Value`: [`Json`] holds the text, validated and in canonical form (the
//! compact form `serde_json` writes for a `Value`), so writing it out again is a copy.
//! Only what needs the parsed value (a test, a filter) calls [`Json::value`]. Text that
//! is canonical already, as serde_json's own output is, is recognised by a quick scan
//! (`canonical.rs`) and kept as it is; anything else is rewritten through serde_json.
//!
//! **Invariant:** a [`Json`] holds exactly the bytes `serde_json::Value::to_string` gives
//! for the value `serde_json::from_slice` reads from the text it was made from: no
//! whitespace, strings escaped as serde_json escapes them, numbers as serde_json prints
//! them, and of duplicate object keys the last value at the first key's place. So an event
//! stored through `Json` is byte for byte what the `Value` round trip stored before, and
//! equal values have equal text whatever text they came from.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::Hash;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::canonical::is_canonical;

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

/// A JSON value held as its canonical text (see the module docs). Made only from text that
/// parsed ([`Json::from_slice`], [`Json::from_vec`]) or from a `Value`, so it is always
/// valid JSON.
#[derive(Clone)]
pub struct Json(String);

impl Json {
    /// Validates `bytes` as one JSON value and puts it in canonical form. Fails exactly
    /// where and how `serde_json::from_slice::<Value>` fails.
    pub fn from_slice(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) if is_canonical(text) => Ok(Json(text.to_owned())),
            Ok(text) => read_whole(
                serde_json::Deserializer::from_str(text),
                JsonSeed {
                    capacity: bytes.len(),
                },
            ),
            Err(_) => Json::transcode_slice(bytes),
        }
    }

    /// [`Json::from_slice`] for bytes the caller owns: text that is canonical already
    /// (as text written by serde_json almost always is) keeps their buffer.
    pub fn from_vec(bytes: Vec<u8>) -> Result<Json, serde_json::Error> {
        match String::from_utf8(bytes) {
            Ok(text) if is_canonical(&text) => Ok(Json(text)),
            Ok(text) => read_whole(
                serde_json::Deserializer::from_str(&text),
                JsonSeed {
                    capacity: text.len(),
                },
            ),
            Err(e) => Json::transcode_slice(e.as_bytes()),
        }
    }

    /// [`Json::from_slice`] the long way, always through serde_json; the reference the
    /// quick paths are tested against.
    pub(crate) fn transcode_slice(bytes: &[u8]) -> Result<Json, serde_json::Error> {
        read_whole(
            serde_json::Deserializer::from_slice(bytes),
            JsonSeed {
                capacity: bytes.len(),
            },
        )
    }

    /// The canonical text of `value`.
    pub fn from_value(value: &Value) -> Json {
        Json(value.to_string())
    }

    /// `null`.
    pub fn null() -> Json {
        Json("null".to_owned())
    }

    /// The text: compact, valid JSON.
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
    /// more than once.
    pub fn value(&self) -> Value {
        // Canonical text always parses; `Null` is unreachable but keeps this total.
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
/// the order of their keys.
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

/// One whole JSON text read with `seed`, failing as `serde_json::from_slice` does. Read
/// as a `str` (when it is one) it fails exactly as read as a slice: only where UTF-8 is
/// checked differs.
pub(crate) fn read_whole<'de, R, S>(
    mut de: serde_json::Deserializer<R>,
    seed: S,
) -> Result<S::Value, serde_json::Error>
where
    R: serde_json::de::Read<'de>,
    S: DeserializeSeed<'de>,
{
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Reads one JSON value from a deserializer as canonical [`Json`], in one pass and
/// without building a `Value`: the JSON event format reads `data` with it.
pub(crate) struct JsonSeed {
    /// What to reserve for the text.
    pub(crate) capacity: usize,
}

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        let mut out = Vec::with_capacity(self.capacity);
        // Enough for most payloads, so the stack is allocated once.
        let mut entries = Vec::with_capacity(16);
        Canonical {
            out: &mut out,
            entries: &mut entries,
        }
        .deserialize(deserializer)?;
        // Only whole `&str`s and ASCII were written.
        String::from_utf8(out)
            .map(Json)
            .map_err(|_| de::Error::custom("canonical JSON is not UTF-8"))
    }
}

/// One member of an object being written: where its key (quoted) and value lie in the
/// output.
#[derive(Clone, Copy)]
struct Entry {
    key_start: usize,
    key_end: usize,
    value_end: usize,
}

/// Writes the value it is given to `out` in canonical form. `entries` is a stack shared by
/// the nested objects, so writing allocates nothing but the output.
struct Canonical<'a> {
    out: &'a mut Vec<u8>,
    entries: &'a mut Vec<Entry>,
}

impl Canonical<'_> {
    fn reborrow(&mut self) -> Canonical<'_> {
        Canonical {
            out: self.out,
            entries: self.entries,
        }
    }

    fn write<E: de::Error>(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    fn scalar<T: serde::Serialize + ?Sized, E: de::Error>(self, value: &T) -> Result<(), E> {
        serde_json::to_writer(&mut *self.out, value).map_err(E::custom)
    }
}

/// A string serde_json could lend from the input holds no escape (they would have made it
/// copy), and it rejects raw control characters, so the string is written as it is: quotes
/// and backslashes are the only other characters serde_json escapes.
pub(crate) fn write_unescaped(out: &mut Vec<u8>, v: &str) {
    out.reserve(v.len() + 2);
    out.push(b'"');
    out.extend_from_slice(v.as_bytes());
    out.push(b'"');
}

impl<'de> DeserializeSeed<'de> for Canonical<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canonical<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(mut self, v: bool) -> Result<(), E> {
        self.write(if v { b"true" } else { b"false" })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(&v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        // serde_json hands out finite numbers only; `Value` would keep this one as is.
        self.scalar(&v)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<(), E> {
        write_unescaped(self.out, v);
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(v)
    }

    fn visit_unit<E: de::Error>(mut self) -> Result<(), E> {
        self.write(b"null")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        self.write(b"[")?;
        let mut first = true;
        while seq
            .next_element_seed(Element {
                canonical: self.reborrow(),
                comma: !first,
            })?
            .is_some()
        {
            first = false;
        }
        self.write(b"]")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let start = self.out.len();
        let base = self.entries.len();
        self.write(b"{")?;
        loop {
            let comma = self.entries.len() > base;
            let key_start = self.out.len() + usize::from(comma);
            let key = Key {
                out: &mut *self.out,
                comma,
            };
            if map.next_key_seed(key)?.is_none() {
                break;
            }
            let key_end = self.out.len();
            self.write(b":")?;
            map.next_value_seed(self.reborrow())?;
            self.entries.push(Entry {
                key_start,
                key_end,
                value_end: self.out.len(),
            });
        }
        self.write(b"}")?;
        let members = &self.entries[base..];
        if has_duplicates(members, |e| &self.out[e.key_start..e.key_end]) {
            let object = last_value_wins(self.out, members);
            self.out.truncate(start);
            self.out.extend_from_slice(&object);
        }
        self.entries.truncate(base);
        Ok(())
    }
}

/// An array element: a comma before every one but the first.
struct Element<'a> {
    canonical: Canonical<'a>,
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.comma {
            self.canonical.out.push(b',');
        }
        self.canonical.deserialize(deserializer)
    }
}

/// An object key, written quoted, after a comma unless it is the first.
struct Key<'a> {
    out: &'a mut Vec<u8>,
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Key<'_> {
    fn comma(&mut self) {
        if self.comma {
            self.out.push(b',');
        }
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(mut self, v: &'de str) -> Result<(), E> {
        self.comma();
        write_unescaped(self.out, v);
        Ok(())
    }

    fn visit_str<E: de::Error>(mut self, v: &str) -> Result<(), E> {
        self.comma();
        serde_json::to_writer(&mut *self.out, v).map_err(E::custom)
    }
}

/// Whether two members have the same key. Quoted keys are compared as written: canonical
/// escaping gives equal strings equal bytes.
/// Whether two of `items` have the same key: pairwise for the few members objects
/// usually have, hashed beyond.
pub(crate) fn has_duplicates<T, K: Eq + Hash>(items: &[T], key: impl Fn(&T) -> K) -> bool {
    if items.len() <= 16 {
        items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].iter().any(|b| key(a) == key(b)))
    } else {
        let mut seen = HashSet::with_capacity(items.len());
        !items.iter().all(|item| seen.insert(key(item)))
    }
}

/// The object as `Value` keeps one with duplicate keys: each key once, where it first
/// appeared, with the value it had last.
fn last_value_wins(out: &[u8], members: &[Entry]) -> Vec<u8> {
    let key = |e: &Entry| &out[e.key_start..e.key_end];
    let value = |e: &Entry| &out[e.key_end + 1..e.value_end];
    let last: HashMap<&[u8], &Entry> = members.iter().map(|e| (key(e), e)).collect();
    let mut object = vec![b'{'];
    let mut written = HashSet::new();
    for entry in members {
        if !written.insert(key(entry)) {
            continue;
        }
        if object.len() > 1 {
            object.push(b',');
        }
        object.extend_from_slice(key(entry));
        object.push(b':');
        object.extend_from_slice(value(last[key(entry)]));
    }
    object.push(b'}');
    object
}
