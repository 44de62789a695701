//! `weir deploy` and `weir rollback`: put new function versions on a running node
//! without a restart, and go back to a kept one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine as _;
use weir_manifest::Manifest;

use crate::client::{NodeUrl, send_json};

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The app manifest; its functions' `source` files are sent with it.
    #[arg(long, env = "WEIR_APP", default_value = "weir.toml")]
    app: PathBuf,
    #[command(flatten)]
    node: NodeUrl,
    /// Print the node's answer as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The function to roll back.
    function: String,
    /// The version to go back to (`weir status --json` lists the kept ones); by default
    /// the version active before the current one.
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    node: NodeUrl,
    #[arg(long)]
    json: bool,
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.app)
        .with_context(|| format!("cannot read {}; pass --app weir.toml", args.app.display()))?;
    // Validate here too, so a broken manifest is reported before anything is sent.
    let manifest = Manifest::load(&args.app)?;
    let mut functions = BTreeMap::new();
    for (name, spec) in &manifest.functions {
        let wasm = std::fs::read(&spec.source).with_context(|| {
            format!(
                "cannot read function {name:?} from {}; build it first or fix `source` in {}",
                spec.source.display(),
                args.app.display()
            )
        })?;
        functions.insert(
            name.clone(),
            base64::engine::general_purpose::STANDARD.encode(wasm),
        );
    }
    // The schema files too: the node may be on another machine.
    let schemas = weir_engine::read_schema_documents(&manifest)?;
    let body = serde_json::json!({ "manifest": text, "functions": functions, "schemas": schemas });
    let request = args
        .node
        .http()?
        .post(args.node.join("/v1/deploy"))
        .json(&body);
    let answer = send_json(request, &args.node).await?;
    if args.json {
        println!("{answer}");
        return Ok(());
    }
    println!(
        "deployed app {} to {}",
        answer["app"].as_str().unwrap_or(""),
        args.node.url
    );
    for f in answer["functions"].as_array().into_iter().flatten() {
        let name = f["name"].as_str().unwrap_or("");
        let version = f["version"].as_str().unwrap_or("");
        match (f["previous"].as_str(), f["reloaded"].as_bool()) {
            (None, _) => println!("  function {name}: new, {version}"),
            (Some(old), Some(true)) if old != version => {
                println!("  function {name}: {old} -> {version}")
            }
            (Some(_), Some(true)) => println!("  function {name}: {version}, settings updated"),
            (Some(_), _) => println!("  function {name}: {version}, unchanged"),
        }
    }
    for t in answer["topics"].as_array().into_iter().flatten() {
        println!("  topic {}: created or updated", t.as_str().unwrap_or(""));
    }
    for p in answer["pipelines"].as_array().into_iter().flatten() {
        println!("  pipeline {}: started", p.as_str().unwrap_or(""));
    }
    Ok(())
}

pub async fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let body = match &args.to {
        Some(version) => serde_json::json!({ "version": version }),
        None => serde_json::json!({}),
    };
    let request = args
        .node
        .http()?
        .post(
            args.node
                .join(&format!("/v1/functions/{}/rollback", args.function)),
        )
        .json(&body);
    let answer = send_json(request, &args.node).await?;
    if args.json {
        println!("{answer}");
    } else {
        println!(
            "function {}: {} -> {}",
            args.function,
            answer["previous"].as_str().unwrap_or("none"),
            answer["version"].as_str().unwrap_or("")
        );
    }
    Ok(())
}
