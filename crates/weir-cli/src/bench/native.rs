//! The example's transform compiled natively and called in-process, for the wasm bench's
//! `native_transform_calls_per_sec`: the same source as `enrich_order.wasm` (its
//! `transform.rs`), built into this binary against `weir-guest`'s native stand-ins for
//! config and key-value, each call converting the event in and the outputs out as the
//! function host does for a wasm call.

use weir_cloudevents::{CloudEvent, Data, ExtensionValue};

#[path = "../../../../examples/orders/enrich-order/src/transform.rs"]
mod enrich_order;

/// Give this thread's calls the config and key-value entries `transform_host` and
/// `load_transform` give the wasm version.
pub(super) fn prepare(config: &[(&str, &str)], keyvalue: &[(&str, &str, &[u8])]) {
    for (key, value) in config {
        weir_guest::native::set_config(key, value);
    }
    for (namespace, key, value) in keyvalue {
        weir_guest::native::set_keyvalue(namespace, key, value);
    }
}

/// One call: `event` as the guest's record, the transform, its outputs as CloudEvents.
pub(super) fn call(event: &CloudEvent) -> anyhow::Result<Vec<(String, CloudEvent)>> {
    let input = weir_guest::Event {
        id: event.id.clone(),
        source: event.source.clone(),
        type_: event.ty.clone(),
        subject: event.subject.clone(),
        time: event.time.clone(),
        datacontenttype: match (&event.datacontenttype, &event.data) {
            (Some(ct), _) => Some(ct.clone()),
            (None, Some(Data::Json(_))) => Some("application/json".to_owned()),
            (None, _) => None,
        },
        dataschema: event.dataschema.clone(),
        extensions: event
            .extensions
            .iter()
            .map(|(name, value)| {
                let value = match value {
                    ExtensionValue::String(s) => weir_guest::ExtensionValue::String(s.clone()),
                    ExtensionValue::Integer(i) => weir_guest::ExtensionValue::Integer(*i),
                    ExtensionValue::Boolean(b) => weir_guest::ExtensionValue::Boolean(*b),
                };
                (name.clone(), value)
            })
            .collect(),
        data: event.data.as_ref().map(|data| match data {
            Data::Json(json) => json.as_bytes().to_vec(),
            Data::Text(text) => text.as_bytes().to_vec(),
            Data::Binary(bytes) => bytes.to_vec(),
        }),
    };
    let outputs = enrich_order::enrich(input).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    outputs
        .into_iter()
        .map(|output| {
            let e = output.event;
            let data = match e.data {
                None => None,
                Some(bytes) => Some(Data::from_body_vec(e.datacontenttype.as_deref(), bytes)?),
            };
            let event = CloudEvent {
                id: e.id,
                source: e.source,
                ty: e.type_,
                datacontenttype: e.datacontenttype,
                dataschema: e.dataschema,
                subject: e.subject,
                time: e.time,
                extensions: e
                    .extensions
                    .into_iter()
                    .map(|(name, value)| {
                        let value = match value {
                            weir_guest::ExtensionValue::String(s) => ExtensionValue::String(s),
                            weir_guest::ExtensionValue::Integer(i) => ExtensionValue::Integer(i),
                            weir_guest::ExtensionValue::Boolean(b) => ExtensionValue::Boolean(b),
                        };
                        (name, value)
                    })
                    .collect(),
                data,
            };
            Ok((output.target, event))
        })
        .collect()
}
