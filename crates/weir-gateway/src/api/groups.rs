//! Consumer groups: `/v1/groups/{group}` and `/v1/groups/{group}/reset`.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::{IntoParams, ToSchema};

use super::topics::Position;

/// A consumer group's position in one topic.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupStatus {
    pub group: String,
    pub topic: String,
    /// Live subscribers in the group now.
    pub members: usize,
    pub partitions: Vec<GroupPartition>,
}

impl From<weir_engine::GroupStatus> for GroupStatus {
    fn from(s: weir_engine::GroupStatus) -> GroupStatus {
        GroupStatus {
            group: s.group,
            topic: s.topic,
            members: s.members,
            partitions: s.partitions.into_iter().map(Into::into).collect(),
        }
    }
}

/// A consumer group's position in one partition.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupPartition {
    pub partition: u32,
    /// The next offset the group will read; null if it never committed here.
    pub committed: Option<u64>,
    pub end_offset: u64,
    pub lag: u64,
}

impl From<weir_engine::GroupPartitionStatus> for GroupPartition {
    fn from(p: weir_engine::GroupPartitionStatus) -> GroupPartition {
        GroupPartition {
            partition: p.partition,
            committed: p.committed,
            end_offset: p.end_offset,
            lag: p.lag,
        }
    }
}

/// `GET /v1/groups/{group}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupQuery {
    /// The topic whose positions to show.
    pub topic: String,
}

/// The body of `POST /v1/groups/{group}/reset`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetGroup {
    pub topic: String,
    /// `earliest`, `latest`, an offset, an RFC 3339 time or `time:MILLISECONDS`. Read as
    /// any JSON value, so a wrong one gets a problem that says what is wrong with it.
    #[schema(schema_with = reset_to)]
    pub to: serde_json::Value,
    /// Only these partitions of the topic (default: every one). On a fleet the node that
    /// takes the reset sends each member the partitions it runs this way.
    #[serde(default)]
    pub partitions: Option<Vec<u32>>,
}

/// A position by name or time (a string), or an offset.
fn reset_to() -> Schema {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::String))
                .examples(["earliest", "latest", "2026-11-22T09:00:00Z"]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(SchemaType::Type(Type::Integer))
                .minimum(Some(0)),
        )
        .build()
        .into()
}

/// The answer to a reset: the group's new position in each partition.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GroupReset {
    pub group: String,
    pub topic: String,
    pub offsets: Vec<Position>,
}
