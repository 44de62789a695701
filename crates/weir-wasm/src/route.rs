//! HTTP routes: one request served by a component exporting `wasi:http/incoming-handler`
//! (the `weir:function/http-handler` world), and its `weir:function/events` import.
//!
//! # How a request runs
//! By default every request gets a fresh instance (the pooling allocator makes one in
//! microseconds), as Spin and `wasmtime serve` do: nothing one caller's request leaves in
//! the guest's memory is seen by another's. A route that allows it (`instance_reuse`, as
//! `wasmtime serve`'s `--max-instance-reuse-count`) serves requests from its own
//! [`InstancePool`] instead: an instance serves up to that many requests, one at a time,
//! and is dropped after any call that did not return normally (a trap, the deadline, a
//! denied capability, a limit breached) or that left a host resource behind (its response
//! body still open, say); it is given back by the call's thread as the call returns. A
//! handler that returned normally but answered badly (no response, an error code, a body
//! past the output limit) keeps its instance. The request body is read whole by the
//! caller (under its body limit) before the guest starts, and the response body is drained
//! into memory while the guest writes it (up to the function's `max_output_bytes`, then the
//! guest's writes fail), so a guest never waits on a slow client: its time is the
//! function's deadline, its host calls are capped by it, and a client that stops reading
//! holds no instance.
//!
//! A request's call runs on its route's [`CallThreads`] (compensating, one per core): the
//! requests of a busy route follow each other on the same threads, about one per core
//! running guest code, with no hand-off to a fresh blocking-pool thread per request; a
//! request whose guest waits on the host (an outbound request, `publish`, a key-value
//! write) stands aside while it waits, so the route's other requests run.

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
use crate::host::{Exports, Function, Instance, World};
use crate::pool::InstancePool;
use crate::state::CallState;
use crate::threads::CallThreads;

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
    /// Where the call runs: the route's call threads (see [`CallThreads`]).
    pub threads: Arc<CallThreads>,
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

/// How a request's call ended. By then its instance is back in its route's pool or
/// dropped, so whatever of the response body it held is ended.
type Ended = Result<(), CallError>;

impl Function {
    /// Serve `request` (its body already read) on a fresh instance of this handler. The
    /// answer is the guest's response with its body read whole, or why the call failed;
    /// a response the guest set before failing is not used.
    pub async fn serve_http(
        &self,
        request: http::Request<Bytes>,
        context: RouteRequest,
    ) -> Result<http::Response<Bytes>, CallError> {
        self.serve_http_from(None, request, context).await
    }

    /// [`Function::serve_http`] on an instance of `pool` (or a fresh one), given back to
    /// it by the call's thread as the call returns, when it succeeded and holds no host
    /// resource (so its response body has ended). A guest that left its body open is
    /// dropped there, which ends the body.
    async fn serve_http_from(
        &self,
        pool: Option<&InstancePool>,
        request: http::Request<Bytes>,
        context: RouteRequest,
    ) -> Result<http::Response<Bytes>, CallError> {
        if self.world() != World::Http {
            return Err(self.not_world(World::Http));
        }
        let (respond, mut head) = oneshot::channel::<Head>();
        let (end, mut call) = oneshot::channel::<Ended>();
        let this = self.clone();
        let reusing = pool.cloned();
        let threads = context.threads.clone();
        threads.submit(Box::new(move || {
            // A request whose caller went away before its turn is not served.
            if end.is_closed() {
                return;
            }
            let warm = reusing.as_ref().and_then(InstancePool::take_idle);
            let mut instance = match warm {
                Some(instance) => instance,
                None => match this.instantiate() {
                    Ok(instance) => instance,
                    Err(e) => {
                        let _ = end.send(Err(e));
                        return;
                    }
                },
            };
            let result = this.handle_on(&mut instance, request, respond, context);
            // Kept only if it may serve again and holds no host resource past its request
            // (an open response body, an outbound request still in flight, a bucket kept
            // in a static); otherwise it is dropped here, off the async runtime. Either
            // way before the answer goes, so the next request this thread takes finds it
            // idle (given back by the answer's receiver, it was often still on its way, and
            // the next request made a fresh one).
            match reusing {
                Some(pool) if result.is_ok() && !instance.store.data().holds_resources() => {
                    pool.give_back(instance);
                }
                _ => drop(instance),
            }
            let _ = end.send(result);
        }));
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
        let response = match head {
            // Dropped unset: the call's result says why.
            None => {
                self.finished(ended, call).await?;
                return Err(self.invalid("the handler returned without setting a response"));
            }
            Some(Err(code)) => {
                self.finished(ended, call).await?;
                return Err(self.invalid(format!("the handler answered with an error: {code:?}")));
            }
            Some(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        let limit = self.limits().max_output_bytes;
        // Drained while the guest writes; past the limit the body is dropped, so the
        // guest's further writes fail instead of waiting.
        // (The collecting future owns the body's receiver: it is dropped as soon as it is
        // done, so a guest still writing past the limit fails at once.)
        let mut collect = Box::pin(Limited::new(body, limit).collect());
        let first = match ended {
            Some(ended) => Err(ended),
            None => tokio::select! {
                biased;
                body = &mut collect => Ok(body),
                joined = &mut call => Err(self.joined(joined)),
            },
        };
        let (body, result) = match first {
            Ok(body) => {
                drop(collect);
                (body, self.joined(call.await))
            }
            Err(result) => match Self::body_after(collect).await {
                Some(body) => (body, result),
                None => {
                    result?;
                    return Err(self.invalid("the handler returned with its response body open"));
                }
            },
        };
        result?;
        let body = match body {
            Ok(body) => body.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(self.invalid(format!(
                    "the response body is over the function's limits.max_output_bytes \
                     ({limit} bytes)"
                )));
            }
            Err(e) => return Err(self.invalid(format!("the response body failed: {e}"))),
        };
        Ok(http::Response::from_parts(parts, body))
    }

    /// The response body of a call that has returned, whose instance was given back
    /// (holding no resource) or dropped, either of which ended the body; `None` if it
    /// had not ended anyway (a safety net: nothing could end it later).
    async fn body_after<F: std::future::Future + Unpin>(mut collect: F) -> Option<F::Output> {
        // One poll, outside the task's cooperative budget: a finished body is all in
        // its channel, and must not look pending for want of budget.
        let now = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut collect).poll(cx))
        }))
        .await;
        match now {
            std::task::Poll::Ready(body) => Some(body),
            std::task::Poll::Pending => None,
        }
    }

    /// How the call ended, waiting for it if it has not yet.
    async fn finished(&self, ended: Option<Ended>, call: oneshot::Receiver<Ended>) -> Ended {
        match ended {
            Some(ended) => ended,
            None => self.joined(call.await),
        }
    }

    fn joined(&self, joined: Result<Ended, oneshot::error::RecvError>) -> Ended {
        joined.unwrap_or_else(|_| {
            let e = CallError::Unavailable {
                function: self.name().to_owned(),
                version: self.version().to_owned(),
                reason: "the call's thread failed (it panicked, or never started as the node \
                         stopped)"
                    .to_owned(),
            };
            Err(e)
        })
    }

    /// The blocking part: the call on `instance`.
    fn handle_on(
        &self,
        instance: &mut Instance,
        request: http::Request<Bytes>,
        respond: oneshot::Sender<Head>,
        context: RouteRequest,
    ) -> Result<(), CallError> {
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
        self.settle(&mut instance.store);
        let breach = instance.store.data_mut().take_breach();
        let late = instance.store.data_mut().take_late();
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

impl InstancePool {
    /// [`Function::serve_http`] on a warm instance of this route's pool: each instance
    /// serves up to the pool's `reuse` requests, one at a time, and is dropped after any
    /// call that did not return normally or that left its response body open. A request
    /// is never tried again on another instance.
    pub async fn serve_http(
        &self,
        request: http::Request<Bytes>,
        context: RouteRequest,
    ) -> Result<http::Response<Bytes>, CallError> {
        self.function()
            .serve_http_from(Some(self), request, context)
            .await
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
        // The log's answer is a wait of the call's thread (see `threads`).
        let result = crate::threads::waiting(|| {
            route
                .publisher
                .publish(&route.route, &topic, event, deadline)
        });
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
