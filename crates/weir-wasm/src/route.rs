//! HTTP routes: one request served by a component exporting `wasi:http/incoming-handler`
//! (the `weir:function/http-handler` world), and its `weir:function/events` import.
//!
//! # How a request runs
//! Every request gets a fresh instance (the pooling allocator makes one in microseconds),
//! as Spin and `wasmtime serve` do: nothing one caller's request leaves in the guest's
//! memory is seen by another's. The request body is read whole by the caller (under its
//! body limit) before the guest starts, and the response body is drained into memory while
//! the guest writes it (up to the function's `max_output_bytes`, then the guest's writes
//! fail), so a guest never waits on a slow client: its time is the function's deadline,
//! its host calls are capped by it, and a client that stops reading holds no instance.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use tokio::sync::oneshot;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use weir_cloudevents::CloudEvent;

use crate::convert;
use crate::error::CallError;
use crate::host::entity_wit::weir::function::types::Event as WitEvent;
use crate::host::http_wit::weir::function::events;
use crate::host::{Exports, Function, World};
use crate::state::CallState;

/// Where an HTTP handler's `publish` goes: the node's log.
pub trait Publisher: Send + Sync {
    /// Append `event` to `topic` and return once it is durable, or why not. Blocking (the
    /// guest waits); give up at `deadline`. An empty `id` or `source` is the publisher's
    /// to fill in; the event is not validated yet.
    fn publish(
        &self,
        route: &str,
        topic: &str,
        event: CloudEvent,
        deadline: Instant,
    ) -> Result<Receipt, String>;
}

/// Where a published event was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// What one request's instance knows about the route it serves.
#[derive(Clone)]
pub(crate) struct RouteCall {
    pub(crate) route: Arc<str>,
    pub(crate) publisher: Arc<dyn Publisher>,
}

/// One request for a route's handler.
#[derive(Clone)]
pub struct RouteRequest {
    /// The route's name (`[routes.NAME]`), for logs and the default `source` of events.
    pub route: Arc<str>,
    /// Where `publish` appends.
    pub publisher: Arc<dyn Publisher>,
    /// `http` or `https`, as the node serves.
    pub https: bool,
}

impl std::fmt::Debug for RouteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteRequest")
            .field("route", &self.route)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

type Head = Result<hyper::Response<wasmtime_wasi_http::p2::body::HyperOutgoingBody>, ErrorCode>;

impl Function {
    /// Serve `request` (its body already read) on a fresh instance of this handler. The
    /// answer is the guest's response with its body read whole, or why the call failed;
    /// a response the guest set before failing is not used.
    pub async fn serve_http(
        &self,
        request: http::Request<Bytes>,
        context: RouteRequest,
    ) -> Result<http::Response<Bytes>, CallError> {
        if self.world() != World::Http {
            return Err(self.not_world(World::Http));
        }
        let (respond, mut head) = oneshot::channel::<Head>();
        let this = self.clone();
        let mut call =
            tokio::task::spawn_blocking(move || this.handle_on_fresh(request, respond, context));
        // The response head comes while the guest runs (it may still write the body), or
        // the call ends first; then what it set, if anything, is in the channel.
        let mut ended = None;
        let head = tokio::select! {
            biased;
            head = &mut head => head.ok(),
            joined = &mut call => {
                ended = Some(self.joined(joined));
                head.try_recv().ok()
            }
        };
        let finish = |ended: Option<Result<(), CallError>>, call| async move {
            match ended {
                Some(result) => result,
                None => self.joined(call.await),
            }
        };
        let response = match head {
            // Dropped unset: the call's result says why.
            None => {
                finish(ended, call).await?;
                return Err(self.invalid("the handler returned without setting a response"));
            }
            Some(Err(code)) => {
                finish(ended, call).await?;
                return Err(self.invalid(format!("the handler answered with an error: {code:?}")));
            }
            Some(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let limit = self.limits().max_output_bytes;
        // Drained while the guest writes; past the limit the body is dropped, so the
        // guest's further writes fail instead of waiting.
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map(|b| b.to_bytes());
        finish(ended, call).await?;
        match body {
            Ok(body) => Ok(http::Response::from_parts(parts, body)),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(self.invalid(format!(
                "the response body is over the function's limits.max_output_bytes ({limit} bytes)"
            ))),
            Err(e) => Err(self.invalid(format!("the response body failed: {e}"))),
        }
    }

    fn joined(
        &self,
        joined: Result<Result<(), CallError>, tokio::task::JoinError>,
    ) -> Result<(), CallError> {
        joined.map_err(|e| CallError::Unavailable {
            function: self.name().to_owned(),
            version: self.version().to_owned(),
            reason: format!("the call's thread failed: {e}"),
        })?
    }

    /// The blocking part: a fresh instance, the call, and the instance dropped (which
    /// ends the response body if the guest left it open).
    fn handle_on_fresh(
        &self,
        request: http::Request<Bytes>,
        respond: oneshot::Sender<Head>,
        context: RouteRequest,
    ) -> Result<(), CallError> {
        let mut instance = self.instantiate()?;
        instance.store.data_mut().route = Some(RouteCall {
            route: context.route,
            publisher: context.publisher,
        });
        self.arm(&mut instance.store);
        let Exports::Http(handler) = &instance.exports else {
            return Err(self.not_world(World::Http));
        };
        let scheme = if context.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let request = request.map(|body| {
            Full::new(body)
                .map_err(|never: Infallible| -> wasmtime_wasi_http::Error { match never {} })
        });
        let mut http = instance.store.data_mut().http();
        let resources = http
            .new_incoming_request(scheme, request)
            .and_then(|req| Ok((req, http.new_response_outparam(respond)?)));
        let (req, out) =
            resources.map_err(|e| self.invalid(format!("cannot pass the request: {e:#}")))?;
        let result =
            handler
                .wasi_http_incoming_handler()
                .call_handle(&mut instance.store, req, out);
        instance.calls += 1;
        let breach = instance.store.data_mut().take_breach();
        let late = instance.store.data_mut().take_late_store();
        let outage = instance.store.data_mut().take_outage();
        self.outage_or(
            outage,
            match (result, breach) {
                (Err(e), breach) => Err(self.classify(e, breach, late, false)),
                (Ok(()), Some(breach)) => Err(self.breach_error(breach)),
                (Ok(()), None) => Ok(()),
            },
        )
    }
}

impl events::Host for CallState {
    fn publish(&mut self, topic: String, event: WitEvent) -> Result<events::Receipt, String> {
        if !self.grants().publish.contains(&topic) {
            self.deny(format!("publishing to topic {topic:?}"));
            return Err(format!(
                "access denied: capabilities.publish does not grant topic {topic:?}"
            ));
        }
        let Some(route) = self.route.clone() else {
            return Err("publishing is for HTTP routes' handlers".to_owned());
        };
        let event = match convert::from_entity_wit(event) {
            Ok(event) => event,
            Err(reason) => return Err(format!("invalid event: {reason}")),
        };
        let deadline = self.deadline();
        let started = Instant::now();
        let result = route
            .publisher
            .publish(&route.route, &topic, event, deadline);
        if Instant::now() > deadline {
            self.note_late(format!(
                "publishing to topic {topic:?} took {:?}",
                started.elapsed()
            ));
        }
        result.map(|r| events::Receipt {
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
        })
    }
}
