//! Building functions written in JavaScript (componentize-js) and Python
//! (componentize-py) into components, for xtask, the tests and `weir new`'s tests alike.
//!
//! The tools come from the ordinary registries and nothing is installed globally: a
//! JavaScript project gets its own `node_modules` (`npm install`, which follows
//! `package-lock.json` where there is one) and is built with `npm run build`; Python
//! projects share one virtualenv, `target/py-venv`, with componentize-py
//! [`COMPONENTIZE_PY_VERSION`] pinned. The same virtualenv holds the OpenAPI validator the
//! tests check `GET /v1/openapi.json` with ([`ensure_openapi_spec_validator`]) and the
//! OTLP receiver the trace export test runs ([`ensure_oteltest`]).
//! A build is skipped when its output is newer than every input (the project's files, the
//! WIT, the installed tools): componentizing takes seconds, and CI builds both examples on
//! every run.
//!
//! Builds take a file lock (`target/script-guests.lock`), so test processes that nextest
//! runs side by side do not install or write the same files at once.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, bail};

use crate::repo_root;

/// The componentize-py release Python functions are built with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The WIT world every function targets.
pub const WORLD: &str = "weir:function/handler";

/// Directories that are outputs or installed tools, never sources, in a function project.
const NOT_SOURCES: &[&str] = &[
    "node_modules",
    "dist",
    "target",
    "__pycache__",
    ".venv",
    "wit_world",
];

/// The virtualenv that holds componentize-py for every Python function the repo builds.
pub fn python_venv() -> PathBuf {
    repo_root().join("target/py-venv")
}

/// The `componentize-py` of [`python_venv`], created and installed if missing or of another
/// version.
pub fn ensure_componentize_py() -> anyhow::Result<PathBuf> {
    let _lock = build_lock()?;
    ensure_componentize_py_locked()
}

fn ensure_componentize_py_locked() -> anyhow::Result<PathBuf> {
    let venv = python_venv();
    let componentize_py = venv.join("bin/componentize-py");
    let wanted = format!("componentize-py {COMPONENTIZE_PY_VERSION}");
    let installed = Command::new(&componentize_py)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(wanted.as_str()) {
        return Ok(componentize_py);
    }
    pip_install_locked(&format!("componentize-py=={COMPONENTIZE_PY_VERSION}"))?;
    Ok(componentize_py)
}

/// The openapi-spec-validator release the tests check weir's OpenAPI document with.
pub const OPENAPI_SPEC_VALIDATOR_VERSION: &str = "0.9.0";

/// The `openapi-spec-validator` of [`python_venv`], installed if missing or of another
/// version.
pub fn ensure_openapi_spec_validator() -> anyhow::Result<PathBuf> {
    let _lock = build_lock()?;
    let venv = python_venv();
    let validator = venv.join("bin/openapi-spec-validator");
    let installed = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('openapi-spec-validator'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(OPENAPI_SPEC_VALIDATOR_VERSION) && validator.exists() {
        return Ok(validator);
    }
    pip_install_locked(&format!(
        "openapi-spec-validator=={OPENAPI_SPEC_VALIDATOR_VERSION}"
    ))?;
    Ok(validator)
}

/// The oteltest release (the OpenTelemetry project's test receiver) the trace export
/// test receives spans with.
pub const OTELTEST_VERSION: &str = "0.49.0";

/// The `python` of [`python_venv`] with oteltest installed, installed if missing or of
/// another version.
pub fn ensure_oteltest() -> anyhow::Result<PathBuf> {
    ensure_in_venv("oteltest", OTELTEST_VERSION, "oteltest.sink")
}

/// The Standard Webhooks reference library for Python, whose verifier checks the
/// signatures of weir's webhook sink.
pub const STANDARDWEBHOOKS_VERSION: &str = "1.3.0";

/// The `python` of [`python_venv`] with `standardwebhooks` installed, installed if missing
/// or of another version.
pub fn ensure_standardwebhooks() -> anyhow::Result<PathBuf> {
    ensure_in_venv(
        "standardwebhooks",
        STANDARDWEBHOOKS_VERSION,
        "standardwebhooks.webhooks",
    )
}

/// The `python` of [`python_venv`] with `package` at `version` (importing `module`
/// works), installed from PyPI if missing or of another version.
fn ensure_in_venv(package: &str, version: &str, module: &str) -> anyhow::Result<PathBuf> {
    let _lock = build_lock()?;
    let python = python_venv().join("bin/python");
    let installed = Command::new(&python)
        .args([
            "-c",
            &format!(
                "import importlib.metadata as m; import {module}; print(m.version('{package}'))"
            ),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if installed.as_deref() == Some(version) {
        return Ok(python);
    }
    pip_install_locked(&format!("{package}=={version}"))?;
    Ok(python)
}

/// `promtool` (Prometheus's checker of the text exposition format), which checks
/// `GET /metrics`: the one on `PATH` if there is one, else the one in Debian's
/// `prometheus` package, downloaded with `apt-get download` (running `apt-get update`
/// first if the package lists do not have it) and unpacked under `target/promtool`.
/// Unpacked rather than installed: installing the package would start a Prometheus
/// server on the machine, and `promtool` is one static binary.
pub fn ensure_promtool() -> anyhow::Result<PathBuf> {
    let works = |promtool: &Path| {
        Command::new(promtool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(Path::new("promtool")) {
        return Ok(PathBuf::from("promtool"));
    }
    let _lock = build_lock()?;
    let dir = repo_root().join("target/promtool");
    let promtool = dir.join("usr/bin/promtool");
    if works(&promtool) {
        return Ok(promtool);
    }
    let download = dir.join("deb");
    std::fs::create_dir_all(&download)?;
    let fetch = || {
        run(Command::new("apt-get")
            .args(["download", "prometheus"])
            .current_dir(&download))
    };
    if fetch().is_err() {
        run(Command::new("apt-get").arg("update"))
            .context("cannot update the package lists (`apt-get update`)")?;
        fetch().context(
            "cannot download Debian's prometheus package; install it (`apt-get install prometheus`) so that promtool is on PATH",
        )?;
    }
    let deb = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension() == Some(OsStr::new("deb")))
        .context("apt-get download left no .deb")?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    if !works(&promtool) {
        bail!(
            "{} does not run; install Debian's prometheus package (`apt-get install prometheus`) so that promtool is on PATH",
            promtool.display()
        );
    }
    Ok(promtool)
}

/// Install `requirement` from PyPI into [`python_venv`], creating it first if needed. The
/// caller holds [`build_lock`].
fn pip_install_locked(requirement: &str) -> anyhow::Result<()> {
    let venv = python_venv();
    let bin = venv.join("bin");
    if !bin.join("python").exists() {
        let python = which_python()?;
        run(Command::new(python).arg("-m").arg("venv").arg(&venv)).with_context(|| {
            format!(
                "cannot create the virtualenv {}; on Debian or Ubuntu install python3-venv (`apt-get install python3-venv`)",
                venv.display()
            )
        })?;
    }
    run(Command::new(bin.join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(requirement))
    .with_context(|| format!("cannot install {requirement} from PyPI into the virtualenv"))
}

fn which_python() -> anyhow::Result<&'static str> {
    for python in ["python3", "python"] {
        let ok = Command::new(python)
            .args(["-c", "import sys; assert sys.version_info >= (3, 10)"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(python);
        }
    }
    bail!(
        "Python 3.10 or newer is needed to build Python functions and to validate the OpenAPI document, and was not found as `python3`; install it (Debian/Ubuntu: `apt-get install python3 python3-venv`)"
    )
}

/// Build the Python function project `project` (module `app` in `app.py`) against the WIT
/// in `wit` into `output`, unless `output` is newer than every input. `extra_inputs` are
/// files or directories outside the project that the build reads. Returns whether it built.
pub fn build_python(
    project: &Path,
    wit: &Path,
    output: &Path,
    extra_inputs: &[&Path],
) -> anyhow::Result<bool> {
    let _lock = build_lock()?;
    let componentize_py = ensure_componentize_py_locked()?;
    let mut inputs = vec![project, wit, componentize_py.as_path()];
    inputs.extend_from_slice(extra_inputs);
    if is_fresh(output, &inputs)? {
        return Ok(false);
    }
    if let Some(dir) = output.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    run(Command::new(&componentize_py)
        .arg("-d")
        .arg(wit)
        .args(["-w", WORLD, "componentize", "app", "-o"])
        .arg(output)
        .current_dir(project))
    .with_context(|| format!("componentize-py failed for {}", project.display()))?;
    Ok(true)
}

/// Build the JavaScript function project `project` (a `package.json` whose `build` script
/// writes `output`) unless `output` is newer than every input: `npm install` when
/// `node_modules` is missing or older than `package.json` or the lock file, then
/// `npm run build`. Returns whether it built.
pub fn build_javascript(
    project: &Path,
    output: &Path,
    extra_inputs: &[&Path],
) -> anyhow::Result<bool> {
    let _lock = build_lock()?;
    let installed = project.join("node_modules/.package-lock.json");
    let stale_install = match mtime(&installed)? {
        None => true,
        Some(installed) => {
            let manifest = mtime(&project.join("package.json"))?;
            let lock = mtime(&project.join("package-lock.json"))?;
            manifest
                .max(lock)
                .is_some_and(|changed| changed > installed)
        }
    };
    if stale_install {
        // `npm install`, not `npm ci`: with a lock file it installs exactly what the lock
        // says too, but `npm ci` refuses componentize-js's tree, whose jco and rolldown
        // declare optional per-platform packages that were never published (so they
        // cannot be in any lock file).
        run(Command::new(npm()?)
            .args(["install", "--no-audit", "--no-fund"])
            .current_dir(project))
        .with_context(|| format!("`npm install` failed in {}", project.display()))?;
    }
    let mut inputs = vec![project, installed.as_path()];
    inputs.extend_from_slice(extra_inputs);
    if !stale_install && is_fresh(output, &inputs)? {
        return Ok(false);
    }
    run(Command::new(npm()?)
        .args(["run", "--silent", "build"])
        .current_dir(project))
    .with_context(|| format!("`npm run build` failed in {}", project.display()))?;
    if !output.exists() {
        bail!(
            "`npm run build` in {} did not write {}",
            project.display(),
            output.display()
        );
    }
    Ok(true)
}

fn npm() -> anyhow::Result<&'static str> {
    let has = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("node") || !has("npm") {
        bail!(
            "Node.js 18 or newer with npm is needed to build JavaScript functions and `node` or `npm` was not found; install them (Debian/Ubuntu: `apt-get install nodejs npm`)"
        );
    }
    Ok("npm")
}

/// Whether `output` exists and is newer than every file under `inputs` (source
/// directories are walked, skipping [`NOT_SOURCES`] and hidden entries).
fn is_fresh(output: &Path, inputs: &[&Path]) -> anyhow::Result<bool> {
    let Some(built) = mtime(output)? else {
        return Ok(false);
    };
    for input in inputs {
        if newest(input)?.is_some_and(|t| t >= built) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn newest(path: &Path) -> anyhow::Result<Option<SystemTime>> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
    };
    if !meta.is_dir() {
        return Ok(Some(meta.modified()?));
    }
    let mut latest = None;
    for entry in
        std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        if is_hidden_or_output(&name) {
            continue;
        }
        latest = latest.max(newest(&entry.path())?);
    }
    Ok(latest)
}

fn is_hidden_or_output(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with('.') || name.starts_with("componentize_py") || NOT_SOURCES.contains(&&*name)
}

fn mtime(path: &Path) -> anyhow::Result<Option<SystemTime>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.modified()?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot stat {}", path.display())),
    }
}

/// An exclusive lock across processes, held until dropped.
fn build_lock() -> anyhow::Result<File> {
    let dir = repo_root().join("target");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("script-guests.lock");
    let file = File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()
        .with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(file)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}
