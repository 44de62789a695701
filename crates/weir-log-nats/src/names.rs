//! How weir's names map onto NATS names: streams, subjects and KV keys.
//!
//! - A topic or group name (`a-z A-Z 0-9 . _ -`, see [`weir_log::check_name`]) becomes a
//!   *token* with no `.` (a subject's token separator, and not allowed in a stream name):
//!   `_` is written `__` and `.` is written `_d`, so the mapping is one to one.
//! - Topic T's partition P is the stream `{prefix}_{token(T)}_{P}`, whose subjects are
//!   `{prefix}.{token(T)}.{P}.>`. A record's key is its subject's last token: `n` for a
//!   record without a key, `k` followed by the key in unpadded URL-safe base64 for one
//!   with a key (so `Nats-Expected-Last-Subject-Sequence` is a check on the key's last
//!   record, and `max_msgs_per_subject = 1` is compaction).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;

/// The longest name NATS takes for a stream (and weir for a subject it builds).
pub(crate) const MAX_STREAM_NAME: usize = 255;
/// The longest key a record may carry, so its subject stays within the server's control
/// line (4 KiB by default).
pub(crate) const MAX_KEY_LEN: usize = 1024;

/// `name` with no `.`: `_` as `__`, `.` as `_d`.
pub(crate) fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// The inverse of [`token`]; `None` for a string [`token`] cannot produce.
pub(crate) fn untoken(token: &str) -> Option<String> {
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        match c {
            '_' => match chars.next()? {
                '_' => out.push('_'),
                'd' => out.push('.'),
                _ => return None,
            },
            '.' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The names of one deployment's streams and buckets on a server, under a prefix (so
/// several apps, or tests, share a server without seeing each other).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Names {
        Names {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn stream(&self, topic: &str, partition: u32) -> String {
        format!("{}_{}_{partition}", self.prefix, token(topic))
    }

    /// The subjects a partition's stream takes.
    pub(crate) fn stream_subjects(&self, topic: &str, partition: u32) -> String {
        format!("{}.{}.{partition}.>", self.prefix, token(topic))
    }

    /// The subject a record with `key` is published to.
    pub(crate) fn subject(&self, topic: &str, partition: u32, key: Option<&[u8]>) -> String {
        let base = format!("{}.{}.{partition}.", self.prefix, token(topic));
        match key {
            None => base + "n",
            Some(key) => {
                let mut subject = base + "k";
                URL_SAFE_NO_PAD.encode_string(key, &mut subject);
                subject
            }
        }
    }

    /// The KV bucket of topic declarations.
    pub(crate) fn topics_bucket(&self) -> String {
        format!("{}_topics", self.prefix)
    }

    /// The KV bucket of group offsets and owner generations.
    pub(crate) fn groups_bucket(&self) -> String {
        format!("{}_groups", self.prefix)
    }

    pub(crate) fn members_bucket(&self) -> String {
        format!("{}_members", self.prefix)
    }

    /// The fleet's deploy records (KV).
    pub(crate) fn deployments_bucket(&self) -> String {
        format!("{}_deployments", self.prefix)
    }

    /// The fleet's components (object store).
    pub(crate) fn functions_bucket(&self) -> String {
        format!("{}_functions", self.prefix)
    }

    /// A group's partition in the groups bucket.
    pub(crate) fn group_key(group: &str, topic: &str, partition: u32) -> String {
        format!("{}.{}.{partition}", token(group), token(topic))
    }
}

/// A record's key from the subject it was stored under; `Err` for a subject weir did not
/// write.
pub(crate) fn key_of(subject: &str) -> Result<Option<Bytes>, String> {
    let last = subject.rsplit('.').next().unwrap_or_default();
    match last.split_at_checked(1) {
        Some(("n", "")) => Ok(None),
        Some(("k", encoded)) => URL_SAFE_NO_PAD
            .decode(encoded)
            .map(|key| Some(Bytes::from(key)))
            .map_err(|e| format!("the subject \"{subject}\" holds no valid key: {e}")),
        _ => Err(format!(
            "the subject \"{subject}\" is not one weir writes (it ends in neither n nor k<key>)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_one_to_one_and_have_no_dots() {
        for name in [
            "a",
            "erp.sales-orders",
            "a_d",
            "a.",
            "a__.._",
            "_d_",
            "x-y_z.w",
        ] {
            let t = token(name);
            assert!(!t.contains('.'), "{t}");
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        assert_ne!(token("a_d"), token("a."));
        assert_eq!(untoken("a_x"), None);
        assert_eq!(untoken("a_"), None);
    }

    #[test]
    fn keys_travel_in_the_subject() {
        let names = Names::new("weir");
        for key in [
            None,
            Some(&b""[..]),
            Some(b"SO-1001"),
            Some(&[0u8, 255, 46, 42][..]),
        ] {
            let subject = names.subject("erp.orders", 3, key);
            assert!(subject.starts_with("weir.erp_dorders.3."), "{subject}");
            assert!(
                subject
                    .split('.')
                    .all(|t| !t.is_empty() && !t.contains(['*', '>', ' ']))
            );
            assert_eq!(
                key_of(&subject).expect("a key"),
                key.map(Bytes::copy_from_slice)
            );
        }
        assert!(key_of("weir.t.0.x").is_err());
    }
}
