//! weir's webhook sink: each event POSTed to a URL as a CloudEvent (structured or binary
//! mode), signed per Standard Webhooks (<https://www.standardwebhooks.com>): `webhook-id`
//! (the CloudEvents `id`, the same on every attempt: the receiver's idempotency key),
//! `webhook-timestamp` (seconds, fresh per attempt) and `webhook-signature` (`v1,` and the
//! base64 HMAC-SHA256 of `id.timestamp.body` under each secret, space-separated, so two
//! secrets sign while one is rotated in).
//!
//! [`WebhookSink::deliver`] makes one attempt and says what it came to; the engine retries,
//! dead-letters and commits.

use std::time::Duration;

pub mod inbound;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use weir_cloudevents::CloudEvent;

/// A Standard Webhooks signing secret: `whsec_` and base64 of at least 24 bytes.
#[derive(Clone)]
pub struct Secret(ring::hmac::Key);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; `Err` says what is wrong (never the secret).
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text.trim().strip_prefix("whsec_").ok_or(
            "a webhook secret starts with \"whsec_\" followed by base64 (Standard Webhooks)",
        )?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the webhook secret after \"whsec_\" is not base64".to_owned())?;
        if key.len() < 24 {
            return Err(format!(
                "the webhook secret has {} bytes; use 24 to 64 random bytes",
                key.len()
            ));
        }
        Ok(Secret(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key)))
    }

    /// The `v1,<base64>` signature of `body` sent as message `id` at `timestamp`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = ring::hmac::Context::with_key(&self.0);
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }
}

/// How an event is put in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The whole event as JSON (`application/cloudevents+json`).
    #[default]
    Structured,
    /// The data as the body, the attributes as `ce-*` headers.
    Binary,
}

pub use weir_mesh::Delivery;

/// Where and how one sink delivers.
#[derive(Debug, Clone)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: String,
    secrets: Vec<Secret>,
    mode: Mode,
}

impl WebhookSink {
    /// A sink POSTing to `url` (`http://` or `https://`), signing with each of `secrets`
    /// (none: unsigned), each attempt given `timeout`.
    pub fn new(
        url: &str,
        secrets: Vec<Secret>,
        mode: Mode,
        timeout: Duration,
    ) -> Result<WebhookSink, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weir/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("the webhook client: {e}"))?;
        Ok(WebhookSink {
            client,
            url: url.to_owned(),
            secrets,
            mode,
        })
    }

    /// The request's headers and body for `event` at `timestamp` (seconds).
    pub fn request(&self, event: &CloudEvent, timestamp: i64) -> (HeaderMap, Bytes) {
        let (mut headers, body) = match self.mode {
            Mode::Structured => weir_cloudevents::http::encode_structured(event),
            Mode::Binary => weir_cloudevents::http::encode_binary(event),
        };
        // The id as sent is the id signed: one that cannot be a header value as it is goes
        // percent-encoded.
        let id = match HeaderValue::from_str(&event.id) {
            Ok(id) => id,
            Err(_) => HeaderValue::from_str(
                &percent_encoding::utf8_percent_encode(&event.id, percent_encoding::CONTROLS)
                    .to_string()
                    .replace(' ', "%20"),
            )
            .unwrap_or(HeaderValue::from_static("invalid")),
        };
        let id_text = id.to_str().unwrap_or("invalid").to_owned();
        headers.insert("webhook-id", id);
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        if !self.secrets.is_empty() {
            let signatures: Vec<String> = self
                .secrets
                .iter()
                .map(|s| s.sign(&id_text, timestamp, &body))
                .collect();
            if let Ok(value) = HeaderValue::from_str(&signatures.join(" ")) {
                headers.insert("webhook-signature", value);
            }
        }
        (headers, body)
    }

    /// One attempt to deliver `event`.
    pub async fn deliver(&self, event: &CloudEvent) -> Delivery {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let (headers, body) = self.request(event, now);
        let answer = self
            .client
            .post(&self.url)
            .headers(headers)
            .body(body)
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(e) => {
                let error = if e.is_timeout() {
                    "the receiver did not answer in time".to_owned()
                } else if e.is_connect() {
                    format!("cannot connect to the receiver: {}", source_chain(&e))
                } else {
                    format!("the request failed: {}", source_chain(&e))
                };
                return Delivery::Retry { error, after: None };
            }
        };
        let status = response.status();
        let after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        // Read (a little of) the body, so the connection goes back to the pool.
        let mut response = response;
        let mut read = 0;
        while read < MAX_BODY_READ {
            match response.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        if status.is_success() {
            return Delivery::Delivered;
        }
        let error = format!("the receiver answered {status}");
        match status.as_u16() {
            400 | 413 | 415 | 422 => Delivery::Refused { error },
            // Redirects are not followed (the URL is the receiver's): they are waited out
            // like any other answer that says nothing about the event.
            _ => Delivery::Retry { error, after },
        }
    }
}

#[async_trait::async_trait]
impl weir_mesh::Sink for WebhookSink {
    fn kind(&self) -> &'static str {
        if self.url.starts_with("https") {
            "https"
        } else {
            "http"
        }
    }

    async fn deliver(&self, event: &weir_cloudevents::CloudEvent) -> Delivery {
        WebhookSink::deliver(self, event).await
    }
}

/// Bytes of a response body read before the connection is given up instead.
const MAX_BODY_READ: usize = 64 * 1024;

/// A `Retry-After` value: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification and its reference libraries.
    #[test]
    fn signs_the_reference_example() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn a_bad_secret_is_refused_without_showing_it() {
        for bad in [
            "C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
            "whsec_!!!",
            "whsec_AAAA",
        ] {
            let e = Secret::parse(bad).unwrap_err();
            assert!(!e.contains("C2FV") && !e.contains("!!!"), "{e}");
        }
    }

    #[test]
    fn every_secret_signs_and_the_id_is_the_events() {
        let a = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let b = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sink = WebhookSink::new(
            "http://127.0.0.1:1/hook",
            vec![a.clone(), b.clone()],
            Mode::Structured,
            Duration::from_secs(1),
        )
        .unwrap();
        let event = CloudEvent::new("e-1", "/s", "t");
        let (headers, body) = sink.request(&event, 1700000000);
        assert_eq!(headers["webhook-id"], "e-1");
        assert_eq!(headers["webhook-timestamp"], "1700000000");
        let expected = format!(
            "{} {}",
            a.sign("e-1", 1700000000, &body),
            b.sign("e-1", 1700000000, &body)
        );
        assert_eq!(headers["webhook-signature"], expected.as_str());
        assert_eq!(headers["content-type"], "application/cloudevents+json");
        assert!(WebhookSink::new("ftp://x", vec![], Mode::Binary, Duration::from_secs(1)).is_err());
        // An id that cannot be a header value is sent percent-encoded, and signed as sent.
        let event = CloudEvent::new("a\nb", "/s", "t");
        let (headers, body) = sink.request(&event, 1700000000);
        assert_eq!(headers["webhook-id"], "a%0Ab");
        assert!(
            headers["webhook-signature"]
                .to_str()
                .unwrap()
                .starts_with(&a.sign("a%0Ab", 1700000000, &body))
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let wait = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            wait > Duration::from_secs(100) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
