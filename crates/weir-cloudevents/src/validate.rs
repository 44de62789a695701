//! The attribute rules of CloudEvents 1.0.2: naming, the type system's string rules,
//! URIs, timestamps and media types.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::PARTITION_KEY;
use crate::{CloudEvent, Error, ExtensionValue, Result};

/// The spec-defined attributes, whose names an extension may not take.
const CORE_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// How much of an offending value an error message repeats.
const SHOWN_CHARS: usize = 64;

/// The range of the CloudEvents type system's `Integer`: 32-bit signed. The spec says
/// integers outside it MUST NOT be used.
pub const INTEGER_RANGE: std::ops::RangeInclusive<i64> = i32::MIN as i64..=i32::MAX as i64;

/// Whether integer extensions are held to [`INTEGER_RANGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Integers {
    /// Refused outside it: events weir takes in from a request or a function.
    InRange,
    /// Any `i64`: events read back from weir's log, which holds such integers from before
    /// weir refused them.
    Any,
}

impl CloudEvent {
    /// Checks every attribute rule of the spec: required attributes non-empty, `source` a
    /// URI-reference, `dataschema` an absolute URI, `time` RFC 3339, `datacontenttype` a
    /// media type, strings free of control characters and noncharacters, extension names
    /// of `a-z0-9` that do not shadow core attributes, integers within the spec's 32-bit
    /// [`INTEGER_RANGE`], and `partitionkey` a non-empty string. The first broken rule is
    /// returned, naming its attribute.
    pub fn validate(&self) -> Result<()> {
        self.validate_as(Integers::InRange)
    }

    /// [`CloudEvent::validate`], holding integers to the range `integers` says.
    pub(crate) fn validate_as(&self, integers: Integers) -> Result<()> {
        non_empty("id", &self.id)?;
        uri_reference("source", &self.source)?;
        non_empty("type", &self.ty)?;
        if let Some(content_type) = &self.datacontenttype {
            media_type(content_type)?;
        }
        if let Some(schema) = &self.dataschema {
            absolute_uri("dataschema", schema)?;
        }
        if let Some(subject) = &self.subject {
            non_empty("subject", subject)?;
        }
        if let Some(time) = &self.time {
            timestamp(time)?;
        }
        self.extensions
            .iter()
            .try_for_each(|(name, value)| extension(name, value, integers))
    }
}

/// The media type without parameters, lower-cased: `application/json; charset=utf-8`
/// gives `application/json`.
pub(crate) fn essence(content_type: &str) -> String {
    essence_as_sent(content_type).to_ascii_lowercase()
}

/// The media type without parameters, trimmed, in the case it was sent in.
fn essence_as_sent(content_type: &str) -> &str {
    content_type
        .split_once(';')
        .map_or(content_type, |(essence, _)| essence)
        .trim()
}

/// Whether a content type declares JSON: subtype `json` or a `+json` suffix. Compares as
/// [`essence`] would, without making it.
pub(crate) fn is_json(content_type: &str) -> bool {
    essence_as_sent(content_type)
        .split_once('/')
        .is_some_and(|(_, subtype)| {
            let subtype = subtype.as_bytes();
            subtype.eq_ignore_ascii_case(b"json")
                || subtype
                    .len()
                    .checked_sub(5)
                    .is_some_and(|start| subtype[start..].eq_ignore_ascii_case(b"+json"))
        })
}

/// A value quoted for an error message, cut short so a huge input cannot bloat the reply.
pub(crate) fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
}

fn non_empty(name: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(name, "must be a non-empty string"));
    }
    string_chars(name, value)
}

/// The spec's `String` type excludes control characters and Unicode noncharacters (Rust
/// strings cannot hold the unpaired surrogates it also excludes).
fn string_chars(name: &str, value: &str) -> Result<()> {
    // Printable ASCII, by far the most common, holds none of them. (A fold rather than
    // `all`, so the loop has no early exit and is vectorised.)
    if !value
        .bytes()
        .fold(false, |other, b| other | !(b' '..=b'~').contains(&b))
    {
        return Ok(());
    }
    let forbidden = |c: char| {
        let code = u32::from(c);
        c.is_control() || (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
    };
    match value.chars().find(|&c| forbidden(c)) {
        Some(c) => Err(Error::invalid(
            name,
            format!(
                "contains U+{:04X}, which CloudEvents strings may not hold; remove control \
                 characters and Unicode noncharacters",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// RFC 3986 at the level of characters: only unreserved and reserved characters and
/// well-formed percent-encodings.
fn uri_reference(name: &str, value: &str) -> Result<()> {
    non_empty(name, value)?;
    let bytes = value.as_bytes();
    for (at, c) in value.char_indices() {
        if c == '%' {
            let hex = |i: usize| bytes.get(i).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(at + 1) && hex(at + 2)) {
                return Err(Error::invalid(
                    name,
                    format!(
                        "is {}, not a URI: a % must start a percent-encoding like %20; write a \
                         literal % as %25",
                        shown(value)
                    ),
                ));
            }
        } else if !is_uri_char(c) {
            return Err(Error::invalid(
                name,
                format!(
                    "is {}, not a URI: {c:?} is not allowed; percent-encode it",
                    shown(value)
                ),
            ));
        }
    }
    Ok(())
}

/// RFC 3986 unreserved and reserved characters.
fn is_uri_char(c: char) -> bool {
    const ALLOWED: [bool; 128] = ascii_set(b"-._~:/?#[]@!$&'()*+,;=");
    c.is_ascii_alphanumeric() || ALLOWED.get(c as usize).copied().unwrap_or(false)
}

/// RFC 9110 token characters.
fn is_token_byte(b: u8) -> bool {
    const ALLOWED: [bool; 128] = ascii_set(b"!#$%&'*+-.^_`|~");
    b.is_ascii_alphanumeric() || ALLOWED.get(usize::from(b)).copied().unwrap_or(false)
}

/// A lookup table for membership of `chars`, which are ASCII.
const fn ascii_set(chars: &[u8]) -> [bool; 128] {
    let mut set = [false; 128];
    let mut i = 0;
    while i < chars.len() {
        set[chars[i] as usize] = true;
        i += 1;
    }
    set
}

fn absolute_uri(name: &str, value: &str) -> Result<()> {
    uri_reference(name, value)?;
    let has_scheme = value.split_once(':').is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    if has_scheme {
        Ok(())
    } else {
        Err(Error::invalid(
            name,
            format!(
                "is {}, not an absolute URI; start it with a scheme such as https:",
                shown(value)
            ),
        ))
    }
}

fn timestamp(value: &str) -> Result<()> {
    OffsetDateTime::parse(value, &Rfc3339).map_err(|_| {
        Error::invalid(
            "time",
            format!(
                "is {}, not an RFC 3339 timestamp; use a form like 2018-04-05T17:31:00Z",
                shown(value)
            ),
        )
    })?;
    Ok(())
}

/// `type/subtype` of RFC 9110 tokens, then parameters that are at least safe in an HTTP
/// header, since binary mode sends this attribute as Content-Type.
fn media_type(value: &str) -> Result<()> {
    let is_token = |s: &str| !s.is_empty() && s.bytes().all(is_token_byte);
    let (essence, params) = value.split_once(';').unwrap_or((value, ""));
    let essence_ok = essence
        .trim()
        .split_once('/')
        .is_some_and(|(ty, subtype)| is_token(ty) && is_token(subtype));
    let params_ok = params
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b));
    if essence_ok && params_ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "datacontenttype",
            format!(
                "is {}, not a media type; use a form like application/json or \
                 text/plain; charset=utf-8",
                shown(value)
            ),
        ))
    }
}

fn extension(name: &str, value: &ExtensionValue, integers: Integers) -> Result<()> {
    let well_formed = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed {
        let shown_name: String = name.chars().take(SHOWN_CHARS).collect();
        return Err(Error::invalid(
            shown_name,
            "has an invalid name; attribute names use lower-case letters a-z and digits 0-9 only",
        ));
    }
    // The JSON format and the `ce-` headers would confuse such an extension with the payload.
    if name == "data" {
        return Err(Error::invalid(
            name,
            "is reserved for the event payload; rename the extension",
        ));
    }
    if CORE_ATTRIBUTES.contains(&name) {
        return Err(Error::invalid(
            name,
            "is a core attribute, not an extension; set the CloudEvent field instead",
        ));
    }
    let partition_key_ok =
        name != PARTITION_KEY || matches!(value, ExtensionValue::String(key) if !key.is_empty());
    if !partition_key_ok {
        return Err(Error::invalid(
            name,
            "must be a non-empty string (CloudEvents partitioning extension)",
        ));
    }
    match value {
        ExtensionValue::String(s) => string_chars(name, s),
        ExtensionValue::Integer(i) if integers == Integers::InRange => {
            if INTEGER_RANGE.contains(i) {
                Ok(())
            } else {
                Err(out_of_range(name, i))
            }
        }
        ExtensionValue::Integer(_) | ExtensionValue::Boolean(_) => Ok(()),
    }
}

/// An integer outside [`INTEGER_RANGE`]; `value` is shown as it is.
pub(crate) fn out_of_range(name: &str, value: impl std::fmt::Display) -> Error {
    Error::invalid(
        name,
        format!(
            "is {value}, outside the CloudEvents integer range {} to {}; send it as a string",
            INTEGER_RANGE.start(),
            INTEGER_RANGE.end()
        ),
    )
}
