//! `GET /v1/asyncapi`: the AsyncAPI 3.0 document of what this node runs.

use std::sync::PoisonError;

use serde_json::Value;

use crate::{Node, Result};

impl Node {
    /// The AsyncAPI 3.0 document of the app this node runs now: its manifest (the last
    /// deploy's), every topic of its log, and the schemas registered now. `server` is the
    /// node's HTTP address as its clients reach it; `security`, what its front door takes.
    pub async fn asyncapi(
        &self,
        server: &weir_asyncapi::Server,
        security: Option<weir_asyncapi::Security>,
    ) -> Result<Value> {
        let topics: Vec<String> = self.topics().await?.into_iter().map(|t| t.name).collect();
        let manifest = self
            .manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let registry = self.schemas();
        let server = server.clone();
        // Every schema version inlined: off the async workers.
        crate::blocking(move || {
            Ok(weir_asyncapi::document(&weir_asyncapi::App {
                manifest: manifest.as_ref(),
                topics: &topics,
                registry: &registry,
                server: &server,
                security,
            }))
        })
        .await
    }
}
