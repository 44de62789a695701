//! The deploy plan as a pure function: what is planned, what is refused and why.

use std::collections::BTreeMap;
use std::path::Path;

use weir_manifest::Manifest;

use super::{Plan, plan};
use crate::Error;

const APP: &str = r#"
[app]
name = "orders"
[topics.in]
partitions = 2
[topics.out]
[functions.f]
source = "f.wasm"
config = { rate = "1" }
[pipelines.p]
from = "in"
function = "f"
to = ["out"]
"#;

fn manifest(text: &str) -> Manifest {
    Manifest::from_toml_str(text, Path::new("/app")).unwrap()
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_unchanged_app_changes_nothing() {
    let app = manifest(APP);
    let v = versions(&[("f", "aaaaaaaaaaaa")]);
    assert_eq!(plan(Some(&app), &app, &v, &v).unwrap(), Plan::default());
}

#[test]
fn a_new_component_or_new_settings_recompile_the_function() {
    let app = manifest(APP);
    let active = versions(&[("f", "aaaaaaaaaaaa")]);
    let p = plan(
        Some(&app),
        &app,
        &active,
        &versions(&[("f", "bbbbbbbbbbbb")]),
    )
    .unwrap();
    assert_eq!(p.functions, ["f"]);

    // Another source path alone is no change; another config value is.
    let moved = manifest(&APP.replace("f.wasm", "build/f.wasm"));
    assert_eq!(
        plan(Some(&app), &moved, &active, &active).unwrap(),
        Plan::default()
    );
    let reconfigured = manifest(&APP.replace("rate = \"1\"", "rate = \"2\""));
    let p = plan(Some(&app), &reconfigured, &active, &active).unwrap();
    assert_eq!(p.functions, ["f"]);
}

#[test]
fn additions_are_planned() {
    let app = manifest(APP);
    let more = format!(
        "{APP}\n[topics.audit]\n[functions.g]\nsource = \"g.wasm\"\n[pipelines.q]\nfrom = \"in\"\nfunction = \"g\"\nto = [\"audit\"]\n[keyvalue.customers]\n"
    );
    let next = manifest(&more);
    let p = plan(
        Some(&app),
        &next,
        &versions(&[("f", "aaaaaaaaaaaa")]),
        &versions(&[("f", "aaaaaaaaaaaa"), ("g", "cccccccccccc")]),
    )
    .unwrap();
    assert_eq!(p.topics, ["audit"]);
    assert_eq!(p.functions, ["g"]);
    assert_eq!(p.pipelines, ["q"]);
    assert_eq!(p.namespaces, ["customers"]);

    // A node without an app takes the whole app.
    let p = plan(None, &app, &BTreeMap::new(), &versions(&[("f", "a")])).unwrap();
    assert_eq!(p.topics, ["in", "out"]);
    assert_eq!(p.functions, ["f"]);
    assert_eq!(p.pipelines, ["p"]);
}

#[test]
fn changing_or_removing_pipelines_functions_and_partitions_is_refused_with_every_reason() {
    let app = manifest(APP);
    let changed = APP
        .replace("partitions = 2", "partitions = 3")
        .replace("to = [\"out\"]", "to = [\"out\"]\nstart = \"latest\"")
        .replace("name = \"orders\"", "name = \"other\"");
    let err = plan(
        Some(&app),
        &manifest(&changed),
        &versions(&[("f", "a")]),
        &versions(&[("f", "a")]),
    )
    .unwrap_err();
    let Error::DeployRefused { reasons } = &err else {
        panic!("{err}")
    };
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    let text = err.to_string();
    assert!(text.contains("pipeline \"p\" changes"), "{text}");
    assert!(
        text.contains("topic \"in\" changes from 2 to 3 partitions"),
        "{text}"
    );
    assert!(text.contains("restart the node"), "{text}");

    let without = manifest("[app]\nname = \"orders\"\n[topics.in]\npartitions = 2\n");
    let err = plan(
        Some(&app),
        &without,
        &versions(&[("f", "a")]),
        &BTreeMap::new(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("pipeline \"p\" is removed"), "{text}");
    assert!(text.contains("function \"f\" is removed"), "{text}");
}

#[test]
fn every_declared_function_needs_a_component_and_no_other() {
    let app = manifest(APP);
    let err = plan(None, &app, &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidDeploy { .. }), "{err}");
    assert!(err.to_string().contains("[\"f\"]"), "{err}");
    let err = plan(
        None,
        &app,
        &BTreeMap::new(),
        &versions(&[("f", "a"), ("x", "b")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("[\"x\"]"), "{err}");
}

#[test]
fn a_deploy_cannot_reach_new_secrets_or_seed_files_on_the_node() {
    let app = manifest(APP);
    let v = versions(&[("f", "aaaaaaaaaaaa")]);
    let next = manifest(&format!(
        "{APP}[functions.f.secrets]\ntoken = {{ file = \"/etc/shadow\" }}\nkey = {{ env = \"AWS_SECRET_ACCESS_KEY\" }}\n[keyvalue.loot]\nseed = \"/root/.ssh/id_ed25519\"\n"
    ));
    let Err(Error::DeployRefused { reasons }) = plan(Some(&app), &next, &v, &v) else {
        panic!("expected the deploy to be refused")
    };
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("secret \"token\"")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("secret \"key\"")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("\"loot\" has a seed file")),
        "{reasons:?}"
    );

    // The secrets and seeds the running app already reads may stay.
    let with = manifest(&format!(
        "{APP}[functions.f.secrets]\ntoken = {{ env = \"F_TOKEN\" }}\n[keyvalue.c]\nseed = \"c.json\"\n"
    ));
    assert!(plan(Some(&with), &with, &v, &v).is_ok());
}
