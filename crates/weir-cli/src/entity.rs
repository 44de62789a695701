//! `weir entity`: send a command to an event-sourced entity, or show its state (also as
//! of a version or a time) or its journal, over the node's HTTP API.

use anyhow::Context;

use crate::client::{NodeUrl, connect_error, failure};

#[derive(Debug, clap::Args)]
pub struct EntityArgs {
    /// The entity type (`[entities.TYPE]` in weir.toml).
    #[arg(value_name = "TYPE")]
    ty: String,
    /// The entity's id.
    id: String,
    /// A command to send; without one, print the entity's state.
    command: Option<String>,
    /// The command's data (JSON).
    #[arg(long, requires = "command")]
    data: Option<String>,
    /// Send the command only if the entity is at this version (HTTP If-Match).
    #[arg(long, requires = "command")]
    if_match: Option<u64>,
    /// Show the state after this many events.
    #[arg(long, conflicts_with_all = ["command", "at", "events"])]
    version: Option<u64>,
    /// Show the state as of this time (RFC 3339, or milliseconds since the Unix epoch).
    #[arg(long, conflicts_with_all = ["command", "events"])]
    at: Option<String>,
    /// Print the entity's events (its journal), one JSON event per line.
    #[arg(long, conflicts_with = "command")]
    events: bool,
    #[command(flatten)]
    node: NodeUrl,
}

/// `<node>/v1/entities/<type>/<id>[/<more>...]`, each segment percent-encoded.
fn entity_url(node: &NodeUrl, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    node.url("/v1/entities", segments)
}

pub async fn run(args: EntityArgs) -> anyhow::Result<()> {
    let http = args.node.http()?;
    let request = if let Some(command) = &args.command {
        let url = entity_url(&args.node, &[&args.ty, &args.id, "commands", command])?;
        let data = args.data.clone().unwrap_or_default();
        if !data.is_empty() {
            serde_json::from_str::<serde_json::Value>(&data)
                .with_context(|| format!("--data {data:?} is not JSON"))?;
        }
        let mut request = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(data);
        if let Some(version) = args.if_match {
            request = request.header(reqwest::header::IF_MATCH, format!("\"{version}\""));
        }
        request
    } else if args.events {
        http.get(entity_url(&args.node, &[&args.ty, &args.id, "events"])?)
            .query(&[("limit", "1000")])
    } else {
        let mut url = entity_url(&args.node, &[&args.ty, &args.id])?;
        if let Some(version) = args.version {
            url.query_pairs_mut()
                .append_pair("version", &version.to_string());
        }
        if let Some(at) = &args.at {
            url.query_pairs_mut().append_pair("at", at);
        }
        http.get(url)
    };
    let response = request
        .send()
        .await
        .map_err(connect_error(&args.node.url))?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    let body: serde_json::Value = response.json().await?;
    if args.events {
        for event in body.as_array().into_iter().flatten() {
            println!("{event}");
        }
    } else {
        println!("{}", serde_json::to_string_pretty(&body)?);
    }
    Ok(())
}
