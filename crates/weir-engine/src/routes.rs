//! HTTP routes (`[routes.NAME]`): the table the gateway matches request paths against,
//! and one request served by the route's function (a `wasi:http/incoming-handler`
//! component, see `weir_wasm::Function::serve_http`), whose `publish` appends to the log.
//!
//! A route with `topic` instead of a function is an inbound webhook: the request's
//! signature is checked (`verify`, `weir_mesh_webhook::inbound`), the body becomes one
//! event (its id the sender's delivery id, so a redelivery repeats it), and the answer
//! is sent only once the event is durable.
//!
//! The table is built from the manifest at start, and by a deploy before it changes
//! anything (a missing secret or a function of another world refuses it); a request
//! reads the table of the moment it arrives and the function's active version then.

use std::sync::{Arc, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use weir_cloudevents::{CloudEvent, Data};
use weir_manifest::{Manifest, RouteSpec};
use weir_mesh_webhook::inbound::{Scheme, Verifier};
use weir_wasm::{CallError, CallThreads, Function, InstancePool, Publisher, Receipt, RouteRequest};

use crate::{Error, Node, Result};

/// The app's routes, matched by path.
#[derive(Default)]
pub(crate) struct RouteTable {
    router: matchit::Router<usize>,
    routes: Vec<Arc<RouteMatch>>,
}

impl RouteTable {
    /// The table of `manifest`'s routes (validated: every pattern inserts), with the
    /// inbound webhooks' secrets read from this node's environment and files.
    fn of(manifest: Option<&Manifest>) -> Result<RouteTable> {
        let mut table = RouteTable::default();
        for (name, spec) in manifest.map(|m| &m.routes).into_iter().flatten() {
            let verifier = match spec.verify.as_deref() {
                None => None,
                Some(scheme) => Some(Arc::new(verifier(name, scheme, spec)?)),
            };
            match table.router.insert(spec.path.clone(), table.routes.len()) {
                Ok(()) => table.routes.push(Arc::new(RouteMatch {
                    name: Arc::from(name.as_str()),
                    spec: spec.clone(),
                    verifier,
                    instances: (spec.instance_reuse > 1).then(Arc::default),
                    threads: CallThreads::per_core(),
                })),
                Err(e) => {
                    tracing::error!(route = %name, path = %spec.path, "route not served: {e}")
                }
            }
        }
        Ok(table)
    }
}

fn verifier(name: &str, scheme: &str, spec: &RouteSpec) -> Result<Verifier> {
    let refused = |reason: String| Error::InvalidDeploy {
        reason: format!("route {name:?}: {reason}"),
    };
    let scheme = Scheme::parse(scheme)
        .ok_or_else(|| refused(format!("{scheme:?} is not a signature scheme")))?;
    let secrets = spec
        .secrets
        .iter()
        .map(crate::functions::secret_text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| refused(format!("its secret: {e}")))?;
    Verifier::new(scheme, &secrets).map_err(refused)
}

/// A route a request's path matched.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub name: Arc<str>,
    pub spec: RouteSpec,
    verifier: Option<Arc<Verifier>>,
    /// With `instance_reuse` above 1: the route's warm instances of its function's active
    /// version and settings (replaced when another activation, even of the same version
    /// with new grants or limits, serves the route). A deploy builds a new table, and
    /// with it new pools.
    instances: Option<Arc<std::sync::Mutex<Option<InstancePool>>>>,
    /// Where its requests' calls run: about one per core running guest code at once, a
    /// request waiting on the host not counted (see `weir_wasm::CallThreads`).
    threads: Arc<CallThreads>,
}

impl RouteMatch {
    /// The methods the route takes: its `methods`; every method for a function's route,
    /// `POST` for an inbound webhook's, when none are listed.
    pub fn methods(&self) -> Vec<String> {
        match (&self.spec.topic, self.spec.methods.is_empty()) {
            (Some(_), true) => vec!["POST".to_owned()],
            _ => self.spec.methods.clone(),
        }
    }

    /// Whether the route takes `method`.
    pub fn allows(&self, method: &str) -> bool {
        match (&self.spec.topic, self.spec.methods.is_empty()) {
            (Some(_), true) => method == "POST",
            (None, true) => true,
            _ => self.spec.methods.iter().any(|m| m == method),
        }
    }

    /// Whether requests become events of a topic (an inbound webhook) rather than calls.
    pub fn is_webhook(&self) -> bool {
        self.spec.topic.is_some()
    }

    /// The route's pool of warm instances of `function` (its active version), if the
    /// route reuses instances.
    fn pool(&self, function: &Function) -> Option<InstancePool> {
        let slot = self.instances.as_ref()?;
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(pool) if pool.function().is(function) => Some(pool.clone()),
            _ => {
                let pool = function.route_instances(self.spec.instance_reuse);
                *slot = Some(pool.clone());
                Some(pool)
            }
        }
    }
}

/// Why an inbound webhook's request was not taken; nothing was appended.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The signature did not verify (or was missing, or too old).
    #[error("the request's signature does not verify: {0}")]
    Signature(String),
    /// The body is not what its content type says (invalid JSON).
    #[error("the request body is invalid: {0}")]
    Body(String),
    /// The log did not take the event.
    #[error(transparent)]
    Log(#[from] Error),
}

/// Why a route's function gave no response; the message names the function, its version
/// and the cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RouteFailure {
    /// It ran past its deadline.
    #[error("{0}")]
    Deadline(String),
    /// It could not run now (no free instance slot, a dependency late): try again.
    #[error("{0}")]
    Unavailable(String),
    /// It failed: a trap, no response, a limit, a denied capability.
    #[error("{0}")]
    Failed(String),
}

impl From<CallError> for RouteFailure {
    fn from(error: CallError) -> RouteFailure {
        let message = error.to_string();
        match error {
            CallError::Deadline { .. } => RouteFailure::Deadline(message),
            CallError::Unavailable { .. }
            | CallError::Retryable { .. }
            | CallError::Outage { .. } => RouteFailure::Unavailable(message),
            _ => RouteFailure::Failed(message),
        }
    }
}

/// Where an inbound webhook's event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAccepted {
    /// A job route's: the job's id.
    pub job: Option<String>,
    pub id: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
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
    /// Rebuild the route table from the app as it runs now (at start).
    pub(crate) fn set_routes(&self) -> Result<()> {
        let manifest = self
            .manifest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let table = self.route_table(manifest.as_ref(), &[])?;
        self.swap_routes(table);
        Ok(())
    }

    /// Serve `table` from now on.
    pub(crate) fn swap_routes(&self, table: RouteTable) {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }

    /// The route table of `manifest`, checking that every route's function serves HTTP
    /// (as `compiled`, the versions a deploy is about to activate, or as active now) and
    /// reading the webhooks' secrets: a deploy builds it before it changes anything.
    pub(crate) fn route_table(
        &self,
        manifest: Option<&Manifest>,
        compiled: &[(&str, &weir_wasm::Function)],
    ) -> Result<RouteTable> {
        if let Some(manifest) = manifest {
            for (name, route) in &manifest.routes {
                let function = compiled
                    .iter()
                    .find(|(n, _)| *n == route.function)
                    .map(|(_, f)| (*f).clone())
                    .or_else(|| self.registry.active(&route.function).map(|(_, f)| f));
                if let Some(function) = function
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
        RouteTable::of(manifest)
    }

    /// The route whose pattern `path` matches, if any; never for weir's own paths (a
    /// catch-all pattern does not take a mistyped `/v1/...`).
    pub fn route(&self, path: &str) -> Option<Arc<RouteMatch>> {
        if RouteSpec::reserved(path) {
            return None;
        }
        let table = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let found = table.router.at(path).ok()?;
        Some(table.routes[*found.value].clone())
    }

    /// The route named `name`, as the node serves it now.
    pub fn route_spec(&self, name: &str) -> Option<RouteSpec> {
        let table = self
            .routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        table
            .routes
            .iter()
            .find(|r| &*r.name == name)
            .map(|r| r.spec.clone())
    }

    /// An inbound webhook's request: its signature checked, its body appended to the
    /// route's topic as one event; returns once the event is durable.
    pub async fn accept_webhook(
        &self,
        route: &RouteMatch,
        headers: &http::HeaderMap,
        body: Bytes,
    ) -> std::result::Result<WebhookAccepted, WebhookError> {
        let topic = route.spec.topic.clone().unwrap_or_default();
        let now = jiff::Timestamp::now();
        let (id, sent_type) = match &route.verifier {
            Some(verifier) => {
                let delivery = verifier
                    .verify(headers, &body, now.as_second())
                    .map_err(WebhookError::Signature)?;
                let ty = delivery.event.map(|event| match verifier.scheme() {
                    Scheme::GitHub => format!("com.github.{event}"),
                    Scheme::Stripe => format!("com.stripe.{event}"),
                    Scheme::StandardWebhooks => event,
                });
                (delivery.id, ty)
            }
            None => (None, None),
        };
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let data = if body.is_empty() {
            None
        } else {
            Some(
                Data::from_body_vec(content_type, body.to_vec())
                    .map_err(|e| WebhookError::Body(e.to_string()))?,
            )
        };
        // A job's id: fresh, so that knowing a sender's delivery id does not let anyone
        // read the job of a public route; its pipeline gives each output its input's
        // correlationid.
        let job = route.spec.job.then(|| uuid::Uuid::now_v7().to_string());
        let extensions = job
            .iter()
            .map(|job| {
                (
                    crate::routing::CORRELATION_ID.to_owned(),
                    weir_cloudevents::ExtensionValue::String(job.clone()),
                )
            })
            .collect();
        let event = CloudEvent {
            id: id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            source: format!("/routes/{}", route.name),
            ty: route
                .spec
                .ty
                .clone()
                .or(sent_type)
                .unwrap_or_else(|| "dev.weir.webhook".to_owned()),
            datacontenttype: data.as_ref().and(content_type).map(str::to_owned),
            dataschema: None,
            subject: None,
            time: Some(now.to_string()),
            extensions,
            data,
        };
        event
            .validate()
            .map_err(|e| WebhookError::Body(e.to_string()))?;
        let positions = self.publish(&topic, std::slice::from_ref(&event)).await?;
        let position = positions.first().ok_or_else(|| Error::InvalidDeploy {
            reason: "the log stored nothing".to_owned(),
        })?;
        metrics::counter!("weir_route_requests_total", "route" => route.name.to_string(), "status" => "202")
            .increment(1);
        Ok(WebhookAccepted {
            job,
            id: event.id,
            topic,
            partition: position.partition,
            offset: position.offset,
        })
    }

    /// Serve `request` (its body read) with `route`'s function on a fresh instance, or
    /// a warm one of the route's if it reuses instances.
    pub async fn serve_route(
        self: &Arc<Self>,
        route: &RouteMatch,
        request: http::Request<Bytes>,
        https: bool,
    ) -> std::result::Result<http::Response<Bytes>, RouteFailure> {
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
            threads: route.threads.clone(),
        };
        let started = Instant::now();
        let result = match route.pool(&function) {
            Some(pool) => pool.serve_http(request, context).await,
            None => function.serve_http(request, context).await,
        };
        let status = match &result {
            Ok(response) => response.status().as_u16().to_string(),
            Err(_) => "failed".to_owned(),
        };
        metrics::counter!("weir_route_requests_total", "route" => route.name.to_string(), "status" => status)
            .increment(1);
        metrics::histogram!("weir_route_request_seconds", "route" => route.name.to_string())
            .record(started.elapsed().as_secs_f64());
        Ok(result?)
    }
}
