//! Upcasting: an event written under an older version of its type's schema, turned into
//! the latest version's shape before a function, a view or a replay sees it. The log keeps
//! the bytes as they were written; only what is handed on changes.
//!
//! Each step from version N to N+1 is a declarative [`Mapping`] of the event's `data`:
//! fields removed, then renamed (moved), then given defaults where absent. A field is a
//! top-level member's name, or a JSON pointer (`/customer/id`) for a nested one. A step
//! can instead be a function ([`Step::Function`], named here, called by whoever upcasts:
//! this crate runs no code) for what a mapping cannot say: a computed field, a split, a
//! unit changed. An event
//! is upcast when its `dataschema` names an older version of its type (weir cannot tell
//! the version of an event without one), through each step there is while the registry
//! has the next version, and the result is checked against the version it reached: a
//! mapping that does not make a valid event fails loudly instead of handing on a wrong
//! one. Stopping where the steps (or the registry) stop keeps a version registered before
//! its upcaster is deployed from failing every event of the previous one.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::Registry;

/// How version N of a type becomes version N+1: applied in the order of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Fields dropped.
    pub remove: Vec<String>,
    /// Field to its new name (or pointer); the value moves.
    pub rename: Vec<(String, String)>,
    /// Field to the value it gets when the event does not have it.
    pub default: Vec<(String, Value)>,
}

/// Why a field name or pointer is not one a mapping can use, if it is not.
pub fn check_field(field: &str) -> Result<(), String> {
    if field.is_empty() || field == "/" {
        return Err(
            "a field must name a member: a name, or a JSON pointer such as /customer/id".to_owned(),
        );
    }
    if field.starts_with('/') && field.split('/').skip(1).any(str::is_empty) {
        return Err(format!("{field:?} has an empty step"));
    }
    Ok(())
}

/// A field as JSON-pointer tokens: a bare name is one token.
fn tokens(field: &str) -> Vec<String> {
    match field.strip_prefix('/') {
        Some(pointer) => pointer
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => vec![field.to_owned()],
    }
}

/// The object holding `tokens`' last member, made (as objects) where `create`.
fn parent<'a>(
    data: &'a mut Value,
    tokens: &[String],
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let (_, path) = tokens.split_last()?;
    let mut node = data;
    for token in path {
        let object = node.as_object_mut()?;
        if create && !object.contains_key(token) {
            object.insert(token.clone(), Value::Object(Map::new()));
        }
        node = object.get_mut(token)?;
    }
    node.as_object_mut()
}

fn take(data: &mut Value, field: &str) -> Option<Value> {
    let tokens = tokens(field);
    parent(data, &tokens, false)?.remove(tokens.last()?)
}

fn put(data: &mut Value, field: &str, value: Value, only_if_absent: bool) -> Result<(), String> {
    let tokens = tokens(field);
    let last = tokens.last().cloned().unwrap_or_default();
    let Some(object) = parent(data, &tokens, true) else {
        return Err(format!(
            "{field:?} is inside a member that is not an object"
        ));
    };
    if !(only_if_absent && object.contains_key(&last)) {
        object.insert(last, value);
    }
    Ok(())
}

impl Mapping {
    /// Applies the mapping to `data` (a JSON object; anything else is left as it is for
    /// the check against the next version to judge).
    pub fn apply(&self, data: &mut Value) -> Result<(), String> {
        if !data.is_object() {
            return Ok(());
        }
        for field in &self.remove {
            take(data, field);
        }
        for (from, to) in &self.rename {
            if let Some(value) = take(data, from) {
                put(data, to, value, false)?;
            }
        }
        for (field, value) in &self.default {
            put(data, field, value.clone(), true)?;
        }
        Ok(())
    }
}

/// How one version becomes the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Mapping(Mapping),
    /// The function of this name (`[functions.<name>]`): it gets the event as written in
    /// version N and returns its data in version N+1.
    Function(String),
}

/// What runs a [`Step::Function`]: `(function, from, data)` to the data in version
/// `from + 1`, or why not.
pub type CallStep<'a> = &'a dyn Fn(&str, u32, Value) -> Result<Value, String>;

/// The upcasters of an app: per type, the step from each version to the next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upcasters {
    by_type: BTreeMap<String, BTreeMap<u32, Step>>,
}

/// An event's data, upcast: the version it is now in.
#[derive(Debug, Clone, PartialEq)]
pub struct Upcast {
    pub data: Value,
    /// The version it was written in.
    pub from: u32,
    /// The version it is in now: the type's latest.
    pub to: u32,
}

impl Upcasters {
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// Adds the step of `ty` from version `from` to `from + 1`.
    pub fn insert(&mut self, ty: &str, from: u32, step: Step) {
        self.by_type
            .entry(ty.to_owned())
            .or_default()
            .insert(from, step);
    }

    /// The functions the steps name.
    pub fn functions(&self) -> impl Iterator<Item = &str> {
        self.by_type.values().flat_map(|steps| {
            steps.values().filter_map(|step| match step {
                Step::Function(name) => Some(name.as_str()),
                Step::Mapping(_) => None,
            })
        })
    }

    /// Whether `ty` has upcasters.
    pub fn has(&self, ty: &str) -> bool {
        self.by_type.contains_key(ty)
    }

    /// `data` of an event of `ty` written in version `from`, brought as far as the steps
    /// go (each while the registry has its next version: the latest when the app's
    /// upcasters are complete); `Ok(None)` when there is nothing to do (no step from
    /// `from`). `Err` names why it cannot: a mapping that fails, or a result that does
    /// not match the version it reached. `call` runs the function steps.
    pub fn upcast(
        &self,
        registry: &Registry,
        ty: &str,
        from: u32,
        data: &Value,
        call: CallStep<'_>,
    ) -> Result<Option<Upcast>, String> {
        let Some(steps) = self.by_type.get(ty) else {
            return Ok(None);
        };
        let Some(subject) = registry.subject(ty) else {
            return Ok(None);
        };
        let mut to = from;
        let mut data = data.clone();
        while let (Some(step), Some(_)) = (steps.get(&to), subject.get(to + 1)) {
            let failed = |e: String| format!("upcasting {ty:?} from version {to}: {e}");
            match step {
                Step::Mapping(mapping) => mapping.apply(&mut data).map_err(failed)?,
                Step::Function(function) => {
                    data = call(function, to, std::mem::take(&mut data)).map_err(failed)?;
                }
            }
            to += 1;
        }
        let Some(latest) = subject.get(to).filter(|_| to > from) else {
            return Ok(None);
        };
        if let Err(violations) = latest.validate(&data) {
            let broken: Vec<String> = violations.iter().map(ToString::to_string).collect();
            return Err(format!(
                "a {ty:?} event of version {from} upcast to version {to} does not match it: {}",
                broken.join("; ")
            ));
        }
        Ok(Some(Upcast { data, from, to }))
    }
}
