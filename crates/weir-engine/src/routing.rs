//! Pure decisions about events on their way into and out of a function: which key an
//! event is stored under, whether a pipeline's filter lets it through, which outputs a
//! pipeline accepts and how they are completed, and what a dead letter looks like.

use bytes::Bytes;
use weir_cloudevents::{CloudEvent, ExtensionValue};
use weir_manifest::PipelineFilter;
use weir_wasm::OutputEvent;

/// Extensions copied from the input to every output that does not set them, so one
/// business transaction can be followed across pipelines (W3C Trace Context).
const PROPAGATED_EXTENSIONS: [&str; 2] = ["traceparent", "tracestate"];

/// The extension that names the business transaction an event belongs to. Outputs keep
/// the input's; an input without one passes on its own `id`, so every event a pipeline
/// derives from an input can be found from that input.
pub const CORRELATION_ID: &str = "correlationid";

/// The extension attributes a dead letter carries, all strings except `dlqattempts`,
/// `dlqpartition` and `dlqoffset`, which are numbers: integers while they fit the
/// CloudEvents integer range (32-bit signed), decimal strings beyond it (see
/// [`log_number`]).
pub mod dead_letter {
    pub const PIPELINE: &str = "dlqpipeline";
    pub const FUNCTION: &str = "dlqfunction";
    pub const VERSION: &str = "dlqversion";
    /// What kind of failure: `trap`, `deadline`, `memory`, `fatal`, `retries_exhausted`, ...
    pub const REASON: &str = "dlqreason";
    pub const ERROR: &str = "dlqerror";
    pub const ATTEMPTS: &str = "dlqattempts";
    pub const TOPIC: &str = "dlqtopic";
    pub const PARTITION: &str = "dlqpartition";
    pub const OFFSET: &str = "dlqoffset";
    /// When the event was dead-lettered (RFC 3339).
    pub const TIME: &str = "dlqtime";
    pub const ALL: [&str; 10] = [
        PIPELINE, FUNCTION, VERSION, REASON, ERROR, ATTEMPTS, TOPIC, PARTITION, OFFSET, TIME,
    ];
}

/// Whether `value` is a W3C Trace Context `traceparent` weir can carry: version `00`, a
/// 32-hex-digit trace id and a 16-hex-digit parent id that are not all zeros, and flags.
pub fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [v, t, p, f]
        if *v == "00" && hex(t, 32) && hex(p, 16) && hex(f, 2)
            && t.bytes().any(|b| b != b'0') && p.bytes().any(|b| b != b'0'))
}

/// Give events published in a request that carried W3C trace headers the request's
/// trace context, unless an event has its own `traceparent`: the HTTP hop that published
/// them then belongs to the same trace as what pipelines do with them. An invalid
/// `traceparent` header is ignored, as the W3C spec asks.
pub fn adopt_trace_context(events: &mut [CloudEvent], traceparent: &str, tracestate: Option<&str>) {
    if !is_traceparent(traceparent) {
        return;
    }
    for event in events {
        if event.extensions.contains_key("traceparent") {
            continue;
        }
        event.extensions.insert(
            "traceparent".into(),
            ExtensionValue::String(traceparent.to_owned()),
        );
        if let Some(state) = tracestate.filter(|s| !s.is_empty()) {
            event.extensions.insert(
                "tracestate".into(),
                ExtensionValue::String(attribute_text(state, 512)),
            );
        }
    }
}

/// Whether `event` passes a pipeline's filter: every attribute the filter names is present
/// and matches one of its patterns (exact, `prefix*`, or `*` for any value).
pub fn filter_accepts(filter: Option<&PipelineFilter>, event: &CloudEvent) -> bool {
    let Some(filter) = filter else {
        return true;
    };
    filter.attributes.iter().all(|(attribute, patterns)| {
        let value = match attribute.as_str() {
            "type" => Some(std::borrow::Cow::Borrowed(event.ty.as_str())),
            "source" => Some(std::borrow::Cow::Borrowed(event.source.as_str())),
            "subject" => event.subject.as_deref().map(std::borrow::Cow::Borrowed),
            name => event.extensions.get(name).map(|v| match v {
                ExtensionValue::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                ExtensionValue::Integer(i) => std::borrow::Cow::Owned(i.to_string()),
                ExtensionValue::Boolean(b) => std::borrow::Cow::Owned(b.to_string()),
            }),
        };
        value.is_some_and(|value| patterns.iter().any(|p| pattern_matches(p, &value)))
    })
}

fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Why an event is dead-lettered, as its `dlq*` attributes say.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetterCause<'a> {
    pub function: &'a str,
    pub version: &'a str,
    /// `CallError::kind`, `retries_exhausted`, `invalid_output` or `undecodable`.
    pub reason: &'a str,
    pub error: &'a str,
    pub attempts: u32,
    /// RFC 3339.
    pub time: String,
}

/// The dead letter of the event at `pos`: the event as it was read, with `dlq*` extension
/// attributes saying which pipeline, function and version failed it, how, after how many
/// attempts, and where it came from. Its `id` is unchanged, so it can be traced back.
pub fn dead_letter_event(
    pos: InputPosition<'_>,
    mut event: CloudEvent,
    cause: &DeadLetterCause<'_>,
) -> CloudEvent {
    use dead_letter::*;
    let ext = &mut event.extensions;
    let string = |s: &str| ExtensionValue::String(s.to_owned());
    ext.insert(PIPELINE.into(), string(pos.pipeline));
    ext.insert(FUNCTION.into(), string(cause.function));
    ext.insert(VERSION.into(), string(cause.version));
    ext.insert(REASON.into(), string(cause.reason));
    ext.insert(
        ERROR.into(),
        ExtensionValue::String(attribute_text(cause.error, MAX_ERROR_CHARS)),
    );
    ext.insert(ATTEMPTS.into(), log_number(cause.attempts.into()));
    ext.insert(TOPIC.into(), string(pos.topic));
    ext.insert(PARTITION.into(), log_number(pos.partition.into()));
    ext.insert(OFFSET.into(), log_number(pos.offset));
    ext.insert(TIME.into(), string(&cause.time));
    event
}

/// A count or position of weir's (an offset, a partition) as an extension value: an
/// integer while it fits the CloudEvents integer range, else its decimal string. A log
/// offset passes 2^31 on a busy partition, and the spec says integers beyond 32 bits
/// MUST NOT be used; a string keeps it exact and the event valid.
pub fn log_number(n: u64) -> ExtensionValue {
    match i64::try_from(n) {
        Ok(i) if weir_cloudevents::INTEGER_RANGE.contains(&i) => ExtensionValue::Integer(i),
        _ => ExtensionValue::String(n.to_string()),
    }
}

/// Longest `dlqerror` kept, in characters; a trap's backtrace can be long.
const MAX_ERROR_CHARS: usize = 2000;

/// `text` as a valid CloudEvents string attribute: control characters and Unicode
/// noncharacters (which the spec forbids; error messages and backtraces have newlines)
/// become spaces, and it is cut at `max_chars` with a trailing "...".
pub fn attribute_text(text: &str, max_chars: usize) -> String {
    let clean = |c: char| {
        let noncharacter = matches!(c as u32, 0xFDD0..=0xFDEF) || (c as u32 & 0xFFFE) == 0xFFFE;
        if c.is_control() || noncharacter {
            ' '
        } else {
            c
        }
    };
    let mut out: String = text.chars().take(max_chars).map(clean).collect();
    if text.chars().nth(max_chars).is_some() {
        out.push_str("...");
    }
    out
}

/// The type of the event that stands in for a stored record that is not a CloudEvent.
pub const UNDECODABLE_TYPE: &str = "dev.weir.undecodable";

/// A dead letter for a stored record that is not a CloudEvent at all (written by
/// something other than weir): its bytes become the `data_base64` of an event of type
/// [`UNDECODABLE_TYPE`]. It is never re-driven.
pub fn undecodable_event(pos: InputPosition<'_>, value: Bytes) -> CloudEvent {
    let mut event = CloudEvent::new(
        format!("{}:{}:{}:undecodable", pos.topic, pos.partition, pos.offset),
        format!("weir://topics/{}", pos.topic),
        UNDECODABLE_TYPE,
    );
    event.datacontenttype = Some("application/octet-stream".into());
    event.data = Some(weir_cloudevents::Data::Binary(value));
    event
}

/// A dead letter taken back for re-driving: the event without its `dlq*` attributes, and
/// the topic it came from (`None` if it is not a dead letter of `pipeline`). Only
/// `dlqpipeline` and `dlqtopic` are read; the numbers are dropped whichever form
/// [`log_number`] gave them (and integers beyond 32 bits, as older dead letters hold, are
/// read from the log as they are).
pub fn redriven_event(pipeline: &str, mut event: CloudEvent) -> Option<(String, CloudEvent)> {
    let ext = &event.extensions;
    match ext.get(dead_letter::PIPELINE) {
        Some(ExtensionValue::String(p)) if p == pipeline => {}
        _ => return None,
    }
    let Some(ExtensionValue::String(topic)) = ext.get(dead_letter::TOPIC).cloned() else {
        return None;
    };
    for name in dead_letter::ALL {
        event.extensions.remove(name);
    }
    Some((topic, event))
}

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
    complete_outputs_in_step(pos, allowed, input, outputs, None)
}

/// [`complete_outputs`] for a pipeline step whose trace span has `step_traceparent`
/// (when traces are exported): outputs carry it instead of the input's, so the next
/// pipeline's step is the child of this one. An output whose `traceparent` is the
/// input's (a function that copied the input's extensions) gets it too; one the function
/// set to another trace context keeps it.
pub fn complete_outputs_in_step(
    pos: InputPosition<'_>,
    allowed: &[String],
    input: &CloudEvent,
    outputs: Vec<OutputEvent>,
    step_traceparent: Option<&str>,
) -> Result<Vec<(String, CloudEvent)>, String> {
    let input_traceparent = input.extensions.get("traceparent");
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
            if let Some(step) = step_traceparent {
                let own = event.extensions.get("traceparent");
                if own.is_none() || own == input_traceparent {
                    event.extensions.insert(
                        "traceparent".to_owned(),
                        ExtensionValue::String(step.to_owned()),
                    );
                }
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
                .extensions
                .entry(CORRELATION_ID.to_owned())
                .or_insert_with(|| match input.extensions.get(CORRELATION_ID) {
                    Some(value @ ExtensionValue::String(_)) => value.clone(),
                    _ => ExtensionValue::String(input.id.clone()),
                });
            // This holds integer extensions to the spec's 32-bit range too. One beyond it
            // makes the output invalid (the event is dead-lettered, `invalid_output`), as
            // any other broken rule does, rather than being turned into a string: the
            // function's author reads why in `dlqerror` and can send a string on purpose,
            // and no consumer finds an attribute whose type changed on the way.
            event
                .validate()
                .map_err(|e| format!("output {index} is not a valid CloudEvent: {e}"))?;
            Ok((target, event))
        })
        .collect()
}

#[cfg(test)]
mod tests;
