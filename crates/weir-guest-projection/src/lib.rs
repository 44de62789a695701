//! Write weir view projections in Rust: the guest side of the `weir:function/projection`
//! WIT world.
//!
//! A projection is a type that implements [`Projection`] and is exported with
//! [`export_projection!`]. It turns one event into the changes it makes to the view's
//! table: rows built with [`Row`], upserted or deleted with [`RowChange::upsert`] and
//! [`RowChange::delete`]:
//!
//! ```ignore
//! use weir_guest_projection::{Error, Event, Projection, Row, RowChange};
//!
//! #[derive(serde::Deserialize)]
//! struct Placed { customer: String, amount: f64 }
//!
//! struct Orders;
//!
//! impl Projection for Orders {
//!     fn project(event: &Event) -> Result<Vec<RowChange>, Error> {
//!         match event.type_.as_str() {
//!             "OrderPlaced" => {
//!                 let placed: Placed = event.json()?;
//!                 let row = Row::new()
//!                     .text("order_id", event.entity_id()?)
//!                     .text("customer", placed.customer)
//!                     .real("amount", placed.amount);
//!                 Ok(vec![RowChange::upsert(row)])
//!             }
//!             "OrderDeleted" => Ok(vec![RowChange::delete(
//!                 Row::new().text("order_id", event.entity_id()?),
//!             )]),
//!             _ => Ok(vec![]),
//!         }
//!     }
//! }
//! weir_guest_projection::export_projection!(Orders);
//! ```
//!
//! A crate of its own, not a module of `weir-guest`: a component carries the WIT world
//! its bindings describe, and a projection's world has neither key-value nor HTTP.

// The SDK's allocator (`weir-guest-alloc`) becomes the function's global allocator;
// nothing of it is named, so the crate is linked here.
#[cfg(feature = "allocator")]
extern crate weir_guest_alloc as _;

extern crate self as weir_guest_projection;
#[doc(hidden)]
pub use wit_bindgen;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "weir:function/projection",
        pub_export_macro: true,
        export_macro_name: "export_raw",
        default_bindings_module: "weir_guest_projection::bindings",
        runtime_path: "weir_guest_projection::wit_bindgen::rt",
        generate_all,
    });
}

pub use bindings::weir::function::projection_types::{Cell, RowChange, Value};
pub use bindings::weir::function::types::{Error, Event, ExtensionValue};

/// A view's projection: the changes one event makes to the view's table.
pub trait Projection {
    /// The changes `event` makes to the view (none for an event the view does not show).
    /// weir applies them in one transaction with the view's progress. Must be
    /// deterministic (a rebuild calls it again on the same events), and may not use
    /// key-value or HTTP.
    fn project(event: &Event) -> Result<Vec<RowChange>, Error>;
}

/// Export `$ty` (a [`Projection`]) as the component's projection world.
#[macro_export]
macro_rules! export_projection {
    ($ty:ident) => {
        impl $crate::bindings::Guest for $ty {
            fn project(
                event: $crate::Event,
            ) -> Result<::std::vec::Vec<$crate::RowChange>, $crate::Error> {
                <$ty as $crate::Projection>::project(&event)
            }
        }
        $crate::bindings::export_raw!($ty with_types_in $crate::bindings);
    };
}

/// The cells of one row, by column name: what [`RowChange::upsert`] and
/// [`RowChange::delete`] take. Setting a column twice keeps the last value.
#[derive(Debug, Clone, Default)]
pub struct Row {
    cells: Vec<Cell>,
}

impl Row {
    /// A row without cells.
    pub fn new() -> Row {
        Row::default()
    }

    /// Set `column` to `value`; an `Option` that is `None` sets it to null.
    pub fn value(mut self, column: impl Into<String>, value: impl Into<Value>) -> Row {
        let column = column.into();
        let value = value.into();
        match self.cells.iter_mut().find(|(name, _)| *name == column) {
            Some(cell) => cell.1 = value,
            None => self.cells.push((column, value)),
        }
        self
    }

    /// Set a `text` column.
    pub fn text(self, column: impl Into<String>, value: impl Into<String>) -> Row {
        self.value(column, Value::Text(value.into()))
    }

    /// Set an `integer` column.
    pub fn integer(self, column: impl Into<String>, value: i64) -> Row {
        self.value(column, Value::Integer(value))
    }

    /// Set a `real` column.
    pub fn real(self, column: impl Into<String>, value: f64) -> Row {
        self.value(column, Value::Real(value))
    }

    /// Set a `boolean` column.
    pub fn boolean(self, column: impl Into<String>, value: bool) -> Row {
        self.value(column, Value::Boolean(value))
    }

    /// Set a `json` column to `value`.
    pub fn json(self, column: impl Into<String>, value: &serde_json::Value) -> Row {
        self.value(column, Value::Json(value.to_string()))
    }

    /// Set a `json` column to JSON text as it is (an event's data passed on, say); weir
    /// checks that it is JSON.
    pub fn json_text(self, column: impl Into<String>, json: impl Into<String>) -> Row {
        self.value(column, Value::Json(json.into()))
    }

    /// Set a column to null (any column but a key's).
    pub fn null(self, column: impl Into<String>) -> Row {
        self.value(column, Value::Null)
    }

    /// The row's cells, in the order their columns were first set.
    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    /// The row's cells, in the order their columns were first set.
    pub fn into_cells(self) -> Vec<Cell> {
        self.cells
    }
}

impl From<Row> for Vec<Cell> {
    fn from(row: Row) -> Vec<Cell> {
        row.cells
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_owned())
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Integer(value)
    }
}

impl From<i32> for Value {
    fn from(value: i32) -> Value {
        Value::Integer(value.into())
    }
}

impl From<u32> for Value {
    fn from(value: u32) -> Value {
        Value::Integer(value.into())
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Real(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Value {
        Value::Boolean(value)
    }
}

impl From<&serde_json::Value> for Value {
    fn from(value: &serde_json::Value) -> Value {
        Value::Json(value.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

impl RowChange {
    /// Insert `row`, or update its columns in the row with the same key (the key columns
    /// must be set; columns left out keep their values).
    pub fn upsert(row: impl Into<Vec<Cell>>) -> RowChange {
        RowChange::Upsert(row.into())
    }

    /// Delete the row with `row`'s key (its key columns; other columns are ignored).
    pub fn delete(row: impl Into<Vec<Cell>>) -> RowChange {
        RowChange::Delete(row.into())
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
            Error::Fatal(format!(
                "event {} ({}) data is not the expected JSON: {e}",
                self.id, self.type_
            ))
        })
    }

    /// The extension attribute `name`, if the event has it.
    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, value)| value)
    }

    /// The string extension attribute `name`, if the event has it as a string.
    pub fn string_extension(&self, name: &str) -> Option<&str> {
        match self.extension(name)? {
            ExtensionValue::String(value) => Some(value),
            _ => None,
        }
    }

    /// The integer extension attribute `name`, if the event has it as an integer or as a
    /// string of one (extensions that crossed HTTP or a broker as text).
    pub fn integer_extension(&self, name: &str) -> Option<i64> {
        match self.extension(name)? {
            ExtensionValue::Integer(value) => Some(*value),
            ExtensionValue::String(value) => value.trim().parse().ok(),
            ExtensionValue::Boolean(_) => None,
        }
    }

    /// The entity id of an entity's event (its `entityid` extension); a fatal error for
    /// an event without one.
    pub fn entity_id(&self) -> Result<&str, Error> {
        self.string_extension("entityid").ok_or_else(|| {
            Error::Fatal(format!(
                "event {} ({}) has no string extension entityid; only an entity's events have one",
                self.id, self.type_
            ))
        })
    }

    /// The entity version of an entity's event (its `entityversion` extension, 1 for the
    /// entity's first event); a fatal error for an event without one.
    pub fn entity_version(&self) -> Result<i64, Error> {
        self.integer_extension("entityversion").ok_or_else(|| {
            Error::Fatal(format!(
                "event {} ({}) has no integer extension entityversion; only an entity's events have one",
                self.id, self.type_
            ))
        })
    }
}

/// Log lines into weir's logs, tagged with the projection's function (`wasi:logging`).
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
