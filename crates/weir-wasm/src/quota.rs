//! A function's CPU quota (`limits.cpu_percent`): a token bucket of CPU time, shared by
//! every call of the function at once, charged with the calling thread's CPU clock.
//!
//! A call is charged what its thread's CPU clock advanced while it ran: at each epoch
//! tick while its wasm code runs (every [`crate::host::EPOCH_TICK`]) and when it ends.
//! A call starts only once the bucket is out of debt (before its deadline starts), so
//! however many calls run at once, each adds at most about a tick to the debt before it
//! is charged; a running call that finds the bucket in debt at a tick sleeps until the
//! share has paid it (at most until its deadline, which then ends the call as
//! `unavailable`: see `Function::classify`). A sleeping call uses no CPU, so a function
//! spinning at its deadline with a 10% quota takes about a tenth of one core, and the rest
//! of the node keeps the CPU. The debt is floored at [`MAX_DEBT`] of the share. Time a
//! call waits on the host (a key-value store, an outbound request) is not on its thread's
//! CPU clock and is not charged.

use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How much CPU the bucket holds when full, in the quota's own time: a function that
/// was idle may run this long at full speed before its share holds it back.
const BURST: Duration = Duration::from_millis(100);

/// The longest the quota's debt takes to pay back.
const MAX_DEBT: Duration = Duration::from_secs(1);

/// A function's CPU quota.
pub(crate) struct CpuQuota {
    percent: u32,
    /// Cores' worth of CPU per second of wall time (0.1 for 10% of one core).
    cores: f64,
    bucket: Mutex<Bucket>,
    /// `weir_function_quota_wait_seconds` of the function.
    waits: metrics::Histogram,
}

#[derive(Debug)]
struct Bucket {
    /// CPU seconds the function may still use now; negative when it owes.
    balance: f64,
    /// CPU seconds charged in all.
    charged: f64,
    /// When `balance` was last brought up to date.
    at: Instant,
}

impl CpuQuota {
    /// A quota of `percent` of one core for `function`, with a full bucket.
    pub(crate) fn new(function: &str, percent: u32) -> CpuQuota {
        let cores = f64::from(percent.max(1)) / 100.0;
        CpuQuota {
            waits: crate::telemetry::quota_wait(function),
            percent,
            cores,
            bucket: Mutex::new(Bucket {
                balance: cores * BURST.as_secs_f64(),
                charged: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// The quota `limits` give `function`, if any: a bucket of its own.
    pub(crate) fn of(function: &str, limits: &crate::Limits) -> Option<std::sync::Arc<CpuQuota>> {
        limits
            .cpu_percent
            .map(|percent| std::sync::Arc::new(CpuQuota::new(function, percent)))
    }

    /// Charge `used` CPU time; how long the caller must pause before it uses more.
    pub(crate) fn charge(&self, used: Duration) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * self.cores;
        bucket.at = now;
        bucket.charged += used.as_secs_f64();
        // The debt is floored at a second of the share: calls cut off at their deadline
        // under a long overload must not leave the function held back for minutes.
        bucket.balance = ((bucket.balance + earned).min(self.cores * BURST.as_secs_f64())
            - used.as_secs_f64())
        .max(-self.cores * MAX_DEBT.as_secs_f64());
        if bucket.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.balance / self.cores)
        }
    }

    /// Sleep `pause` (no longer than `at_most`), recording the wait.
    pub(crate) fn wait(&self, pause: Duration, at_most: Duration) {
        let pause = pause.min(at_most);
        if !pause.is_zero() {
            std::thread::sleep(pause);
            self.waits.record(pause);
        }
    }

    /// Sleep until the bucket is out of debt (at most [`MAX_DEBT`] a time, what the
    /// floor allows).
    pub(crate) fn wait_until_paid(&self) {
        loop {
            let pause = self.charge(Duration::ZERO);
            if pause.is_zero() {
                return;
            }
            self.wait(pause, MAX_DEBT);
        }
    }

    pub(crate) fn percent(&self) -> u32 {
        self.percent
    }

    /// CPU time charged so far.
    #[cfg(test)]
    pub(crate) fn charged(&self) -> Duration {
        let bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        Duration::from_secs_f64(bucket.charged)
    }
}

/// Where a call's CPU clock stood when it was last charged: the thread it runs on and
/// that thread's CPU time then.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMark {
    thread: ThreadId,
    cpu: Duration,
}

impl CpuMark {
    /// The calling thread's CPU clock now.
    pub(crate) fn now() -> CpuMark {
        CpuMark {
            thread: std::thread::current().id(),
            cpu: thread_cpu(),
        }
    }

    /// CPU time the calling thread used since the mark; nothing if the mark was taken on
    /// another thread (a call is charged on the thread it ran on).
    pub(crate) fn used(&self) -> Duration {
        if self.thread == std::thread::current().id() {
            thread_cpu().saturating_sub(self.cpu)
        } else {
            Duration::ZERO
        }
    }
}

/// The calling thread's CPU time (user and system).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_asks_for_the_debt_back() {
        let quota = CpuQuota::new("f", 10);
        // 10% of one core, 100 ms of burst: 10 ms of CPU are free.
        assert_eq!(quota.charge(Duration::from_millis(5)), Duration::ZERO);
        // 10 ms more makes about 5 ms of debt, which 10% of a core earns back in ~50 ms.
        let pause = quota.charge(Duration::from_millis(10));
        assert!(
            pause > Duration::from_millis(40) && pause <= Duration::from_millis(50),
            "{pause:?}"
        );
    }

    #[test]
    fn a_thread_that_spins_advances_its_cpu_clock_and_another_threads_mark_charges_nothing() {
        let mark = CpuMark::now();
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_millis(30) {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        assert!(mark.used() > Duration::ZERO);
        let elsewhere = std::thread::spawn(move || mark.used()).join().unwrap();
        assert_eq!(elsewhere, Duration::ZERO);
    }
}
