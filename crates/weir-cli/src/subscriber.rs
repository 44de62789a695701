//! The node's logs and traces: the `tracing` subscriber `weir serve` (and the pipeline
//! bench) installs. Logs go to stderr, as text or as JSON lines, filtered by `WEIR_LOG`
//! (default `info`); they leave out the trace spans (target `weir_engine::trace::TARGET`),
//! which an OpenTelemetry layer exports over OTLP/HTTP (protobuf) when an endpoint is
//! configured (`--otlp-endpoint`, or the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Without an endpoint no layer listens to the
//! trace spans, so their callsites stay disabled and cost next to nothing.

use std::time::Duration;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use weir_engine::trace::TARGET;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For people: one line per event, fields as `key=value`.
    #[default]
    Text,
    /// For log collectors: one JSON object per line (`timestamp`, `level`, `target`,
    /// `fields`, and the current `span` and `spans`).
    Json,
}

/// Logging and tracing flags of `weir serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// How log lines on stderr are written: `text`, or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "WEIR_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Export traces over OTLP/HTTP (protobuf) to this collector: a base URL such as
    /// `http://localhost:4318` (`/v1/traces` is added), or the full traces URL. Without
    /// it, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` turn the
    /// export on; `OTEL_SERVICE_NAME` names the service (default `weir`).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

/// What [`TelemetryArgs::init`] installed; [`Telemetry::shutdown`] flushes the traces.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryArgs {
    /// Install the global subscriber: logs to stderr, and the OTLP trace export when an
    /// endpoint is configured. Call once, inside the tokio runtime (the exporter sends on it).
    pub fn init(&self) -> anyhow::Result<Telemetry> {
        let provider = match self.traces_endpoint() {
            Some(endpoint) => Some(tracer_provider(endpoint)?),
            None => None,
        };
        let filter = log_filter();
        let stderr = std::io::stderr;
        let registry = tracing_subscriber::registry();
        // Without an exporter the filter is global, as before traces: callsites it turns
        // off (the trace spans among them) are never asked again. (An absent layer, an
        // `Option::None`, would make every callsite ask at every use.)
        let result = match (self.log_format, provider.as_ref()) {
            (LogFormat::Text, None) => registry
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_writer(stderr))
                .try_init(),
            (LogFormat::Json, None) => registry
                .with(filter)
                .with(tracing_subscriber::fmt::layer().json().with_writer(stderr))
                .try_init(),
            (LogFormat::Text, Some(provider)) => registry
                .with(trace_layer(provider))
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(stderr)
                        .with_filter(filter),
                )
                .try_init(),
            (LogFormat::Json, Some(provider)) => registry
                .with(trace_layer(provider))
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_writer(stderr)
                        .with_filter(filter),
                )
                .try_init(),
        };
        result.context("cannot install the logging and tracing subscriber")?;
        if provider.is_some() {
            tracing::info!("exporting traces over OTLP/HTTP");
        }
        Ok(Telemetry { provider })
    }

    /// Where traces go: `Some("")` leaves the URL to the standard environment variables.
    fn traces_endpoint(&self) -> Option<String> {
        if let Some(url) = self.otlp_endpoint.as_deref().filter(|u| !u.is_empty()) {
            let url = url.trim_end_matches('/');
            return Some(if url.ends_with("/v1/traces") {
                url.to_owned()
            } else {
                format!("{url}/v1/traces")
            });
        }
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .then(String::new)
    }
}

impl Telemetry {
    /// Export the spans still buffered and stop the exporter (at most its timeout).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // Blocking: it waits for the export thread, whose sends run on this runtime.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match stopped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: the trace export did not stop cleanly: {e}"),
            Err(e) => eprintln!("warning: the trace export did not stop cleanly: {e}"),
        }
    }
}

/// The layer that hands the trace spans (and only them) to OpenTelemetry.
fn trace_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("weir"))
        // Thread names and ids say nothing about an event's way through weir.
        .with_threads(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
}

/// The log filter: `WEIR_LOG` (default `info`), without the trace spans unless it names
/// their target.
fn log_filter() -> EnvFilter {
    let spec = std::env::var("WEIR_LOG").unwrap_or_default();
    let filter = EnvFilter::try_new(if spec.trim().is_empty() {
        "info"
    } else {
        &spec
    })
    .unwrap_or_else(|e| {
        eprintln!("warning: WEIR_LOG={spec:?} is not a log filter ({e}); logging at info");
        EnvFilter::new("info")
    });
    if spec.contains(TARGET) {
        return filter;
    }
    match format!("{TARGET}=off").parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// The tracer provider that batches spans and sends them to `endpoint` (empty: the URL
/// the standard environment variables give).
fn tracer_provider(endpoint: String) -> anyhow::Result<SdkTracerProvider> {
    let client = RuntimeHttpClient {
        inner: opentelemetry_http::hyper::HyperClient::with_default_connector(
            Duration::from_secs(10),
            None,
        ),
        runtime: tokio::runtime::Handle::try_current()
            .context("the trace exporter needs the async runtime")?,
    };
    let mut exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_http_client(client);
    if !endpoint.is_empty() {
        exporter = exporter.with_endpoint(endpoint);
    }
    let exporter = exporter
        .build()
        .context("cannot set up the OTLP trace exporter; check --otlp-endpoint and OTEL_EXPORTER_OTLP_* variables")?;
    let mut resource = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name"));
    if !named {
        resource = resource.with_service_name("weir");
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The hyper client of opentelemetry-http, run on the node's tokio runtime: the SDK's
/// batch processor exports from a thread of its own, outside any runtime, and hyper needs
/// one.
#[derive(Debug)]
struct RuntimeHttpClient {
    inner: opentelemetry_http::hyper::HyperClient,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for RuntimeHttpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.send_bytes(request).await })
            .await?
    }
}
