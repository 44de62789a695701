//! The JSON event format (`application/cloudevents+json`) and the JSON batch format
//! (`application/cloudevents-batch+json`) of CloudEvents 1.0.2.
//!
//! Reading follows the format's rules: a `null` attribute counts as absent, `data_base64`
//! holds binary data, and `data` is a JSON value unless `datacontenttype` names a
//! non-JSON type and the value is a string, in which case it is text. An explicit
//! `"data": null` is a null payload, not an absent one. JSON data is kept as the text it
//! was sent as (see [`Json`]), taken from the input with serde_json's `RawValue`. The
//! input must be I-JSON (RFC 7493): an object that repeats a key, the event itself or
//! one inside its data, is refused.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::data::{MAX_LEVELS, Refusal, read_json, value_error};
use crate::scan::{has_duplicates, needs_no_escape};
use crate::validate::{Integers, is_json, out_of_range};
use crate::{CloudEvent, Data, Error, ExtensionValue, Json, Result, SPEC_VERSION};

/// RFC 4648 base64; writes padding, and reads with or without it since producers differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl CloudEvent {
    /// Reads one event in the JSON event format and validates it, as
    /// [`CloudEvent::validate`] does but for the range of integers: an integer extension
    /// outside the spec's 32-bit range is kept, since weir's log holds such events from
    /// before it refused them ([`crate::http::decode`] refuses them). `data` is kept as
    /// the text it is in `bytes` (see [`Json`]), never read into a `Value`. An object that
    /// repeats a key is refused with [`Error::DuplicateKey`].
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self> {
        Self::read_json(bytes, Integers::Any)
    }

    /// [`CloudEvent::from_json_slice`], holding integers to the range `integers` says.
    pub(crate) fn read_json(bytes: &[u8], integers: Integers) -> Result<Self> {
        let document = read_all(bytes, DocumentSeed { levels: 1 })?;
        Self::from_document(document, bytes, integers)
    }

    /// Reads one event from an already parsed JSON value and validates it as
    /// [`CloudEvent::from_json_slice`] does. A `Value` keeps one of repeated keys, so
    /// they cannot be refused here, and its data becomes the canonical text of its value.
    pub fn from_json_value(value: Value) -> Result<Self> {
        let Value::Object(mut members) = value else {
            return Err(Error::NotAnObject {
                found: json_kind(&value),
            });
        };
        let data = members.remove("data").map(Json::from);
        Self::from_members(members, data, Integers::Any)
    }

    /// The event a document read from `whole` holds.
    fn from_document(document: Document<'_>, whole: &[u8], integers: Integers) -> Result<Self> {
        match document {
            Document::Event { members, data } => Self::from_members(*members, data, integers),
            Document::Refused(refusal) => Err(refusal.into_error(whole)),
            Document::Other(found) => Err(Error::NotAnObject { found }),
        }
    }

    /// The event from its members other than `data`, and `data`. Errors are looked for in
    /// this order whichever way the members were read.
    fn from_members(
        mut members: impl Members,
        data: Option<Json>,
        integers: Integers,
    ) -> Result<Self> {
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
        event.validate_as(integers)?;
        Ok(event)
    }

    /// The event in the JSON event format; always includes `"specversion": "1.0"`. Its
    /// data is read into a `Value`, which rounds numbers beyond `f64` (see
    /// [`Json::value`]); [`CloudEvent::to_json_vec`] writes the data as it is.
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

/// Reads an event array in the JSON batch format and validates each event as
/// [`CloudEvent::from_json_slice`] does. An invalid event fails the whole batch with
/// [`Error::InBatch`] naming its index; malformed JSON anywhere fails it before any event
/// is looked at.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<CloudEvent>> {
    read_batch(bytes, Integers::Any)
}

/// [`parse_batch`], holding integers to the range `integers` says.
pub(crate) fn read_batch(bytes: &[u8], integers: Integers) -> Result<Vec<CloudEvent>> {
    match read_all(bytes, BatchSeed)? {
        Batch::Events(documents) => {
            // Data serde_json does not read is malformed JSON, which counts before any
            // event's own problems.
            if documents
                .iter()
                .any(|d| matches!(d, Document::Refused(Refusal::NotAValue)))
            {
                return Err(Error::MalformedJson(value_error(bytes)));
            }
            documents
                .into_iter()
                .enumerate()
                .map(|(index, document)| {
                    CloudEvent::from_document(document, bytes, integers).map_err(|error| {
                        Error::InBatch {
                            index,
                            error: Box::new(error),
                        }
                    })
                })
                .collect()
        }
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

/// One whole JSON text read with `seed`. Malformed JSON fails as `serde_json::from_slice`
/// fails to read it as a `Value`.
fn read_all<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value> {
    // Read from a slice, serde_json checks each string is UTF-8 as it meets it; one check
    // of the whole text is quicker, and then the text is read as a `str`. Text that is
    // not UTF-8 is read as a slice.
    let read = match std::str::from_utf8(bytes) {
        Ok(text) => read_whole(serde_json::Deserializer::from_str(text), seed),
        Err(_) => read_whole(serde_json::Deserializer::from_slice(bytes), seed),
    };
    // `data` is skipped rather than read as a `Value`, and skipping reports a few errors
    // differently: the error is the one reading a `Value` makes (only on failure, so the
    // second reading costs nothing otherwise).
    read.map_err(|e| match serde_json::from_slice::<Value>(bytes) {
        Err(as_a_value) => Error::MalformedJson(as_a_value),
        Ok(_) => Error::MalformedJson(e),
    })
}

/// One whole JSON text read with `seed`, and nothing after it.
fn read_whole<'de, R, S>(
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

/// A JSON text that should hold one event, read but not yet checked. Reading it fails
/// only for malformed JSON, at the same place and with the same message as reading a
/// `Value` would (every member other than `data` is read as a `Value`); every other
/// problem is found afterwards.
enum Document<'de> {
    /// An object: its members other than `data`, and `data` as it was sent.
    Event {
        members: Box<Envelope<'de>>,
        data: Option<Json>,
    },
    /// An object that repeats a member or whose data is refused: the first such problem,
    /// data that serde_json does not read before any repeated key.
    Refused(Refusal),
    /// Any other JSON value, by its kind.
    Other(&'static str),
}

/// An object read as an event, without a `Map`: member names are matched where they lie
/// in the input, attributes go straight to their places and values are checked as they
/// are read, but no error is reported until [`CloudEvent::from_members`] asks, so the
/// errors and their order are those of the `Map` it replaces.
struct Envelope<'de> {
    /// Each [`Attribute`] by its index.
    attributes: [AttributeValue; Attribute::COUNT],
    /// Where each attribute appeared among the members other than `data`.
    attributes_at: [Option<usize>; Attribute::COUNT],
    /// Every other member, in document order.
    extensions: Vec<ExtensionMember<'de>>,
}

struct ExtensionMember<'de> {
    name: Cow<'de, str>,
    /// `None` for null.
    value: Option<Result<ExtensionValue>>,
    /// Where it appeared among the members other than `data`.
    at: usize,
    /// Where it appeared among all members.
    member: usize,
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
        // Names are unique: a repeated one refused the document.
        let mut members = self.extensions;
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

/// The first extension whose name an earlier one had: compared pairwise for the few an
/// event has, hashed beyond.
fn first_repeated(extensions: &[ExtensionMember<'_>]) -> Option<(usize, String)> {
    if !has_duplicates(extensions, |m| m.name.as_ref()) {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    extensions
        .iter()
        .find(|m| !seen.insert(m.name.as_ref()))
        .map(|m| (m.member, m.name.to_string()))
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
    /// How many arrays and objects are open around the event, itself included: data
    /// may open the rest of serde_json's [`MAX_LEVELS`].
    levels: usize,
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
        let mut data_refused = None;
        // The first member that repeats an earlier one's name: where, and the name.
        let mut repeated: Option<(usize, String)> = None;
        // `data` never entered the map this replaces, so it takes no place.
        let mut at = 0;
        let mut member = 0;
        while let Some(name) = map.next_key_seed(MemberNameSeed)? {
            member += 1;
            match name {
                MemberName::Data => {
                    let raw: &'de RawValue = map.next_value()?;
                    if data.is_some() || data_refused.is_some() {
                        repeated.get_or_insert_with(|| (member, "data".to_owned()));
                    }
                    match read_json(raw.get(), MAX_LEVELS.saturating_sub(self.levels)) {
                        Ok(text) => data = Some(Json::checked(text.into_owned())),
                        // Of two `data` members refused, one that is not a `Value` counts.
                        Err(Refusal::NotAValue) => data_refused = Some(Refusal::NotAValue),
                        Err(refusal) => {
                            data_refused.get_or_insert(refusal);
                        }
                    }
                    continue;
                }
                MemberName::Attribute(attribute) => {
                    let value = AttributeValue::from(map.next_value::<Value>()?);
                    members.attributes[attribute as usize] = value;
                    if members.attributes_at[attribute as usize].is_some() {
                        repeated.get_or_insert_with(|| (member, attribute.name().to_owned()));
                    }
                    members.attributes_at[attribute as usize].get_or_insert(at);
                }
                MemberName::Extension(name) => {
                    let value: Value = map.next_value()?;
                    let value = (!value.is_null()).then(|| extension_value(&name, value));
                    members.extensions.push(ExtensionMember {
                        name,
                        value,
                        at,
                        member,
                    });
                }
            }
            at += 1;
        }
        // Extensions are compared once all are in: pairwise for the few an event has.
        if let Some((place, name)) = first_repeated(&members.extensions)
            && repeated
                .as_ref()
                .is_none_or(|(earlier, _)| place < *earlier)
        {
            repeated = Some((place, name));
        }
        // Data serde_json does not read counts first, as malformed JSON; then a repeated
        // member of the event; then a key repeated inside the data.
        let refusal = match (data_refused, repeated) {
            (Some(Refusal::NotAValue), _) => Some(Refusal::NotAValue),
            (_, Some((_, name))) => Some(Refusal::Member(name)),
            (data_refused, None) => data_refused,
        };
        if let Some(refusal) = refusal {
            return Ok(Document::Refused(refusal));
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
        while let Some(document) = seq.next_element_seed(DocumentSeed { levels: 2 })? {
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

/// A string that needs no escape, quoted.
fn write_unescaped(out: &mut Vec<u8>, v: &str) {
    out.reserve(v.len() + 2);
    out.push(b'"');
    out.extend_from_slice(v.as_bytes());
    out.push(b'"');
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
            if n.is_f64() {
                Error::invalid(
                    name,
                    format!("is {n}, not an integer; extension numbers must be whole"),
                )
            } else {
                out_of_range(name, n)
            }
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
