//! Test guest for ordering and backpressure: appends each event's id to the key-value
//! entry `<subject>` of namespace `calls` (a comma-separated list, so the test sees the
//! order calls were made in per key), then forwards the event to `out`. With config
//! `spin_us`, it first busy-waits that many microseconds, to be a slow function.

use std::time::{Duration, Instant};

use weir_guest::{Error, Event, Function, Output, config, kv};

struct OrderLog;

impl Function for OrderLog {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        if let Some(us) = config::get("spin_us").and_then(|v| v.parse::<u64>().ok()) {
            let until = Instant::now() + Duration::from_micros(us);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        if config::get("record").as_deref() != Some("false") {
            let key = event.subject.clone().unwrap_or_else(|| "none".into());
            let bucket = kv::open("calls")?;
            let mut list = bucket
                .get(&key)?
                .and_then(|v| String::from_utf8(v).ok())
                .unwrap_or_default();
            if !list.is_empty() {
                list.push(',');
            }
            list.push_str(&event.id);
            bucket.set(&key, list.as_bytes())?;
        }
        Ok(vec![Output::to("out", event)])
    }
}

weir_guest::export_function!(OrderLog);
