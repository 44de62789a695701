//! Consumer groups of live subscribers: the members of a group share the partitions of
//! its topic, each partition read by exactly one member at a time, and the group's
//! position survives members coming and going and the node restarting.
//!
//! **Architecture Invariant:** a group's position in each partition lives in one place,
//! [`GroupState::positions`], changed only under the group's lock by the member that owns
//! the partition and only from `p` to `p + 1` (the event handed to its connection is the
//! next one). A member that loses a partition in a rebalance hands over nothing in
//! flight: events it had read ahead are dropped and the new owner starts at the shared
//! position, so within the node no event is delivered twice or skipped by a group.
//! Positions are committed to the log every second and when a member leaves; a crash
//! between commits replays at most that second (at-least-once).

mod members;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

pub use members::{GroupPartitionStatus, GroupStatus};

use tokio::sync::watch;

/// Which member reads which partition: partition `p` goes to the `p % n`th member in id
/// order, so assignments are balanced and the same for the same membership.
pub fn assign(partitions: u32, members: &[u64]) -> BTreeMap<u64, Vec<u32>> {
    let mut sorted = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: BTreeMap<u64, Vec<u32>> = sorted.iter().map(|m| (*m, Vec::new())).collect();
    if sorted.is_empty() {
        return out;
    }
    for p in 0..partitions {
        let member = sorted[p as usize % sorted.len()];
        out.entry(member).or_default().push(p);
    }
    out
}

/// Who uses a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Owner {
    /// A pipeline of the app; nobody else may join or reset it.
    Pipeline(String),
    /// Live subscribers of `topic`.
    Members { topic: String },
}

pub(crate) struct GroupState {
    pub(crate) owner: Owner,
    pub(crate) partitions: u32,
    /// Member id → the partitions it owns and how it learns of changes.
    members: BTreeMap<u64, Member>,
    /// Next offset per partition: the group's position.
    pub(crate) positions: BTreeMap<u32, u64>,
    /// Positions changed since the last commit.
    pub(crate) dirty: bool,
}

struct Member {
    partitions: Vec<u32>,
    changed: watch::Sender<Vec<u32>>,
}

impl GroupState {
    fn rebalance(&mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for (id, partitions) in assign(self.partitions, &ids) {
            if let Some(member) = self.members.get_mut(&id)
                && member.partitions != partitions
            {
                member.partitions = partitions.clone();
                let _ = member.changed.send(partitions);
            }
        }
    }

    pub(crate) fn owns(&self, member: u64, partition: u32) -> bool {
        self.members
            .get(&member)
            .is_some_and(|m| m.partitions.contains(&partition))
    }

    pub(crate) fn is_active(&self) -> bool {
        matches!(self.owner, Owner::Pipeline(_)) || !self.members.is_empty()
    }
}

/// Every active group of the node.
pub(crate) struct GroupRegistry {
    groups: Mutex<BTreeMap<String, Arc<Mutex<GroupState>>>>,
    next_member: std::sync::atomic::AtomicU64,
    /// Most groups made by clients (not pipelines) active at once.
    client_limit: usize,
}

impl Default for GroupRegistry {
    fn default() -> GroupRegistry {
        GroupRegistry::with_limit(usize::MAX)
    }
}

/// A new member: its id, its group, and the channel that tells it its partitions.
pub(crate) type Joined = (u64, Arc<Mutex<GroupState>>, watch::Receiver<Vec<u32>>);

/// Why a group cannot be joined or reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Busy {
    Pipeline(String),
    OtherTopic(String),
    Members(usize),
    /// As many client groups as allowed are active.
    TooMany(usize),
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::Pipeline(p) => write!(
                f,
                "pipeline {p:?} consumes with it; pick another group name"
            ),
            Busy::OtherTopic(t) => write!(
                f,
                "its members follow topic {t:?}; use another group for this topic"
            ),
            Busy::Members(n) => write!(f, "{n} live member(s) consume with it; stop them first"),
            Busy::TooMany(n) => write!(f, "{n} client groups are active, the most allowed"),
        }
    }
}

impl GroupRegistry {
    pub(crate) fn with_limit(client_limit: usize) -> GroupRegistry {
        GroupRegistry {
            groups: Mutex::default(),
            next_member: std::sync::atomic::AtomicU64::new(0),
            client_limit,
        }
    }

    /// Every group of live subscribers with its topic.
    pub(crate) fn member_groups(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|(name, state)| {
                match &state.lock().unwrap_or_else(PoisonError::into_inner).owner {
                    Owner::Members { topic } => Some((name.clone(), topic.clone())),
                    Owner::Pipeline(_) => None,
                }
            })
            .collect()
    }

    pub(crate) fn claim_for_pipeline(&self, group: &str, pipeline: &str) {
        self.lock().insert(
            group.to_owned(),
            Arc::new(Mutex::new(GroupState {
                owner: Owner::Pipeline(pipeline.to_owned()),
                partitions: 0,
                members: BTreeMap::new(),
                positions: BTreeMap::new(),
                dirty: false,
            })),
        );
    }

    /// Join `group` as a subscriber of `topic`. `positions` gives the starting positions
    /// if the group is not active yet. Returns the member id, the group, and the
    /// member's assignment channel.
    pub(crate) fn join(
        &self,
        group: &str,
        topic: &str,
        partitions: u32,
        positions: impl FnOnce() -> BTreeMap<u32, u64>,
    ) -> Result<Joined, Busy> {
        let mut groups = self.lock();
        let state = match groups.get(group) {
            Some(state) => state.clone(),
            None => {
                let clients = groups
                    .values()
                    .filter(|g| {
                        matches!(
                            g.lock().unwrap_or_else(PoisonError::into_inner).owner,
                            Owner::Members { .. }
                        )
                    })
                    .count();
                if clients >= self.client_limit {
                    return Err(Busy::TooMany(clients));
                }
                let state = Arc::new(Mutex::new(GroupState {
                    owner: Owner::Members {
                        topic: topic.to_owned(),
                    },
                    partitions,
                    members: BTreeMap::new(),
                    positions: positions(),
                    dirty: false,
                }));
                groups.insert(group.to_owned(), state.clone());
                state
            }
        };
        let id = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = watch::channel(Vec::new());
        {
            let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
            match &g.owner {
                Owner::Pipeline(p) => return Err(Busy::Pipeline(p.clone())),
                Owner::Members { topic: t } if t != topic => {
                    return Err(Busy::OtherTopic(t.clone()));
                }
                Owner::Members { .. } => {}
            }
            g.members.insert(
                id,
                Member {
                    partitions: Vec::new(),
                    changed: tx,
                },
            );
            g.rebalance();
        }
        Ok((id, state, rx))
    }

    /// Leave a group; the last member to leave removes it. Returns the positions to
    /// commit.
    pub(crate) fn leave(&self, group: &str, member: u64) -> Option<BTreeMap<u32, u64>> {
        let mut groups = self.lock();
        let state = groups.get(group)?.clone();
        let mut g = state.lock().unwrap_or_else(PoisonError::into_inner);
        g.members.remove(&member);
        g.rebalance();
        let positions = g.positions.clone();
        g.dirty = false;
        if !g.is_active() {
            groups.remove(group);
        }
        Some(positions)
    }

    /// Whether the group can be reset now.
    pub(crate) fn check_idle(&self, group: &str) -> Result<(), Busy> {
        let groups = self.lock();
        let Some(state) = groups.get(group) else {
            return Ok(());
        };
        let g = state.lock().unwrap_or_else(PoisonError::into_inner);
        match &g.owner {
            Owner::Pipeline(p) => Err(Busy::Pipeline(p.clone())),
            Owner::Members { .. } if !g.members.is_empty() => Err(Busy::Members(g.members.len())),
            Owner::Members { .. } => Ok(()),
        }
    }

    pub(crate) fn members(&self, group: &str) -> usize {
        self.lock().get(group).map_or(0, |g| {
            g.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .members
                .len()
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Mutex<GroupState>>>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
