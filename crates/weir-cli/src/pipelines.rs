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
