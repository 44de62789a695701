//! The host against real guests: the example function, and hostile guests (`guests/`)
//! that loop, bomb memory, overflow the stack, flood outputs or reach for capabilities
//! they were not granted. Each gets its typed error and the host keeps serving.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weir_cloudevents::{CloudEvent, Data};

use crate::{
    CallError, Error, Function, FunctionHost, FunctionSettings, HostOptions, HttpGrant,
    KeyValueStore, Limits, MemoryKeyValue, Secret,
};

fn example_event() -> CloudEvent {
    let path = weir_test_support::example_dir().join("sales-order-created.json");
    CloudEvent::from_json_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn event(ty: &str) -> CloudEvent {
    CloudEvent::new(format!("id-{ty}"), "test://host", ty)
}

/// Settings with `config` and a deadline long enough that a loaded test machine never
/// hits it by accident; tests about deadlines set their own.
fn settings(config: &[(&str, &str)]) -> FunctionSettings {
    let mut settings = FunctionSettings {
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        ..FunctionSettings::default()
    };
    settings.limits.deadline = Duration::from_secs(5);
    settings
}

fn customers() -> Arc<MemoryKeyValue> {
    let kv = Arc::new(MemoryKeyValue::new());
    kv.set(
        "customers",
        "CUST-42",
        br#"{"name":"Acme GmbH","segment":"enterprise"}"#,
    )
    .unwrap();
    kv
}

fn host_with(kv: Arc<MemoryKeyValue>) -> FunctionHost {
    FunctionHost::new(HostOptions {
        keyvalue: Some(kv),
        max_instances: 64,
        ..HostOptions::default()
    })
    .unwrap()
}

fn host() -> FunctionHost {
    host_with(Arc::new(MemoryKeyValue::new()))
}

fn load_guest(host: &FunctionHost, guest: &str, settings: FunctionSettings) -> Function {
    let wasm = std::fs::read(weir_test_support::test_guest(guest)).unwrap();
    host.load(guest, &wasm, settings).unwrap()
}

fn example(host: &FunctionHost, mut settings: FunctionSettings) -> Function {
    settings.grants.keyvalue.insert("customers".to_owned());
    let wasm = std::fs::read(weir_test_support::example_function()).unwrap();
    host.load("enrich-order", &wasm, settings).unwrap()
}

fn json_data(event: &CloudEvent) -> serde_json::Value {
    match &event.data {
        Some(Data::Json(data)) => data.value(),
        other => panic!("expected JSON data, got {other:?}"),
    }
}

/// `WEIR_WASM_PROFILE=perfmap` (the `perfmap` option): wasmtime names each function's
/// compiled code in `/tmp/perf-PID.map`, where `perf` finds it; without it, no map.
#[test]
fn with_perfmap_the_guests_compiled_code_is_named_for_perf() {
    let map = PathBuf::from(format!("/tmp/perf-{}.map", std::process::id()));
    let config = [("currency", "EUR"), ("rate.USD", "0.9")];
    let quiet = FunctionHost::new(HostOptions {
        keyvalue: Some(customers()),
        perfmap: false,
        ..HostOptions::default()
    })
    .unwrap();
    example(&quiet, settings(&config))
        .call(&example_event())
        .unwrap();
    assert!(!map.exists(), "no perf map unless asked for");

    let host = FunctionHost::new(HostOptions {
        keyvalue: Some(customers()),
        perfmap: true,
        ..HostOptions::default()
    })
    .unwrap();
    example(&host, settings(&config))
        .call(&example_event())
        .unwrap();
    let names = std::fs::read_to_string(&map).unwrap_or_default();
    let _ = std::fs::remove_file(&map);
    // Each line: address, length, name; the stripped example's functions are named by
    // index (`wasm[0]::function[22]`).
    let guest = names
        .lines()
        .filter(|line| {
            line.split(' ')
                .nth(2)
                .is_some_and(|n| n.starts_with("wasm["))
        })
        .count();
    assert!(
        guest > 10,
        "the guest's functions in {}: {names}",
        map.display()
    );
}

#[test]
fn example_function_renames_converts_and_enriches_from_the_key_value_store() {
    let host = host_with(customers());
    let f = example(&host, settings(&[("currency", "EUR"), ("rate.USD", "0.9")]));
    assert_eq!(f.version().len(), 12);

    let outputs = f.instances().call(&example_event()).unwrap();
    assert_eq!(outputs.len(), 1);
    let out = &outputs[0];
    assert_eq!(out.target, "crm.orders");
    assert_eq!(out.event.ty, "crm.order.created");
    assert_eq!(out.event.id, "", "the host derives the id, not the guest");
    let data = json_data(&out.event);
    assert_eq!(data["orderId"], "SO-1001");
    assert_eq!(data["customerId"], "CUST-42");
    assert_eq!(data["amount"], 1125.0);
    assert_eq!(data["currency"], "EUR");
    assert_eq!(data["customer"]["name"], "Acme GmbH");
    assert_eq!(data["lines"][0]["sku"], "MAT-7");
    assert_eq!(out.event.partition_key(), Some("CUST-42"));

    // A customer the store does not know is enriched with null, not an error.
    let mut unknown = example_event();
    if let Some(Data::Json(data)) = &mut unknown.data {
        let mut value = data.value();
        value["SoldToParty"] = "CUST-404".into();
        *data = value.into();
    }
    let outputs = f.call(&unknown).unwrap();
    assert_eq!(
        json_data(&outputs[0].event)["customer"],
        serde_json::Value::Null
    );
}

#[test]
fn a_forwarding_function_hands_back_the_data_it_was_given_byte_for_byte() {
    let host = host();
    let echo = load_guest(&host, "guest-echo", settings(&[]));
    let data = r#"{"big":123456789012345678901234567890,"exp":1E+2,"z":-0,"e":"\u00e9","s":"\/"}"#;
    let published =
        format!(r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{data}}}"#);
    let input = CloudEvent::from_json_slice(published.as_bytes()).unwrap();
    let outputs = echo.call(&input).unwrap();
    let Some(Data::Json(json)) = &outputs[0].event.data else {
        panic!("not JSON data: {:?}", outputs[0].event.data)
    };
    assert_eq!(json.as_str(), data);
    // JSON data sent without a type reached the function as `application/json`, which
    // is what kept it JSON on the way back.
    assert_eq!(
        outputs[0].event.datacontenttype.as_deref(),
        Some("application/json")
    );
    // Other data keeps its type, or its lack of one.
    for (content_type, data) in [
        (Some("text/plain"), Data::Text(r"1E+2 \u00e9".to_owned())),
        (
            None,
            Data::Binary(bytes::Bytes::from_static(b"\x00{\"a\":1}")),
        ),
    ] {
        let mut input = event("t");
        input.datacontenttype = content_type.map(str::to_owned);
        input.data = Some(data.clone());
        let outputs = echo.call(&input).unwrap();
        assert_eq!(outputs[0].event.datacontenttype.as_deref(), content_type);
        assert_eq!(outputs[0].event.data, Some(data));
    }
    // JSON that repeats a key is an invalid output, as it would be an invalid publish.
    let mut input = event("t");
    input.datacontenttype = Some("application/json".to_owned());
    input.data = Some(Data::Binary(bytes::Bytes::from_static(br#"{"a":1,"a":2}"#)));
    let err = echo.call(&input).unwrap_err();
    assert!(matches!(err, CallError::InvalidOutput { .. }), "{err}");
    assert!(err.to_string().contains("repeats the key \"a\""), "{err}");
}

#[test]
fn missing_config_is_a_fatal_error_naming_the_key() {
    let host = host_with(customers());
    let f = example(&host, settings(&[]));
    let err = f.call(&example_event()).unwrap_err();
    assert!(matches!(err, CallError::Fatal { .. }), "{err:?}");
    assert!(err.to_string().contains("rate.USD"), "{err}");
}

#[test]
fn a_trap_is_reported_with_the_function_name_and_the_host_keeps_working() {
    let host = host();
    let f = load_guest(&host, "guest-trap", settings(&[]));
    let pool = f.instances();

    let err = pool.call(&event("test.trap")).unwrap_err();
    assert!(matches!(err, CallError::Trap { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("function \"guest-trap\""),
        "{err}"
    );

    let err = pool.call(&event("test.fatal")).unwrap_err();
    assert!(matches!(err, CallError::Fatal { .. }), "{err:?}");

    let ok = pool.call(&event("test.ok")).unwrap();
    assert_eq!(ok[0].target, "out");
    assert_eq!(ok[0].event.id, "id-test.ok");
}

#[test]
fn a_module_that_is_not_a_component_is_rejected() {
    let host = host();
    let err = host
        .load("broken", b"\0asm\x01\0\0\0", settings(&[]))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidComponent { .. }), "{err:?}");
    let err = host
        .load("garbage", b"not wasm at all", settings(&[]))
        .unwrap_err();
    assert!(err.to_string().contains("\"garbage\""), "{err}");
}

#[test]
fn a_component_of_another_world_is_rejected() {
    let host = host();
    let wasm = std::fs::read(weir_test_support::test_guest("guest-wrong-world")).unwrap();
    let err = host.load("cli-tool", &wasm, settings(&[])).unwrap_err();
    assert!(matches!(err, Error::WrongWorld { .. }), "{err:?}");
    assert!(err.to_string().contains("\"cli-tool\""), "{err}");
}

/// An infinite loop is stopped at its 50 ms deadline every time, and a neighbouring
/// function keeps serving events meanwhile.
#[test]
fn an_infinite_loop_hits_the_deadline_and_a_neighbour_keeps_serving() {
    let host = host_with(customers());
    let mut loop_settings = settings(&[]);
    loop_settings.limits.deadline = Duration::from_millis(50);
    let looping = load_guest(&host, "guest-infinite-loop", loop_settings);
    let good = example(&host, settings(&[("rate.USD", "0.9")]));

    // The loop spins at least six times, and on until the neighbour has served an event
    // meanwhile: however the threads are scheduled, the neighbour gets its turn.
    let handled = Arc::new(AtomicU64::new(0));
    let spinner = {
        let pool = looping.instances();
        let handled = handled.clone();
        std::thread::spawn(move || {
            let mut deadlines = 0;
            while deadlines < 6 || handled.load(Ordering::SeqCst) == 0 {
                assert!(deadlines < 1000, "the neighbour never got an event through");
                let err = pool.call(&event("test.spin")).unwrap_err();
                assert!(matches!(err, CallError::Deadline { .. }), "{err:?}");
                assert!(err.to_string().contains("50ms"), "{err}");
                deadlines += 1;
            }
            deadlines
        })
    };
    // The well-behaved function, beside it, handles every event.
    let pool = good.instances();
    let input = example_event();
    while !spinner.is_finished() {
        assert_eq!(pool.call(&input).unwrap().len(), 1);
        handled.fetch_add(1, Ordering::SeqCst);
    }
    assert!(spinner.join().unwrap() >= 6);
}

/// A CPU quota of 10% of one core holds four calls that spin to their deadline at once
/// to about a tenth of a core between them (they sleep while the quota is in debt), and
/// they still end at their deadline: as a deadline breach, or as `unavailable` (retried)
/// when the quota was holding the call back at that moment.
#[test]
fn a_cpu_quota_holds_spinning_calls_to_their_share() {
    let host = host();
    let mut s = settings(&[]);
    s.limits.deadline = Duration::from_millis(300);
    s.limits.cpu_percent = Some(10);
    let looping = load_guest(&host, "guest-infinite-loop", s);
    let started = std::time::Instant::now();
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            let pool = looping.instances();
            std::thread::spawn(move || {
                let mark = crate::quota::CpuMark::now();
                for _ in 0..2 {
                    let call = std::time::Instant::now();
                    let err = pool.call(&event("test.spin")).unwrap_err();
                    assert_deadline_or_held(&err, "limits.cpu_percent = 10", "300ms");
                    assert!(call.elapsed() >= Duration::from_millis(300));
                }
                mark.used()
            })
        })
        .collect();
    let used: Duration = spinners.into_iter().map(|s| s.join().unwrap()).sum();
    let wall = started.elapsed();
    // Unthrottled, four spinners take all of both cores for the whole time (1.2 s of
    // CPU). The bound: the share, half again, the 10 ms burst and a tick (5 ms) each
    // call may run before it is charged.
    let bound = wall.mul_f64(0.10 * 1.5) + Duration::from_millis(10 + 8 * 5);
    assert!(
        used <= bound,
        "the spinners used {used:?} of CPU in {wall:?}, more than {bound:?}"
    );
}

/// A call that ended at its deadline: by itself, or held back by its CPU quota.
fn assert_deadline_or_held(err: &CallError, quota: &str, deadline: &str) {
    match err {
        CallError::Deadline { .. } => assert!(err.to_string().contains(deadline), "{err}"),
        CallError::Unavailable { reason, .. } => assert!(
            reason.contains(quota)
                && reason.contains(&format!("past the call's deadline of {deadline}")),
            "{err}"
        ),
        _ => panic!("{err:?}"),
    }
}

/// Calls that are mostly not charged at a tick (their deadline ends them first) are held
/// to the quota too: a call waits before it starts while an earlier call's CPU is owed.
#[test]
fn a_cpu_quota_holds_calls_that_end_before_a_tick_to_their_share() {
    let host = host();
    let mut s = settings(&[]);
    s.limits.deadline = Duration::from_millis(1);
    s.limits.cpu_percent = Some(20);
    let f = load_guest(&host, "guest-infinite-loop", s);
    let pool = f.instances();
    let charged = || f.quota_charged().unwrap();
    let started = std::time::Instant::now();
    while charged() < Duration::from_millis(100) {
        let err = pool.call(&event("test.spin")).unwrap_err();
        assert_deadline_or_held(&err, "limits.cpu_percent = 20", "1ms");
    }
    let (used, wall) = (charged(), started.elapsed());
    // At 20% of a core, the CPU past the 20 ms burst (and the last call's, ~5 ms, paid by
    // the next) takes five times as long in wall time; unthrottled, about as long.
    let least = (used - Duration::from_millis(30)).mul_f64(0.8 / 0.20);
    assert!(
        wall >= least,
        "{used:?} of CPU took only {wall:?} of wall time, less than {least:?}"
    );
}

#[test]
fn a_memory_bomb_hits_the_memory_limit_and_the_next_event_runs() {
    let host = host();
    let mut bomb = settings(&[]);
    bomb.limits.memory_bytes = 16 << 20;
    let f = load_guest(&host, "guest-memory-bomb", bomb);
    let pool = f.instances();
    assert!(pool.call(&event("test.ok")).is_ok());
    let err = pool.call(&event("test.bomb")).unwrap_err();
    assert!(
        matches!(err, CallError::Memory { limit_bytes, .. } if limit_bytes == 16 << 20),
        "{err:?}"
    );
    assert!(err.to_string().contains("limits.memory_mb"), "{err}");
    assert!(pool.call(&event("test.ok")).is_ok());
}

#[test]
fn a_stack_overflow_is_its_own_error() {
    let host = host();
    let f = load_guest(&host, "guest-stack-overflow", settings(&[]));
    let err = f.instances().call(&event("test.deep")).unwrap_err();
    assert!(matches!(err, CallError::StackOverflow { .. }), "{err:?}");
}

#[test]
fn too_many_or_too_large_outputs_hit_the_output_limits() {
    let host = host();
    let f = load_guest(&host, "guest-huge-output", settings(&[]));
    let pool = f.instances();
    let err = pool.call(&event("test.many")).unwrap_err();
    assert!(
        matches!(
            err,
            CallError::OutputLimit {
                limit: "max_outputs",
                actual: 1000,
                allowed: 100,
                ..
            }
        ),
        "{err:?}"
    );
    let err = pool.call(&event("test.big")).unwrap_err();
    assert!(
        matches!(
            err,
            CallError::OutputLimit {
                limit: "max_output_bytes",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(pool.call(&event("test.ok")).unwrap().len(), 1);
}

#[test]
fn fuel_stops_a_loop_when_metering_is_on() {
    let host = FunctionHost::new(HostOptions {
        fuel: true,
        max_instances: 8,
        ..HostOptions::default()
    })
    .unwrap();
    let mut s = settings(&[]);
    s.limits.fuel = Some(5_000_000);
    s.limits.deadline = Duration::from_secs(10);
    let f = load_guest(&host, "guest-infinite-loop", s);
    let err = f.call(&event("test.spin")).unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Fuel {
                fuel: 5_000_000,
                ..
            }
        ),
        "{err:?}"
    );

    // Without metering, a fuel limit is refused at load time rather than ignored.
    let mut s = settings(&[]);
    s.limits.fuel = Some(1);
    let wasm = std::fs::read(weir_test_support::test_guest("guest-infinite-loop")).unwrap();
    let err = host_with(customers()).load("f", &wasm, s).unwrap_err();
    assert!(matches!(err, Error::FuelDisabled { .. }), "{err:?}");
}

#[test]
fn key_value_namespaces_are_denied_unless_granted() {
    let kv = Arc::new(MemoryKeyValue::new());
    let host = host_with(kv.clone());
    let denied = load_guest(
        &host,
        "guest-capabilities",
        settings(&[("namespace", "customers")]),
    );
    let err = denied.instances().call(&event("test.kv")).unwrap_err();
    assert!(matches!(err, CallError::CapabilityDenied { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("key-value namespace \"customers\""),
        "{err}"
    );
    assert_eq!(
        kv.get("customers", "k").unwrap(),
        None,
        "nothing was written"
    );

    let mut granted = settings(&[("namespace", "customers")]);
    granted.grants.keyvalue.insert("customers".to_owned());
    let f = load_guest(&host, "guest-capabilities", granted);
    let out = f.instances().call(&event("test.kv")).unwrap();
    assert_eq!(json_data(&out[0].event)["value"], "id-test.kv");
    assert_eq!(kv.get("customers", "k").unwrap().unwrap(), b"id-test.kv");
}

/// A store that answers each write after `delay`, as a key-value store out of reach for
/// a moment (a broker restarting) does.
struct SlowStore {
    inner: MemoryKeyValue,
    delay: Duration,
}

impl crate::KeyValueStore for SlowStore {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.inner.get(namespace, key)
    }
    fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), String> {
        std::thread::sleep(self.delay);
        self.inner.set(namespace, key, value)
    }
    fn delete(&self, namespace: &str, key: &str) -> Result<(), String> {
        self.inner.delete(namespace, key)
    }
    fn exists(&self, namespace: &str, key: &str) -> Result<bool, String> {
        self.inner.exists(namespace, key)
    }
    fn list_keys(
        &self,
        namespace: &str,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>), String> {
        self.inner.list_keys(namespace, cursor)
    }
}

/// A call that runs past its deadline because its key-value store answered late is not
/// the function's fault: it fails as unavailable (retryable), naming the operation, not
/// as a deadline (which a pipeline dead-letters at once).
#[test]
fn a_deadline_passed_waiting_on_the_key_value_store_is_retryable() {
    let slow = Arc::new(SlowStore {
        inner: MemoryKeyValue::new(),
        delay: Duration::from_millis(300),
    });
    let host = FunctionHost::new(HostOptions {
        keyvalue: Some(slow.clone()),
        max_instances: 8,
        ..HostOptions::default()
    })
    .unwrap();
    let mut s = settings(&[("namespace", "customers")]);
    s.grants.keyvalue.insert("customers".to_owned());
    s.limits.deadline = Duration::from_millis(100);
    let f = load_guest(&host, "guest-capabilities", s.clone());
    let err = f.instances().call(&event("test.kv")).unwrap_err();
    assert!(matches!(err, CallError::Unavailable { .. }), "{err:?}");
    assert!(err.is_retryable(), "{err}");
    assert!(
        err.to_string()
            .contains("key-value set in namespace \"customers\" took"),
        "{err}"
    );

    // A store that answers in time: the same function succeeds.
    let fast = FunctionHost::new(HostOptions {
        keyvalue: Some(Arc::new(SlowStore {
            inner: MemoryKeyValue::new(),
            delay: Duration::ZERO,
        })),
        max_instances: 8,
        ..HostOptions::default()
    })
    .unwrap();
    let f = load_guest(&fast, "guest-capabilities", s);
    f.instances().call(&event("test.kv")).unwrap();
}

#[test]
fn a_copy_with_another_key_value_store_writes_only_there() {
    let node_store = Arc::new(MemoryKeyValue::new());
    let host = host_with(node_store.clone());
    let mut granted = settings(&[("namespace", "customers")]);
    granted.grants.keyvalue.insert("customers".to_owned());
    let f = load_guest(&host, "guest-capabilities", granted);

    let other = Arc::new(MemoryKeyValue::new());
    let copy = f.with_keyvalue(Some(other.clone()));
    assert_eq!(copy.version(), f.version());
    copy.instances().call(&event("test.kv")).unwrap();
    assert_eq!(other.get("customers", "k").unwrap().unwrap(), b"id-test.kv");
    assert_eq!(node_store.get("customers", "k").unwrap(), None);

    // The original still writes to the host's store.
    f.instances().call(&event("test.kv")).unwrap();
    assert_eq!(
        node_store.get("customers", "k").unwrap().unwrap(),
        b"id-test.kv"
    );
}

/// A one-request-at-a-time HTTP server on loopback answering `200 hello`.
fn http_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    format!("http://{addr}/master-data")
}

#[test]
fn outbound_http_reaches_only_allowed_hosts() {
    let url = http_server();
    let host = host();
    let port: u16 = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let f = load_guest(&host, "guest-capabilities", settings(&[("url", &url)]));
    let err = f.instances().call(&event("test.http")).unwrap_err();
    assert!(matches!(err, CallError::CapabilityDenied { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("HTTP to http://127.0.0.1:{port}")),
        "{err}"
    );

    let mut other_port = settings(&[("url", &url)]);
    other_port.grants.http.push(HttpGrant {
        scheme: None,
        host: "127.0.0.1".to_owned(),
        port: Some(port.wrapping_add(1)),
    });
    let f = load_guest(&host, "guest-capabilities", other_port);
    assert!(matches!(
        f.call(&event("test.http")).unwrap_err(),
        CallError::CapabilityDenied { .. }
    ));

    let mut allowed = settings(&[("url", &url)]);
    allowed.limits.deadline = Duration::from_secs(5);
    allowed.grants.http.push(HttpGrant {
        scheme: Some("http".to_owned()),
        host: "127.0.0.1".to_owned(),
        port: Some(port),
    });
    let f = load_guest(&host, "guest-capabilities", allowed);
    let out = f.instances().call(&event("test.http")).unwrap();
    let data = json_data(&out[0].event);
    assert_eq!(data["status"], 200);
    assert_eq!(data["body"], "hello");
}

#[test]
fn no_sleeps_no_environment_no_files_and_secrets_arrive_as_config() {
    // SAFETY of the test's premise: the variable is in weir's environment, yet the guest
    // must not see it.
    let host = host();
    let mut s = settings(&[]);
    s.limits.deadline = Duration::from_secs(5);
    s.secrets
        .insert("token".to_owned(), Secret::new("s3cr3t-value"));
    assert!(!format!("{s:?}").contains("s3cr3t"), "secrets never print");
    let f = load_guest(&host, "guest-capabilities", s);
    let pool = f.instances();

    // A 10 s sleep returns at once: well inside a 5 s deadline (which leaves a loaded
    // machine room, and which an honoured sleep would still overrun).
    let out = pool.call(&event("test.sleep")).unwrap();
    assert_eq!(json_data(&out[0].event)["slept"], true);

    // No environment and no directories. Granting either is not only a capability
    // change: wasi-libc frees what the host returns for them with its own `free`, and the
    // Rust SDKs' allocator (weir-guest-alloc) would then see foreign frees of its blocks.
    let out = pool.call(&event("test.env")).unwrap();
    let data = json_data(&out[0].event);
    assert_eq!(data["vars"], 0);
    assert_eq!(data["root_readable"], false);
    assert_eq!(data["cwd_readable"], false);

    let out = pool.call(&event("test.secret")).unwrap();
    assert_eq!(json_data(&out[0].event)["token_len"], "s3cr3t-value".len());
}

fn count(out: &[crate::OutputEvent]) -> u64 {
    out[0].event.subject.as_deref().unwrap().parse().unwrap()
}

#[test]
fn warm_instances_serve_one_pool_until_recycled_or_failed() {
    let host = host();
    let mut s = settings(&[]);
    s.instance_reuse = 3;
    let f = load_guest(&host, "guest-counter", s);

    let a = f.instances();
    let calls: Vec<u64> = (0..4)
        .map(|_| count(&a.call(&event("n")).unwrap()))
        .collect();
    assert_eq!(
        calls,
        [1, 2, 3, 1],
        "an instance serves 3 calls, then a fresh one"
    );

    // Another pool (another pipeline) never sees the first pool's instance.
    let b = f.instances();
    assert_eq!(count(&b.call(&event("n")).unwrap()), 1);

    // A failed call drops its instance; the next call starts fresh.
    assert_eq!(count(&a.call(&event("n")).unwrap()), 2);
    assert!(a.call(&event("test.fail")).is_err());
    assert_eq!(count(&a.call(&event("n")).unwrap()), 1);

    // `Function::call` always uses a fresh instance.
    assert_eq!(count(&f.call(&event("n")).unwrap()), 1);
    assert_eq!(count(&f.call(&event("n")).unwrap()), 1);
}

#[test]
fn compiled_functions_are_cached_on_disk_and_a_corrupt_artifact_is_recompiled() {
    let dir = tempfile::tempdir().unwrap();
    let options = || HostOptions {
        cache_dir: Some(dir.path().to_owned()),
        max_instances: 8,
        ..HostOptions::default()
    };
    let wasm = std::fs::read(weir_test_support::test_guest("guest-trap")).unwrap();
    let first = FunctionHost::new(options()).unwrap();
    first.load("f", &wasm, settings(&[])).unwrap();
    let artifacts: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");

    // A new host (a restart) maps the artifact and runs it.
    let second = FunctionHost::new(options()).unwrap();
    let f = second.load("f", &wasm, settings(&[])).unwrap();
    assert_eq!(f.call(&event("test.ok")).unwrap().len(), 1);

    // A flipped byte is caught by the checksum: compiled again, never mapped.
    let mut bytes = std::fs::read(&artifacts[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifacts[0], bytes).unwrap();
    let third = FunctionHost::new(options()).unwrap();
    let f = third.load("f", &wasm, settings(&[])).unwrap();
    assert_eq!(f.call(&event("test.ok")).unwrap().len(), 1);
}

#[test]
fn limits_default_to_the_documented_values() {
    let limits = Limits::default();
    assert_eq!(limits.deadline, Duration::from_millis(100));
    assert_eq!(limits.memory_bytes, 64 << 20);
    assert_eq!(limits.max_output_bytes, 1 << 20);
    assert_eq!(limits.max_outputs, 100);
    assert_eq!(limits.fuel, None);
}

#[test]
fn an_http_host_that_never_answers_cannot_hold_the_call_past_its_deadline() {
    // Accepts connections and never writes a byte: no TLS handshake, no response head.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let host = host();
    for scheme in ["http", "https"] {
        let url = format!("{scheme}://127.0.0.1:{port}/");
        let mut s = settings(&[("url", &url)]);
        s.limits.deadline = Duration::from_millis(300);
        s.grants.http.push(HttpGrant {
            scheme: None,
            host: "127.0.0.1".to_owned(),
            port: Some(port),
        });
        let f = load_guest(&host, "guest-capabilities", s);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(f.call(&event("test.http"))).unwrap());
        // Generous against a loaded machine; without the bound the call never returns.
        let result = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the call returned");
        let err = result.unwrap_err();
        assert!(
            matches!(
                err,
                CallError::Retryable { .. } | CallError::Deadline { .. }
            ),
            "{scheme}: {err:?}"
        );
    }
}

/// Answers from a fixed table instead of DNS, and counts its lookups.
#[derive(Default)]
struct FixedResolver {
    answers: BTreeMap<String, Vec<std::net::IpAddr>>,
    lookups: AtomicU64,
}

impl FixedResolver {
    fn new(answers: &[(&str, &[&str])]) -> Arc<FixedResolver> {
        Arc::new(FixedResolver {
            answers: answers
                .iter()
                .map(|(name, ips)| {
                    (
                        name.to_string(),
                        ips.iter().map(|ip| ip.parse().unwrap()).collect(),
                    )
                })
                .collect(),
            lookups: AtomicU64::new(0),
        })
    }
}

impl crate::Resolver for FixedResolver {
    fn resolve(
        &self,
        host: &str,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<Vec<std::net::IpAddr>>> + Send>>
    {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        let answer = self.answers.get(host).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("no such host {host}"))
        });
        Box::pin(async move { answer })
    }
}

fn host_resolving(resolver: Arc<FixedResolver>) -> FunctionHost {
    FunctionHost::new(HostOptions {
        max_instances: 16,
        resolver,
        ..HostOptions::default()
    })
    .unwrap()
}

/// A loopback HTTP server answering `200 hello` that counts the connections it accepts.
fn counting_server() -> (u16, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    (port, accepted)
}

fn http_settings(url: &str, grant: &str, port: Option<u16>) -> FunctionSettings {
    let mut s = settings(&[("url", url)]);
    s.grants.http.push(HttpGrant {
        scheme: None,
        host: grant.to_owned(),
        port,
    });
    s
}

#[test]
fn a_wildcard_grant_whose_name_resolves_to_loopback_is_refused_before_connecting() {
    let (port, accepted) = counting_server();
    let resolver = FixedResolver::new(&[("api.example.com", &["127.0.0.1"])]);
    let host = host_resolving(resolver.clone());
    let url = format!("http://api.example.com:{port}/v1/topics");
    let f = load_guest(
        &host,
        "guest-capabilities",
        http_settings(&url, "*.example.com", None),
    );

    let err = f.instances().call(&event("test.http")).unwrap_err();
    assert!(matches!(err, CallError::CapabilityDenied { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "HTTP to http://api.example.com:{port} at 127.0.0.1 (a loopback address"
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!("\"127.0.0.1:{port}\"")),
        "{message}"
    );
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst),
        1,
        "the name was resolved"
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the listener saw no connection"
    );

    // The IPv4-mapped IPv6 form of the same address is refused the same way.
    let resolver = FixedResolver::new(&[("api.example.com", &["::ffff:127.0.0.1"])]);
    let host = host_resolving(resolver);
    let f = load_guest(
        &host,
        "guest-capabilities",
        http_settings(&url, "*.example.com", None),
    );
    let err = f.call(&event("test.http")).unwrap_err();
    assert!(
        err.to_string()
            .contains("an IPv6 form of 127.0.0.1, a loopback address"),
        "{err}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[test]
fn a_public_looking_name_resolving_to_a_private_address_is_refused() {
    let resolver = FixedResolver::new(&[
        ("masterdata.example.com", &["10.20.30.40"]),
        ("metadata.example.com", &["169.254.169.254", "fd00::1"]),
    ]);
    let host = host_resolving(resolver);
    for (name, shown) in [
        ("masterdata.example.com", "10.20.30.40 (a private address"),
        (
            "metadata.example.com",
            "169.254.169.254 (a link-local address",
        ),
    ] {
        let url = format!("https://{name}/customers");
        // An exact grant of the name is not a grant of the address it resolves to.
        let f = load_guest(&host, "guest-capabilities", http_settings(&url, name, None));
        let err = f.call(&event("test.http")).unwrap_err();
        assert!(matches!(err, CallError::CapabilityDenied { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("HTTP to https://{name}:443 at {shown}")),
            "{err}"
        );
    }
}

#[test]
fn a_grant_naming_the_address_or_localhost_reaches_a_loopback_listener() {
    let (port, accepted) = counting_server();
    let resolver = FixedResolver::new(&[("localhost", &["127.0.0.1"])]);
    let host = host_resolving(resolver.clone());
    for (url, grant) in [
        (format!("http://127.0.0.1:{port}/master-data"), "127.0.0.1"),
        (format!("http://localhost:{port}/master-data"), "localhost"),
    ] {
        let f = load_guest(
            &host,
            "guest-capabilities",
            http_settings(&url, grant, Some(port)),
        );
        let out = f.call(&event("test.http")).unwrap();
        let data = json_data(&out[0].event);
        assert_eq!(data["status"], 200, "{grant}");
        assert_eq!(data["body"], "hello", "{grant}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        resolver.lookups.load(Ordering::SeqCst),
        1,
        "an IP literal is not resolved; localhost is"
    );
}

#[test]
fn a_mixed_answer_never_connects_to_its_private_address() {
    let (port, accepted) = counting_server();
    // A public address first (it cannot answer here: unreachable, refused or too slow),
    // then loopback: a client that fell back to the next address would reach the
    // listener.
    let resolver = FixedResolver::new(&[("mixed.example.com", &["1.1.1.1", "127.0.0.1", "::1"])]);
    let host = host_resolving(resolver);
    let url = format!("http://mixed.example.com:{port}/");
    let mut s = http_settings(&url, "*.example.com", None);
    s.limits.deadline = Duration::from_millis(1500);
    s.grants.http_timeout = Duration::from_millis(1000);
    let f = load_guest(&host, "guest-capabilities", s);
    let result = f.call(&event("test.http"));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "{result:?}");
    let err = result.unwrap_err();
    assert!(
        !matches!(err, CallError::CapabilityDenied { .. }),
        "a public address was left to try: {err:?}"
    );
}

/// `wasm` with a custom section appended: another component (another digest) that
/// compiles to the same code.
fn variant(wasm: &[u8], n: u32) -> Vec<u8> {
    let name = format!("weir-test-{n}");
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    let mut size = section.len() as u32;
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        if size == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&section);
    out
}

#[test]
fn candidates_over_the_memory_limit_are_evicted_first_and_active_functions_stay() {
    let dir = tempfile::tempdir().unwrap();
    let host = FunctionHost::new(HostOptions {
        cache_dir: Some(dir.path().to_owned()),
        max_instances: 16,
        max_compiled_in_memory: 3,
        ..HostOptions::default()
    })
    .unwrap();
    let echo = std::fs::read(weir_test_support::test_guest("guest-echo")).unwrap();
    let trap = std::fs::read(weir_test_support::test_guest("guest-trap")).unwrap();
    let active_a = host.load("a", &echo, settings(&[])).unwrap();
    let active_b = host.load("b", &variant(&echo, 1), settings(&[])).unwrap();

    let mut candidates = Vec::new();
    for n in 0..4 {
        let c = host
            .load_candidate("c", &variant(&trap, n), settings(&[]))
            .unwrap();
        candidates.push(c);
        let stats = host.compiled_stats();
        assert!(stats.in_memory <= 3, "{stats:?}");
        assert_eq!(stats.in_memory_active, 2, "{stats:?}");
    }
    let stats = host.compiled_stats();
    assert_eq!(stats.evicted_from_memory, 3, "{stats:?}");
    assert_eq!(stats.compilations, 6, "{stats:?}");

    // The active ones were kept: loading them again finds them in memory.
    host.load("a", &echo, settings(&[])).unwrap();
    host.load("b", &variant(&echo, 1), settings(&[])).unwrap();
    assert_eq!(host.compiled_stats().loads_from_memory, 2);

    // An evicted candidate's function still runs, and loading it again maps it from disk.
    assert_eq!(candidates[0].call(&event("test.ok")).unwrap().len(), 1);
    let again = host
        .load_candidate("c", &variant(&trap, 0), settings(&[]))
        .unwrap();
    assert_eq!(again.call(&event("test.ok")).unwrap().len(), 1);
    let stats = host.compiled_stats();
    assert_eq!(stats.loads_from_disk, 1, "{stats:?}");
    assert_eq!(stats.compilations, 6, "{stats:?}");
    assert!(active_a.call(&event("t")).is_ok() && active_b.call(&event("t")).is_ok());

    // A version no longer held by anyone active (replaced by a deploy) becomes evictable.
    drop(active_b);
    host.load_candidate("c", &variant(&trap, 9), settings(&[]))
        .unwrap();
    let stats = host.compiled_stats();
    assert_eq!(stats.in_memory_active, 1, "{stats:?}");
    assert_eq!(stats.in_memory, 3, "{stats:?}");
}

#[test]
fn active_functions_past_the_memory_limit_are_all_kept() {
    let host = FunctionHost::new(HostOptions {
        max_instances: 8,
        max_compiled_in_memory: 1,
        ..HostOptions::default()
    })
    .unwrap();
    let echo = std::fs::read(weir_test_support::test_guest("guest-echo")).unwrap();
    let functions: Vec<Function> = (0..3)
        .map(|n| host.load("f", &variant(&echo, n), settings(&[])).unwrap())
        .collect();
    let stats = host.compiled_stats();
    assert_eq!(
        (stats.in_memory, stats.in_memory_active),
        (3, 3),
        "{stats:?}"
    );
    assert_eq!(stats.evicted_from_memory, 0);
    for f in &functions {
        assert!(f.call(&event("t")).is_ok());
    }
}

#[test]
fn the_disk_cache_stays_within_its_byte_limit_and_keeps_the_recently_used() {
    let trap = std::fs::read(weir_test_support::test_guest("guest-trap")).unwrap();
    // One artifact's size, measured.
    let probe = tempfile::tempdir().unwrap();
    let host = FunctionHost::new(HostOptions {
        cache_dir: Some(probe.path().to_owned()),
        max_instances: 8,
        ..HostOptions::default()
    })
    .unwrap();
    host.load_candidate("f", &variant(&trap, 0), settings(&[]))
        .unwrap();
    let one = host.compiled_stats().on_disk_bytes;
    assert!(one > 0);

    let dir = tempfile::tempdir().unwrap();
    let limit = one * 5 / 2;
    let options = || HostOptions {
        cache_dir: Some(dir.path().to_owned()),
        max_instances: 8,
        max_compiled_on_disk_bytes: limit,
        ..HostOptions::default()
    };
    let host = FunctionHost::new(options()).unwrap();
    for n in 0..8 {
        host.load_candidate("f", &variant(&trap, n), settings(&[]))
            .unwrap();
        let stats = host.compiled_stats();
        assert!(stats.on_disk_bytes <= limit, "{stats:?} over {limit}");
        if n == 6 {
            // 6 is stored; 5 was stored before it. Using 5 again makes 6 the older.
            host.load_candidate("f", &variant(&trap, 5), settings(&[]))
                .unwrap();
        }
    }
    let stats = host.compiled_stats();
    assert_eq!(stats.on_disk_artifacts, 2, "{stats:?}");
    assert_eq!(stats.evicted_from_disk, 6, "{stats:?}");

    // A restarted host finds 7 (just stored) and 5 (used last) on disk; 6 was evicted.
    let restarted = FunctionHost::new(options()).unwrap();
    for n in [7, 5] {
        restarted
            .load_candidate("f", &variant(&trap, n), settings(&[]))
            .unwrap();
    }
    assert_eq!(restarted.compiled_stats().loads_from_disk, 2);
    let f = restarted
        .load_candidate("f", &variant(&trap, 6), settings(&[]))
        .unwrap();
    assert_eq!(restarted.compiled_stats().compilations, 1);
    assert_eq!(f.call(&event("test.ok")).unwrap().len(), 1);
}

fn entity_command(name: &str, version: u64) -> crate::EntityCommand {
    crate::EntityCommand {
        name: name.to_owned(),
        entity_id: "e-1".to_owned(),
        data: Vec::new(),
        version,
    }
}

#[test]
fn an_entity_is_recognised_and_may_use_grants_in_handle_but_not_in_apply() {
    let host = host_with(customers());
    let mut s = settings(&[]);
    s.grants.keyvalue.insert("customers".to_owned());
    let entity = load_guest(&host, "guest-entity-impure", s);
    assert_eq!(entity.world(), crate::World::Entity);
    let pool = entity.instances();

    let decision = pool
        .handle_command(None, &entity_command("count", 0))
        .unwrap();
    let crate::Decision::Accept(events) = decision else {
        panic!("{decision:?}")
    };
    assert_eq!(events[0].ty, "Counted");
    let state = pool.apply(None, &event("Counted")).unwrap();
    assert_eq!(state.as_deref(), Some(&b"1"[..]));
    let state = pool.apply(state.as_deref(), &event("Counted")).unwrap();
    assert_eq!(state.as_deref(), Some(&b"2"[..]));

    // The same namespace in apply: denied, so a rebuilt state cannot depend on it.
    let err = pool.apply(state.as_deref(), &event("Impure")).unwrap_err();
    assert!(matches!(err, CallError::CapabilityDenied { .. }), "{err:?}");
    // And granted again for the next handle.
    pool.handle_command(state.as_deref(), &entity_command("count", 2))
        .unwrap();

    // A handler is not an entity, and the other world's calls are refused.
    let handler = load_guest(&host, "guest-echo", settings(&[]));
    assert_eq!(handler.world(), crate::World::Handler);
    let err = handler
        .instances()
        .handle_command(None, &entity_command("count", 0))
        .unwrap_err();
    assert!(err.to_string().contains("handler world"), "{err}");
    let err = pool.call(&event("x")).unwrap_err();
    assert!(err.to_string().contains("entity world"), "{err}");
}

/// An HTTP/1.1 server on loopback answering `200 hello` to each request of a connection
/// while the client keeps it open (unless `close_each`: then it closes every connection
/// after one answer, without saying so); its port, and the connections and requests it
/// took.
fn keep_alive_server(close_each: bool) -> (u16, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connections, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (c, r) = (connections.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while !pending.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    }
                    let end = pending.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    pending.drain(..end);
                    r.fetch_add(1, Ordering::SeqCst);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                    if stream.write_all(answer).is_err() || close_each {
                        return;
                    }
                }
            });
        }
    });
    (port, connections, requests)
}

#[test]
fn outbound_http_reuses_a_connection_to_the_same_destination_and_grant() {
    let (port, connections, requests) = keep_alive_server(false);
    let resolver = FixedResolver::new(&[("localhost", &["127.0.0.1"])]);
    let host = host_resolving(resolver.clone());
    calls_say_hello(&http_guest(&host, "127.0.0.1", port), 5);
    assert_eq!(requests.load(Ordering::SeqCst), 5);
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "five calls, one after another, on one connection"
    );
    // Another grant (another destination) never takes that connection: its own.
    calls_say_hello(&http_guest(&host, "localhost", port), 3);
    assert_eq!(requests.load(Ordering::SeqCst), 8);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(resolver.lookups.load(Ordering::SeqCst), 1, "resolved once");
}

#[test]
fn a_connection_the_server_closed_while_idle_is_not_a_failed_call() {
    let (port, connections, requests) = keep_alive_server(true);
    calls_say_hello(&http_guest(&host(), "127.0.0.1", port), 5);
    assert_eq!(requests.load(Ordering::SeqCst), 5);
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

/// The capabilities guest on `host`, calling `http://{grant}:{port}/master-data` under a
/// grant of `grant:port`.
fn http_guest(host: &FunctionHost, grant: &str, port: u16) -> Function {
    let url = format!("http://{grant}:{port}/master-data");
    load_guest(
        host,
        "guest-capabilities",
        http_settings(&url, grant, Some(port)),
    )
}

/// Calls `f` on `test.http` `n` times, each answered `hello`.
fn calls_say_hello(f: &Function, n: usize) {
    for i in 0..n {
        let out = f.call(&event("test.http")).unwrap();
        assert_eq!(json_data(&out[0].event)["body"], "hello", "call {i}");
    }
}

/// Where the HTTP test's handler publishes: nowhere (its `/hello` publishes nothing).
struct NoPublisher;

impl crate::Publisher for NoPublisher {
    fn publish(
        &self,
        _route: &str,
        _topic: &str,
        _event: CloudEvent,
        _deadline: std::time::Instant,
    ) -> Result<crate::Receipt, String> {
        Err("this test's route publishes nowhere".to_owned())
    }
}

/// An HTTP handler's request and response bodies are `wasi:io` streams, linked to the
/// instance's resource table alone: serving a request builds no WASI context (two random
/// generators seeded, some allocations) that a fresh instance per request would pay for
/// every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_request_builds_no_wasi_context() {
    let host = host();
    let function = load_guest(&host, "guest-http-items", settings(&[]));
    let pool = crate::InstancePool::new(function, 10);
    let context = crate::RouteRequest {
        route: Arc::from("items"),
        publisher: Arc::new(NoPublisher),
        https: false,
        threads: crate::CallThreads::per_core(),
    };
    for _ in 0..2 {
        let request = http::Request::builder()
            .method("POST")
            .uri("http://localhost/hello")
            .header("host", "localhost")
            .body(bytes::Bytes::from_static(b"a body to read"))
            .unwrap();
        let response = pool.serve_http(request, context.clone()).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body().as_ref(), b"hello\n");
    }
    let instance = pool
        .take_idle()
        .expect("the instance went back to its pool");
    assert_eq!(
        instance.calls, 2,
        "both requests were served by one instance"
    );
    assert!(
        !instance.store.data().wasi_context_built(),
        "serving a request built a WASI context"
    );
}
