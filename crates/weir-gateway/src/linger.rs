//! Lingering on a request body nobody read. A node that answers before it has read the
//! body (a `413` on the `Content-Length` alone, a `401`, a `429`, a route that ignores its
//! body) must not close the connection on a client still sending it: the kernel answers
//! the unread bytes with a reset, and the reset can reach the client before it has read
//! the answer, so it sees "broken pipe" or "connection reset" instead of the `413` that
//! said why. So, as nginx's `lingering_close` does, what is left of such a body is read and
//! thrown away on its own task after the answer, for at most [`LINGER_TIME`] and
//! [`LINGER_BYTES`]; then the connection is dropped as before.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt as _;
use http_body::{Frame, SizeHint};

/// How long an unread body is read after the answer, at most.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(5);
/// How much of an unread body is read after the answer, at most.
pub(crate) const LINGER_BYTES: usize = 64 << 20;

/// Middleware: the request's body, read to its end (within the bounds) when whoever holds
/// it drops it unfinished.
pub(crate) async fn read_what_is_left(request: Request, next: Next) -> Response {
    next.run(request.map(|body| Body::new(Lingering { body: Some(body) })))
        .await
}

/// A body that, dropped before its end, hands what is left to [`drain`].
struct Lingering {
    /// `None` once it has ended.
    body: Option<Body>,
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
            runtime.spawn(drain(body));
        }
    }
}

/// Reads `body` to its end, or until [`LINGER_TIME`] or [`LINGER_BYTES`], and drops it.
async fn drain(body: Body) {
    let mut data = body.into_data_stream();
    let _ = tokio::time::timeout(LINGER_TIME, async {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = data.next().await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}
