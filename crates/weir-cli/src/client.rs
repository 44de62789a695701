//! The commands that talk to a running node over its HTTP API: publish, tail, status.

use std::path::PathBuf;

use anyhow::{Context, bail};
use futures::StreamExt;
use weir_cloudevents::{CloudEvent, Data, Json};

/// Where the node is, and how to prove who we are to it.
#[derive(Debug, clap::Args)]
pub struct NodeUrl {
    /// The node's HTTP address (`https://…` for a node with TLS).
    #[arg(long, default_value = "http://127.0.0.1:7700", env = "WEIR_URL")]
    pub(crate) url: String,
    /// An API key (`weir auth key create`) or a JWT, sent as `Authorization: Bearer`.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// A PEM certificate to trust for an `https://` node (a self-signed one), besides the
    /// system's roots.
    #[arg(long, env = "WEIR_CA_CERT")]
    pub(crate) ca_cert: Option<PathBuf>,
}

impl NodeUrl {
    pub(crate) fn join(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    /// `<node><base>/<segment>/...`, each segment percent-encoded.
    pub(crate) fn url(&self, base: &str, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
        use anyhow::Context as _;
        let mut url = reqwest::Url::parse(&self.join(base))
            .with_context(|| format!("--url {:?} is not a URL", self.url))?;
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--url {:?} cannot have a path", self.url))?
            .extend(segments);
        Ok(url)
    }

    /// A client for the node: the token on every request, the CA trusted.
    pub(crate) fn http(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder();
        if let Some(token) = &self.token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .context("the token has characters a header cannot carry")?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(path) = &self.ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem).with_context(|| {
                format!("--ca-cert {} is not a PEM certificate", path.display())
            })?;
            builder = builder.add_root_certificate(cert);
        }
        Ok(builder.build()?)
    }
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// The topic to publish to.
    topic: String,
    #[command(flatten)]
    node: NodeUrl,
    /// A file of events, one structured JSON event per line (`-` for stdin).
    #[arg(long, conflicts_with_all = ["ty", "data"])]
    file: Option<PathBuf>,
    /// The event's `type` (required without --file).
    #[arg(long = "type", required_unless_present = "file")]
    ty: Option<String>,
    /// The event's `source`.
    #[arg(long, default_value = "weir://cli")]
    source: String,
    /// The event's `id`; a random one by default.
    #[arg(long)]
    id: Option<String>,
    /// The event's `subject`.
    #[arg(long)]
    subject: Option<String>,
    /// The partition key (the `partitionkey` extension).
    #[arg(long)]
    key: Option<String>,
    /// The data, as JSON (use --text for plain text).
    #[arg(long)]
    data: Option<String>,
    /// Send --data as text/plain instead of JSON.
    #[arg(long, requires = "data")]
    text: bool,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The topic to follow.
    topic: String,
    #[command(flatten)]
    node: NodeUrl,
    /// Where to start: earliest, latest, an offset, or an RFC 3339 time.
    #[arg(long, default_value = "latest")]
    from: String,
    /// Exit after this many events.
    #[arg(long)]
    limit: Option<usize>,
    /// Consume as a member of this consumer group: members share the topic's partitions
    /// and the group's position is kept (then --from applies only to a new group).
    #[arg(long)]
    group: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// A group's committed position and lag in each partition of a topic.
    Show {
        group: String,
        #[arg(long)]
        topic: String,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// Move a group's position in a topic (a pipeline's while it runs, on every member of
    /// a fleet; a subscribers' group only while it has no live consumers).
    Reset {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest, an offset, or an RFC 3339 time.
        #[arg(long)]
        to: String,
        /// Only this partition (repeat for several; default: every partition).
        #[arg(long = "partition")]
        partitions: Vec<u32>,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
}

pub async fn group(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Show {
            group,
            topic,
            node,
            json,
        } => {
            let request = node
                .http()?
                .get(node.join(&format!("/v1/groups/{group}")))
                .query(&[("topic", &topic)]);
            let status = send_json(request, &node).await?;
            if json {
                println!("{status}");
                return Ok(());
            }
            println!(
                "group {group} on {topic}: {} live member(s)",
                status["members"]
            );
            for p in status["partitions"].as_array().into_iter().flatten() {
                println!(
                    "  partition {}  committed {}  end {}  lag {}",
                    p["partition"], p["committed"], p["end_offset"], p["lag"]
                );
            }
            Ok(())
        }
        GroupCommand::Reset {
            group,
            topic,
            to,
            partitions,
            node,
            json,
        } => {
            let to_value = match to.parse::<u64>() {
                Ok(offset) => serde_json::json!(offset),
                Err(_) => serde_json::json!(to),
            };
            let request = node
                .http()?
                .post(node.join(&format!("/v1/groups/{group}/reset")))
                .json(&if partitions.is_empty() {
                    serde_json::json!({ "topic": topic, "to": to_value })
                } else {
                    serde_json::json!({ "topic": topic, "to": to_value, "partitions": partitions })
                });
            let answer = send_json(request, &node).await?;
            if json {
                println!("{answer}");
            } else {
                for p in answer["offsets"].as_array().into_iter().flatten() {
                    println!(
                        "group {group} on {topic} partition {} now at offset {}",
                        p["partition"], p["offset"]
                    );
                }
            }
            Ok(())
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeUrl,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
}

/// The error of a failed response: the problem's `detail` when it is problem+json.
pub(crate) async fn failure(response: reqwest::Response) -> anyhow::Error {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or(body);
    anyhow::anyhow!("the node answered {status}: {detail}")
}

/// Send a request to the node and return its JSON answer, or the node's problem as an
/// error.
pub(crate) async fn send_json(
    request: reqwest::RequestBuilder,
    node: &NodeUrl,
) -> anyhow::Result<serde_json::Value> {
    Ok(send_checked(request, node).await?.json().await?)
}

/// Send a request to the node and return its successful answer, or the node's problem
/// as an error.
pub(crate) async fn send_checked(
    request: reqwest::RequestBuilder,
    node: &NodeUrl,
) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.map_err(connect_error(&node.url))?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    Ok(response)
}

pub(crate) fn connect_error(url: &str) -> impl FnOnce(reqwest::Error) -> anyhow::Error + '_ {
    move |e| {
        anyhow::anyhow!(
            "cannot reach weir at {url}: {e}; is `weir serve` running? (set --url or WEIR_URL)"
        )
    }
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let events = match &args.file {
        Some(path) => read_jsonl(path)?,
        None => vec![event_from_flags(&args)?],
    };
    if events.is_empty() {
        bail!("no events to publish");
    }
    let client = args.node.http()?;
    let url = args.node.join(&format!("/v1/topics/{}/events", args.topic));
    let mut offsets = Vec::new();
    for chunk in events.chunks(500) {
        let (headers, body) = weir_cloudevents::http::encode_batch(chunk);
        let request = client.post(&url).headers(headers).body(body);
        let answer = send_json(request, &args.node).await?;
        offsets.extend(answer["offsets"].as_array().cloned().unwrap_or_default());
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "topic": args.topic, "offsets": offsets })
        );
    } else {
        for o in &offsets {
            println!(
                "published to {} partition {} offset {}",
                args.topic, o["partition"], o["offset"]
            );
        }
    }
    Ok(())
}

fn event_from_flags(args: &PublishArgs) -> anyhow::Result<CloudEvent> {
    let ty = args.ty.clone().context("--type is required")?;
    let id = args.id.clone().unwrap_or_else(random_id);
    let mut event = CloudEvent::new(id, args.source.clone(), ty);
    event.subject = args.subject.clone();
    if let Some(key) = &args.key {
        event.extensions.insert(
            weir_cloudevents::PARTITION_KEY.to_owned(),
            weir_cloudevents::ExtensionValue::String(key.clone()),
        );
    }
    if let Some(data) = &args.data {
        if args.text {
            event.datacontenttype = Some("text/plain".into());
            event.data = Some(Data::Text(data.clone()));
        } else {
            let json = Json::from_slice(data.as_bytes())
                .context("--data is not valid JSON; pass --text to send it as plain text")?;
            event.datacontenttype = Some("application/json".into());
            event.data = Some(Data::Json(json));
        }
    }
    event.validate()?;
    Ok(event)
}

fn random_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

fn read_jsonl(path: &PathBuf) -> anyhow::Result<Vec<CloudEvent>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
    };
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            CloudEvent::from_json_slice(line.as_bytes())
                .with_context(|| format!("{} line {}", path.display(), n + 1))
        })
        .collect()
}

pub async fn tail(args: TailArgs) -> anyhow::Result<()> {
    if args.limit == Some(0) {
        return Ok(());
    }
    let mut query = vec![("from", args.from.clone())];
    if let Some(group) = &args.group {
        query.push(("group", group.clone()));
    }
    let response = args
        .node
        .http()?
        .get(args.node.join(&format!("/v1/topics/{}/stream", args.topic)))
        .query(&query)
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(connect_error(&args.node.url))?;
    if !response.status().is_success() {
        return Err(failure(response).await);
    }
    let mut events = eventsource_stream::EventStream::new(response.bytes_stream());
    let mut seen = 0;
    while let Some(message) = events.next().await {
        let message = message.map_err(|e| anyhow::anyhow!("the event stream broke: {e}"))?;
        if message.event == "error" {
            bail!("the node reported: {}", message.data);
        }
        println!("{}", message.data);
        seen += 1;
        if args.limit.is_some_and(|limit| seen >= limit) {
            break;
        }
    }
    Ok(())
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let status = send_json(
        args.node.http()?.get(args.node.join("/v1/status")),
        &args.node,
    )
    .await?;
    if args.json {
        println!("{status}");
        return Ok(());
    }
    println!("app: {}", status["app"].as_str().unwrap_or("(none)"));
    if let Some(fleet) = status["fleet"].as_object() {
        let members = fleet["members"].as_array().cloned().unwrap_or_default();
        println!(
            "fleet: {} member(s), this node {}",
            members.len(),
            fleet["me"].as_str().unwrap_or("")
        );
        for m in &members {
            println!(
                "  {}  {}  since {}",
                m["id"].as_str().unwrap_or(""),
                m["url"].as_str().unwrap_or(""),
                m["started"].as_str().unwrap_or("")
            );
        }
    }
    println!("functions:");
    for f in status["functions"].as_array().into_iter().flatten() {
        println!(
            "  {}  version {}  ({} version(s) kept)",
            f["name"].as_str().unwrap_or(""),
            f["version"].as_str().unwrap_or(""),
            f["versions_kept"].as_u64().unwrap_or(1)
        );
    }
    println!("pipelines:");
    for p in status["pipelines"].as_array().into_iter().flatten() {
        let state = p["state"].as_str().unwrap_or("");
        println!(
            "  {}  {} -> {} -> {}  {}  processed {} in {} batches  filtered {}  dead-lettered {} (to {})  retries {}  lag {}",
            p["name"].as_str().unwrap_or(""),
            p["from"],
            p["function"].as_str().unwrap_or(""),
            p["to"],
            state,
            p["processed"],
            p["batches"].as_u64().unwrap_or(0),
            p["filtered"],
            p["dead_lettered"],
            p["dead_letter"].as_str().unwrap_or(""),
            p["retries"],
            p["lag"],
        );
        if p["skipped"].as_u64().unwrap_or(0) > 0 {
            println!(
                "    skipped {} events that retention deleted before the pipeline read them",
                p["skipped"]
            );
        }
        if state == "stalled" {
            println!(
                "    stalled at {} partition {} (trying again): {}",
                p["topic"],
                p["partition"],
                p["error"].as_str().unwrap_or("")
            );
        }
        let owners: Vec<String> = p["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| {
                Some(format!(
                    "{}/{}={}",
                    part["topic"].as_str()?,
                    part["partition"],
                    part["owner"].as_str()?
                ))
            })
            .collect();
        if !owners.is_empty() {
            println!("    owners: {}", owners.join("  "));
        }
        for part in p["partitions"].as_array().into_iter().flatten() {
            if part["lag"].as_u64().unwrap_or(0) > 0 {
                println!(
                    "    {} partition {}  committed {}  end {}  lag {}",
                    part["topic"].as_str().unwrap_or(""),
                    part["partition"],
                    part["committed"],
                    part["end_offset"],
                    part["lag"]
                );
            }
        }
    }
    let entities = status["entities"].as_array().cloned().unwrap_or_default();
    if !entities.is_empty() {
        println!("entities:");
        for e in &entities {
            println!(
                "  {}  function {}  journal {} ({} partitions)  {} entities  {} events  {} cached",
                e["name"].as_str().unwrap_or(""),
                e["function"].as_str().unwrap_or(""),
                e["journal"].as_str().unwrap_or(""),
                e["partitions"],
                e["entities"],
                e["events"],
                e["cached"],
            );
        }
    }
    let sources = status["sources"].as_array().cloned().unwrap_or_default();
    if !sources.is_empty() {
        println!("sources:");
        for s in &sources {
            println!(
                "  {}  {}  {}  -> {}  {}  {} received  {} appended  {} dead-lettered  {} acknowledged",
                s["name"].as_str().unwrap_or(""),
                s["url"].as_str().unwrap_or(""),
                s["subscribe"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                s["topic"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                s["received"],
                s["appended"],
                s["dead_lettered"],
                s["acknowledged"],
            );
            if let Some(position) = s["position"].as_str() {
                println!("    position: {position}");
            }
            if let Some(error) = s["error"].as_str() {
                println!("    last error: {error}");
            }
        }
    }
    let circuits = status["circuits"].as_array().cloned().unwrap_or_default();
    if !circuits.is_empty() {
        println!("outbound circuits:");
        for c in &circuits {
            println!(
                "  {}  {}  opened {} time(s)",
                c["destination"].as_str().unwrap_or(""),
                c["state"].as_str().unwrap_or(""),
                c["opened"],
            );
        }
    }
    let sinks = status["sinks"].as_array().cloned().unwrap_or_default();
    if !sinks.is_empty() {
        println!("sinks:");
        for s in &sinks {
            println!(
                "  {}  {} -> {}  {}  circuit {}  lag {}  {} delivered  {} retries  {} dead-lettered",
                s["name"].as_str().unwrap_or(""),
                s["topic"].as_str().unwrap_or(""),
                s["url"].as_str().unwrap_or(""),
                s["state"].as_str().unwrap_or(""),
                s["circuit"].as_str().unwrap_or(""),
                s["lag"],
                s["delivered"],
                s["retries"],
                s["dead_lettered"],
            );
            if let Some(error) = s["error"].as_str() {
                println!("    last error: {error}");
            }
        }
    }
    let views = status["views"].as_array().cloned().unwrap_or_default();
    if !views.is_empty() {
        println!("views:");
        for v in &views {
            let sources: Vec<&str> = v["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str())
                .collect();
            println!(
                "  {}  function {}  store {}  sources {}  {} events  {} changes  lag {}",
                v["name"].as_str().unwrap_or(""),
                v["function"].as_str().unwrap_or(""),
                v["store"].as_str().unwrap_or(""),
                sources.join(","),
                v["events"],
                v["changes"],
                v["lag"],
            );
            for error in v["errors"].as_array().into_iter().flatten() {
                println!("    stopped: {}", error.as_str().unwrap_or(""));
            }
        }
    }
    println!(
        "topics (backend {}):",
        status["backend"].as_str().unwrap_or("")
    );
    for t in status["topics"].as_array().into_iter().flatten() {
        let end: u64 = t["end_offsets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_u64())
            .sum();
        let guarantees = &t["guarantees"];
        println!(
            "  {}  partitions {}  events {}  acknowledged {}  transactions {}",
            t["name"].as_str().unwrap_or(""),
            t["partitions"],
            end,
            guarantees["acknowledged"]["kind"].as_str().unwrap_or("?"),
            guarantees["transactions"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}
