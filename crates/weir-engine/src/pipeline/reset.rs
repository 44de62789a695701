//! Resets of a running pipeline's group, applied by each partition task between batches.

use std::sync::PoisonError;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Pipeline;
use crate::consumer::GroupTransactions;
use crate::{Result, SharedLog, StartFrom};

impl Pipeline {
    /// Ask each partition task of `topic` (or only those of `partitions`) to move the
    /// group to `to`, and wait until they did (each between two batches, through its own
    /// transaction). Returns the new positions.
    pub(crate) async fn reset(
        &self,
        log: &SharedLog,
        topic: &str,
        partitions: Option<&[u32]>,
        to: StartFrom,
        cancel: &CancellationToken,
    ) -> Result<Vec<weir_log::RecordPosition>> {
        let info = crate::consumer::topic_info(log, topic).await?;
        let targets: Vec<u32> = match partitions {
            Some(ps) => {
                if let Some(p) = ps.iter().find(|p| **p >= info.partitions) {
                    return Err(
                        weir_log::Error::unknown_partition(topic, *p, info.partitions).into(),
                    );
                }
                let mut ps = ps.to_vec();
                ps.sort_unstable();
                ps.dedup();
                ps
            }
            None => (0..info.partitions).collect(),
        };
        // On a fleet a partition's reset is applied by the task that runs it: the gateway
        // sends each member the partitions it runs (`owners_elsewhere`); one that reaches
        // a node not running a partition (the views moved meanwhile) is refused.
        let (units, names) = self
            .units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if units.is_fleet() {
            let running = self
                .positions
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(p) = targets
                .iter()
                .find(|p| !running.contains_key(&(topic.to_owned(), **p)))
            {
                let owner = units
                    .owners(&names)
                    .remove(&self.unit(topic, *p))
                    .unwrap_or_else(|| "no member yet".into());
                return Err(crate::Error::GroupBusy {
                    group: self.group.clone(),
                    reason: format!(
                        "on a fleet, partition {p} of {topic:?} is run by member {owner}, not this node: reset each partition on the member running it (weir status shows the owners)"
                    ),
                });
            }
        }
        {
            let mut resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
            for p in &targets {
                resets.insert((topic.to_owned(), *p), to);
            }
        }
        self.reset_requested.notify_waiters();
        loop {
            let applied = self.reset_applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            let pending = {
                let resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
                targets
                    .iter()
                    .any(|p| resets.contains_key(&(topic.to_owned(), *p)))
            };
            if !pending {
                break;
            }
            // A task waiting for events wakes on `reset_requested`; a busy one applies the
            // reset after its batch.
            self.reset_requested.notify_waiters();
            tokio::select! {
                _ = cancel.cancelled() => return Err(crate::Error::ShuttingDown),
                _ = applied => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
        let applied = self.reset_to.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(targets
            .into_iter()
            .map(|p| weir_log::RecordPosition {
                partition: p,
                offset: applied.get(&(topic.to_owned(), p)).copied().unwrap_or(0),
            })
            .collect())
    }

    /// On a fleet, the partitions of `topic` (all, or `partitions`) that this node's view
    /// gives to other members, by member id; empty without a fleet.
    pub(crate) fn owners_elsewhere(
        &self,
        topic: &str,
        partitions: &[u32],
    ) -> std::collections::BTreeMap<String, Vec<u32>> {
        let (units, names) = self
            .units
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let (Some(fleet), owners) = (&units.fleet, units.owners(&names)) else {
            return Default::default();
        };
        let mut elsewhere: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        for p in partitions {
            if let Some(owner) = owners.get(&self.unit(topic, *p))
                && *owner != fleet.me.id
            {
                elsewhere.entry(owner.clone()).or_default().push(*p);
            }
        }
        elsewhere
    }

    /// Apply a reset asked for this partition, if any: returns the new next offset.
    pub(super) async fn take_reset(
        &self,
        log: &SharedLog,
        commits: &GroupTransactions,
        cancel: &CancellationToken,
    ) -> Result<Option<u64>> {
        let (topic, partition) = (commits.topic.as_str(), commits.partition);
        let key = (topic.to_owned(), partition);
        let to = self
            .resets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .copied();
        let Some(to) = to else {
            return Ok(None);
        };
        let next = crate::consumer::resolve_start(log, topic, partition, to).await?;
        self.commit(log, commits, Vec::new(), next, cancel).await?;
        {
            // Record the result first, then take the request away, unless another reset
            // of this partition came in meanwhile: that one is applied next round.
            self.reset_to
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), next);
            let mut resets = self.resets.lock().unwrap_or_else(PoisonError::into_inner);
            if resets.get(&key) == Some(&to) {
                resets.remove(&key);
            }
        }
        self.reset_applied.notify_waiters();
        tracing::info!(pipeline = %self.name, group = %self.group, topic, partition, next, "pipeline group reset");
        Ok(Some(next))
    }

    /// Whether a reset of this partition waits to be applied.
    pub(super) fn reset_pending(&self, topic: &str, partition: u32) -> bool {
        self.resets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&(topic.to_owned(), partition))
    }
}
