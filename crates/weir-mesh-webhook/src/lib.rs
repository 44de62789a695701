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

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer.
    Delivered,
    /// Worth another attempt: no answer, a timeout, 408, 409, 425, 429 or a 5xx.
    /// `after` is the receiver's `Retry-After`, if it sent one.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// The receiver refused this event for good (another 4xx).
    Refused { error: String },
}

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
        if let Ok(id) = HeaderValue::from_str(&event.id) {
            headers.insert("webhook-id", id);
        }
        headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
        if !self.secrets.is_empty() {
            let signatures: Vec<String> = self
                .secrets
                .iter()
                .map(|s| s.sign(&event.id, timestamp, &body))
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
        if status.is_success() {
            return Delivery::Delivered;
        }
        let after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let error = format!("the receiver answered {status}");
        match status.as_u16() {
            408 | 409 | 425 | 429 | 500..=599 => Delivery::Retry { error, after },
            // Redirects are not followed: the URL is the receiver's.
            _ => Delivery::Refused { error },
        }
    }
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
    }
}
