//! CloudEvents 1.0 (spec 1.0.2): the event model, the JSON event format with its batch
//! format, and the HTTP protocol binding, as pure functions over bytes and headers.
//!
//! **API Boundary:** this crate does no IO. Everything that decodes bytes from outside
//! validates the result with [`CloudEvent::validate`], so a [`CloudEvent`] obtained from
//! [`http::decode`] follows every attribute rule of the spec, and one obtained from
//! [`CloudEvent::from_json_slice`] or [`parse_batch`] every rule but the range of integers
//! (weir reads its log with them, which holds events from before weir checked it). JSON
//! is read as I-JSON (RFC 7493): an object that repeats a key is refused. JSON data is
//! kept as the text it was sent as, never written again ([`Json`]). Events built by hand
//! are checked only when `validate` is called; the encoders assume they were.

mod data;
mod error;
mod event;
pub mod http;
mod json;
mod scan;
mod validate;

pub use data::{Data, Json};
pub use error::{Error, Result};
pub use event::{CloudEvent, ExtensionValue, PARTITION_KEY, SPEC_VERSION};
pub use json::{batch_to_json_vec, parse_batch};
pub use validate::INTEGER_RANGE;

#[cfg(test)]
mod tests;
