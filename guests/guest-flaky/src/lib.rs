//! Test guest for retries: an event with an integer extension `failtimes = N` fails with a
//! retryable error on its first N calls and is forwarded to `out` on the next one. Calls
//! are counted per event id in the key-value namespace `attempts` (instances do not
//! survive a failed call, so the count cannot live in the guest), and the forwarded event
//! carries the count as extension `attempts`.

use weir_guest::{Error, Event, ExtensionValue, Function, Output, kv};

struct Flaky;

impl Function for Flaky {
    fn handle(mut event: Event) -> Result<Vec<Output>, Error> {
        let fail_times = match event.extension("failtimes") {
            Some(ExtensionValue::Integer(n)) => *n,
            Some(ExtensionValue::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        let bucket = kv::open("attempts")?;
        let calls = bucket
            .get(&event.id)?
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        bucket.set(&event.id, calls.to_string().as_bytes())?;
        if calls <= fail_times {
            return Err(Error::Retryable(format!(
                "call {calls} of event {} fails on purpose",
                event.id
            )));
        }
        event.set_extension("attempts", ExtensionValue::Integer(calls));
        Ok(vec![Output::to("out", event)])
    }
}

weir_guest::export_function!(Flaky);
