//! Unit tests for parsing, defaults, path resolution and every validation rule of
//! `weir.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use expect_test::expect;

use crate::{
    AppSection, AuthSpec, CapabilitiesSpec, CorsSpec, EntitySpec, Error, FsyncSpec, FunctionSpec,
    HttpSpec, JwtSpec, LimitsSpec, Manifest, MissedTicks, NodeLimits, Ordering, PipelineSpec,
    Problem, RetrySpec, RoleSpec, RouteSpec, ScheduleSpec, SecretSource, SourceData, SourceSpec,
    StartPosition, TopicSpec,
};

const EXAMPLE: &str = r#"
[app]
name = "orders"

[topics."erp.sales-orders"]
partitions = 4
[topics."crm.orders"]
partitions = 4

[functions.enrich-order]
source = "enrich-order/target/wasm32-wasip2/release/enrich_order.wasm"
limits = { deadline_ms = 100, memory_mb = 64 }
[functions.enrich-order.config]
currency = "EUR"
"rate.USD" = "0.92"

[pipelines.erp-to-crm]
from = "erp.sales-orders"
function = "enrich-order"
to = ["crm.orders"]
group = "erp-to-crm"
start = "earliest"
"#;

/// One topic `in`, one `out`, function `f` and pipeline `p` reading `in` and writing `out`,
/// followed by `extra` (which may add keys to `[pipelines.p]`, the last table).
fn minimal_with(extra: &str) -> String {
    format!(
        r#"
[topics.in]
[topics.out]
[functions.f]
source = "f.wasm"
[pipelines.p]
from = "in"
function = "f"
to = "out"
{extra}"#
    )
}

fn base_dir() -> &'static Path {
    Path::new("/apps/orders")
}

fn parse(text: &str) -> Manifest {
    Manifest::from_toml_str(text, base_dir())
        .unwrap_or_else(|error| panic!("manifest should parse: {error}\n{text}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match Manifest::from_toml_str(text, base_dir()) {
        Err(Error::Invalid(problems)) => problems,
        Err(other) => panic!("expected validation problems, got: {other}"),
        Ok(_) => panic!("manifest should be invalid:\n{text}"),
    }
}

/// The single problem `text` has; its key must be `key`.
fn only_problem(text: &str, key: &str) -> Problem {
    let problems = problems(text);
    assert_eq!(problems.len(), 1, "expected one problem: {problems:#?}");
    let problem = problems.into_iter().next().expect("one problem");
    assert_eq!(problem.key, key, "{problem}");
    problem
}

fn parse_error(text: &str) -> String {
    match Manifest::from_toml_str(text, base_dir()) {
        Err(error @ Error::Parse { .. }) => error.to_string(),
        Err(other) => panic!("expected a parse error, got: {other}"),
        Ok(_) => panic!("manifest should not parse:\n{text}"),
    }
}

#[test]
fn example_app_parses_to_exactly_the_declared_values() {
    let manifest = parse(EXAMPLE);

    let expected = Manifest {
        app: AppSection {
            name: "orders".to_owned(),
            backend: None,
        },
        topics: BTreeMap::from([
            (
                "erp.sales-orders".to_owned(),
                TopicSpec {
                    partitions: 4,
                    ..TopicSpec::default()
                },
            ),
            (
                "crm.orders".to_owned(),
                TopicSpec {
                    partitions: 4,
                    ..TopicSpec::default()
                },
            ),
        ]),
        functions: BTreeMap::from([(
            "enrich-order".to_owned(),
            FunctionSpec {
                source: PathBuf::from(
                    "/apps/orders/enrich-order/target/wasm32-wasip2/release/enrich_order.wasm",
                ),
                limits: LimitsSpec {
                    deadline_ms: 100,
                    memory_mb: 64,
                    ..LimitsSpec::default()
                },
                config: BTreeMap::from([
                    ("currency".to_owned(), "EUR".to_owned()),
                    ("rate.USD".to_owned(), "0.92".to_owned()),
                ]),
                secrets: BTreeMap::new(),
                capabilities: CapabilitiesSpec {
                    http_timeout_ms: 5000,
                    ..CapabilitiesSpec::default()
                },
                instance_reuse: 1000,
            },
        )]),
        pipelines: BTreeMap::from([(
            "erp-to-crm".to_owned(),
            PipelineSpec {
                from: vec!["erp.sales-orders".to_owned()],
                from_patterns: vec!["erp.sales-orders".to_owned()],
                function: "enrich-order".to_owned(),
                to: vec!["crm.orders".to_owned()],
                dead_letter: "erp-to-crm.dlq".to_owned(),
                group: "erp-to-crm".to_owned(),
                start: StartPosition::Earliest,
                ordering: Ordering::Key,
                concurrency: 4,
                linger_ms: 0,
                filter: None,
                retry: RetrySpec::default(),
            },
        )]),
        keyvalue: BTreeMap::new(),
        entities: BTreeMap::new(),
        views: BTreeMap::new(),
        sources: BTreeMap::new(),
        sinks: BTreeMap::new(),
        schedules: BTreeMap::new(),
        routes: BTreeMap::new(),
        schemas: BTreeMap::new(),
        auth: None,
        http: HttpSpec::default(),
        limits: NodeLimits::default(),
        base_dir: PathBuf::from("/apps/orders"),
        text: EXAMPLE.to_owned(),
    };
    assert_eq!(manifest, expected);
    assert_eq!(manifest.validate().ok(), Some(()));
}

#[test]
fn omitted_optional_keys_take_their_defaults() {
    let manifest = parse(
        r#"
[topics.in]
[functions.f]
source = "f.wasm"
[pipelines.p]
from = ["in"]
function = "f"
"#,
    );

    assert_eq!(manifest.app.name, "app");
    assert_eq!(manifest.app, AppSection::default());
    assert_eq!(manifest.topics["in"].partitions, 1);
    let function = &manifest.functions["f"];
    assert_eq!(
        function.limits,
        LimitsSpec {
            deadline_ms: 100,
            memory_mb: 64,
            ..LimitsSpec::default()
        }
    );
    assert_eq!(function.limits.deadline().as_millis(), 100);
    assert_eq!(function.limits.memory_bytes(), 64 * 1024 * 1024);
    assert!(function.config.is_empty());
    let pipeline = &manifest.pipelines["p"];
    assert_eq!(pipeline.from, ["in"]);
    assert!(pipeline.to.is_empty(), "to defaults to no topics");
    assert_eq!(
        pipeline.group, "p",
        "the group defaults to the pipeline's name"
    );
    assert_eq!(pipeline.start, StartPosition::Earliest);
}

#[test]
fn an_empty_manifest_is_an_app_with_nothing_in_it() {
    let manifest = parse("");
    assert_eq!(manifest.app.name, "app");
    assert!(manifest.topics.is_empty());
    assert!(manifest.functions.is_empty());
    assert!(manifest.pipelines.is_empty());
}

#[test]
fn limits_may_be_given_in_part_or_as_a_table() {
    let manifest = parse(
        r#"
[functions.a]
source = "a.wasm"
limits = { memory_mb = 128 }
[functions.b]
source = "b.wasm"
[functions.b.limits]
deadline_ms = 2500
"#,
    );
    assert_eq!(
        manifest.functions["a"].limits,
        LimitsSpec {
            deadline_ms: 100,
            memory_mb: 128,
            ..LimitsSpec::default()
        }
    );
    assert_eq!(
        manifest.functions["b"].limits,
        LimitsSpec {
            deadline_ms: 2500,
            memory_mb: 64,
            ..LimitsSpec::default()
        }
    );
}

#[test]
fn from_and_to_accept_one_topic_or_a_list() {
    let manifest = parse(
        r#"
[topics.a]
[topics.b]
[topics.c]
[functions.f]
source = "f.wasm"
[pipelines.one]
from = "a"
function = "f"
to = "c"
[pipelines.many]
from = ["a", "b"]
function = "f"
to = ["c", "b.copy", ]
[topics."b.copy"]
[pipelines.none]
from = "c"
function = "f"
to = []
"#,
    );
    assert_eq!(manifest.pipelines["one"].from, ["a"]);
    assert_eq!(manifest.pipelines["one"].to, ["c"]);
    assert_eq!(manifest.pipelines["many"].from, ["a", "b"]);
    assert_eq!(manifest.pipelines["many"].to, ["c", "b.copy"]);
    assert!(manifest.pipelines["none"].to.is_empty());
}

#[test]
fn start_latest_is_accepted_and_other_spellings_are_not() {
    let manifest = parse(&minimal_with(r#"start = "latest""#));
    assert_eq!(manifest.pipelines["p"].start, StartPosition::Latest);
    assert_eq!(StartPosition::Latest.as_str(), "latest");

    let message = parse_error(&minimal_with(r#"start = "newest""#));
    assert!(
        message.contains("unknown variant `newest`, expected `earliest` or `latest`"),
        "{message}"
    );
}

#[test]
fn relative_source_resolves_against_base_dir_and_absolute_source_is_kept() {
    let text = r#"
[functions.relative]
source = "build/../f.wasm"
[functions.absolute]
source = "/opt/wasm/g.wasm"
"#;
    let manifest = Manifest::from_toml_str(text, Path::new("/srv/app")).expect("parses");
    assert_eq!(manifest.base_dir, Path::new("/srv/app"));
    assert_eq!(
        manifest.functions["relative"].source,
        Path::new("/srv/app/build/../f.wasm")
    );
    assert_eq!(
        manifest.functions["absolute"].source,
        Path::new("/opt/wasm/g.wasm")
    );

    let relative_base = Manifest::from_toml_str(text, Path::new("apps/orders")).expect("parses");
    assert_eq!(
        relative_base.functions["relative"].source,
        Path::new("apps/orders/build/../f.wasm")
    );
}

#[test]
fn config_values_of_every_scalar_type_become_strings() {
    let manifest = parse(
        r#"
[functions.f]
source = "f.wasm"
[functions.f.config]
text = "EUR"
"rate.USD" = 0.92
whole-float = 1.0
huge = 1e100
integer = 42
negative = -7
hex = 0xff
enabled = true
disabled = false
infinite = -inf
"#,
    );
    let config: Vec<(&str, &str)> = manifest.functions["f"]
        .config
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    assert_eq!(
        config,
        [
            ("disabled", "false"),
            ("enabled", "true"),
            ("hex", "255"),
            ("huge", "1e100"),
            ("infinite", "-inf"),
            ("integer", "42"),
            ("negative", "-7"),
            ("rate.USD", "0.92"),
            ("text", "EUR"),
            ("whole-float", "1.0"),
        ]
    );
}

#[test]
fn config_values_that_are_not_scalars_are_rejected() {
    for value in ["[1, 2]", "{ a = 1 }", "1979-05-27T07:32:00Z"] {
        let text = format!("[functions.f]\nsource = \"f.wasm\"\nconfig = {{ key = {value} }}\n");
        let message = parse_error(&text);
        assert!(
            message.contains("a config value must be a string, number or boolean"),
            "{value}: {message}"
        );
        assert!(message.contains("line 3"), "{value}: {message}");
    }
}

#[test]
fn unknown_keys_are_rejected_naming_the_key() {
    let cases = [
        ("[topic.t]\n", "unknown field `topic`"),
        ("[app]\nnmae = \"x\"\n", "unknown field `nmae`"),
        ("[topics.t]\npartiton = 4\n", "unknown field `partiton`"),
        (
            "[functions.f]\nsource = \"f.wasm\"\nlimit = { deadline_ms = 5 }\n",
            "unknown field `limit`",
        ),
        (
            "[functions.f]\nsource = \"f.wasm\"\nlimits = { deadline = 5 }\n",
            "unknown field `deadline`",
        ),
        (
            "[pipelines.p]\nform = \"t\"\nfunction = \"f\"\n",
            "unknown field `form`",
        ),
    ];
    for (text, expected) in cases {
        let message = parse_error(text);
        assert!(message.contains(expected), "{text}: {message}");
        assert!(
            message.contains("expected"),
            "lists the known keys: {message}"
        );
    }
}

#[test]
fn parse_errors_keep_tomls_line_and_column() {
    let message = parse_error("[topics.t]\npartitions = 4\n\n[functions.f]\nsource = \n");
    assert!(message.starts_with("weir.toml: "), "{message}");
    assert!(message.contains("line 5, column"), "{message}");

    let message = parse_error("[topics.t]\npartitions = \"four\"\n");
    assert!(message.contains("line 2, column 14"), "{message}");
    assert!(message.contains("expected u32"), "{message}");

    // At the end of the text toml has no words of its own; ours still say what to do.
    let message = parse_error("[topics.t]\npartitions = ");
    assert!(message.contains("line 2, column 14"), "{message}");
    assert!(
        message.ends_with("fix the TOML syntax at the marked position"),
        "{message}"
    );
}

#[test]
fn missing_required_keys_are_parse_errors_naming_them() {
    let message = parse_error("[functions.f]\n");
    assert!(message.contains("missing field `source`"), "{message}");
    let message = parse_error("[pipelines.p]\nfunction = \"f\"\n");
    assert!(message.contains("missing field `from`"), "{message}");
    let message = parse_error("[pipelines.p]\nfrom = \"t\"\n");
    assert!(message.contains("missing field `function`"), "{message}");
}

#[test]
fn topic_lists_must_hold_names() {
    let message = parse_error(&minimal_with("").replace(r#"to = "out""#, "to = 3"));
    assert!(
        message.contains("expected a topic name or a list of topic names"),
        "{message}"
    );
}

#[test]
fn app_name_must_be_a_lower_case_name() {
    for name in [
        "Orders",
        "orders_v2",
        "-orders",
        "orders-",
        "",
        &"a".repeat(64),
    ] {
        let problem = only_problem(&format!("[app]\nname = {name:?}\n"), "app.name");
        assert!(
            problem.message.contains("use 1 to 63 characters"),
            "{problem}"
        );
    }
    parse(&format!("[app]\nname = {:?}\n", "a".repeat(63)));
    parse("[app]\nname = \"orders-2\"\n");
}

#[test]
fn the_app_may_name_its_backend() {
    for backend in [
        "embedded",
        "nats://nats:4222",
        "tls://nats:4222/orders",
        "kafka://k:9092",
    ] {
        let manifest = parse(&format!("[app]\nbackend = {backend:?}\n"));
        assert_eq!(manifest.app.backend.as_deref(), Some(backend));
    }
    assert_eq!(parse("").app.backend, None);
    for backend in ["nats", "redis://r:6379", ""] {
        let problem = only_problem(&format!("[app]\nbackend = {backend:?}\n"), "app.backend");
        assert!(problem.message.contains("is unknown"), "{problem}");
    }
}

#[test]
fn topic_names_follow_kafkas_rules() {
    for (name, key) in [
        ("a b", r#"topics."a b""#),
        (".", r#"topics.".""#),
        ("..", r#"topics."..""#),
        ("", r#"topics."""#),
        ("crm/orders", r#"topics."crm/orders""#),
        ("ü", r#"topics."ü""#),
    ] {
        let problem = only_problem(&format!("[topics.{name:?}]\n"), key);
        assert!(problem.message.contains("is invalid"), "{problem}");
        assert!(problem.message.contains("use 1 to 249"), "{problem}");
    }
    let too_long = "t".repeat(250);
    let problem = only_problem(
        &format!("[topics.{too_long}]\n"),
        &format!("topics.{too_long}"),
    );
    assert!(problem.message.contains("longer than 249"), "{problem}");

    parse(&format!(
        "[topics.{}]\n[topics.\"...\"]\n[topics.\"A.b_c-9\"]\n",
        "t".repeat(249)
    ));
}

#[test]
fn partitions_must_be_within_range() {
    for partitions in [0, 1025] {
        let text = format!("[topics.\"erp.orders\"]\npartitions = {partitions}\n");
        let problem = only_problem(&text, r#"topics."erp.orders".partitions"#);
        assert_eq!(
            problem.message,
            format!("is {partitions}; use a value from 1 to 1024")
        );
    }
    parse("[topics.a]\npartitions = 1\n[topics.b]\npartitions = 1024\n");
}

#[test]
fn function_names_must_be_lower_case_names() {
    for name in [
        "Enrich",
        "enrich_order",
        "-enrich",
        "enrich-",
        &"f".repeat(64),
    ] {
        let text = format!("[functions.{name:?}]\nsource = \"f.wasm\"\n");
        let problem = only_problem(&text, &format!("functions.{name}"));
        assert!(
            problem
                .message
                .starts_with(&format!("function name {name:?} is invalid: ")),
            "{problem}"
        );
    }
}

#[test]
fn function_source_must_not_be_empty() {
    let problem = only_problem("[functions.f]\nsource = \"\"\n", "functions.f.source");
    assert!(problem.message.contains(".wasm"), "{problem}");
}

#[test]
fn limits_must_be_within_range() {
    for (limits, key, message) in [
        (
            "deadline_ms = 0",
            "functions.f.limits.deadline_ms",
            "is 0 milliseconds; use a value from 1 to 60000 milliseconds",
        ),
        (
            "deadline_ms = 60001",
            "functions.f.limits.deadline_ms",
            "is 60001 milliseconds; use a value from 1 to 60000 milliseconds",
        ),
        (
            "memory_mb = 0",
            "functions.f.limits.memory_mb",
            "is 0 MiB; use a value from 1 to 4096 MiB",
        ),
        (
            "memory_mb = 4097",
            "functions.f.limits.memory_mb",
            "is 4097 MiB; use a value from 1 to 4096 MiB",
        ),
        (
            "cpu_percent = 0",
            "functions.f.limits.cpu_percent",
            "is 0 % of one core; use a value from 1 to 6400 % of one core",
        ),
    ] {
        let text = format!("[functions.f]\nsource = \"f.wasm\"\nlimits = {{ {limits} }}\n");
        let problem = only_problem(&text, key);
        assert_eq!(problem.message, message);
    }
    let manifest = parse(
        "[functions.f]\nsource = \"f.wasm\"\nlimits = { deadline_ms = 60000, memory_mb = 4096 }\n\
         [functions.g]\nsource = \"g.wasm\"\nlimits = { deadline_ms = 1, memory_mb = 1 }\n",
    );
    assert_eq!(manifest.functions["f"].limits.memory_bytes(), 4096 << 20);
}

#[test]
fn pipeline_names_must_be_lower_case_names() {
    let text = minimal_with("").replace("[pipelines.p]", "[pipelines.P]");
    let problems = problems(&text);
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    // The default group is the pipeline's name, which is a valid group name.
    assert_eq!(keys, ["pipelines.P"], "{problems:#?}");
}

#[test]
fn from_must_not_be_empty() {
    let text = minimal_with("").replace(r#"from = "in""#, "from = []");
    let problem = only_problem(&text, "pipelines.p.from");
    assert_eq!(
        problem.message,
        "reads from no topic; list at least one declared topic"
    );
}

#[test]
fn from_must_not_list_a_topic_twice() {
    let text = minimal_with("").replace(r#"from = "in""#, r#"from = ["in", "in"]"#);
    let problem = only_problem(&text, "pipelines.p.from");
    assert_eq!(
        problem.message,
        r#"lists topic "in" more than once; list each topic once"#
    );
}

#[test]
fn topics_read_must_be_declared() {
    let text = minimal_with("").replace(r#"from = "in""#, r#"from = ["in", "erp.orders"]"#);
    let problem = only_problem(&text, "pipelines.p.from");
    assert_eq!(
        problem.message,
        r#"topic "erp.orders" is not declared; declare it as [topics."erp.orders"] or use a declared topic: in, out"#
    );
}

#[test]
fn topics_written_must_be_declared() {
    let text = minimal_with("").replace(r#"to = "out""#, r#"to = ["out", "audit"]"#);
    let problem = only_problem(&text, "pipelines.p.to");
    assert_eq!(
        problem.message,
        r#"topic "audit" is not declared; declare it as [topics.audit] or use a declared topic: in, out"#
    );

    let problems = problems(
        "[functions.f]\nsource = \"f.wasm\"\n[pipelines.p]\nfrom = \"a\"\nfunction = \"f\"\nto = \"b\"\n",
    );
    let messages: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            r#"pipelines.p.from: topic "a" is not declared; declare it as [topics.a]"#,
            r#"pipelines.p.to: topic "b" is not declared; declare it as [topics.b]"#,
        ]
    );
}

#[test]
fn a_pipeline_must_not_write_to_a_topic_it_reads() {
    let text = minimal_with("").replace(r#"to = "out""#, r#"to = ["out", "in"]"#);
    let problem = only_problem(&text, "pipelines.p.to");
    assert!(
        problem
            .message
            .starts_with(r#"publishes to "in", which the pipeline also reads from"#),
        "{problem}"
    );
}

#[test]
fn the_function_must_be_declared() {
    let text = minimal_with("").replace(r#"function = "f""#, r#"function = "enrich""#);
    let problem = only_problem(&text, "pipelines.p.function");
    assert_eq!(
        problem.message,
        r#"no function named "enrich"; declared functions: f"#
    );

    let problem = only_problem(
        "[topics.a]\n[pipelines.p]\nfrom = \"a\"\nfunction = \"enrich\"\n",
        "pipelines.p.function",
    );
    assert_eq!(
        problem.message,
        r#"no function named "enrich"; declare it as [functions.enrich] with the path of its .wasm component as source"#
    );
}

#[test]
fn group_names_follow_topic_rules() {
    let problem = only_problem(&minimal_with(r#"group = "my group""#), "pipelines.p.group");
    assert!(
        problem
            .message
            .starts_with(r#"consumer group name "my group" is invalid"#),
        "{problem}"
    );
    let manifest = parse(&minimal_with(r#"group = "Team.A_1""#));
    assert_eq!(manifest.pipelines["p"].group, "Team.A_1");
}

#[test]
fn two_pipelines_must_not_share_a_consumer_group() {
    let two = |a_group: &str, b_group: &str| {
        format!(
            "[topics.t]\n[functions.f]\nsource = \"f.wasm\"\n\
             [pipelines.a]\nfrom = \"t\"\nfunction = \"f\"\n{a_group}\n\
             [pipelines.b]\nfrom = \"t\"\nfunction = \"f\"\n{b_group}\n"
        )
    };

    let problem = only_problem(
        &two(r#"group = "shared""#, r#"group = "shared""#),
        "pipelines.b.group",
    );
    assert_eq!(
        problem.message,
        r#"consumer group "shared" is also used by pipeline "a", and the two would split its events; give each pipeline its own group"#
    );

    // `a` borrows the name `b` has by default: the problem lands on `a`, whose group key
    // is the one to change.
    let problem = only_problem(&two(r#"group = "b""#, ""), "pipelines.a.group");
    assert_eq!(
        problem.message,
        r#"consumer group "b" is also used by pipeline "b" (a pipeline's group is its name unless set), and the two would split its events; give each pipeline its own group"#
    );

    parse(&two("", ""));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"
[app]
name = "Orders"

[topics."erp.sales-orders"]
partitions = 0

[functions.enrich-order]
source = "enrich.wasm"
limits = { deadline_ms = 0, memory_mb = 5000 }

[pipelines.erp-to-crm]
from = ["erp.sales-orders", "erp.sales-orders"]
function = "enrich"
to = ["crm.orders", "erp.sales-orders"]
"#;
    let error = Manifest::from_toml_str(text, base_dir()).expect_err("invalid");
    assert_eq!(error.problems().len(), 8);
    expect![[r#"
        weir.toml is invalid:
          app.name: app name "Orders" is invalid: it has a character other than a-z, 0-9 and '-'; use 1 to 63 characters of a-z, 0-9 and '-', not starting or ending with '-'
          topics."erp.sales-orders".partitions: is 0; use a value from 1 to 1024
          functions.enrich-order.limits.deadline_ms: is 0 milliseconds; use a value from 1 to 60000 milliseconds
          functions.enrich-order.limits.memory_mb: is 5000 MiB; use a value from 1 to 4096 MiB
          pipelines.erp-to-crm.from: lists topic "erp.sales-orders" more than once; list each topic once
          pipelines.erp-to-crm.to: topic "crm.orders" is not declared; declare it as [topics."crm.orders"] or use a declared topic: erp.sales-orders
          pipelines.erp-to-crm.to: publishes to "erp.sales-orders", which the pipeline also reads from, so it would consume its own output in a loop; publish to another topic
          pipelines.erp-to-crm.function: no function named "enrich"; declared functions: enrich-order"#]]
    .assert_eq(&error.to_string());
}

#[test]
fn validate_checks_a_manifest_changed_in_code() {
    let mut manifest = parse(EXAMPLE);
    manifest
        .pipelines
        .get_mut("erp-to-crm")
        .expect("pipeline")
        .function = "enrich".to_owned();
    manifest
        .topics
        .insert("bad topic".to_owned(), TopicSpec::default());

    let error = manifest.validate().expect_err("invalid");
    let keys: Vec<&str> = error.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [r#"topics."bad topic""#, "pipelines.erp-to-crm.function"]
    );
    assert_eq!(
        error.problems()[1].message,
        r#"no function named "enrich"; declared functions: enrich-order"#
    );
}

#[test]
fn keys_are_quoted_where_toml_needs_it() {
    use crate::validate::key;
    assert_eq!(
        key(&["pipelines", "erp-to-crm", "function"]),
        "pipelines.erp-to-crm.function"
    );
    assert_eq!(key(&["topics", "crm.orders"]), r#"topics."crm.orders""#);
    assert_eq!(key(&["topics", ""]), r#"topics."""#);
    assert_eq!(key(&["topics", "a\"b\\c\n"]), r#"topics."a\"b\\c\u000A""#);
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, EXAMPLE).expect("write manifest");

    let manifest = Manifest::load(&path).expect("loads");
    assert_eq!(manifest.base_dir, dir.path());
    assert_eq!(
        manifest.functions["enrich-order"].source,
        dir.path()
            .join("enrich-order/target/wasm32-wasip2/release/enrich_order.wasm")
    );
    assert_eq!(manifest.app.name, "orders");
}

#[test]
fn load_names_a_file_it_cannot_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.toml");
    let error = Manifest::load(&path).expect_err("missing file");
    assert!(matches!(error, Error::Read { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        format!("cannot read the manifest {}", path.display())
    );
    let source = std::error::Error::source(&error).expect("io error is the source");
    assert!(source.to_string().contains("No such file"), "{source}");
    assert!(error.problems().is_empty());
}

#[test]
fn load_reports_invalid_content() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("weir.toml");
    std::fs::write(&path, "[topics.t]\npartitions = 0\n").expect("write manifest");
    let error = Manifest::load(&path).expect_err("invalid");
    assert_eq!(error.problems()[0].key, "topics.t.partitions");
}

#[test]
fn topic_storage_options_parse_and_default() {
    let text = r#"
[topics.a]
[topics.b]
partitions = 2
fsync = "interval"
fsync_interval_ms = 50
retention_ms = 3600000
retention_bytes = 1048576
segment_bytes = 1048576
compaction = true
[topics.c]
fsync = "never"
"#;
    let m = Manifest::from_toml_str(text, Path::new("/app")).unwrap();
    assert_eq!(m.topics["a"], TopicSpec::default());
    let b = &m.topics["b"];
    assert_eq!(b.fsync, FsyncSpec::Interval { ms: 50 });
    assert_eq!(b.retention_ms, Some(3_600_000));
    assert_eq!(b.retention_bytes, Some(1 << 20));
    assert_eq!(b.segment_bytes, Some(1 << 20));
    assert!(b.compaction);
    assert_eq!(m.topics["c"].fsync, FsyncSpec::Never);
}

#[test]
fn topic_storage_options_are_checked() {
    let text = r#"
[topics.a]
fsync_interval_ms = 50
segment_bytes = 10
retention_ms = 0
[topics.b]
fsync = "sometimes"
"#;
    let err = Manifest::from_toml_str(text, Path::new("/app")).unwrap_err();
    assert!(err.to_string().contains("sometimes"), "{err}");
    let text = r#"
[topics.a]
fsync_interval_ms = 50
segment_bytes = 10
retention_ms = 0
"#;
    let err = Manifest::from_toml_str(text, Path::new("/app")).unwrap_err();
    let keys: Vec<_> = err.problems().iter().map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        [
            "topics.a.fsync_interval_ms",
            "topics.a.segment_bytes",
            "topics.a.retention_ms"
        ]
    );
}

#[test]
fn capabilities_secrets_and_new_limits_parse() {
    let manifest = parse(
        r#"
[keyvalue.customers]
seed = "customers.json"

[functions.f]
source = "f.wasm"
limits = { max_output_bytes = 4096, max_outputs = 3, fuel = 1000000, cpu_percent = 10 }
instance_reuse = 1

[functions.f.secrets]
token = { env = "F_TOKEN" }
key = { file = "secrets/key" }

[functions.f.capabilities]
keyvalue = ["customers"]
http = ["https://masterdata.example.com", "127.0.0.1:8080", "*.corp.internal"]
http_timeout_ms = 250
"#,
    );
    assert_eq!(
        manifest.keyvalue["customers"].seed.as_deref(),
        Some(Path::new("/apps/orders/customers.json"))
    );
    let f = &manifest.functions["f"];
    assert_eq!(f.limits.max_output_bytes, 4096);
    assert_eq!(f.limits.max_outputs, 3);
    assert_eq!(f.limits.fuel, Some(1_000_000));
    assert_eq!(f.limits.cpu_percent, Some(10));
    assert_eq!(f.instance_reuse, 1);
    assert_eq!(
        f.secrets["token"],
        crate::SecretSource::Env("F_TOKEN".to_owned())
    );
    assert_eq!(
        f.secrets["key"],
        crate::SecretSource::File(PathBuf::from("/apps/orders/secrets/key"))
    );
    assert_eq!(f.capabilities.keyvalue, ["customers"]);
    assert_eq!(f.capabilities.http.len(), 3);
    assert_eq!(f.capabilities.http_timeout_ms, 250);
    let grant = crate::parse_http_grant("https://MasterData.example.com:8443").unwrap();
    assert_eq!(grant.scheme.as_deref(), Some("https"));
    assert_eq!(grant.host, "masterdata.example.com");
    assert_eq!(grant.port, Some(8443));
}

#[test]
fn capability_grants_are_checked() {
    let problems = problems(
        r#"
[functions.f]
source = "f.wasm"
instance_reuse = 0
[functions.f.config]
token = "x"
[functions.f.secrets]
token = { env = "T" }
[functions.f.capabilities]
keyvalue = ["nope"]
http = ["ftp://x", "host/path", "bad host", "*.com", "*", "https://*.internal:443", "*.0.0.1", "*.*.example.com"]
"#,
    );
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    let text = text.join("\n");
    assert!(
        text.contains("functions.f.instance_reuse: is 0 calls"),
        "{text}"
    );
    assert!(text.contains("functions.f.secrets.token"), "{text}");
    assert!(
        text.contains("\"nope\", which is not declared; declare it as [keyvalue.nope]"),
        "{text}"
    );
    assert!(text.contains("scheme \"ftp\""), "{text}");
    assert!(text.contains("no path"), "{text}");
    assert!(text.contains("DNS name"), "{text}");
    // Wildcards need two labels below them and name DNS names, never addresses.
    for (grant, reason) in [
        ("*.com", "needs at least two labels below it"),
        ("*", "\"*.\" may only start a host"),
        (
            "https://*.internal:443",
            "needs at least two labels below it",
        ),
        ("*.*.example.com", "\"*.\" may only start a host"),
        ("*.0.0.1", "looks like an IP address"),
    ] {
        let wildcard = format!("{grant:?} is not a host to allow: ");
        assert!(
            text.lines()
                .any(|line| line.starts_with("functions.f.capabilities.http: ")
                    && line.contains(&wildcard)
                    && line.contains(reason)),
            "{grant}: {text}"
        );
    }
    for grant in [
        "*.example.com",
        "https://*.corp.internal:8443",
        "localhost:8080",
    ] {
        assert!(crate::parse_http_grant(grant).is_ok(), "{grant}");
    }
}

#[test]
fn pipeline_delivery_settings_are_read_and_patterns_expand() {
    let manifest = parse(
        r#"
[topics."erp.orders"]
[topics."erp.invoices"]
[topics.crm]
[functions.f]
source = "f.wasm"
[pipelines.p]
from = "erp.*"
function = "f"
to = ["crm"]
ordering = "none"
concurrency = 16
linger_ms = 5
dead_letter = "failed"
[pipelines.p.retry]
max_attempts = 3
initial_backoff_ms = 50
multiplier = 3.0
jitter = 0.0
[pipelines.p.filter]
type = ["order.*", "invoice.created"]
extensions = { region = "eu" }
"#,
    );
    let p = &manifest.pipelines["p"];
    assert_eq!(p.from, ["erp.invoices", "erp.orders"]);
    assert_eq!(p.from_patterns, ["erp.*"]);
    assert_eq!(p.ordering, Ordering::None);
    assert_eq!(p.concurrency, 16);
    assert_eq!(p.linger_ms, 5);
    assert_eq!(p.dead_letter, "failed");
    assert_eq!(p.retry.max_attempts, 3);
    assert_eq!(p.retry.max_backoff_ms, RetrySpec::default().max_backoff_ms);
    assert_eq!(
        [1, 2, 3].map(|a| p.retry.backoff_ms(a)),
        [50, 150, 450],
        "each wait is the previous one times the multiplier"
    );
    let filter = p.filter.as_ref().unwrap();
    assert_eq!(filter.attributes["type"], ["order.*", "invoice.created"]);
    assert_eq!(filter.attributes["region"], ["eu"]);
}

#[test]
fn bad_pipeline_delivery_settings_are_each_reported() {
    let found = problems(
        r#"
[topics.in]
[topics.out]
[functions.f]
source = "f.wasm"
[pipelines.p]
from = ["in", "nothing.*"]
function = "f"
to = ["out"]
group = "other.redrive"
concurrency = 0
linger_ms = 1001
dead_letter = "in"
[pipelines.p.retry]
max_attempts = 0
initial_backoff_ms = 20000
max_backoff_ms = 10000
multiplier = 0.5
jitter = 2.0
[pipelines.p.filter]
type = []
subject = "a*b"
extensions = { "Bad-Name" = "x", time = "2026*" }
"#,
    );
    let err: Vec<String> = found.iter().map(|p| p.to_string()).collect();
    let err = err.join("\n");
    for key in [
        "pipelines.p.from",
        "pipelines.p.concurrency",
        "pipelines.p.linger_ms",
        "pipelines.p.dead_letter",
        "pipelines.p.retry.max_attempts",
        "pipelines.p.retry.initial_backoff_ms",
        "pipelines.p.retry.multiplier",
        "pipelines.p.retry.jitter",
        "pipelines.p.filter.type",
        "pipelines.p.filter.extensions.Bad-Name",
        "pipelines.p.filter.extensions.time",
        "pipelines.p.filter.subject",
        "pipelines.p.group",
    ] {
        assert!(err.contains(key), "{key} missing from: {err}");
    }
    assert!(err.contains("matches no declared topic"), "{err}");
}

#[test]
fn glob_patterns_match_like_shell_stars() {
    use crate::manifest::glob_match;
    assert!(glob_match("erp.*", "erp.orders"));
    assert!(glob_match("*.orders", "erp.orders"));
    assert!(glob_match("e*p.*s", "erp.orders"));
    assert!(glob_match("*", "x"));
    assert!(!glob_match("erp.*", "crm.orders"));
    assert!(!glob_match("*.orders", "erp.order"));
    assert!(!glob_match("a*a", "a"));
}

#[test]
fn front_door_tables_parse_with_defaults_and_resolved_paths() {
    let manifest = parse(&format!(
        r#"{}
[auth]
metrics_open = true
[auth.jwt]
public_key = "keys/idp.pem"
issuer = "https://idp.example.com"
audience = "weir"
[auth.roles.writer]
publish = ["orders.*"]
subscribe = ["orders.*", "crm.orders"]
admin = ["replay", "groups"]
[auth.principals]
ci-bot = ["admin", "writer"]
[http]
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
cors = {{ origins = ["https://app.example.com"] }}
[limits]
max_subscriptions = 10
rate_limit_per_sec = 100
"#,
        minimal_with("")
    ));
    assert_eq!(
        manifest.auth,
        Some(AuthSpec {
            api_keys: true,
            metrics_open: true,
            jwt: Some(JwtSpec {
                algorithms: vec![],
                secret: None,
                public_key: Some(PathBuf::from("/apps/orders/keys/idp.pem")),
                jwks: None,
                jwks_refresh_secs: 300,
                issuer: Some("https://idp.example.com".to_owned()),
                audience: Some("weir".to_owned()),
                leeway_secs: 60,
                principal_claim: "sub".to_owned(),
                roles_claim: "roles".to_owned(),
            }),
            roles: BTreeMap::from([(
                "writer".to_owned(),
                RoleSpec {
                    publish: vec!["orders.*".to_owned()],
                    subscribe: vec!["orders.*".to_owned(), "crm.orders".to_owned()],
                    admin: vec!["replay".to_owned(), "groups".to_owned()],
                    views: Vec::new(),
                    routes: Vec::new(),
                }
            )]),
            principals: BTreeMap::from([(
                "ci-bot".to_owned(),
                vec!["admin".to_owned(), "writer".to_owned()]
            )]),
        })
    );
    assert_eq!(
        manifest.http,
        HttpSpec {
            tls_cert: Some(PathBuf::from("/apps/orders/tls/cert.pem")),
            tls_key: Some(PathBuf::from("/apps/orders/tls/key.pem")),
            cors: Some(CorsSpec {
                origins: vec!["https://app.example.com".to_owned()],
                max_age_secs: 600,
            }),
        }
    );
    assert_eq!(
        manifest.limits,
        NodeLimits {
            max_subscriptions: 10,
            rate_limit_per_sec: 100,
            ..NodeLimits::default()
        }
    );
    let without = parse(&minimal_with(""));
    assert_eq!(without.auth, None);
    assert_eq!(without.limits, NodeLimits::default());
}

#[test]
fn front_door_mistakes_name_their_keys() {
    let with = |extra: &str| format!("{}\n{extra}", minimal_with(""));
    only_problem(&with("[auth]\napi_keys = false"), "auth.api_keys");
    only_problem(
        &with("[auth.jwt]\nsecret = { env = \"S\" }\npublic_key = \"k.pem\""),
        "auth.jwt",
    );
    only_problem(
        &with("[auth.jwt]\nsecret = { env = \"S\" }\nalgorithms = [\"RS256\"]"),
        "auth.jwt.algorithms",
    );
    only_problem(
        &with("[auth.jwt]\njwks = \"jwks.json\"\nalgorithms = [\"none\"]"),
        "auth.jwt.algorithms",
    );
    only_problem(
        &with("[auth.roles.admin]\npublish = [\"*\"]"),
        "auth.roles.admin",
    );
    only_problem(
        &with("[auth.roles.w]\npublish = [\"orders/#\"]"),
        "auth.roles.w.publish",
    );
    only_problem(
        &with("[auth.roles.w]\nadmin = [\"shutdown\"]"),
        "auth.roles.w.admin",
    );
    only_problem(
        &with("[auth.principals]\nbob = [\"nobody\"]"),
        "auth.principals.bob",
    );
    only_problem(&with("[http]\ntls_cert = \"c.pem\""), "http");
    only_problem(
        &with("[http]\ncors = { origins = [\"app.example.com\"] }"),
        "http.cors.origins",
    );
    only_problem(
        &with("[limits]\nmax_connections = 0"),
        "limits.max_connections",
    );
    only_problem(
        &with("[limits]\nrate_limit_burst = 5"),
        "limits.rate_limit_burst",
    );
    assert!(parse_error(&with("[limits]\nmax_conections = 5")).contains("max_conections"));
    let secret = parse(&with("[auth.jwt]\nsecret = { file = \"jwt.key\" }"));
    let jwt = secret.auth.and_then(|auth| auth.jwt).expect("jwt");
    assert_eq!(
        jwt.secret,
        Some(SecretSource::File(PathBuf::from("/apps/orders/jwt.key")))
    );
}

#[test]
fn an_entity_declares_its_journal_and_snapshot_topics() {
    let m = Manifest::from_toml_str(
        r#"
[functions.order-entity]
source = "order.wasm"
[entities.order]
function = "order-entity"
partitions = 3
snapshot_every = 10
[pipelines.audit]
from = "entity.order"
function = "order-entity"
to = ["entity.order.snapshots"]
"#,
        Path::new("/app"),
    )
    .unwrap_err()
    .to_string();
    // The same function as a pipeline's, and a pipeline writing to the entity's topics.
    assert!(m.contains("also a pipeline's function"), "{m}");
    assert!(m.contains("only entity type \"order\" writes"), "{m}");

    let m = Manifest::from_toml_str(
        r#"
[functions.order-entity]
source = "order.wasm"
[entities.order]
function = "order-entity"
partitions = 3
"#,
        Path::new("/app"),
    )
    .unwrap();
    let entity = &m.entities["order"];
    assert_eq!(entity.journal, "entity.order");
    assert_eq!(entity.snapshot_every, EntitySpec::DEFAULT_SNAPSHOT_EVERY);
    assert_eq!(m.topics["entity.order"].partitions, 3);
    assert!(!m.topics["entity.order"].compaction);
    assert!(m.topics["entity.order.snapshots"].compaction);

    let e = Manifest::from_toml_str(
        r#"
[functions.f]
source = "f.wasm"
[entities.order]
function = "f"
partitions = 2
[topics."entity.order"]
partitions = 2
retention_ms = 1000
"#,
        Path::new("/app"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("set partitions there only"), "{e}");
    assert!(
        e.contains("takes no compaction, retention_ms or retention_bytes"),
        "{e}"
    );
}

const VIEW_APP: &str = r#"
[functions.order-entity]
source = "order.wasm"
[functions.project]
source = "project.wasm"
[entities.order]
function = "order-entity"
[topics."crm.orders"]
[views.orders-by-customer]
function = "project"
entities = ["order"]
sources = ["crm.orders", "entity.order"]
key = "order_id"
indexes = ["customer"]
[views.orders-by-customer.columns]
order_id = "text"
customer = "text"
total = "real"
"#;

#[test]
fn a_view_names_its_sources_columns_key_indexes_and_store() {
    let m = parse(VIEW_APP);
    let view = &m.views["orders-by-customer"];
    assert_eq!(
        view.sources,
        ["crm.orders", "entity.order"],
        "each source once"
    );
    assert_eq!(view.key, ["order_id"]);
    assert_eq!(view.columns["total"], crate::ViewColumnType::Real);
    assert_eq!(view.store, crate::ViewStoreSpec::Sqlite);
    assert_eq!(
        crate::ViewSpec::table("orders-by-customer"),
        "orders_by_customer"
    );

    let pg = parse(&VIEW_APP.replace(
        "indexes = [\"customer\"]",
        "indexes = [\"customer\"]\nstore = \"postgres://u@db/views\"",
    ));
    assert_eq!(
        pg.views["orders-by-customer"].store,
        crate::ViewStoreSpec::Postgres {
            url: "postgres://u@db/views".into()
        }
    );
}

#[test]
fn a_view_that_cannot_work_is_refused_with_every_reason() {
    let text = VIEW_APP
        .replace("function = \"project\"", "function = \"order-entity\"")
        .replace(
            "sources = [\"crm.orders\", \"entity.order\"]",
            "sources = [\"nope\"]",
        )
        .replace("key = \"order_id\"", "key = [\"order_id\", \"payload\"]")
        .replace(
            "indexes = [\"customer\"]",
            "indexes = [\"missing\"]\nstore = \"mysql://x\"",
        )
        .replace(
            "total = \"real\"",
            "total = \"real\"\npayload = \"json\"\n\"Bad-Name\" = \"text\"",
        );
    let all = problems(&text)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "is also a pipeline's or an entity's function",
        "no topic named \"nope\"",
        "\"missing\" is not one of the view's columns",
        "\"payload\" is a json column",
        "column name \"Bad-Name\" is invalid",
        "is not a view store",
    ] {
        assert!(all.contains(expected), "{expected:?} not in:\n{all}");
    }
    let e = problems(
        &VIEW_APP
            .replace("[views.orders-by-customer]", "[views.weir-x]")
            .replace("views.orders-by-customer.columns", "views.weir-x.columns"),
    );
    assert!(e[0].to_string().contains("weir's own tables"), "{e:?}");
    let e = problems(
        &VIEW_APP
            .replace("[views.orders-by-customer]", "[views.orders--x]")
            .replace(
                "views.orders-by-customer.columns",
                "views.orders--x.columns",
            ),
    );
    assert!(e[0].to_string().contains("has \"--\""), "{e:?}");
    let long = "v".repeat(50);
    let e = problems(
        &VIEW_APP
            .replace("[views.orders-by-customer]", &format!("[views.{long}]"))
            .replace(
                "views.orders-by-customer.columns",
                &format!("views.{long}.columns"),
            ),
    );
    assert!(e[0].to_string().contains("makes an index name of"), "{e:?}");
    let e = problems(
        &VIEW_APP
            .replace("sources = [\"crm.orders\", \"entity.order\"]\n", "")
            .replace("entities = [\"order\"]\n", ""),
    );
    assert!(e[0].to_string().contains("projects nothing"), "{e:?}");
}

/// A source on `in`, then `extra` keys of `[sources.s]`.
fn source_with(extra: &str) -> String {
    minimal_with(&format!(
        "[sources.s]\nurl = \"mqtt://127.0.0.1:1883\"\nsubscribe = \"sensors/+/temp\"\ntopic = \"in\"\ntype = \"com.example.t\"\n{extra}"
    ))
}

#[test]
fn a_source_takes_its_defaults_and_its_keys() {
    let m = parse(&source_with(""));
    assert_eq!(
        m.sources["s"],
        SourceSpec {
            url: "mqtt://127.0.0.1:1883".into(),
            subscribe: vec!["sensors/+/temp".into()],
            topic: "in".into(),
            ty: "com.example.t".into(),
            source: None,
            key: None,
            data: SourceData::Json,
            dead_letter: "s.dlq".into(),
            max_payload_bytes: SourceSpec::DEFAULT_MAX_PAYLOAD_BYTES,
            start: None,
        }
    );
    let m = parse(&source_with(
        "source = \"/plant/7\"\nkey = \"{subject.1}\"\ndata = \"text\"\ndead_letter = \"bad\"\nmax_payload_bytes = 100",
    ));
    let s = &m.sources["s"];
    assert_eq!(
        (
            s.source.as_deref(),
            s.key.as_deref(),
            s.data,
            s.dead_letter.as_str(),
            s.max_payload_bytes
        ),
        (
            Some("/plant/7"),
            Some("{subject.1}"),
            SourceData::Text,
            "bad",
            100
        )
    );
}

#[test]
fn a_schedule_takes_its_defaults_and_is_refused_where_it_cannot_work() {
    let schedule = |body: &str| {
        minimal_with(&format!(
            "[schedules.nightly]\ncron = \"0 2 * * *\"\ntopic = \"in\"\n{body}"
        ))
    };
    let m = parse(&schedule(""));
    assert_eq!(
        m.schedules["nightly"],
        ScheduleSpec {
            cron: "0 2 * * *".into(),
            timezone: None,
            topic: "in".into(),
            ty: ScheduleSpec::DEFAULT_TYPE.into(),
            data: serde_json::Map::new(),
            missed: MissedTicks::Skip,
        }
    );
    let m = parse(&schedule(
        "timezone = \"Europe/Berlin\"\ntype = \"com.example.due\"\nmissed = \"once\"\ndata = { region = \"eu\", n = 3 }",
    ));
    let s = &m.schedules["nightly"];
    assert_eq!(s.missed, MissedTicks::Once);
    assert_eq!(s.data["region"], "eu");
    assert_eq!(s.data["n"], 3);
    let p = only_problem(
        &schedule("").replace("0 2 * * *", "0 25 * * *"),
        "schedules.nightly.cron",
    );
    assert!(p.message.contains("not a cron expression"), "{p}");
    let p = only_problem(
        &schedule("timezone = \"Mars/Olympus\""),
        "schedules.nightly.timezone",
    );
    assert!(p.message.contains("not a time zone"), "{p}");
    let p = only_problem(
        &schedule("").replace("topic = \"in\"", "topic = \"nope\""),
        "schedules.nightly.topic",
    );
    assert!(p.message.contains("not declared"), "{p}");
    only_problem(&schedule("data = { missed = 1 }"), "schedules.nightly.data");
    let e = parse_error(&schedule("missed = \"twice\""));
    assert!(e.contains("twice"), "{e}");
}

#[test]
fn positional_sources_take_a_start_and_jetstream_may_read_a_whole_stream() {
    let m = parse(
        &source_with("start = \"latest\"")
            .replace("mqtt://127.0.0.1:1883", "redis://127.0.0.1:6379/2"),
    );
    assert_eq!(m.sources["s"].start, Some(StartPosition::Latest));
    let m = parse(
        &source_with("")
            .replace(
                "mqtt://127.0.0.1:1883",
                "jetstream://127.0.0.1:4222/TELEMETRY",
            )
            .replace("subscribe = \"sensors/+/temp\"", "subscribe = []"),
    );
    assert!(m.sources["s"].subscribe.is_empty());
    parse(&source_with("").replace("mqtt://127.0.0.1:1883", "nats://127.0.0.1:4222"));
}

#[test]
fn a_source_that_cannot_work_is_refused_with_the_key_at_fault() {
    let p = only_problem(
        &source_with("").replace("mqtt://127.0.0.1:1883", "amqps://127.0.0.1"),
        "sources.s.url",
    );
    assert!(p.message.contains("not supported yet"), "{p}");
    parse(&source_with("").replace("mqtt://127.0.0.1:1883", "amqp://127.0.0.1/%2f"));
    let p = only_problem(
        &source_with("").replace("mqtt://127.0.0.1:1883", "jetstream://127.0.0.1:4222"),
        "sources.s.url",
    );
    assert!(p.message.contains("/STREAM"), "{p}");
    let p = only_problem(
        &source_with("").replace("mqtt://127.0.0.1:1883", "nats://127.0.0.1/S"),
        "sources.s.url",
    );
    assert!(p.message.contains("jetstream://"), "{p}");
    let p = only_problem(&source_with("start = \"latest\""), "sources.s.start");
    assert!(p.message.contains("positional"), "{p}");
    let p = only_problem(
        &source_with("").replace("mqtt://127.0.0.1:1883", "127.0.0.1"),
        "sources.s.url",
    );
    assert!(p.message.contains("mqtt://HOST"), "{p}");
    let p = only_problem(
        &source_with("").replace("topic = \"in\"", "topic = \"nope\""),
        "sources.s.topic",
    );
    assert!(p.message.contains("not declared"), "{p}");
    let p = only_problem(&source_with("key = \"{topic}\""), "sources.s.key");
    assert!(p.message.contains("{subject.N}"), "{p}");
    let p = only_problem(
        &source_with("key = \"{data.id}\"\ndata = \"binary\""),
        "sources.s.key",
    );
    assert!(p.message.contains("data = \"json\""), "{p}");
    only_problem(
        &source_with("dead_letter = \"in\""),
        "sources.s.dead_letter",
    );
    only_problem(
        &source_with("max_payload_bytes = 10000000"),
        "sources.s.max_payload_bytes",
    );
    only_problem(
        &source_with("").replace("type = \"com.example.t\"", "type = \"\""),
        "sources.s.type",
    );
    only_problem(
        &source_with("").replace("subscribe = \"sensors/+/temp\"", "subscribe = []"),
        "sources.s.subscribe",
    );
    let p = only_problem(
        &source_with("")
            .replace("mqtt://127.0.0.1:1883", "redis://127.0.0.1")
            .replace("subscribe = \"sensors/+/temp\"", "subscribe = []"),
        "sources.s.subscribe",
    );
    assert!(p.message.contains("stream keys"), "{p}");
    let p = only_problem(
        &source_with("dead_letter = \"s.positions\"")
            .replace("mqtt://127.0.0.1:1883", "redis://127.0.0.1"),
        "sources.s",
    );
    assert!(p.message.contains("positions"), "{p}");
    let e = parse_error(&source_with("qos = 2"));
    assert!(e.contains("qos"), "{e}");
}

#[test]
fn a_sink_takes_its_defaults_its_secrets_and_is_refused_where_it_cannot_work() {
    let sink = |extra: &str| {
        minimal_with(&format!(
            "[sinks.hook]\ntopic = \"out\"\nurl = \"https://example.com/hook\"\n{extra}"
        ))
    };
    let m = parse(&sink(""));
    let s = &m.sinks["hook"];
    assert_eq!(
        (
            s.group.as_str(),
            s.dead_letter.as_str(),
            s.timeout_ms,
            s.secrets.len()
        ),
        (
            "sink.hook",
            "hook.dlq",
            crate::SinkSpec::DEFAULT_TIMEOUT_MS,
            0
        )
    );
    assert_eq!(s.retry, RetrySpec::default());
    let m = parse(&sink(
        "secret = [{ env = \"A\" }, { file = \"b\" }]\nmode = \"binary\"\nretry = { max_attempts = 2 }",
    ));
    let s = &m.sinks["hook"];
    assert_eq!(
        s.secrets,
        vec![
            SecretSource::Env("A".into()),
            SecretSource::File(base_dir().join("b"))
        ]
    );
    assert_eq!((s.mode, s.retry.max_attempts), (crate::SinkMode::Binary, 2));
    assert_eq!(
        parse(&sink("secret = { env = \"A\" }")).sinks["hook"]
            .secrets
            .len(),
        1
    );
    let p = only_problem(
        &sink("").replace("https://example.com/hook", "mqtts://h"),
        "sinks.hook.url",
    );
    assert!(p.message.contains("not supported yet"), "{p}");
    parse(&sink("to = \"alerts/hot\"").replace("https://example.com/hook", "mqtt://h"));
    let problems = problems(&sink("retry = { max_attempts = 0 }"));
    assert_eq!(
        problems[0].key, "sinks.hook.retry.max_attempts",
        "{problems:?}"
    );
    let two = sink("retry = { max_attempts = 2 }");
    assert_eq!(
        parse(&two).sinks["hook"].circuit_failures,
        2,
        "at most max_attempts"
    );
    only_problem(
        &sink("retry = { max_attempts = 3 }\ncircuit_failures = 4"),
        "sinks.hook.circuit_failures",
    );
    let three = sink("retry = { max_attempts = 3 }\ncircuit_failures = 3");
    assert_eq!(parse(&three).sinks["hook"].circuit_failures, 3);
    assert_eq!(
        parse(&sink("")).sinks["hook"].max_in_flight,
        crate::SinkSpec::DEFAULT_MAX_IN_FLIGHT
    );
    assert_eq!(
        parse(&sink("max_in_flight = 1")).sinks["hook"].max_in_flight,
        1
    );
    only_problem(&sink("max_in_flight = 0"), "sinks.hook.max_in_flight");
    only_problem(&sink("max_in_flight = 1025"), "sinks.hook.max_in_flight");
    only_problem(&sink("dead_letter = \"out\""), "sinks.hook.dead_letter");
    only_problem(&sink("group = \"p\""), "sinks.hook.group");
    only_problem(
        &sink("").replace("topic = \"out\"", "topic = \"nope\""),
        "sinks.hook.topic",
    );
    // Broker sinks name what they publish to, and take no webhook keys.
    let broker = |url: &str, extra: &str| sink(extra).replace("https://example.com/hook", url);
    let m = parse(&broker("jetstream://127.0.0.1:4222", "to = \"alerts.hot\""));
    assert_eq!(m.sinks["hook"].to.as_deref(), Some("alerts.hot"));
    parse(&broker("redis://127.0.0.1/2", "to = \"alerts\""));
    only_problem(&broker("nats://h", ""), "sinks.hook.to");
    only_problem(&broker("nats://h", "to = \"a.*\""), "sinks.hook.to");
    only_problem(&sink("to = \"x\""), "sinks.hook.to");
    only_problem(
        &broker("nats://h", "to = \"a\"\nsecret = { env = \"A\" }"),
        "sinks.hook.secret",
    );
    only_problem(
        &broker("redis://h", "to = \"a\"\nmode = \"binary\""),
        "sinks.hook.mode",
    );
}

#[test]
fn routes_take_a_function_or_a_webhook_topic_and_are_refused_where_they_cannot_work() {
    let route =
        |body: &str| minimal_with(&format!("[routes.api]\npath = \"/api/{{*rest}}\"\n{body}"));
    let m = parse(&route("function = \"f\"\nmethods = [\"get\", \"PUT\"]"));
    assert_eq!(
        m.routes["api"],
        RouteSpec {
            path: "/api/{*rest}".into(),
            methods: vec!["GET".into(), "PUT".into()],
            function: "f".into(),
            topic: None,
            verify: None,
            secrets: vec![],
            ty: None,
            public: false,
            job: false,
            instance_reuse: 1,
        }
    );
    let m = parse(&route("function = \"f\"\ninstance_reuse = 500"));
    assert_eq!(m.routes["api"].instance_reuse, 500);
    let p = only_problem(
        &route("function = \"f\"\ninstance_reuse = 0"),
        "routes.api.instance_reuse",
    );
    assert!(p.message.contains("is 0 requests"), "{p}");
    let p = only_problem(
        &route("topic = \"in\"\ninstance_reuse = 10"),
        "routes.api.instance_reuse",
    );
    assert!(p.message.contains("runs no function"), "{p}");
    let m = parse(&route(
        "topic = \"in\"\nverify = \"github\"\nsecret = { env = \"GH_SECRET\" }\npublic = true",
    ));
    let r = &m.routes["api"];
    assert_eq!(r.secrets, vec![SecretSource::Env("GH_SECRET".into())]);
    assert!(r.public);

    // weir's own paths, a clash between routes, a path that is not one.
    for path in ["/v1/things", "/v1", "/healthz", "/metrics"] {
        let p = only_problem(
            &route("function = \"f\"").replace("/api/{*rest}", path),
            "routes.api.path",
        );
        assert!(p.message.contains("weir's own"), "{p}");
    }
    let p = only_problem(
        &route("function = \"f\"").replace("/api/{*rest}", "api"),
        "routes.api.path",
    );
    assert!(p.message.contains("start it with '/'"), "{p}");
    let two = format!(
        "{}\n[routes.other]\npath = \"/api/{{*rest}}\"\nfunction = \"f\"\n",
        route("function = \"f\"")
    );
    let p = only_problem(&two, "routes.other.path");
    assert!(
        p.message.contains("conflicts") && p.message.contains("\"api\""),
        "{p}"
    );
    // What serves it.
    only_problem(&route(""), "routes.api");
    let p = only_problem(&route("function = \"nope\""), "routes.api.function");
    assert!(p.message.contains("not declared"), "{p}");
    only_problem(&route("function = \"f\"\ntopic = \"in\""), "routes.api");
    only_problem(
        &route("function = \"f\"\nverify = \"github\""),
        "routes.api.verify",
    );
    only_problem(
        &route("function = \"f\"\nmethods = [\"G T\"]"),
        "routes.api.methods",
    );
    // Webhooks: a declared topic, a known scheme, a secret with it.
    let p = only_problem(&route("topic = \"nope\""), "routes.api.topic");
    assert!(p.message.contains("not declared"), "{p}");
    let p = only_problem(
        &route("topic = \"in\"\nverify = \"hmac\"\nsecret = { env = \"S\" }"),
        "routes.api.verify",
    );
    assert!(
        p.message.contains("standard-webhooks, github, stripe"),
        "{p}"
    );
    only_problem(
        &route("topic = \"in\"\nverify = \"stripe\""),
        "routes.api.secret",
    );
    only_problem(
        &route("topic = \"in\"\nsecret = { env = \"S\" }"),
        "routes.api.secret",
    );
    only_problem(&route("topic = \"in\"\npublic = true"), "routes.api.public");
    // Jobs: the work is the one pipeline reading the topic.
    let m = parse(&route("topic = \"in\"\njob = true"));
    let (pipeline, spec) = m
        .job_pipeline(&m.routes["api"])
        .expect("the job's pipeline");
    assert_eq!(
        (pipeline, spec.to.as_slice()),
        ("p", &["out".to_owned()][..])
    );
    let p = only_problem(&route("topic = \"out\"\njob = true"), "routes.api.job");
    assert!(p.message.contains("0 read it"), "{p}");
    let two = route("topic = \"in\"\njob = true")
        + "\n[pipelines.q]\nfrom = \"in\"\nfunction = \"f\"\nto = \"out\"\n";
    let p = only_problem(&two, "routes.api.job");
    assert!(p.message.contains("2 read it"), "{p}");
    only_problem(&route("function = \"f\"\njob = true"), "routes.api.job");
    // Publishing is granted only to declared topics.
    let grant = minimal_with("").replace(
        "source = \"f.wasm\"\n",
        "source = \"f.wasm\"\ncapabilities = { publish = [\"nope\"] }\n",
    );
    only_problem(&grant, "functions.f.capabilities.publish");
}

#[test]
fn schemas_resolve_their_files_and_topics_their_policy() {
    let manifest = Manifest::from_toml_str(
        r#"
[topics.orders]
schema = "required"
[topics.other]
[schemas."com.example.order.created"]
versions = ["schemas/v1.json", "schemas/v2.json"]
compatibility = "full_transitive"
[schemas.plain]
versions = ["plain.json"]
"#,
        Path::new("/apps/a"),
    )
    .unwrap();
    assert_eq!(
        manifest.topics["orders"].schema,
        crate::SchemaPolicy::Required
    );
    assert_eq!(
        manifest.topics["other"].schema,
        crate::SchemaPolicy::Optional
    );
    let spec = &manifest.schemas["com.example.order.created"];
    assert_eq!(
        spec.versions,
        [
            PathBuf::from("/apps/a/schemas/v1.json"),
            PathBuf::from("/apps/a/schemas/v2.json")
        ]
    );
    assert_eq!(
        spec.compatibility,
        weir_schema::Compatibility::FullTransitive
    );
    assert_eq!(
        manifest.schemas["plain"].compatibility,
        weir_schema::Compatibility::Backward
    );
}

#[test]
fn schema_sections_name_what_is_wrong() {
    let problems = |text: &str| match Manifest::from_toml_str(text, Path::new("/a")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    };
    let p = problems("[schemas.t]\nversions = []\n");
    assert!(
        p.contains("schemas.t.versions") && p.contains("is empty"),
        "{p}"
    );
    let p = problems("[schemas.\"a/b\"]\nversions = [\"x.json\"]\n");
    assert!(p.contains("a/b") && p.contains("'/'"), "{p}");
    let p = problems("[schemas.t]\nversions = [\"x.json\"]\ncompatibility = \"sideways\"\n");
    assert!(p.contains("sideways") && p.contains("backward"), "{p}");
    let p = problems("[topics.t]\nschema = \"sometimes\"\n");
    assert!(p.contains("sometimes") && p.contains("required"), "{p}");
    let p = problems("[topics.\"weir.schemas\"]\n");
    assert!(p.contains("keeps registered schemas"), "{p}");
}

#[test]
fn upcasters_resolve_and_name_what_is_wrong() {
    let manifest = Manifest::from_toml_str(
        r#"
[schemas.t]
versions = ["v1.json", "v2.json", "v3.json", "v4.json"]
[schemas.t.upcast.1]
remove = ["legacy"]
rename = { client = "/customer/id" }
default = { channel = "erp", tags = [] }
[schemas.t.upcast.2]
default = { region = "eu" }
[schemas.t.upcast.3]
function = "to-v4"
[functions.to-v4]
source = "to-v4.wasm"
"#,
        Path::new("/a"),
    )
    .unwrap();
    let upcasters: Vec<(u32, &weir_schema::Step)> = manifest.schemas["t"].upcasters().collect();
    assert_eq!(upcasters.len(), 3);
    assert_eq!(upcasters[0].0, 1);
    let weir_schema::Step::Mapping(first) = upcasters[0].1 else {
        panic!("{upcasters:?}")
    };
    assert_eq!(
        first.rename,
        [("client".to_owned(), "/customer/id".to_owned())]
    );
    assert_eq!(first.default[1].1, serde_json::json!([]));
    assert_eq!(
        upcasters[2],
        (3, &weir_schema::Step::Function("to-v4".into()))
    );

    let problems = |text: &str| match Manifest::from_toml_str(text, Path::new("/a")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    };
    // A chain with a gap.
    let p = problems(
        "[schemas.t]\nversions = [\"a.json\", \"b.json\", \"c.json\"]\n[schemas.t.upcast.1]\nremove = [\"x\"]\n",
    );
    assert!(p.contains("no step from version 2 to 3"), "{p}");
    // From the last version (nothing to go to), from 0, not a number, not as written.
    for from in ["2", "0", "one", "01"] {
        let p = problems(&format!(
            "[schemas.t]\nversions = [\"a.json\", \"b.json\"]\n[schemas.t.upcast.{from}]\nremove = [\"x\"]\n"
        ));
        assert!(
            p.contains(&format!("schemas.t.upcast.{from}")) && p.contains("1 to 1"),
            "{p}"
        );
    }
    let p = problems(
        "[schemas.t]\nversions = [\"a.json\", \"b.json\"]\n[schemas.t.upcast.1]\nrename = { a = \"/b//c\" }\n",
    );
    assert!(p.contains("empty step"), "{p}");
    let p = problems(
        "[schemas.t]\nversions = [\"a.json\", \"b.json\"]\n[schemas.t.upcast.1]\nmove = { a = \"b\" }\n",
    );
    assert!(p.contains("move"), "{p}");
    // A function step names a declared function, and is not also a mapping.
    let p = problems(
        "[schemas.t]\nversions = [\"a.json\", \"b.json\"]\n[schemas.t.upcast.1]\nfunction = \"nope\"\n",
    );
    assert!(
        p.contains("schemas.t.upcast.1.function") && p.contains("not declared"),
        "{p}"
    );
    let p = problems(
        "[schemas.t]\nversions = [\"a.json\", \"b.json\"]\n[schemas.t.upcast.1]\nfunction = \"f\"\nremove = [\"x\"]\n[functions.f]\nsource = \"f.wasm\"\n",
    );
    assert!(p.contains("one or the other"), "{p}");
}
