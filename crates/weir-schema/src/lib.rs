//! Event contracts: a JSON Schema (draft 2020-12) per CloudEvents `type` and version, the
//! validation of an event's `data` against it, and the compatibility of a new version with
//! the earlier ones ([`compat`]).
//!
//! Plain data and functions: nothing here reads files, the log or the network. The node
//! keeps a [`Registry`] built from `weir.toml` and from the log's `weir.schemas` topic, and
//! checks every published event against it.
//!
//! **Architecture Invariant:** a registered version never changes. Registering the same
//! document again under the same version is a no-op; another document under a taken
//! version is refused, and a new version is accepted only as the next one (`latest + 1`),
//! once it passes the type's compatibility mode against the earlier versions. So every
//! node that applies the same registrations in the same order holds the same registry.
//!
//! **Architecture Invariant:** schemas are compiled offline: a `$ref` resolves only inside
//! its own document (`#/$defs/...`); weir never fetches a schema over the network.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

pub mod compat;
mod parsed;
pub mod upcast;

pub use compat::{Change, Compatibility, Direction, Incompatibility, check, compare};
pub use upcast::{CallStep, Mapping, Step, Upcast, Upcasters};

/// The `$schema` of draft 2020-12, the only draft weir reads.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";
/// The path under which a node serves a schema, and which an event's `dataschema` names:
/// `…/v1/schemas/{type}/{version}`.
pub const ROUTE_PREFIX: &str = "/v1/schemas/";
/// The single-partition topic every node keeps the registered schemas in: one record per
/// event type (its key), holding every version and the type's compatibility mode.
pub const STORE_TOPIC: &str = "weir.schemas";
/// The most violations reported for one event: enough to fix it, not a flood.
pub const MAX_VIOLATIONS: usize = 10;
/// The largest schema document accepted, as JSON text.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;
/// The longest event type a schema can be registered for.
pub const MAX_TYPE_BYTES: usize = 256;

/// What can go wrong registering a schema.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{reason}")]
    InvalidType { reason: String },
    #[error(
        "schema versions count from 1, not {version}; register the first version of {ty:?} as 1"
    )]
    InvalidVersion { ty: String, version: u32 },
    #[error("version {version} of {ty:?} is not a valid JSON Schema (draft 2020-12): {reason}")]
    InvalidSchema {
        ty: String,
        version: u32,
        reason: String,
    },
    #[error(
        "version {version} of {ty:?} is already registered with another schema, and registered versions never change; register the new schema as version {next}"
    )]
    VersionTaken { ty: String, version: u32, next: u32 },
    #[error("{ty:?} has {} so the next version is {next}, not {version}", registered(*next))]
    VersionGap { ty: String, version: u32, next: u32 },
    #[error(
        "version {version} of {ty:?} breaks its compatibility mode {mode}: {}; keep the old fields (or make them optional), register the change under a new event type, or set the type's compatibility to \"none\"",
        incompatibilities.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Incompatible {
        ty: String,
        version: u32,
        mode: &'static str,
        incompatibilities: Vec<Incompatibility>,
    },
}

fn registered(next: u32) -> String {
    match next {
        1 => "no versions yet".to_owned(),
        2 => "version 1".to_owned(),
        n => format!("versions 1 to {}", n - 1),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks an event type's name for the registry: non-empty, at most [`MAX_TYPE_BYTES`],
/// no `/` (it is one segment of the schema's route) and no control characters.
pub fn check_type(ty: &str) -> Result<()> {
    let reason = if ty.is_empty() {
        "an event type must not be empty".to_owned()
    } else if ty.len() > MAX_TYPE_BYTES {
        format!(
            "event type {:?}… is {} bytes, over the {MAX_TYPE_BYTES} a schema can be registered for",
            &ty[..ty.floor_char_boundary(40)],
            ty.len()
        )
    } else if ty.contains('/') || ty.chars().any(char::is_control) {
        format!(
            "event type {ty:?} has a '/' or a control character, which a schema's route cannot carry; use a reverse-DNS name such as com.example.order.created"
        )
    } else {
        return Ok(());
    };
    Err(Error::InvalidType { reason })
}

/// One rule an event's `data` broke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// A JSON pointer into the event's `data` (`""` for the whole of it).
    pub pointer: String,
    /// A JSON pointer into the schema: the rule that failed (through `$ref`s as followed).
    pub rule: String,
    /// The keyword that failed (`required`, `type`, `minimum`, ...).
    pub keyword: String,
    /// What is wrong, without the event's values (they may be personal data and end up in
    /// logs and dead letters).
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{} at {at} (schema rule {})", self.message, self.rule)
    }
}

/// One version of one type's schema, compiled.
pub struct Schema {
    ty: String,
    version: u32,
    document: Arc<Value>,
    validator: jsonschema::Validator,
    /// The same schema over data parsed for validation only ([`parsed`]): the fast path.
    fast: jsonschema::Validator<parsed::Parsed>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("ty", &self.ty)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Schema {
    /// Checks `document` against the draft 2020-12 meta-schema and compiles it.
    pub fn compile(ty: &str, version: u32, document: Value) -> Result<Schema> {
        check_type(ty)?;
        if version == 0 {
            return Err(Error::InvalidVersion {
                ty: ty.to_owned(),
                version,
            });
        }
        let invalid = |reason: String| Error::InvalidSchema {
            ty: ty.to_owned(),
            version,
            reason,
        };
        let size = serde_json::to_vec(&document).map_or(0, |b| b.len());
        if size > MAX_SCHEMA_BYTES {
            return Err(invalid(format!(
                "it is {size} bytes, over the {MAX_SCHEMA_BYTES} a schema may have; share parts with $defs"
            )));
        }
        if !matches!(document, Value::Object(_) | Value::Bool(_)) {
            return Err(invalid(
                "a schema is a JSON object (or true or false)".to_owned(),
            ));
        }
        match document.get("$schema").map(|s| s.as_str()) {
            None => {}
            Some(Some(s)) if s.trim_end_matches('#') == DRAFT_2020_12 => {}
            Some(_) => {
                return Err(invalid(format!(
                    "it declares another $schema; weir reads draft 2020-12 only: remove $schema or set it to {DRAFT_2020_12:?}"
                )));
            }
        }
        let meta: Vec<String> = jsonschema::draft202012::meta::validator()
            .iter_errors(&document)
            .take(MAX_VIOLATIONS)
            .map(|e| {
                let at = e.instance_path().as_str();
                format!("{} at {}", e.masked(), if at.is_empty() { "/" } else { at })
            })
            .collect();
        if !meta.is_empty() {
            return Err(invalid(meta.join("; ")));
        }
        let unresolved = |e: jsonschema::ValidationError<'_>| {
            invalid(format!(
                "{}; a $ref may only point inside the schema (#/$defs/...)",
                e.masked()
            ))
        };
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .offline()
            .build(&document)
            .map_err(unresolved)?;
        let fast = jsonschema::options_for::<parsed::Parsed>()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .offline()
            .build(&document)
            .map_err(unresolved)?;
        Ok(Schema {
            ty: ty.to_owned(),
            version,
            document: Arc::new(document),
            validator,
            fast,
        })
    }

    pub fn ty(&self) -> &str {
        &self.ty
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn document(&self) -> &Arc<Value> {
        &self.document
    }

    /// The path a node serves this schema at, which a `dataschema` names.
    pub fn route(&self) -> String {
        route(&self.ty, self.version)
    }

    /// Whether `json` (an event's data as written) is JSON that passes: the fast path of
    /// a check, which parses nothing for keeping. `false` says only that
    /// [`Schema::validate`] on its `Value` must decide and name why.
    pub fn passes_json(&self, json: &str) -> bool {
        parsed::Doc::parse(json).is_some_and(|doc| self.fast.is_valid(&doc))
    }

    /// Checks an event's `data` (`Value::Null` when it has none); the first
    /// [`MAX_VIOLATIONS`] broken rules when it does not match.
    pub fn validate(&self, data: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(data) {
            return Ok(());
        }
        Err(self
            .validator
            .iter_errors(data)
            .take(MAX_VIOLATIONS)
            .map(|e| {
                let keyword = e.kind().keyword().to_owned();
                // These keywords' masked messages still name the offending properties,
                // and data may be keyed by personal values.
                let message = match keyword.as_str() {
                    "additionalProperties" | "unevaluatedProperties" => {
                        "has a property the schema does not allow".to_owned()
                    }
                    "propertyNames" => "has a property name the schema does not allow".to_owned(),
                    _ => e.masked().to_string(),
                };
                Violation {
                    pointer: e.instance_path().as_str().to_owned(),
                    rule: e.evaluation_path().as_str().to_owned(),
                    keyword,
                    message,
                }
            })
            .collect())
    }
}

/// `/v1/schemas/{type}/{version}`, the type percent-encoded as a path segment.
pub fn route(ty: &str, version: u32) -> String {
    let mut path = String::from(ROUTE_PREFIX);
    for byte in ty.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path.push_str(&format!("/{version}"));
    path
}

/// The type and version a `dataschema` names, if it is a URI whose path ends in
/// `/v1/schemas/{type}/{version}` (on any host: the node's address differs between
/// deployments); none for any other URI, which weir does not resolve.
pub fn parse_dataschema(uri: &str) -> Option<(String, u32)> {
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    let at = path.rfind(ROUTE_PREFIX)?;
    let (ty, version) = path[at + ROUTE_PREFIX.len()..].split_once('/')?;
    let version = version.parse().ok().filter(|v| *v > 0)?;
    Some((percent_decode(ty)?, version))
}

/// `uri`, a `dataschema` that [`parse_dataschema`] reads, naming `version` instead: only
/// its version segment changes (host, prefix, query and fragment stay).
pub fn with_version(uri: &str, version: u32) -> Option<String> {
    parse_dataschema(uri)?;
    let path_end = uri.find(['?', '#']).unwrap_or(uri.len());
    let path = &uri[..path_end];
    let at = path.rfind(ROUTE_PREFIX)? + ROUTE_PREFIX.len();
    let segment = at + path[at..].find('/')? + 1;
    Some(format!("{}{version}{}", &uri[..segment], &uri[path_end..]))
}

fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.is_empty())
}

/// Every version of one event type, and its compatibility mode.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    pub compatibility: Compatibility,
    /// `versions[i]` is version `i + 1`.
    versions: Vec<Arc<Schema>>,
}

impl Subject {
    pub fn versions(&self) -> &[Arc<Schema>] {
        &self.versions
    }

    pub fn latest(&self) -> Option<&Arc<Schema>> {
        self.versions.last()
    }

    pub fn get(&self, version: u32) -> Option<&Arc<Schema>> {
        self.versions
            .get(usize::try_from(version).ok()?.checked_sub(1)?)
    }
}

/// What registering a document would do ([`Registry::prepare`]).
#[derive(Debug)]
pub enum Prepared {
    /// The same document is already that version.
    Unchanged,
    /// A new version, compatible with the earlier ones: [`Registry::insert`] adds it.
    New(Arc<Schema>),
}

/// The schema an event is checked against ([`Registry::resolve`]).
#[derive(Debug)]
pub enum Resolved<'a> {
    Schema(&'a Arc<Schema>),
    /// Its type has no schema.
    None,
    /// Its `dataschema` names a version of its type that is not registered.
    UnknownVersion {
        version: u32,
        latest: Option<u32>,
    },
    /// Its `dataschema` names a schema of another type.
    OtherType {
        named: String,
    },
}

/// Every type's schemas, as the node holds them.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    subjects: BTreeMap<String, Subject>,
}

impl Registry {
    pub fn is_empty(&self) -> bool {
        self.subjects.is_empty()
    }

    pub fn subjects(&self) -> impl Iterator<Item = (&str, &Subject)> {
        self.subjects.iter().map(|(ty, s)| (ty.as_str(), s))
    }

    pub fn subject(&self, ty: &str) -> Option<&Subject> {
        self.subjects.get(ty)
    }

    pub fn get(&self, ty: &str, version: u32) -> Option<&Arc<Schema>> {
        self.subjects.get(ty)?.get(version)
    }

    /// The compatibility mode of `ty` (the default, backward, for a type with no schema).
    pub fn compatibility(&self, ty: &str) -> Compatibility {
        self.subjects
            .get(ty)
            .map(|s| s.compatibility)
            .unwrap_or_default()
    }

    /// Checks, changing nothing, whether `document` can be version `version` of `ty`:
    /// the same document already registered is [`Prepared::Unchanged`]; a new one must be
    /// the next version, a valid schema, and compatible with the earlier versions under
    /// `mode` (the type's own when none).
    pub fn prepare(
        &self,
        ty: &str,
        version: u32,
        document: Value,
        mode: Option<Compatibility>,
    ) -> Result<Prepared> {
        check_type(ty)?;
        let subject = self.subjects.get(ty);
        let versions = subject.map_or(&[][..], |s| &s.versions[..]);
        let next = u32::try_from(versions.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        if version == 0 {
            return Err(Error::InvalidVersion {
                ty: ty.to_owned(),
                version,
            });
        }
        if let Some(existing) = subject.and_then(|s| s.get(version)) {
            return if *existing.document == document {
                Ok(Prepared::Unchanged)
            } else {
                Err(Error::VersionTaken {
                    ty: ty.to_owned(),
                    version,
                    next,
                })
            };
        }
        if version != next {
            return Err(Error::VersionGap {
                ty: ty.to_owned(),
                version,
                next,
            });
        }
        let schema = Schema::compile(ty, version, document)?;
        let mode = mode.unwrap_or_else(|| self.compatibility(ty));
        let earlier: Vec<(u32, &Value)> = versions
            .iter()
            .map(|s| (s.version, s.document.as_ref()))
            .collect();
        let incompatibilities = check(mode, &earlier, &schema.document);
        if !incompatibilities.is_empty() {
            return Err(Error::Incompatible {
                ty: ty.to_owned(),
                version,
                mode: mode.as_str(),
                incompatibilities,
            });
        }
        Ok(Prepared::New(Arc::new(schema)))
    }

    /// Adds a version [`Registry::prepare`] accepted (it must be the type's next).
    pub fn insert(&mut self, schema: Arc<Schema>) {
        let subject = self.subjects.entry(schema.ty.clone()).or_default();
        debug_assert_eq!(schema.version as usize, subject.versions.len() + 1);
        subject.versions.push(schema);
    }

    /// Sets a type's compatibility mode, from then on.
    pub fn set_compatibility(&mut self, ty: &str, mode: Compatibility) {
        self.subjects
            .entry(ty.to_owned())
            .or_default()
            .compatibility = mode;
    }

    /// Replaces everything known of `ty` (a record of the `weir.schemas` topic read back).
    pub fn replace(&mut self, ty: &str, subject: Subject) {
        self.subjects.insert(ty.to_owned(), subject);
    }

    /// The schema an event of type `ty` is checked against: the version its
    /// `dataschema` names when that is a weir schema route, else its type's latest.
    pub fn resolve(&self, ty: &str, dataschema: Option<&str>) -> Resolved<'_> {
        // A type without a schema has no contract, whatever its `dataschema` names (an
        // event relayed from another deployment may name that one's schemas).
        let Some(subject) = self.subjects.get(ty).filter(|s| !s.versions.is_empty()) else {
            return Resolved::None;
        };
        match dataschema.and_then(parse_dataschema) {
            Some((named, _)) if named != ty => Resolved::OtherType { named },
            Some((_, version)) => match subject.get(version) {
                Some(schema) => Resolved::Schema(schema),
                None => Resolved::UnknownVersion {
                    version,
                    latest: subject.latest().map(|s| s.version),
                },
            },
            None => match subject.latest() {
                Some(schema) => Resolved::Schema(schema),
                None => Resolved::None,
            },
        }
    }
}

impl Subject {
    /// A subject from stored versions (oldest first), compiling each; the versions must
    /// count from 1.
    pub fn from_documents(
        ty: &str,
        compatibility: Compatibility,
        documents: Vec<Value>,
    ) -> Result<Subject> {
        let versions = documents
            .into_iter()
            .zip(1..)
            .map(|(document, version)| Schema::compile(ty, version, document).map(Arc::new))
            .collect::<Result<_>>()?;
        Ok(Subject {
            compatibility,
            versions,
        })
    }
}

#[cfg(test)]
mod tests;
