//! Prometheus metrics: the process's one recorder ([`install`]), `GET /metrics` (rendered
//! by `metrics-exporter-prometheus`, never formatted by hand), and the layer that counts
//! and times every HTTP request by route template, method and status.
//!
//! The recorder is global (the `metrics` facade allows one per process): every crate
//! records through the `metrics` macros into it, and handles made before it is installed
//! record nothing. So `weir serve` installs it before it opens the log and starts the
//! node, and the crates make their handles (per pipeline, topic, partition, function) when
//! they start.
//!
//! **Architecture Invariant:** labels are bounded. A request is labelled by the template
//! of the route it matched (`/v1/topics/{topic}/events`), never by its raw path; one that
//! matched no route is `route="unmatched"`. Every other label is a name the app declares
//! (topic, group, pipeline, function, key-value namespace), a partition number, or one of
//! a fixed set of words (op, kind, outcome).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{AppState, PROBLEM_CONTENT_TYPE, Problem};

pub use metrics_exporter_prometheus::PrometheusHandle as MetricsHandle;

/// The content type of the Prometheus text format `GET /metrics` answers with.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const HTTP_REQUESTS: &str = "weir_http_requests_total";
const HTTP_DURATION: &str = "weir_http_request_duration_seconds";

/// Bucket bounds of every `*_seconds` histogram: 50 µs to 10 s, so that an fsync, a
/// function call and an HTTP request all land in buckets that tell them apart.
const SECONDS_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds of every `*_bytes` histogram: 64 KiB to 4 GiB (a function's memory).
const BYTES_BUCKETS: &[f64] = &[
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
    4_294_967_296.0,
];
/// How often histograms' recent samples are folded into their buckets between scrapes,
/// so that memory stays bounded when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the recorder could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    #[error("cannot install the Prometheus recorder: {0}")]
    Build(#[from] metrics_exporter_prometheus::BuildError),
    #[error(
        "cannot install the Prometheus recorder: another metrics recorder is installed in this process"
    )]
    OtherRecorder,
}

/// Install the process's Prometheus recorder and return the handle `GET /metrics` renders
/// (give it to [`crate::GatewayOptions::metrics`]). Idempotent: the first call installs
/// it, later calls (tests in one process) return the same handle. Call it before the log
/// and the node start, so their handles record into it.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);
    let mut installed = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = &*installed {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| MetricsError::OtherRecorder)?;
    describe();
    let upkeep = handle.clone();
    // A plain thread: the recorder is installed before (and outlives) any runtime.
    let _ = std::thread::Builder::new()
        .name("weir-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    *installed = Some(handle.clone());
    Ok(handle)
}

/// The gateway's own families; the engine, the function host and the embedded log
/// describe theirs when they start.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "time from a request's arrival to its response head, by route template, method and status (a stream's duration is to its first byte)"
    );
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "get_metrics",
    tag = "node",
    summary = "Prometheus metrics",
    description = "The node's metrics in the Prometheus text exposition format (0.0.4): HTTP requests, events in and out per topic, consumer lag, pipeline outcomes, function calls, log latencies, key-value operations. `404` when the node runs without metrics.",
    responses(
        (status = 200, description = "the metrics", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "metrics are off on this node", body = Problem, content_type = PROBLEM_CONTENT_TYPE),
    )
)]
pub(crate) async fn scrape(State(state): State<AppState>) -> Response {
    let Some(handle) = &state.options.metrics else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            "metrics-off",
            "Metrics are off",
            "this node runs without a metrics recorder; `weir serve` installs one",
        )
        .into_response();
    };
    // Lag is a gauge of positions the engine reads on demand: bring it up to date first.
    state.node.record_lag().await;
    let handle = handle.clone();
    let body = tokio::task::spawn_blocking(move || handle.render())
        .await
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

/// The handles of one (route, method, status), made once.
#[derive(Clone)]
struct RequestHandles {
    requests: Counter,
    duration: Histogram,
}

/// Per route template, per (method, status): the handles, so a request allocates no
/// label strings once its combination has been seen (the combinations are bounded).
type HandleCache = RwLock<HashMap<String, HashMap<(&'static str, u16), RequestHandles>>>;

fn handles(route: &str, method: &'static str, status: u16) -> RequestHandles {
    static CACHE: OnceLock<HandleCache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(route)
        .and_then(|by| by.get(&(method, status)))
    {
        return found.clone();
    }
    let labels = [
        ("route", route.to_owned()),
        ("method", method.to_owned()),
        ("status", status.to_string()),
    ];
    let made = RequestHandles {
        requests: counter!(HTTP_REQUESTS, &labels),
        duration: histogram!(HTTP_DURATION, &labels),
    };
    cache
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(route.to_owned())
        .or_default()
        .insert((method, status), made.clone());
    made
}

/// A method as a label: the standard ones by name, anything else as `other` (a client
/// picks the method, so it must not make new series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The layer (`axum::middleware::from_fn`) that counts and times every request.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    // Set by the router for a matched route; a layer on the router runs after routing.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let handles = handles(route, method, response.status().as_u16());
    handles.requests.increment(1);
    handles.duration.record(started.elapsed());
    response
}

#[cfg(test)]
mod tests;
