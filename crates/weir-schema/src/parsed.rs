//! An event's data parsed for validation only: what `jsonschema` validates on the hot
//! path instead of a `serde_json::Value`.
//!
//! A `Value` is built for keeping: with the workspace's `preserve_order`, every object is
//! an `IndexMap` whose keys are hashed (SipHash) and owned, and every string is copied.
//! Validation reads the data once and drops it, so here strings and member names borrow
//! the event's JSON text (unless escaped), an object is a vector of members found by
//! comparison (and by binary search once it is large), and the only allocations are one
//! per container. Measured on the example pipeline, this parse was most of what
//! validating an output cost (`docs/benchmarks.md`).
//!
//! **Architecture Invariant:** it means what the `Value` would: serde_json parses it
//! (syntax, escapes, numbers and the nesting limit are serde_json's), a repeated member
//! name keeps its first position and its last value (as `IndexMap` insertion does), and
//! numbers are `serde_json::Number`s as in a `Value`; an object whose first name is one
//! of serde_json's private tokens (which its `raw_value` feature reads as something
//! else) is not parsed here at all. Only a pass is decided here: a
//! failure is validated again on a `Value`, which names the violations, so an error
//! report never depends on this representation. A test compares the two on generated
//! documents.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use jsonschema::JsonType;
use jsonschema::json::{Array, Json, JsonNumber, Node, NodeIdentity, Object};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Objects with more members than this are looked up by binary search.
const INDEXED: usize = 16;

/// The names serde_json gives a meaning of its own as an object's first member (its
/// `raw_value` and `arbitrary_precision` features): a `Value` parse reads such an object
/// as a raw value or a number, or refuses it, so the fast path leaves it to that parse.
const SERDE_PRIVATE: &str = "$serde_json::private::";

/// The representation (`jsonschema::options_for::<Parsed>()`).
pub(crate) struct Parsed;

/// One JSON value, borrowing the text it was parsed from.
#[derive(Debug)]
pub(crate) enum Doc<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Doc<'a>>),
    Object(Members<'a>),
}

/// An object's members, in the order of their first appearance, names unique.
#[derive(Debug)]
pub(crate) struct Members<'a> {
    entries: Vec<(Cow<'a, str>, Doc<'a>)>,
    /// Entry indexes sorted by name, when there are more than [`INDEXED`] entries.
    sorted: Vec<u32>,
}

impl<'a> Doc<'a> {
    /// `json` parsed, or `None` when it is not JSON.
    pub(crate) fn parse(json: &'a str) -> Option<Doc<'a>> {
        serde_json::from_str(json).ok()
    }

    fn to_value(&self) -> Value {
        match self {
            Doc::Null => Value::Null,
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Number(n) => Value::Number(n.clone()),
            Doc::String(s) => Value::String(s.as_ref().to_owned()),
            Doc::Array(items) => Value::Array(items.iter().map(Doc::to_value).collect()),
            Doc::Object(members) => Value::Object(
                members
                    .entries
                    .iter()
                    .map(|(name, value)| (name.as_ref().to_owned(), value.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
        }
    }
}

impl<'a> Members<'a> {
    /// Members as parsed: a repeated name keeps its first position and its last value.
    fn new(entries: Vec<(Cow<'a, str>, Doc<'a>)>) -> Members<'a> {
        let members = Members {
            sorted: index(&entries),
            entries,
        };
        if !members.has_repeats() {
            return members;
        }
        let entries = unique(members.entries);
        Members {
            sorted: index(&entries),
            entries,
        }
    }

    /// Whether a name is there twice: each compared with those before it in a small
    /// object, neighbours in the index of a large one.
    fn has_repeats(&self) -> bool {
        let entries = &self.entries;
        if self.sorted.is_empty() {
            return (1..entries.len())
                .any(|i| entries[..i].iter().any(|(other, _)| *other == entries[i].0));
        }
        self.sorted
            .windows(2)
            .any(|w| entries[w[0] as usize].0 == entries[w[1] as usize].0)
    }

    fn get(&self, name: &str) -> Option<&Doc<'a>> {
        if self.sorted.is_empty() {
            return self
                .entries
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, value)| value);
        }
        let at = self
            .sorted
            .binary_search_by(|&i| self.entries[i as usize].0.as_ref().cmp(name))
            .ok()?;
        Some(&self.entries[self.sorted[at] as usize].1)
    }
}

/// The entry indexes sorted by name, for an object of more than [`INDEXED`] members (none
/// for a smaller one).
fn index(entries: &[(Cow<'_, str>, Doc<'_>)]) -> Vec<u32> {
    if entries.len() <= INDEXED {
        return Vec::new();
    }
    let mut sorted: Vec<u32> = (0..entries.len() as u32).collect();
    sorted.sort_by(|&a, &b| entries[a as usize].0.cmp(&entries[b as usize].0));
    sorted
}

/// `entries` with each name once, at its first position, with its last value.
fn unique<'a>(entries: Vec<(Cow<'a, str>, Doc<'a>)>) -> Vec<(Cow<'a, str>, Doc<'a>)> {
    let mut out: Vec<(Cow<'a, str>, Doc<'a>)> = Vec::with_capacity(entries.len());
    let mut at: HashMap<String, usize> = HashMap::new();
    for (name, value) in entries {
        match at.get(name.as_ref()) {
            Some(&i) => out[i].1 = value,
            None => {
                at.insert(name.as_ref().to_owned(), out.len());
                out.push((name, value));
            }
        }
    }
    out
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Doc<'de>, E> {
        // As `Value` does: a float that is not a JSON number is null.
        Ok(Number::from_f64(v).map_or(Doc::Null, Doc::Number))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Doc<'de>, D::Error> {
        Doc::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Name(name)) = map.next_key()? {
            if entries.is_empty() && name.starts_with(SERDE_PRIVATE) {
                return Err(de::Error::custom("a serde_json private token"));
            }
            entries.push((name, map.next_value()?));
        }
        Ok(Doc::Object(Members::new(entries)))
    }
}

/// A member name, borrowed unless escaped.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl Json for Parsed {
    type Node<'a> = &'a Doc<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    // A lookup in a small object compares names one by one: a pass over its members
    // costs about what a lookup does.
    const KEYS_PER_LOOKUP: usize = INDEXED;
    // A tree: no node is its own descendant.
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(Self::Node<'_>) -> T) -> T {
        f(&Doc::String(Cow::Borrowed(string)))
    }
}

/// A number of a [`Doc`].
#[derive(Clone, Copy)]
pub(crate) struct Num<'a>(&'a Number);

impl JsonNumber for Num<'_> {
    fn as_u64(&self) -> Option<u64> {
        self.0.as_u64()
    }

    fn as_i64(&self) -> Option<i64> {
        self.0.as_i64()
    }

    fn as_f64(&self) -> Option<f64> {
        self.0.as_f64()
    }

    fn as_str(&self) -> Cow<'_, str> {
        Cow::Owned(self.0.to_string())
    }

    fn to_number(&self) -> Cow<'_, Number> {
        Cow::Borrowed(self.0)
    }
}

/// An array of a [`Doc`].
#[derive(Clone, Copy)]
pub(crate) struct Items<'a>(&'a [Doc<'a>]);

impl<'a> Array<'a, Parsed> for Items<'a> {
    type Node = &'a Doc<'a>;
    type ElementsIter = std::slice::Iter<'a, Doc<'a>>;

    fn len(&self) -> usize {
        self.0.len()
    }

    fn elements(&self) -> Self::ElementsIter {
        self.0.iter()
    }
}

/// The members of an object of a [`Doc`], in order.
pub(crate) struct MembersIter<'a>(std::slice::Iter<'a, (Cow<'a, str>, Doc<'a>)>);

impl<'a> Iterator for MembersIter<'a> {
    type Item = (&'a str, &'a Doc<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|(name, value)| (name.as_ref(), value))
    }
}

impl<'a> Object<'a, Parsed> for &'a Members<'a> {
    type Node = &'a Doc<'a>;
    type MemberName = &'a str;
    type MembersIter = MembersIter<'a>;

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, key: &Box<str>) -> Option<&'a Doc<'a>> {
        Members::get(self, key)
    }

    fn members(&self) -> MembersIter<'a> {
        let members: &'a Members<'a> = self;
        MembersIter(members.entries.iter())
    }
}

impl<'a> Node<'a, Parsed> for &'a Doc<'a> {
    type Object = &'a Members<'a>;
    type Array = Items<'a>;
    type Number = Num<'a>;

    fn as_object(&self) -> Option<&'a Members<'a>> {
        match *self {
            Doc::Object(members) => Some(members),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<Items<'a>> {
        match *self {
            Doc::Array(items) => Some(Items(items)),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        match *self {
            Doc::String(s) => Some(Cow::Borrowed(s.as_ref())),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<Num<'a>> {
        match *self {
            Doc::Number(n) => Some(Num(n)),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self {
            Doc::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self, Doc::Null)
    }

    fn json_type(&self) -> JsonType {
        match self {
            Doc::Null => JsonType::Null,
            Doc::Bool(_) => JsonType::Boolean,
            Doc::Number(_) => JsonType::Number,
            Doc::String(_) => JsonType::String,
            Doc::Array(_) => JsonType::Array,
            Doc::Object(_) => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        match (self, expected) {
            // `enum`s of strings, the common case, without building a `Value`.
            (Doc::String(s), Value::String(e)) => s == e,
            (Doc::String(_), _) | (_, Value::String(_)) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(Doc::to_value(self))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::new(
            std::ptr::from_ref::<Doc<'a>>(*self) as usize
        ))
    }
}
