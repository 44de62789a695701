//! `weir bench wasm`: what the function host costs. Cold start (a fresh pooled instance
//! and one trivial call), warm call rates of a trivial function and of the example's
//! JSON transform on one core, the same transform with a fresh instance per event (what
//! full isolation costs), and a node with many distinct functions: memory, and the time a
//! restart takes to have them all ready from the compiled cache (measured in a child
//! process, so the compiler's memory does not count).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use weir_cloudevents::CloudEvent;
use weir_wasm::{
    Function, FunctionHost, FunctionSettings, HostOptions, KeyValueStore, MemoryKeyValue,
};

use super::{percentile, print_result, repo_path, round2};

#[derive(Debug, clap::Args)]
pub struct WasmBenchArgs {
    /// The trivial function (forwards each event); default: the repository's `guest-echo`.
    #[arg(long)]
    trivial: Option<PathBuf>,
    /// The JSON transform; default: the example's `enrich-order`.
    #[arg(long)]
    transform: Option<PathBuf>,
    /// Distinct functions to deploy for the memory and restart figures.
    #[arg(long, default_value_t = 1000)]
    functions: usize,
    /// Seconds each throughput figure is measured for.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Cold starts to sample.
    #[arg(long, default_value_t = 20_000)]
    cold_starts: usize,
    /// Where to put the temporary compiled cache (removed afterwards).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Print one JSON object as the last line.
    #[arg(long)]
    json: bool,
}

/// The hidden child of `weir bench wasm`: load every `.wasm` in a directory from the
/// compiled cache, call each once, and report the time and memory as JSON.
#[derive(Debug, clap::Args)]
pub struct WasmRestartArgs {
    #[arg(long)]
    wasm_dir: PathBuf,
    #[arg(long)]
    cache_dir: PathBuf,
}

fn read_wasm(path: Option<PathBuf>, default: &str) -> anyhow::Result<Vec<u8>> {
    let path = path.unwrap_or_else(|| repo_path(default));
    std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}; build the guests with `cargo xtask build-guests` or pass the path",
            path.display()
        )
    })
}

/// The customer the example's events name, in the key-value store of the transform.
const CUSTOMER: (&str, &str, &[u8]) = (
    "customers",
    "CUST-42",
    br#"{"name":"Acme GmbH","segment":"enterprise","country":"DE"}"#,
);

/// The transform's config.
const TRANSFORM_CONFIG: [(&str, &str); 2] = [("currency", "EUR"), ("rate.USD", "0.92")];

/// A host whose key-value store has the customer the example's events name.
pub(super) fn transform_host() -> anyhow::Result<FunctionHost> {
    let kv = Arc::new(MemoryKeyValue::new());
    kv.set(CUSTOMER.0, CUSTOMER.1, CUSTOMER.2)
        .map_err(anyhow::Error::msg)?;
    Ok(FunctionHost::new(HostOptions {
        keyvalue: Some(kv),
        ..HostOptions::default()
    })?)
}

/// The example's transform on `host`, with its config and grants.
pub(super) fn load_transform(host: &FunctionHost, wasm: &[u8]) -> anyhow::Result<Function> {
    let mut settings = FunctionSettings::default();
    for (key, value) in TRANSFORM_CONFIG {
        settings.config.insert(key.into(), value.into());
    }
    settings.grants.keyvalue.insert(CUSTOMER.0.into());
    Ok(host.load("enrich-order", wasm, settings)?)
}

/// An event's JSON data, parsed (so key order does not matter).
fn json_data(event: &CloudEvent) -> Option<serde_json::Value> {
    match &event.data {
        Some(weir_cloudevents::Data::Json(json)) => serde_json::from_slice(json.as_bytes()).ok(),
        _ => None,
    }
}

fn example_event() -> anyhow::Result<CloudEvent> {
    let bytes = std::fs::read(repo_path("examples/orders/sales-order-created.json"))?;
    Ok(CloudEvent::from_json_slice(&bytes)?)
}

/// `wasm` with a custom section appended: the same code under another content hash, so
/// the host treats it as a distinct function.
fn variant(wasm: &[u8], i: usize) -> Vec<u8> {
    let payload = format!("weir-bench-variant-{i}");
    let name = b"weir-bench";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&section);
    out
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Calls per second of `call` on this thread for about `seconds`.
pub(super) fn rate(
    seconds: f64,
    mut call: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..1000 {
        call()?;
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < budget {
        for _ in 0..256 {
            call()?;
        }
        calls += 256;
    }
    Ok(calls as f64 / started.elapsed().as_secs_f64())
}

pub fn run(args: WasmBenchArgs) -> anyhow::Result<()> {
    let trivial = read_wasm(
        args.trivial,
        "guests/target/wasm32-wasip2/release/guest_echo.wasm",
    )?;
    let transform = read_wasm(
        args.transform,
        "examples/orders/enrich-order/target/wasm32-wasip2/release/enrich_order.wasm",
    )?;
    let host = transform_host()?;

    // Cold start: a fresh instance from the pool and one trivial call.
    let echo = host.load("echo", &trivial, FunctionSettings::default())?;
    let small = CloudEvent::new("e1", "bench://wasm", "bench.trivial");
    for _ in 0..1000 {
        echo.call(&small)?;
    }
    let mut cold_ns = Vec::with_capacity(args.cold_starts);
    for _ in 0..args.cold_starts {
        let t = Instant::now();
        echo.call(&small)?;
        cold_ns.push(t.elapsed().as_nanos() as u64);
    }
    cold_ns.sort_unstable();
    let us = |ns: u64| round2(ns as f64 / 1000.0);

    let pool = echo.instances();
    let trivial_rate = rate(args.seconds, || Ok(pool.call(&small).map(drop)?))?;

    let event = example_event()?;
    let enrich = load_transform(&host, &transform)?;
    let pool = enrich.instances();
    let transform_rate = rate(args.seconds, || Ok(pool.call(&event).map(drop)?))?;
    let transform_fresh_rate = rate(args.seconds, || Ok(enrich.call(&event).map(drop)?))?;
    // The same transform's source compiled natively, called here with the same event,
    // config and customer; its outputs must be the wasm version's.
    super::native::prepare(&TRANSFORM_CONFIG, &[CUSTOMER]);
    let wasm_outputs = pool.call(&event)?;
    let native_outputs = super::native::call(&event)?;
    anyhow::ensure!(
        native_outputs.len() == wasm_outputs.len()
            && native_outputs
                .iter()
                .zip(&wasm_outputs)
                .all(|((target, n), w)| {
                    *target == w.target
                        && n.ty == w.event.ty
                        && json_data(n) == json_data(&w.event)
                        && json_data(n).is_some()
                }),
        "the native transform's outputs differ from the wasm version's"
    );
    let native_rate = rate(args.seconds, || super::native::call(&event).map(drop))?;
    drop((pool, enrich, echo, host));

    // Many functions: compile them into a cache, then a child process "restarts" on it.
    std::fs::create_dir_all(&args.dir)?;
    let tmp = tempfile::Builder::new()
        .prefix("weir-bench-wasm-")
        .tempdir_in(&args.dir)?;
    let (wasm_dir, cache_dir) = (tmp.path().join("wasm"), tmp.path().join("cache"));
    std::fs::create_dir_all(&wasm_dir)?;
    let compile_started = Instant::now();
    {
        let host = FunctionHost::new(HostOptions {
            cache_dir: Some(cache_dir.clone()),
            ..HostOptions::default()
        })?;
        for i in 0..args.functions {
            let wasm = variant(&trivial, i);
            host.load(&format!("f{i}"), &wasm, FunctionSettings::default())?;
            std::fs::write(wasm_dir.join(format!("f{i}.wasm")), wasm)?;
        }
    }
    let compile_secs = compile_started.elapsed().as_secs_f64();
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "wasm-restart", "--wasm-dir"])
        .arg(&wasm_dir)
        .arg("--cache-dir")
        .arg(&cache_dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "the restart child failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let child: serde_json::Value = serde_json::from_slice(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .as_bytes(),
    )?;

    let result = json!({
        "bench": "wasm",
        "cold_start_p50_us": us(percentile(&cold_ns, 0.50)),
        "cold_start_p99_us": us(percentile(&cold_ns, 0.99)),
        "trivial_calls_per_sec": trivial_rate.round(),
        "json_transform_calls_per_sec": transform_rate.round(),
        "json_transform_fresh_instance_calls_per_sec": transform_fresh_rate.round(),
        "native_transform_calls_per_sec": native_rate.round(),
        "wasm_native_ratio": round2(transform_rate / native_rate),
        "json_transform_event_bytes": event.to_json_vec().len(),
        "functions_deployed": child["functions"],
        "rss_mib_with_functions": child["rss_mib"],
        "restart_ready_ms": child["ready_ms"],
        "first_compile_secs": round2(compile_secs),
    });
    print_result(&result, args.json)
}

pub fn restart(args: WasmRestartArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let host = FunctionHost::new(HostOptions {
        cache_dir: Some(args.cache_dir),
        ..HostOptions::default()
    })?;
    let mut functions = Vec::new();
    for entry in std::fs::read_dir(&args.wasm_dir)? {
        let path = entry?.path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("f")
            .to_owned();
        let wasm = std::fs::read(&path)?;
        functions.push(host.load(&name, &wasm, FunctionSettings::default())?);
    }
    let ready_ms = started.elapsed().as_millis();
    // Deployed means callable: one event through each.
    let event = CloudEvent::new("e1", "bench://wasm", "bench.trivial");
    for f in &functions {
        f.call(&event)?;
    }
    println!(
        "{}",
        json!({
            "functions": functions.len(),
            "ready_ms": ready_ms,
            "rss_mib": round2(rss_mib()),
        })
    );
    Ok(())
}
