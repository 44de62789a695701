//! What a principal may do: its roles' topic patterns and admin operations.

use std::fmt;

use weir_manifest::{ADMIN_ROLE, AuthSpec, EntitySpec, glob_match};

use crate::error::Denied;

/// An admin operation, as named in a role's `admin = [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AdminOp {
    Deploy,
    Functions,
    Topics,
    Groups,
    Kv,
    Replay,
    Redrive,
    Keys,
    /// Rebuild views.
    Views,
    /// Register event schemas.
    Schemas,
}

impl AdminOp {
    pub fn name(self) -> &'static str {
        match self {
            AdminOp::Deploy => "deploy",
            AdminOp::Functions => "functions",
            AdminOp::Topics => "topics",
            AdminOp::Groups => "groups",
            AdminOp::Kv => "kv",
            AdminOp::Replay => "replay",
            AdminOp::Redrive => "redrive",
            AdminOp::Keys => "keys",
            AdminOp::Views => "views",
            AdminOp::Schemas => "schemas",
        }
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Append to a topic.
    Publish(&'a str),
    /// Read or follow a topic, alone or in a consumer group.
    Subscribe(&'a str),
    /// Send commands to entities of a type: publishing to its journal (`entity.TYPE`).
    Command(&'a str),
    /// Read entities of a type (state, history): reading its journal.
    ReadEntity(&'a str),
    /// Query a view.
    ReadView(&'a str),
    /// Call an HTTP route (`[routes.NAME]`) by name.
    Invoke(&'a str),
    /// One admin operation.
    Admin(AdminOp),
    /// Everything, including changing `[auth]`: the built-in `admin` role only.
    FullAdmin,
    /// Read what the node is: status, lists, the OpenAPI document, metrics. Any
    /// authenticated principal may.
    Observe,
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Publish(topic) => write!(f, "publish to topic {topic:?}"),
            Action::Subscribe(topic) => write!(f, "read topic {topic:?}"),
            Action::Command(ty) => write!(f, "send commands to entity type {ty:?}"),
            Action::ReadEntity(ty) => write!(f, "read entities of type {ty:?}"),
            Action::ReadView(view) => write!(f, "query view {view:?}"),
            Action::Invoke(route) => write!(f, "call route {route:?}"),
            Action::Admin(op) => write!(f, "perform the admin operation {:?}", op.name()),
            Action::FullAdmin => f.write_str("change the node's auth settings"),
            Action::Observe => f.write_str("observe the node"),
        }
    }
}

/// Whether `roles` (under `spec`) let `principal` do `action`; if not, what would. Roles
/// the spec does not declare give nothing; the built-in `admin` role gives everything.
pub(crate) fn check(
    spec: &AuthSpec,
    principal: &str,
    roles: &[String],
    action: Action<'_>,
) -> Result<(), Denied> {
    // Any authenticated principal may observe.
    let allowed = action == Action::Observe
        || roles.iter().any(|role| {
            if role == ADMIN_ROLE {
                return true;
            }
            let Some(role) = spec.roles.get(role) else {
                return false;
            };
            match action {
                Action::Publish(topic) => matches_any(&role.publish, topic),
                Action::Subscribe(topic) => matches_any(&role.subscribe, topic),
                Action::Command(ty) => matches_any(&role.publish, &EntitySpec::journal_topic(ty)),
                Action::ReadEntity(ty) => {
                    matches_any(&role.subscribe, &EntitySpec::journal_topic(ty))
                }
                // weir's own views (`weir-jobs`: every job's results) only by name.
                Action::ReadView(view) if view.starts_with("weir-") => {
                    role.views.iter().any(|v| v == view)
                }
                Action::ReadView(view) => matches_any(&role.views, view),
                Action::Invoke(route) => matches_any(&role.routes, route),
                Action::Admin(op) => role.admin.iter().any(|a| a == "*" || a == op.name()),
                Action::FullAdmin | Action::Observe => false,
            }
        });
    if allowed {
        return Ok(());
    }
    let needs = match action {
        Action::Publish(topic) => format!("publish = [{topic:?}] (or a pattern matching it)"),
        Action::Subscribe(topic) => format!("subscribe = [{topic:?}] (or a pattern matching it)"),
        Action::Command(ty) => format!(
            "publish = [{:?}] (the entity type's journal, or a pattern matching it)",
            EntitySpec::journal_topic(ty)
        ),
        Action::ReadEntity(ty) => format!(
            "subscribe = [{:?}] (the entity type's journal, or a pattern matching it)",
            EntitySpec::journal_topic(ty)
        ),
        Action::ReadView(view) => format!("views = [{view:?}] (or a pattern matching it)"),
        Action::Invoke(route) => format!("routes = [{route:?}] (or a pattern matching it)"),
        Action::Admin(op) => format!("admin = [{:?}]", op.name()),
        Action::FullAdmin | Action::Observe => "the built-in \"admin\" role".to_owned(),
    };
    Err(Denied {
        principal: principal.to_owned(),
        action: action.to_string(),
        needs,
    })
}

fn matches_any(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|pattern| glob_match(pattern, topic))
}
