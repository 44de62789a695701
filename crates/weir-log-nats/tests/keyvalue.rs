//! The key-value store on NATS KV against the store's contract, shared by two nodes'
//! stores, and across a server crash.

use std::sync::Arc;

use weir_kv::{Error, KeyValue};
use weir_log_nats::{NatsKv, NatsOptions};
use weir_test_support::nats::NatsServer;

async fn open(server: &NatsServer) -> Arc<NatsKv> {
    let options =
        NatsOptions::from_url(&format!("{}?sync=always&timeout_ms=3000", server.url())).unwrap();
    Arc::new(NatsKv::open(&options).await.expect("open NATS KV"))
}

/// Runs `f` on a blocking thread, as the engine calls the store.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_keeps_its_contract_and_is_shared() {
    let mut server = NatsServer::start(true);
    let kv = open(&server).await;
    let other = open(&server).await;
    let (a, b) = (kv.clone(), other.clone());
    blocking(move || {
        assert_eq!(a.get("customers", "CUST-1").unwrap(), None);
        a.set("customers", "CUST-1", b"acme").unwrap();
        assert_eq!(a.get("customers", "CUST-1").unwrap().unwrap(), b"acme");
        assert!(a.exists("customers", "CUST-1").unwrap());
        // Namespaces are separate; another node's store sees the write.
        assert_eq!(a.get("suppliers", "CUST-1").unwrap(), None);
        assert_eq!(b.get("customers", "CUST-1").unwrap().unwrap(), b"acme");
        // Empty values, keys of any UTF-8.
        a.set("customers", "ümlaut key/with.dots and spaces", b"")
            .unwrap();
        assert_eq!(
            b.get("customers", "ümlaut key/with.dots and spaces")
                .unwrap()
                .unwrap(),
            b""
        );
        b.delete("customers", "ümlaut key/with.dots and spaces")
            .unwrap();
        assert!(
            !a.exists("customers", "ümlaut key/with.dots and spaces")
                .unwrap()
        );
        a.delete("never", "x").unwrap();
        // Keys page in key order.
        for i in (0..7).rev() {
            a.set("paged", &format!("k{i}"), b"v").unwrap();
        }
        let first = a.list_keys("paged", None, 3).unwrap();
        assert_eq!(first.keys, ["k0", "k1", "k2"]);
        let second = a.list_keys("paged", first.cursor, 3).unwrap();
        assert_eq!(second.keys, ["k3", "k4", "k5"]);
        let last = a.list_keys("paged", second.cursor, 3).unwrap();
        assert_eq!(
            (last.keys.as_slice(), last.cursor),
            (&["k6".to_owned()][..], None)
        );
        // Broken input is refused before anything is written.
        assert!(matches!(
            a.set("customers", "", b"x"),
            Err(Error::InvalidKey { .. })
        ));
        assert!(matches!(
            a.set("bad ns", "k", b"x"),
            Err(Error::InvalidNamespace { .. })
        ));
        assert!(matches!(
            a.set("customers", "big", &vec![0u8; weir_kv::MAX_VALUE_BYTES + 1]),
            Err(Error::ValueTooLarge { .. })
        ));
        // Seeding keeps what is there.
        let written = a
            .load_json(
                "customers",
                "test",
                br#"{"CUST-1": "changed", "CUST-2": {"n": 2}}"#,
            )
            .unwrap();
        assert_eq!(written, 2);
        assert_eq!(
            b.get("customers", "CUST-2").unwrap().unwrap(),
            br#"{"n":2}"#
        );
    })
    .await;

    // Acknowledged writes survive a crash of the server (sync_interval: always).
    server.restart();
    let kv = open(&server).await;
    blocking(move || {
        assert_eq!(kv.get("customers", "CUST-1").unwrap().unwrap(), b"changed");
        assert_eq!(kv.list_keys("paged", None, 100).unwrap().keys.len(), 7);
    })
    .await;

    // A server that is gone: unavailable, not a wrong answer.
    server.kill();
    let gone = other.clone();
    let err = blocking(move || gone.get("customers", "CUST-1"))
        .await
        .expect_err("no server");
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
}
