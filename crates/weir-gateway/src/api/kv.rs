//! The key-value store: `/v1/kv/{ns}` and `/v1/kv/{ns}/{key}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One page of a namespace's keys, in key order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyPage {
    pub keys: Vec<String>,
    /// Pass it as `cursor` for the next page; null when this page is the last.
    pub cursor: Option<u64>,
}

impl From<weir_engine::KeyPage> for KeyPage {
    fn from(p: weir_engine::KeyPage) -> KeyPage {
        KeyPage {
            keys: p.keys,
            cursor: p.cursor,
        }
    }
}

/// `GET /v1/kv/{ns}`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Where the page starts: the `cursor` of the page before.
    pub cursor: Option<u64>,
    /// Most keys on the page (default 100, at most 1000).
    pub limit: Option<usize>,
}

/// What a bulk write did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Loaded {
    pub namespace: String,
    /// Keys written.
    pub written: usize,
}
