//! Circuit breakers per destination functions send HTTP to (`scheme://host:port`), shared
//! by every function of the host (`weir_breaker::Breaker`, as sinks use).
//!
//! A request that fails for the destination's sake (no connection, a timeout, TLS, a
//! `5xx` answer) counts; `threshold` in a row open the circuit, and while it is open a
//! request to the destination fails at once (`connection-refused`) without leaving the
//! node, until one probe goes and its success closes the circuit. A call that fails
//! after a request of it met the open circuit (or opened it, or was its failed probe) is
//! [`crate::CallError::Outage`]: the pipeline waits for the circuit and tries the event
//! again without charging it an attempt, so an outage does not burn events into the
//! dead-letter topic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use weir_breaker::{Breaker, Permit};

/// Failed requests in a row that open a destination's circuit, unless the host says.
pub const DEFAULT_CIRCUIT_FAILURES: u32 = 5;
/// How long a probe may take before another may go.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest wait an outage asks for.
const SHORTEST_WAIT: Duration = Duration::from_millis(50);

const TRANSITIONS: &str = "weir_outbound_circuit_transitions_total";

/// One destination's circuit as `weir status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitStatus {
    /// `scheme://host:port`.
    pub destination: String,
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// Times it opened since the node started.
    pub opened: u64,
}

struct Circuit {
    breaker: Breaker,
    opened: Mutex<u64>,
}

/// The host's circuits, one per destination a function sent to.
pub(crate) struct Circuits {
    threshold: u32,
    circuits: Mutex<BTreeMap<String, Arc<Circuit>>>,
}

impl Default for Circuits {
    fn default() -> Circuits {
        Circuits::new(DEFAULT_CIRCUIT_FAILURES)
    }
}

/// Why a call's failure is the destination's: what a request met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outage {
    pub(crate) destination: String,
    /// Until a probe may go.
    pub(crate) wait: Duration,
}

/// A request's place in its destination's circuit.
pub(crate) struct Ticket {
    circuit: Arc<Circuit>,
    destination: String,
    probe: bool,
}

impl Circuits {
    /// Circuits opening after `threshold` failures in a row; `0` keeps them all closed.
    pub(crate) fn new(threshold: u32) -> Circuits {
        Circuits {
            threshold,
            circuits: Mutex::default(),
        }
    }

    /// May a request go to `destination` now? `Ok(None)` with circuits off; `Err` with
    /// the outage when the circuit is open.
    pub(crate) fn admit(&self, destination: &str) -> Result<Option<Ticket>, Outage> {
        if self.threshold == 0 {
            return Ok(None);
        }
        let circuit = self
            .circuits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(destination.to_owned())
            .or_insert_with(|| {
                Arc::new(Circuit {
                    breaker: Breaker::new(self.threshold, PROBE_TIMEOUT),
                    opened: Mutex::new(0),
                })
            })
            .clone();
        let probe = match circuit.breaker.permit() {
            Permit::Attempt => false,
            Permit::Probe => {
                transition(destination, "half_open");
                true
            }
            Permit::Wait(wait) => {
                return Err(Outage {
                    destination: destination.to_owned(),
                    wait: wait.max(SHORTEST_WAIT),
                });
            }
        };
        Ok(Some(Ticket {
            circuit,
            destination: destination.to_owned(),
            probe,
        }))
    }

    /// Every destination's circuit.
    pub(crate) fn status(&self) -> Vec<CircuitStatus> {
        self.circuits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(destination, c)| CircuitStatus {
                destination: destination.clone(),
                state: c.breaker.state(),
                opened: *c.opened.lock().unwrap_or_else(PoisonError::into_inner),
            })
            .collect()
    }
}

impl Ticket {
    /// The destination answered (below 500).
    pub(crate) fn succeeded(self) {
        if self.circuit.breaker.succeeded() {
            tracing::info!(destination = %self.destination, "outbound circuit closed: the destination answers again");
            transition(&self.destination, "closed");
        }
    }

    /// The destination failed the request; the outage when the failure is not charged
    /// to the call (the circuit opened, was open, or this was its probe).
    pub(crate) fn failed(self, error: &str) -> Option<Outage> {
        let (charged, opened) = self.circuit.breaker.failed(self.probe);
        if opened {
            *self
                .circuit
                .opened
                .lock()
                .unwrap_or_else(PoisonError::into_inner) += 1;
            tracing::warn!(destination = %self.destination, %error, "outbound circuit opened: calls to it wait, then one probe goes");
            transition(&self.destination, "open");
        } else if self.probe {
            transition(&self.destination, "open");
        }
        (!charged).then(|| Outage {
            destination: self.destination,
            wait: self.circuit.breaker.wait().max(SHORTEST_WAIT),
        })
    }
}

fn transition(destination: &str, to: &'static str) {
    metrics::counter!(TRANSITIONS, "destination" => destination.to_owned(), "to" => to)
        .increment(1);
}

/// Describe the family (with the host's others).
pub(crate) fn describe() {
    metrics::describe_counter!(
        TRANSITIONS,
        metrics::Unit::Count,
        "a circuit breaker of a destination functions send HTTP to changing state, by destination and the state it went to: open, half_open, closed"
    );
}
