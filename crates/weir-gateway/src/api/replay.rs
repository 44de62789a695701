//! Replays: `POST /v1/pipelines/{name}/replay`, answered as NDJSON lines.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_engine::replay::diff;

use crate::Problem;

/// `POST /v1/pipelines/{name}/replay`. Times are RFC 3339.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// Replay one source partition only.
    pub partition: Option<u32>,
    /// The first offset (default: the oldest stored).
    pub from_offset: Option<u64>,
    /// Or the first event at or after this time.
    pub from_time: Option<String>,
    /// The end offset, exclusive (default: the end when the replay starts).
    pub to_offset: Option<u64>,
    /// Or the end at this time.
    pub to_time: Option<String>,
    /// A kept version as version A (default: the active one).
    pub version: Option<String>,
    /// How many examples of differences the report shows (default 5).
    pub examples: Option<usize>,
    /// With upcasters: `upcast` (default: the events upcast to their type's latest schema
    /// version, as the pipeline sees them), `as_written`, or `compare` (version A on the
    /// events as written, then again, as B, on them upcast).
    pub schemas: Option<String>,
}

/// One line of a replay's answer: progress lines, then a report, or an error if the
/// replay fails midway.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplayLine {
    Progress(ReplayProgress),
    Report(ReplayReport),
    Error(Problem),
}

/// Events replayed so far, of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct ReplayProgress {
    pub done: u64,
    pub total: u64,
}

impl From<weir_engine::ReplayProgress> for ReplayProgress {
    fn from(p: weir_engine::ReplayProgress) -> ReplayProgress {
        ReplayProgress {
            done: p.done,
            total: p.total,
        }
    }
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReport {
    pub pipeline: String,
    pub function: String,
    pub ranges: Vec<ReplayRange>,
    /// Events read and run.
    pub inputs: u64,
    pub a: VersionReport,
    /// Null when only version A ran.
    pub b: Option<VersionReport>,
    /// Null when only version A ran.
    pub diff: Option<DiffCounts>,
    /// The events' shape the versions saw: `upcast`, `as_written` or `compare`.
    #[schema(example = "upcast")]
    pub schemas: &'static str,
    /// The first differences (with B) or errors (A alone), in input order.
    pub examples: Vec<DiffExample>,
}

impl From<weir_engine::ReplayReport> for ReplayReport {
    fn from(r: weir_engine::ReplayReport) -> ReplayReport {
        ReplayReport {
            pipeline: r.pipeline,
            function: r.function,
            ranges: r.ranges.into_iter().map(Into::into).collect(),
            inputs: r.inputs,
            a: r.a.into(),
            b: r.b.map(Into::into),
            diff: r.diff.map(Into::into),
            schemas: r.schemas.as_str(),
            examples: r.examples.into_iter().map(Into::into).collect(),
        }
    }
}

/// The part of one source partition a replay read.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayRange {
    pub topic: String,
    pub partition: u32,
    pub from: u64,
    /// Exclusive.
    pub to: u64,
}

impl From<weir_engine::ReplayRange> for ReplayRange {
    fn from(r: weir_engine::ReplayRange) -> ReplayRange {
        ReplayRange {
            topic: r.topic,
            partition: r.partition,
            from: r.from,
            to: r.to,
        }
    }
}

/// What one version made of the range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VersionReport {
    pub version: String,
    pub source: VersionSource,
    pub outputs: u64,
    pub errors: u64,
}

impl From<weir_engine::VersionReport> for VersionReport {
    fn from(v: weir_engine::VersionReport) -> VersionReport {
        VersionReport {
            version: v.version,
            source: v.source.into(),
            outputs: v.outputs,
            errors: v.errors,
        }
    }
}

/// Where a replayed version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VersionSource {
    /// The function's active version.
    Active,
    /// A kept version named by `version`.
    Kept,
    /// The component sent with the request.
    Candidate,
}

impl From<weir_engine::VersionSource> for VersionSource {
    fn from(s: weir_engine::VersionSource) -> VersionSource {
        match s {
            weir_engine::VersionSource::Active => VersionSource::Active,
            weir_engine::VersionSource::Kept => VersionSource::Kept,
            weir_engine::VersionSource::Candidate => VersionSource::Candidate,
        }
    }
}

/// The diff of version A against version B.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
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

impl From<diff::DiffCounts> for DiffCounts {
    fn from(d: diff::DiffCounts) -> DiffCounts {
        DiffCounts {
            unchanged: d.unchanged,
            changed: d.changed,
            added: d.added,
            removed: d.removed,
            errors_only_a: d.errors_only_a,
            errors_only_b: d.errors_only_b,
            errors_both: d.errors_both,
        }
    }
}

/// What an example shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
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

impl From<diff::DiffKind> for DiffKind {
    fn from(k: diff::DiffKind) -> DiffKind {
        match k {
            diff::DiffKind::Changed => DiffKind::Changed,
            diff::DiffKind::Added => DiffKind::Added,
            diff::DiffKind::Removed => DiffKind::Removed,
            diff::DiffKind::ErrorOnlyA => DiffKind::ErrorOnlyA,
            diff::DiffKind::ErrorOnlyB => DiffKind::ErrorOnlyB,
            diff::DiffKind::ErrorBoth => DiffKind::ErrorBoth,
            diff::DiffKind::Error => DiffKind::Error,
        }
    }
}

/// One difference, with the input it came from. Every key is always present (null where
/// it does not apply).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiffExample {
    pub kind: DiffKind,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub input_id: String,
    /// The output's index among the input's outputs; null for an error.
    pub output_index: Option<usize>,
    /// The topic of A's output, where it has one.
    pub target_a: Option<String>,
    /// The topic of B's output, where it has one.
    pub target_b: Option<String>,
    /// For `changed`: each field that differs.
    pub fields: Vec<FieldChange>,
    /// For `added` and `removed`: the event only one version made.
    pub output: Option<serde_json::Value>,
    pub error_a: Option<String>,
    pub error_b: Option<String>,
}

impl From<diff::DiffExample> for DiffExample {
    fn from(e: diff::DiffExample) -> DiffExample {
        DiffExample {
            kind: e.kind.into(),
            topic: e.topic,
            partition: e.partition,
            offset: e.offset,
            input_id: e.input_id,
            output_index: e.output_index,
            target_a: e.target_a,
            target_b: e.target_b,
            fields: e.fields.into_iter().map(Into::into).collect(),
            output: e.output,
            error_a: e.error_a,
            error_b: e.error_b,
        }
    }
}

/// One field of an output event that differs; a side without it is null.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldChange {
    /// The attribute, with `.name` for object members and `[i]` for array elements, e.g.
    /// `data.lines[0].amount`.
    pub path: String,
    pub a: Option<serde_json::Value>,
    pub b: Option<serde_json::Value>,
}

impl From<diff::FieldChange> for FieldChange {
    fn from(f: diff::FieldChange) -> FieldChange {
        FieldChange {
            path: f.path,
            a: f.a,
            b: f.b,
        }
    }
}
