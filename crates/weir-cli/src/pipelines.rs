//! `weir redrive`: send a pipeline's dead letters back to their source topics, or deliver
//! a sink's again (`--sink`).

use crate::client::{NodeUrl, send_json};

#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// The pipeline whose dead letters to re-drive (the sink's, with `--sink`).
    pipeline: String,
    /// Re-drive the dead letters of the sink of that name: deliver them to its
    /// destination again.
    #[arg(long)]
    sink: bool,
    #[command(flatten)]
    node: NodeUrl,
    /// Re-drive at most this many events.
    #[arg(long)]
    limit: Option<u64>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

pub async fn redrive(args: RedriveArgs) -> anyhow::Result<()> {
    let kind = if args.sink { "sinks" } else { "pipelines" };
    let mut url = args
        .node
        .join(&format!("/v1/{kind}/{}/redrive", args.pipeline));
    if let Some(limit) = args.limit {
        url.push_str(&format!("?limit={limit}"));
    }
    let report = send_json(args.node.http()?.post(url), &args.node).await?;
    if args.json {
        println!("{report}");
        return Ok(());
    }
    if args.sink {
        println!(
            "delivered {} dead letter(s) of sink {} from {} again ({} refused again, {} skipped)",
            report["delivered"],
            args.pipeline,
            report["dead_letter"].as_str().unwrap_or(""),
            report["refused"],
            report["skipped"]
        );
        if let Some(stopped) = report["stopped"].as_str() {
            println!(
                "  stopped early, the destination could not take {stopped}; run it again later"
            );
        }
        return Ok(());
    }
    println!(
        "re-drove {} dead letter(s) of pipeline {} from {} ({} skipped)",
        report["redriven"],
        args.pipeline,
        report["dead_letter"].as_str().unwrap_or(""),
        report["skipped"]
    );
    for (topic, count) in report["topics"].as_object().into_iter().flatten() {
        println!("  {count} to {topic}");
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct JobArgs {
    /// The job's id (from the route's `202` answer, or the last part of its `Location`).
    id: String,
    #[command(flatten)]
    node: NodeUrl,
    /// Wait up to this many seconds for the job to finish.
    #[arg(long, default_value_t = 0)]
    wait: u64,
}

/// Print the job as JSON; fail when it failed, or is still running after `--wait`.
pub async fn job(args: JobArgs) -> anyhow::Result<()> {
    let mut url = reqwest::Url::parse(&args.node.join("/v1/jobs"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("the node's URL cannot take a path"))?
        .push(&args.id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait);
    loop {
        let response = args
            .node
            .http()?
            .get(url.clone())
            .send()
            .await
            .map_err(crate::client::connect_error(&args.node.url))?;
        let waiting = std::time::Instant::now() < deadline;
        // 503: the node's jobs view is catching up with its log; ask again.
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && waiting {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        if !response.status().is_success() {
            return Err(crate::client::failure(response).await);
        }
        let job: serde_json::Value = response.json().await?;
        let status = job["status"].as_str().unwrap_or_default().to_owned();
        if status == "accepted" && waiting {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        println!("{}", serde_json::to_string_pretty(&job)?);
        return match status.as_str() {
            "succeeded" => Ok(()),
            "failed" => anyhow::bail!("job {} failed: {}", args.id, job["error"]["message"]),
            _ => anyhow::bail!("job {} has not finished", args.id),
        };
    }
}
