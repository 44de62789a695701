//! The fleet: several nodes on one shared log, each unit of work run by one of them.
//!
//! On a backend that offers [`weir_log::Membership`] (NATS), each node heartbeats its
//! [`Member`] entry every [`HEARTBEAT`] and lists the live members each time: its
//! [`View`]. A *unit* is one partition of a pipeline's consumer group; the units of one
//! group are assigned over the view's members by rendezvous hashing with bounded loads
//! ([`View::assign`]): every node computes the same assignment from the same view, each
//! member's share of a group's units differs from another's by at most one (so a fleet's work
//! spreads evenly), and a join or a leave moves few units.
//!
//! **Architecture Invariant:** ownership is the log's claim, not the view. A node runs a
//! unit only while its own view makes it the owner ([`Units::acquire`]), and the task
//! claims the group's partition before it reads, so an older owner's commits are fenced
//! by the log whatever the timing of the views. A task whose unit its view no longer
//! gives it stops at its next batch boundary ([`Lease::released`]); a task that is fenced
//! waits for its view to change before it tries again, so two nodes whose views differ
//! for a heartbeat take a unit in turn at most once each. A node that takes a unit from a
//! member still alive waits [`GRACE`] first, so the old owner can finish the batch it is
//! on (at-least-once either way: a batch whose commit is fenced is handled again by the
//! new owner).
//!
//! Without a membership (the embedded log) there is no fleet: the node owns every unit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};
use weir_log::{Member, Membership};

/// How often a node says it is alive and reads who else is.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a node waits before it claims a unit whose owner is still alive.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// The live members as one node last read them, sorted by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub members: Vec<Member>,
}

impl View {
    /// The owner of each of `units` (one group's units, in the same order on every node):
    /// rendezvous hashing with bounded loads. Units are taken in order; each goes to the
    /// member with the highest score for it among those that may take one more (each
    /// takes `units / members`, and `units % members` of them one more). Empty when there
    /// are no members.
    pub fn assign<'a>(&'a self, units: &[String]) -> Vec<&'a Member> {
        if self.members.is_empty() {
            return Vec::new();
        }
        // Each member takes `floor` units, and `extra` of them one more, so loads differ
        // by at most one.
        let (floor, extra) = (
            units.len() / self.members.len(),
            units.len() % self.members.len(),
        );
        let mut load = vec![0usize; self.members.len()];
        let mut above_floor = 0;
        units
            .iter()
            .map(|unit| {
                let (index, _) = self
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| load[*i] < floor || (load[*i] == floor && above_floor < extra))
                    .max_by_key(|(_, m)| (score(&m.id, unit), &m.id))
                    .expect("the loads' caps leave a member for every unit");
                if load[index] == floor {
                    above_floor += 1;
                }
                load[index] += 1;
                &self.members[index]
            })
            .collect()
    }

    fn contains(&self, id: &str) -> bool {
        self.members.iter().any(|m| m.id == id)
    }

    fn without(&self, id: &str) -> View {
        View {
            members: self
                .members
                .iter()
                .filter(|m| m.id != id)
                .cloned()
                .collect(),
        }
    }
}

/// A member's score for a unit: [`weir_log::stable_hash`] of both, the same on every
/// node and every build (a rolling upgrade runs two builds at once).
fn score(member: &str, unit: &str) -> u64 {
    weir_log::stable_hash(member.bytes().chain([0xff]).chain(unit.bytes()))
}

/// This node's membership of a fleet.
pub(crate) struct Fleet {
    pub(crate) me: Member,
    membership: Arc<dyn Membership>,
    view: watch::Sender<View>,
}

impl Fleet {
    /// Joins: one heartbeat and one listing before anything runs, so the first units a
    /// node takes are already shared with the members it found.
    pub(crate) async fn join(
        membership: Arc<dyn Membership>,
        me: Member,
    ) -> crate::Result<Arc<Fleet>> {
        membership.heartbeat(&me).await?;
        let members = membership.members().await?;
        tracing::info!(member = %me.id, url = %me.url, members = members.len(), "joined the fleet");
        let (view, _) = watch::channel(View { members });
        Ok(Arc::new(Fleet {
            me,
            membership,
            view,
        }))
    }

    /// Heartbeats and reads the members until `cancel`. It does not leave: the node's tasks
    /// finish their batches first, then [`Fleet::leave`].
    pub(crate) async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {}
            }
            let read = async {
                self.membership.heartbeat(&self.me).await?;
                self.membership.members().await
            };
            // A round that hangs (a backend lost mid-call) must not stop the heartbeats for
            // good: past a member's lifetime it counts as failed and the next one starts.
            let lifetime = self.membership.lifetime();
            let read = tokio::time::timeout(lifetime, read)
                .await
                .unwrap_or_else(|_| {
                    Err(weir_log::Error::new(
                        weir_log::ErrorKind::Unavailable,
                        format!("no answer within {lifetime:?}"),
                    ))
                });
            match read {
                Ok(members) => {
                    if failing {
                        tracing::info!(member = %self.me.id, "heartbeats reach the fleet again");
                        failing = false;
                    }
                    self.view.send_if_modified(|view| {
                        if view.members == members {
                            return false;
                        }
                        let ids = |v: &[Member]| v.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
                        tracing::info!(member = %self.me.id, before = ?ids(&view.members), after = ?ids(&members), "the fleet changed");
                        view.members = members;
                        true
                    });
                }
                Err(e) => {
                    // The view stays as it was: the log's fencing keeps a unit to one owner
                    // while this node cannot tell who is alive.
                    if !failing {
                        tracing::warn!(member = %self.me.id, error = %e, "cannot heartbeat or read the fleet's members; tried again every second");
                        failing = true;
                    }
                }
            }
        }
    }

    /// Leaves the fleet, so the other members take this node's units at once.
    pub(crate) async fn leave(&self) {
        match self.membership.leave(&self.me.id).await {
            Ok(()) => tracing::info!(member = %self.me.id, "left the fleet"),
            Err(e) => {
                tracing::warn!(member = %self.me.id, error = %e, "cannot leave the fleet; the others take over once its heartbeat expires")
            }
        }
    }

    pub(crate) fn view(&self) -> View {
        self.view.borrow().clone()
    }

    fn owns(&self, view: &View, units: &[String], index: usize) -> bool {
        view.assign(units)
            .get(index)
            .is_some_and(|m| m.id == self.me.id)
    }
}

/// Who runs a node's units: every one of them without a fleet; on a fleet, those the
/// node's view gives it.
#[derive(Clone, Default)]
pub(crate) struct Units {
    pub(crate) fleet: Option<Arc<Fleet>>,
}

/// The right to run one unit until [`Lease::released`] fires; dropping it ends the watch.
pub(crate) struct Lease {
    released: CancellationToken,
    _watch: DropGuard,
}

impl Lease {
    /// Fires when this node's view no longer gives it the unit.
    pub(crate) fn released(&self) -> &CancellationToken {
        &self.released
    }

    /// A token that fires when `stop` does or the lease is released, whichever first,
    /// and the guard that ends its watch (keep it while the token is used).
    pub(crate) fn until_released(
        &self,
        stop: &CancellationToken,
    ) -> (CancellationToken, DropGuard) {
        let done = stop.child_token();
        let (released, token) = (self.released.clone(), done.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = released.cancelled() => token.cancel(),
                _ = token.cancelled() => {}
            }
        });
        (done.clone(), done.drop_guard())
    }
}

impl Units {
    /// Waits until this node owns unit `index` of `units`, then leases it; none once
    /// `cancel` fires. Taking a unit from a member still alive waits [`GRACE`] first.
    pub(crate) async fn acquire(
        &self,
        units: &[String],
        index: usize,
        cancel: &CancellationToken,
    ) -> Option<Lease> {
        let Some(fleet) = &self.fleet else {
            let released = CancellationToken::new();
            return Some(Lease {
                _watch: released.clone().drop_guard(),
                released,
            });
        };
        let mut views = fleet.view.subscribe();
        let mut before: Option<View> = None;
        loop {
            let view = views.borrow_and_update().clone();
            if fleet.owns(&view, units, index) {
                // Who had it: the owner in the view before this one, or, for a node's first
                // view, the owner were this node not there.
                let previous = before.unwrap_or_else(|| view.without(&fleet.me.id));
                let from_live = previous
                    .assign(units)
                    .get(index)
                    .is_some_and(|m| m.id != fleet.me.id && view.contains(&m.id));
                if from_live {
                    tokio::select! {
                        _ = cancel.cancelled() => return None,
                        _ = tokio::time::sleep(GRACE) => {}
                    }
                    if !fleet.owns(&fleet.view(), units, index) {
                        before = Some(view);
                        continue;
                    }
                }
                return Some(fleet.lease(units, index));
            }
            before = Some(view);
            tokio::select! {
                _ = cancel.cancelled() => return None,
                changed = views.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// After a fence: waits until the view changes (or two member lifetimes pass), so a
    /// unit another node claimed is not taken back before the views agree.
    pub(crate) async fn after_fenced(&self, cancel: &CancellationToken) {
        let Some(fleet) = &self.fleet else { return };
        let mut views = fleet.view.subscribe();
        views.borrow_and_update();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = views.changed() => {}
            _ = tokio::time::sleep(fleet.membership.lifetime() * 2) => {}
        }
    }

    /// Whether a fleet shares the work (a fenced claim is then a handover, not a fault).
    pub(crate) fn is_fleet(&self) -> bool {
        self.fleet.is_some()
    }

    /// Each unit's owner in this node's view, by unit name; empty without a fleet.
    pub(crate) fn owners(&self, units: &[String]) -> BTreeMap<String, String> {
        let Some(fleet) = &self.fleet else {
            return BTreeMap::new();
        };
        let view = fleet.view();
        units
            .iter()
            .zip(view.assign(units))
            .map(|(unit, member)| (unit.clone(), member.id.clone()))
            .collect()
    }
}

impl Fleet {
    /// A lease whose watch releases it once the view moves the unit elsewhere.
    fn lease(self: &Arc<Self>, units: &[String], index: usize) -> Lease {
        let released = CancellationToken::new();
        let (fleet, units, token) = (self.clone(), units.to_vec(), released.clone());
        let mut views = self.view.subscribe();
        tokio::spawn(async move {
            // The view may have moved between the caller's check and this subscription.
            if !fleet.owns(&views.borrow_and_update().clone(), &units, index) {
                token.cancel();
                return;
            }
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    changed = views.changed() => {
                        let view = views.borrow_and_update().clone();
                        if changed.is_err() || !fleet.owns(&view, &units, index) {
                            token.cancel();
                            return;
                        }
                    }
                }
            }
        });
        Lease {
            _watch: released.clone().drop_guard(),
            released,
        }
    }
}

/// This node's id in a fleet: its host's name (a pod's name on Kubernetes), the process
/// id and a random suffix, so a restarted process is a new member.
pub(crate) fn member_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "node".into());
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    format!(
        "{host}-{}-{:06x}",
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ids: &[&str]) -> View {
        View {
            members: ids
                .iter()
                .map(|id| Member {
                    id: (*id).into(),
                    url: String::new(),
                    started_ms: 0,
                })
                .collect(),
        }
    }

    fn units(n: usize) -> Vec<String> {
        (0..n).map(|p| format!("group/g/orders/{p}")).collect()
    }

    fn owners(v: &View, units: &[String]) -> Vec<String> {
        v.assign(units).iter().map(|m| m.id.clone()).collect()
    }

    #[test]
    fn every_unit_has_one_owner_and_loads_differ_by_at_most_one() {
        for members in 1..=5 {
            let ids: Vec<String> = (0..members).map(|i| format!("n{i}")).collect();
            let v = view(&ids.iter().map(String::as_str).collect::<Vec<_>>());
            for n in [1, 3, 4, 8, 12, 64] {
                let owned = owners(&v, &units(n));
                assert_eq!(owned.len(), n);
                let loads: Vec<usize> = ids
                    .iter()
                    .map(|id| owned.iter().filter(|o| *o == id).count())
                    .collect();
                let (min, max) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
                assert!(
                    max - min <= 1 || *min == 0 && n < members,
                    "{members} members, {n} units: loads {loads:?}"
                );
            }
        }
    }

    #[test]
    fn the_assignment_depends_only_on_the_members_not_their_order() {
        let a = view(&["a", "b", "c"]);
        let mut b = a.clone();
        b.members.reverse();
        b.members.sort();
        assert_eq!(owners(&a, &units(12)), owners(&b, &units(12)));
        assert!(view(&[]).assign(&units(3)).is_empty());
    }

    #[test]
    fn a_member_leaving_moves_only_its_own_units_mostly() {
        let units = units(60);
        let before = owners(&view(&["a", "b", "c"]), &units);
        let after = owners(&view(&["a", "b"]), &units);
        let kept = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| *b != "c" && b == a)
            .count();
        let had = before.iter().filter(|b| *b != "c").count();
        // Bounded loads move a few more than the leaver's own; most stay.
        assert!(kept * 10 >= had * 8, "kept {kept} of {had}");
    }
}
