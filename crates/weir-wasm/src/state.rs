//! What one instance's store holds: its WASI context (empty), the capabilities the
//! manifest granted, and the record of a limit breach or a denied capability during the
//! current call. The host functions of the granted interfaces live here too.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::circuits::{Answer, Outage};
use crate::egress::{Destination, Exceptions, Pool, Resolver};
use crate::host::wit;
use crate::keyvalue::KeyValueStore;

/// A capability grant for outbound HTTP: requests match on host (exactly, or any
/// subdomain for `*.domain`), and on scheme and port where given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGrant {
    /// `http` or `https`; none allows both.
    pub scheme: Option<String>,
    /// Lower case; `*.example.com` allows every subdomain of example.com.
    pub host: String,
    /// None allows any port.
    pub port: Option<u16>,
}

impl HttpGrant {
    pub(crate) fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.to_ascii_lowercase();
        match self.host.strip_prefix("*.") {
            // A wildcard names DNS names only: `*.0.0.1` does not match `127.0.0.1`.
            Some(domain) => {
                crate::address::literal(&host).is_none()
                    && host
                        .strip_suffix(domain)
                        .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1)
            }
            None => host == self.host,
        }
    }
}

/// What a function is granted beyond logging and its own config.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Key-value namespaces it may read and write.
    pub keyvalue: BTreeSet<String>,
    /// Where it may send HTTP requests.
    pub http: Vec<HttpGrant>,
    /// The longest wait for one HTTP response (capped by what is left of the deadline).
    pub http_timeout: Duration,
    /// Topics an HTTP route's handler may publish to (`weir:function/events`).
    pub publish: BTreeSet<String>,
}

/// Why the current call must fail whatever the guest returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Breach {
    Memory,
    Denied(String),
}

/// A key-value operation that takes this long is the store's trouble (a healthy one
/// answers in well under a millisecond); see [`CallState::on_store`].
const SLOW_STORE: Duration = Duration::from_millis(10);

/// The data of one instance's store.
pub(crate) struct CallState {
    /// Made when the guest first calls a WASI function: most calls of most guests make
    /// none, and building a context costs allocations and seeding random generators.
    wasi: Option<Box<WasiCtx>>,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: HttpHooks,
    pub(crate) config: Arc<WasiConfigVariables>,
    kv: Option<Arc<dyn KeyValueStore>>,
    /// What the current call may use: `granted`, or nothing (an entity's `apply`).
    grants: Arc<Grants>,
    /// What the manifest grants the function.
    granted: Arc<Grants>,
    /// No namespace and no host: what `apply` may use.
    nothing: Arc<Grants>,
    memory_limit: usize,
    /// Bytes of all the instance's memories together.
    memory_total: usize,
    pub(crate) breach: Option<Breach>,
    /// What of the host held this call past its deadline (a key-value operation or a
    /// publish that returned late, the function's CPU quota): a deadline the call then
    /// runs past is the host's doing, not the function's, and worth trying again.
    late: Option<String>,
    pub(crate) function: Arc<str>,
    pub(crate) version: Arc<str>,
    /// The route and the log an HTTP handler's `publish` goes to; none outside routes.
    pub(crate) route: Option<crate::route::RouteCall>,
    /// Where the running call's CPU clock was last charged to the function's quota; none
    /// without a quota or between calls.
    pub(crate) cpu_mark: Option<crate::quota::CpuMark>,
}

impl CallState {
    pub(crate) fn new(
        function: Arc<str>,
        version: Arc<str>,
        config: Arc<WasiConfigVariables>,
        grants: Arc<Grants>,
        kv: Option<Arc<dyn KeyValueStore>>,
        (resolver, http_pool): (Arc<dyn Resolver>, Arc<Pool>),
        memory_limit: usize,
    ) -> CallState {
        CallState {
            wasi: None,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: HttpHooks {
                grants: grants.clone(),
                resolver,
                http_pool,
                function: function.clone(),
                deadline: Instant::now(),
                denied: Arc::default(),
                outage: Arc::default(),
            },
            config,
            kv,
            nothing: Arc::new(Grants {
                http_timeout: grants.http_timeout,
                ..Grants::default()
            }),
            granted: grants.clone(),
            grants,
            memory_limit,
            memory_total: 0,
            breach: None,
            late: None,
            function,
            version,
            route: None,
            cpu_mark: None,
        }
    }

    /// What the current call may use.
    pub(crate) fn grants(&self) -> &Grants {
        &self.grants
    }

    /// When the current call must end.
    pub(crate) fn deadline(&self) -> Instant {
        self.hooks.deadline
    }

    /// The resources of the instance (WASI's and HTTP's).
    pub(crate) fn table_mut(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// Note what of the host held the call past its deadline (see
    /// [`CallState::take_late`]).
    pub(crate) fn note_late(&mut self, what: String) {
        self.late.get_or_insert(what);
    }

    /// Bytes of all the instance's linear memories together.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory_total
    }

    /// Whether the instance's WASI context has been built.
    #[cfg(test)]
    pub(crate) fn wasi_context_built(&self) -> bool {
        self.wasi.is_some()
    }

    /// Whether the guest holds host resources (a request, a response body, an outbound
    /// request in flight, an open bucket) between calls.
    pub(crate) fn holds_resources(&self) -> bool {
        !self.table.is_empty()
    }

    /// Reset what one call records, before the call; without `granted` the call may use
    /// no key-value namespace and no HTTP host.
    pub(crate) fn begin_call(&mut self, deadline: Instant, granted: bool) {
        self.breach = None;
        self.late = None;
        let grants = if granted {
            self.granted.clone()
        } else {
            self.nothing.clone()
        };
        self.hooks.grants = grants.clone();
        self.grants = grants;
        // A fresh slot per call: a request still in flight from an earlier call records
        // its refusal in that call's slot, not in this one.
        self.hooks.denied = Arc::default();
        self.hooks.outage = Arc::default();
        self.hooks.deadline = deadline;
    }

    /// What of the host held the call past its deadline, after the call.
    pub(crate) fn take_late(&mut self) -> Option<String> {
        self.late.take()
    }

    /// Runs `op` on the store, noting when it was slow ([`SLOW_STORE`] or more) and
    /// returned past the call's deadline. A fast operation a function makes at the last
    /// moment is not noted: the deadline is then the function's.
    fn on_store<T>(
        &mut self,
        op: &str,
        namespace: &str,
        work: impl FnOnce(&dyn KeyValueStore) -> Result<T, String>,
    ) -> Result<T, kv::Error> {
        let started = Instant::now();
        let result = self
            .kv_store()
            .and_then(|s| work(s.as_ref()).map_err(other));
        if started.elapsed() >= SLOW_STORE
            && Instant::now() > self.hooks.deadline
            && self.late.is_none()
        {
            self.late = Some(format!(
                "key-value {op} in namespace {namespace:?} took {:?} (the store was slow or out of reach)",
                started.elapsed()
            ));
        }
        result
    }

    /// What the call breached, after the call.
    pub(crate) fn take_breach(&mut self) -> Option<Breach> {
        let denied = self
            .hooks
            .denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .map(Breach::Denied);
        self.breach.take().or(denied)
    }

    /// The outage a request of the call met, after the call.
    pub(crate) fn take_outage(&mut self) -> Option<Outage> {
        self.hooks
            .outage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub(crate) fn deny(&mut self, capability: String) {
        tracing::warn!(function = &*self.function, version = &*self.version, %capability, "capability denied");
        self.breach.get_or_insert(Breach::Denied(capability));
    }
}

/// The WASI context every guest gets: empty (no environment, arguments, preopened
/// directories or stdin; stdout and stderr discarded) and without network access.
/// It must stay so while the Rust SDKs' allocator is the default: wasi-libc frees the
/// environment, directory entries, stdin reads and socket results the host hands it with
/// libc's `free`, but they are allocated through `cabi_realloc`, which is the Rust
/// global allocator (ARCHITECTURE.md, `crates/weir-guest-alloc`).
fn empty_wasi_ctx() -> Box<WasiCtx> {
    Box::new(
        WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build(),
    )
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(empty_wasi_ctx),
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl wasmtime::ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The limit is on all memories together (the JavaScript and Python runtimes have
        // several), so count growth, not one memory's size.
        let total = self.memory_total + desired.saturating_sub(current);
        if total > self.memory_limit {
            self.breach.get_or_insert(Breach::Memory);
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real guest.
        Ok(desired <= 1_000_000)
    }
}

/// Outbound HTTP: only to granted hosts, only to addresses they may reach (`egress.rs`),
/// never past the call's deadline.
struct HttpHooks {
    grants: Arc<Grants>,
    resolver: Arc<dyn Resolver>,
    http_pool: Arc<Pool>,
    /// The function these hooks send for.
    function: Arc<str>,
    deadline: Instant,
    /// What the current call was refused, written by the request's future too.
    denied: Arc<Mutex<Option<String>>>,
    /// A destination whose open circuit a request of the current call met (or opened).
    outage: Arc<Mutex<Option<Outage>>>,
}

/// Keep the first outage a request of the call met.
fn note_outage(slot: &Mutex<Option<Outage>>, outage: Option<Outage>) {
    if let Some(outage) = outage {
        slot.lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(outage);
    }
}

/// What a request's result tells of its destination: down when it could not be reached
/// or answered 502, 503 or 504 (another 5xx may be the request's own doing); nothing when
/// it was refused before it left.
fn answer(result: &Result<crate::egress::Sent, wasmtime_wasi_http::Error>) -> Answer {
    use http::StatusCode;
    use wasmtime_wasi_http::Error as E;
    match result {
        Ok((response, _))
            if matches!(
                response.status(),
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ) =>
        {
            Answer::Down(format!("answered {}", response.status()))
        }
        Ok(_) => Answer::Up,
        Err(E::HttpRequestDenied | E::DestinationIpProhibited | E::HttpRequestUriInvalid) => {
            Answer::Unknown
        }
        Err(e) => Answer::Down(e.to_string()),
    }
}

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let matching: Vec<&HttpGrant> = self
            .grants
            .http
            .iter()
            .filter(|g| g.allows(&scheme, &host, port))
            .collect();
        if matching.is_empty() {
            let mut denied = self.denied.lock().unwrap_or_else(|e| e.into_inner());
            denied.get_or_insert(format!("HTTP to {scheme}://{host}:{port}"));
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let circuit = format!("{scheme}://{}:{port}", host.to_ascii_lowercase());
        let outage = self.outage.clone();
        let ticket = match self.http_pool.circuits.admit(&circuit) {
            Ok(ticket) => ticket,
            Err(open) => {
                tracing::debug!(destination = %circuit, "outbound circuit open: request not sent");
                note_outage(&outage, Some(open));
                return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionRefused) });
            }
        };
        let destination = Destination {
            function: self.function.clone(),
            exceptions: Exceptions::of(&matching),
            scheme,
            host,
            port,
        };
        // A request ends a little before the call's deadline, so that its failure reaches
        // the guest and the destination's circuit before the call is stopped.
        let left = self.deadline.saturating_duration_since(Instant::now());
        let margin = (left / 10).min(Duration::from_millis(100));
        let cap = self.grants.http_timeout.min(left - margin);
        let bound = |t: Option<Duration>| Some(t.map_or(cap, |t| t.min(cap)));
        let options = options.unwrap_or_default();
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: bound(options.connect_timeout),
            first_byte_timeout: bound(options.first_byte_timeout),
            between_bytes_timeout: bound(options.between_bytes_timeout),
        };
        // One bound over resolving, connect, TLS handshake and response head together: the phases'
        // own timeouts would add up to several times `cap`, and the handshake has none.
        let until = tokio::time::Instant::now() + cap;
        let (resolver, denied) = (self.resolver.clone(), self.denied.clone());
        let pool = self.http_pool.clone();
        Box::new(async move {
            let sent = crate::egress::send(request, destination, options, resolver, pool, denied);
            let result = tokio::time::timeout_at(until, sent)
                .await
                .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)
                .and_then(|sent| sent);
            if let Some(ticket) = ticket {
                note_outage(&outage, ticket.report(answer(&result)));
            }
            result
        })
    }
}

impl wit::wasi::logging::logging::Host for CallState {
    fn log(&mut self, level: wit::wasi::logging::logging::Level, context: String, message: String) {
        use wit::wasi::logging::logging::Level;
        let (function, version) = (&*self.function, &*self.version);
        match level {
            Level::Trace => tracing::trace!(function, version, context, "{message}"),
            Level::Debug => tracing::debug!(function, version, context, "{message}"),
            Level::Info => tracing::info!(function, version, context, "{message}"),
            Level::Warn => tracing::warn!(function, version, context, "{message}"),
            Level::Error | Level::Critical => {
                tracing::error!(function, version, context, "{message}")
            }
        }
    }
}

/// A bucket the guest opened: a granted namespace.
pub struct Bucket {
    namespace: String,
}

use wit::wasi::keyvalue::store as kv;

impl CallState {
    /// The bucket's namespace, if the current call may use it: a bucket opened in an
    /// entity's `handle` and kept by the guest is refused in its `apply`.
    fn bucket_namespace(
        &mut self,
        bucket: &Resource<Bucket>,
    ) -> wasmtime::Result<Result<String, kv::Error>> {
        let namespace = self.table.get(bucket)?.namespace.clone();
        if !self.grants.keyvalue.contains(&namespace) {
            self.deny(format!("key-value namespace {namespace:?}"));
            return Ok(Err(kv::Error::AccessDenied));
        }
        Ok(Ok(namespace))
    }

    fn kv_store(&self) -> Result<&Arc<dyn KeyValueStore>, kv::Error> {
        self.kv
            .as_ref()
            .ok_or_else(|| kv::Error::Other("this node has no key-value store".to_owned()))
    }
}

impl kv::Host for CallState {
    fn open(
        &mut self,
        identifier: String,
    ) -> wasmtime::Result<Result<Resource<Bucket>, kv::Error>> {
        if !self.grants.keyvalue.contains(&identifier) {
            self.deny(format!("key-value namespace {identifier:?}"));
            return Ok(Err(kv::Error::AccessDenied));
        }
        if let Err(e) = self.kv_store() {
            return Ok(Err(e));
        }
        let bucket = self.table.push(Bucket {
            namespace: identifier,
        })?;
        Ok(Ok(bucket))
    }
}

fn other(e: String) -> kv::Error {
    kv::Error::Other(e)
}

impl kv::HostBucket for CallState {
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, kv::Error>> {
        let ns = match self.bucket_namespace(&bucket)? {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.on_store("get", &ns, |s| s.get(&ns, &key)))
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), kv::Error>> {
        let ns = match self.bucket_namespace(&bucket)? {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        // A write waits for the store to make it durable: a wait of the call's thread.
        Ok(crate::threads::waiting(|| {
            self.on_store("set", &ns, |s| s.set(&ns, &key, &value))
        }))
    }

    fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<(), kv::Error>> {
        let ns = match self.bucket_namespace(&bucket)? {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        // A write waits for the store to make it durable: a wait of the call's thread.
        Ok(crate::threads::waiting(|| {
            self.on_store("delete", &ns, |s| s.delete(&ns, &key))
        }))
    }

    fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> wasmtime::Result<Result<bool, kv::Error>> {
        let ns = match self.bucket_namespace(&bucket)? {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.on_store("exists", &ns, |s| s.exists(&ns, &key)))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> wasmtime::Result<Result<kv::KeyResponse, kv::Error>> {
        let ns = match self.bucket_namespace(&bucket)? {
            Ok(ns) => ns,
            Err(e) => return Ok(Err(e)),
        };
        Ok(self.on_store("list-keys", &ns, |s| {
            s.list_keys(&ns, cursor)
                .map(|(keys, cursor)| kv::KeyResponse { keys, cursor })
        }))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}
