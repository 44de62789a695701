//! The replay overlay against an in-memory base store.

use std::sync::Arc;

use weir_wasm::{KeyValueStore, MemoryKeyValue};

use super::OverlayKeyValue;

fn base() -> Arc<MemoryKeyValue> {
    let base = Arc::new(MemoryKeyValue::new());
    base.set("customers", "a", b"1").unwrap();
    base.set("customers", "b", b"2").unwrap();
    base.set("other", "x", b"9").unwrap();
    base
}

#[test]
fn reads_go_through_and_writes_stay_in_the_overlay() {
    let base = base();
    let overlay = OverlayKeyValue::new(base.clone());
    assert_eq!(overlay.get("customers", "a").unwrap().unwrap(), b"1");
    assert!(overlay.exists("customers", "b").unwrap());

    overlay.set("customers", "a", b"changed").unwrap();
    overlay.set("customers", "c", b"3").unwrap();
    overlay.delete("customers", "b").unwrap();
    assert_eq!(overlay.get("customers", "a").unwrap().unwrap(), b"changed");
    assert_eq!(overlay.get("customers", "c").unwrap().unwrap(), b"3");
    assert_eq!(overlay.get("customers", "b").unwrap(), None);
    assert!(!overlay.exists("customers", "b").unwrap());

    // The base store is untouched.
    assert_eq!(base.get("customers", "a").unwrap().unwrap(), b"1");
    assert_eq!(base.get("customers", "b").unwrap().unwrap(), b"2");
    assert_eq!(base.get("customers", "c").unwrap(), None);
}

#[test]
fn key_listings_merge_the_overlay_into_the_base() {
    let overlay = OverlayKeyValue::new(base());
    assert_eq!(
        overlay.list_keys("customers", None).unwrap(),
        (vec!["a".to_owned(), "b".to_owned()], None)
    );
    overlay.delete("customers", "a").unwrap();
    overlay.set("customers", "c", b"3").unwrap();
    assert_eq!(
        overlay.list_keys("customers", None).unwrap(),
        (vec!["b".to_owned(), "c".to_owned()], None)
    );
    assert_eq!(
        overlay.list_keys("other", None).unwrap(),
        (vec!["x".to_owned()], None)
    );

    // Pages of more keys than one listing returns.
    for n in 0..1500 {
        overlay.set("many", &format!("k{n:04}"), b"v").unwrap();
    }
    let (first, next) = overlay.list_keys("many", None).unwrap();
    assert_eq!(first.len(), super::GUEST_LIST_PAGE);
    let (rest, end) = overlay.list_keys("many", next).unwrap();
    assert_eq!(rest.len(), 500);
    assert_eq!(end, None);
    assert_eq!(rest[0], format!("k{:04}", super::GUEST_LIST_PAGE));
}
