//! The in-memory bound: which entries go, which stay.

use super::CompiledSet;

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

#[test]
fn candidates_are_evicted_least_recently_used_first() {
    let mut set = CompiledSet::new(3);
    for n in 1..=3 {
        assert!(set.insert(key(n), n, false).is_none());
    }
    // 1 is used again, so 2 is now the least recently used.
    assert_eq!(set.get(&key(1), false).map(|(v, _)| v), Some(1));
    set.insert(key(4), 4, false);
    assert_eq!(set.len(), 3);
    assert!(!set.contains(&key(2)));
    assert!(set.contains(&key(1)) && set.contains(&key(3)) && set.contains(&key(4)));
    assert_eq!(set.evicted(), 1);
}

#[test]
fn active_entries_stay_and_the_set_grows_past_the_limit_only_for_them() {
    let mut set = CompiledSet::new(2);
    let a = set.insert(key(1), 1, true).unwrap();
    let b = set.insert(key(2), 2, true).unwrap();
    // Only active entries and the one being added: admitted over the limit.
    set.insert(key(3), 3, false);
    assert_eq!(set.len(), 3);
    assert_eq!(set.active(), 2);
    // The next candidate evicts the earlier candidate, not an active entry.
    set.insert(key(4), 4, false);
    assert_eq!(set.len(), 3);
    assert!(!set.contains(&key(3)));
    assert!(set.contains(&key(1)) && set.contains(&key(2)));

    // Once its last active holder is gone an entry is evictable like a candidate.
    let a2 = set.get(&key(1), true).unwrap().1.unwrap();
    drop(a);
    assert_eq!(set.active(), 2, "a second holder keeps it active");
    drop(a2);
    assert_eq!(set.active(), 1);
    set.insert(key(5), 5, false);
    assert!(!set.contains(&key(1)));
    assert!(set.contains(&key(2)));
    drop(b);
}

#[test]
fn loading_a_candidate_again_as_active_pins_it() {
    let mut set = CompiledSet::new(1);
    set.insert(key(1), 1, false);
    let (value, pin) = set.get(&key(1), true).unwrap();
    assert_eq!(value, 1);
    let pin = pin.unwrap();
    set.insert(key(2), 2, false);
    assert!(set.contains(&key(1)), "pinned");
    assert_eq!(set.len(), 2);
    drop(pin);
    set.insert(key(3), 3, false);
    assert_eq!(set.len(), 1);
    assert!(set.contains(&key(3)));
}
