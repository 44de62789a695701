//! Pure decisions about events on their way into and out of a function: which key an
//! event is stored under, and which outputs a pipeline accepts and how they are completed.

use bytes::Bytes;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_wasm::OutputEvent;

/// Extensions copied from the input to every output that does not set them, so one
/// business transaction can be followed across pipelines (W3C Trace Context).
const PROPAGATED_EXTENSIONS: [&str; 2] = ["traceparent", "tracestate"];

/// The key an event is stored under: the `partitionkey` extension, else its `subject`.
/// Events with the same key land in the same partition and so stay in order.
pub fn event_key(event: &CloudEvent) -> Option<Bytes> {
    event
        .partition_key()
        .or(event.subject.as_deref())
        .map(|k| Bytes::copy_from_slice(k.as_bytes()))
}

/// Where the input of a function call was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputPosition<'a> {
    pub pipeline: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
}

/// The id weir gives the `index`th output of the event at `pos` when the function left
/// it empty. It depends only on the position, so processing the event again yields the
/// same id and downstream consumers can deduplicate.
pub fn derived_output_id(pos: InputPosition<'_>, index: usize) -> String {
    format!(
        "{}:{}:{}:{}:{}",
        pos.pipeline, pos.topic, pos.partition, pos.offset, index
    )
}

/// Check a function's outputs against the pipeline's declared `to` topics, give them ids
/// and trace context, and validate them. The error says what was wrong.
pub fn complete_outputs(
    pos: InputPosition<'_>,
    allowed: &[String],
    input: &CloudEvent,
    outputs: Vec<OutputEvent>,
) -> Result<Vec<(String, CloudEvent)>, String> {
    outputs
        .into_iter()
        .enumerate()
        .map(|(index, OutputEvent { target, mut event })| {
            if !allowed.contains(&target) {
                return Err(format!(
                    "output {index} targets topic {target:?}, which pipeline {:?} does not list in `to` (it lists {allowed:?})",
                    pos.pipeline
                ));
            }
            if event.id.is_empty() {
                event.id = derived_output_id(pos, index);
            }
            for name in PROPAGATED_EXTENSIONS {
                if let Some(value @ ExtensionValue::String(_)) = input.extensions.get(name) {
                    event
                        .extensions
                        .entry(name.to_owned())
                        .or_insert_with(|| value.clone());
                }
            }
            event
                .validate()
                .map_err(|e| format!("output {index} is not a valid CloudEvent: {e}"))?;
            Ok((target, event))
        })
        .collect()
}

#[cfg(test)]
mod tests;
