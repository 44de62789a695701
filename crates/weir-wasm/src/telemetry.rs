//! The function host's metrics, named and described here, and the handles each
//! [`crate::InstancePool`] keeps so that a call costs atomic adds, not label lookups.
//! Labels: the function's name, and an error's kind (a fixed set, [`CallError::kind`]).

use std::time::Duration;

use metrics::{Counter, Histogram, Unit, counter, describe_counter, describe_histogram, histogram};

use crate::CallError;

const CALLS: &str = "weir_function_calls_total";
const ERRORS: &str = "weir_function_errors_total";
const DURATION: &str = "weir_function_call_duration_seconds";
const MEMORY: &str = "weir_function_memory_bytes";
const QUOTA_WAIT: &str = "weir_function_quota_wait_seconds";

/// Describe the host's families to the installed recorder (the engine does when a node
/// starts).
pub fn describe_metrics() {
    crate::circuits::describe();
    describe_counter!(
        CALLS,
        Unit::Count,
        "function calls (by pipelines, through their instance pools), failed or not"
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "function calls that failed, by kind (trap, deadline, memory, fuel, retryable, fatal, ...)"
    );
    describe_histogram!(
        DURATION,
        Unit::Seconds,
        "how long a function call took, instantiation included when no warm instance was idle"
    );
    describe_histogram!(
        MEMORY,
        Unit::Bytes,
        "linear memory an instance held after a call"
    );
    describe_histogram!(
        QUOTA_WAIT,
        Unit::Seconds,
        "how long a call of a function with a CPU quota (limits.cpu_percent) slept for it, each time it did"
    );
}

/// The handle a function's CPU quota records its waits in.
pub(crate) fn quota_wait(function: &str) -> Histogram {
    histogram!(QUOTA_WAIT, "function" => function.to_owned())
}

/// One pool's handles.
#[derive(Clone)]
pub(crate) struct CallMetrics {
    function: String,
    calls: Counter,
    duration: Histogram,
    memory: Histogram,
}

impl CallMetrics {
    pub(crate) fn new(function: &str) -> CallMetrics {
        CallMetrics {
            function: function.to_owned(),
            calls: counter!(CALLS, "function" => function.to_owned()),
            duration: histogram!(DURATION, "function" => function.to_owned()),
            memory: histogram!(MEMORY, "function" => function.to_owned()),
        }
    }

    /// A call ended after `took`, its instance holding `memory_bytes` (none if the call
    /// never got an instance).
    pub(crate) fn called<T>(
        &self,
        took: Duration,
        memory_bytes: Option<usize>,
        result: &Result<T, CallError>,
    ) {
        self.calls.increment(1);
        self.duration.record(took);
        if let Some(bytes) = memory_bytes {
            self.memory.record(bytes as f64);
        }
        if let Err(e) = result {
            // Failures are rare: their handle is made when they happen.
            counter!(ERRORS, "function" => self.function.clone(), "kind" => e.kind()).increment(1);
        }
    }
}
