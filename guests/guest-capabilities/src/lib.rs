//! Test guest: uses one capability per event type, reporting what it saw in the output's
//! data, so tests can check what is granted and what is denied.
//!
//! - `test.kv`: opens the namespace named by config `namespace`, sets and reads back key
//!   `k` = the event id.
//! - `test.http`: GETs the URL in config `url` and returns the status and body.
//! - `test.sleep`: sleeps 10 s (weir grants no sleeps, so it returns at once).
//! - `test.env`: returns how many environment variables and preopened directories it sees.
//! - `test.secret`: returns the length of config key `token` (never the value).

use weir_guest::{Error, Event, Function, Output, config, http, kv};

struct Capabilities;

fn reply(event: &Event, data: serde_json::Value) -> Result<Vec<Output>, Error> {
    let mut out = Event::new("test://capabilities", "test.reply");
    out.subject = Some(event.id.clone());
    out.set_json(&data)?;
    Ok(vec![Output::to("out", out)])
}

impl Function for Capabilities {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        match event.type_.as_str() {
            "test.kv" => {
                let namespace = config::require("namespace")?;
                let bucket = kv::open(&namespace)?;
                bucket.set("k", event.id.as_bytes())?;
                let value = bucket.get("k")?.unwrap_or_default();
                reply(&event, serde_json::json!({ "value": String::from_utf8_lossy(&value) }))
            }
            "test.http" => {
                let url = config::require("url")?;
                let response = http::get(&url)?;
                reply(
                    &event,
                    serde_json::json!({
                        "status": response.status,
                        "body": String::from_utf8_lossy(&response.body),
                    }),
                )
            }
            "test.sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(10));
                reply(&event, serde_json::json!({ "slept": true }))
            }
            "test.env" => {
                let vars = std::env::vars().count();
                let root = std::fs::read_dir("/").is_ok();
                let cwd = std::fs::read_dir(".").is_ok();
                reply(
                    &event,
                    serde_json::json!({ "vars": vars, "root_readable": root, "cwd_readable": cwd }),
                )
            }
            "test.secret" => {
                let token = config::require("token")?;
                reply(&event, serde_json::json!({ "token_len": token.len() }))
            }
            other => Err(Error::Fatal(format!("unknown test event type {other}"))),
        }
    }
}

weir_guest::export_function!(Capabilities);
