//! Write weir event-sourced entities in Rust: the guest side of the
//! `weir:function/entity` WIT world.
//!
//! An entity is a type that implements [`Entity`] and is exported with
//! [`export_entity!`]. Its state is any serde type, kept by weir as JSON; commands and
//! events carry JSON data:
//!
//! ```ignore
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Counter { value: i64 }
//!
//! impl weir_guest_entity::Entity for Counter {
//!     type State = Counter;
//!     fn handle(state: Option<&Counter>, command: &Command) -> Result<Decision, Error> {
//!         match command.name.as_str() {
//!             "add" => Ok(Decision::accept([NewEvent::json("Added", &command.json::<i64>()?)?])),
//!             other => Ok(Decision::reject(format!("unknown command {other}"))),
//!         }
//!     }
//!     fn apply(state: Option<Counter>, event: &Event) -> Result<Option<Counter>, Error> {
//!         let value = state.map_or(0, |s| s.value) + event.json::<i64>()?;
//!         Ok(Some(Counter { value }))
//!     }
//! }
//! weir_guest_entity::export_entity!(Counter);
//! ```
//!
//! This is a crate of its own, not a module of `weir-guest`: a component carries the
//! WIT world its bindings describe, and a handler and an entity both export `handle`.

// The SDK's allocator (`weir-guest-alloc`) becomes the function's global allocator;
// nothing of it is named, so the crate is linked here.
#[cfg(feature = "allocator")]
extern crate weir_guest_alloc as _;

extern crate self as weir_guest_entity;
#[doc(hidden)]
pub use wit_bindgen;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:function/entity",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "weir_guest_entity::bindings",
        runtime_path: "weir_guest_entity::wit_bindgen::rt",
        generate_all,
    });
}

pub use bindings::weir::function::entity_types::{Command, Decision, NewEvent};
pub use bindings::weir::function::types::{Error, Event, ExtensionValue};

/// An event-sourced entity: decides on commands against its state, and folds its events
/// into the state.
pub trait Entity {
    /// The entity's state, kept by weir as JSON between calls.
    type State: serde::Serialize + serde::de::DeserializeOwned;

    /// Decide on a command: accept it with the events it causes (none is fine), or
    /// reject it with a reason (nothing is written). `state` is `None` for an entity
    /// without events.
    fn handle(state: Option<&Self::State>, command: &Command) -> Result<Decision, Error>;

    /// Fold one of the entity's events into its state; `None` deletes the entity. Must be
    /// deterministic (weir calls it again on the same events to rebuild a state), and may
    /// not use key-value or HTTP.
    fn apply(state: Option<Self::State>, event: &Event) -> Result<Option<Self::State>, Error>;
}

fn fatal(what: &str, e: serde_json::Error) -> Error {
    Error::Fatal(format!("{what}: {e}"))
}

/// [`Entity::handle`] on the raw state bytes; called by [`export_entity!`].
#[doc(hidden)]
pub fn handle<E: Entity>(state: Option<Vec<u8>>, command: Command) -> Result<Decision, Error> {
    let state = decode::<E>(state)?;
    E::handle(state.as_ref(), &command)
}

/// [`Entity::apply`] on the raw state bytes; called by [`export_entity!`].
#[doc(hidden)]
pub fn apply<E: Entity>(state: Option<Vec<u8>>, event: Event) -> Result<Option<Vec<u8>>, Error> {
    let state = decode::<E>(state)?;
    match E::apply(state, &event)? {
        None => Ok(None),
        Some(state) => serde_json::to_vec(&state)
            .map(Some)
            .map_err(|e| fatal("cannot serialize the state", e)),
    }
}

fn decode<E: Entity>(state: Option<Vec<u8>>) -> Result<Option<E::State>, Error> {
    state
        .map(|bytes| serde_json::from_slice(&bytes))
        .transpose()
        .map_err(|e| fatal("the stored state is not this entity's state", e))
}

/// Export `$ty` (an [`Entity`]) as the component's entity world.
#[macro_export]
macro_rules! export_entity {
    ($ty:ident) => {
        impl $crate::bindings::Guest for $ty {
            fn handle(
                state: Option<Vec<u8>>,
                command: $crate::Command,
            ) -> Result<$crate::Decision, $crate::Error> {
                $crate::handle::<$ty>(state, command)
            }
            fn apply(
                state: Option<Vec<u8>>,
                event: $crate::Event,
            ) -> Result<Option<Vec<u8>>, $crate::Error> {
                $crate::apply::<$ty>(state, event)
            }
        }
        $crate::bindings::export_raw!($ty with_types_in $crate::bindings);
    };
}

impl Command {
    /// The command's data parsed as JSON; malformed data is a fatal error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.data).map_err(|e| {
            Error::Fatal(format!(
                "command {} data is not the expected JSON: {e}",
                self.name
            ))
        })
    }
}

impl Event {
    /// The event's data parsed as JSON; missing or malformed data is a fatal error.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| Error::Fatal(format!("event {} has no data", self.id)))?;
        serde_json::from_slice(data).map_err(|e| {
            fatal(
                &format!("event {} data is not the expected JSON", self.id),
                e,
            )
        })
    }
}

impl NewEvent {
    /// An event of type `ty` with `data` as JSON.
    pub fn json<T: serde::Serialize>(ty: impl Into<String>, data: &T) -> Result<NewEvent, Error> {
        Ok(NewEvent {
            type_: ty.into(),
            data: Some(
                serde_json::to_vec(data).map_err(|e| fatal("cannot serialize event data", e))?,
            ),
            subject: None,
        })
    }
}

impl Decision {
    /// Accept with these events.
    pub fn accept(events: impl IntoIterator<Item = NewEvent>) -> Decision {
        Decision::Accept(events.into_iter().collect())
    }

    /// Refuse with a reason.
    pub fn reject(reason: impl Into<String>) -> Decision {
        Decision::Reject(reason.into())
    }
}

/// Log lines into weir's logs, tagged with the entity's function (`wasi:logging`).
pub mod log {
    use crate::bindings::wasi::logging::logging::{Level, log};

    pub fn info(message: &str) {
        log(Level::Info, "", message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, "", message);
    }
}

/// The function's config values from `weir.toml` (`wasi:config`).
pub mod config {
    /// The value of `key`, if the function's config has it.
    pub fn get(key: &str) -> Option<String> {
        crate::bindings::wasi::config::store::get(key)
            .ok()
            .flatten()
    }
}
