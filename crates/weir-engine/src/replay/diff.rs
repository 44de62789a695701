//! The pure part of a replay: comparing what two versions of a function made of the same
//! input, and tallying it into counts and a few examples. No IO, no wasm: outcomes in,
//! counts out.
//!
//! Outputs are paired per input by their index: output `i` of version A against output
//! `i` of version B. A pair is `unchanged` if its topic and the JSON form of its event are
//! equal, else `changed`; an index only B reaches is `added`, one only A reaches is
//! `removed`. An input on which a version failed counts as an error of that version (only
//! in A, only in B, or in both) and its outputs are not paired.

use serde::Serialize;
use serde_json::Value;

/// One output as the diff sees it: the topic it goes to and its event's JSON form.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparedOutput {
    pub topic: String,
    pub event: Value,
}

/// What one version made of one input: its outputs, or why it failed.
pub type Outcome = Result<Vec<ComparedOutput>, String>;

/// Where an input was read, for examples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRef {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// The input event's `id` (empty if it could not be decoded).
    pub id: String,
}

/// Outputs and errors of one version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct VersionCounts {
    /// Outputs made, over the inputs that succeeded.
    pub outputs: u64,
    /// Inputs on which the version failed.
    pub errors: u64,
}

/// The diff of version A against version B.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffCounts {
    /// Output pairs that are equal.
    pub unchanged: u64,
    /// Output pairs that differ in topic or any attribute or data.
    pub changed: u64,
    /// Outputs only B made.
    pub added: u64,
    /// Outputs only A made.
    pub removed: u64,
    /// Inputs on which only A failed.
    pub errors_only_a: u64,
    /// Inputs on which only B failed.
    pub errors_only_b: u64,
    /// Inputs on which both failed.
    pub errors_both: u64,
}

impl DiffCounts {
    /// Whether B did anything differently from A.
    pub fn differs(&self) -> bool {
        self.changed + self.added + self.removed + self.errors_only_a + self.errors_only_b > 0
    }
}

/// What an example shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    Changed,
    Added,
    Removed,
    ErrorOnlyA,
    ErrorOnlyB,
    ErrorBoth,
    /// A replay of one version: an input it failed on.
    Error,
}

/// One field of an output event that differs; a side without it is null.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// The attribute, with `.name` for object members and `[i]` for array elements, e.g.
    /// `data.lines[0].amount`.
    pub path: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

/// One difference, with the input it came from. Every key is always present (null where
/// it does not apply) so scripts can rely on them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffExample {
    pub kind: DiffKind,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub input_id: String,
    /// The output's index among the input's outputs; null for an error.
    pub output_index: Option<usize>,
    /// The topic of A's output and of B's output, where they have one.
    pub target_a: Option<String>,
    pub target_b: Option<String>,
    /// For `changed`: each field that differs.
    pub fields: Vec<FieldChange>,
    /// For `added` and `removed`: the event only one version made.
    pub output: Option<Value>,
    pub error_a: Option<String>,
    pub error_b: Option<String>,
}

impl DiffExample {
    fn new(kind: DiffKind, input: &InputRef) -> DiffExample {
        DiffExample {
            kind,
            topic: input.topic.clone(),
            partition: input.partition,
            offset: input.offset,
            input_id: input.id.clone(),
            output_index: None,
            target_a: None,
            target_b: None,
            fields: Vec::new(),
            output: None,
            error_a: None,
            error_b: None,
        }
    }
}

/// The running totals of a replay. It holds counts and at most `limit` examples, never
/// the outputs themselves, so a replay of any length runs in bounded memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub inputs: u64,
    pub a: VersionCounts,
    /// None when only one version runs.
    pub b: Option<VersionCounts>,
    pub diff: Option<DiffCounts>,
    pub examples: Vec<DiffExample>,
    limit: usize,
}

impl Tally {
    /// Totals of a replay of one version (`compare` false) or of two, keeping at most
    /// `examples` examples.
    pub fn new(compare: bool, examples: usize) -> Tally {
        Tally {
            inputs: 0,
            a: VersionCounts::default(),
            b: compare.then(VersionCounts::default),
            diff: compare.then(DiffCounts::default),
            examples: Vec::new(),
            limit: examples,
        }
    }

    /// Count one input: what A made of it and, when comparing, what B made of it.
    pub fn add(&mut self, input: &InputRef, a: &Outcome, b: Option<&Outcome>) {
        self.inputs += 1;
        count(&mut self.a, a);
        let Some(b) = b else {
            if let Err(message) = a {
                let mut example = DiffExample::new(DiffKind::Error, input);
                example.error_a = Some(message.clone());
                self.example(example);
            }
            return;
        };
        let mut b_counts = self.b.unwrap_or_default();
        count(&mut b_counts, b);
        self.b = Some(b_counts);
        let mut diff = self.diff.unwrap_or_default();
        let mut examples = Vec::new();
        match (a, b) {
            (Ok(a), Ok(b)) => {
                for index in 0..a.len().max(b.len()) {
                    let mut e = match (a.get(index), b.get(index)) {
                        (Some(x), Some(y)) if x == y => {
                            diff.unchanged += 1;
                            continue;
                        }
                        (Some(x), Some(y)) => {
                            diff.changed += 1;
                            let mut e = DiffExample::new(DiffKind::Changed, input);
                            e.target_a = Some(x.topic.clone());
                            e.target_b = Some(y.topic.clone());
                            e.fields = field_changes(&x.event, &y.event);
                            e
                        }
                        (None, Some(y)) => {
                            diff.added += 1;
                            let mut e = DiffExample::new(DiffKind::Added, input);
                            e.target_b = Some(y.topic.clone());
                            e.output = Some(y.event.clone());
                            e
                        }
                        (Some(x), None) => {
                            diff.removed += 1;
                            let mut e = DiffExample::new(DiffKind::Removed, input);
                            e.target_a = Some(x.topic.clone());
                            e.output = Some(x.event.clone());
                            e
                        }
                        (None, None) => continue,
                    };
                    e.output_index = Some(index);
                    examples.push(e);
                }
            }
            (Err(error), Ok(_)) => {
                diff.errors_only_a += 1;
                let mut e = DiffExample::new(DiffKind::ErrorOnlyA, input);
                e.error_a = Some(error.clone());
                examples.push(e);
            }
            (Ok(_), Err(error)) => {
                diff.errors_only_b += 1;
                let mut e = DiffExample::new(DiffKind::ErrorOnlyB, input);
                e.error_b = Some(error.clone());
                examples.push(e);
            }
            (Err(error_a), Err(error_b)) => {
                diff.errors_both += 1;
                let mut e = DiffExample::new(DiffKind::ErrorBoth, input);
                e.error_a = Some(error_a.clone());
                e.error_b = Some(error_b.clone());
                examples.push(e);
            }
        }
        self.diff = Some(diff);
        for example in examples {
            self.example(example);
        }
    }

    fn example(&mut self, example: DiffExample) {
        if self.examples.len() < self.limit {
            self.examples.push(example);
        }
    }
}

fn count(counts: &mut VersionCounts, outcome: &Outcome) {
    match outcome {
        Ok(outputs) => counts.outputs += outputs.len() as u64,
        Err(_) => counts.errors += 1,
    }
}

/// The fields in which `b` differs from `a`, in `a`'s order then the members only `b`
/// has: object members and array elements are compared one by one, anything else as a
/// whole.
pub fn field_changes(a: &Value, b: &Value) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    compare(String::new(), Some(a), Some(b), &mut changes);
    changes
}

fn compare(path: String, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let member = |key: &str| {
                if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                }
            };
            for (key, value) in x {
                compare(member(key), Some(value), y.get(key), out);
            }
            for (key, value) in y {
                if !x.contains_key(key) {
                    compare(member(key), None, Some(value), out);
                }
            }
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            for index in 0..x.len().max(y.len()) {
                compare(format!("{path}[{index}]"), x.get(index), y.get(index), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange {
            path: if path.is_empty() {
                "$".to_owned()
            } else {
                path
            },
            a: a.cloned(),
            b: b.cloned(),
        }),
    }
}
