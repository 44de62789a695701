//! The conformance suite of the log family: tests written once against the `weir-log`
//! interface, that every backend runs, each expecting what the backend's declared
//! [`weir_log::Guarantees`] promise and no more (a backend whose transactions are
//! at-least-once may store a retried transaction twice; one without native
//! `Expect::KeyLast` refuses it).
//!
//! A backend's integration tests implement [`Harness`] (how to open its log on storage
//! that survives a reopen, and a topic spec under which retention deletes old records)
//! and call [`conformance_tests!`], which makes one test per check:
//!
//! ```ignore
//! weir_log_conformance::conformance_tests!(crate::embedded_harness());
//! ```
//!
//! - [`basics`]: topics, appends, keys, stateless reads, offsets by time.
//! - [`reader`]: cursor readers read, wait, seek and report what retention skipped.
//! - [`fencing`]: claims and fenced group commits, across a reopen.
//! - [`conditional`]: `Expect` conditions, also under racing appends.
//! - [`transactions`]: outputs and commit together; a transaction sent again.
//! - [`model`]: random operations against an in-memory model, with reopenings.

pub mod basics;
pub mod conditional;
pub mod fencing;
pub mod model;
pub mod reader;
pub mod transactions;

use async_trait::async_trait;
use weir_log::{Record, SharedLog, StoredRecord, TopicSpec};

/// How the suite reaches one backend.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the backend's log on this harness's storage, creating it the first time.
    /// The suite drops the log it had before it calls this again, and expects to find
    /// everything that was acknowledged (a reopen).
    async fn open(&self) -> SharedLog;
    /// A spec with `partitions` partitions under which `enforce_retention` deletes the
    /// oldest records of a partition that holds more than a few KiB.
    fn retention_spec(&self, partitions: u32) -> TopicSpec;
}

/// Makes one `#[tokio::test]` per check of the suite, each on a fresh harness from
/// `$harness` (an expression that builds one).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@tests $harness;
            basics::topics_are_created_listed_and_updated,
            basics::appends_are_read_back_in_order_with_keys_together,
            basics::an_atomic_append_stores_every_record_where_it_says,
            basics::invalid_requests_are_refused_with_their_kind,
            basics::offsets_by_time_find_the_first_record_at_or_after,
            reader::a_reader_reads_waits_and_seeks,
            reader::a_reader_below_the_start_reports_what_retention_skipped,
            fencing::a_claim_fences_older_owners_across_a_reopen,
            conditional::an_expected_end_admits_one_of_racing_appends,
            conditional::key_conditions_are_checked_or_refused_as_declared,
            transactions::a_transaction_stores_outputs_and_commit_together,
            transactions::a_transaction_sent_again_is_stored_as_declared,
            transactions::a_fenced_transaction_writes_nothing,
            transactions::a_transactions_records_keep_their_order,
            model::the_log_matches_a_model_across_reopenings,
        );
    };
    (@tests $harness:expr; $($module:ident :: $check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $harness;
                $crate::$module::$check(&harness).await;
            }
        )*
    };
}

/// `n` records with values `"{prefix}-{i}"`, keyed `"k{i % keys}"` (no key if `keys` is 0).
pub fn records(prefix: &str, n: usize, keys: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let record = Record::new(format!("{prefix}-{i}"));
            if keys == 0 {
                record
            } else {
                record.with_key(format!("k{}", i % keys))
            }
        })
        .collect()
}

/// Every record of a partition, read with a cursor from its start.
pub async fn read_all(log: &SharedLog, topic: &str, partition: u32) -> Vec<StoredRecord> {
    let start = log.offsets(topic, partition).await.expect("offsets").start;
    let mut reader = log.reader(topic, partition, start).await.expect("reader");
    let mut all = Vec::new();
    loop {
        let read = reader.read(1000).await.expect("read");
        if read.records.is_empty() {
            return all;
        }
        all.extend(read.records);
    }
}

/// The values of records, as text.
pub fn values(records: &[StoredRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect()
}
