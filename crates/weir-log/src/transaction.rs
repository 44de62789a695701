//! Transactions, group commits and the conditions an append can carry.

use bytes::Bytes;

use crate::Record;

/// A consumer group's position in one partition, to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupCommit {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    /// The next offset the group has to process.
    pub next_offset: u64,
    /// The committer's ownership generation, from [`crate::EventLog::claim`]; the commit
    /// is refused ([`crate::ErrorKind::Fenced`]) once a newer generation was claimed. `0`
    /// is a committer that never claimed: it is fenced by any claim.
    pub generation: u64,
}

impl GroupCommit {
    /// Refuses a transaction with this commit, before it writes anything, when the
    /// group's `current` generation is newer than the committer's.
    pub fn check_owner(&self, current: u64) -> crate::Result<()> {
        if self.generation < current {
            return Err(crate::Error::new(
                crate::ErrorKind::Fenced,
                format!(
                    "group \"{}\" has a newer owner of partition {} of topic \"{}\" (generation {current}, this transaction's is {}); this owner must stop: nothing was written",
                    self.group, self.partition, self.topic, self.generation
                ),
            )
            .with_code("fenced"));
        }
        Ok(())
    }
}

/// Outputs and an offset commit that become durable together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    /// Who writes. A producer runs one transaction at a time; names are like
    /// "pipeline/erp-to-crm/erp.sales-orders/3". Any UTF-8 up to 255 bytes.
    pub producer: String,
    /// Records to append, by topic; partitioned as `append` does.
    pub appends: Vec<(String, Vec<Record>)>,
    pub commit: Option<GroupCommit>,
}

/// A condition an append must meet, checked against the partition it goes to; when it
/// does not hold, nothing is written and the call fails with
/// [`crate::ErrorKind::Conflict`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Expect {
    /// No condition.
    #[default]
    Any,
    /// The partition's end offset (the offset the first record would get) is this.
    End(u64),
    /// The last record with this key in the partition has this offset (`None`: there is
    /// none).
    KeyLast { key: Bytes, offset: Option<u64> },
}
