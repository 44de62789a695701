//! `weir view`: query a CQRS view over the node's HTTP API.

use anyhow::Context;

use crate::client::{NodeUrl, connect_error, failure};

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// The view (`[views.NAME]` in weir.toml).
    name: String,
    /// A filter on an indexed column: `COLUMN=VALUE`, or `COLUMN.OP=VALUE` with OP one
    /// of gt, gte, lt, lte, prefix; repeat for more (all must hold).
    #[arg(long = "where", value_name = "FILTER")]
    filters: Vec<String>,
    /// Sort on an indexed column; `-COLUMN` sorts descending.
    #[arg(long, allow_hyphen_values = true)]
    sort: Option<String>,
    /// Rows per page (at most 1000).
    #[arg(long)]
    limit: Option<usize>,
    /// Every page, not only the first.
    #[arg(long)]
    all: bool,
    /// Wait until the view has what this consistency token (from `weir entity`) names.
    #[arg(long)]
    consistency: Option<String>,
    /// Rebuild the view from its sources' earliest events into a new table, swapped in
    /// when it has caught up, and wait for it (admin operation `views`).
    #[arg(long, conflicts_with_all = ["filters", "sort", "limit", "all", "consistency"])]
    rebuild: bool,
    #[command(flatten)]
    node: NodeUrl,
}

pub async fn run(args: ViewArgs) -> anyhow::Result<()> {
    if args.rebuild {
        return rebuild(&args).await;
    }
    let http = args.node.http()?;
    let mut url = args.node.url("/v1/views", &[&args.name])?;
    {
        let mut query = url.query_pairs_mut();
        for filter in &args.filters {
            let (column, value) = filter
                .split_once('=')
                .with_context(|| format!("--where {filter:?} is not COLUMN=VALUE"))?;
            query.append_pair(column, value);
        }
        if let Some(sort) = &args.sort {
            query.append_pair("sort", sort);
        }
        if let Some(limit) = args.limit {
            query.append_pair("limit", &limit.to_string());
        }
        if let Some(token) = &args.consistency {
            query.append_pair("consistency", token);
        }
    }
    let mut page: Option<String> = None;
    loop {
        let mut page_url = url.clone();
        if let Some(token) = &page {
            page_url.query_pairs_mut().append_pair("page", token);
        }
        let response = http
            .get(page_url)
            .send()
            .await
            .map_err(connect_error(&args.node.url))?;
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        let body: serde_json::Value = response.json().await?;
        for row in body["rows"].as_array().into_iter().flatten() {
            println!("{row}");
        }
        page = body["next_page"].as_str().map(str::to_owned);
        match &page {
            Some(_) if args.all => {}
            Some(token) => {
                eprintln!("(more rows: --all prints every page; next page token {token})");
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

/// Start a rebuild and follow it in the node's status until it is done or failed.
async fn rebuild(args: &ViewArgs) -> anyhow::Result<()> {
    let http = args.node.http()?;
    let url = args.node.url("/v1/views", &[&args.name, "rebuild"])?;
    let response = http
        .post(url)
        .send()
        .await
        .map_err(connect_error(&args.node.url))?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let response = http
            .get(args.node.join("/v1/status"))
            .send()
            .await
            .map_err(connect_error(&args.node.url))?;
        if !response.status().is_success() {
            return Err(failure(response).await);
        }
        let status: serde_json::Value = response.json().await?;
        let view = status["views"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == args.name.as_str())
            .cloned()
            .unwrap_or_default();
        let rebuild = &view["rebuild"];
        match rebuild["state"].as_str() {
            Some("done") => {
                println!(
                    "view {} rebuilt from {} events and swapped in",
                    args.name, rebuild["events"]
                );
                return Ok(());
            }
            Some("failed") => anyhow::bail!(
                "the rebuild of view {} failed (the view serves its old table): {}",
                args.name,
                rebuild["error"].as_str().unwrap_or("")
            ),
            _ => {}
        }
    }
}
