//! `weir new NAME --lang rust|js|python`: scaffold a function project that builds to a
//! deployable component on its own.
//!
//! The templates (`templates/<lang>/`) and the WIT (`wit/`, the world and all its deps) are
//! embedded in the binary, so a scaffold needs nothing from a weir checkout, except the
//! Rust one: weir's Rust SDK is not published, so its `Cargo.toml` names the `weir-guest`
//! crate by path, by default the one in the checkout this binary was built from
//! (`--sdk` overrides it).
//!
//! Templates fill in `{{name}}` (the function's name), `{{crate}}` (the name with `_` for
//! `-`, as the built `.wasm` is named), `{{sdk}}`, and `{{componentize_js}}`,
//! `{{preview2_shim}}` and `{{componentize_py}}` (the tool versions the repo's own examples
//! are built with; a test checks that they agree).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The componentize-js release JavaScript scaffolds pin (as `examples/orders/enrich-order-js`).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
/// The preview2-shim JavaScript scaffolds pin: componentize-js imports it when it builds
/// but does not depend on it, and later releases cannot read the project's files.
pub const PREVIEW2_SHIM_VERSION: &str = "0.25.0";
/// The componentize-py release Python scaffolds pin (as `weir-test-support` builds with).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The function's name, as in weir.toml: 1 to 63 of a-z, 0-9 and '-'.
    name: String,
    /// The language of the function.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The directory to create (default ./NAME); it must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Rust only: the weir-guest SDK crate to depend on (default: crates/weir-guest of the
    /// weir checkout this binary was built from).
    #[arg(long)]
    sdk: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    #[value(alias = "javascript")]
    Js,
    #[value(alias = "py")]
    Python,
}

/// `(path, text)` of files of the repository's `wit/`, embedded.
macro_rules! wit_files {
    ($($path:literal),* $(,)?) => {
        [$(($path, include_str!(concat!("../../../wit/", $path)))),*]
    };
}

/// A file of a template: its path in the scaffold and its text.
type TemplateFile = (&'static str, &'static str);

const RUST: &[TemplateFile] = &[
    ("Cargo.toml", include_str!("../templates/rust/Cargo.toml")),
    ("src/lib.rs", include_str!("../templates/rust/src/lib.rs")),
    ("README.md", include_str!("../templates/rust/README.md")),
    (".gitignore", include_str!("../templates/rust/gitignore")),
];

const JS: &[TemplateFile] = &[
    ("package.json", include_str!("../templates/js/package.json")),
    ("build.mjs", include_str!("../templates/js/build.mjs")),
    ("index.js", include_str!("../templates/js/index.js")),
    ("README.md", include_str!("../templates/js/README.md")),
    (".gitignore", include_str!("../templates/js/gitignore")),
];

const PYTHON: &[TemplateFile] = &[
    ("app.py", include_str!("../templates/python/app.py")),
    ("build.py", include_str!("../templates/python/build.py")),
    ("README.md", include_str!("../templates/python/README.md")),
    (".gitignore", include_str!("../templates/python/gitignore")),
];

/// The repository's `wit/`, copied as is into every scaffold. A test checks that this
/// list is the whole directory.
const WIT: &[TemplateFile] = &wit_files![
    "entity.wit",
    "function.wit",
    "http.wit",
    "projection.wit",
    "deps/cli.wit",
    "deps/clocks.wit",
    "deps/config/store.wit",
    "deps/config/world.wit",
    "deps/filesystem.wit",
    "deps/http.wit",
    "deps/io.wit",
    "deps/keyvalue/store.wit",
    "deps/keyvalue/world.wit",
    "deps/logging/logging.wit",
    "deps/random.wit",
    "deps/sockets.wit",
];

/// Why `name` is not a valid function name, if it is not: the manifest's rule, and for
/// Rust cargo's too.
fn name_fault(name: &str, lang: Lang) -> Option<&'static str> {
    weir_manifest::name_fault(name).or_else(|| {
        (lang == Lang::Rust && name.starts_with(|c: char| c.is_ascii_digit()))
            .then_some("a Rust package name cannot start with a digit")
    })
}

pub fn run(args: NewArgs) -> anyhow::Result<()> {
    let NewArgs {
        name,
        lang,
        dir,
        sdk,
    } = args;
    if let Some(fault) = name_fault(&name, lang) {
        bail!(
            "function name {name:?} is invalid: {fault}; use 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    if sdk.is_some() && lang != Lang::Rust {
        bail!("--sdk is for Rust functions only; drop it or add --lang rust");
    }
    let sdk = match lang {
        Lang::Rust => Some(find_sdk(sdk)?),
        Lang::Js | Lang::Python => None,
    };
    let files = scaffold(&name, lang, sdk.as_deref());
    write_all(&dir, &files)?;

    let shown = dir.display();
    let (language, build) = match lang {
        Lang::Rust => ("Rust", "cargo build --release --target wasm32-wasip2"),
        Lang::Js => ("JavaScript", "npm install && npm run build"),
        Lang::Python => ("Python", "python3 build.py"),
    };
    println!("created the {language} function {name:?} in {shown}");
    println!("build it with: cd {shown} && {build}   (see {shown}/README.md)");
    Ok(())
}

/// The files of a scaffold, templates filled in.
fn scaffold(name: &str, lang: Lang, sdk: Option<&Path>) -> Vec<(PathBuf, String)> {
    let crate_name = name.replace('-', "_");
    let sdk = sdk.map(|p| toml_escape(&p.display().to_string()));
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", sdk.as_deref().unwrap_or(""))
            .replace("{{componentize_js}}", COMPONENTIZE_JS_VERSION)
            .replace("{{preview2_shim}}", PREVIEW2_SHIM_VERSION)
            .replace("{{componentize_py}}", COMPONENTIZE_PY_VERSION)
    };
    let template = match lang {
        Lang::Rust => RUST,
        Lang::Js => JS,
        Lang::Python => PYTHON,
    };
    template
        .iter()
        .map(|(path, text)| (PathBuf::from(path), fill(text)))
        .chain(
            WIT.iter()
                .map(|(path, text)| (Path::new("wit").join(path), (*text).to_owned())),
        )
        .collect()
}

/// The weir-guest crate: `--sdk`, else the one beside this crate in the checkout it was
/// built from.
fn find_sdk(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let (sdk, hint) = match given {
        Some(sdk) => (sdk, "check the --sdk path"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../weir-guest"),
            "this weir was built from a checkout that is no longer there; pass --sdk PATH to the crates/weir-guest of a weir checkout",
        ),
    };
    if !sdk.join("Cargo.toml").is_file() {
        bail!(
            "the Rust SDK weir-guest is not at {} ({hint})",
            sdk.display()
        );
    }
    std::fs::canonicalize(&sdk).with_context(|| format!("cannot resolve {}", sdk.display()))
}

/// Text for inside a TOML basic string (`"..."`).
fn toml_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

fn write_all(dir: &Path, files: &[(PathBuf, String)]) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} already exists and is not empty; pick another --dir or remove it",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            bail!("{} exists and is not a directory", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
