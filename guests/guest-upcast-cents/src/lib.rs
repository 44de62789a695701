//! Test guest: an upcaster (`[schemas.<type>.upcast.1] function = ...`). Version 1 of
//! the type carries `total` as a decimal string ("12.50"); version 2 carries
//! `total_cents`, an integer. A computed field, which a declarative mapping cannot say.
//! An event without a readable `total` fails, so a test can see the failure handled.

use serde_json::{Map, Value};
use weir_guest::{Error, Event, Function, Output};

struct Cents;

impl Function for Cents {
    fn handle(mut event: Event) -> Result<Vec<Output>, Error> {
        let mut data: Map<String, Value> = event.json()?;
        let total = data
            .remove("total")
            .and_then(|t| t.as_str().and_then(|t| t.parse::<f64>().ok()))
            .ok_or_else(|| Error::Fatal(format!("event {} has no decimal total", event.id)))?;
        data.insert(
            "total_cents".into(),
            Value::from((total * 100.0).round() as i64),
        );
        event.set_json(&data)?;
        Ok(vec![Output::to("", event)])
    }
}

weir_guest::export_function!(Cents);
