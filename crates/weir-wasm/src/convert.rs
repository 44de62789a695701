//! Conversion between weir's CloudEvent model and the WIT `event` record.

use crate::host::wit::weir::function::types as wit;
use weir_cloudevents::{CloudEvent, Data, ExtensionValue};

pub(crate) fn to_wit(event: &CloudEvent) -> wit::Event {
    wit::Event {
        id: event.id.clone(),
        source: event.source.clone(),
        type_: event.ty.clone(),
        subject: event.subject.clone(),
        time: event.time.clone(),
        datacontenttype: event.datacontenttype.clone(),
        dataschema: event.dataschema.clone(),
        extensions: event
            .extensions
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    ExtensionValue::String(s) => wit::ExtensionValue::String(s.clone()),
                    ExtensionValue::Integer(i) => wit::ExtensionValue::Integer(*i),
                    ExtensionValue::Boolean(b) => wit::ExtensionValue::Boolean(*b),
                };
                (name.clone(), value)
            })
            .collect(),
        data: event.data_bytes().map(|b| b.to_vec()),
    }
}

/// The guest's event as a CloudEvent. It is not validated here: the caller fills in a
/// missing id first and then validates.
pub(crate) fn from_wit(event: wit::Event) -> Result<CloudEvent, String> {
    let data = match event.data {
        None => None,
        Some(bytes) => Some(
            Data::from_body(event.datacontenttype.as_deref(), &bytes).map_err(|e| e.to_string())?,
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
                    wit::ExtensionValue::String(s) => ExtensionValue::String(s),
                    wit::ExtensionValue::Integer(i) => ExtensionValue::Integer(i),
                    wit::ExtensionValue::Boolean(b) => ExtensionValue::Boolean(b),
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
                        wit::ExtensionValue::String(s) => s.len(),
                        wit::ExtensionValue::Integer(_) => 8,
                        wit::ExtensionValue::Boolean(_) => 1,
                    }
            })
            .sum::<usize>()
        + e.data.as_ref().map_or(0, Vec::len)
}
