//! Who is alive: the members of a fleet of weir nodes sharing one backend.
//!
//! A backend that several nodes can share (NATS, Kafka) offers [`Membership`]; the engine
//! turns the live members into owners of its units of work (see `weir-engine`'s `fleet`).
//! A member is live while it keeps calling [`Membership::heartbeat`]: a backend drops a
//! member that stopped for its [`Membership::lifetime`], judged by the backend's own clock
//! where it has one, so the nodes' clocks need not agree.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One node of a fleet.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Member {
    /// Unique in the fleet for the life of the process (a new process, a new id).
    pub id: String,
    /// Where other members reach its HTTP API (entity commands are forwarded there).
    pub url: String,
    /// When it started, milliseconds since the Unix epoch (for `weir status`).
    pub started_ms: i64,
}

/// The fleet's register of live members.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// Says `me` is alive for another [`Membership::lifetime`].
    async fn heartbeat(&self, me: &Member) -> Result<()>;
    /// The live members, `me` included once its heartbeat is stored, sorted by id.
    async fn members(&self) -> Result<Vec<Member>>;
    /// Leaves at once (a clean stop), so the others take over without waiting.
    async fn leave(&self, id: &str) -> Result<()>;
    /// How long a member stays listed after its last heartbeat.
    fn lifetime(&self) -> std::time::Duration;
}
