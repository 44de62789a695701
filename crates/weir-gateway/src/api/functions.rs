//! Function versions and deploys: `/v1/functions`, `/v1/functions/{name}`,
//! `/v1/functions/{name}/rollback` and `/v1/deploy`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A function: its active version, the versions kept for rollback and its history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Function {
    pub name: String,
    /// The active version (the first 12 hex digits of the component's SHA-256).
    pub version: String,
    /// Versions that can be rolled back to, newest first.
    pub versions_kept: Vec<String>,
    /// Activations, oldest first.
    pub history: Vec<Deployment>,
}

impl From<weir_engine::FunctionInfo> for Function {
    fn from(f: weir_engine::FunctionInfo) -> Function {
        Function {
            name: f.name,
            version: f.version,
            versions_kept: f.versions_kept,
            history: f.history.into_iter().map(Into::into).collect(),
        }
    }
}

/// One activation of a version.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deployment {
    pub version: String,
    /// When it became active, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub origin: Origin,
}

impl From<weir_engine::Deployment> for Deployment {
    fn from(d: weir_engine::Deployment) -> Deployment {
        Deployment {
            version: d.version,
            at_ms: d.at_ms,
            origin: d.origin.into(),
        }
    }
}

/// What activated a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The manifest's `source` at a start.
    Manifest,
    /// `PUT /v1/functions/{name}` or `weir deploy`.
    Deploy,
    /// `weir rollback`.
    Rollback,
}

impl From<weir_engine::Origin> for Origin {
    fn from(o: weir_engine::Origin) -> Origin {
        match o {
            weir_engine::Origin::Manifest => Origin::Manifest,
            weir_engine::Origin::Deploy => Origin::Deploy,
            weir_engine::Origin::Rollback => Origin::Rollback,
        }
    }
}

/// The outcome of a deploy or rollback of one function.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deployed {
    pub name: String,
    pub version: String,
    /// The version active before; null for a function that had none.
    pub previous: Option<String>,
}

impl From<weir_engine::Deployed> for Deployed {
    fn from(d: weir_engine::Deployed) -> Deployed {
        Deployed {
            name: d.name,
            version: d.version,
            previous: d.previous,
        }
    }
}

/// The body of `POST /v1/functions/{name}/rollback` (it may also be empty).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// A kept version; by default the version active before the current one.
    pub version: Option<String>,
}

/// The body of `POST /v1/deploy`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployApp {
    /// The text of `weir.toml`.
    pub manifest: String,
    /// Each declared function's component, base64; a function left out keeps its
    /// component.
    #[serde(default)]
    pub functions: BTreeMap<String, String>,
    /// The JSON Schema documents `[schemas]` names, by event type, version 1 first
    /// (`weir deploy` sends them). Left out, the node reads the files itself, relative to
    /// its own `weir.toml`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub schemas: Option<BTreeMap<String, Vec<serde_json::Value>>>,
}

/// What a deploy of the app did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppDeployed {
    pub app: String,
    /// Every function of the app; `previous` is null for a new one, and equals `version`
    /// for one whose component did not change.
    pub functions: Vec<FunctionChange>,
    /// Topics created or whose settings were updated.
    pub topics: Vec<String>,
    /// Pipelines started.
    pub pipelines: Vec<String>,
}

impl From<weir_engine::AppDeployed> for AppDeployed {
    fn from(d: weir_engine::AppDeployed) -> AppDeployed {
        AppDeployed {
            app: d.app,
            functions: d.functions.into_iter().map(Into::into).collect(),
            topics: d.topics,
            pipelines: d.pipelines,
        }
    }
}

/// One function of a deployed app.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FunctionChange {
    pub name: String,
    pub previous: Option<String>,
    pub version: String,
    /// Whether it was reloaded (a new component or new settings).
    pub reloaded: bool,
}

impl From<weir_engine::FunctionChange> for FunctionChange {
    fn from(f: weir_engine::FunctionChange) -> FunctionChange {
        FunctionChange {
            name: f.name,
            previous: f.previous,
            version: f.version,
            reloaded: f.reloaded,
        }
    }
}
