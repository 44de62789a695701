use std::fs;

use super::*;

fn open(dir: &Path) -> Partition {
    Partition::open("t", 0, dir, OpenMode::Create).expect("open partition")
}

#[test]
fn recover_mode_insists_on_an_existing_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Partition::open("t", 0, dir.path(), OpenMode::Recover)
        .err()
        .expect("missing file is an error");
    assert!(matches!(err, Error::Io { .. }), "{err}");
}

#[test]
fn read_skips_into_the_middle_of_a_batch_and_stops_at_max() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    let records: Vec<_> = (0..5).map(|i| Record::new(format!("v{i}"))).collect();
    partition.append_batch(&records, 1).expect("append");
    partition.append_batch(&records, 1).expect("append");

    let got = partition.read(3, 4).expect("read");
    let offsets: Vec<_> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [3, 4, 5, 6]);
    assert_eq!(got[0].value, Bytes::from("v3"));
    assert_eq!(got[2].value, Bytes::from("v0"));
    assert!(partition.read(10, 4).expect("read at end").is_empty());
    assert!(partition.read(0, 0).expect("read nothing").is_empty());
    assert_eq!(partition.read(0, usize::MAX).expect("read all").len(), 10);
}

#[test]
fn failed_write_poisons_and_leaves_earlier_batches_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition
        .append_batch(&[Record::new("kept")], 1)
        .expect("append");
    let len = fs::metadata(&partition.path).expect("metadata").len();

    // A read-only handle makes the next write fail like a broken disk would.
    partition.lock_writer().expect("writer").file = File::open(&partition.path).expect("reopen");
    let err = partition
        .append_batch(&[Record::new("lost")], 1)
        .expect_err("write must fail");
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("refuses writes"), "{err}");

    let err = partition
        .append_batch(&[Record::new("refused")], 1)
        .expect_err("partition is poisoned");
    assert!(
        matches!(&err, Error::Poisoned { topic, partition: 0 } if topic == "t"),
        "{err}"
    );
    assert!(err.to_string().contains("restart the node"), "{err}");

    assert_eq!(partition.end_offset(), 1);
    assert_eq!(partition.read(0, 10).expect("read").len(), 1);
    assert_eq!(fs::metadata(&partition.path).expect("metadata").len(), len);
}

#[test]
fn corruption_found_by_a_read_is_an_error_not_a_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let partition = open(dir.path());
    partition
        .append_batch(&[Record::new("value")], 1)
        .expect("append");

    let mut bytes = fs::read(&partition.path).expect("read file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&partition.path, bytes).expect("write file");

    let err = partition.read(0, 1).expect_err("checksum must fail");
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
