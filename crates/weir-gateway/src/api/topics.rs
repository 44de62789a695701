//! Topics, publishing and reading: `/v1/topics`, `/v1/topics/{topic}`,
//! `/v1/topics/{topic}/events` and `/v1/topics/{topic}/stream`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::{RefOr, schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use weir_engine::{Durability, RecordPosition, TopicInfo, TopicSpec};

/// A topic's settings and where each of its partitions starts and ends.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Topic {
    pub name: String,
    pub partitions: u32,
    /// Per partition, the next offset to be assigned.
    pub end_offsets: Vec<u64>,
    /// Per partition, the first offset still stored; nothing below it can be read.
    pub start_offsets: Vec<u64>,
    pub config: TopicConfig,
}

impl From<TopicInfo> for Topic {
    fn from(info: TopicInfo) -> Topic {
        Topic {
            name: info.name,
            partitions: info.partitions,
            end_offsets: info.end_offsets,
            start_offsets: info.start_offsets,
            config: info.config.into(),
        }
    }
}

/// A topic's settings. Every key is always present (`null` where unset), beside the log
/// backend's own settings (`segment_bytes` for the embedded log).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopicConfig {
    pub partitions: u32,
    pub fsync: Fsync,
    /// Events older than this may be deleted.
    pub retention_ms: Option<u64>,
    /// Per partition: the oldest events may be deleted while the rest take at least this
    /// many bytes.
    pub retention_bytes: Option<u64>,
    /// Only the latest event per key is kept.
    pub compaction: bool,
    /// The backend's own settings, by name.
    #[serde(flatten)]
    #[schema(additional_properties = true)]
    pub backend: BTreeMap<String, serde_json::Value>,
}

impl From<TopicSpec> for TopicConfig {
    fn from(spec: TopicSpec) -> TopicConfig {
        TopicConfig {
            partitions: spec.partitions,
            fsync: spec.durability.into(),
            retention_ms: spec.retention_ms,
            retention_bytes: spec.retention_bytes,
            compaction: spec.compaction,
            backend: spec.backend,
        }
    }
}

/// When an acknowledged append is safe from a crash: `"always"` (after fsync),
/// `{"interval": {"ms": N}}` (stable storage within N ms) or `"never"` (when the system
/// likes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Always,
    Interval { ms: u64 },
    Never,
}

impl From<Durability> for Fsync {
    fn from(durability: Durability) -> Fsync {
        match durability {
            Durability::Always => Fsync::Always,
            Durability::Interval { ms } => Fsync::Interval { ms },
            Durability::Never => Fsync::Never,
        }
    }
}

impl From<Fsync> for Durability {
    fn from(fsync: Fsync) -> Durability {
        match fsync {
            Fsync::Always => Durability::Always,
            Fsync::Interval { ms } => Durability::Interval { ms },
            Fsync::Never => Durability::Never,
        }
    }
}

/// The body of `PUT /v1/topics/{topic}`: every key is optional; an existing topic keeps
/// what the body does not say.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTopic {
    #[schema(minimum = 1, maximum = 1024)]
    pub partitions: Option<u32>,
    pub fsync: Option<Fsync>,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// The embedded log's own setting: the size at which a partition rolls to a new
    /// segment file (64 KiB to 1 GiB).
    pub segment_bytes: Option<u64>,
    pub compaction: Option<bool>,
    /// Lowering an existing topic's durability must be asked for by name.
    #[serde(default)]
    pub lower_durability: bool,
}

/// Where an event was stored.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, ToSchema)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

impl From<RecordPosition> for Position {
    fn from(p: RecordPosition) -> Position {
        Position {
            partition: p.partition,
            offset: p.offset,
        }
    }
}

/// The answer to a publish: where each event was stored, in request order, once durable.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Published {
    pub topic: String,
    pub offsets: Vec<Position>,
}

/// `GET /v1/topics/{topic}/events`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// The partition to read (default 0).
    #[serde(default)]
    pub partition: u32,
    /// The first offset to read (default 0).
    #[serde(default)]
    pub offset: u64,
    /// Most events to return (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Most bytes to return (default and at most 4 MiB); the first event comes whatever
    /// its size.
    pub max_bytes: Option<usize>,
    /// `true`: an event whose `dataschema` names an older version of its type comes
    /// upcast to the latest (by the app's upcasters), with `upcastfrom`; as written
    /// otherwise, and when it cannot be.
    #[serde(default)]
    pub upcast: bool,
}

/// `GET /v1/topics/{topic}/stream`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Where to start in each partition: `earliest`, `latest` (default), an offset, an
    /// RFC 3339 time or `time:MILLISECONDS`.
    pub from: Option<String>,
    /// Consume as a member of this consumer group (its members share the partitions).
    pub group: Option<String>,
    /// `true`: events come upcast to their type's latest schema version, as in reads.
    #[serde(default)]
    pub upcast: bool,
}

/// A CloudEvent in the JSON event format (CloudEvents 1.0): the required attributes,
/// the optional ones, `data` (JSON) or `data_base64` (binary), and extension attributes
/// (strings, integers or booleans) as further members. The gateway only describes it;
/// `weir-cloudevents` decodes and encodes it.
#[derive(Debug)]
pub struct CloudEvent;

impl PartialSchema for CloudEvent {
    fn schema() -> RefOr<Schema> {
        let string = |description: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .description(Some(description))
        };
        let extension = OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(SchemaType::Type(Type::String)))
            .item(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)))
            .item(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Boolean)));
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .description(Some(
                "A CloudEvents 1.0 event in the JSON event format; extension attributes are further members",
            ))
            .property("specversion", string("always \"1.0\""))
            .property("id", string("unique per source"))
            .property("source", string("a URI reference"))
            .property("type", string("the kind of event"))
            .property("subject", string("what the event is about; the key of its partition unless `partitionkey` is set"))
            .property("time", string("RFC 3339").format(Some(schema::SchemaFormat::KnownFormat(schema::KnownFormat::DateTime))))
            .property("datacontenttype", string("the media type of `data`"))
            .property("dataschema", string("a URI"))
            .property("data", schema::Object::new())
            .property("data_base64", string("binary data, base64"))
            .required("specversion")
            .required("id")
            .required("source")
            .required("type")
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(
                extension.build().into(),
            ))))
            .examples([serde_json::json!({
                "specversion": "1.0",
                "id": "SO-1001-created",
                "source": "erp://sales",
                "type": "SalesOrderCreated",
                "subject": "SO-1001",
                "data": {"SalesOrderNumber": "SO-1001"}
            })])
            .into()
    }
}

impl ToSchema for CloudEvent {}

/// A CloudEvents batch: a JSON array of events.
#[derive(Debug)]
pub struct CloudEventBatch;

impl PartialSchema for CloudEventBatch {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "CloudEvent",
            )))
            .description(Some("A CloudEvents batch (JSON batch format)"))
            .into()
    }
}

impl ToSchema for CloudEventBatch {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push(("CloudEvent".to_owned(), CloudEvent::schema()));
    }
}
