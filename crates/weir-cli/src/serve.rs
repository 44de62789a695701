//! `weir serve`: start a node and its HTTP API; stop gracefully on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use weir_engine::{Node, NodeOptions};
use weir_gateway::GatewayOptions;
use weir_manifest::Manifest;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The node's data directory: the embedded log (with `--backend embedded`), the
    /// key-value store, deployed functions and compiled code.
    #[arg(long, default_value = "./weir-data", env = "WEIR_DATA")]
    data: PathBuf,
    /// The log to run on: `embedded` (in `--data`), or a broker's URL (`nats://…`,
    /// `kafka://…`; not built yet).
    #[arg(long, default_value = "embedded", env = "WEIR_BACKEND")]
    backend: String,
    /// Address of the HTTP API (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7700", env = "WEIR_LISTEN")]
    listen: SocketAddr,
    /// The app manifest; defaults to ./weir.toml when it exists.
    #[arg(long, env = "WEIR_APP")]
    app: Option<PathBuf>,
    /// How often retention and compaction run, in seconds.
    #[arg(long, default_value_t = 30)]
    retention_check_secs: u64,
    /// Largest HTTP request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    #[command(flatten)]
    telemetry: crate::subscriber::TelemetryArgs,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = args.telemetry.init()?;
    // Before the log and the node start: their metric handles record into it.
    let metrics = weir_gateway::metrics::install()?;

    let manifest = match args.app.or_else(crate::default_app) {
        Some(path) => Some(Manifest::load(&path)?),
        None => None,
    };
    let log = crate::backend::open(&args.backend, &args.data).await?;
    tracing::info!(backend = log.backend(), "log opened");
    let mut options = NodeOptions::new(args.data.clone(), manifest, log);
    options.retention_interval = std::time::Duration::from_secs(args.retention_check_secs.max(1));
    let node = Node::start(options).await?;

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; pick another --listen address",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    // Scripts and tests wait for this line.
    println!(
        "weir listening on http://{addr} (data in {})",
        args.data.display()
    );

    let options = GatewayOptions {
        max_body_bytes: args.max_body_bytes,
        metrics: Some(metrics),
        ..Default::default()
    };
    let stopping = node.clone();
    let shutdown = async move {
        shutdown_signal().await;
        // Ends live subscriptions, so the HTTP server's graceful stop is not held up by them.
        stopping.begin_shutdown();
    };
    weir_gateway::serve(listener, node.clone(), options, shutdown).await?;
    tracing::info!("http stopped; finishing in-flight pipeline batches");
    node.shutdown().await;
    telemetry.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
