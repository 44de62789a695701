//! The AsyncAPI project's own parser (`@asyncapi/parser`, in `tools/asyncapi-check`), run
//! on a document weir generated.

use std::process::Command;

/// Checks `doc` with `tools/asyncapi-check/check.mjs`: `Ok` with its report when the
/// parser finds no error and no warning and the document has no `$ref` outside itself,
/// `Err` with the report otherwise. Panics with what to install when Node.js or the
/// parser is missing (`cargo xtask test` installs the parser).
pub fn asyncapi_check(doc: &serde_json::Value) -> Result<String, String> {
    let dir = crate::repo_root().join("tools/asyncapi-check");
    assert!(
        dir.join("node_modules/@asyncapi/parser").exists(),
        "the AsyncAPI parser is not installed: run `npm ci --ignore-scripts` in {} (`cargo xtask test` does)",
        dir.display()
    );
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    std::fs::write(
        file.path(),
        serde_json::to_vec_pretty(doc).expect("a JSON document"),
    )
    .expect("the document written");
    let out = Command::new("node")
        .arg(dir.join("check.mjs"))
        .arg(file.path())
        .output()
        .expect("node (Node.js 20 or newer) must be installed to check AsyncAPI documents");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(report)
    } else {
        Err(report)
    }
}
