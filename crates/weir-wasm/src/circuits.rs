//! Circuit breakers per destination functions send HTTP to (`scheme://host:port`), shared
//! by every function of the host (`weir_breaker::Breaker`, as sinks use).
//!
//! A request that fails for the destination's sake (no connection, a timeout, TLS, a
//! `502`, `503` or `504` answer; not another `5xx`, which may be the request's doing)
//! counts; `threshold` in a row open the circuit, and while it is open a
//! request to the destination fails at once (`connection-refused`) without leaving the
//! node, until one probe goes and its success closes the circuit. A call that fails
//! after a request of it met the open circuit (or opened it, or was its failed probe) is
//! [`crate::CallError::Outage`]: the pipeline waits for the circuit and tries the event
//! again without charging it an attempt, so an outage does not burn events into the
//! dead-letter topic.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    opened: AtomicU64,
}

/// Destinations tracked at most: one gets a circuit at its first failure and loses it
/// once it answers again, unless it ever opened.
const MAX_TRACKED: usize = 1024;

/// The host's circuits, for the destinations functions had failures with.
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

/// What a request's answer tells of its destination.
pub(crate) enum Answer {
    /// It answered (with a status it is not down with).
    Up,
    /// It is down, or a gateway to it is: why.
    Down(String),
    /// Nothing: the request was refused before it left (a grant, an address).
    Unknown,
}

/// A request's place in its destination's circuit. Dropped without a report (the guest
/// dropped the request, the call ended first, or the answer told nothing), a probe counts
/// as failed, so the circuit opens again rather than waiting out the probe's timeout
/// half-open.
pub(crate) struct Ticket {
    circuits: Arc<Circuits>,
    circuit: Option<Arc<Circuit>>,
    destination: String,
    probe: bool,
    reported: bool,
}

impl Circuits {
    /// Circuits opening after `threshold` failures in a row; `0` keeps them all closed.
    pub(crate) fn new(threshold: u32) -> Circuits {
        Circuits {
            threshold,
            circuits: Mutex::default(),
        }
    }

    fn tracked(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Circuit>>> {
        self.circuits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// May a request go to `destination` now? `Ok(None)` with circuits off; `Err` with
    /// the outage when the circuit is open.
    pub(crate) fn admit(self: &Arc<Self>, destination: &str) -> Result<Option<Ticket>, Outage> {
        if self.threshold == 0 {
            return Ok(None);
        }
        let circuit = self.tracked().get(destination).cloned();
        let probe = match circuit.as_ref().map(|c| c.breaker.permit()) {
            None | Some(Permit::Attempt) => false,
            Some(Permit::Probe) => {
                transition(destination, "half_open");
                true
            }
            Some(Permit::Wait(wait)) => {
                return Err(Outage {
                    destination: destination.to_owned(),
                    wait: wait.max(SHORTEST_WAIT),
                });
            }
        };
        Ok(Some(Ticket {
            circuits: self.clone(),
            circuit,
            destination: destination.to_owned(),
            probe,
            reported: false,
        }))
    }

    /// Every tracked destination's circuit.
    pub(crate) fn status(&self) -> Vec<CircuitStatus> {
        self.tracked()
            .iter()
            .map(|(destination, c)| CircuitStatus {
                destination: destination.clone(),
                state: c.breaker.state(),
                opened: c.opened.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl Ticket {
    /// Record `answer`; the outage when a failure is not charged to the call (the circuit
    /// opened, was open, or this was its probe).
    pub(crate) fn report(self, answer: Answer) -> Option<Outage> {
        match answer {
            Answer::Up => {
                self.succeeded();
                None
            }
            Answer::Down(error) => self.failed(&error),
            Answer::Unknown => None,
        }
    }

    /// The destination answered.
    fn succeeded(mut self) {
        self.reported = true;
        let Some(circuit) = &self.circuit else {
            return;
        };
        if circuit.breaker.succeeded() {
            tracing::info!(destination = %self.destination, "outbound circuit closed: the destination answers again");
            transition(&self.destination, "closed");
        }
        // A destination that answers again and never opened is not tracked any more.
        if circuit.opened.load(Ordering::Relaxed) == 0 {
            let mut tracked = self.circuits.tracked();
            if tracked
                .get(&self.destination)
                .is_some_and(|c| Arc::ptr_eq(c, circuit))
                && circuit.breaker.state() == "closed"
            {
                tracked.remove(&self.destination);
            }
        }
    }

    /// The destination failed the request.
    fn failed(mut self, error: &str) -> Option<Outage> {
        self.reported = true;
        let circuit = match self.circuit.clone() {
            Some(circuit) => circuit,
            None => {
                let mut tracked = self.circuits.tracked();
                if tracked.len() >= MAX_TRACKED && !tracked.contains_key(&self.destination) {
                    tracing::debug!(destination = %self.destination, "too many failing destinations to track this one's circuit");
                    return None;
                }
                tracked
                    .entry(self.destination.clone())
                    .or_insert_with(|| {
                        Arc::new(Circuit {
                            breaker: Breaker::new(self.circuits.threshold, PROBE_TIMEOUT),
                            opened: AtomicU64::new(0),
                        })
                    })
                    .clone()
            }
        };
        let was_half_open = circuit.breaker.state() == "half_open";
        let (charged, opened) = circuit.breaker.failed(self.probe);
        if opened {
            circuit.opened.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(destination = %self.destination, %error, "outbound circuit opened: calls to it wait, then one probe goes");
            transition(&self.destination, "open");
        } else if self.probe && was_half_open {
            transition(&self.destination, "open");
        }
        (!charged).then(|| Outage {
            destination: self.destination.clone(),
            wait: circuit.breaker.wait().max(SHORTEST_WAIT),
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.reported
            && self.probe
            && let Some(circuit) = &self.circuit
        {
            circuit.breaker.failed(true);
            transition(&self.destination, "open");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_destination_is_tracked_from_its_first_failure_and_a_dropped_probe_reopens_it() {
        let circuits = Arc::new(Circuits::new(2));
        let to = "http://a:80";
        let down = || {
            circuits
                .admit(to)
                .unwrap()
                .unwrap()
                .report(Answer::Down("refused".into()))
        };
        // A success of an untracked destination tracks nothing.
        circuits.admit(to).unwrap().unwrap().report(Answer::Up);
        assert!(circuits.status().is_empty());
        // A failure tracks it; a success forgets it again (it never opened).
        assert_eq!(down(), None);
        assert_eq!(circuits.status()[0].state, "closed");
        circuits.admit(to).unwrap().unwrap().report(Answer::Up);
        assert!(circuits.status().is_empty());
        // Two in a row open it: the second is not charged to its call.
        assert_eq!(down(), None);
        let outage = down().unwrap();
        assert_eq!(outage.destination, to);
        assert!(outage.wait > Duration::ZERO);
        assert!(circuits.admit(to).is_err(), "open: refused at once");
        // The probe is dropped unanswered (the call ended): open again, not half-open.
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = circuits.admit(to).unwrap().unwrap();
        assert_eq!(circuits.status()[0].state, "half_open");
        drop(probe);
        assert_eq!(circuits.status()[0].state, "open");
        // A probe refused before it left (a grant) lets the next be one.
        tokio::time::advance(Duration::from_secs(2)).await;
        circuits.admit(to).unwrap().unwrap().report(Answer::Unknown);
        tokio::time::advance(Duration::from_secs(4)).await;
        circuits.admit(to).unwrap().unwrap().report(Answer::Up);
        let status = circuits.status();
        assert_eq!(
            (status[0].state, status[0].opened),
            ("closed", 1),
            "kept: it opened"
        );
        // Off: no tickets at all.
        assert!(Arc::new(Circuits::new(0)).admit(to).unwrap().is_none());
    }
}
