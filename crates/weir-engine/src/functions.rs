//! Turning a manifest's function declaration into a loaded [`Function`]: the IO edge
//! where secrets are read from the environment or files, and where the manifest's grants
//! become the host's.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_manifest::{FunctionSpec, SecretSource};
use weir_wasm::{Function, FunctionHost, FunctionSettings, Grants, HttpGrant, Limits, Secret};

use crate::{Error, Result};

/// Read the component at `spec.source`.
pub(crate) fn read_source(name: &str, spec: &FunctionSpec) -> Result<Vec<u8>> {
    std::fs::read(&spec.source).map_err(|source| Error::ReadFunction {
        function: name.to_owned(),
        path: spec.source.display().to_string(),
        source,
    })
}

/// Load `wasm` as function `name` with the settings `spec` declares. Blocking (it
/// compiles, reads secrets).
pub(crate) fn load_function(
    host: &FunctionHost,
    name: &str,
    spec: &FunctionSpec,
    wasm: &[u8],
) -> Result<Function> {
    let settings = settings(name, spec)?;
    Ok(host.load(name, wasm, settings)?)
}

/// Like [`load_function`], for a version only a replay runs: the host drops its compiled
/// code from memory first when it keeps too many.
pub(crate) fn load_candidate(
    host: &FunctionHost,
    name: &str,
    spec: &FunctionSpec,
    wasm: &[u8],
) -> Result<Function> {
    let settings = settings(name, spec)?;
    Ok(host.load_candidate(name, wasm, settings)?)
}

/// The host's settings for a function declared as `spec`; secrets are read here.
pub(crate) fn settings(name: &str, spec: &FunctionSpec) -> Result<FunctionSettings> {
    let mut secrets = BTreeMap::new();
    for (key, source) in &spec.secrets {
        secrets.insert(key.clone(), read_secret(name, key, source)?);
    }
    let http = spec
        .capabilities
        .http
        .iter()
        .filter_map(|grant| weir_manifest::parse_http_grant(grant).ok())
        .map(|g| HttpGrant {
            scheme: g.scheme,
            host: g.host,
            port: g.port,
        })
        .collect();
    Ok(FunctionSettings {
        config: spec.config.clone(),
        secrets,
        limits: Limits {
            deadline: spec.limits.deadline(),
            memory_bytes: spec.limits.memory_bytes() as usize,
            max_output_bytes: spec.limits.max_output_bytes as usize,
            max_outputs: spec.limits.max_outputs as usize,
            fuel: spec.limits.fuel,
            cpu_percent: spec.limits.cpu_percent,
        },
        grants: Grants {
            keyvalue: spec.capabilities.keyvalue.iter().cloned().collect(),
            http,
            http_timeout: Duration::from_millis(spec.capabilities.http_timeout_ms),
            publish: spec.capabilities.publish.iter().cloned().collect(),
        },
        instance_reuse: spec.instance_reuse,
    })
}

fn read_secret(function: &str, key: &str, source: &SecretSource) -> Result<Secret> {
    let value = secret_text(source).map_err(|reason| Error::Secret {
        function: function.to_owned(),
        key: key.to_owned(),
        reason,
    })?;
    Ok(Secret::new(value))
}

/// A secret's text from the node's environment or a file (one trailing newline removed);
/// `Err` says what to fix. Functions' secrets and sinks' signing keys are read with it.
pub(crate) fn secret_text(source: &SecretSource) -> std::result::Result<String, String> {
    match source {
        SecretSource::Env(var) => std::env::var(var).map_err(|_| {
            format!(
                "environment variable {var} is not set (or not UTF-8); set it before starting weir"
            )
        }),
        SecretSource::File(path) => {
            let mut text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if text.ends_with('\n') {
                text.pop();
                if text.ends_with('\r') {
                    text.pop();
                }
            }
            Ok(text)
        }
    }
}
