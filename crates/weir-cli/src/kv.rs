//! `weir kv`: read and write the node's key-value namespaces over its HTTP API.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;

use crate::client::{NodeUrl, send_checked, send_json};

#[derive(Debug, clap::Subcommand)]
pub enum KvCommand {
    /// Print a key's value (raw bytes).
    Get {
        namespace: String,
        key: String,
        #[command(flatten)]
        node: NodeUrl,
    },
    /// Set a key to VALUE, or to the contents of --file.
    Put {
        namespace: String,
        key: String,
        /// The value, as text.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        value: Option<String>,
        /// Read the value from this file (`-` for stdin).
        #[arg(long)]
        file: Option<PathBuf>,
        #[command(flatten)]
        node: NodeUrl,
    },
    /// Remove a key.
    Delete {
        namespace: String,
        key: String,
        #[command(flatten)]
        node: NodeUrl,
    },
    /// List a namespace's keys, one per line.
    List {
        namespace: String,
        #[command(flatten)]
        node: NodeUrl,
        /// Print {"keys": [...]} instead.
        #[arg(long)]
        json: bool,
    },
    /// Write every key of a JSON object file {"key": value}, overwriting (strings as
    /// their text, other values as JSON), all or nothing.
    Load {
        namespace: String,
        file: PathBuf,
        #[command(flatten)]
        node: NodeUrl,
        #[arg(long)]
        json: bool,
    },
}

/// `<node>/v1/kv/<namespace>[/<key>]`, each segment percent-encoded.
fn kv_url(node: &NodeUrl, namespace: &str, key: Option<&str>) -> anyhow::Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&node.join("/v1/kv"))
        .with_context(|| format!("--url {:?} is not a URL", node.url))?;
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--url {:?} cannot have a path", node.url))?;
        segments.push(namespace);
        if let Some(key) = key {
            segments.push(key);
        }
    }
    Ok(url)
}

/// Send a request whose success has no body.
async fn send_ok(request: reqwest::RequestBuilder, node: &NodeUrl) -> anyhow::Result<()> {
    send_checked(request, node).await.map(drop)
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

pub async fn run(command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get {
            namespace,
            key,
            node,
        } => {
            let url = kv_url(&node, &namespace, Some(&key))?;
            let bytes = send_checked(node.http()?.get(url), &node)
                .await?
                .bytes()
                .await?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes)?;
            if std::io::stdout().is_terminal() && !bytes.ends_with(b"\n") {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        KvCommand::Put {
            namespace,
            key,
            value,
            file,
            node,
        } => {
            let bytes = match (&file, value) {
                (Some(path), _) => read_input(path)?,
                (None, Some(value)) => value.into_bytes(),
                (None, None) => anyhow::bail!("give a VALUE or --file"),
            };
            let size = bytes.len();
            let url = kv_url(&node, &namespace, Some(&key))?;
            send_ok(node.http()?.put(url).body(bytes), &node).await?;
            println!("set {namespace}/{key} ({size} bytes)");
            Ok(())
        }
        KvCommand::Delete {
            namespace,
            key,
            node,
        } => {
            let url = kv_url(&node, &namespace, Some(&key))?;
            send_ok(node.http()?.delete(url), &node).await?;
            println!("deleted {namespace}/{key}");
            Ok(())
        }
        KvCommand::List {
            namespace,
            node,
            json,
        } => {
            let client = node.http()?;
            let url = kv_url(&node, &namespace, None)?;
            let mut keys = Vec::new();
            let mut cursor: Option<u64> = None;
            loop {
                let mut request = client.get(url.clone()).query(&[("limit", "1000")]);
                if let Some(c) = cursor {
                    request = request.query(&[("cursor", c)]);
                }
                let page = send_json(request, &node).await?;
                let page_keys = page["keys"].as_array().cloned().unwrap_or_default();
                if !json {
                    for key in &page_keys {
                        println!("{}", key.as_str().unwrap_or_default());
                    }
                }
                keys.extend(page_keys);
                cursor = page["cursor"].as_u64();
                if cursor.is_none() {
                    break;
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "namespace": namespace, "keys": keys })
                );
            }
            Ok(())
        }
        KvCommand::Load {
            namespace,
            file,
            node,
            json,
        } => {
            let bytes = read_input(&file)?;
            let url = kv_url(&node, &namespace, None)?;
            let request = node
                .http()?
                .post(url)
                .header("content-type", "application/json")
                .body(bytes);
            let answer = send_json(request, &node).await?;
            if json {
                println!("{answer}");
            } else {
                println!(
                    "loaded {} key(s) into {namespace} from {}",
                    answer["written"],
                    file.display()
                );
            }
            Ok(())
        }
    }
}
