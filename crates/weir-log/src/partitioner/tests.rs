use super::*;

#[test]
fn murmur2_matches_kafka() {
    // Values of Kafka's Utils.murmur2, as Java ints.
    let cases: [(&str, i32); 5] = [
        ("1", -1_993_445_489),
        ("12", 126_087_238),
        ("123", -267_702_483),
        ("1234", -1_614_185_708),
        ("12345", -1_188_365_604),
    ];
    for (key, expected) in cases {
        assert_eq!(murmur2(key.as_bytes()) as i32, expected, "key {key:?}");
    }
}

#[test]
fn partition_is_positive_hash_modulo_count() {
    // -1993445489 & 0x7fffffff = 154038159
    assert_eq!(partition_for_key(b"1", 1_000_000_000), 154_038_159);
    assert_eq!(partition_for_key(b"1", 7), 154_038_159 % 7);
    assert_eq!(partition_for_key(b"anything", 1), 0);
}

#[test]
fn the_stable_hash_never_changes() {
    // Pinned: the embedded log's journal stores it (computed independently, in Python).
    assert_eq!(
        super::stable_hash(*b"pipeline/p/in/0"),
        0xe741_7b09_6533_b4a8
    );
}
