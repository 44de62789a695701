//! Lingering on a request body nobody read. A node that answers before it has read the
//! body (a `413` on the `Content-Length` alone, a `401`, a `429`, a route that ignores its
//! body) must not close the connection on a client still sending it: the kernel answers
//! the unread bytes with a reset, and the reset can reach the client before it has read
//! the answer, so it sees "broken pipe" or "connection reset" instead of the `413` that
//! said why. So, as nginx's `lingering_close` does, what is left of such a body is read and
//! thrown away on its own task after the answer, for at most [`LINGER_TIME`] and
//! [`LINGER_BYTES`], and no longer than the node serves; then the connection is dropped as
//! before.
//!
//! Only HTTP/1.x requests that did not ask `Expect: 100-continue` linger: HTTP/2 resets
//! the one stream, not the connection (and a lingering stream would keep granting its
//! client flow-control credit), and a client waiting for `100 Continue` sends no body
//! unless asked (hyper closes such a connection, which is right).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{Version, header};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt as _;
use http_body::{Frame, SizeHint};
use tokio_util::sync::CancellationToken;

/// How long an unread body is read after the answer, at most.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much of an unread body is read after the answer, at most.
pub(crate) const LINGER_BYTES: usize = 64 << 20;

/// Middleware: the request's body, read to its end (within the bounds, until `stopping`)
/// when whoever holds it drops it unfinished.
pub(crate) async fn read_what_is_left(
    State(stopping): State<CancellationToken>,
    request: Request,
    next: Next,
) -> Response {
    let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
    if !http1 || request.headers().contains_key(header::EXPECT) {
        return next.run(request).await;
    }
    next.run(request.map(|body| {
        Body::new(Lingering {
            body: Some(body),
            stopping,
        })
    }))
    .await
}

/// A body that, dropped before its end, hands what is left to [`drain`].
struct Lingering {
    /// `None` once it has ended.
    body: Option<Body>,
    stopping: CancellationToken,
}

impl http_body::Body for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.body = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        // Outside a runtime (nothing serves the connection then) the body is just dropped.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(body, self.stopping.clone()));
        }
    }
}

/// Reads `body` to its end, or until [`LINGER_TIME`], [`LINGER_BYTES`] or `stopping`, and
/// drops it.
async fn drain(body: Body, stopping: CancellationToken) {
    let mut data = body.into_data_stream();
    let reading = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = data.next().await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    });
    tokio::select! {
        _ = reading => {}
        () = stopping.cancelled() => {}
    }
}
