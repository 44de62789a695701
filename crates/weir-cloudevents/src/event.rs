//! The CloudEvents 1.0 event model: context attributes, extensions and data.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::Data;

/// The only `specversion` weir reads or writes.
pub const SPEC_VERSION: &str = "1.0";

/// The attribute of the CloudEvents partitioning extension.
pub const PARTITION_KEY: &str = "partitionkey";

/// One CloudEvent. Fields are public; call [`CloudEvent::validate`] after building one by
/// hand.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    /// A non-empty URI-reference.
    pub source: String,
    /// The `type` attribute, non-empty.
    pub ty: String,
    pub datacontenttype: Option<String>,
    /// An absolute URI.
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    /// RFC 3339, kept as sent so it round-trips byte for byte.
    pub time: Option<String>,
    pub extensions: BTreeMap<String, ExtensionValue>,
    pub data: Option<Data>,
}

/// The value of an extension attribute. The JSON format keeps the type; the HTTP binary
/// mode carries only strings, so extensions decoded from headers are always `String`.
#[derive(Debug, Clone, PartialEq)]
pub enum ExtensionValue {
    String(String),
    Integer(i64),
    Boolean(bool),
}

impl CloudEvent {
    /// An event with the three required attributes besides `specversion`, and nothing else.
    pub fn new(id: impl Into<String>, source: impl Into<String>, ty: impl Into<String>) -> Self {
        CloudEvent {
            id: id.into(),
            source: source.into(),
            ty: ty.into(),
            datacontenttype: None,
            dataschema: None,
            subject: None,
            time: None,
            extensions: BTreeMap::new(),
            data: None,
        }
    }

    /// The `partitionkey` extension (CloudEvents partitioning extension), if it is a string.
    pub fn partition_key(&self) -> Option<&str> {
        match self.extensions.get(PARTITION_KEY) {
            Some(ExtensionValue::String(key)) => Some(key),
            _ => None,
        }
    }

    /// The data as it would appear as an HTTP body in binary mode: JSON serialized, text
    /// as UTF-8, binary as is.
    pub fn data_bytes(&self) -> Option<Bytes> {
        self.data.as_ref().map(|data| match data {
            Data::Json(json) => Bytes::copy_from_slice(json.as_bytes()),
            Data::Text(text) => Bytes::from(text.clone()),
            Data::Binary(bytes) => bytes.clone(),
        })
    }
}

/// The canonical string encoding of the CloudEvents type system.
impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionValue::String(s) => f.write_str(s),
            ExtensionValue::Integer(i) => write!(f, "{i}"),
            ExtensionValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<String> for ExtensionValue {
    fn from(value: String) -> Self {
        ExtensionValue::String(value)
    }
}

impl From<&str> for ExtensionValue {
    fn from(value: &str) -> Self {
        ExtensionValue::String(value.to_owned())
    }
}

impl From<i64> for ExtensionValue {
    fn from(value: i64) -> Self {
        ExtensionValue::Integer(value)
    }
}

impl From<bool> for ExtensionValue {
    fn from(value: bool) -> Self {
        ExtensionValue::Boolean(value)
    }
}
