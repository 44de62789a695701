//! `weir new`: each language's scaffold builds, with the tools its README names, into a
//! component that weir loads and calls, and that the README's `weir.toml` snippet points at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use weir_cloudevents::{CloudEvent, Data};
use weir_wasm::{FunctionHost, FunctionSettings, HostOptions, Limits};

/// Run `weir new` with `args` in `cwd`; returns (success, stdout, stderr).
fn weir_new(cwd: &Path, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(super::weir())
        .arg("new")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Scaffold `name` in `lang` into `parent/name`.
fn scaffold(parent: &Path, name: &str, lang: &str) -> PathBuf {
    let (ok, stdout, stderr) = weir_new(parent, &[name, "--lang", lang]);
    assert!(ok, "weir new {name} --lang {lang} failed: {stderr}");
    assert!(stdout.contains("build it with"), "{stdout}");
    parent.join(name)
}

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Load the component at `wasm` as the function `name`, call it once, and check that it
/// forwards the event to `out` unchanged.
fn assert_forwards_to_out(name: &str, wasm: &Path) {
    let host = FunctionHost::new(HostOptions {
        cache_dir: Some(weir_test_support::repo_root().join("target/wasm-cache-tests")),
        max_instances: 4,
        ..HostOptions::default()
    })
    .unwrap();
    let settings = FunctionSettings {
        // Generous: a loaded CI machine instantiating a JavaScript or Python runtime is
        // not what this test is about.
        limits: Limits {
            deadline: Duration::from_secs(10),
            ..Limits::default()
        },
        ..FunctionSettings::default()
    };
    let function = host
        .load(name, &std::fs::read(wasm).unwrap(), settings)
        .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let mut event = CloudEvent::new("e-1", "test://weir-new", "test.hello");
    event.subject = Some("s-1".to_owned());
    event.datacontenttype = Some("application/json".to_owned());
    event.data = Some(Data::Json(serde_json::json!({"hello": "world"}).into()));
    let outputs = function
        .call(&event)
        .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    assert_eq!(outputs[0].target, "out");
    assert_eq!(outputs[0].event, event);
}

/// The README's `weir.toml` snippet is a valid manifest whose function source is `wasm`.
fn assert_readme_manifest_points_at(dir: &Path, name: &str, wasm: &Path) {
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let toml = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README has a ```toml block");
    // The snippet's paths are relative to a weir.toml beside the function's directory.
    let manifest = weir_manifest::Manifest::from_toml_str(toml, dir.parent().unwrap())
        .unwrap_or_else(|e| panic!("the README's weir.toml is invalid: {e}\n{toml}"));
    assert_eq!(
        std::fs::canonicalize(&manifest.functions[name].source).unwrap(),
        std::fs::canonicalize(wasm).unwrap()
    );
}

#[test]
fn names_are_checked_and_nothing_is_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "Hello", "-x", "x-", "a_b", &"a".repeat(64)] {
        let (ok, _, stderr) = weir_new(tmp.path(), &["--lang", "js", "--", bad]);
        assert!(!ok, "{bad:?} was accepted");
        assert!(stderr.contains("is invalid"), "{stderr}");
    }
    let (ok, _, stderr) = weir_new(tmp.path(), &["1st", "--lang", "rust"]);
    assert!(!ok && stderr.contains("digit"), "{stderr}");

    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    std::fs::write(tmp.path().join("taken/keep.txt"), "mine").unwrap();
    let (ok, _, stderr) = weir_new(tmp.path(), &["taken", "--lang", "python"]);
    assert!(!ok && stderr.contains("not empty"), "{stderr}");
    assert_eq!(
        files(&tmp.path().join("taken")),
        [PathBuf::from("keep.txt")]
    );

    // An empty directory is fine, and --dir puts the project elsewhere.
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    let (ok, _, stderr) = weir_new(tmp.path(), &["x", "--lang", "py", "--dir", "empty"]);
    assert!(ok, "{stderr}");
    assert!(tmp.path().join("empty/app.py").is_file());
}

#[test]
fn every_scaffold_carries_the_repository_wit_and_the_pinned_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let wit = weir_test_support::repo_root().join("wit");
    for lang in ["rust", "js", "python"] {
        let dir = scaffold(tmp.path(), &format!("wit-{lang}"), lang);
        assert_eq!(files(&dir.join("wit")), files(&wit), "{lang}");
        for file in files(&wit) {
            assert_eq!(
                std::fs::read(dir.join("wit").join(&file)).unwrap(),
                std::fs::read(wit.join(&file)).unwrap(),
                "{lang}: wit/{}",
                file.display()
            );
        }
    }

    // The scaffolds pin the versions the repository's own examples are built with.
    let dev_dependencies = |path: &Path| {
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        json["devDependencies"].clone()
    };
    assert_eq!(
        dev_dependencies(&tmp.path().join("wit-js/package.json")),
        dev_dependencies(&weir_test_support::example_dir().join("enrich-order-js/package.json"))
    );
    let build_py = std::fs::read_to_string(tmp.path().join("wit-python/build.py")).unwrap();
    let pinned = format!(
        "VERSION = \"{}\"",
        weir_test_support::script_guests::COMPONENTIZE_PY_VERSION
    );
    assert!(build_py.contains(&pinned), "build.py lacks {pinned}");
}

#[test]
fn rust_scaffold_builds_and_forwards_to_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scaffold(tmp.path(), "hello-rust", "rust");
    // A target directory shared across runs, so the SDK's dependencies build once.
    let target = weir_test_support::repo_root().join("target/weir-new-rust");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo build of the Rust scaffold failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wasm = target.join("wasm32-wasip2/release/hello_rust.wasm");
    assert_forwards_to_out("hello-rust", &wasm);
    // The README's path is the one a build without CARGO_TARGET_DIR writes.
    let default_wasm = dir.join("target/wasm32-wasip2/release/hello_rust.wasm");
    std::fs::create_dir_all(default_wasm.parent().unwrap()).unwrap();
    std::fs::copy(&wasm, &default_wasm).unwrap();
    assert_readme_manifest_points_at(&dir, "hello-rust", &default_wasm);
}

#[test]
fn javascript_scaffold_builds_and_forwards_to_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scaffold(tmp.path(), "hello-js", "js");
    let wasm = dir.join("dist/hello_js.wasm");
    // `npm install` and `npm run build`, as the README says.
    weir_test_support::script_guests::build_javascript(&dir, &wasm, &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_forwards_to_out("hello-js", &wasm);
    assert_readme_manifest_points_at(&dir, "hello-js", &wasm);
}

#[test]
fn python_scaffold_builds_and_forwards_to_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scaffold(tmp.path(), "hello-py", "python");
    // `python3 build.py`, as the README says, with the repository's componentize-py
    // instead of a fresh .venv in the scaffold.
    let componentize_py = weir_test_support::script_guests::ensure_componentize_py()
        .unwrap_or_else(|e| panic!("{e:#}"));
    let output = Command::new("python3")
        .arg("build.py")
        .current_dir(&dir)
        .env("COMPONENTIZE_PY", componentize_py)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python3 build.py failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let wasm = dir.join("dist/hello_py.wasm");
    assert_forwards_to_out("hello-py", &wasm);
    assert_readme_manifest_points_at(&dir, "hello-py", &wasm);
}
