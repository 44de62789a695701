//! The fleet's members in the KV bucket `{prefix}_members`: each node puts its entry under
//! its id every heartbeat, and the bucket's streams keep a message for
//! [`MEMBER_LIFETIME`] (`max_age`), so a node that stops heartbeating drops out by the
//! server's clock, whatever the nodes' clocks say, on any server version (no per-key TTL
//! needed).

use std::time::Duration;

use async_nats::jetstream::kv;
use async_trait::async_trait;
use futures::TryStreamExt;
use weir_log::{Member, Membership, Result};

use crate::unavailable;

/// How long a member stays listed after its last heartbeat.
pub const MEMBER_LIFETIME: Duration = Duration::from_secs(5);

pub(crate) struct NatsMembers {
    pub(crate) bucket: kv::Store,
}

#[async_trait]
impl Membership for NatsMembers {
    async fn heartbeat(&self, me: &Member) -> Result<()> {
        let value = serde_json::to_vec(me).expect("a member serializes");
        self.bucket
            .put(crate::names::token(&me.id), value.into())
            .await
            .map_err(|e| unavailable("cannot store this node's heartbeat".into(), e))?;
        Ok(())
    }

    async fn members(&self) -> Result<Vec<Member>> {
        // A listing streams from a consumer, which no request timeout bounds: a server
        // lost mid-listing would leave it waiting for ever, and the node's heartbeats
        // with it.
        let listing = async {
            self.bucket
                .keys()
                .await
                .map_err(|e| unavailable("cannot list the fleet's members".into(), e))?
                .try_collect::<Vec<String>>()
                .await
                .map_err(|e| unavailable("cannot list the fleet's members".into(), e))
        };
        let keys = tokio::time::timeout(MEMBER_LIFETIME / 2, listing)
            .await
            .map_err(|_| {
                unavailable(
                    "cannot list the fleet's members".into(),
                    format!("no answer within {:?}", MEMBER_LIFETIME / 2),
                )
            })??;
        let mut members = Vec::with_capacity(keys.len());
        for key in keys {
            // An entry may expire between the listing and the read: then it is gone.
            let entry = self
                .bucket
                .get(&key)
                .await
                .map_err(|e| unavailable("cannot read a member of the fleet".into(), e))?;
            if let Some(member) = entry.and_then(|v| serde_json::from_slice::<Member>(&v).ok()) {
                members.push(member);
            }
        }
        members.sort();
        Ok(members)
    }

    async fn leave(&self, id: &str) -> Result<()> {
        self.bucket
            .purge(crate::names::token(id))
            .await
            .map_err(|e| unavailable("cannot leave the fleet".into(), e))?;
        Ok(())
    }

    fn lifetime(&self) -> Duration {
        MEMBER_LIFETIME
    }
}
