//! What `weir status` shows.

use std::sync::PoisonError;

use crate::{Node, PipelineStatus, Result};

/// A function as `weir status` lists it.
#[derive(Debug, Clone)]
pub struct FunctionStatus {
    pub name: String,
    /// The active version.
    pub version: String,
    /// How many versions are kept for rollback (the active one included).
    pub versions_kept: usize,
}

/// What the node runs, for `weir status` and `/readyz`.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub app: Option<String>,
    /// The log backend (`embedded`, ...).
    pub backend: &'static str,
    pub topics: Vec<TopicStatus>,
    pub functions: Vec<FunctionStatus>,
    pub pipelines: Vec<PipelineStatus>,
    pub entities: Vec<crate::EntityTypeStatus>,
    pub views: Vec<crate::ViewStatus>,
    /// The app's sources of events from other brokers.
    pub sources: Vec<crate::SourceStatus>,
    /// The app's sinks.
    pub sinks: Vec<crate::SinkStatus>,
    /// The circuit of each destination functions sent HTTP to.
    pub circuits: Vec<weir_wasm::CircuitStatus>,
    /// The fleet this node is a member of, on a backend several nodes share.
    pub fleet: Option<FleetStatus>,
}

/// A fleet as one member sees it.
#[derive(Debug, Clone)]
pub struct FleetStatus {
    /// This node's id.
    pub me: weir_log::Member,
    /// The live members as this node last read them (itself included), sorted by id.
    pub members: Vec<weir_log::Member>,
}

/// A topic as `weir status` shows it: its spec and positions, and what the backend
/// promises for it.
#[derive(Debug, Clone)]
pub struct TopicStatus {
    pub info: weir_log::TopicInfo,
    pub guarantees: weir_log::Guarantees,
}

impl Node {
    /// Functions, pipelines and topics, for `weir status`.
    pub async fn status(&self) -> Result<NodeStatus> {
        let topics = self
            .log
            .topics()
            .await?
            .into_iter()
            .map(|info| TopicStatus {
                guarantees: self.log.guarantees(&info.config),
                info,
            })
            .collect();
        let pipelines: Vec<_> = self
            .pipelines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut statuses = Vec::with_capacity(pipelines.len());
        for p in pipelines {
            statuses.push(p.status(&self.log).await);
        }
        Ok(NodeStatus {
            app: self.app_name(),
            backend: self.log.backend(),
            topics,
            functions: self
                .registry
                .list()
                .into_iter()
                .map(|f| FunctionStatus {
                    name: f.name,
                    version: f.version,
                    versions_kept: f.versions_kept.len(),
                })
                .collect(),
            pipelines: statuses,
            entities: self.entity_status().await,
            views: self.views.status(&self.log).await,
            sources: self.sources.status(&self.units),
            sinks: self.sinks.status(&self.log).await,
            circuits: self
                .registry
                .host()
                .map(|host| host.circuits())
                .unwrap_or_default(),
            fleet: self.units.fleet.as_ref().map(|fleet| FleetStatus {
                me: fleet.me.clone(),
                members: fleet.view().members,
            }),
        })
    }
}
