//! The embedded store against its contract: limits, paging, seeding, bulk loads, reopening.

use std::path::Path;

use crate::{EmbeddedKv, Error, Existing, KeyValue, MAX_KEY_BYTES, MAX_VALUE_BYTES};

fn open(dir: &Path) -> EmbeddedKv {
    EmbeddedKv::open(&dir.join("kv")).unwrap()
}

#[test]
fn set_get_exists_delete() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(dir.path());
    assert_eq!(kv.get("customers", "CUST-1").unwrap(), None);
    assert!(!kv.exists("customers", "CUST-1").unwrap());

    kv.set("customers", "CUST-1", b"acme").unwrap();
    assert_eq!(kv.get("customers", "CUST-1").unwrap().unwrap(), b"acme");
    assert!(kv.exists("customers", "CUST-1").unwrap());
    // Namespaces are separate.
    assert_eq!(kv.get("suppliers", "CUST-1").unwrap(), None);

    kv.set("customers", "CUST-1", b"").unwrap();
    assert_eq!(kv.get("customers", "CUST-1").unwrap().unwrap(), b"");

    kv.delete("customers", "CUST-1").unwrap();
    assert_eq!(kv.get("customers", "CUST-1").unwrap(), None);
    // Deleting what is not there, even in a namespace never written, is fine.
    kv.delete("customers", "CUST-1").unwrap();
    kv.delete("never", "x").unwrap();
}

#[test]
fn writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = open(dir.path());
        kv.set("customers", "CUST-1", b"one").unwrap();
        kv.set("customers", "CUST-2", b"two").unwrap();
        kv.delete("customers", "CUST-2").unwrap();
        kv.set("rates", "USD", b"0.92").unwrap();
    }
    let kv = open(dir.path());
    assert_eq!(kv.get("customers", "CUST-1").unwrap().unwrap(), b"one");
    assert_eq!(kv.get("customers", "CUST-2").unwrap(), None);
    assert_eq!(kv.get("rates", "USD").unwrap().unwrap(), b"0.92");
    assert!(kv.path().ends_with("kv/store.redb"));
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _kv = open(dir.path());
    let err = EmbeddedKv::open(&dir.path().join("kv")).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another process"), "{err}");
}

#[test]
fn list_keys_pages_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(dir.path());
    let page = kv.list_keys("empty", None, 10).unwrap();
    assert!(page.keys.is_empty());
    assert_eq!(page.cursor, None);

    for n in [3, 1, 4, 0, 2] {
        kv.set("ns", &format!("k{n}"), b"v").unwrap();
    }
    let page = kv.list_keys("ns", None, 2).unwrap();
    assert_eq!(page.keys, ["k0", "k1"]);
    assert_eq!(page.cursor, Some(2));
    let page = kv.list_keys("ns", page.cursor, 2).unwrap();
    assert_eq!(page.keys, ["k2", "k3"]);
    assert_eq!(page.cursor, Some(4));
    let page = kv.list_keys("ns", page.cursor, 2).unwrap();
    assert_eq!(page.keys, ["k4"]);
    assert_eq!(page.cursor, None);
    // Exactly a page left: no cursor after it.
    let page = kv.list_keys("ns", Some(3), 2).unwrap();
    assert_eq!(page.keys, ["k3", "k4"]);
    assert_eq!(page.cursor, None);
    // Past the end, and a limit of 0 (taken as 1).
    assert!(kv.list_keys("ns", Some(99), 2).unwrap().keys.is_empty());
    assert_eq!(kv.list_keys("ns", None, 0).unwrap().keys, ["k0"]);
}

#[test]
fn bad_names_keys_and_values_are_typed_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(dir.path());
    for ns in ["", "a b", "..", "ns/x", &"n".repeat(250)] {
        let err = kv.set(ns, "k", b"v").unwrap_err();
        assert!(
            matches!(err, Error::InvalidNamespace { .. }),
            "{ns:?}: {err}"
        );
    }
    let err = kv.set("ns", "", b"v").unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert!(err.to_string().contains("use 1 to 1024 bytes"), "{err}");
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    let err = kv.get("ns", &long).unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    kv.set("ns", &"k".repeat(MAX_KEY_BYTES), b"v").unwrap();

    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    let err = kv.set("ns", "big", &big).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert!(!kv.exists("ns", "big").unwrap());
    kv.set("ns", "big", &big[..MAX_VALUE_BYTES]).unwrap();
    assert_eq!(kv.get("ns", "big").unwrap().unwrap().len(), MAX_VALUE_BYTES);
}

fn write_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn seeding_writes_missing_keys_only_with_strings_as_text_and_the_rest_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(dir.path());
    let seed = write_file(
        dir.path(),
        "customers.json",
        r#"{"CUST-42": {"name": "Acme GmbH", "segment": "enterprise"}, "plain": "text", "n": 7, "b": true, "z": null}"#,
    );
    assert_eq!(kv.seed_from_json("customers", &seed).unwrap(), 5);
    assert_eq!(
        kv.get("customers", "CUST-42").unwrap().unwrap(),
        br#"{"name":"Acme GmbH","segment":"enterprise"}"#
    );
    assert_eq!(kv.get("customers", "plain").unwrap().unwrap(), b"text");
    assert_eq!(kv.get("customers", "n").unwrap().unwrap(), b"7");
    assert_eq!(kv.get("customers", "b").unwrap().unwrap(), b"true");
    assert_eq!(kv.get("customers", "z").unwrap().unwrap(), b"null");

    // A changed value is kept on the next seed; a new key is added.
    kv.set("customers", "plain", b"changed at run time")
        .unwrap();
    let seed = write_file(
        dir.path(),
        "customers.json",
        r#"{"plain": "text", "new": "one"}"#,
    );
    assert_eq!(kv.seed_from_json("customers", &seed).unwrap(), 1);
    assert_eq!(
        kv.get("customers", "plain").unwrap().unwrap(),
        b"changed at run time"
    );

    // Loading overwrites.
    let n = kv
        .load_json("customers", "the request body", br#"{"plain": "text"}"#)
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(kv.get("customers", "plain").unwrap().unwrap(), b"text");
}

#[test]
fn a_malformed_seed_names_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(dir.path());
    let broken = write_file(dir.path(), "broken.json", r#"{"a": "1", "b": "#);
    let err = kv.seed_from_json("ns", &broken).unwrap_err();
    assert!(matches!(err, Error::InvalidJson { .. }), "{err}");
    assert!(err.to_string().contains("broken.json"), "{err}");

    let array = write_file(dir.path(), "array.json", r#"["a", "b"]"#);
    let err = kv.seed_from_json("ns", &array).unwrap_err();
    assert!(err.to_string().contains("it is an array"), "{err}");

    // One bad key spoils the file: nothing of it is written.
    let bad_key = write_file(dir.path(), "bad-key.json", r#"{"a": "1", "": "2"}"#);
    let err = kv.seed_from_json("ns", &bad_key).unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert!(!kv.exists("ns", "a").unwrap());

    let missing = dir.path().join("missing.json");
    let err = kv.seed_from_json("ns", &missing).unwrap_err();
    assert!(matches!(err, Error::ReadFile { .. }), "{err}");
    assert!(err.to_string().contains("missing.json"), "{err}");
}

#[test]
fn bulk_writes_are_all_or_nothing_and_count_what_they_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let kv = open(dir.path());
    kv.set("ns", "a", b"old").unwrap();
    let entries = vec![
        ("a".to_owned(), b"new".to_vec()),
        ("b".to_owned(), b"2".to_vec()),
    ];
    assert_eq!(kv.write_entries("ns", &entries, Existing::Keep).unwrap(), 1);
    assert_eq!(kv.get("ns", "a").unwrap().unwrap(), b"old");
    assert_eq!(
        kv.write_entries("ns", &entries, Existing::Overwrite)
            .unwrap(),
        2
    );
    assert_eq!(kv.get("ns", "a").unwrap().unwrap(), b"new");

    let too_big = vec![
        ("c".to_owned(), b"3".to_vec()),
        ("d".to_owned(), vec![0; MAX_VALUE_BYTES + 1]),
    ];
    let err = kv
        .write_entries("ns", &too_big, Existing::Overwrite)
        .unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err}");
    assert!(!kv.exists("ns", "c").unwrap());
}

#[test]
fn concurrent_readers_and_writers_see_whole_values() {
    let dir = tempfile::tempdir().unwrap();
    let kv = std::sync::Arc::new(open(dir.path()));
    kv.set("ns", "k", &[0u8; 4096]).unwrap();
    let writers: Vec<_> = (1..=4u8)
        .map(|n| {
            let kv = kv.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    kv.set("ns", "k", &[n; 4096]).unwrap();
                }
            })
        })
        .collect();
    for _ in 0..200 {
        let value = kv.get("ns", "k").unwrap().unwrap();
        assert!(value.iter().all(|b| *b == value[0]), "a torn value");
    }
    for w in writers {
        w.join().unwrap();
    }
}

/// The read cache never answers with a value older than a write that returned, nor older
/// than one the same reader read before: a reader that saw a writer's count after `set`
/// returned must read at least that value, while other threads keep the key cached.
#[test]
fn reads_after_a_write_returned_see_it_despite_the_cache() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let kv = Arc::new(open(dir.path()));
    let done = Arc::new(AtomicU64::new(0));
    let read = |kv: &EmbeddedKv| -> u64 {
        kv.get("n", "k")
            .unwrap()
            .map_or(0, |v| u64::from_le_bytes(v.try_into().unwrap()))
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (kv, done) = (kv.clone(), done.clone());
            std::thread::spawn(move || {
                let (mut reads, mut last) = (0u64, 0u64);
                loop {
                    let returned = done.load(Ordering::SeqCst);
                    let seen = read(&kv);
                    assert!(
                        seen >= returned,
                        "read {seen} after the write of {returned} returned"
                    );
                    // Nor does a reader ever go back to an older value.
                    assert!(seen >= last, "read {seen} after reading {last}");
                    last = seen;
                    reads += 1;
                    if returned == 200 {
                        return reads;
                    }
                }
            })
        })
        .collect();
    for n in 1..=200u64 {
        kv.set("n", "k", &n.to_le_bytes()).unwrap();
        done.store(n, Ordering::SeqCst);
        assert_eq!(read(&kv), n);
    }
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    // Absent keys are cached too, and a write makes them present.
    assert_eq!(kv.get("n", "other").unwrap(), None);
    kv.write_entries("n", &[("other".into(), b"x".to_vec())], Existing::Overwrite)
        .unwrap();
    assert_eq!(kv.get("n", "other").unwrap().unwrap(), b"x");
    kv.delete("n", "other").unwrap();
    assert_eq!(kv.get("n", "other").unwrap(), None);
}
