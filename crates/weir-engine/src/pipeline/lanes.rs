//! Calling the function on a batch's events in lanes, as the ordering allows, with retries.

use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use weir_cloudevents::CloudEvent;
use weir_log::StoredRecord;
use weir_manifest::Ordering;
use weir_wasm::{CallError, InstancePool};

use super::{Pipeline, now_rfc3339};
use crate::Result;
use crate::routing::{
    DeadLetterCause, InputPosition, complete_outputs_in_step, dead_letter_event, event_key,
    undecodable_event,
};

/// The longest an event waits for an open outbound circuit before it asks again.
const OUTAGE_LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Waits for open circuits an event gets before its failures are charged (the circuit's
/// probes back off to 30 s: about 20 minutes of outage).
const MAX_OUTAGE_WAITS: u32 = 45;
use crate::schemas::Upcasting;
use crate::trace;

/// What became of one event of a batch.
pub(super) enum Outcome {
    /// The function ran; these are its completed outputs.
    Outputs(Vec<(String, CloudEvent)>),
    /// The filter kept it from the function.
    Filtered,
    /// It goes to the dead-letter topic as this event.
    DeadLetter(Box<CloudEvent>),
}

/// What a lane's run on a call thread did.
struct LaneRun {
    /// The events it finished, by index in the batch.
    done: Vec<(usize, Outcome)>,
    /// Set when a call must be tried again after a wait.
    backoff: Option<Backoff>,
}

impl LaneRun {
    /// The lane stops at `work`, to go on with it (then the rest of `lane`) after `wait`,
    /// at try `attempt` with `outages` circuit waits behind it.
    fn paused(
        done: Vec<(usize, Outcome)>,
        work: Work,
        lane: std::vec::IntoIter<Work>,
        wait: Duration,
        (attempt, outages): (u32, u32),
    ) -> LaneRun {
        let rest = std::iter::once(work).chain(lane).collect();
        LaneRun {
            done,
            backoff: Some(Backoff {
                wait,
                rest,
                attempt,
                outages,
            }),
        }
    }
}

/// A lane waiting to try a call again: the wait, the events left (the one to try again
/// first) and the try it will be.
struct Backoff {
    wait: Duration,
    rest: Vec<Work>,
    attempt: u32,
    /// Waits for an open outbound circuit the first event of `rest` had.
    outages: u32,
}

/// An event of a batch on its way to a lane.
pub(super) struct Work {
    index: usize,
    offset: u64,
    /// What the function is called with: upcast if the event was.
    event: CloudEvent,
    /// The event as written, when `event` is upcast: what a dead letter carries.
    written: Option<Box<CloudEvent>>,
    /// Whether `event` is still to be upcast (on the lane, before its first call: an
    /// upcaster may be a function, which must not run on the runtime's workers).
    upcast_pending: bool,
    /// The event's trace span through this pipeline (disabled unless traces are exported).
    step: tracing::Span,
}

/// The trace spans of a batch's steps, kept open until the batch is committed (empty
/// unless traces are exported).
pub(super) type Steps = Vec<tracing::Span>;

impl Pipeline {
    /// Decode, filter and call the function on a batch's events, in lanes as the
    /// ordering allows, with the trace spans of their steps. `None` if the node stopped
    /// before the batch was done.
    pub(super) async fn handle_batch(
        self: &Arc<Self>,
        instances: &InstancePool,
        topic: &str,
        partition: u32,
        records: Vec<StoredRecord>,
        cancel: &CancellationToken,
    ) -> Result<Option<(Vec<Outcome>, Steps)>> {
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(records.len());
        let mut steps = Steps::new();
        let lanes_wanted = match self.ordering {
            Ordering::Partition => 1,
            Ordering::Key | Ordering::None => self.concurrency as usize,
        };
        let mut lanes: Vec<Vec<Work>> = (0..lanes_wanted).map(|_| Vec::new()).collect();
        let mut spread = 0usize;
        // Events written under an older schema version reach the function upcast.
        let upcasting = self.schemas.upcasting().map(Arc::new);
        for (index, record) in records.into_iter().enumerate() {
            let offset = record.offset;
            let pos = self.position(topic, partition, offset);
            match CloudEvent::from_json_slice(&record.value) {
                Err(e) => {
                    let cause = DeadLetterCause {
                        function: &self.function,
                        version: instances.function().version(),
                        reason: "undecodable",
                        error: &format!("stored record is not a CloudEvent: {e}"),
                        attempts: 0,
                        time: now_rfc3339(),
                    };
                    let event = undecodable_event(pos, record.value);
                    outcomes.push(Some(Outcome::DeadLetter(Box::new(dead_letter_event(
                        pos, event, &cause,
                    )))));
                }
                Ok(event) => {
                    let step = trace::step_span(&self.name, topic, partition, offset, &event);
                    if !step.is_disabled() {
                        steps.push(step.clone());
                    }
                    if !self.accepts(&event) {
                        step.record("weir.outcome", "filtered");
                        outcomes.push(Some(Outcome::Filtered));
                        continue;
                    }
                    let lane = match self.ordering {
                        Ordering::Partition => 0,
                        Ordering::Key => match event_key(&event) {
                            Some(key) => lane_of(&key, lanes_wanted),
                            None => {
                                spread += 1;
                                spread % lanes_wanted
                            }
                        },
                        Ordering::None => {
                            spread += 1;
                            spread % lanes_wanted
                        }
                    };
                    lanes[lane].push(Work {
                        index,
                        offset,
                        event,
                        written: None,
                        upcast_pending: upcasting.is_some(),
                        step,
                    });
                    outcomes.push(None);
                }
            }
        }

        let mut running = Vec::new();
        for lane in lanes.into_iter().filter(|l| !l.is_empty()) {
            running.push(self.drive_lane(
                instances,
                upcasting.clone(),
                topic,
                partition,
                lane,
                cancel,
            ));
        }
        // Wait for every lane, even after one gave up, so no call runs on after the batch.
        let mut stopped = false;
        for lane in futures::future::join_all(running).await {
            match lane? {
                Some(done) => {
                    for (index, outcome) in done {
                        outcomes[index] = Some(outcome);
                    }
                }
                None => stopped = true,
            }
        }
        if stopped {
            return Ok(None);
        }
        Ok(Some((
            outcomes
                .into_iter()
                .map(|o| o.expect("every event of the batch has an outcome"))
                .collect(),
            steps,
        )))
    }

    /// Counts a retry of try `attempt` and says how long to back off before the next.
    fn retry_backoff(&self, attempt: u32) -> Duration {
        self.retries.fetch_add(1, AtomicOrdering::Relaxed);
        self.metrics.retries.increment(1);
        super::jittered_backoff(&self.retry, attempt)
    }

    pub(super) fn position<'a>(
        &'a self,
        topic: &'a str,
        partition: u32,
        offset: u64,
    ) -> InputPosition<'a> {
        InputPosition {
            pipeline: &self.name,
            topic,
            partition,
            offset,
        }
    }

    /// Call the function on a lane's events in order on one of the pipeline's call
    /// threads (see `weir_wasm::CallThreads`), retrying retryable failures. A retry's
    /// backoff is waited here, on the runtime, so a lane that backs off holds no thread.
    /// `None` if the node stopped first.
    async fn drive_lane(
        self: &Arc<Self>,
        instances: &InstancePool,
        upcasting: Option<Arc<Upcasting>>,
        topic: &str,
        partition: u32,
        lane: Vec<Work>,
        cancel: &CancellationToken,
    ) -> Result<Option<Vec<(usize, Outcome)>>> {
        let mut done = Vec::with_capacity(lane.len());
        let (mut rest, mut attempt, mut outages) = (lane, 1, 0);
        loop {
            let (this, instances, upcasting, topic_owned) = (
                self.clone(),
                instances.clone(),
                upcasting.clone(),
                topic.to_owned(),
            );
            let (answer, run) = tokio::sync::oneshot::channel();
            self.runners.submit(Box::new(move || {
                // A lane whose batch was dropped before its turn came is not run.
                if answer.is_closed() {
                    return;
                }
                let run = this.run_lane(
                    &instances,
                    upcasting.as_deref(),
                    &topic_owned,
                    partition,
                    rest,
                    (attempt, outages),
                );
                let _ = answer.send(run);
            }));
            let run = run.await.map_err(|_| {
                crate::Error::Task("a lane's call panicked or its thread never started".into())
            })?;
            done.extend(run.done);
            let Some(backoff) = run.backoff else {
                return Ok(Some(done));
            };
            tokio::select! {
                _ = cancel.cancelled() => return Ok(None),
                _ = tokio::time::sleep(backoff.wait) => {}
            }
            (rest, attempt, outages) = (backoff.rest, backoff.attempt, backoff.outages);
        }
    }

    /// Call the function on a lane's events in order, the first one starting at try
    /// `attempt`, until they are all done or a retryable failure asks for a backoff.
    /// Blocking.
    fn run_lane(
        &self,
        instances: &InstancePool,
        upcasting: Option<&Upcasting>,
        topic: &str,
        partition: u32,
        lane: Vec<Work>,
        (mut attempt, mut outages): (u32, u32),
    ) -> LaneRun {
        let function = instances.function();
        let mut done = Vec::with_capacity(lane.len());
        let mut lane = lane.into_iter();
        while let Some(mut work) = lane.next() {
            let pos = self.position(topic, partition, work.offset);
            if std::mem::take(&mut work.upcast_pending)
                && let Some(upcasting) = upcasting
            {
                match upcasting.upcast(&work.event) {
                    Ok(Some(upcast)) => {
                        let written = std::mem::replace(&mut work.event, upcast);
                        work.written = Some(Box::new(written));
                    }
                    Ok(None) => {}
                    Err(failure) if failure.retryable && attempt < self.retry.max_attempts => {
                        // An upcaster function's passing failure: tried again after a
                        // backoff, as the pipeline's own function would be.
                        let wait = self.retry_backoff(attempt);
                        tracing::warn!(pipeline = %self.name, topic, partition, offset = work.offset, event_id = %work.event.id, attempt, error = %failure, wait_ms = wait.as_millis() as u64, "upcast failed; trying again");
                        work.upcast_pending = true;
                        return LaneRun::paused(done, work, lane, wait, (attempt + 1, outages));
                    }
                    Err(failure) => {
                        // Dead-lettered as written, saying why.
                        let error = failure.reason;
                        tracing::warn!(pipeline = %self.name, function = %self.function, topic, partition, offset = work.offset, event_id = %work.event.id, %error, reason = "upcast_failed", attempts = attempt, dead_letter = %self.dead_letter, "event dead-lettered");
                        work.step.record("weir.outcome", "dead_letter");
                        let cause = DeadLetterCause {
                            function: &self.function,
                            version: function.version(),
                            reason: "upcast_failed",
                            error: &error,
                            attempts: attempt,
                            time: now_rfc3339(),
                        };
                        let outcome = dead_letter_event(pos, work.event, &cause);
                        done.push((work.index, Outcome::DeadLetter(Box::new(outcome))));
                        attempt = 1;
                        outages = 0;
                        continue;
                    }
                }
            }
            let outcome = 'call: {
                // At debug level: a served node logs at info, where formatting a span's
                // fields for every event cost a quarter of the pipeline's CPU.
                let span = tracing::debug_span!(
                    "function_call",
                    pipeline = %self.name,
                    function = %self.function,
                    version = function.version(),
                    topic,
                    partition,
                    offset = work.offset,
                    event_id = %work.event.id,
                    trace_id = trace_id(&work.event).unwrap_or_default(),
                    attempt,
                );
                let call =
                    trace::call_span(&work.step, &self.function, function.version(), attempt);
                let result = call.in_scope(|| span.in_scope(|| instances.call(&work.event)));
                let failure = match result {
                    Ok(outputs) => {
                        let step_traceparent = trace::span_traceparent(&work.step);
                        match complete_outputs_in_step(
                            pos,
                            &self.to,
                            &work.event,
                            outputs,
                            step_traceparent.as_deref(),
                        )
                        .and_then(|outputs| self.schemas.check_outputs(&outputs).map(|()| outputs))
                        {
                            Ok(outputs) => {
                                work.step.record("weir.outcome", "outputs");
                                break 'call Outcome::Outputs(outputs);
                            }
                            Err(reason) => function.invalid(reason),
                        }
                    }
                    Err(e) => e,
                };
                if !call.is_disabled() {
                    call.record("otel.status_description", failure.to_string().as_str());
                }
                // The destination a request of the call met is down (its circuit open):
                // wait for the circuit without charging the event an attempt, up to a
                // bound (an event that fails the destination itself, again and again,
                // is then charged its attempts as any other).
                if let CallError::Outage {
                    wait, destination, ..
                } = &failure
                    && outages < MAX_OUTAGE_WAITS
                {
                    let wait = (*wait).min(OUTAGE_LONGEST_WAIT);
                    tracing::info!(pipeline = %self.name, function = %self.function, topic, partition, offset = work.offset, event_id = %work.event.id, %destination, wait_ms = wait.as_millis() as u64, "outbound circuit open; the event waits for it");
                    return LaneRun::paused(done, work, lane, wait, (attempt, outages + 1));
                }
                let retry = failure.is_retryable() && attempt < self.retry.max_attempts;
                if retry {
                    let wait = self.retry_backoff(attempt);
                    tracing::warn!(pipeline = %self.name, function = %self.function, version = function.version(), topic, partition, offset = work.offset, event_id = %work.event.id, attempt, error = %failure, wait_ms = wait.as_millis() as u64, "call failed; trying again");
                    return LaneRun::paused(done, work, lane, wait, (attempt + 1, outages));
                }
                let reason = if failure.is_retryable() {
                    "retries_exhausted"
                } else {
                    failure.kind()
                };
                tracing::warn!(pipeline = %self.name, function = %self.function, version = function.version(), topic, partition, offset = work.offset, event_id = %work.event.id, trace_id = trace_id(&work.event).unwrap_or_default(), error = %failure, reason, attempts = attempt, dead_letter = %self.dead_letter, "event dead-lettered");
                let cause = DeadLetterCause {
                    function: &self.function,
                    version: function.version(),
                    reason,
                    error: &failure.to_string(),
                    attempts: attempt,
                    time: now_rfc3339(),
                };
                work.step.record("weir.outcome", "dead_letter");
                // As written: a redrive sends back what was stored.
                let event = match &work.written {
                    Some(written) => (**written).clone(),
                    None => work.event.clone(),
                };
                Outcome::DeadLetter(Box::new(dead_letter_event(pos, event, &cause)))
            };
            done.push((work.index, outcome));
            attempt = 1;
            outages = 0;
        }
        LaneRun {
            done,
            backoff: None,
        }
    }
}

/// Which of `lanes` lanes the events with `key` go to: always the same one.
fn lane_of(key: &[u8], lanes: usize) -> usize {
    (fnv1a(key) % lanes as u64) as usize
}

/// FNV-1a: stable across runs and cheap on short keys.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The trace id of the event's W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(event: &CloudEvent) -> Option<&str> {
    match event.extensions.get("traceparent") {
        Some(weir_cloudevents::ExtensionValue::String(tp)) => tp.split('-').nth(1),
        _ => None,
    }
}
