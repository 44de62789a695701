//! `weir auth key create|list|revoke`: the node's API keys, over its HTTP API (the `keys`
//! admin operation) or, with `--data`, straight in a data directory (a running node
//! sees the change within a second).

use std::path::PathBuf;

use anyhow::Context;

use crate::client::{NodeUrl, send_json};

#[derive(Debug, clap::Subcommand)]
pub enum AuthCommand {
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
}

/// Where the keys are: a node's data directory, or a running node.
#[derive(Debug, clap::Args)]
pub struct KeyPlace {
    /// Work on the keys in this data directory instead of asking a node (for the first
    /// admin key, or with the node stopped).
    #[arg(long)]
    data: Option<PathBuf>,
    #[command(flatten)]
    node: NodeUrl,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeyCommand {
    /// Make a key; it is printed once and stored only as a hash.
    Create {
        /// Who the key speaks for; several keys may share one.
        #[arg(long)]
        principal: String,
        /// A role from [auth.roles], or `admin`; repeat for more.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// How long it works, like 90d, 12h or 30m; by default until revoked.
        #[arg(long)]
        expires_in: Option<String>,
        #[command(flatten)]
        place: KeyPlace,
    },
    /// List keys, revoked ones included (never their secrets).
    List {
        #[command(flatten)]
        place: KeyPlace,
    },
    /// Revoke a key by its id: it stops working at once.
    Revoke {
        id: String,
        #[command(flatten)]
        place: KeyPlace,
    },
}

pub async fn run(command: AuthCommand) -> anyhow::Result<()> {
    let AuthCommand::Key { command } = command;
    match command {
        KeyCommand::Create {
            principal,
            roles,
            expires_in,
            place,
        } => {
            let expires_in = expires_in
                .as_deref()
                .map(weir_auth::parse_duration)
                .transpose()?;
            let (key, info) = match &place.data {
                Some(data) => {
                    let store = open(data)?;
                    let expires_at = expires_in.map(|d| time::OffsetDateTime::now_utc() + d);
                    let (info, key) = store.create(&principal, roles, expires_at)?;
                    (key, serde_json::to_value(info)?)
                }
                None => {
                    let body = serde_json::json!({
                        "principal": principal,
                        "roles": roles,
                        "expires_in_secs": expires_in.map(|d| d.as_secs()),
                    });
                    let request = place
                        .node
                        .http()?
                        .post(place.node.join("/v1/auth/keys"))
                        .json(&body);
                    let mut answer = send_json(request, &place.node).await?;
                    let key = answer["key"].as_str().unwrap_or_default().to_owned();
                    answer.as_object_mut().map(|o| o.remove("key"));
                    (key, answer)
                }
            };
            if place.json {
                let mut out = info;
                out["key"] = serde_json::Value::String(key);
                println!("{out}");
            } else {
                println!("{key}");
                eprintln!(
                    "key {} for {:?}; this is the only time it is shown: pass it as --token or WEIR_TOKEN",
                    info["id"].as_str().unwrap_or_default(),
                    info["principal"].as_str().unwrap_or_default()
                );
            }
        }
        KeyCommand::List { place } => {
            let keys = match &place.data {
                Some(data) => serde_json::to_value(open(data)?.list()?)?,
                None => {
                    let request = place.node.http()?.get(place.node.join("/v1/auth/keys"));
                    send_json(request, &place.node).await?
                }
            };
            if place.json {
                println!("{keys}");
            } else {
                println!(
                    "{:<16}  {:<24}  {:<20}  {:<25}  STATE",
                    "ID", "PRINCIPAL", "ROLES", "EXPIRES"
                );
                for key in keys.as_array().into_iter().flatten() {
                    let roles: Vec<&str> = key["roles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str())
                        .collect();
                    let state = if key["revoked_at"].is_string() {
                        "revoked"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<16}  {:<24}  {:<20}  {:<25}  {state}",
                        key["id"].as_str().unwrap_or_default(),
                        key["principal"].as_str().unwrap_or_default(),
                        roles.join(","),
                        key["expires_at"].as_str().unwrap_or("never"),
                    );
                }
            }
        }
        KeyCommand::Revoke { id, place } => {
            let info = match &place.data {
                Some(data) => serde_json::to_value(open(data)?.revoke(&id)?)?,
                None => {
                    let request = place
                        .node
                        .http()?
                        .delete(place.node.join(&format!("/v1/auth/keys/{id}")));
                    send_json(request, &place.node).await?
                }
            };
            if place.json {
                println!("{info}");
            } else {
                println!("revoked key {id}");
            }
        }
    }
    Ok(())
}

fn open(data: &std::path::Path) -> anyhow::Result<weir_auth::ApiKeyStore> {
    weir_auth::ApiKeyStore::open(data)
        .with_context(|| format!("cannot open the API keys in {}", data.display()))
}
