//! Write weir functions in Rust: the guest side of the `weir:function` WIT world.
//!
//! A function is a type that implements [`Function`] and is exported with
//! [`export_function!`]:
//!
//! ```ignore
//! struct Hello;
//! impl weir_guest::Function for Hello {
//!     fn handle(event: weir_guest::Event) -> Result<Vec<weir_guest::Output>, weir_guest::Error> {
//!         Ok(vec![weir_guest::Output::to("greetings", event)])
//!     }
//! }
//! weir_guest::export_function!(Hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the `.wasm` is a component.

// The generated bindings and export macro name their runtime through this crate, so a
// function depends on `weir-guest` alone.
extern crate self as weir_guest;
#[doc(hidden)]
pub use wit_bindgen;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:function/handler",
        pub_export_macro: true,
        export_macro_name: "export_function",
        default_bindings_module: "weir_guest::bindings",
        runtime_path: "weir_guest::wit_bindgen::rt",
        generate_all,
    });
}

pub use bindings::Guest as Function;
pub use bindings::export_function;
pub use bindings::weir::function::types::{Error, Event, ExtensionValue, Output};

/// The CloudEvents spec version every event has.
pub const SPEC_VERSION: &str = "1.0";

impl Event {
    /// A new event with no data and no optional attributes. An empty `id` lets weir pick a
    /// stable one derived from the input event.
    pub fn new(source: impl Into<String>, ty: impl Into<String>) -> Self {
        Event {
            id: String::new(),
            source: source.into(),
            type_: ty.into(),
            subject: None,
            time: None,
            datacontenttype: None,
            dataschema: None,
            extensions: Vec::new(),
            data: None,
        }
    }

    /// Parse the event's data as JSON; malformed data is a fatal error (retrying will not
    /// fix it).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, Error> {
        let data = self
            .data
            .as_deref()
            .ok_or_else(|| Error::Fatal(format!("event {} has no data", self.id)))?;
        serde_json::from_slice(data).map_err(|e| {
            Error::Fatal(format!(
                "event {} data is not the expected JSON: {e}",
                self.id
            ))
        })
    }

    /// Replace the data with `value` serialized as JSON, and set `datacontenttype`.
    pub fn set_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::Fatal(format!("cannot serialize output data: {e}")))?;
        self.data = Some(bytes);
        self.datacontenttype = Some("application/json".to_owned());
        Ok(())
    }

    /// Builder form of [`Event::set_json`].
    pub fn with_json<T: serde::Serialize>(mut self, value: &T) -> Result<Self, Error> {
        self.set_json(value)?;
        Ok(self)
    }

    /// The value of an extension attribute.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// Set (or replace) an extension attribute.
    pub fn set_extension(&mut self, name: impl Into<String>, value: ExtensionValue) {
        let name = name.into();
        self.extensions.retain(|(n, _)| *n != name);
        self.extensions.push((name, value));
    }
}

impl Output {
    /// Publish `event` to the output topic `target`.
    pub fn to(target: impl Into<String>, event: Event) -> Self {
        Output {
            target: target.into(),
            event,
        }
    }
}

/// Configuration values granted to the function in `weir.toml` (`wasi:config`).
pub mod config {
    use crate::bindings::wasi::config::store;

    /// The value of `key`, if the function's config has it.
    pub fn get(key: &str) -> Option<String> {
        store::get(key).ok().flatten()
    }

    /// The value of `key`, or a fatal error naming the missing key.
    pub fn require(key: &str) -> Result<String, crate::Error> {
        get(key).ok_or_else(|| {
            crate::Error::Fatal(format!(
                "config key {key:?} is not set; add it under the function's config in weir.toml"
            ))
        })
    }

    /// `key` parsed as a number, or a fatal error.
    pub fn require_f64(key: &str) -> Result<f64, crate::Error> {
        let raw = require(key)?;
        raw.trim().parse().map_err(|_| {
            crate::Error::Fatal(format!("config key {key:?} is {raw:?}, not a number"))
        })
    }
}

/// Logging into weir's logs, tagged with the function's name and version (`wasi:logging`).
pub mod log {
    use crate::bindings::wasi::logging::logging::{Level, log};

    pub fn debug(message: &str) {
        log(Level::Debug, "", message);
    }
    pub fn info(message: &str) {
        log(Level::Info, "", message);
    }
    pub fn warn(message: &str) {
        log(Level::Warn, "", message);
    }
    pub fn error(message: &str) {
        log(Level::Error, "", message);
    }
}
