//! `weir schema`: event schemas on a running node (list, get, put), and `weir schema check`,
//! which checks the app's schema files offline, as a deploy would.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::client::{NodeUrl, send_json};

#[derive(Debug, clap::Subcommand)]
pub enum SchemaCommand {
    /// List the event types with schemas, their versions and compatibility modes.
    List {
        #[command(flatten)]
        node: NodeUrl,
        /// Print the node's JSON answer.
        #[arg(long)]
        json: bool,
    },
    /// Print one version of a type's schema (the latest by default).
    Get {
        #[arg(value_name = "TYPE")]
        ty: String,
        #[arg(default_value = "latest")]
        version: String,
        #[command(flatten)]
        node: NodeUrl,
    },
    /// Register FILE (a JSON Schema, draft 2020-12) as VERSION of TYPE, checked against
    /// the type's compatibility mode.
    Put {
        #[arg(value_name = "TYPE")]
        ty: String,
        version: u32,
        file: PathBuf,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
    /// Check the schema files of weir.toml, offline: each a valid draft 2020-12 schema,
    /// each version compatible with the earlier ones under its type's mode.
    Check {
        /// The app manifest.
        #[arg(long, env = "WEIR_APP", default_value = "weir.toml")]
        app: PathBuf,
    },
}

/// `<node>/v1/schemas[/<type>[/<version>]]`, each segment percent-encoded.
fn schema_url(node: &NodeUrl, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&node.join("/v1/schemas"))
        .with_context(|| format!("--url {:?} is not a URL", node.url))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url {:?} cannot have a path", node.url))?
        .extend(segments);
    Ok(url)
}

pub async fn run(command: SchemaCommand) -> anyhow::Result<()> {
    match command {
        SchemaCommand::List { node, json } => {
            let answer = send_json(node.http()?.get(schema_url(&node, &[])?), &node).await?;
            if json {
                println!("{answer}");
                return Ok(());
            }
            for ty in answer.as_array().into_iter().flatten() {
                let versions = ty["versions"].as_array().map_or(0, Vec::len);
                println!(
                    "{}: {versions} version{}, {}",
                    ty["type"].as_str().unwrap_or(""),
                    if versions == 1 { "" } else { "s" },
                    ty["compatibility"].as_str().unwrap_or("")
                );
            }
            Ok(())
        }
        SchemaCommand::Get { ty, version, node } => {
            let url = schema_url(&node, &[&ty, &version])?;
            let document = send_json(node.http()?.get(url), &node).await?;
            println!("{}", serde_json::to_string_pretty(&document)?);
            Ok(())
        }
        SchemaCommand::Put {
            ty,
            version,
            file,
            node,
            json,
        } => {
            let document = read_schema(&file)?;
            let url = schema_url(&node, &[&ty, &version.to_string()])?;
            let answer = send_json(node.http()?.put(url).json(&document), &node).await?;
            if json {
                println!("{answer}");
            } else if answer["created"].as_bool() == Some(true) {
                println!("registered {ty} version {version}");
            } else {
                println!("{ty} version {version} is already this schema; nothing changed");
            }
            Ok(())
        }
        SchemaCommand::Check { app } => check(&app),
    }
}

fn read_schema(path: &Path) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not JSON; a schema is a JSON document",
            path.display()
        )
    })
}

/// What `weir schema check` does: every type of `[schemas]`, every version in order, as
/// a node registers them from nothing.
fn check(app: &Path) -> anyhow::Result<()> {
    let manifest = weir_manifest::Manifest::load(app)?;
    let registry = app_registry(&manifest)?;
    for (ty, subject) in registry.subjects() {
        println!(
            "{ty}: {} version{} ok ({})",
            subject.versions().len(),
            if subject.versions().len() == 1 {
                ""
            } else {
                "s"
            },
            subject.compatibility.as_str()
        );
    }
    Ok(())
}

/// The registry a node starting from nothing would build from `manifest`'s schema files;
/// every version that is not a schema or breaks its type's mode, named.
fn app_registry(manifest: &weir_manifest::Manifest) -> anyhow::Result<weir_schema::Registry> {
    let mut documents = weir_engine::read_schema_documents(manifest)?;
    let mut registry = weir_schema::Registry::default();
    let mut problems = Vec::new();
    for (ty, spec) in &manifest.schemas {
        registry.set_compatibility(ty, spec.compatibility);
        let versions = documents.remove(ty).unwrap_or_default();
        for ((version, path), document) in (1..).zip(&spec.versions).zip(versions) {
            match registry.prepare(ty, version, document, None) {
                Ok(weir_schema::Prepared::New(schema)) => registry.insert(schema),
                Ok(weir_schema::Prepared::Unchanged) => {}
                Err(e) => {
                    problems.push(format!("{}: {e:#}", path.display()));
                    break;
                }
            }
        }
    }
    if !problems.is_empty() {
        anyhow::bail!("{}", problems.join("\n"));
    }
    Ok(registry)
}

/// `weir asyncapi`.
#[derive(Debug, clap::Args)]
pub struct AsyncapiArgs {
    /// Generate the document offline from this manifest and the schema files beside it,
    /// instead of asking the running node at --url.
    #[arg(long, value_name = "WEIR_TOML")]
    app: Option<PathBuf>,
    /// With --app: the node's HTTP address as its clients reach it (the document's
    /// server).
    #[arg(long, default_value = "127.0.0.1:7700", requires = "app")]
    host: String,
    #[command(flatten)]
    node: NodeUrl,
}

/// `weir asyncapi`: the app's AsyncAPI 3.0 document, from the running node (what it runs
/// now: its topics and the schemas registered there) or, with `--app`, from weir.toml.
pub async fn asyncapi(args: AsyncapiArgs) -> anyhow::Result<()> {
    let document = match &args.app {
        None => {
            let url = args.node.url("/v1/asyncapi", &[])?;
            send_json(args.node.http()?.get(url), &args.node).await?
        }
        Some(app) => {
            let manifest = weir_manifest::Manifest::load(app)?;
            let registry = app_registry(&manifest)?;
            let topics: Vec<String> = manifest.topics.keys().cloned().collect();
            weir_asyncapi::document(&weir_asyncapi::App {
                manifest: Some(&manifest),
                topics: &topics,
                registry: &registry,
                server: &weir_asyncapi::Server {
                    host: args.host.clone(),
                    tls: manifest.http.tls_cert.is_some(),
                },
                security: weir_asyncapi::Security::of(&manifest),
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(())
}
