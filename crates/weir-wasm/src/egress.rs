//! Outbound HTTP from functions, sent by weir itself rather than by wasmtime-wasi-http's
//! default client: resolve the host (through a [`Resolver`], so tests and operators can
//! choose how), check every address against `address.rs`, and connect only to an address
//! that passed, with TLS verified against the host name.
//!
//! **Architecture Invariant:** the address checked is the address connected: the socket is
//! connected to a `SocketAddr` taken from the checked list, never to a name that is
//! resolved again, so a DNS answer that changes between the check and the connection (DNS
//! rebinding) cannot reach a refused address. A name resolving to refused and public
//! addresses alike is connected only to the public ones.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::address::{self, Refused};
use crate::state::HttpGrant;

/// How outbound HTTP finds the addresses of a host name.
pub trait Resolver: Send + Sync + 'static {
    /// Every address of `host`, a DNS name (never an IP literal; those are not resolved).
    /// All of them are checked; the connection is made to one that passes.
    fn resolve(
        &self,
        host: &str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The operating system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(
        &self,
        host: &str,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|a| a.ip()).collect())
        })
    }
}

/// Where one request goes, after its grant check.
pub(crate) struct Destination {
    pub(crate) scheme: String,
    /// As in the URL: a name, an IPv4 literal or a bracketed IPv6 literal.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The function sending (connections are pooled per function).
    pub(crate) function: Arc<str>,
    /// The refused addresses the matching grants name explicitly (see [`Exceptions`]).
    pub(crate) exceptions: Exceptions,
}

/// The addresses in refused ranges that a request may still reach because a grant that
/// allows it names them: a grant of a literal IP address allows that address, a grant of
/// `localhost` allows loopback addresses. Wildcard grants name no address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct Exceptions {
    pub(crate) addresses: Vec<IpAddr>,
    pub(crate) loopback: bool,
}

impl Exceptions {
    pub(crate) fn of(grants: &[&HttpGrant]) -> Exceptions {
        let mut exceptions = Exceptions::default();
        for grant in grants {
            if grant.host.starts_with("*.") {
                continue;
            }
            if let Some(ip) = address::literal(&grant.host) {
                exceptions.addresses.push(ip);
            } else if grant.host == "localhost" {
                exceptions.loopback = true;
            }
        }
        exceptions
    }

    fn allow(&self, ip: IpAddr, refused: &Refused) -> bool {
        self.addresses.contains(&ip) || (self.loopback && refused.range == address::Range::Loopback)
    }
}

/// The addresses of an answer that may be connected to, in the answer's order, and the
/// refused ones with why.
pub(crate) fn sort_answer(
    answer: &[IpAddr],
    exceptions: &Exceptions,
) -> (Vec<IpAddr>, Vec<(IpAddr, Refused)>) {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for &ip in answer {
        match address::refused(ip) {
            Some(why) if !exceptions.allow(ip, &why) => refused.push((ip, why)),
            _ => allowed.push(ip),
        }
    }
    (allowed, refused)
}

/// The TLS client configuration: the webpki roots, ring, made once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// A function's response: its body, with the time between frames bounded.
pub(crate) type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// Idle HTTP/1.1 connections kept for reuse, by destination: scheme, host (the TLS name
/// too), port and the matching grants' exceptions. **Invariant:** a connection is kept
/// under the key of the request that made it, to an address checked for that
/// destination and those exceptions, so a request reusing it reaches an address its own
/// check would have passed (the invariant above still holds: the name is not resolved
/// again). One pool per host, beside its resolver, so a connection is never reused under
/// another resolver's answers.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<std::collections::HashMap<PoolKey, Vec<Idle>>>,
    /// The circuit breakers of the destinations (`circuits.rs`), beside the connections.
    pub(crate) circuits: Arc<crate::circuits::Circuits>,
}

impl Pool {
    /// A pool whose circuits open after `circuit_failures` failed requests in a row.
    pub(crate) fn new(circuit_failures: u32) -> Pool {
        Pool {
            idle: Mutex::default(),
            circuits: Arc::new(crate::circuits::Circuits::new(circuit_failures)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    /// The function whose request made the connection: functions never share one (no
    /// timing side channel between them, no response of one reaching another).
    function: Arc<str>,
    scheme: String,
    host: String,
    port: u16,
    exceptions: Exceptions,
}

struct Idle {
    sender: hyper::client::conn::http1::SendRequest<WasiBody>,
    since: std::time::Instant,
}

/// How long an idle connection is kept: less than the shortest keep-alive common servers
/// give (5 s), so a request seldom meets a connection the server is closing (one the
/// server closed before it was sent goes again on a new one).
const IDLE_FOR: Duration = Duration::from_secs(4);
/// The most idle connections kept per destination, and per host in all: every put drops
/// the expired ones of every destination, so the sockets held stay bounded whatever
/// destinations the functions use.
const IDLE_PER_DESTINATION: usize = 16;
const IDLE_IN_ALL: usize = 256;
/// How long a request waits for an idle connection to be ready again: its task signals
/// that at once unless the machine is loaded (a connection that closed fails at once).
const READY_WITHIN: Duration = Duration::from_millis(100);

impl Pool {
    /// An idle connection to `key` that is ready for a request, if one is.
    async fn take(
        &self,
        key: &PoolKey,
    ) -> Option<hyper::client::conn::http1::SendRequest<WasiBody>> {
        loop {
            let idle = {
                let mut all = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                all.get_mut(key)?.pop()?
            };
            if idle.since.elapsed() >= IDLE_FOR || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WITHIN, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Keeps a connection whose last response was read to its end.
    fn put(&self, key: PoolKey, sender: hyper::client::conn::http1::SendRequest<WasiBody>) {
        if sender.is_closed() {
            return;
        }
        let mut all = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = 0;
        all.retain(|_, idle| {
            idle.retain(|c| c.since.elapsed() < IDLE_FOR && !c.sender.is_closed());
            kept += idle.len();
            !idle.is_empty()
        });
        if kept >= IDLE_IN_ALL {
            return;
        }
        let idle = all.entry(key).or_default();
        if idle.len() < IDLE_PER_DESTINATION {
            idle.push(Idle {
                sender,
                since: std::time::Instant::now(),
            });
        }
    }
}

/// Send `request` to `to`: on an idle connection to the same destination if the pool has
/// one, else resolve, check, connect to a checked address, TLS for https, HTTP/1.1. A
/// request whose every address is refused records why in `denied` and fails with
/// `destination-IP-prohibited` without opening a connection.
pub(crate) async fn send(
    mut request: http::Request<WasiBody>,
    to: Destination,
    options: RequestOptions,
    resolver: Arc<dyn Resolver>,
    pool: Arc<Pool>,
    denied: Arc<Mutex<Option<String>>>,
) -> Result<Sent, Error> {
    let forever = Duration::from_secs(600);
    let connect_timeout = options.connect_timeout.unwrap_or(forever);
    let first_byte_timeout = options.first_byte_timeout.unwrap_or(forever);
    let between_bytes_timeout = options
        .between_bytes_timeout
        .unwrap_or(forever)
        .max(Duration::from_nanos(1));
    let key = PoolKey {
        function: to.function.clone(),
        scheme: to.scheme.clone(),
        host: to.host.clone(),
        port: to.port,
        exceptions: to.exceptions.clone(),
    };

    // The request line carries only the path: scheme and authority are for proxies.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(request.uri().path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    if let Some(mut sender) = pool.take(&key).await {
        let (wrapped, replay) = Replay::wrap(request);
        let sent = tokio::time::timeout(first_byte_timeout, sender.try_send_request(wrapped))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?;
        match sent {
            Ok(response) => {
                return Ok(respond(
                    response,
                    between_bytes_timeout,
                    (pool, key, sender),
                ));
            }
            // The server closed the connection before the request went out, or (a race
            // no client can close: the server may close an idle connection just as a
            // request is written to it) before any byte of a response came back to a
            // request that may safely go twice: again, once, on a new connection.
            Err(mut refused) => {
                request = match refused.take_message() {
                    Some(unsent) => unsent,
                    None => match replay.and_then(Again::request) {
                        Some(again) => {
                            tracing::debug!(error = %refused.error(), "a reused HTTP connection failed before a response: the request goes again on a new one");
                            again
                        }
                        None => return Err(Error::from(refused.into_error())),
                    },
                }
            }
        }
    }

    let answer = match address::literal(&to.host) {
        Some(ip) => vec![ip],
        None => resolver.resolve(&to.host).await.map_err(|e| {
            tracing::debug!(host = %to.host, error = %e, "cannot resolve an HTTP destination");
            Error::DnsError {
                rcode: None,
                info_code: None,
            }
        })?,
    };
    let (allowed, refused) = sort_answer(&answer, &to.exceptions);
    let url = format!("{}://{}:{}", to.scheme, to.host, to.port);
    if let Some((ip, why)) = refused.first() {
        if allowed.is_empty() {
            let literal = match ip {
                IpAddr::V4(v4) => format!("{v4}:{}", to.port),
                IpAddr::V6(v6) => format!("[{v6}]:{}", to.port),
            };
            let reason = format!(
                "HTTP to {url} at {ip} ({why}; only a grant naming the address itself, \
                 such as \"{literal}\", reaches one)"
            );
            let mut denied = denied.lock().unwrap_or_else(|e| e.into_inner());
            denied.get_or_insert(reason);
            return Err(Error::DestinationIpProhibited);
        }
        tracing::warn!(%url, refused = ?refused.iter().map(|r| r.0).collect::<Vec<_>>(), "skipping refused addresses of an HTTP destination");
    }
    if allowed.is_empty() {
        return Err(Error::DestinationNotFound);
    }

    let mut last_error = Error::ConnectionTimeout;
    let mut connected = None;
    for ip in allowed {
        let address = SocketAddr::new(ip, to.port);
        match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => {
                connected = Some(stream);
                break;
            }
            Ok(Err(e)) => last_error = Error::Connect(e),
            Err(_) => last_error = Error::ConnectionTimeout,
        }
    }
    let stream = connected.ok_or(last_error)?;
    let _ = stream.set_nodelay(true);

    let (mut sender, connection) = if to.scheme == "https" {
        let name = match address::literal(&to.host) {
            Some(ip) => rustls::pki_types::ServerName::from(ip),
            None => rustls::pki_types::ServerName::try_from(to.host.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, stream)
            .await
            .map_err(Error::Tls)?;
        handshake(stream, connect_timeout).await?
    } else {
        handshake(stream, connect_timeout).await?
    };

    // The connection runs on its own: it outlives this response when the response is
    // read to its end and the connection goes back to the pool; otherwise it ends when
    // the response is dropped or the server closes it.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "an outbound HTTP connection ended with an error");
        }
    });
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    Ok(respond(
        response,
        between_bytes_timeout,
        (pool, key, sender),
    ))
}

/// A response whose body fails when no frame arrives within `between_bytes`, and whose
/// connection goes back to the pool once the body is read to its end.
fn respond(
    response: http::Response<hyper::body::Incoming>,
    between_bytes: Duration,
    keep: Kept,
) -> Sent {
    let mut interval = tokio::time::interval(between_bytes);
    interval.reset();
    let response = response.map(|incoming| {
        BetweenBytes {
            incoming,
            timeout: interval,
            keep: Some(keep),
        }
        .boxed_unsync()
    });
    let io: Box<dyn Future<Output = Result<(), Error>> + Send> = Box::new(async { Ok(()) });
    (response, io)
}

/// A connection to give back to its pool, under its key, once its response has ended.
type Kept = (
    Arc<Pool>,
    PoolKey,
    hyper::client::conn::http1::SendRequest<WasiBody>,
);

type Connection = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

async fn handshake<S>(
    stream: S,
    timeout: Duration,
) -> Result<
    (
        hyper::client::conn::http1::SendRequest<WasiBody>,
        Connection,
    ),
    Error,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) = tokio::time::timeout(
        timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let connection: Connection = Box::pin(async move {
        connection.await.map_err(|e| {
            if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }
        })
    });
    Ok((sender, connection))
}

/// The most request body bytes kept to send again (see [`Replay`]).
const REPLAY_UP_TO: usize = 64 * 1024;

/// A request body that keeps what it hands out, up to [`REPLAY_UP_TO`] bytes, so a
/// request that may safely go twice can be sent again when a reused connection fails
/// before any response: an idempotent method (RFC 9110, 9.2.2), as Go's client does. A
/// body of another method, or one that outgrew the limit or failed, is not sent again.
/// The body is shared: a copy built by [`Again::request`] first hands out what was kept,
/// then the rest, and the earlier copy hands out nothing more.
struct Replay {
    shared: Arc<Mutex<Replaying>>,
    generation: u32,
}

struct Replaying {
    body: WasiBody,
    /// What the current copy has handed out, for the next one.
    kept: Vec<KeptFrame>,
    kept_bytes: usize,
    /// What the current copy hands out before reading on.
    again: std::collections::VecDeque<KeptFrame>,
    /// False once more than the limit went out, or the body failed.
    replayable: bool,
    generation: u32,
}

enum KeptFrame {
    Data(Bytes),
    Trailers(http::HeaderMap),
}

impl Replay {
    /// `request` with its body kept for sending again, if its method allows that.
    fn wrap(request: http::Request<WasiBody>) -> (http::Request<WasiBody>, Option<Again>) {
        let idempotent = matches!(
            *request.method(),
            http::Method::GET
                | http::Method::HEAD
                | http::Method::OPTIONS
                | http::Method::TRACE
                | http::Method::PUT
                | http::Method::DELETE
        );
        if !idempotent {
            return (request, None);
        }
        let (parts, body) = request.into_parts();
        let mut head = http::Request::new(());
        *head.method_mut() = parts.method.clone();
        *head.uri_mut() = parts.uri.clone();
        *head.version_mut() = parts.version;
        *head.headers_mut() = parts.headers.clone();
        *head.extensions_mut() = parts.extensions.clone();
        let shared = Arc::new(Mutex::new(Replaying {
            body,
            kept: Vec::new(),
            kept_bytes: 0,
            again: Default::default(),
            replayable: true,
            generation: 0,
        }));
        let body = Replay {
            shared: shared.clone(),
            generation: 0,
        };
        (
            http::Request::from_parts(parts, body.boxed_unsync()),
            Some(Again { shared, head }),
        )
    }
}

/// A request [`Replay::wrap`] kept: its head, and its body shared with the copy sent.
struct Again {
    shared: Arc<Mutex<Replaying>>,
    head: http::Request<()>,
}

impl Again {
    /// The request once more, if its body can be sent again.
    fn request(self) -> Option<http::Request<WasiBody>> {
        let generation = {
            let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            if !state.replayable {
                return None;
            }
            state.generation += 1;
            let kept = std::mem::take(&mut state.kept);
            state.kept_bytes = 0;
            let mut again: std::collections::VecDeque<KeptFrame> = kept.into();
            again.append(&mut state.again);
            state.again = again;
            state.generation
        };
        let shared = self.shared;
        Some(
            self.head
                .map(|()| Replay { shared, generation }.boxed_unsync()),
        )
    }
}

impl hyper::body::Body for Replay {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Error>>> {
        let mut state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation != self.generation {
            return Poll::Ready(None);
        }
        let frame = match state.again.pop_front() {
            Some(KeptFrame::Data(data)) => hyper::body::Frame::data(data),
            Some(KeptFrame::Trailers(trailers)) => hyper::body::Frame::trailers(trailers),
            None => match ready!(Pin::new(&mut state.body).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Err(e)) => {
                    state.replayable = false;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(Ok(frame)) => frame,
            },
        };
        if state.replayable {
            if let Some(data) = frame.data_ref() {
                state.kept_bytes += data.len();
                if state.kept_bytes > REPLAY_UP_TO {
                    state.replayable = false;
                    state.kept.clear();
                } else {
                    state.kept.push(KeptFrame::Data(data.clone()));
                }
            } else if let Some(trailers) = frame.trailers_ref() {
                state.kept.push(KeptFrame::Trailers(trailers.clone()));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        state.generation != self.generation
            || (state.again.is_empty() && state.body.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let state = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        if state.generation != self.generation {
            return hyper::body::SizeHint::with_exact(0);
        }
        let queued: u64 = state
            .again
            .iter()
            .map(|frame| match frame {
                KeptFrame::Data(data) => data.len() as u64,
                KeptFrame::Trailers(_) => 0,
            })
            .sum();
        let rest = state.body.size_hint();
        let mut hint = hyper::body::SizeHint::new();
        hint.set_lower(rest.lower() + queued);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + queued);
        }
        hint
    }
}

/// A response body that fails when no frame arrives within the between-bytes timeout.
struct BetweenBytes {
    incoming: hyper::body::Incoming,
    timeout: tokio::time::Interval,
    keep: Option<Kept>,
}

impl hyper::body::Body for BetweenBytes {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => {
                if let Some((pool, key, sender)) = self.keep.take() {
                    pool.put(key, sender);
                }
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests;
