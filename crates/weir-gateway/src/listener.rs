//! The listening socket: at most `[limits] max_connections` open connections (one over
//! is answered `503 too-many-connections` and closed), and TLS with rustls when
//! `[http]` gives a certificate. A TLS handshake happens on the connection's own task,
//! within [`HANDSHAKE_TIMEOUT`], so a client that never finishes one holds up nobody.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::server::TlsStream;

use crate::auth::ClientAddr;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The certificate chain and private key files of `[http]`, PEM.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// A rustls server configuration from PEM files, with weir's one crypto provider (ring).
/// The error says which file is wrong and how.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|e| pem_error(&files.cert, e))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in it", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error(&files.key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| {
        format!(
            "{} and {} do not make a TLS identity: {e}",
            files.cert.display(),
            files.key.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_error(path: &Path, error: rustls_pki_types::pem::Error) -> String {
    format!("{}: not a readable PEM file: {error}", path.display())
}

/// The API's listener.
pub struct FrontListener {
    tcp: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: usize,
    tls: Option<TlsAcceptor>,
}

impl FrontListener {
    pub fn new(
        tcp: TcpListener,
        max_connections: usize,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> FrontListener {
        FrontListener {
            tcp,
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            tls: tls.map(TlsAcceptor::from),
        }
    }
}

impl axum::serve::Listener for FrontListener {
    type Io = FrontIo;
    type Addr = ClientAddr;

    async fn accept(&mut self) -> (FrontIo, ClientAddr) {
        loop {
            let (stream, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                tracing::warn!(client = %addr, max = self.max_connections, "connection refused: too many open connections");
                refuse(stream, self.tls.is_some(), self.max_connections);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = match &self.tls {
                None => State::Plain(stream),
                Some(acceptor) => State::Handshaking(Box::new((
                    acceptor.accept(stream),
                    Box::pin(tokio::time::sleep(HANDSHAKE_TIMEOUT)),
                ))),
            };
            return (
                FrontIo {
                    state,
                    _permit: permit,
                },
                ClientAddr(addr),
            );
        }
    }

    fn local_addr(&self) -> io::Result<ClientAddr> {
        self.tcp.local_addr().map(ClientAddr)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, FrontListener>>
    for ClientAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, FrontListener>) -> ClientAddr {
        *stream.remote_addr()
    }
}

/// Tells a client over the connection limit why, when it speaks plain HTTP, and closes.
fn refuse(mut stream: TcpStream, tls: bool, max: usize) {
    tokio::spawn(async move {
        if !tls {
            let body = format!(
                "{{\"type\":\"urn:weir:problem:too-many-connections\",\"title\":\"Too many connections\",\"status\":503,\"detail\":\"the node has {max} open connections, the most it serves ([limits] max_connections); try again later\"}}"
            );
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                stream.write_all(response.as_bytes()),
            )
            .await;
        }
        let _ = stream.shutdown().await;
    });
}

enum State {
    Plain(TcpStream),
    /// Boxed: a handshake in progress is over a kilobyte.
    Handshaking(
        Box<(
            tokio_rustls::Accept<TcpStream>,
            Pin<Box<tokio::time::Sleep>>,
        )>,
    ),
    Tls(Box<TlsStream<TcpStream>>),
    Failed,
}

/// One accepted connection; holds its place under the connection limit until dropped.
pub struct FrontIo {
    state: State,
    _permit: OwnedSemaphorePermit,
}

impl FrontIo {
    /// Drives a pending handshake; `Ready(Ok)` once the stream is usable.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match &mut self.state {
                State::Plain(_) | State::Tls(_) => return Poll::Ready(Ok(())),
                State::Failed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the TLS handshake failed",
                    )));
                }
                State::Handshaking(handshake) => {
                    let (accept, deadline) = &mut **handshake;
                    if deadline.as_mut().poll(cx).is_ready() {
                        self.state = State::Failed;
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the TLS handshake took too long",
                        )));
                    }
                    match Pin::new(accept).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(stream)) => self.state = State::Tls(Box::new(stream)),
                        Poll::Ready(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            self.state = State::Failed;
                            return Poll::Ready(Err(error));
                        }
                    }
                }
            }
        }
    }
}

use std::future::Future as _;

macro_rules! with_stream {
    ($self:ident, $cx:ident, $stream:ident => $body:expr) => {{
        let this = $self.get_mut();
        match this.poll_ready($cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match &mut this.state {
            State::Plain($stream) => {
                let $stream = Pin::new($stream);
                $body
            }
            State::Tls($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $body
            }
            _ => unreachable!("poll_ready returned Ok"),
        }
    }};
}

impl AsyncRead for FrontIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        with_stream!(self, cx, stream => stream.poll_read(cx, buf))
    }
}

impl AsyncWrite for FrontIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self, cx, stream => stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        with_stream!(self, cx, stream => stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Plain(s) => s.is_write_vectored(),
            State::Tls(s) => s.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self, cx, stream => stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_stream!(self, cx, stream => stream.poll_shutdown(cx))
    }
}
