//! Limits on what one client can take: requests per second (per principal, or per client
//! address on an open node), live subscriptions (in all and per principal), and how long
//! a request may take. Bodies, read sizes and connections are limited where they are
//! read (`DefaultBodyLimit`, the read handler, [`crate::listener`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{AppState, Problem};

/// Requests per second per key, with a burst; GCRA, as `governor` keeps it.
pub(crate) struct Rates {
    limiter: DefaultKeyedRateLimiter<Arc<str>>,
    checks: AtomicU64,
}

impl std::fmt::Debug for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rates").finish_non_exhaustive()
    }
}

impl Rates {
    /// `None` when `per_sec` is 0 (no rate limit).
    pub(crate) fn new(per_sec: u32, burst: u32) -> Option<Rates> {
        let per_sec = NonZeroU32::new(per_sec)?;
        let burst = NonZeroU32::new(burst).unwrap_or(per_sec);
        Some(Rates {
            limiter: RateLimiter::keyed(Quota::per_second(per_sec).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    /// `Some(problem)` when `key` is over its rate.
    pub(crate) fn check(&self, key: &Arc<str>) -> Option<Problem> {
        // Forget idle keys now and then, so the table does not grow with every address.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        let not_until = self.limiter.check_key(key).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        Some(Problem::too_many(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
            format!(
                "{key} is over this node's rate limit ([limits] rate_limit_per_sec); retry after {} ms",
                wait.as_millis()
            ),
            wait.as_secs_f64().ceil() as u64,
        ))
    }
}

/// Live subscriptions: a permit each, in all and per key.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    total: Arc<Semaphore>,
    max_total: usize,
    per_key: Mutex<HashMap<Arc<str>, usize>>,
    max_per_key: usize,
}

/// Held by a live subscription; gives its place back when the stream ends.
#[derive(Debug)]
pub(crate) struct SubscriptionPermit {
    _total: OwnedSemaphorePermit,
    key: Arc<str>,
    subscriptions: Arc<Subscriptions>,
}

impl Drop for SubscriptionPermit {
    fn drop(&mut self) {
        let mut per_key = self
            .subscriptions
            .per_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                per_key.remove(&self.key);
            }
        }
    }
}

impl Subscriptions {
    pub(crate) fn new(max_total: usize, max_per_key: usize) -> Arc<Subscriptions> {
        Arc::new(Subscriptions {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_key: Mutex::default(),
            max_per_key,
        })
    }

    pub(crate) fn acquire(self: &Arc<Self>, key: &Arc<str>) -> Result<SubscriptionPermit, Problem> {
        let mut per_key = self.per_key.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = per_key.get(key).copied().unwrap_or(0);
        if mine >= self.max_per_key {
            return Err(Problem::too_many(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-subscriptions",
                "Too many subscriptions",
                format!(
                    "{key} has {mine} live subscriptions, the most one client may have ([limits] max_subscriptions_per_principal); close one first"
                ),
                5,
            ));
        }
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            Problem::too_many(
                StatusCode::SERVICE_UNAVAILABLE,
                "too-many-subscriptions",
                "Too many subscriptions",
                format!(
                    "the node has {} live subscriptions, the most it serves ([limits] max_subscriptions); try again later",
                    self.max_total
                ),
                5,
            )
        })?;
        *per_key.entry(key.clone()).or_insert(0) += 1;
        Ok(SubscriptionPermit {
            _total: total,
            key: key.clone(),
            subscriptions: self.clone(),
        })
    }
}

/// Answers `503 request-timeout` when a request's response has not started within
/// `[limits] request_timeout_ms`. A stream's response starts at once, so live
/// subscriptions are not cut.
pub(crate) async fn request_timeout(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = Duration::from_millis(state.options.limits.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Problem::too_many(
            StatusCode::SERVICE_UNAVAILABLE,
            "request-timeout",
            "Request timed out",
            format!(
                "the request took longer than {} ms ([limits] request_timeout_ms); a write it made may or may not have happened, so check before sending it again",
                limit.as_millis()
            ),
            1,
        )
        .into_response(),
    }
}
