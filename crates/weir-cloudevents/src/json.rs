//! The JSON event format (`application/cloudevents+json`) and the JSON batch format
//! (`application/cloudevents-batch+json`) of CloudEvents 1.0.2.
//!
//! Reading follows the format's rules: a `null` attribute counts as absent, `data_base64`
//! holds binary data, and `data` is a JSON value unless `datacontenttype` names a
//! non-JSON type and the value is a string, in which case it is text. An explicit
//! `"data": null` is a null payload, not an absent one.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use crate::validate::is_json;
use crate::{CloudEvent, Data, Error, ExtensionValue, Result, SPEC_VERSION};

/// RFC 4648 base64; writes padding, and reads with or without it since producers differ.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl CloudEvent {
    /// Reads one event in the JSON event format and validates it.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self> {
        let value = serde_json::from_slice(bytes).map_err(Error::MalformedJson)?;
        Self::from_json_value(value)
    }

    /// Reads one event from an already parsed JSON value and validates it.
    pub fn from_json_value(value: Value) -> Result<Self> {
        let Value::Object(mut members) = value else {
            return Err(Error::NotAnObject {
                found: json_kind(&value),
            });
        };
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
        let data = match (members.remove("data"), data_base64) {
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
            (Some(value), None) => Some(data_from_json(datacontenttype.as_deref(), value)),
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
            Some(Data::Json(value)) => {
                members.insert("data".to_owned(), value.clone());
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

    /// The event in the JSON event format, as bytes.
    pub fn to_json_vec(&self) -> Vec<u8> {
        self.to_json_value().to_string().into_bytes()
    }
}

/// Reads a JSON batch: an array of events in the JSON event format, each validated. An
/// invalid event fails the whole batch with [`Error::InBatch`] naming its index.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<CloudEvent>> {
    match serde_json::from_slice(bytes).map_err(Error::MalformedJson)? {
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
        other => Err(Error::NotAnArray {
            found: json_kind(&other),
        }),
    }
}

/// The events as a JSON batch.
pub fn batch_to_json_vec(events: &[CloudEvent]) -> Vec<u8> {
    Value::Array(events.iter().map(CloudEvent::to_json_value).collect())
        .to_string()
        .into_bytes()
}

fn data_from_json(content_type: Option<&str>, value: Value) -> Data {
    match value {
        Value::String(text) if content_type.is_some_and(|ct| !is_json(ct)) => Data::Text(text),
        value => Data::Json(value),
    }
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
