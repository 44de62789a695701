//! The JSON event format (`application/cloudevents+json`) and the JSON batch format
//! (`application/cloudevents-batch+json`) of CloudEvents 1.0.2.
//!
//! Reading follows the format's rules: a `null` attribute counts as absent, `data_base64`
//! holds binary data, and `data` is a JSON value unless `datacontenttype` names a
//! non-JSON type and the value is a string, in which case it is text. An explicit
//! `"data": null` is a null payload, not an absent one.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::data::JsonSeed;
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

    fn from_document(document: Document) -> Result<Self> {
        match document {
            Document::Event { members, data } => Self::from_members(members, data),
            Document::Other(found) => Err(Error::NotAnObject { found }),
        }
    }

    /// The event from its members other than `data`, and `data`.
    fn from_members(mut members: Map<String, Value>, data: Option<Json>) -> Result<Self> {
        // specversion first: a 0.3 event should hear about its version, not about the
        // attributes 0.3 named differently.
        let specversion = take_required(&mut members, "specversion")?;
        if specversion != SPEC_VERSION {
            return Err(Error::UnsupportedSpecVersion(specversion));
        }
        let id = take_required(&mut members, "id")?;
        let source = take_required(&mut members, "source")?;
        let ty = take_required(&mut members, "type")?;
        let datacontenttype = take_string(&mut members, "datacontenttype")?;
        let dataschema = take_string(&mut members, "dataschema")?;
        let subject = take_string(&mut members, "subject")?;
        let time = take_string(&mut members, "time")?;
        let data_base64 = take_string(&mut members, "data_base64")?;
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
        let extensions = members
            .into_iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, value)| {
                let value = extension_value(&name, value)?;
                Ok((name, value))
            })
            .collect::<Result<_>>()?;
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
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = seed.deserialize(&mut de).map_err(Error::MalformedJson)?;
    de.end().map_err(Error::MalformedJson)?;
    Ok(value)
}

/// A JSON text that should hold one event, read but not yet checked. Reading it fails
/// only for malformed JSON, at the same place and with the same message as reading a
/// `Value` would; every other problem is found afterwards, as before.
enum Document {
    /// An object: its members other than `data` (of duplicates the last, as `Value`
    /// keeps), and `data` as canonical JSON.
    Event {
        members: Map<String, Value>,
        data: Option<Json>,
    },
    /// Any other JSON value, by its kind.
    Other(&'static str),
}

struct DocumentSeed {
    /// What to reserve for the data's text.
    data_capacity: usize,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed {
    type Value = Document;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a CloudEvent")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut members = Map::new();
        let mut data = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == "data" {
                data = Some(map.next_value_seed(JsonSeed {
                    capacity: self.data_capacity,
                })?);
            } else {
                members.insert(name, map.next_value()?);
            }
        }
        Ok(Document::Event { members, data })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Document, A::Error> {
        drain_seq(seq)?;
        Ok(Document::Other("an array"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Document, E> {
        Ok(Document::Other("null"))
    }
}

/// A JSON text that should hold a batch, read but not yet checked.
enum Batch {
    Events(Vec<Document>),
    Other(&'static str),
}

struct BatchSeed;

impl<'de> DeserializeSeed<'de> for BatchSeed {
    type Value = Batch;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Batch, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BatchSeed {
    type Value = Batch;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a batch of CloudEvents")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Batch, A::Error> {
        let mut documents = Vec::new();
        while let Some(document) = seq.next_element_seed(DocumentSeed { data_capacity: 128 })? {
            documents.push(document);
        }
        Ok(Batch::Events(documents))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Batch, A::Error> {
        while map.next_entry::<String, Value>()?.is_some() {}
        Ok(Batch::Other("an object"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Batch, E> {
        Ok(Batch::Other("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Batch, E> {
        Ok(Batch::Other("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Batch, E> {
        Ok(Batch::Other("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Batch, E> {
        Ok(Batch::Other("a number"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Batch, E> {
        Ok(Batch::Other("a string"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Batch, E> {
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
    // Serializing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn data_from_json(content_type: Option<&str>, json: Json) -> Data {
    if content_type.is_some_and(|ct| !is_json(ct))
        && let Some(text) = json.as_string_value()
    {
        return Data::Text(text);
    }
    Data::Json(json)
}

fn take_string(members: &mut Map<String, Value>, name: &str) -> Result<Option<String>> {
    match members.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(other) => Err(Error::invalid(
            name,
            format!("must be a string, found {}", json_kind(&other)),
        )),
    }
}

fn take_required(members: &mut Map<String, Value>, name: &'static str) -> Result<String> {
    take_string(members, name)?.ok_or(Error::MissingAttribute(name))
}

fn extension_value(name: &str, value: Value) -> Result<ExtensionValue> {
    match value {
        Value::String(s) => Ok(ExtensionValue::String(s)),
        Value::Bool(b) => Ok(ExtensionValue::Boolean(b)),
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
