//! `weir bench http`: the HTTP front door of one node, with the load generator in the
//! bench process — `/healthz` (the HTTP stack's own rate), single-event structured
//! publishes and batches of 1,000 to a topic with fsync `always` and durable acks, the
//! embedded log's own batched append rate for records of the same size, publishes
//! again with API-key, HS256 and ES256 authentication on, and a trivial HTTP route's
//! function (`GET /hello` of `guest-http-items`, a fresh instance per request, and the
//! same route with `instance_reuse = 1000`) against `/healthz` in the same round.
//!
//! The clients are hyper's HTTP/1.1 client on this process's tokio runtime, one
//! keep-alive connection per task. Nothing is recorded by a metrics recorder and no
//! logging subscriber is installed, so the figures are the HTTP path's own (`weir bench
//! pipeline` measures what the recorder and the logging cost).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use weir_engine::{Node, NodeOptions};
use weir_gateway::{AuthSlot, AuthSource, GatewayOptions};
use weir_log_embedded::{Log, LogOptions, Record};
use weir_manifest::Manifest;

use super::{percentile, print_result, round2, temp_dir};

#[derive(Debug, clap::Args)]
pub struct HttpBenchArgs {
    /// Seconds each figure is measured for.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Keep-alive connections of the `/healthz` and single-publish figures.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Keep-alive connections of the batch figure (and producers of the log's own rate).
    #[arg(long, default_value_t = 4)]
    batch_connections: usize,
    /// Events per batch request (and per append of the log's own rate).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rounds of every figure, interleaved; each figure is the median of its rounds, so
    /// a slow moment of a shared machine weighs on one round of one figure, not a ratio.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Where to put the temporary data directory (removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The HTTP route's function (a `wasi:http/incoming-handler` component answering
    /// `GET /hello`); default: the repository's `guest-http-items`.
    #[arg(long)]
    http_function: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

const TOPIC: &str = "bench";
const ROLE: &str = "bench-publisher";
const PRINCIPAL: &str = "bench";
const STRUCTURED: &str = "application/cloudevents+json";
const BATCH: &str = "application/cloudevents-batch+json";

/// A P-256 key pair made for this bench only (with `openssl genpkey`), to sign the ES256
/// tokens of `publish_requests_per_sec_jwt_es256`. It guards nothing: the bench's node
/// trusts it for the length of one run, in a temporary directory.
const BENCH_ES256_PRIVATE_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7ga6m+pSjeqfOLwz
63cIZG1FPDzQ+Me9J9Z3dPRCmPihRANCAAR6+hXLrwsNyh8GqJ4JROrcYtIi3KzN
vjywAZL1PvUsarHNU76elYX3sKjnAZ9pZ4rv51LZNLpnAqBwV3lr31T5
-----END PRIVATE KEY-----
";
const BENCH_ES256_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEevoVy68LDcofBqieCUTq3GLSItys
zb48sAGS9T71LGqxzVO+npWF97Co5wGfaWeK7+dS2TS6ZwKgcFd5a99U+Q==
-----END PUBLIC KEY-----
";

/// A ~200-byte structured CloudEvent with JSON data, numbered `n`.
pub(super) fn event(n: u64) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"bench-{n:08}","source":"/bench/http","type":"order.created","datacontenttype":"application/json","data":{{"order":"ORD-{n:08}","customer":"CUST-0042","amount":129.95,"currency":"EUR"}}}}"#
    )
}

fn batch_body(first: u64, events: usize) -> String {
    let mut body = String::with_capacity(events * 220 + 2);
    body.push('[');
    for i in 0..events as u64 {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event(first + i));
    }
    body.push(']');
    body
}

/// The default of `--http-function`.
const HTTP_FUNCTION: &str = "guests/target/wasm32-wasip2/release/guest_http_items.wasm";

/// The bench app: one topic, fsync always, the route `GET /hello` served by
/// `http_function` (and `GET /reused/hello`, the same with `instance_reuse`), and `[auth]`
/// if given.
fn manifest(dir: &Path, http_function: &Path, auth: &str) -> anyhow::Result<Manifest> {
    let text = format!(
        "[topics.{TOPIC}]\npartitions = 1\nfsync = \"always\"\n\
         [functions.hello]\nsource = {:?}\n\
         [routes.hello]\npath = \"/hello\"\nmethods = [\"GET\"]\nfunction = \"hello\"\n\
         [routes.hello-reused]\npath = \"/reused/hello\"\nmethods = [\"GET\"]\n\
         function = \"hello\"\ninstance_reuse = {REUSE}\n{auth}",
        http_function.display().to_string()
    );
    Ok(Manifest::from_toml_str(&text, dir)?)
}

/// `[auth]` with a role that may publish to the topic, given to the bench's principal.
fn auth_toml(jwt: &str) -> String {
    format!(
        "[auth]\napi_keys = true\n[auth.roles.{ROLE}]\npublish = [\"{TOPIC}\"]\n[auth.principals]\n{PRINCIPAL} = [\"{ROLE}\"]\n{jwt}"
    )
}

/// A gateway over `node` on 127.0.0.1:0, stopped by [`Gateway::stop`].
pub(super) struct Gateway {
    pub(super) addr: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Gateway {
    pub(super) async fn start(
        node: Arc<Node>,
        mut options: GatewayOptions,
    ) -> anyhow::Result<Gateway> {
        options.shutdown_grace = Duration::from_secs(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(weir_gateway::serve(listener, node, options, async move {
            let _ = stopped.await;
        }));
        Ok(Gateway { addr, stop, served })
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.served.await??;
        Ok(())
    }
}

/// What one figure asks: the method, path, content type, credential and body of each
/// request (`n` numbers the request across every connection).
#[derive(Clone)]
pub(super) struct Load {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    token: Option<Arc<str>>,
    body: Arc<dyn Fn(u64) -> Bytes + Send + Sync>,
    expect: StatusCode,
}

pub(super) struct Measured {
    pub(super) requests_per_sec: f64,
    pub(super) p99_us: u64,
}

/// One round of every figure.
struct Round {
    health: Measured,
    function: Measured,
    reused: Measured,
    single: Measured,
    batch_events_per_sec: f64,
    batch_p99_us: u64,
    log_rate: f64,
    apikey: f64,
    hs256: f64,
    es256: f64,
}

/// `connections` keep-alive connections, each sending `load` one request after another
/// for `seconds`, counted from when every connection is open.
pub(super) async fn drive(
    addr: std::net::SocketAddr,
    load: Load,
    connections: usize,
    seconds: f64,
) -> anyhow::Result<Measured> {
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Every connection is open before the clock starts (and a refused one fails the
    // bench here, before any task waits for the others).
    let (go, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the bench's gateway on {addr}"))?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let (load, counter, mut go) = (load.clone(), counter.clone(), go.subscribe());
        tasks.push(tokio::spawn(async move {
            let deadline = go.recv().await?;
            let mut latencies_us = Vec::new();
            let authorization = load.token.as_ref().map(|t| format!("Bearer {t}"));
            while Instant::now() < deadline {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut request = Request::builder()
                    .method(load.method.clone())
                    .uri(load.path)
                    .header(hyper::header::HOST, "127.0.0.1");
                if let Some(content_type) = load.content_type {
                    request = request.header(hyper::header::CONTENT_TYPE, content_type);
                }
                if let Some(authorization) = &authorization {
                    request = request.header(hyper::header::AUTHORIZATION, authorization);
                }
                let request = request.body(Full::new((load.body)(n)))?;
                let started = Instant::now();
                sender.ready().await?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                latencies_us.push(started.elapsed().as_micros() as u64);
                anyhow::ensure!(
                    status == load.expect,
                    "{} {} answered {status}, not {}: {}",
                    load.method,
                    load.path,
                    load.expect,
                    String::from_utf8_lossy(&body)
                );
            }
            drop(sender);
            let _ = connection.await;
            anyhow::Ok(latencies_us)
        }));
    }
    let started = Instant::now();
    go.send(started + Duration::from_secs_f64(seconds))?;
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(Measured {
        requests_per_sec: latencies.len() as f64 / secs,
        p99_us: percentile(&latencies, 0.99),
    })
}

/// `instance_reuse` of the bench's `/reused/hello` route.
const REUSE: u32 = 1000;

fn hello(path: &'static str) -> Load {
    Load {
        method: Method::GET,
        path,
        content_type: None,
        token: None,
        body: Arc::new(|_| Bytes::new()),
        expect: StatusCode::OK,
    }
}

fn healthz() -> Load {
    Load {
        method: Method::GET,
        path: "/healthz",
        content_type: None,
        token: None,
        body: Arc::new(|_| Bytes::new()),
        expect: StatusCode::OK,
    }
}

pub(super) fn publish(token: Option<String>) -> Load {
    Load {
        method: Method::POST,
        path: "/v1/topics/bench/events",
        content_type: Some(STRUCTURED),
        token: token.map(Arc::from),
        body: Arc::new(|n| Bytes::from(event(n))),
        expect: StatusCode::ACCEPTED,
    }
}

fn publish_batches(batch: usize) -> Load {
    Load {
        method: Method::POST,
        path: "/v1/topics/bench/events",
        content_type: Some(BATCH),
        token: None,
        body: Arc::new(move |n| Bytes::from(batch_body(n * batch as u64, batch))),
        expect: StatusCode::ACCEPTED,
    }
}

/// A bearer JWT for the bench's principal, valid for an hour.
fn jwt(
    algorithm: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
) -> anyhow::Result<String> {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let claims = json!({ "sub": PRINCIPAL, "roles": [ROLE], "exp": exp });
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(algorithm),
        &claims,
        key,
    )?)
}

/// The publish figure with `auth` (an `[auth]` table) in front of it.
async fn publish_with_auth(
    node: &Arc<Node>,
    data: &Path,
    auth: &str,
    token: String,
    args: &HttpBenchArgs,
) -> anyhow::Result<Measured> {
    let spec = manifest(data, &http_function(args), auth)?
        .auth
        .context("the bench's [auth] table did not parse as one")?;
    let keys = Arc::new(weir_auth::ApiKeyStore::open(data)?);
    let authenticator = weir_auth::Authenticator::new(spec, keys.clone()).await?;
    let options = GatewayOptions {
        auth: AuthSlot::new(Some(authenticator), AuthSource::Manifest),
        keys: Some(keys),
        ..GatewayOptions::default()
    };
    let gateway = Gateway::start(node.clone(), options).await?;
    let measured = drive(
        gateway.addr,
        publish(Some(token)),
        args.connections,
        args.seconds,
    )
    .await;
    gateway.stop().await?;
    measured
}

/// The embedded log's own rate for batches of `args.batch` records of `record_bytes`,
/// appended by `args.batch_connections` producers for `args.seconds`.
async fn log_batch_events_per_sec(
    dir: &Path,
    record_bytes: usize,
    args: &HttpBenchArgs,
) -> anyhow::Result<f64> {
    let log = Log::open(dir, LogOptions::default())?;
    let config = weir_log_embedded::TopicConfig {
        fsync: weir_log_embedded::FsyncPolicy::Always,
        ..weir_log_embedded::TopicConfig::with_partitions(1)
    };
    log.create_topic(TOPIC, &config)?;
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let mut producers = Vec::new();
    for _ in 0..args.batch_connections {
        let (log, value, batch) = (log.clone(), value.clone(), args.batch);
        producers.push(tokio::spawn(async move {
            let mut appended = 0u64;
            while Instant::now() < deadline {
                let records = (0..batch).map(|_| Record::new(value.clone())).collect();
                log.append_to(TOPIC, 0, records).await?;
                appended += batch as u64;
            }
            anyhow::Ok(appended)
        }));
    }
    let mut appended = 0;
    for p in producers {
        appended += p.await??;
    }
    Ok(appended as f64 / started.elapsed().as_secs_f64())
}

pub async fn run(args: HttpBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.seconds > 0.0
            && args.connections > 0
            && args.batch_connections > 0
            && args.batch > 0
            && args.rounds > 0,
        "--seconds, --connections, --batch-connections, --batch and --rounds must be positive"
    );
    let dir = temp_dir(&args.dir, "weir-bench-http-")?;
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data)?;

    let log = crate::backend::open("embedded", &data).await?.0;
    let function = http_function(&args);
    anyhow::ensure!(
        function.exists(),
        "{} is missing: build the guests with `cargo xtask build-guests` or pass --http-function",
        function.display()
    );
    let node = Node::start(NodeOptions::new(
        &data,
        Some(manifest(&data, &function, "")?),
        log,
    ))
    .await?;

    // The credentials, made once: an API key, an HS256 token, an ES256 token.
    let keys = weir_auth::ApiKeyStore::open(&data)?;
    let (_, api_key) = keys.create(PRINCIPAL, vec![ROLE.to_owned()], None)?;
    drop(keys);
    let secret_file = dir.path().join("jwt-secret");
    let secret = b"weir-bench-http-hs256-secret-of-more-than-32-bytes";
    std::fs::write(&secret_file, secret)?;
    let hs256_auth = auth_toml(&format!(
        "[auth.jwt]\nsecret = {{ file = {:?} }}\n",
        secret_file.display().to_string()
    ));
    let hs256_token = jwt(
        jsonwebtoken::Algorithm::HS256,
        &jsonwebtoken::EncodingKey::from_secret(secret)?,
    )?;
    let public_key = dir.path().join("es256-public.pem");
    std::fs::write(&public_key, BENCH_ES256_PUBLIC_PEM)?;
    let es256_auth = auth_toml(&format!(
        "[auth.jwt]\npublic_key = {:?}\n",
        public_key.display().to_string()
    ));
    let es256_token = jwt(
        jsonwebtoken::Algorithm::ES256,
        &jsonwebtoken::EncodingKey::from_ec_pem(BENCH_ES256_PRIVATE_PEM.as_bytes())?,
    )?;

    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 0..args.rounds {
        // No auth: /healthz, single publishes, batches.
        let gateway = Gateway::start(node.clone(), GatewayOptions::default()).await?;
        let health = drive(gateway.addr, healthz(), args.connections, args.seconds).await?;
        let function = drive(
            gateway.addr,
            hello("/hello"),
            args.connections,
            args.seconds,
        )
        .await?;
        let reused = drive(
            gateway.addr,
            hello("/reused/hello"),
            args.connections,
            args.seconds,
        )
        .await?;
        let single = drive(gateway.addr, publish(None), args.connections, args.seconds).await?;
        let batches = drive(
            gateway.addr,
            publish_batches(args.batch),
            args.batch_connections,
            args.seconds,
        )
        .await?;
        gateway.stop().await?;
        let apikey =
            publish_with_auth(&node, &data, &auth_toml(""), api_key.clone(), &args).await?;
        let hs256 =
            publish_with_auth(&node, &data, &hs256_auth, hs256_token.clone(), &args).await?;
        let es256 =
            publish_with_auth(&node, &data, &es256_auth, es256_token.clone(), &args).await?;
        let log_dir = dir.path().join(format!("log-only-{round}"));
        let log_rate = log_batch_events_per_sec(&log_dir, event(0).len(), &args).await?;
        rounds.push(Round {
            health,
            function,
            reused,
            single,
            batch_events_per_sec: batches.requests_per_sec * args.batch as f64,
            batch_p99_us: batches.p99_us,
            log_rate,
            apikey: apikey.requests_per_sec,
            hs256: hs256.requests_per_sec,
            es256: es256.requests_per_sec,
        });
    }
    node.shutdown().await;
    drop(node);

    let median = |figure: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(figure).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let health = Measured {
        requests_per_sec: median(|r| r.health.requests_per_sec),
        p99_us: median(|r| r.health.p99_us as f64) as u64,
    };
    let function = Measured {
        requests_per_sec: median(|r| r.function.requests_per_sec),
        p99_us: median(|r| r.function.p99_us as f64) as u64,
    };
    let reused = Measured {
        requests_per_sec: median(|r| r.reused.requests_per_sec),
        p99_us: median(|r| r.reused.p99_us as f64) as u64,
    };
    let single = Measured {
        requests_per_sec: median(|r| r.single.requests_per_sec),
        p99_us: median(|r| r.single.p99_us as f64) as u64,
    };
    let batch_events_per_sec = median(|r| r.batch_events_per_sec);
    let batch_p99_us = median(|r| r.batch_p99_us as f64) as u64;
    let log_rate = median(|r| r.log_rate);
    let (apikey, hs256, es256) = (
        median(|r| r.apikey),
        median(|r| r.hs256),
        median(|r| r.es256),
    );
    let publish_rps = single.requests_per_sec;
    let result = json!({
        "bench": "http",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "connections": args.connections,
        "batch_connections": args.batch_connections,
        "batch": args.batch,
        "event_bytes": event(0).len(),
        "fsync": "always",
        "metrics_recorder": false,
        "healthz_requests_per_sec": health.requests_per_sec.round(),
        "healthz_p99_us": health.p99_us,
        "http_function_requests_per_sec": function.requests_per_sec.round(),
        "http_function_p99_us": function.p99_us,
        "http_function_to_healthz": round2(function.requests_per_sec / health.requests_per_sec),
        "http_function_instances": "fresh per request",
        "http_function_reused_requests_per_sec": reused.requests_per_sec.round(),
        "http_function_reused_p99_us": reused.p99_us,
        "http_function_reused_to_healthz": round2(reused.requests_per_sec / health.requests_per_sec),
        "http_function_reused_instances": format!("instance_reuse = {REUSE}"),
        "publish_requests_per_sec": publish_rps.round(),
        "publish_p99_us": single.p99_us,
        "batch_events_per_sec": batch_events_per_sec.round(),
        "batch_p99_us": batch_p99_us,
        "log_batch_events_per_sec": log_rate.round(),
        "publish_requests_per_sec_apikey": apikey.round(),
        "publish_requests_per_sec_jwt_hs256": hs256.round(),
        "publish_requests_per_sec_jwt_es256": es256.round(),
        "publish_to_healthz": round2(publish_rps / health.requests_per_sec),
        "batch_to_log": round2(batch_events_per_sec / log_rate),
        "apikey_cost": round2(1.0 - apikey / publish_rps),
        "jwt_hs256_cost": round2(1.0 - hs256 / publish_rps),
        "jwt_es256_cost": round2(1.0 - es256 / publish_rps),
    });
    print_result(&result, args.json)
}

fn http_function(args: &HttpBenchArgs) -> PathBuf {
    args.http_function
        .clone()
        .unwrap_or_else(|| super::repo_path(HTTP_FUNCTION))
}
