//! Test guest: counts the calls its instance has served in a global and puts the count in
//! the output's `subject`, so tests can see which calls shared an instance. `test.fail`
//! returns a fatal error (after counting).

use std::sync::atomic::{AtomicU64, Ordering};

use weir_guest::{Error, Event, Function, Output};

static CALLS: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Function for Counter {
    fn handle(event: Event) -> Result<Vec<Output>, Error> {
        let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
        if event.type_ == "test.fail" {
            return Err(Error::Fatal(format!("failing on call {calls}")));
        }
        let mut out = event;
        out.subject = Some(calls.to_string());
        Ok(vec![Output::to("out", out)])
    }
}

weir_guest::export_function!(Counter);
