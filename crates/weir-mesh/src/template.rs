//! From a broker's message to a CloudEvent: `[sources.NAME]`'s `type`, `source`, `key`
//! and `data`.

use weir_cloudevents::{CloudEvent, Data, ExtensionValue, Json, PARTITION_KEY};

use crate::Message;

/// How a message's payload becomes the event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataMode {
    /// JSON (`application/json`); a payload that is not JSON is dead-lettered.
    #[default]
    Json,
    /// UTF-8 text (`text/plain`); a payload that is not UTF-8 is dead-lettered.
    Text,
    /// Bytes as they came (`application/octet-stream`).
    Binary,
}

impl DataMode {
    pub fn parse(name: &str) -> Option<DataMode> {
        match name {
            "json" => Some(DataMode::Json),
            "text" => Some(DataMode::Text),
            "binary" => Some(DataMode::Binary),
            _ => None,
        }
    }
}

/// One part of a key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `{subject}`
    Subject,
    /// `{subject.N}`: level N (from 0) of the subject.
    Level(usize),
    /// `{header.NAME}`
    Header(String),
    /// `{data.a.b}`: a string or number in the JSON payload.
    Field(Vec<String>),
}

/// The partition key of a source's events: literal text with `{subject}`, `{subject.N}`,
/// `{header.NAME}` and `{data.PATH}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

impl KeyTemplate {
    /// The default: the message's subject (MQTT topic, NATS subject, routing key).
    pub fn subject() -> KeyTemplate {
        KeyTemplate {
            parts: vec![Part::Subject],
        }
    }

    /// Parses a template; `Err` says what is wrong with it.
    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let Some(open) = rest.find('{') else {
                if rest.contains('}') {
                    return Err(format!("{text:?} has a '}}' without its '{{'"));
                }
                parts.push(Part::Literal(rest.to_owned()));
                break;
            };
            if open > 0 {
                let literal = &rest[..open];
                if literal.contains('}') {
                    return Err(format!("{text:?} has a '}}' without its '{{'"));
                }
                parts.push(Part::Literal(literal.to_owned()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("{text:?} has a '{{' without its '}}'"));
            };
            let name = &rest[open + 1..open + close];
            parts.push(placeholder(name).ok_or_else(|| {
                format!(
                    "{{{name}}} is not a placeholder; use {{subject}}, {{subject.N}} (a level \
                     of the subject, from 0), {{header.NAME}} or {{data.FIELD}} (a field of \
                     the JSON payload, dotted for nested fields)"
                )
            })?);
            rest = &rest[open + close + 1..];
        }
        if parts.is_empty() {
            return Err("the key template is empty; leave key out to use the subject".into());
        }
        Ok(KeyTemplate { parts })
    }

    /// Whether the template reads headers (which MQTT 3.1.1 messages do not have).
    pub fn reads_headers(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Header(_)))
    }

    /// Whether the template reads the JSON payload (so needs `data = "json"`).
    pub fn reads_data(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Field(_)))
    }

    fn render(
        &self,
        message: &Message,
        separator: char,
        json: Option<&serde_json::Value>,
    ) -> Result<String, String> {
        let mut key = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => key.push_str(text),
                Part::Subject => key.push_str(&message.subject),
                Part::Level(n) => match message.subject.split(separator).nth(*n) {
                    Some(level) => key.push_str(level),
                    None => {
                        return Err(format!(
                            "{{subject.{n}}}: subject {:?} has no level {n}",
                            message.subject
                        ));
                    }
                },
                Part::Header(name) => match message
                    .headers
                    .iter()
                    .find(|(h, _)| h.eq_ignore_ascii_case(name))
                {
                    Some((_, value)) => key.push_str(value),
                    None => return Err(format!("{{header.{name}}}: the message has no {name:?}")),
                },
                Part::Field(path) => {
                    let mut value = json;
                    for field in path {
                        value = value.and_then(|v| v.get(field));
                    }
                    match value {
                        Some(serde_json::Value::String(s)) => key.push_str(s),
                        Some(serde_json::Value::Number(n)) => key.push_str(&n.to_string()),
                        _ => {
                            return Err(format!(
                                "{{data.{}}}: the payload has no string or number there",
                                path.join(".")
                            ));
                        }
                    }
                }
            }
        }
        if key.is_empty() {
            return Err("the key template gave an empty key".into());
        }
        Ok(key)
    }
}

fn placeholder(name: &str) -> Option<Part> {
    if name == "subject" {
        return Some(Part::Subject);
    }
    if let Some(level) = name.strip_prefix("subject.") {
        return level.parse().ok().map(Part::Level);
    }
    if let Some(header) = name.strip_prefix("header.") {
        return (!header.is_empty()).then(|| Part::Header(header.to_owned()));
    }
    if let Some(path) = name.strip_prefix("data.") {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        return path
            .iter()
            .all(|f| !f.is_empty())
            .then_some(Part::Field(path));
    }
    None
}

/// Why a message could not become an event. It is dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poison {
    /// A word from a fixed set: `not-json`, `not-text`, `too-large`, `key`, and the
    /// engine's `schema-violation`.
    pub reason: &'static str,
    pub error: String,
}

/// How a source's messages become events.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    /// The events' `type`.
    pub ty: String,
    /// The events' `source`.
    pub source: String,
    pub key: KeyTemplate,
    pub data: DataMode,
    /// The largest payload taken; a larger one is dead-lettered (without its payload).
    pub max_payload_bytes: usize,
}

impl EventTemplate {
    /// The event a message becomes: `id` the broker's message id or a new UUIDv7, `time`
    /// now, `subject` the message's subject, `partitionkey` the key template's value,
    /// `data` the payload as [`DataMode`] says.
    pub fn event(&self, message: &Message, separator: char) -> Result<CloudEvent, Poison> {
        if message.payload.len() > self.max_payload_bytes {
            return Err(Poison {
                reason: "too-large",
                error: format!(
                    "the payload has {} bytes, over the source's max_payload_bytes of {}",
                    message.payload.len(),
                    self.max_payload_bytes
                ),
            });
        }
        let (data, content_type, json) = match self.data {
            DataMode::Json => {
                let json = Json::from_slice(&message.payload).map_err(|e| Poison {
                    reason: "not-json",
                    error: format!("the payload is not JSON: {e}"),
                })?;
                let value = self.key.reads_data().then(|| json.value());
                (Data::Json(json), "application/json", value)
            }
            DataMode::Text => {
                let text = std::str::from_utf8(&message.payload).map_err(|e| Poison {
                    reason: "not-text",
                    error: format!("the payload is not UTF-8 text: {e}"),
                })?;
                (Data::Text(text.to_owned()), "text/plain", None)
            }
            DataMode::Binary => (
                Data::Binary(message.payload.clone()),
                "application/octet-stream",
                None,
            ),
        };
        let key = self
            .key
            .render(message, separator, json.as_ref())
            .map_err(|error| Poison {
                reason: "key",
                error,
            })?;
        let mut event = self.base(message);
        event.datacontenttype = Some(content_type.to_owned());
        event.data = Some(data);
        event
            .extensions
            .insert(PARTITION_KEY.to_owned(), ExtensionValue::String(key));
        Ok(event)
    }

    /// The dead letter of a message that could not become an event: the template's
    /// attributes, the payload as binary data (none if it is over the limit), and
    /// `dlqsource`, `dlqreason` and `dlqerror` saying why.
    pub fn dead_letter(&self, source_name: &str, message: &Message, poison: &Poison) -> CloudEvent {
        let mut event = self.base(message);
        if message.payload.len() <= self.max_payload_bytes {
            event.datacontenttype = Some("application/octet-stream".to_owned());
            event.data = Some(Data::Binary(message.payload.clone()));
        }
        for (name, value) in [
            ("dlqsource", source_name),
            ("dlqreason", poison.reason),
            ("dlqerror", poison.error.as_str()),
        ] {
            event
                .extensions
                .insert(name.to_owned(), ExtensionValue::String(value.to_owned()));
        }
        event
    }

    fn base(&self, message: &Message) -> CloudEvent {
        let id = match &message.id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => uuid::Uuid::now_v7().to_string(),
        };
        let mut event = CloudEvent::new(id, &self.source, &self.ty);
        if !message.subject.is_empty() {
            event.subject = Some(message.subject.clone());
        }
        event.time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .ok();
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(subject: &str, payload: &str) -> Message {
        Message {
            subject: subject.into(),
            headers: vec![("Device-Kind".into(), "probe".into())],
            payload: payload.to_owned().into(),
            id: None,
            redelivered: false,
            token: 0,
            position: None,
        }
    }

    fn template(key: &str, data: DataMode) -> EventTemplate {
        EventTemplate {
            ty: "com.example.t".into(),
            source: "mqtt://b:1883".into(),
            key: KeyTemplate::parse(key).unwrap(),
            data,
            max_payload_bytes: 64,
        }
    }

    #[test]
    fn a_key_template_takes_levels_headers_and_json_fields() {
        let m = message("sensors/s-1/temp", r#"{"site":{"id":"north"},"n":7}"#);
        let t = template(
            "{subject.1}@{data.site.id}/{header.device-kind}#{data.n}",
            DataMode::Json,
        );
        let event = t.event(&m, '/').unwrap();
        assert_eq!(event.partition_key(), Some("s-1@north/probe#7"));
        assert_eq!(event.subject.as_deref(), Some("sensors/s-1/temp"));
        assert_eq!(event.ty, "com.example.t");
        assert_eq!(event.datacontenttype.as_deref(), Some("application/json"));
        event.validate().unwrap();
        // The default key is the subject; an id the broker gave is the event's.
        let mut m = message("a/b", "\"x\"");
        m.id = Some("m-1".into());
        let event = EventTemplate {
            key: KeyTemplate::subject(),
            ..t
        }
        .event(&m, '/')
        .unwrap();
        assert_eq!(
            (event.partition_key(), event.id.as_str()),
            (Some("a/b"), "m-1")
        );
    }

    #[test]
    fn a_message_that_cannot_become_an_event_says_why() {
        let json = template("{data.id}", DataMode::Json);
        let poison = |t: &EventTemplate, m: &Message| t.event(m, '/').unwrap_err().reason;
        assert_eq!(poison(&json, &message("a", "{not json")), "not-json");
        assert_eq!(poison(&json, &message("a", r#"{"other":1}"#)), "key");
        assert_eq!(poison(&json, &message("a", &"x".repeat(65))), "too-large");
        assert_eq!(
            poison(
                &template("{subject.3}", DataMode::Binary),
                &message("a/b", "")
            ),
            "key"
        );
        let mut bad = message("a", "");
        bad.payload = Bytes::from_static(&[0xff, 0xfe]);
        assert_eq!(
            poison(&template("{subject}", DataMode::Text), &bad),
            "not-text"
        );
        // The dead letter keeps the payload when it fits, and says why.
        let m = message("a", "{not json");
        let p = json.event(&m, '/').unwrap_err();
        let dead = json.dead_letter("telemetry", &m, &p);
        dead.validate().unwrap();
        assert_eq!(dead.data_bytes().unwrap(), "{not json");
        assert_eq!(
            dead.extensions.get("dlqreason"),
            Some(&ExtensionValue::String("not-json".into()))
        );
        let big = message("a", &"x".repeat(65));
        let dead = json.dead_letter("telemetry", &big, &json.event(&big, '/').unwrap_err());
        assert!(dead.data.is_none());
    }

    #[test]
    fn a_bad_key_template_is_refused_with_the_placeholders_there_are() {
        for bad in [
            "{nope}",
            "{subject",
            "a}",
            "{subject.x}",
            "{data.}",
            "{header.}",
            "",
        ] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad:?} was taken");
        }
        let e = KeyTemplate::parse("{topic}").unwrap_err();
        assert!(e.contains("{subject.N}"), "{e}");
    }
}
