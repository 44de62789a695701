//! Consumer groups of live subscribers as the node runs them: joining, each member's
//! driver, resets and status. The shared state and the assignment are in the parent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use weir_log::{GroupCommit, RecordPosition};

use crate::consumer::PartitionConsumer;
use crate::groups::Busy;
use crate::subscribe::{follow_partition, send_unless_cancelled};
use crate::{Error, LoggedEvent, Node, Result, SharedLog, StartFrom, groups};

/// A consumer group's position in one topic.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    pub group: String,
    pub topic: String,
    /// Live subscribers in the group now.
    pub members: usize,
    pub partitions: Vec<GroupPartitionStatus>,
}

#[derive(Debug, Clone)]
pub struct GroupPartitionStatus {
    pub partition: u32,
    /// The next offset the group will read; none if it never committed here.
    pub committed: Option<u64>,
    pub end_offset: u64,
    pub lag: u64,
}

impl Node {
    /// Follow a topic as a member of consumer group `group`: the group's members share
    /// the topic's partitions, and the group's position is kept across members and
    /// restarts. `from` applies only to partitions the group has no position in yet.
    /// Fails with [`Error::GroupBusy`] if a pipeline owns the group or it follows
    /// another topic.
    pub async fn subscribe_group(
        &self,
        group: &str,
        topic: &str,
        from: StartFrom,
    ) -> Result<impl Stream<Item = Result<LoggedEvent>> + Send + use<>> {
        let info = self.topic_info(topic).await?;
        // Validates the group name too.
        let mut positions = BTreeMap::new();
        for partition in 0..info.partitions {
            let position = match self.log.committed_offset(group, topic, partition).await? {
                Some(offset) => offset,
                None => self.resolve_start(topic, partition, from).await?,
            };
            positions.insert(partition, position);
        }
        let (member, state, assignment) = self
            .groups
            .join(group, topic, info.partitions, || positions)
            .map_err(|busy| match busy {
                Busy::TooMany(active) => Error::TooManyGroups { active },
                busy => Error::GroupBusy {
                    group: group.to_owned(),
                    reason: busy.to_string(),
                },
            })?;
        tracing::info!(group, topic, member, "group member joined");

        let (tx, rx) = mpsc::channel(256);
        let driver = GroupMemberDriver {
            log: self.log.clone(),
            registry: self.groups.clone(),
            group: group.to_owned(),
            topic: topic.to_owned(),
            member,
            state: state.clone(),
            cancel: self.cancel.clone(),
        };
        self.tasks.spawn(driver.run(assignment, tx));

        Ok(
            tokio_stream::wrappers::ReceiverStream::new(rx).filter_map(move |item| {
                let item = match item {
                    Ok(event) => {
                        let event: LoggedEvent = event;
                        let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
                        let position = g.positions.get(&event.partition).copied().unwrap_or(0);
                        // Only the partition's owner hands out events, and only the next one.
                        if g.owns(member, event.partition) && event.offset >= position {
                            g.positions.insert(event.partition, event.offset + 1);
                            g.dirty = true;
                            Some(Ok(event))
                        } else {
                            None
                        }
                    }
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(item)
            }),
        )
    }

    /// Move a consumer group's position in `topic` to `to`, in every partition. Refused
    /// while the group has live members or belongs to a pipeline.
    pub async fn reset_group(
        &self,
        group: &str,
        topic: &str,
        to: StartFrom,
    ) -> Result<Vec<RecordPosition>> {
        self.reset_group_partitions(group, topic, to, None).await
    }

    /// [`Node::reset_group`] in `partitions` of the topic only (all of them: none).
    pub async fn reset_group_partitions(
        &self,
        group: &str,
        topic: &str,
        to: StartFrom,
        partitions: Option<&[u32]>,
    ) -> Result<Vec<RecordPosition>> {
        if let Some(pipeline) = self.pipeline_of_group(group) {
            if !pipeline.sources().iter().any(|t| t == topic) {
                return Err(Error::GroupBusy {
                    group: group.to_owned(),
                    reason: format!(
                        "it is the group of pipeline {:?}, which does not read topic {topic:?}",
                        pipeline.name()
                    ),
                });
            }
            let positions = pipeline
                .reset(&self.log, topic, partitions, to, &self.cancel)
                .await?;
            tracing::info!(
                group,
                topic,
                ?to,
                pipeline = pipeline.name(),
                "pipeline group reset"
            );
            return Ok(positions);
        }
        self.groups
            .check_idle(group)
            .map_err(|busy| Error::GroupBusy {
                group: group.to_owned(),
                reason: busy.to_string(),
            })?;
        let info = self.topic_info(topic).await?;
        let targets: Vec<u32> = match partitions {
            Some(ps) => {
                if let Some(p) = ps.iter().find(|p| **p >= info.partitions) {
                    return Err(
                        weir_log::Error::unknown_partition(topic, *p, info.partitions).into(),
                    );
                }
                ps.to_vec()
            }
            None => (0..info.partitions).collect(),
        };
        let mut positions = Vec::new();
        for partition in targets {
            let offset = self.resolve_start(topic, partition, to).await?;
            positions.push(RecordPosition { partition, offset });
        }
        for p in &positions {
            self.log
                .commit_offset(GroupCommit {
                    group: group.to_owned(),
                    topic: topic.to_owned(),
                    partition: p.partition,
                    next_offset: p.offset,
                    generation: 0,
                })
                .await?;
        }
        tracing::info!(group, topic, ?to, "group reset");
        Ok(positions)
    }

    /// On a fleet, where a reset of pipeline group `group` in `topic` (all partitions, or
    /// `partitions`) is to be applied: the partitions this node's view gives other
    /// members, with those members; empty when this node runs them all, for a group that
    /// is no pipeline's, or without a fleet.
    pub async fn reset_elsewhere(
        &self,
        group: &str,
        topic: &str,
        partitions: Option<&[u32]>,
    ) -> Result<Vec<(weir_log::Member, Vec<u32>)>> {
        let (Some(pipeline), Some(fleet)) = (self.pipeline_of_group(group), &self.units.fleet)
        else {
            return Ok(Vec::new());
        };
        let all: Vec<u32> = match partitions {
            Some(ps) => ps.to_vec(),
            None => (0..self.topic_info(topic).await?.partitions).collect(),
        };
        let members = fleet.view().members;
        Ok(pipeline
            .owners_elsewhere(topic, &all)
            .into_iter()
            .filter_map(|(id, ps)| members.iter().find(|m| m.id == id).map(|m| (m.clone(), ps)))
            .collect())
    }

    /// A group's committed position and lag in each partition of `topic`.
    pub async fn group_status(&self, group: &str, topic: &str) -> Result<GroupStatus> {
        let info = self.topic_info(topic).await?;
        let mut partitions = Vec::new();
        for partition in 0..info.partitions {
            let committed = self.log.committed_offset(group, topic, partition).await?;
            let end = info.end_offsets[partition as usize];
            let lag = end.saturating_sub(committed.unwrap_or(0));
            crate::telemetry::record_lag(group, topic, partition, lag);
            partitions.push(GroupPartitionStatus {
                partition,
                committed,
                end_offset: end,
                lag,
            });
        }
        Ok(GroupStatus {
            group: group.to_owned(),
            topic: topic.to_owned(),
            members: self.groups.members(group),
            partitions,
        })
    }
}

/// Runs one group member: follows the partitions assigned to it, restarts on every
/// rebalance, commits the group's positions every second and when the member leaves.
struct GroupMemberDriver {
    log: SharedLog,
    registry: Arc<groups::GroupRegistry>,
    group: String,
    topic: String,
    member: u64,
    state: Arc<Mutex<groups::GroupState>>,
    cancel: CancellationToken,
}

impl GroupMemberDriver {
    async fn run(
        self,
        mut assignment: tokio::sync::watch::Receiver<Vec<u32>>,
        tx: mpsc::Sender<Result<LoggedEvent>>,
    ) {
        let mut commit_every = tokio::time::interval(std::time::Duration::from_secs(1));
        'assignments: loop {
            let partitions = assignment.borrow_and_update().clone();
            let followers = self.cancel.child_token();
            for partition in partitions {
                let start = {
                    let g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                    g.positions.get(&partition).copied().unwrap_or(0)
                };
                let name = format!("member {} of group {:?}", self.member, self.group);
                let consumer = match PartitionConsumer::open_at(
                    &self.log,
                    &self.topic,
                    partition,
                    name,
                    start,
                )
                .await
                {
                    Ok(consumer) => consumer,
                    Err(e) => {
                        send_unless_cancelled(&tx, Err(e), &self.cancel).await;
                        break 'assignments;
                    }
                };
                tokio::spawn(follow_partition(consumer, tx.clone(), followers.clone()));
            }
            loop {
                tokio::select! {
                    changed = assignment.changed() => {
                        followers.cancel();
                        if changed.is_err() {
                            break 'assignments;
                        }
                        continue 'assignments;
                    }
                    _ = tx.closed() => { followers.cancel(); break 'assignments; }
                    _ = self.cancel.cancelled() => break 'assignments,
                    _ = commit_every.tick() => self.commit_if_dirty().await,
                }
            }
        }
        // Commit before leaving, so a group with no members has its position on disk;
        // then again if another member moved it meanwhile.
        let before = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .positions
            .clone();
        self.commit(before.clone()).await;
        if let Some(after) = self.registry.leave(&self.group, self.member)
            && after != before
        {
            self.commit(after).await;
        }
        tracing::info!(group = %self.group, topic = %self.topic, member = self.member, "group member left");
    }

    async fn commit_if_dirty(&self) {
        let positions = {
            let mut g = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if !g.dirty {
                return;
            }
            g.dirty = false;
            g.positions.clone()
        };
        self.commit(positions).await;
    }

    async fn commit(&self, positions: BTreeMap<u32, u64>) {
        use weir_log::CommitTarget;
        // A live group's members are this node's; they share positions under the group's
        // lock (see `groups`) and commit without claiming.
        let target = weir_log::GroupTarget {
            log: self.log.clone(),
            group: self.group.clone(),
            generation: 0,
        };
        let mut result = Ok(());
        for (partition, offset) in positions {
            result = target.commit(&self.topic, partition, offset).await;
            if result.is_err() {
                break;
            }
        }
        if let Err(e) = result {
            tracing::error!(group = %self.group, topic = %self.topic, error = %e, "cannot commit the group's position; it will be retried");
            self.state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .dirty = true;
        }
    }
}
