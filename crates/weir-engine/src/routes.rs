//! HTTP routes (`[routes.NAME]`): the table the gateway matches request paths against,
//! and one request served by the route's function (a `wasi:http/incoming-handler`
//! component, see `weir_wasm::Function::serve_http`), whose `publish` appends to the log.
//!
//! The table is rebuilt from the manifest at start and on every deploy; a request reads
//! the table of the moment it arrives and the function's active version then.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use weir_cloudevents::CloudEvent;
use weir_manifest::{Manifest, RouteSpec};
use weir_wasm::{CallError, Publisher, Receipt, RouteRequest};

use crate::{Error, Node, Result};

/// The app's routes, matched by path.
#[derive(Default)]
pub(crate) struct RouteTable {
    router: matchit::Router<usize>,
    routes: Vec<(Arc<str>, RouteSpec)>,
}

impl RouteTable {
    /// The table of `manifest`'s routes (validated: every pattern inserts).
    fn of(manifest: Option<&Manifest>) -> RouteTable {
        let mut table = RouteTable::default();
        for (name, spec) in manifest.map(|m| &m.routes).into_iter().flatten() {
            match table.router.insert(spec.path.clone(), table.routes.len()) {
                Ok(()) => table.routes.push((Arc::from(name.as_str()), spec.clone())),
                Err(e) => {
                    tracing::error!(route = %name, path = %spec.path, "route not served: {e}")
                }
            }
        }
        table
    }
}

/// A route a request's path matched.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub name: Arc<str>,
    pub spec: RouteSpec,
}

impl RouteMatch {
    /// Whether the route takes `method`.
    pub fn allows(&self, method: &str) -> bool {
        self.spec.methods.is_empty() || self.spec.methods.iter().any(|m| m == method)
    }
}

/// `publish` of a route's handler: the node's log, waited on from the call's thread.
struct NodePublisher {
    node: Weak<Node>,
    runtime: tokio::runtime::Handle,
}

impl Publisher for NodePublisher {
    fn publish(
        &self,
        route: &str,
        topic: &str,
        mut event: CloudEvent,
        deadline: Instant,
    ) -> std::result::Result<Receipt, String> {
        let node = self.node.upgrade().ok_or("the node is stopping")?;
        if event.id.is_empty() {
            event.id = uuid::Uuid::now_v7().to_string();
        }
        if event.source.is_empty() {
            event.source = format!("/routes/{route}");
        }
        if event.time.is_none() {
            event.time = Some(jiff::Timestamp::now().to_string());
        }
        event
            .validate()
            .map_err(|e| format!("invalid event: {e}"))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        let stored = self.runtime.block_on(async {
            tokio::time::timeout(wait, node.publish(topic, std::slice::from_ref(&event))).await
        });
        match stored {
            Err(_) => Err(format!(
                "the log did not confirm the event within the call's deadline (it may still be stored; its id is {:?})",
                event.id
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(positions)) => {
                let position = positions.first().ok_or("the log stored nothing")?;
                Ok(Receipt {
                    topic: topic.to_owned(),
                    partition: position.partition,
                    offset: position.offset,
                })
            }
        }
    }
}

impl Node {
    /// Rebuild the route table from the app as it runs now, checking that every route's
    /// function serves HTTP.
    pub(crate) fn set_routes(&self) -> Result<()> {
        let manifest = self
            .manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(manifest) = &manifest {
            for (name, route) in &manifest.routes {
                if let Some((_, function)) = self.registry.active(&route.function)
                    && function.world() != weir_wasm::World::Http
                {
                    return Err(Error::WrongWorld {
                        function: route.function.clone(),
                        world: function.world().to_string(),
                        wanted: format!(
                            "route {name:?}'s function (the http-handler world: an export of wasi:http/incoming-handler)"
                        ),
                    });
                }
            }
        }
        let table = Arc::new(RouteTable::of(manifest.as_ref()));
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = table;
        Ok(())
    }

    /// The route whose pattern `path` matches, if any.
    pub fn route(&self, path: &str) -> Option<RouteMatch> {
        let table = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let found = table.router.at(path).ok()?;
        let (name, spec) = &table.routes[*found.value];
        Some(RouteMatch {
            name: name.clone(),
            spec: spec.clone(),
        })
    }

    /// Serve `request` (its body read) with `route`'s function on a fresh instance.
    pub async fn serve_route(
        self: &Arc<Self>,
        route: &RouteMatch,
        request: http::Request<Bytes>,
        https: bool,
    ) -> std::result::Result<http::Response<Bytes>, CallError> {
        let function = self
            .registry
            .active(&route.spec.function)
            .map(|(_, f)| f)
            .ok_or_else(|| CallError::Unavailable {
                function: route.spec.function.clone(),
                version: String::new(),
                reason: "the function is not loaded on this node".to_owned(),
            })?;
        let context = RouteRequest {
            route: route.name.clone(),
            publisher: Arc::new(NodePublisher {
                node: Arc::downgrade(self),
                runtime: tokio::runtime::Handle::current(),
            }),
            https,
        };
        let started = Instant::now();
        let result = function.serve_http(request, context).await;
        let status = match &result {
            Ok(response) => response.status().as_u16().to_string(),
            Err(_) => "failed".to_owned(),
        };
        metrics::counter!("weir_route_requests_total", "route" => route.name.to_string(), "status" => status)
            .increment(1);
        metrics::histogram!("weir_route_request_seconds", "route" => route.name.to_string())
            .record(started.elapsed().as_secs_f64());
        result
    }
}
