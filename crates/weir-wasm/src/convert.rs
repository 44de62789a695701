//! Conversion between weir's CloudEvent model and the WIT `event` record.
//!
//! The input is lent to the guest: the WIT record borrows the event's strings and its data
//! bytes (JSON data is the text it was published as, see `weir_cloudevents::Json`), so
//! the only copy is the canonical ABI's into guest memory. Outputs are owned and moved
//! into the `CloudEvent`; their JSON data is checked once, here, and kept as the function
//! wrote it (its buffer too, unless it has whitespace between tokens), so data a function
//! passes on unchanged is stored byte for byte as it came in.

use crate::host::entity_wit::weir::function::types as entity;
use crate::host::wit::weir::function::types as wit;
use weir_cloudevents::{CloudEvent, Data, ExtensionValue};

/// The event's extensions as the WIT record lists them.
pub(crate) fn wit_extensions(event: &CloudEvent) -> Vec<(&str, wit::ExtensionValueParam<'_>)> {
    event
        .extensions
        .iter()
        .map(|(name, value)| {
            let value = match value {
                ExtensionValue::String(s) => wit::ExtensionValueParam::String(s),
                ExtensionValue::Integer(i) => wit::ExtensionValueParam::Integer(*i),
                ExtensionValue::Boolean(b) => wit::ExtensionValueParam::Boolean(*b),
            };
            (name.as_str(), value)
        })
        .collect()
}

/// The event as the WIT record, borrowing from it; `extensions` from [`wit_extensions`].
pub(crate) fn to_wit<'a>(
    event: &'a CloudEvent,
    extensions: &'a [(&'a str, wit::ExtensionValueParam<'a>)],
) -> wit::EventParam<'a> {
    wit::EventParam {
        id: &event.id,
        source: &event.source,
        type_: &event.ty,
        subject: event.subject.as_deref(),
        time: event.time.as_deref(),
        datacontenttype: data_content_type(event),
        dataschema: event.dataschema.as_deref(),
        extensions,
        data: event.data.as_ref().map(|data| match data {
            Data::Json(json) => json.as_bytes(),
            Data::Text(text) => text.as_bytes(),
            Data::Binary(bytes) => &bytes[..],
        }),
    }
}

/// The event's `datacontenttype` as the guest gets it: JSON data without one gets
/// `application/json`, the type the JSON format implies, as in the HTTP binary mode (the
/// WIT record's data travels as in that mode). Without it a function that passes the
/// event on would hand back bytes without a type, which weir takes as binary data.
fn data_content_type(event: &CloudEvent) -> Option<&str> {
    match (&event.datacontenttype, &event.data) {
        (Some(content_type), _) => Some(content_type),
        (None, Some(Data::Json(_))) => Some("application/json"),
        (None, _) => None,
    }
}

/// The event as the entity world's (owned) WIT record, for `apply`.
pub(crate) fn to_entity_wit(event: &CloudEvent) -> entity::Event {
    entity::Event {
        id: event.id.clone(),
        source: event.source.clone(),
        type_: event.ty.clone(),
        subject: event.subject.clone(),
        time: event.time.clone(),
        datacontenttype: data_content_type(event).map(str::to_owned),
        dataschema: event.dataschema.clone(),
        extensions: event
            .extensions
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    ExtensionValue::String(s) => entity::ExtensionValue::String(s.clone()),
                    ExtensionValue::Integer(i) => entity::ExtensionValue::Integer(*i),
                    ExtensionValue::Boolean(b) => entity::ExtensionValue::Boolean(*b),
                };
                (name.clone(), value)
            })
            .collect(),
        data: event.data.as_ref().map(|data| match data {
            Data::Json(json) => json.as_bytes().to_vec(),
            Data::Text(text) => text.as_bytes().to_vec(),
            Data::Binary(bytes) => bytes.to_vec(),
        }),
    }
}

/// The entity world's (owned) WIT record as a CloudEvent, as [`from_wit`].
pub(crate) fn from_entity_wit(event: entity::Event) -> Result<CloudEvent, String> {
    from_wit(wit::EventResult {
        id: event.id,
        source: event.source,
        type_: event.type_,
        subject: event.subject,
        time: event.time,
        datacontenttype: event.datacontenttype,
        dataschema: event.dataschema,
        extensions: event
            .extensions
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    entity::ExtensionValue::String(s) => wit::ExtensionValueResult::String(s),
                    entity::ExtensionValue::Integer(i) => wit::ExtensionValueResult::Integer(i),
                    entity::ExtensionValue::Boolean(b) => wit::ExtensionValueResult::Boolean(b),
                };
                (name, value)
            })
            .collect(),
        data: event.data,
    })
}

/// The guest's event as a CloudEvent. It is not validated here: the caller fills in a
/// missing id first and then validates.
pub(crate) fn from_wit(event: wit::EventResult) -> Result<CloudEvent, String> {
    let data = match event.data {
        None => None,
        Some(bytes) => Some(
            Data::from_body_vec(event.datacontenttype.as_deref(), bytes)
                .map_err(|e| e.to_string())?,
        ),
    };
    Ok(CloudEvent {
        id: event.id,
        source: event.source,
        ty: event.type_,
        datacontenttype: event.datacontenttype,
        dataschema: event.dataschema,
        subject: event.subject,
        time: event.time,
        extensions: event
            .extensions
            .into_iter()
            .map(|(name, value)| {
                let value = match value {
                    wit::ExtensionValueResult::String(s) => ExtensionValue::String(s),
                    wit::ExtensionValueResult::Integer(i) => ExtensionValue::Integer(i),
                    wit::ExtensionValueResult::Boolean(b) => ExtensionValue::Boolean(b),
                };
                (name, value)
            })
            .collect(),
        data,
    })
}

/// The size an output counts against `limits.max_output_bytes`: its attributes and data.
pub(crate) fn output_size(output: &wit::Output) -> usize {
    let e = &output.event;
    output.target.len()
        + e.id.len()
        + e.source.len()
        + e.type_.len()
        + e.subject.as_ref().map_or(0, String::len)
        + e.time.as_ref().map_or(0, String::len)
        + e.datacontenttype.as_ref().map_or(0, String::len)
        + e.dataschema.as_ref().map_or(0, String::len)
        + e.extensions
            .iter()
            .map(|(name, value)| {
                name.len()
                    + match value {
                        wit::ExtensionValueResult::String(s) => s.len(),
                        wit::ExtensionValueResult::Integer(_) => 8,
                        wit::ExtensionValueResult::Boolean(_) => 1,
                    }
            })
            .sum::<usize>()
        + e.data.as_ref().map_or(0, Vec::len)
}
