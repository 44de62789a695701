//! `telemetry-alert`: sensors publish readings over MQTT (`sensors/<device>/temp`, a JSON
//! body `{"celsius": 81.5}`); weir's source turns each into an event keyed by the device.
//! A reading over the `threshold` in the function's config becomes a
//! `com.example.telemetry.alert` on `alerts`, which a sink delivers to a signed webhook.
//! Readings at or under it publish nothing.

use serde::{Deserialize, Serialize};
use weir_guest::{Error, Event, Function, Output, config};

#[derive(Deserialize)]
struct Reading {
    celsius: f64,
}

#[derive(Serialize)]
struct Alert<'a> {
    device: &'a str,
    celsius: f64,
    threshold: f64,
}

struct TelemetryAlert;

impl Function for TelemetryAlert {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        let reading: Reading = event.json()?;
        let threshold = config::require_f64("threshold")?;
        if reading.celsius <= threshold {
            return Ok(Vec::new());
        }
        // The source keys each reading by its device (`key = "{subject.1}"`).
        let device = match event.extension("partitionkey") {
            Some(weir_guest::ExtensionValue::String(device)) => device.clone(),
            _ => event.subject.clone().unwrap_or_default(),
        };
        let mut alert = Event::new("weir://functions/telemetry-alert", "com.example.telemetry.alert");
        alert.subject = event.subject.clone();
        alert.time = event.time.clone();
        alert.set_extension("partitionkey", weir_guest::ExtensionValue::String(device.clone()));
        alert.set_json(&Alert {
            device: &device,
            celsius: reading.celsius,
            threshold,
        })?;
        Ok(vec![Output::to("alerts", alert)])
    }
}

weir_guest::export_function!(TelemetryAlert);
