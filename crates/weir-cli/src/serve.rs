//! `weir serve`: start a node and its HTTP API; stop gracefully on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use weir_engine::{Node, NodeOptions};
use weir_gateway::{AuthSlot, AuthSource, GatewayOptions, TlsFiles};
use weir_manifest::Manifest;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The node's data directory: the embedded log (with `--backend embedded`), the
    /// key-value store, deployed functions and compiled code.
    #[arg(long, default_value = "./weir-data", env = "WEIR_DATA")]
    data: PathBuf,
    /// The log to run on: `embedded` (in `--data`), or a broker's URL (`nats://…`,
    /// `kafka://…`; not built yet). Default: the manifest's `[app] backend`, else
    /// `embedded`.
    #[arg(long, env = "WEIR_BACKEND")]
    backend: Option<String>,
    /// Address of the HTTP API (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:7700", env = "WEIR_LISTEN")]
    listen: SocketAddr,
    /// Where the other nodes of a fleet reach this one (`http://HOST:PORT`), on a shared
    /// backend; defaults to the listening address (the host's name when it listens on
    /// every interface).
    #[arg(long, env = "WEIR_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// The app manifest; defaults to ./weir.toml when it exists.
    #[arg(long, env = "WEIR_APP")]
    app: Option<PathBuf>,
    /// How often retention and compaction run, in seconds.
    #[arg(long, default_value_t = 30)]
    retention_check_secs: u64,
    /// Largest HTTP request body in bytes (default: [limits] max_body_bytes, 1 MiB).
    #[arg(long)]
    max_body_bytes: Option<usize>,
    #[command(flatten)]
    auth: AuthFlags,
    #[command(flatten)]
    telemetry: crate::subscriber::TelemetryArgs,
}

/// Auth and TLS without a manifest's `[auth]`/`[http]` (not both: the manifest wins
/// nothing, it is an error to give both).
#[derive(Debug, clap::Args)]
struct AuthFlags {
    /// Require a credential on every route but /healthz and /readyz: API keys made with
    /// `weir auth key create` (like an `[auth]` table with its defaults).
    #[arg(long, env = "WEIR_AUTH")]
    auth: bool,
    /// Accept HS256 JWTs signed with the secret in this environment variable (32+ bytes).
    #[arg(long, value_name = "VAR")]
    jwt_secret_env: Option<String>,
    /// Accept RS256/ES256 JWTs signed by this PEM public key.
    #[arg(long, value_name = "PEM")]
    jwt_public_key: Option<PathBuf>,
    /// Accept RS256/ES256 JWTs signed by a key of this JWKS (a URL or a file), refreshed.
    #[arg(long, value_name = "URL|FILE")]
    jwt_jwks: Option<String>,
    /// The `iss` JWTs must carry.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// The `aud` JWTs must carry.
    #[arg(long)]
    jwt_audience: Option<String>,
    /// Serve GET /metrics without a credential.
    #[arg(long)]
    metrics_open: bool,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
}

impl AuthFlags {
    /// The `[auth]` the flags describe, if any.
    fn spec(&self) -> Option<weir_manifest::AuthSpec> {
        let jwt = (self.jwt_secret_env.is_some()
            || self.jwt_public_key.is_some()
            || self.jwt_jwks.is_some())
        .then(|| weir_manifest::JwtSpec {
            algorithms: Vec::new(),
            secret: self
                .jwt_secret_env
                .clone()
                .map(weir_manifest::SecretSource::Env),
            public_key: self.jwt_public_key.clone(),
            jwks: self.jwt_jwks.clone(),
            jwks_refresh_secs: weir_manifest::JwtSpec::DEFAULT_JWKS_REFRESH_SECS,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway_secs: weir_manifest::JwtSpec::DEFAULT_LEEWAY_SECS,
            principal_claim: "sub".to_owned(),
            roles_claim: "roles".to_owned(),
        });
        (self.auth || jwt.is_some()).then(|| weir_manifest::AuthSpec {
            metrics_open: self.metrics_open,
            jwt,
            ..weir_manifest::AuthSpec::default()
        })
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let telemetry = args.telemetry.init()?;
    // Before the log and the node start: their metric handles record into it.
    let metrics = weir_gateway::metrics::install()?;

    let manifest = match args.app.or_else(crate::default_app) {
        Some(path) => Some(Manifest::load(&path)?),
        None => None,
    };
    let flag_auth = args.auth.spec();
    let (auth_spec, auth_source) = match (manifest.as_ref().and_then(|m| m.auth.clone()), flag_auth)
    {
        (Some(_), Some(_)) => anyhow::bail!(
            "auth is set twice: by [auth] in the manifest and by --auth/--jwt-* flags; use one"
        ),
        (Some(spec), None) => (Some(spec), AuthSource::Manifest),
        (None, Some(spec)) => (Some(spec), AuthSource::Flags),
        (None, None) => (None, AuthSource::Manifest),
    };
    let http = manifest
        .as_ref()
        .map(|m| m.http.clone())
        .unwrap_or_default();
    if args.auth.tls_cert.is_some() && http.tls_cert.is_some() {
        anyhow::bail!("TLS is set twice: by [http] in the manifest and by --tls-cert; use one");
    }
    let tls = match (
        &args.auth.tls_cert,
        &args.auth.tls_key,
        &http.tls_cert,
        &http.tls_key,
    ) {
        (Some(cert), Some(key), _, _) | (None, None, Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let limits = manifest.as_ref().map(|m| m.limits).unwrap_or_default();
    // Check what auth and TLS read before anything starts, so a bad key fails the start.
    let keys = std::sync::Arc::new(
        weir_auth::ApiKeyStore::open(&args.data).context("cannot open the node's API keys")?,
    );
    let authenticator = match &auth_spec {
        Some(spec) => Some(
            weir_auth::Authenticator::new(spec.clone(), keys.clone())
                .await
                .context("[auth] cannot be used")?,
        ),
        None => None,
    };
    if let Some(files) = &tls {
        weir_gateway::tls_config(files).map_err(|e| anyhow::anyhow!("TLS cannot be used: {e}"))?;
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; pick another --listen address",
                args.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The flag (or WEIR_BACKEND) wins over the manifest, so one weir.toml runs embedded
    // on a laptop and on a broker in a fleet.
    let backend = args
        .backend
        .clone()
        .or_else(|| manifest.as_ref().and_then(|m| m.app.backend.clone()))
        .unwrap_or_else(|| "embedded".to_owned());
    let (log, kv) = crate::backend::open(&backend, &args.data).await?;
    tracing::info!(backend = log.backend(), "log opened");
    let mut options = NodeOptions::new(args.data.clone(), manifest, log);
    options.kv = kv;
    options.retention_interval = std::time::Duration::from_secs(args.retention_check_secs.max(1));
    options.max_client_groups = limits.max_client_groups as usize;
    options.compiled_in_memory = limits.compiled_in_memory;
    options.compiled_on_disk_bytes = limits.compiled_on_disk_bytes;
    options.advertise_url = Some(args.advertise_url.clone().unwrap_or_else(|| {
        let host = if addr.ip().is_unspecified() {
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into())
        } else {
            addr.ip().to_string()
        };
        match addr {
            SocketAddr::V6(_) if !addr.ip().is_unspecified() => {
                format!("{scheme}://[{host}]:{}", addr.port())
            }
            _ => format!("{scheme}://{host}:{}", addr.port()),
        }
    }));
    let node = Node::start(options).await?;

    if authenticator.is_none() && !addr.ip().is_loopback() {
        let warning = format!(
            "weir is listening on {addr}, beyond this machine, WITHOUT AUTHENTICATION: anyone who can reach it can publish, read, deploy code and change settings. Add [auth] to weir.toml or pass --auth (see the README's Security section)."
        );
        tracing::warn!("{warning}");
        eprintln!("WARNING: {warning}");
    }
    // Scripts and tests wait for this line.
    println!(
        "weir listening on {scheme}://{addr} (data in {})",
        args.data.display()
    );

    let mut options = GatewayOptions::with_limits(limits);
    if let Some(max) = args.max_body_bytes {
        options.max_body_bytes = max;
    }
    options.auth = AuthSlot::new(authenticator, auth_source);
    options.keys = Some(keys);
    options.cors = http.cors.clone();
    options.tls = tls;
    options.metrics = Some(metrics);
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
