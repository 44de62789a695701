//! The JSON event format (`application/cloudevents+json`) and the JSON batch format
//! (`application/cloudevents-batch+json`) of CloudEvents 1.0.2.
//!
//! Reading follows the format's rules: a `null` attribute counts as absent, `data_base64`
//! holds binary data, and `data` is a JSON value unless `datacontenttype` names a
//! non-JSON type and the value is a string, in which case it is text. An explicit
//! `"data": null` is a null payload, not an absent one.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::canonical::needs_no_escape;
use crate::data::{JsonSeed, read_whole, write_unescaped};
use crate::validate::is_json;
use crate::{CloudEvent, Data, Error, ExtensionValue, Json, Result, SPEC_VERSION};

/// RFC 4648 base64; writes padding, and reads with or without it since producers differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl CloudEvent {
    /// Reads one event in the JSON event format and validates it. `data` is read straight
    /// into canonical [`Json`] text, never into a `Value`.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self> {
        let document = read_all(
            bytes,
            DocumentSeed {
                data_capacity: bytes.len(),
            },
        )?;
        Self::from_document(document)
    }

    /// Reads one event from an already parsed JSON value and validates it.
    pub fn from_json_value(value: Value) -> Result<Self> {
        let Value::Object(mut members) = value else {
            return Err(Error::NotAnObject {
                found: json_kind(&value),
            });
        };
        let data = members.remove("data").map(Json::from);
        Self::from_members(members, data)
    }

    fn from_document(document: Document<'_>) -> Result<Self> {
        match document {
            Document::Event { members, data } => Self::from_members(*members, data),
            Document::Other(found) => Err(Error::NotAnObject { found }),
        }
    }

    /// The event from its members other than `data`, and `data`. Errors are looked for in
    /// this order whichever way the members were read.
    fn from_members(mut members: impl Members, data: Option<Json>) -> Result<Self> {
        // specversion first: a 0.3 event should hear about its version, not about the
        // attributes 0.3 named differently.
        let specversion = take_required(&mut members, Attribute::SpecVersion)?;
        if specversion != SPEC_VERSION {
            return Err(Error::UnsupportedSpecVersion(specversion));
        }
        let id = take_required(&mut members, Attribute::Id)?;
        let source = take_required(&mut members, Attribute::Source)?;
        let ty = take_required(&mut members, Attribute::Type)?;
        let datacontenttype = members.take_string(Attribute::DataContentType)?;
        let dataschema = members.take_string(Attribute::DataSchema)?;
        let subject = members.take_string(Attribute::Subject)?;
        let time = members.take_string(Attribute::Time)?;
        let data_base64 = members.take_string(Attribute::DataBase64)?;
        let data = match (data, data_base64) {
            (Some(_), Some(_)) => return Err(Error::ConflictingData),
            (None, Some(encoded)) => Some(Data::Binary(
                BASE64
                    .decode(encoded)
                    .map_err(|e| {
                        Error::invalid(
                            "data_base64",
                            format!(
                                "is not valid base64 ({e}); encode binary data as RFC 4648 base64"
                            ),
                        )
                    })?
                    .into(),
            )),
            (Some(json), None) => Some(data_from_json(datacontenttype.as_deref(), json)),
            (None, None) => None,
        };
        let extensions = members.into_extensions()?;
        let event = CloudEvent {
            id,
            source,
            ty,
            datacontenttype,
            dataschema,
            subject,
            time,
            extensions,
            data,
        };
        event.validate()?;
        Ok(event)
    }

    /// The event in the JSON event format; always includes `"specversion": "1.0"`.
    pub fn to_json_value(&self) -> Value {
        let mut members = Map::new();
        members.insert("specversion".to_owned(), Value::from(SPEC_VERSION));
        let mut put = |name: &str, value: Option<&String>| {
            if let Some(value) = value {
                members.insert(name.to_owned(), Value::String(value.clone()));
            }
        };
        put("id", Some(&self.id));
        put("source", Some(&self.source));
        put("type", Some(&self.ty));
        put("subject", self.subject.as_ref());
        put("time", self.time.as_ref());
        put("datacontenttype", self.datacontenttype.as_ref());
        put("dataschema", self.dataschema.as_ref());
        // Extensions cannot replace a core attribute, even one named like it.
        for (name, value) in &self.extensions {
            members
                .entry(name.clone())
                .or_insert_with(|| extension_to_json(value));
        }
        match &self.data {
            Some(Data::Json(json)) => {
                members.insert("data".to_owned(), json.value());
            }
            Some(Data::Text(text)) => {
                members.insert("data".to_owned(), Value::String(text.clone()));
            }
            Some(Data::Binary(bytes)) => {
                members.insert(
                    "data_base64".to_owned(),
                    Value::String(BASE64.encode(bytes)),
                );
            }
            None => {}
        }
        Value::Object(members)
    }

    /// The event in the JSON event format, as bytes: the same bytes as
    /// `to_json_value().to_string()`, written directly (JSON data is copied as it is).
    pub fn to_json_vec(&self) -> Vec<u8> {
        let data_len = match &self.data {
            Some(Data::Json(json)) => json.as_str().len(),
            Some(Data::Text(text)) => text.len() + 2,
            Some(Data::Binary(bytes)) => bytes.len().div_ceil(3) * 4 + 2,
            None => 0,
        };
        let mut out = Vec::with_capacity(256 + data_len);
        self.write_json(&mut out);
        out
    }

    /// Writes what [`CloudEvent::to_json_value`] holds, in its order: the core attributes,
    /// then the extensions not named like a present core attribute, then the data; data
    /// named like an extension takes that extension's place, as a map insert would.
    fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        write_str(out, "specversion");
        out.push(b':');
        write_str(out, SPEC_VERSION);
        for (name, value) in [
            ("id", &self.id),
            ("source", &self.source),
            ("type", &self.ty),
        ] {
            write_key(out, name);
            write_str(out, value);
        }
        let optional = [
            ("subject", &self.subject),
            ("time", &self.time),
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                write_key(out, name);
                write_str(out, value);
            }
        }
        let is_present = |name: &str| match name {
            "specversion" | "id" | "source" | "type" => true,
            _ => optional
                .iter()
                .any(|(core, value)| *core == name && value.is_some()),
        };
        let data_name = match &self.data {
            Some(Data::Binary(_)) => Some("data_base64"),
            Some(_) => Some("data"),
            None => None,
        };
        let mut data_written = false;
        for (name, value) in &self.extensions {
            if is_present(name) {
                continue;
            }
            write_key(out, name);
            if data_name == Some(name.as_str()) {
                self.write_data(out);
                data_written = true;
                continue;
            }
            match value {
                ExtensionValue::String(s) => write_str(out, s),
                ExtensionValue::Integer(i) => {
                    let _ = serde_json::to_writer(&mut *out, i);
                }
                ExtensionValue::Boolean(b) => {
                    out.extend_from_slice(if *b { b"true" } else { b"false" })
                }
            }
        }
        if let (Some(name), false) = (data_name, data_written) {
            write_key(out, name);
            self.write_data(out);
        }
        out.push(b'}');
    }

    fn write_data(&self, out: &mut Vec<u8>) {
        match &self.data {
            Some(Data::Json(json)) => out.extend_from_slice(json.as_bytes()),
            Some(Data::Text(text)) => write_str(out, text),
            Some(Data::Binary(bytes)) => write_str(out, &BASE64.encode(bytes)),
            None => {}
        }
    }
}

/// Reads an event array in the JSON batch format and validates each event. An invalid
/// event fails the whole batch with [`Error::InBatch`] naming its index; malformed JSON
/// anywhere fails it before any event is looked at.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<CloudEvent>> {
    match read_all(bytes, BatchSeed)? {
        Batch::Events(documents) => documents
            .into_iter()
            .enumerate()
            .map(|(index, document)| {
                CloudEvent::from_document(document).map_err(|error| Error::InBatch {
                    index,
                    error: Box::new(error),
                })
            })
            .collect(),
        Batch::Other(found) => Err(Error::NotAnArray { found }),
    }
}

/// The events as a JSON batch.
pub fn batch_to_json_vec(events: &[CloudEvent]) -> Vec<u8> {
    let mut out = vec![b'['];
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        event.write_json(&mut out);
    }
    out.push(b']');
    out
}

/// One whole JSON text read with `seed`, failing as `serde_json::from_slice` does.
fn read_all<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value> {
    // Read from a slice, serde_json checks each string is UTF-8 as it meets it; one check
    // of the whole text is quicker, and then the text is read as a `str`, which fails
    // exactly as the slice would (only the UTF-8 check differs). Text that is not UTF-8
    // is read as a slice, so it fails where it did.
    match std::str::from_utf8(bytes) {
        Ok(text) => read_whole(serde_json::Deserializer::from_str(text), seed),
        Err(_) => read_whole(serde_json::Deserializer::from_slice(bytes), seed),
    }
    .map_err(Error::MalformedJson)
}

/// A JSON text that should hold one event, read but not yet checked. Reading it fails
/// only for malformed JSON, at the same place and with the same message as reading a
/// `Value` would (every member other than `data` is read as a `Value`); every other
/// problem is found afterwards, as before.
enum Document<'de> {
    /// An object: its members other than `data`, and `data` as canonical JSON (of
    /// duplicates the last).
    Event {
        members: Box<Envelope<'de>>,
        data: Option<Json>,
    },
    /// Any other JSON value, by its kind.
    Other(&'static str),
}

/// An object read as an event, without a `Map`: member names are matched where they lie
/// in the input, attributes go straight to their places and values are checked as they
/// are read, but no error is reported until [`CloudEvent::from_members`] asks, so the
/// errors and their order are those of the `Map` it replaces.
struct Envelope<'de> {
    /// Each [`Attribute`] by its index, as its last occurrence gave it.
    attributes: [AttributeValue; Attribute::COUNT],
    /// Where each attribute first appeared among the members other than `data`.
    attributes_at: [Option<usize>; Attribute::COUNT],
    /// Every other member, duplicates included, in document order.
    extensions: Vec<ExtensionMember<'de>>,
}

struct ExtensionMember<'de> {
    name: Cow<'de, str>,
    /// `None` for null.
    value: Option<Result<ExtensionValue>>,
    /// Where it appeared among the members other than `data`; after deduplication, where
    /// the first of its name did.
    at: usize,
}

impl Members for Envelope<'_> {
    fn take_string(&mut self, attribute: Attribute) -> Result<Option<String>> {
        std::mem::replace(
            &mut self.attributes[attribute as usize],
            AttributeValue::Absent,
        )
        .into_string(attribute)
    }

    fn into_extensions(self) -> Result<BTreeMap<String, ExtensionValue>> {
        let mut members = self.extensions;
        if members.len() > 1 {
            // Of duplicates the last value, at the first one's place, as a map insert
            // keeps them: the sort is stable, and `dedup_by` hands the later one first.
            members.sort_by(|a, b| a.name.cmp(&b.name));
            members.dedup_by(|later, earlier| {
                let same = later.name == earlier.name;
                if same {
                    earlier.value = later.value.take();
                }
                same
            });
        }
        let mut extensions = BTreeMap::new();
        let mut bad = Vec::new();
        for member in &mut members {
            match member.value.take() {
                Some(Ok(value)) => {
                    extensions.insert(std::mem::take(&mut member.name).into_owned(), value);
                }
                Some(Err(error)) => bad.push((member.at, error)),
                None => {}
            }
        }
        if bad.len() > 1 {
            let order = map_order(&self.attributes_at, &members);
            bad.sort_by_key(|(at, _)| order.iter().position(|place| place == at));
        }
        match bad.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(extensions),
        }
    }
}

/// The places (see `at`) of the extensions in the order the `Map` path meets them: the
/// order in which the members first appeared, after each attribute present was
/// `swap_remove`d in [`Attribute`] order. Of several extensions with bad values it reports
/// the first it meets, so this reader must too.
fn map_order(
    attributes_at: &[Option<usize>; Attribute::COUNT],
    extensions: &[ExtensionMember<'_>],
) -> Vec<usize> {
    let mut order: Vec<usize> = attributes_at
        .iter()
        .flatten()
        .copied()
        .chain(extensions.iter().map(|member| member.at))
        .collect();
    order.sort_unstable();
    for at in attributes_at.iter().flatten() {
        if let Some(index) = order.iter().position(|place| place == at) {
            order.swap_remove(index);
        }
    }
    order
}

/// A member name: an attribute, `data`, or an extension's name, borrowed from the input
/// unless it held escapes.
enum MemberName<'de> {
    Attribute(Attribute),
    Data,
    Extension(Cow<'de, str>),
}

impl<'de> MemberName<'de> {
    fn new(name: &str, owned: impl FnOnce() -> Cow<'de, str>) -> Self {
        match name {
            "data" => MemberName::Data,
            _ => match Attribute::named(name) {
                Some(attribute) => MemberName::Attribute(attribute),
                None => MemberName::Extension(owned()),
            },
        }
    }
}

struct MemberNameSeed;

impl<'de> DeserializeSeed<'de> for MemberNameSeed {
    type Value = MemberName<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for MemberNameSeed {
    type Value = MemberName<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(MemberName::new(v, || Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(MemberName::new(v, || Cow::Owned(v.to_owned())))
    }
}

struct DocumentSeed {
    /// What to reserve for the data's text.
    data_capacity: usize,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed {
    type Value = Document<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed {
    type Value = Document<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document<'de>, A::Error> {
        let mut members = Box::new(Envelope {
            attributes: std::array::from_fn(|_| AttributeValue::Absent),
            attributes_at: [None; Attribute::COUNT],
            extensions: Vec::new(),
        });
        let mut data = None;
        // `data` never entered the map this replaces, so it takes no place.
        let mut at = 0;
        while let Some(name) = map.next_key_seed(MemberNameSeed)? {
            match name {
                MemberName::Data => {
                    data = Some(map.next_value_seed(JsonSeed {
                        capacity: self.data_capacity,
                    })?);
                    continue;
                }
                MemberName::Attribute(attribute) => {
                    let value = AttributeValue::from(map.next_value::<Value>()?);
                    members.attributes[attribute as usize] = value;
                    members.attributes_at[attribute as usize].get_or_insert(at);
                }
                MemberName::Extension(name) => {
                    let value: Value = map.next_value()?;
                    let value = (!value.is_null()).then(|| extension_value(&name, value));
                    members.extensions.push(ExtensionMember { name, value, at });
                }
            }
            at += 1;
        }
        Ok(Document::Event { members, data })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Document<'de>, A::Error> {
        drain_seq(seq)?;
        Ok(Document::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Document<'de>, E> {
        Ok(Document::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Document<'de>, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Document<'de>, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Document<'de>, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Document<'de>, E> {
        Ok(Document::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document<'de>, E> {
        Ok(Document::Other("null"))
    }
}

/// A JSON text that should hold a batch, read but not yet checked.
enum Batch<'de> {
    Events(Vec<Document<'de>>),
    Other(&'static str),
}

struct BatchSeed;

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Batch<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Batch<'de>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Batch<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch<'de>, A::Error> {
        let mut documents = Vec::new();
        while let Some(document) = seq.next_element_seed(DocumentSeed { data_capacity: 128 })? {
            documents.push(document);
        }
        Ok(Batch::Events(documents))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Batch<'de>, A::Error> {
        while map.next_entry::<String, Value>()?.is_some() {}
        Ok(Batch::Other("an object"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Batch<'de>, E> {
        Ok(Batch::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Batch<'de>, E> {
        Ok(Batch::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Batch<'de>, E> {
        Ok(Batch::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Batch<'de>, E> {
        Ok(Batch::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Batch<'de>, E> {
        Ok(Batch::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Batch<'de>, E> {
        Ok(Batch::Other("null"))
    }
}

/// Reads the rest of an array as `Value`s, so malformed JSON in it is reported as reading
/// a `Value` would report it.
fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Value>()?.is_some() {}
    Ok(())
}

fn write_key(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    write_str(out, name);
    out.push(b':');
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn write_str(out: &mut Vec<u8>, value: &str) {
    // Attribute values rarely hold anything serde_json escapes (quotes, backslashes,
    // control characters); those are copied as they are.
    if needs_no_escape(value.as_bytes()) {
        write_unescaped(out, value);
    } else {
        // Serializing a `str` into a `Vec` cannot fail.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

fn data_from_json(content_type: Option<&str>, json: Json) -> Data {
    if content_type.is_some_and(|ct| !is_json(ct))
        && let Some(text) = json.as_string_value()
    {
        return Data::Text(text);
    }
    Data::Json(json)
}

/// The attributes read as strings, in the order [`CloudEvent::from_members`] takes them,
/// which is the order their errors are reported in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Attribute {
    SpecVersion,
    Id,
    Source,
    Type,
    DataContentType,
    DataSchema,
    Subject,
    Time,
    DataBase64,
}

impl Attribute {
    const COUNT: usize = 9;

    fn name(self) -> &'static str {
        match self {
            Attribute::SpecVersion => "specversion",
            Attribute::Id => "id",
            Attribute::Source => "source",
            Attribute::Type => "type",
            Attribute::DataContentType => "datacontenttype",
            Attribute::DataSchema => "dataschema",
            Attribute::Subject => "subject",
            Attribute::Time => "time",
            Attribute::DataBase64 => "data_base64",
        }
    }

    fn named(name: &str) -> Option<Attribute> {
        Some(match name {
            "specversion" => Attribute::SpecVersion,
            "id" => Attribute::Id,
            "source" => Attribute::Source,
            "type" => Attribute::Type,
            "datacontenttype" => Attribute::DataContentType,
            "dataschema" => Attribute::DataSchema,
            "subject" => Attribute::Subject,
            "time" => Attribute::Time,
            "data_base64" => Attribute::DataBase64,
            _ => return None,
        })
    }
}

/// An event's members other than `data`, as one of the two readers holds them: a `Map`
/// ([`CloudEvent::from_json_value`]) or an [`Envelope`] ([`CloudEvent::from_json_slice`],
/// [`parse_batch`]).
trait Members {
    /// The attribute's string; `None` when it is absent or null.
    fn take_string(&mut self, attribute: Attribute) -> Result<Option<String>>;

    /// The members not taken as attributes, as extensions; null ones are absent.
    fn into_extensions(self) -> Result<BTreeMap<String, ExtensionValue>>;
}

impl Members for Map<String, Value> {
    fn take_string(&mut self, attribute: Attribute) -> Result<Option<String>> {
        // With preserve_order this is a `swap_remove`, which `map_order` follows.
        let value = self.remove(attribute.name()).unwrap_or(Value::Null);
        AttributeValue::from(value).into_string(attribute)
    }

    fn into_extensions(self) -> Result<BTreeMap<String, ExtensionValue>> {
        self.into_iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| {
                let value = extension_value(&name, value)?;
                Ok((name, value))
            })
            .collect()
    }
}

fn take_required(members: &mut impl Members, attribute: Attribute) -> Result<String> {
    members
        .take_string(attribute)?
        .ok_or(Error::MissingAttribute(attribute.name()))
}

/// An attribute's value as read: a string, or the kind of the JSON value it was instead.
enum AttributeValue {
    /// Absent or null.
    Absent,
    String(String),
    Other(&'static str),
}

impl From<Value> for AttributeValue {
    fn from(value: Value) -> Self {
        match value {
            Value::Null => AttributeValue::Absent,
            Value::String(value) => AttributeValue::String(value),
            other => AttributeValue::Other(json_kind(&other)),
        }
    }
}

impl AttributeValue {
    fn into_string(self, attribute: Attribute) -> Result<Option<String>> {
        match self {
            AttributeValue::Absent => Ok(None),
            AttributeValue::String(value) => Ok(Some(value)),
            AttributeValue::Other(kind) => Err(Error::invalid(
                attribute.name(),
                format!("must be a string, found {kind}"),
            )),
        }
    }
}

fn extension_value(name: &str, value: Value) -> Result<ExtensionValue> {
    match value {
        Value::String(s) => Ok(ExtensionValue::String(s)),
        Value::Bool(b) => Ok(ExtensionValue::Boolean(b)),
        // serde_json reads the integer literal `-0` as the float -0.0: it is 0.
        Value::Number(n) if n.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative()) => {
            Ok(ExtensionValue::Integer(0))
        }
        Value::Number(n) => n.as_i64().map(ExtensionValue::Integer).ok_or_else(|| {
            let problem = if n.is_f64() {
                format!("is {n}, not an integer; extension numbers must be whole")
            } else {
                format!("is {n}, too large for a 64-bit integer; send it as a string")
            };
            Error::invalid(name, problem)
        }),
        other => Err(Error::invalid(
            name,
            format!(
                "must be a string, integer or boolean, found {}; encode structured values \
                 as a string",
                json_kind(&other)
            ),
        )),
    }
}

fn extension_to_json(value: &ExtensionValue) -> Value {
    match value {
        ExtensionValue::String(s) => Value::String(s.clone()),
        ExtensionValue::Integer(i) => Value::from(*i),
        ExtensionValue::Boolean(b) => Value::Bool(*b),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
