//! Event schemas: `/v1/schemas`.

use serde::Serialize;
use utoipa::ToSchema;

/// An event type's registered schemas.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SchemaType {
    /// The CloudEvents `type`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `none`, `backward`, `forward`, `full`, or one of them with `_transitive`.
    #[schema(example = "backward")]
    pub compatibility: &'static str,
    /// The registered versions, from 1.
    pub versions: Vec<u32>,
    /// The path of the latest version: what an event's `dataschema` names (on any host).
    #[schema(example = "/v1/schemas/SalesOrderCreated/2")]
    pub latest: Option<String>,
}

impl SchemaType {
    pub fn from_subject(ty: &str, subject: &weir_engine::SchemaSubject) -> SchemaType {
        SchemaType {
            ty: ty.to_owned(),
            compatibility: subject.compatibility.as_str(),
            versions: subject.versions().iter().map(|s| s.version()).collect(),
            latest: subject.latest().map(|s| s.route()),
        }
    }
}

/// `PUT /v1/schemas/{type}/{version}`: the version registered.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SchemaRegistered {
    #[serde(rename = "type")]
    pub ty: String,
    pub version: u32,
    /// False when the same schema already was this version (nothing changed).
    pub created: bool,
    /// The path an event's `dataschema` names this version by (on any host).
    #[schema(example = "/v1/schemas/SalesOrderCreated/1")]
    pub dataschema: String,
}
