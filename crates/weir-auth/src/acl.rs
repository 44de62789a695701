//! What a principal may do: its roles' topic patterns and admin operations.

use std::collections::BTreeSet;
use std::fmt;

use weir_manifest::{ADMIN_ROLE, AuthSpec, glob_match};

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
        }
    }

    fn parse(name: &str) -> Option<AdminOp> {
        Some(match name {
            "deploy" => AdminOp::Deploy,
            "functions" => AdminOp::Functions,
            "topics" => AdminOp::Topics,
            "groups" => AdminOp::Groups,
            "kv" => AdminOp::Kv,
            "replay" => AdminOp::Replay,
            "redrive" => AdminOp::Redrive,
            "keys" => AdminOp::Keys,
            _ => return None,
        })
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Append to a topic.
    Publish(&'a str),
    /// Read or follow a topic, alone or in a consumer group.
    Subscribe(&'a str),
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
            Action::Admin(op) => write!(f, "perform the admin operation {:?}", op.name()),
            Action::FullAdmin => f.write_str("change the node's auth settings"),
            Action::Observe => f.write_str("observe the node"),
        }
    }
}

/// The union of a principal's roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub full_admin: bool,
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    pub admin: BTreeSet<AdminOp>,
}

impl Permissions {
    /// The permissions of `roles` under `spec`; roles the spec does not declare give
    /// nothing.
    pub fn of(spec: &AuthSpec, roles: &[String]) -> Permissions {
        let mut permissions = Permissions::default();
        for role in roles {
            if role == ADMIN_ROLE {
                permissions.full_admin = true;
                continue;
            }
            let Some(role) = spec.roles.get(role) else {
                continue;
            };
            permissions.publish.extend(role.publish.iter().cloned());
            permissions.subscribe.extend(role.subscribe.iter().cloned());
            for op in &role.admin {
                if op == "*" {
                    permissions.admin.extend([
                        AdminOp::Deploy,
                        AdminOp::Functions,
                        AdminOp::Topics,
                        AdminOp::Groups,
                        AdminOp::Kv,
                        AdminOp::Replay,
                        AdminOp::Redrive,
                        AdminOp::Keys,
                    ]);
                } else if let Some(op) = AdminOp::parse(op) {
                    permissions.admin.insert(op);
                }
            }
        }
        permissions
    }

    /// Whether these permissions allow `action`; if not, what would.
    pub fn check(&self, principal: &str, action: Action<'_>) -> Result<(), Denied> {
        let allowed = self.full_admin
            || match action {
                Action::Publish(topic) => matches_any(&self.publish, topic),
                Action::Subscribe(topic) => matches_any(&self.subscribe, topic),
                Action::Admin(op) => self.admin.contains(&op),
                Action::FullAdmin => false,
                Action::Observe => true,
            };
        if allowed {
            return Ok(());
        }
        let needs = match action {
            Action::Publish(topic) => format!("publish = [{topic:?}] (or a pattern matching it)"),
            Action::Subscribe(topic) => {
                format!("subscribe = [{topic:?}] (or a pattern matching it)")
            }
            Action::Admin(op) => format!("admin = [{:?}]", op.name()),
            Action::FullAdmin | Action::Observe => "the built-in \"admin\" role".to_owned(),
        };
        Err(Denied {
            principal: principal.to_owned(),
            action: action.to_string(),
            needs,
        })
    }
}

fn matches_any(patterns: &[String], topic: &str) -> bool {
    patterns.iter().any(|pattern| glob_match(pattern, topic))
}
