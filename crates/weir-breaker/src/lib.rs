//! A circuit breaker: consecutive failed attempts open it, so that during an outage a sink
//! (or a pipeline whose function calls a host) pauses and probes instead of burning every
//! event's retries into the dead-letter topic. One per sink, and one per host functions
//! send HTTP to.
//!
//! Closed: attempts go out; `threshold` failures in a row (of any of its users) open it. Open: no attempt goes out until the open period ends (1 s, doubling
//! each time a probe fails, up to 30 s), then one probe goes (half-open): a success closes
//! it, a failure opens it again. An attempt that fails while the circuit opens, or as a
//! probe, is not counted against the event's retries: the receiver, not the event, failed.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

const FIRST_OPEN: Duration = Duration::from_secs(1);
const LONGEST_OPEN: Duration = Duration::from_secs(30);

/// What the breaker says of an attempt about to be made.
#[derive(Debug, PartialEq, Eq)]
pub enum Permit {
    /// Go: the circuit is closed.
    Attempt,
    /// Go as the probe of a half-open circuit.
    Probe,
    /// Wait this long, then ask again.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        period: Duration,
    },
    /// A probe is out; others wait for its answer, or until `until` (a probe whose task
    /// was stopped never answers: another goes then).
    HalfOpen {
        period: Duration,
        until: Instant,
    },
}

/// One destination's breaker, shared by everything that sends to it.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    /// How long a probe may take: the sink's timeout and a margin.
    probe_timeout: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(threshold: u32, probe_timeout: Duration) -> Breaker {
        Breaker {
            threshold,
            probe_timeout,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn state(&self) -> &'static str {
        match *self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }

    /// How long until a probe may go: zero unless the circuit is open.
    pub fn wait(&self) -> Duration {
        match *self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Open { until, .. } => until.saturating_duration_since(Instant::now()),
            _ => Duration::ZERO,
        }
    }

    pub fn permit(&self) -> Permit {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Permit::Attempt,
            State::Open { until, period } | State::HalfOpen { until, period } => {
                let now = Instant::now();
                if now < until {
                    // While half-open, ask again soon: the probe's answer decides.
                    let half_open = matches!(*state, State::HalfOpen { .. });
                    Permit::Wait(if half_open {
                        (until - now).min(Duration::from_millis(50))
                    } else {
                        until - now
                    })
                } else {
                    *state = State::HalfOpen {
                        period,
                        until: now + self.probe_timeout,
                    };
                    Permit::Probe
                }
            }
        }
    }

    /// An attempt succeeded; `true` if that closed the circuit.
    pub fn succeeded(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let was_closed = matches!(*state, State::Closed { .. });
        *state = State::Closed { failures: 0 };
        !was_closed
    }

    /// An attempt failed (the receiver's fault: no answer, a timeout, a 5xx). Returns
    /// whether the event is charged the attempt (the circuit was and stays closed) and
    /// whether this failure opened the circuit.
    pub fn failed(&self, probe: bool) -> (bool, bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match *state {
            State::Closed { failures } if !probe => {
                let failures = failures + 1;
                if failures >= self.threshold {
                    *state = State::Open {
                        until: now + FIRST_OPEN,
                        period: FIRST_OPEN,
                    };
                    (false, true)
                } else {
                    *state = State::Closed { failures };
                    (true, false)
                }
            }
            State::HalfOpen { period, .. } if probe => {
                let period = (period * 2).min(LONGEST_OPEN);
                *state = State::Open {
                    until: now + period,
                    period,
                };
                (false, false)
            }
            // An attempt that went out before the circuit opened, answered after.
            _ => (false, false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_probes_after_its_period_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_secs(5));
        assert_eq!(b.failed(false), (true, false));
        assert_eq!(b.failed(false), (true, false));
        assert!(!b.succeeded(), "a success while closed changes nothing");
        assert_eq!(b.failed(false), (true, false));
        assert_eq!(b.failed(false), (true, false));
        assert_eq!(
            b.failed(false),
            (false, true),
            "the third in a row opens it"
        );
        assert_eq!(b.state(), "open");
        assert!(matches!(b.permit(), Permit::Wait(d) if d <= FIRST_OPEN));
        tokio::time::advance(FIRST_OPEN).await;
        assert_eq!(b.permit(), Permit::Probe);
        assert_eq!(b.state(), "half_open");
        assert!(matches!(b.permit(), Permit::Wait(_)), "one probe at a time");
        assert_eq!(b.failed(true), (false, false));
        // The failed probe doubled the period.
        tokio::time::advance(FIRST_OPEN).await;
        assert!(matches!(b.permit(), Permit::Wait(_)));
        tokio::time::advance(FIRST_OPEN).await;
        assert_eq!(b.permit(), Permit::Probe);
        // A probe that never answers (its task stopped) lets another go after its timeout.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.permit(), Permit::Probe);
        assert!(b.succeeded());
        assert_eq!(b.state(), "closed");
        assert_eq!(b.permit(), Permit::Attempt);
    }
}
