//! The API's wire types: what each route takes and answers, as JSON, with `From`
//! conversions from the node's types and an OpenAPI schema each (`utoipa`).
//!
//! **API Boundary:** wire types are not storage or engine types. A handler answers with a
//! type of this module, converted from what `weir_engine::Node` returned, so the log, the
//! engine and the API (and its OpenAPI document) evolve apart. The JSON of every answer is
//! pinned by `src/tests/wire.snap`; it changes only by extension.
//!
//! One module per area: `topics` (topics, publishing, reading), `groups`, `pipelines`
//! (pipelines, their re-drives and the node's status), `functions` (versions, deploys),
//! `kv`, `replay`, `auth` (API keys), `entities` and `schemas`.

pub mod auth;
pub mod entities;
pub mod functions;
pub mod groups;
pub mod jobs;
pub mod kv;
pub mod pipelines;
pub mod replay;
pub mod schemas;
pub mod status;
pub mod topics;
pub mod views;

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /healthz` and `GET /readyz` when all is well.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    #[schema(example = "ok")]
    pub status: &'static str,
}
