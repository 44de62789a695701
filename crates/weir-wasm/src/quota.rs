//! A function's CPU quota (`limits.cpu_percent`): a token bucket of CPU time, shared by
//! every call of the function at once, charged with the calling thread's CPU clock.
//!
//! A call is charged what its thread's CPU clock advanced while it ran: at each epoch
//! tick while its wasm code runs (every [`crate::host::EPOCH_TICK`]) and when it ends.
//! When the bucket is empty the call's thread sleeps until the bucket's share of time
//! has paid the debt: at a tick (at most until the call's deadline, which still ends
//! the call), and before the next call starts (at most one deadline; what is left stays
//! owed). A sleeping call uses no CPU, so a function spinning at its deadline with a 10%
//! quota takes a tenth of one core however many calls of it run at once, and the rest
//! of the node keeps the CPU. Time a call waits on the host (a key-value store, an
//! outbound request) is not on its thread's CPU clock and is not charged.

use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How much CPU the bucket holds when full, in the quota's own time: a function that
/// was idle may run this long at full speed before its share holds it back.
const BURST: Duration = Duration::from_millis(100);

/// A function's CPU quota.
#[derive(Debug)]
pub(crate) struct CpuQuota {
    /// Cores' worth of CPU per second of wall time (0.1 for 10% of one core).
    cores: f64,
    bucket: Mutex<Bucket>,
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
    /// A quota of `percent` of one core, with a full bucket.
    pub(crate) fn new(percent: u32) -> CpuQuota {
        let cores = f64::from(percent.max(1)) / 100.0;
        CpuQuota {
            cores,
            bucket: Mutex::new(Bucket {
                balance: cores * BURST.as_secs_f64(),
                charged: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// Charge `used` CPU time; how long the caller must pause before it uses more.
    pub(crate) fn charge(&self, used: Duration) -> Duration {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let earned = now.saturating_duration_since(bucket.at).as_secs_f64() * self.cores;
        bucket.at = now;
        bucket.charged += used.as_secs_f64();
        bucket.balance =
            (bucket.balance + earned).min(self.cores * BURST.as_secs_f64()) - used.as_secs_f64();
        if bucket.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.balance / self.cores)
        }
    }
}

impl CpuQuota {
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
    Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_asks_for_the_debt_back() {
        let quota = CpuQuota::new(10);
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
