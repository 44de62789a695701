//! Compatibility between versions of an event type's data schema (JSON Schema draft 2020-12).
//!
//! A type's versions may only change in ways its compatibility mode allows, as in
//! Confluent's Schema Registry: BACKWARD means the new schema reads data written with the
//! old one, FORWARD that the old schema reads data written with the new one, FULL both; the
//! `_transitive` modes check against every earlier version rather than the latest only.
//! [`check`] applies a mode; [`compare`] is the one question underneath: which changes let
//! data valid under a writer's schema be invalid under a reader's.
//!
//! The rules follow Confluent's `SchemaDiff`/`ObjectSchemaDiff` for JSON Schema. In
//! compare(writer, reader):
//! - **metadata** (`title`, `description`, `default`, `examples`, `$id`, `$comment`, …) is
//!   free; `$defs` counts only where a `$ref` reaches it.
//! - **`type`**: the reader must allow every type the writer did (integer→number is fine).
//! - **`properties`**: a property added where the writer's model is open
//!   (`additionalProperties` absent or `true`) is incompatible unless its schema accepts
//!   anything, since old data may hold any value there; added to a closed model it is fine.
//!   Removed from an open reader it is fine, from a closed one (`additionalProperties:
//!   false`) incompatible. A partially open model (`additionalProperties` a schema) compares
//!   the property with that schema.
//! - **`required`**: adding is incompatible, even with a `default` (Confluent excuses it,
//!   but validators do not fill defaults in, so older events would be refused); removing
//!   is fine.
//! - **`additionalProperties`**: opening is fine; closing or restricting is not.
//! - **`enum`/`const`**: extending is fine; narrowing or adding is not.
//! - **bounds** (`minimum`, `maxLength`, `minItems`, …, `multipleOf`, `uniqueItems`): loosened
//!   or removed is fine; added or tightened is not. `pattern` and `format` may not be added
//!   or changed.
//! - **combinators**: `anyOf`/`oneOf` may gain branches but every writer branch must still
//!   fit a reader branch; `allOf` may lose branches but every reader branch must follow from
//!   the writer's schema.
//! - **`$ref`**: local references (`#/...`) are followed in each side's own document, with
//!   cycles cut; a remote one must stay the same string.
//!
//! Where it cannot prove a change compatible (`if`/`then`/`else`, `patternProperties`,
//! `dependentSchemas`, `unevaluatedProperties`, …) it reports the change rather than
//! guess: a false alarm costs a schema author a look, a missed break costs consumers.
//! So is a schema past 50,000 subschema comparisons (nested combinators multiply). Like
//! Confluent, it does not check that a `oneOf`'s branches stay exclusive. Both schemas are
//! assumed valid draft 2020-12 (the registry meta-validates them first); a keyword with a
//! malformed value is treated as absent.
//!
//! A [`Change`] says how the reader differs from the writer ("required property added")
//! and points into the reader's document: where the reader has the change, or, for
//! something it removed, where it would have it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A type's compatibility mode, as in Confluent's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// Any change is allowed.
    None,
    /// The new schema reads data written with the latest earlier one.
    #[default]
    Backward,
    /// The new schema reads data written with every earlier one.
    BackwardTransitive,
    /// The latest earlier schema reads data written with the new one.
    Forward,
    /// Every earlier schema reads data written with the new one.
    ForwardTransitive,
    /// Backward and forward against the latest earlier schema.
    Full,
    /// Backward and forward against every earlier schema.
    FullTransitive,
}

impl Compatibility {
    /// Every mode, in the order Confluent documents them.
    pub const ALL: [Compatibility; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    /// The mode's name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Backward => "backward",
            Self::BackwardTransitive => "backward_transitive",
            Self::Forward => "forward",
            Self::ForwardTransitive => "forward_transitive",
            Self::Full => "full",
            Self::FullTransitive => "full_transitive",
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compatibility {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|mode| mode.as_str()).collect();
                format!(
                    "unknown compatibility {s:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The codes a [`Change`] carries: a closed set, stable for tools to match on.
pub mod code {
    /// The reader's schema is `false`: it accepts no value at all.
    pub const SCHEMA_FALSE: &str = "schema-false";
    /// The reader has a `type` where the writer had none (nor an `enum`/`const` implying one).
    pub const TYPE_ADDED: &str = "type-added";
    /// The reader's `type` leaves out a type the writer allowed (integer→number is fine).
    pub const TYPE_NARROWED: &str = "type-narrowed";
    /// The reader has an `enum` where the writer allowed any value.
    pub const ENUM_ADDED: &str = "enum-added";
    /// The reader's `enum` leaves out values the writer's `enum` or `const` allowed.
    pub const ENUM_NARROWED: &str = "enum-narrowed";
    /// The reader's `const` is new, or other than the one value the writer allowed.
    pub const CONST_CHANGED: &str = "const-changed";
    /// A property the writer's open content model let hold any value now has a schema.
    pub const PROPERTY_ADDED_TO_OPEN_MODEL: &str = "property-added-to-open-model";
    /// A property the writer declared is gone from a reader with `additionalProperties: false`.
    pub const PROPERTY_REMOVED_FROM_CLOSED_MODEL: &str = "property-removed-from-closed-model";
    /// The reader requires a property (in `required` or `dependentRequired`) the writer did not.
    pub const REQUIRED_ADDED: &str = "required-added";
    /// The reader's `additionalProperties` forbids or restricts what the writer allowed.
    pub const ADDITIONAL_PROPERTIES_NARROWED: &str = "additional-properties-narrowed";
    /// A bound (`minimum`, `maxLength`, `minItems`, …) the writer did not have.
    pub const BOUND_ADDED: &str = "bound-added";
    /// A bound stricter than the writer's.
    pub const BOUND_TIGHTENED: &str = "bound-tightened";
    /// A `multipleOf` added, or one that does not divide the writer's.
    pub const MULTIPLE_OF_CHANGED: &str = "multiple-of-changed";
    /// `uniqueItems: true` where the writer allowed duplicates.
    pub const UNIQUE_ITEMS_ADDED: &str = "unique-items-added";
    /// A `pattern` added or changed.
    pub const PATTERN_CHANGED: &str = "pattern-changed";
    /// A `format` added or changed.
    pub const FORMAT_CHANGED: &str = "format-changed";
    /// A writer's value (or `anyOf`/`oneOf` branch) that no reader `anyOf`/`oneOf` branch accepts.
    pub const COMBINATOR_NARROWED: &str = "combinator-narrowed";
    /// A remote (or unresolvable) `$ref` added, removed or changed.
    pub const REFERENCE_CHANGED: &str = "reference-changed";
    /// Any other keyword changed in a way weir cannot prove compatible.
    pub const KEYWORD_CHANGED: &str = "keyword-changed";

    /// Every code.
    pub const ALL: [&str; 19] = [
        SCHEMA_FALSE,
        TYPE_ADDED,
        TYPE_NARROWED,
        ENUM_ADDED,
        ENUM_NARROWED,
        CONST_CHANGED,
        PROPERTY_ADDED_TO_OPEN_MODEL,
        PROPERTY_REMOVED_FROM_CLOSED_MODEL,
        REQUIRED_ADDED,
        ADDITIONAL_PROPERTIES_NARROWED,
        BOUND_ADDED,
        BOUND_TIGHTENED,
        MULTIPLE_OF_CHANGED,
        UNIQUE_ITEMS_ADDED,
        PATTERN_CHANGED,
        FORMAT_CHANGED,
        COMBINATOR_NARROWED,
        REFERENCE_CHANGED,
        KEYWORD_CHANGED,
    ];
}

/// One change that breaks compatibility, found comparing a schema that wrote data with the
/// schema that reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// JSON pointer into the reader's schema document where the change is ("" for the root).
    /// For something the reader removed, where the reader's document would have it.
    pub pointer: String,
    /// One of the [`code`] constants.
    pub code: &'static str,
    /// Lower-case message naming the change, as the reader differs from the writer.
    pub message: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{} at {pointer}", self.message)
    }
}

/// Which way a new version fails to be compatible with an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The new schema cannot read data written with the earlier one.
    Backward,
    /// The earlier schema cannot read data written with the new one.
    Forward,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "backward",
            Self::Forward => "forward",
        }
    }
}

/// One earlier version the new one is incompatible with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incompatibility {
    /// The earlier version.
    pub version: u32,
    /// Which way it fails.
    pub direction: Direction,
    /// What breaks it; for [`Direction::Forward`] the earlier version is the reader, so each
    /// change says how the earlier version differs from the new one.
    pub changes: Vec<Change>,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A forward change is found comparing the new version (the writer) with the old
        // one (the reader), so it reads from the old version's side; say so.
        let (v, side) = (
            self.version,
            match self.direction {
                Direction::Backward => "the new version cannot read its events".to_owned(),
                Direction::Forward => format!(
                    "it cannot read the new version's events; as version {} sees them, pointers into it",
                    self.version
                ),
            },
        );
        write!(
            f,
            "not {} compatible with version {v} ({side})",
            self.direction.as_str(),
        )?;
        for (i, change) in self.changes.iter().enumerate() {
            write!(f, "{}{change}", if i == 0 { ": " } else { "; " })?;
        }
        Ok(())
    }
}

/// Checks `new` against the earlier versions (oldest first, `(version, schema)`) under
/// `mode`: non-transitive modes compare with the latest earlier version only, transitive
/// ones with every one; `None` checks nothing. Empty means compatible.
pub fn check(mode: Compatibility, earlier: &[(u32, &Value)], new: &Value) -> Vec<Incompatibility> {
    let against = match earlier.split_last() {
        Some((latest, _)) if !mode.transitive() => std::slice::from_ref(latest),
        _ => earlier,
    };
    let mut found = Vec::new();
    let mut note = |version, direction, changes: Vec<Change>| {
        if !changes.is_empty() {
            found.push(Incompatibility {
                version,
                direction,
                changes,
            });
        }
    };
    for &(version, old) in against {
        if mode.backward() {
            note(version, Direction::Backward, compare(old, new));
        }
        if mode.forward() {
            note(version, Direction::Forward, compare(new, old));
        }
    }
    found
}

/// Changes that let data valid under `writer` be invalid under `reader`; empty means
/// compatible. BACKWARD checks compare(old, new) (new readers read old data), FORWARD
/// compare(new, old).
pub fn compare(writer: &Value, reader: &Value) -> Vec<Change> {
    if writer == reader {
        return Vec::new();
    }
    let mut diff = Diff {
        writer,
        reader,
        in_progress: HashSet::new(),
        depth: 0,
        steps: 0,
        changes: Vec::new(),
    };
    diff.node(
        Side::new(writer, String::new()),
        Side::new(reader, String::new()),
        &Subject::default(),
    );
    if diff.steps > MAX_STEPS {
        // What a probe found past the limit was dropped with it; say so where it shows.
        diff.too_complex();
    }
    diff.changes
}

/// Annotations: they never make an instance invalid. `$defs` is reached only through `$ref`.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$id",
    "$schema",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$anchor",
    "$dynamicAnchor",
    "$vocabulary",
    "$defs",
    "definitions",
    "contentMediaType",
    "contentEncoding",
    "contentSchema",
];

/// Keywords with a rule of their own; the rest go to [`Diff::others`].
const RULED: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "additionalProperties",
    "required",
    "dependentRequired",
    "items",
    "prefixItems",
    "uniqueItems",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minContains",
    "maxContains",
    "$ref",
    "anyOf",
    "oneOf",
    "allOf",
];

/// Assertions whose removal can only let more through. Removing `if` is among them: a
/// `then` or `else` without an `if` is ignored.
const REMOVABLE: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "dependentSchemas",
    "unevaluatedProperties",
    "unevaluatedItems",
];

/// Count bounds: keyword, whether it is a lower bound, and what its absence means (`None`:
/// unbounded). `minContains` defaults to 1 in 2020-12.
const COUNT_BOUNDS: [(&str, bool, Option<f64>); 8] = [
    ("minLength", true, Some(0.0)),
    ("maxLength", false, None),
    ("minItems", true, Some(0.0)),
    ("maxItems", false, None),
    ("minProperties", true, Some(0.0)),
    ("maxProperties", false, None),
    ("minContains", true, Some(1.0)),
    ("maxContains", false, None),
];

/// How many schemas deep a comparison goes before giving up (and reporting, to stay safe).
const MAX_DEPTH: usize = 128;
/// How many subschema comparisons one [`compare`] makes at most. Nested `anyOf`s multiply:
/// each writer branch is tried against each reader branch. Realistic schemas take
/// hundreds; past this a schema is reported too complex rather than compared for ever.
const MAX_STEPS: usize = 50_000;
/// How many `$ref`s in a row are followed before the reference counts as unresolvable.
const MAX_REF_CHAIN: usize = 32;

static TRUE: Value = Value::Bool(true);
static EMPTY: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

fn is_annotation(keyword: &str) -> bool {
    ANNOTATIONS.contains(&keyword)
}

/// A schema on one side of the comparison and its JSON pointer in that side's document.
/// Owned when weir built it (a writer's `anyOf` branch merged with its siblings, or a `$ref`
/// beside other keywords); its pointer is then the nearest real one.
#[derive(Clone)]
struct Side<'a> {
    value: Cow<'a, Value>,
    ptr: String,
}

impl<'a> Side<'a> {
    fn new(value: &'a Value, ptr: String) -> Self {
        Side {
            value: Cow::Borrowed(value),
            ptr,
        }
    }

    /// `true`, the schema an absent subschema means.
    fn any(ptr: String) -> Self {
        Side::new(&TRUE, ptr)
    }

    fn map(&self) -> &Map<String, Value> {
        self.value.as_object().unwrap_or(&EMPTY)
    }

    fn get(&self, keyword: &str) -> Option<&Value> {
        self.value.get(keyword)
    }

    fn pointer(&self, rel: &str) -> String {
        format!("{}{rel}", self.ptr)
    }

    /// The subschema at `rel`, a relative JSON pointer such as "/properties/a".
    fn at(&self, rel: &str) -> Option<Side<'a>> {
        let value = match &self.value {
            Cow::Borrowed(value) => {
                let value: &'a Value = value;
                Cow::Borrowed(value.pointer(rel)?)
            }
            Cow::Owned(value) => Cow::Owned(value.pointer(rel)?.clone()),
        };
        Some(Side {
            value,
            ptr: self.pointer(rel),
        })
    }

    fn at_or_any(&self, rel: &str) -> Side<'a> {
        self.at(rel).unwrap_or_else(|| Side::any(self.pointer(rel)))
    }

    /// The named subschemas of an object keyword (`properties`).
    fn entries(&self, keyword: &str) -> Vec<(String, Side<'a>)> {
        let Some(Value::Object(map)) = self.get(keyword) else {
            return Vec::new();
        };
        map.keys()
            .filter_map(|name| {
                Some((
                    name.clone(),
                    self.at(&format!("/{keyword}/{}", escape(name)))?,
                ))
            })
            .collect()
    }

    /// The subschemas of an array keyword (`anyOf`, `allOf`, `prefixItems`).
    fn elements(&self, keyword: &str) -> Vec<Side<'a>> {
        let len = self
            .get(keyword)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        (0..len)
            .filter_map(|i| self.at(&format!("/{keyword}/{i}")))
            .collect()
    }

    /// This schema without `keyword`, at the same pointer.
    fn without(&self, keyword: &str) -> Side<'a> {
        let map = self.map().iter().filter(|(k, _)| *k != keyword);
        let map = map.map(|(k, v)| (k.clone(), v.clone())).collect();
        Side {
            value: Cow::Owned(Value::Object(map)),
            ptr: self.ptr.clone(),
        }
    }
}

/// What a message calls the value a schema describes: a property, items of one, …, and the
/// writer's `anyOf`/`oneOf` branch being compared, if any.
#[derive(Clone, Default)]
struct Subject {
    name: Option<String>,
    branch: Option<String>,
}

impl Subject {
    fn property(name: &str) -> Self {
        Subject {
            name: Some(quote(name)),
            branch: None,
        }
    }

    fn within(&self, part: &str) -> Self {
        let name = match &self.name {
            Some(name) => format!("{part} of {name}"),
            None => part.to_owned(),
        };
        Subject {
            name: Some(name),
            branch: None,
        }
    }

    fn branch(&self, label: String) -> Self {
        Subject {
            name: self.name.clone(),
            branch: Some(label),
        }
    }

    /// " of \"amount\"", or nothing at the root.
    fn of(&self) -> String {
        self.name
            .as_ref()
            .map(|name| format!(" of {name}"))
            .unwrap_or_default()
    }

    /// " to \"address\"", or nothing at the root.
    fn to(&self) -> String {
        self.name
            .as_ref()
            .map(|name| format!(" to {name}"))
            .unwrap_or_default()
    }
}

/// How a schema treats properties it does not declare.
enum Openness<'a> {
    /// Any value (`additionalProperties` absent, `true` or `{}`).
    Open,
    /// None (`additionalProperties: false`).
    Closed,
    /// Values valid under this schema.
    Partial(Side<'a>),
}

fn openness<'a>(side: &Side<'a>) -> Openness<'a> {
    match side.at("/additionalProperties") {
        None => Openness::Open,
        Some(schema) => match &*schema.value {
            Value::Bool(false) => Openness::Closed,
            value if is_trivial(value) => Openness::Open,
            _ => Openness::Partial(schema),
        },
    }
}

/// `true`, or an object of annotations only: a schema that accepts anything.
fn is_trivial(value: &Value) -> bool {
    match value {
        Value::Bool(accepts) => *accepts,
        Value::Object(map) => map.keys().all(|k| is_annotation(k)),
        _ => false,
    }
}

/// The state of one comparison.
struct Diff<'a> {
    writer: &'a Value,
    reader: &'a Value,
    /// (writer, reader) pointer pairs being compared after following a `$ref`. Meeting one
    /// again means a cycle: that pair is assumed compatible, and whatever breaks it is
    /// reported where the first visit finds it.
    in_progress: HashSet<(String, String)>,
    depth: usize,
    /// Subschema comparisons made so far, [`MAX_STEPS`] at most.
    steps: usize,
    changes: Vec<Change>,
}

impl<'a> Diff<'a> {
    /// Reports, at the root, that comparing took more steps than weir allows: a schema
    /// whose combinators multiply out beyond that is not proven compatible.
    fn too_complex(&mut self) {
        let message = "schema too complex for weir to compare".to_owned();
        self.report(String::new(), code::KEYWORD_CHANGED, message);
    }

    fn report(&mut self, pointer: String, code: &'static str, message: String) {
        let change = Change {
            pointer,
            code,
            message,
        };
        // A change the writer's anyOf branches share would otherwise be reported per branch.
        if !self.changes.contains(&change) {
            self.changes.push(change);
        }
    }

    /// Compares without reporting: what comparing would report.
    fn probe(&mut self, writer: Side<'a>, reader: Side<'a>, subject: &Subject) -> Vec<Change> {
        let outer = std::mem::take(&mut self.changes);
        self.node(writer, reader, subject);
        std::mem::replace(&mut self.changes, outer)
    }

    /// Compares two subschemas: follows local `$ref`s, cuts cycles, then applies the rules.
    fn node(&mut self, w: Side<'a>, r: Side<'a>, subject: &Subject) {
        if self.same(&w.value, &r.value) {
            return;
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return self.too_complex();
        }
        if self.depth >= MAX_DEPTH {
            let message = format!(
                "schema{} nested too deeply for weir to compare",
                subject.of()
            );
            return self.report(r.ptr, code::KEYWORD_CHANGED, message);
        }
        let (w, w_followed) = self.resolve(self.writer, w);
        let (r, r_followed) = self.resolve(self.reader, r);
        let pair = (w_followed || r_followed).then(|| (w.ptr.clone(), r.ptr.clone()));
        if let Some(pair) = &pair
            && !self.in_progress.insert(pair.clone())
        {
            return;
        }
        self.depth += 1;
        self.schema(w, r, subject);
        self.depth -= 1;
        if let Some(pair) = pair {
            self.in_progress.remove(&pair);
        }
    }

    /// Follows local `$ref`s to their targets. A `$ref` beside other keywords (2020-12 lets
    /// both apply) becomes an `allOf` branch beside them, which says the same.
    fn resolve(&self, root: &'a Value, mut side: Side<'a>) -> (Side<'a>, bool) {
        let mut followed = false;
        for _ in 0..MAX_REF_CHAIN {
            let Some((target, ptr)) = side
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|to| lookup(root, to))
            else {
                break;
            };
            followed = true;
            if side.map().keys().all(|k| k == "$ref" || is_annotation(k)) {
                side = Side::new(target, ptr);
            } else {
                let value = ref_beside_siblings(side.map());
                side = Side {
                    value: Cow::Owned(value),
                    ptr: side.ptr,
                };
                break;
            }
        }
        (side, followed)
    }

    fn schema(&mut self, w: Side<'a>, r: Side<'a>, subject: &Subject) {
        if *w.value == Value::Bool(false) {
            return; // the writer wrote no value here
        }
        if *r.value == Value::Bool(false) {
            let message = format!("schema{} is false, so no value is accepted", subject.of());
            return self.report(r.ptr, code::SCHEMA_FALSE, message);
        }
        self.combinators(w, r, subject);
    }

    /// `anyOf`/`oneOf` and `allOf`, then the other keywords.
    fn combinators(&mut self, w: Side<'a>, r: Side<'a>, subject: &Subject) {
        for key in ["anyOf", "oneOf"] {
            if w.get(key).is_some() && !self.shared(&w, &r, key) {
                return self.writer_branches(&w, &r, key, subject);
            }
        }
        let mut r = r;
        for key in ["anyOf", "oneOf"] {
            if r.get(key).is_some() && !self.shared(&w, &r, key) {
                self.reader_branches(&w, &r, key, subject);
                r = r.without(key); // its other keywords still apply
            }
        }
        if self.shared(&w, &r, "allOf") {
            self.keywords(&w, &r, subject);
        } else {
            self.conjuncts(&w, &r, subject);
        }
    }

    /// A writer's value matches one of its branches, so each branch (with the keywords
    /// beside the combinator) must on its own be readable by the reader.
    fn writer_branches(&mut self, w: &Side<'a>, r: &Side<'a>, key: &str, subject: &Subject) {
        let rest = w.without(key);
        if !w.get(key).is_some_and(Value::is_array) {
            return self.node(rest, r.clone(), subject);
        }
        // A branch with nothing beside it is compared where it is, without a copy.
        let alone = rest.map().keys().all(|k| is_annotation(k));
        for (i, branch) in w.elements(key).into_iter().enumerate() {
            let branch = if alone {
                branch
            } else {
                let merged = merge(rest.map(), &branch.value);
                Side {
                    value: Cow::Owned(merged),
                    ptr: branch.ptr,
                }
            };
            let label = format!("{key} branch {i}");
            self.node(branch, r.clone(), &subject.branch(label));
        }
    }

    /// The reader's branches: at least one must accept everything the writer does.
    /// (Confluent does not check `oneOf`'s exclusivity either.)
    fn reader_branches(&mut self, w: &Side<'a>, r: &Side<'a>, key: &str, subject: &Subject) {
        // The branch that comes nearest: fewest changes, the first of equals.
        let mut nearest: Option<(usize, Vec<Change>)> = None;
        for (j, branch) in r.elements(key).into_iter().enumerate() {
            let found = self.probe(w.clone(), branch, subject);
            if found.is_empty() {
                return;
            }
            if nearest
                .as_ref()
                .is_none_or(|(_, best)| found.len() < best.len())
            {
                nearest = Some((j, found));
            }
        }
        let who = match (&subject.branch, &subject.name) {
            (Some(branch), _) => format!("{branch}{}", subject.of()),
            (None, Some(name)) => name.clone(),
            (None, None) => "the value".to_owned(),
        };
        let mut message = format!("{who} no longer matched by any {key} branch");
        if let Some((j, found)) = nearest {
            let more = match found.len() {
                1 => String::new(),
                n => format!(", and {} more", n - 1),
            };
            message.push_str(&format!(" (nearest, branch {j}: {}{more})", found[0]));
        }
        self.report(
            r.pointer(&format!("/{key}")),
            code::COMBINATOR_NARROWED,
            message,
        );
    }

    /// `allOf`: each of the reader's conjuncts (its other keywords, then each branch) must
    /// follow from one of the writer's. When none does, what the conjunct in the same place
    /// (or else the writer's other keywords) lacks is reported.
    fn conjuncts(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let parts = |side: &Side<'a>| {
            let mut parts = vec![side.without("allOf")];
            parts.extend(side.elements("allOf"));
            parts
        };
        let (w_parts, r_parts) = (parts(w), parts(r));
        for (j, r_part) in r_parts.into_iter().enumerate() {
            let preferred = if j < w_parts.len() { j } else { 0 };
            let found = self.probe(w_parts[preferred].clone(), r_part.clone(), subject);
            if found.is_empty() {
                continue;
            }
            let implied = w_parts.iter().enumerate().any(|(i, w_part)| {
                i != preferred
                    && self
                        .probe(w_part.clone(), r_part.clone(), subject)
                        .is_empty()
            });
            if !implied {
                for change in found {
                    self.report(change.pointer, change.code, change.message);
                }
            }
        }
    }

    /// The keywords beside any combinators.
    fn keywords(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let w_types = writer_types(w.map());
        let w_types = w_types.as_deref();
        self.types(w_types, r, subject);
        self.values(w, r, subject);
        // Keywords for another type than the writer's values have cannot reject them.
        if applies(w_types, "properties") {
            self.properties(w, r);
            self.additional_properties(w, r, subject);
            self.required(w, r, subject);
            self.dependent_required(w, r, subject);
        }
        if applies(w_types, "items") {
            self.items(w, r, subject);
            self.unique_items(w, r, subject);
        }
        if applies(w_types, "pattern") {
            self.fixed(w, r, "pattern", code::PATTERN_CHANGED, subject);
            self.fixed(w, r, "format", code::FORMAT_CHANGED, subject);
        }
        if applies(w_types, "minimum") {
            self.numeric_bound(w, r, true, subject);
            self.numeric_bound(w, r, false, subject);
            self.multiple_of(w, r, w_types, subject);
        }
        for bound in COUNT_BOUNDS {
            // minContains and maxContains mean nothing without contains.
            let counts_contains = bound.0.ends_with("Contains");
            if applies(w_types, bound.0) && (!counts_contains || r.get("contains").is_some()) {
                self.count_bound(w, r, bound, subject);
            }
        }
        self.reference(w, r, subject);
        self.others(w, r, w_types, subject);
    }

    fn types(&mut self, w_types: Option<&[&str]>, r: &Side<'a>, subject: &Subject) {
        let Some(r_types) = type_names(r.map()) else {
            return;
        };
        let of = subject.of();
        let message = match w_types {
            None => format!("type{of} added ({})", type_list(&r_types)),
            Some(w_types) if w_types.iter().any(|t| !type_allows(&r_types, t)) => {
                format!(
                    "type{of} narrowed from {} to {}",
                    type_list(w_types),
                    type_list(&r_types)
                )
            }
            Some(_) => return,
        };
        let code = if w_types.is_none() {
            code::TYPE_ADDED
        } else {
            code::TYPE_NARROWED
        };
        self.report(r.pointer("/type"), code, message);
    }

    /// `enum` and `const`: the reader must allow every value the writer allowed.
    fn values(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let w_values = allowed_values(w.map());
        let of = subject.of();
        if let Some(Value::Array(r_values)) = r.get("enum") {
            let pointer = r.pointer("/enum");
            match &w_values {
                None => {
                    let message =
                        format!("enum{of} added (only {} allowed)", list(r_values.iter()));
                    self.report(pointer, code::ENUM_ADDED, message);
                }
                Some(w_values) => {
                    let lost: Vec<&Value> = w_values
                        .iter()
                        .copied()
                        .filter(|v| !r_values.iter().any(|r| same_value(v, r)))
                        .collect();
                    if !lost.is_empty() {
                        let message = format!(
                            "enum{of} narrowed: {} no longer allowed",
                            list(lost.into_iter())
                        );
                        self.report(pointer, code::ENUM_NARROWED, message);
                    }
                }
            }
        }
        if let Some(r_const) = r.get("const") {
            let message = match (&w_values, w.get("const")) {
                (Some(w_values), _) if w_values.iter().all(|v| same_value(v, r_const)) => return,
                (_, Some(w_const)) => format!("const{of} changed from {w_const} to {r_const}"),
                (None, None) => format!("const{of} added ({r_const})"),
                (Some(w_values), None) => {
                    let lost = w_values.iter().copied().filter(|v| !same_value(v, r_const));
                    format!(
                        "const{of} added ({r_const}): {} no longer allowed",
                        list(lost)
                    )
                }
            };
            self.report(r.pointer("/const"), code::CONST_CHANGED, message);
        }
    }

    /// Declared properties, against each other or the other side's content model.
    /// Properties are named on their own in messages, not within their parent.
    fn properties(&mut self, w: &Side<'a>, r: &Side<'a>) {
        let w_props = w.entries("properties");
        let r_props = r.entries("properties");
        for (name, r_prop) in &r_props {
            let sub = Subject::property(name);
            match w_props.iter().find(|(w_name, _)| w_name == name) {
                Some((_, w_prop)) => self.node(w_prop.clone(), r_prop.clone(), &sub),
                None => self.property_added(w, name, r_prop, &sub),
            }
        }
        for (name, w_prop) in &w_props {
            if !r_props.iter().any(|(r_name, _)| r_name == name) {
                self.property_removed(r, name, w_prop, &Subject::property(name));
            }
        }
    }

    fn property_added(&mut self, w: &Side<'a>, name: &str, r_prop: &Side<'a>, subject: &Subject) {
        match openness(w) {
            Openness::Closed => {} // the writer never wrote it
            Openness::Partial(w_extra) => self.node(w_extra, r_prop.clone(), subject),
            Openness::Open => {
                let any = Side::any(w.pointer(&format!("/properties/{}", escape(name))));
                if !self.probe(any, r_prop.clone(), subject).is_empty() {
                    let message =
                        format!("property {} added to an open content model", quote(name));
                    self.report(
                        r_prop.ptr.clone(),
                        code::PROPERTY_ADDED_TO_OPEN_MODEL,
                        message,
                    );
                }
            }
        }
    }

    fn property_removed(&mut self, r: &Side<'a>, name: &str, w_prop: &Side<'a>, subject: &Subject) {
        let pointer = r.pointer(&format!("/properties/{}", escape(name)));
        match openness(r) {
            // unevaluatedProperties sees the property once properties no longer declares it.
            Openness::Open
                if r.get("unevaluatedProperties")
                    .is_some_and(|v| !is_trivial(v)) =>
            {
                let message = format!(
                    "property {} removed where unevaluatedProperties applies; \
                     weir cannot prove that compatible",
                    quote(name)
                );
                self.report(pointer, code::KEYWORD_CHANGED, message);
            }
            Openness::Open => {}
            Openness::Closed => {
                let message = format!(
                    "property {} removed from a closed content model (additionalProperties: false)",
                    quote(name)
                );
                self.report(pointer, code::PROPERTY_REMOVED_FROM_CLOSED_MODEL, message);
            }
            Openness::Partial(r_extra) => self.node(w_prop.clone(), r_extra, subject),
        }
    }

    fn additional_properties(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let pointer = r.pointer("/additionalProperties");
        let of = subject.of();
        match (openness(w), openness(r)) {
            (Openness::Closed, _) | (_, Openness::Open) => {}
            (Openness::Partial(w_extra), Openness::Partial(r_extra)) => {
                self.node(w_extra, r_extra, &subject.within("additional properties"));
            }
            (Openness::Open, Openness::Partial(r_extra)) => {
                let any = Side::any(w.pointer("/additionalProperties"));
                if !self.probe(any, r_extra, subject).is_empty() {
                    let message =
                        format!("additional properties{of} narrowed from any value to a schema");
                    self.report(pointer, code::ADDITIONAL_PROPERTIES_NARROWED, message);
                }
            }
            (_, Openness::Closed) => {
                let message = format!(
                    "additional properties{of} no longer allowed (additionalProperties: false)"
                );
                self.report(pointer, code::ADDITIONAL_PROPERTIES_NARROWED, message);
            }
        }
    }

    fn required(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let w_required = strings(w.get("required"));
        for name in strings(r.get("required")) {
            // Confluent lets a `default` excuse a new required property; weir does not:
            // validators do not fill defaults in, so older events would be refused.
            if !w_required.contains(&name) {
                let message = format!("required property {} added{}", quote(name), subject.to());
                self.report(r.pointer("/required"), code::REQUIRED_ADDED, message);
            }
        }
    }

    fn dependent_required(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let Some(Value::Object(r_dependent)) = r.get("dependentRequired") else {
            return;
        };
        let w_required = strings(w.get("required"));
        let w_dependent = w.get("dependentRequired");
        for (trigger, names) in r_dependent {
            let w_names = strings(w_dependent.and_then(|d| d.get(trigger)));
            for name in strings(Some(names)) {
                if !w_required.contains(&name) && !w_names.contains(&name) {
                    let message = format!(
                        "property {} now required when {} is present{}",
                        quote(name),
                        quote(trigger),
                        subject.to()
                    );
                    let pointer = r.pointer(&format!("/dependentRequired/{}", escape(trigger)));
                    self.report(pointer, code::REQUIRED_ADDED, message);
                }
            }
        }
    }

    /// `prefixItems` position by position (beyond a side's prefix its `items` applies),
    /// then `items` for the positions past both prefixes.
    fn items(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let (w_prefix, r_prefix) = (w.elements("prefixItems"), r.elements("prefixItems"));
        let at = |side: &Side<'a>, prefix: &[Side<'a>], i: usize| {
            prefix
                .get(i)
                .cloned()
                .unwrap_or_else(|| side.at_or_any("/items"))
        };
        for i in 0..w_prefix.len().max(r_prefix.len()) {
            self.node(
                at(w, &w_prefix, i),
                at(r, &r_prefix, i),
                &subject.within(&format!("item {i}")),
            );
        }
        if w.get("items").is_some() || r.get("items").is_some() {
            self.node(
                w.at_or_any("/items"),
                r.at_or_any("/items"),
                &subject.within("items"),
            );
        }
    }

    fn unique_items(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let unique = |side: &Side<'a>| side.get("uniqueItems") == Some(&Value::Bool(true));
        if unique(r) && !unique(w) {
            let message = format!("uniqueItems{} added", subject.of());
            self.report(r.pointer("/uniqueItems"), code::UNIQUE_ITEMS_ADDED, message);
        }
    }

    /// `pattern` and `format`: weir cannot compare two regular expressions or formats, so
    /// only the same one, or none, is compatible.
    fn fixed(
        &mut self,
        w: &Side<'a>,
        r: &Side<'a>,
        keyword: &str,
        code: &'static str,
        subject: &Subject,
    ) {
        let Some(r_value) = r.get(keyword) else {
            return;
        };
        let of = subject.of();
        let message = match w.get(keyword) {
            Some(w_value) if w_value == r_value => return,
            Some(w_value) => format!("{keyword}{of} changed from {w_value} to {r_value}"),
            None => format!("{keyword}{of} added ({r_value})"),
        };
        self.report(r.pointer(&format!("/{keyword}")), code, message);
    }

    /// `minimum`/`exclusiveMinimum` (or the maximums) as one bound each side, so that
    /// trading one keyword for the other is judged by the numbers it admits.
    fn numeric_bound(&mut self, w: &Side<'a>, r: &Side<'a>, lower: bool, subject: &Subject) {
        let Some(r_edge) = Edge::of(r.map(), lower) else {
            return;
        };
        let of = subject.of();
        let (code, message) = match Edge::of(w.map(), lower) {
            None => (
                code::BOUND_ADDED,
                format!("{}{of} added ({})", r_edge.keyword, r_edge.raw),
            ),
            Some(w_edge) if !r_edge.tighter_than(&w_edge, lower) => return,
            Some(w_edge) if w_edge.keyword == r_edge.keyword => (
                code::BOUND_TIGHTENED,
                format!(
                    "{}{of} tightened from {} to {}",
                    r_edge.keyword, w_edge.raw, r_edge.raw
                ),
            ),
            Some(w_edge) => {
                let which = if lower { "lower bound" } else { "upper bound" };
                let message = format!(
                    "{which}{of} tightened from {} {} to {} {}",
                    w_edge.keyword, w_edge.raw, r_edge.keyword, r_edge.raw
                );
                (code::BOUND_TIGHTENED, message)
            }
        };
        self.report(r.pointer(&format!("/{}", r_edge.keyword)), code, message);
    }

    fn multiple_of(
        &mut self,
        w: &Side<'a>,
        r: &Side<'a>,
        w_types: Option<&[&str]>,
        subject: &Subject,
    ) {
        let Some(r_raw) = r.get("multipleOf") else {
            return;
        };
        let Some(r_step) = r_raw.as_f64().filter(|step| *step > 0.0) else {
            return;
        };
        let w_raw = w.get("multipleOf").filter(|v| v.is_number());
        // Integers are multiples of 1 without saying so.
        let integers_only =
            w_types.is_some_and(|types| !types.is_empty() && types.iter().all(|t| *t == "integer"));
        let w_step = w_raw
            .and_then(Value::as_f64)
            .or(integers_only.then_some(1.0));
        if w_step.is_some_and(|w_step| divides(r_step, w_step)) {
            return;
        }
        let of = subject.of();
        let message = match w_raw {
            Some(w_raw) => {
                format!("multipleOf{of} changed from {w_raw} to {r_raw}, which does not divide it")
            }
            None => format!("multipleOf{of} added ({r_raw})"),
        };
        self.report(r.pointer("/multipleOf"), code::MULTIPLE_OF_CHANGED, message);
    }

    fn count_bound(
        &mut self,
        w: &Side<'a>,
        r: &Side<'a>,
        bound: (&str, bool, Option<f64>),
        subject: &Subject,
    ) {
        let (keyword, lower, absent) = bound;
        let Some(r_raw) = r.get(keyword) else { return };
        let Some(r_count) = r_raw.as_f64() else {
            return;
        };
        let w_raw = w.get(keyword).filter(|v| v.is_number());
        let w_count = w_raw.and_then(Value::as_f64).or(absent);
        let tightened = match w_count {
            None => true,
            Some(w_count) if lower => r_count > w_count,
            Some(w_count) => r_count < w_count,
        };
        if !tightened {
            return;
        }
        let of = subject.of();
        let (code, message) = match w_raw {
            Some(w_raw) => (
                code::BOUND_TIGHTENED,
                format!("{keyword}{of} tightened from {w_raw} to {r_raw}"),
            ),
            None => (code::BOUND_ADDED, format!("{keyword}{of} added ({r_raw})")),
        };
        self.report(r.pointer(&format!("/{keyword}")), code, message);
    }

    /// A `$ref` still here after resolving is remote (or does not resolve): weir does not
    /// fetch it, so only the same reference on both sides is known compatible.
    fn reference(&mut self, w: &Side<'a>, r: &Side<'a>, subject: &Subject) {
        let of = subject.of();
        let message = match (w.get("$ref"), r.get("$ref")) {
            (None, None) => return,
            (Some(w_ref), Some(r_ref)) if w_ref == r_ref => return,
            (Some(w_ref), Some(r_ref)) => format!("reference{of} changed from {w_ref} to {r_ref}"),
            (None, Some(r_ref)) => {
                format!("reference{of} added ({r_ref}), which weir cannot resolve")
            }
            (Some(w_ref), None) => {
                format!("reference{of} ({w_ref}) removed, which weir cannot resolve")
            }
        };
        self.report(r.pointer("/$ref"), code::REFERENCE_CHANGED, message);
    }

    /// Every keyword without a rule of its own: any difference is reported, except the
    /// removal of one whose absence can only let more through.
    fn others(&mut self, w: &Side<'a>, r: &Side<'a>, w_types: Option<&[&str]>, subject: &Subject) {
        let (w_map, r_map) = (w.map(), r.map());
        let keywords = r_map
            .keys()
            .chain(w_map.keys().filter(|k| !r_map.contains_key(*k)));
        for keyword in keywords {
            if is_annotation(keyword)
                || RULED.contains(&keyword.as_str())
                || !applies(w_types, keyword)
            {
                continue;
            }
            let what = match (w_map.get(keyword), r_map.get(keyword)) {
                (Some(w_value), Some(r_value)) if self.same(w_value, r_value) => continue,
                (Some(_), Some(_)) => "changed",
                (None, _) => "added",
                (Some(_), None) if REMOVABLE.contains(&keyword.as_str()) => continue,
                (Some(_), None) => "removed",
            };
            let message = format!(
                "keyword {}{} {what}; weir cannot prove that compatible",
                quote(keyword),
                subject.of()
            );
            self.report(
                r.pointer(&format!("/{}", escape(keyword))),
                code::KEYWORD_CHANGED,
                message,
            );
        }
    }

    fn shared(&self, w: &Side<'a>, r: &Side<'a>, keyword: &str) -> bool {
        match (w.get(keyword), r.get(keyword)) {
            (None, None) => true,
            (Some(w_value), Some(r_value)) => self.same(w_value, r_value),
            _ => false,
        }
    }

    /// Equal JSON whose local `$ref`s also reach equal targets in the two documents.
    fn same(&self, w: &Value, r: &Value) -> bool {
        self.same_within(w, r, &mut HashSet::new())
    }

    fn same_within(&self, w: &Value, r: &Value, seen: &mut HashSet<String>) -> bool {
        if w != r {
            return false;
        }
        let mut refs = Vec::new();
        local_refs(w, &mut refs);
        refs.into_iter().all(|to| {
            // A reference already being checked is assumed the same (a cycle); any
            // difference elsewhere still fails the whole check.
            if !seen.insert(to.to_owned()) {
                return true;
            }
            match (lookup(self.writer, to), lookup(self.reader, to)) {
                (None, None) => true,
                (Some((w_target, _)), Some((r_target, _))) => {
                    self.same_within(w_target, r_target, seen)
                }
                _ => false,
            }
        })
    }
}

/// One side's effective lower (or upper) numeric bound.
struct Edge<'v> {
    keyword: &'static str,
    raw: &'v Value,
    value: f64,
    exclusive: bool,
}

impl<'v> Edge<'v> {
    fn of(map: &'v Map<String, Value>, lower: bool) -> Option<Self> {
        let keywords = if lower {
            [("minimum", false), ("exclusiveMinimum", true)]
        } else {
            [("maximum", false), ("exclusiveMaximum", true)]
        };
        keywords
            .into_iter()
            .filter_map(|(keyword, exclusive)| {
                let raw = map.get(keyword)?;
                Some(Edge {
                    keyword,
                    raw,
                    value: raw.as_f64()?,
                    exclusive,
                })
            })
            .reduce(|a, b| if b.tighter_than(&a, lower) { b } else { a })
    }

    /// Whether this bound admits fewer numbers than `other`.
    fn tighter_than(&self, other: &Edge<'_>, lower: bool) -> bool {
        if self.value == other.value {
            self.exclusive && !other.exclusive
        } else {
            (self.value > other.value) == lower
        }
    }
}

/// Whether every multiple of `wide` is a multiple of `step`, within float error.
fn divides(step: f64, wide: f64) -> bool {
    let ratio = wide / step;
    ratio.round() >= 1.0 && (ratio - ratio.round()).abs() <= 1e-9 * ratio.abs().max(1.0)
}

/// Whether `keyword` can reject a value of one of the writer's types: a keyword for one
/// type of value (`properties`, `maxLength`, …) ignores values of the others.
fn applies(w_types: Option<&[&str]>, keyword: &str) -> bool {
    let admits: fn(&str) -> bool = match keyword {
        "properties"
        | "additionalProperties"
        | "required"
        | "patternProperties"
        | "propertyNames"
        | "dependentRequired"
        | "dependentSchemas"
        | "minProperties"
        | "maxProperties"
        | "unevaluatedProperties" => |t| t == "object",
        "items" | "prefixItems" | "contains" | "minContains" | "maxContains" | "minItems"
        | "maxItems" | "uniqueItems" | "unevaluatedItems" => |t| t == "array",
        "minLength" | "maxLength" | "pattern" | "format" => |t| t == "string",
        "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" => {
            |t| t == "number" || t == "integer"
        }
        _ => return true,
    };
    w_types.is_none_or(|types| types.iter().any(|t| admits(t)))
}

fn type_names(map: &Map<String, Value>) -> Option<Vec<&str>> {
    match map.get("type")? {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(ts) => Some(ts.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// The types the writer's values may have: its `type`, else those of its `const` or `enum`
/// values; `None` for any.
fn writer_types(map: &Map<String, Value>) -> Option<Vec<&str>> {
    if let Some(types) = type_names(map) {
        return Some(types);
    }
    let mut types = Vec::new();
    for value in allowed_values(map)? {
        let t = json_type(value);
        if !types.contains(&t) {
            types.push(t);
        }
    }
    Some(types)
}

/// The values `const` or `enum` allow; `None` for any.
fn allowed_values(map: &Map<String, Value>) -> Option<Vec<&Value>> {
    match (map.get("const"), map.get("enum")) {
        (Some(value), _) => Some(vec![value]),
        (None, Some(Value::Array(values))) => Some(values.iter().collect()),
        _ => None,
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n)
            if n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0) =>
        {
            "integer"
        }
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_allows(types: &[&str], t: &str) -> bool {
    types.contains(&t) || (t == "integer" && types.contains(&"number"))
}

fn type_list(types: &[&str]) -> String {
    match types {
        [one] => (*one).to_owned(),
        _ => format!("[{}]", types.join(", ")),
    }
}

/// JSON equality as JSON Schema means it: 1 and 1.0 are the same number.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(xs), Value::Array(ys)) => {
            xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| same_value(x, y))
        }
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len()
                && xs
                    .iter()
                    .all(|(k, x)| ys.get(k).is_some_and(|y| same_value(x, y)))
        }
        _ => a == b,
    }
}

fn list<'v>(values: impl Iterator<Item = &'v Value>) -> String {
    values.map(Value::to_string).collect::<Vec<_>>().join(", ")
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|vs| vs.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A name as JSON writes it, quotes and escapes included.
fn quote(name: &str) -> String {
    Value::String(name.to_owned()).to_string()
}

/// A JSON pointer segment (RFC 6901).
fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A writer's `anyOf`/`oneOf` branch with the keywords beside the combinator (annotations
/// such as `$defs` left out: they constrain nothing). Where both have a keyword the
/// branch's wins: dropping a writer constraint can only make the check stricter, never let
/// a break through.
fn merge(rest: &Map<String, Value>, branch: &Value) -> Value {
    let rest = rest.iter().filter(|(k, _)| !is_annotation(k));
    let owned = |(k, v): (&String, &Value)| (k.clone(), v.clone());
    match branch {
        // Collecting keeps the last of a repeated key: the branch's.
        Value::Object(branch) => Value::Object(rest.chain(branch).map(owned).collect()),
        Value::Bool(true) => Value::Object(rest.map(owned).collect()),
        other => other.clone(),
    }
}

/// `{"$ref": r, ...siblings}` as `{...siblings, "allOf": [..., {"$ref": r}]}`.
fn ref_beside_siblings(map: &Map<String, Value>) -> Value {
    let mut rest = map.clone();
    let reference = rest.shift_remove("$ref").unwrap_or(Value::Null);
    let mut branches = match rest.shift_remove("allOf") {
        Some(Value::Array(branches)) => branches,
        _ => Vec::new(),
    };
    branches.push(Value::Object(Map::from_iter([(
        "$ref".to_owned(),
        reference,
    )])));
    rest.insert("allOf".to_owned(), Value::Array(branches));
    Value::Object(rest)
}

/// The target of a local reference (`#` or `#/json/pointer`, percent-encoded as a URI
/// fragment) and its JSON pointer. Anchors (`#name`) and other documents are not resolved.
fn lookup<'v>(root: &'v Value, reference: &str) -> Option<(&'v Value, String)> {
    let pointer = percent_decode(reference.strip_prefix('#')?)?;
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return None;
    }
    Some((root.pointer(&pointer)?, pointer))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The local `$ref` strings anywhere in a value.
fn local_refs<'v>(value: &'v Value, out: &mut Vec<&'v str>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match child.as_str() {
                    Some(to) if key == "$ref" && to.starts_with('#') => out.push(to),
                    _ => local_refs(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| local_refs(item, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests;
