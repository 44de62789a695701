//! `weir replay`: run a pipeline's recorded events through a function version (the active
//! one, a kept one, and optionally a new `.wasm`) on the node, without publishing
//! anything, and show the difference in their outputs.

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::client::{NodeUrl, connect_error, failure};

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The pipeline whose source events are replayed through its function.
    pipeline: String,
    /// Only this partition of the pipeline's source topics (all by default).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at this offset in each partition (default: the first retained event).
    #[arg(long, conflicts_with = "from_time")]
    from_offset: Option<u64>,
    /// Start at the first event appended at or after this RFC 3339 time.
    #[arg(long)]
    from_time: Option<String>,
    /// Stop before this offset in each partition (default: the end when the replay starts).
    #[arg(long, conflicts_with = "to_time")]
    to_offset: Option<u64>,
    /// Stop before the first event appended at or after this RFC 3339 time.
    #[arg(long)]
    to_time: Option<String>,
    /// Version A: a kept version of the function (`weir status --json` lists them);
    /// the active one by default.
    #[arg(long)]
    version: Option<String>,
    /// Version B: a new component to compare with A; it is compiled with the function's
    /// current settings but not deployed.
    #[arg(long)]
    wasm: Option<PathBuf>,
    /// How many differences (or errors) to show.
    #[arg(long, default_value_t = 5)]
    examples: usize,
    /// With upcasters (`[schemas.TYPE.upcast.N]`): the events as the pipeline sees them,
    /// upcast to their type's latest schema version (`upcast`), as they were written
    /// (`as-written`), or both (`compare`: A on the events as written, B the same version
    /// on them upcast, diffed).
    #[arg(long, value_parser = ["upcast", "as-written", "compare"])]
    schemas: Option<String>,
    /// Print the report as one JSON object on the last line of stdout, with no progress bar.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeUrl,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = vec![("examples", args.examples.to_string())];
    let optional = [
        ("partition", args.partition.map(|p| p.to_string())),
        ("from_offset", args.from_offset.map(|o| o.to_string())),
        ("from_time", args.from_time.clone()),
        ("to_offset", args.to_offset.map(|o| o.to_string())),
        ("to_time", args.to_time.clone()),
        ("version", args.version.clone()),
        (
            "schemas",
            args.schemas.as_ref().map(|s| s.replace('-', "_")),
        ),
    ];
    query.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    let mut request = args
        .node
        .http()?
        .post(
            args.node
                .join(&format!("/v1/pipelines/{}/replay", args.pipeline)),
        )
        .query(&query);
    if let Some(path) = &args.wasm {
        let wasm = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {}; pass --wasm the built .wasm component",
                path.display()
            )
        })?;
        if wasm.is_empty() {
            bail!(
                "{} is empty; pass --wasm the built .wasm component",
                path.display()
            );
        }
        request = request
            .header("content-type", "application/wasm")
            .body(wasm);
    }
    let response = request
        .send()
        .await
        .map_err(connect_error(&args.node.url))?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "replaying {bar:40.cyan/blue} {pos}/{len} events  {elapsed_precise}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let mut body = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut report = None;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("the replay's answer broke off: {e}"))?;
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let message: Value = serde_json::from_slice(&line)
                .context("the node sent a replay line that is not JSON")?;
            if let Some(p) = message.get("progress") {
                bar.set_length(p["total"].as_u64().unwrap_or(0));
                bar.set_position(p["done"].as_u64().unwrap_or(0));
            } else if let Some(r) = message.get("report") {
                report = Some(r.clone());
            } else if let Some(e) = message.get("error") {
                bar.finish_and_clear();
                bail!(
                    "the replay failed: {}",
                    e["detail"].as_str().unwrap_or("(no detail)")
                );
            }
        }
    }
    bar.finish_and_clear();
    let report =
        report.context("the replay's answer ended before its report; the node may have stopped")?;
    if args.json {
        println!("{report}");
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn version_line(label: &str, v: &Value) -> String {
    format!(
        "  {label}  {} ({}): {} outputs, {} errors\n",
        v["version"].as_str().unwrap_or(""),
        v["source"].as_str().unwrap_or(""),
        count(&v["outputs"]),
        count(&v["errors"]),
    )
}

/// The report for people.
fn summary(report: &Value) -> String {
    let mut s = format!(
        "replayed {} events of pipeline {} through function {}\n",
        count(&report["inputs"]),
        report["pipeline"].as_str().unwrap_or(""),
        report["function"].as_str().unwrap_or(""),
    );
    for r in report["ranges"].as_array().into_iter().flatten() {
        s += &format!(
            "  {} partition {}: offsets {}..{}\n",
            r["topic"].as_str().unwrap_or(""),
            r["partition"],
            r["from"],
            r["to"]
        );
    }
    if report["schemas"] == "compare" {
        s += "A ran on the events as written, B on them upcast to their schemas' latest versions\n";
    }
    s += &version_line("A", &report["a"]);
    if !report["b"].is_null() {
        s += &version_line("B", &report["b"]);
    }
    let d = &report["diff"];
    if !d.is_null() {
        s += &format!(
            "diff: {} unchanged, {} changed, {} added, {} removed; errors: {} only in A, {} only in B, {} in both\n",
            count(&d["unchanged"]),
            count(&d["changed"]),
            count(&d["added"]),
            count(&d["removed"]),
            count(&d["errors_only_a"]),
            count(&d["errors_only_b"]),
            count(&d["errors_both"]),
        );
    }
    let examples = report["examples"].as_array().cloned().unwrap_or_default();
    if !examples.is_empty() {
        s += if d.is_null() {
            "errors:\n"
        } else {
            "examples:\n"
        };
    }
    for e in &examples {
        s += &format!(
            "  {}  {} partition {} offset {} (id {})",
            e["kind"].as_str().unwrap_or(""),
            e["topic"].as_str().unwrap_or(""),
            e["partition"],
            e["offset"],
            e["input_id"].as_str().unwrap_or(""),
        );
        if let Some(i) = e["output_index"].as_u64() {
            s += &format!(" output {i}");
        }
        match (e["target_a"].as_str(), e["target_b"].as_str()) {
            (Some(a), Some(b)) if a != b => s += &format!(" to {a} -> {b}"),
            (Some(t), _) | (None, Some(t)) => s += &format!(" to {t}"),
            (None, None) => {}
        }
        s += "\n";
        for f in e["fields"].as_array().into_iter().flatten() {
            s += &format!(
                "      {}: {} -> {}\n",
                f["path"].as_str().unwrap_or(""),
                compact(&f["a"]),
                compact(&f["b"])
            );
        }
        if !e["output"].is_null() {
            s += &format!("      {}\n", compact(&e["output"]));
        }
        for (label, key) in [("A", "error_a"), ("B", "error_b")] {
            if let Some(error) = e[key].as_str() {
                s += &format!("      {label}: {error}\n");
            }
        }
    }
    s
}

/// A JSON value on one line, cut short if long.
fn compact(v: &Value) -> String {
    const MAX: usize = 200;
    let text = if v.is_null() {
        "(none)".to_owned()
    } else {
        v.to_string()
    };
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
