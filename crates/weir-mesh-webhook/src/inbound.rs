//! Inbound webhooks: checking that a request was signed by its sender, as Standard
//! Webhooks, GitHub and Stripe sign them (HMAC-SHA256 by `ring`, compared in constant
//! time by `subtle`), and what the request says about the delivery (its id, the kind of
//! event).
//!
//! - Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,` and
//!   base64, space-separated) over `id.timestamp.body`, the secret `whsec_` and base64.
//! - GitHub: `X-Hub-Signature-256: sha256=` and hex over the body, the secret as typed;
//!   the delivery is `X-GitHub-Delivery`, the event `X-GitHub-Event`.
//! - Stripe: `Stripe-Signature: t=…,v1=…[,v1=…]` and hex over `t.body`, the secret
//!   (`whsec_…`) as typed; the delivery is the body's `id`, the event its `type`.
//!
//! A timestamped scheme refuses a timestamp more than [`TOLERANCE_SECS`] from now
//! (replays of an old request). Several secrets may be given (a rotation): any verifies.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use subtle::ConstantTimeEq as _;

/// How far a signed timestamp may be from now, either way.
pub const TOLERANCE_SECS: i64 = 300;

/// The most signatures of one header that are tried (a sender rotating keys sends two or
/// three); the rest are ignored, so a header of thousands costs nothing more.
pub const MAX_SIGNATURES: usize = 8;

/// The most secrets a route may have.
pub const MAX_SECRETS: usize = 8;

/// Who signs the requests, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    StandardWebhooks,
    GitHub,
    Stripe,
}

impl Scheme {
    /// `standard-webhooks`, `github` or `stripe`, as the manifest names them.
    pub const NAMES: [&'static str; 3] = ["standard-webhooks", "github", "stripe"];

    pub fn parse(name: &str) -> Option<Scheme> {
        match name {
            "standard-webhooks" => Some(Scheme::StandardWebhooks),
            "github" => Some(Scheme::GitHub),
            "stripe" => Some(Scheme::Stripe),
            _ => None,
        }
    }
}

/// The secrets of one route and the scheme they sign with.
#[derive(Clone)]
pub struct Verifier {
    scheme: Scheme,
    keys: Vec<ring::hmac::Key>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// What a verified request says about its delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// The sender's id of the delivery, the same on its retries.
    pub id: Option<String>,
    /// The kind of event, as the sender names it (`push`, `payment_intent.succeeded`, a
    /// Standard Webhooks payload's `type`).
    pub event: Option<String>,
}

impl Verifier {
    /// `Err` says what is wrong with a secret (never the secret).
    pub fn new(scheme: Scheme, secrets: &[String]) -> Result<Verifier, String> {
        if secrets.is_empty() {
            return Err("a signature check needs at least one secret".to_owned());
        }
        if secrets.len() > MAX_SECRETS {
            return Err(format!("at most {MAX_SECRETS} secrets, for a rotation"));
        }
        let keys = secrets
            .iter()
            .map(|secret| {
                let bytes = match scheme {
                    Scheme::StandardWebhooks => {
                        let encoded = secret.trim().strip_prefix("whsec_").ok_or(
                            "a Standard Webhooks secret starts with \"whsec_\" followed by base64",
                        )?;
                        STANDARD.decode(encoded).map_err(|_| {
                            "the Standard Webhooks secret after \"whsec_\" is not base64".to_owned()
                        })?
                    }
                    Scheme::GitHub | Scheme::Stripe => secret.trim().as_bytes().to_vec(),
                };
                if bytes.is_empty() {
                    return Err("the secret is empty".to_owned());
                }
                Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes))
            })
            .collect::<Result<_, String>>()?;
        Ok(Verifier { scheme, keys })
    }

    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Checks `body` as sent with `headers` at `now` (Unix seconds): the delivery, or why
    /// the request is refused.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Delivery, String> {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().map_err(|_| format!("{name} is not text")))
                .transpose()
        };
        let required = |name: &str| header(name)?.ok_or_else(|| format!("{name} is missing"));
        match self.scheme {
            Scheme::StandardWebhooks => {
                let id = required("webhook-id")?;
                let timestamp = required("webhook-timestamp")?;
                let at: i64 = timestamp
                    .parse()
                    .map_err(|_| "webhook-timestamp is not a number of seconds".to_owned())?;
                fresh(at, now)?;
                let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
                let signatures = required("webhook-signature")?;
                let candidates = signatures
                    .split(' ')
                    .filter_map(|s| s.strip_prefix("v1,"))
                    .filter_map(|s| STANDARD.decode(s).ok());
                self.any(&signed, candidates, "webhook-signature")?;
                let event = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("type")?.as_str().map(str::to_owned));
                Ok(Delivery {
                    id: Some(id.to_owned()),
                    event,
                })
            }
            Scheme::GitHub => {
                let signature = required("x-hub-signature-256")?;
                let hex_signature = signature
                    .strip_prefix("sha256=")
                    .ok_or("x-hub-signature-256 does not start with sha256=")?;
                let candidates = hex::decode(hex_signature).ok().into_iter();
                self.any(body, candidates, "x-hub-signature-256")?;
                Ok(Delivery {
                    id: header("x-github-delivery")?.map(str::to_owned),
                    event: header("x-github-event")?.map(str::to_owned),
                })
            }
            Scheme::Stripe => {
                let signature = required("stripe-signature")?;
                let mut timestamp = None;
                let mut candidates = Vec::new();
                for part in signature.split(',') {
                    match part.trim().split_once('=') {
                        Some(("t", t)) => timestamp = Some(t),
                        Some(("v1", v)) => candidates.extend(hex::decode(v).ok()),
                        _ => {}
                    }
                }
                let timestamp = timestamp.ok_or("stripe-signature has no t=")?;
                let at: i64 = timestamp
                    .parse()
                    .map_err(|_| "stripe-signature's t= is not a number of seconds".to_owned())?;
                fresh(at, now)?;
                let signed = [timestamp.as_bytes(), b".", body].concat();
                self.any(&signed, candidates.into_iter(), "stripe-signature")?;
                let payload = serde_json::from_slice::<serde_json::Value>(body).ok();
                let field = |name: &str| {
                    payload
                        .as_ref()
                        .and_then(|v| v.get(name)?.as_str().map(str::to_owned))
                };
                Ok(Delivery {
                    id: field("id"),
                    event: field("type"),
                })
            }
        }
    }

    /// Whether any of `signatures` (the first [`MAX_SIGNATURES`] of SHA-256's length) is
    /// the HMAC of `signed` under any key: each key's HMAC is computed once, and compared
    /// with each candidate in constant time.
    fn any(
        &self,
        signed: &[u8],
        signatures: impl Iterator<Item = Vec<u8>>,
        header: &str,
    ) -> Result<(), String> {
        let candidates: Vec<Vec<u8>> = signatures
            .filter(|s| s.len() == ring::digest::SHA256_OUTPUT_LEN)
            .take(MAX_SIGNATURES)
            .collect();
        if !candidates.is_empty() {
            for key in &self.keys {
                let expected = ring::hmac::sign(key, signed);
                if candidates
                    .iter()
                    .any(|candidate| bool::from(expected.as_ref().ct_eq(candidate)))
                {
                    return Ok(());
                }
            }
        }
        Err(format!(
            "{header} does not match the body under the route's secret"
        ))
    }
}

fn fresh(at: i64, now: i64) -> Result<(), String> {
    let off = now.abs_diff(at);
    if off > TOLERANCE_SECS as u64 {
        return Err(format!(
            "the signed timestamp {at} is {off} s from now; at most {TOLERANCE_SECS} s is accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], data: &[u8]) -> Vec<u8> {
        ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn github_and_stripe_signatures_verify_and_tampering_fails() {
        let body = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
        let github = Verifier::new(Scheme::GitHub, &["gh-secret".into()]).unwrap();
        let good = headers(&[
            (
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(sign(b"gh-secret", body))),
            ),
            ("x-github-delivery", "d-1".into()),
            ("x-github-event", "push".into()),
        ]);
        let delivery = github.verify(&good, body, 0).unwrap();
        assert_eq!(delivery.id.as_deref(), Some("d-1"));
        assert_eq!(delivery.event.as_deref(), Some("push"));
        assert!(github.verify(&good, b"{}", 0).is_err());
        assert!(
            github
                .verify(&HeaderMap::new(), body, 0)
                .unwrap_err()
                .contains("missing")
        );

        let stripe = Verifier::new(Scheme::Stripe, &["old".into(), "whsec_new".into()]).unwrap();
        let now = 1_700_000_000;
        let signed = [format!("{now}.").as_bytes(), body].concat();
        let header = format!(
            "t={now},v1={},v1=00",
            hex::encode(sign(b"whsec_new", &signed))
        );
        let good = headers(&[("stripe-signature", header)]);
        let delivery = stripe.verify(&good, body, now + 10).unwrap();
        assert_eq!(delivery.id.as_deref(), Some("evt_1"));
        assert_eq!(delivery.event.as_deref(), Some("payment_intent.succeeded"));
        assert!(stripe.verify(&good, &body[1..], now).is_err());
        // Replayed later than the tolerance.
        let late = stripe.verify(&good, body, now + TOLERANCE_SECS + 1);
        assert!(late.unwrap_err().contains("from now"));
        // A timestamp at the end of the range is refused, not an overflow.
        let far = headers(&[("stripe-signature", format!("t={},v1=00", i64::MIN))]);
        assert!(
            stripe
                .verify(&far, body, now)
                .unwrap_err()
                .contains("from now")
        );
        // Thousands of wrong signatures cost no more than a few: the right one past the
        // first eight is not looked at.
        let many = format!(
            "t={now},{},v1={}",
            vec!["v1=".to_owned() + &"00".repeat(32); 5000].join(","),
            hex::encode(sign(b"whsec_new", &signed))
        );
        let flood = headers(&[("stripe-signature", many)]);
        assert!(stripe.verify(&flood, body, now).is_err());
    }
}
