//! Call threads: where a pipeline's lanes and a route's requests run.
//!
//! **Architecture Invariant:** a [`CallThreads`] queues jobs (a lane's calls, a request's
//! call) in the order they were submitted and runs them on threads of the runtime's
//! blocking pool, at most `limit` of them running a job's code at once. A thread that
//! finishes a job takes the next from the queue itself, and goes back to the pool only
//! when the queue is empty. So a busy queue's jobs follow each other on the same threads
//! with no hand-off through the runtime (a `spawn_blocking` per job, with its wake-ups),
//! which left a core idle for a moment at each job's end.
//!
//! Two kinds:
//! - [`CallThreads::calls`] (a pipeline's): at most `limit` jobs run at once, whatever
//!   they do; `limit` is the pipeline's `concurrency`, a cap on its calls.
//! - [`CallThreads::compensating`] (a route's): at most `limit` threads run a job's code
//!   at once, `limit` being the cores. A thread whose guest waits on the host (a host
//!   wait that did not complete at once: an outbound request's response, a body's
//!   stream, a publish waiting for the log, a key-value write; see [`waiting`] and
//!   [`Waiting::start`]) does not count while it waits; if jobs are queued, another
//!   thread is taken to run them meanwhile. When the waiter is back and more than
//!   `limit` threads run, the first to finish a job leaves. So CPU-bound requests run
//!   about one per core, with no more switching than that, and requests waiting on the
//!   network or the disk do not keep the others queued.
//!
//! `running` (the threads taken), `waiting` and the queue change together under one lock:
//! a job queued while every thread is taken is run by one of them before it leaves, since
//! a thread leaves either when it finds the queue empty, or when more than `limit` others
//! run code (and those run the queue), under that lock.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;

/// A job: a lane's or a request's run, with whatever it reports its result through.
pub type Job = Box<dyn FnOnce() + Send>;

/// At most this many threads of one compensating [`CallThreads`], waiting or not (the
/// runtime's blocking pool has 512 by default, shared by the whole node). The other kind
/// takes at most its limit (a pipeline's `concurrency`, up to 1024).
const MOST_THREADS: usize = 256;

/// A queue of jobs and the threads that run it; see the module's invariant.
pub struct CallThreads {
    limit: usize,
    /// Threads taken at most, waiting or not: `limit`, or [`MOST_THREADS`] for the
    /// compensating kind.
    most: usize,
    compensate: bool,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for CallThreads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.queue();
        f.debug_struct("CallThreads")
            .field("limit", &self.limit)
            .field("compensate", &self.compensate)
            .field("queued", &queue.jobs.len())
            .field("running", &queue.running)
            .field("waiting", &queue.waiting)
            .finish()
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads taken from the blocking pool, each running jobs until it leaves.
    running: usize,
    /// Of `running`, those whose guest waits on the host now (compensating kind only).
    waiting: usize,
}

impl Queue {
    /// Threads running a job's code (or about to take one).
    fn busy(&self) -> usize {
        self.running - self.waiting
    }
}

thread_local! {
    /// The call threads whose job this thread runs now, if any.
    static CURRENT: RefCell<Option<Arc<CallThreads>>> = const { RefCell::new(None) };
}

impl CallThreads {
    /// At most `limit` jobs run at once (a pipeline's calls).
    pub fn calls(limit: usize) -> Arc<CallThreads> {
        CallThreads::new(limit, false)
    }

    /// At most `limit` threads run a job's code at once; one waiting on the host does not
    /// count (a route's requests).
    pub fn compensating(limit: usize) -> Arc<CallThreads> {
        CallThreads::new(limit, true)
    }

    /// One thread per core the process may use, as [`CallThreads::compensating`].
    pub fn per_core() -> Arc<CallThreads> {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        CallThreads::compensating(cores)
    }

    fn new(limit: usize, compensate: bool) -> Arc<CallThreads> {
        Arc::new(CallThreads {
            limit: limit.max(1),
            most: if compensate {
                MOST_THREADS.max(limit)
            } else {
                limit.max(1)
            },
            compensate,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
                waiting: 0,
            }),
        })
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, taking another thread from the blocking pool if fewer than the limit
    /// run code. Must be called within the runtime.
    pub fn submit(self: &Arc<Self>, job: Job) {
        let mut queue = self.queue();
        queue.jobs.push_back(job);
        if queue.busy() < self.limit && queue.running < self.most {
            queue.running += 1;
            drop(queue);
            self.take_thread();
        }
    }

    /// Starts a thread already counted in `running`.
    fn take_thread(self: &Arc<Self>) {
        let mut taken = Taken {
            threads: self.clone(),
            counted: true,
        };
        tokio::task::spawn_blocking(move || taken.run());
    }
}

/// One thread counted in `running`. If it never runs (the runtime shut down first, or
/// no thread could be started), dropping it gives the count back, and the last one out
/// drops the jobs queued, which their submitters see as an error (their answer's channel
/// closed), rather than leaving them queued for a thread that never comes.
struct Taken {
    threads: Arc<CallThreads>,
    counted: bool,
}

impl Taken {
    /// Runs queued jobs until there are none, or until more than the limit run code
    /// without it. A job that panics is dropped there (its result channel with it, which
    /// its submitter reports as an error); the thread goes on.
    fn run(&mut self) {
        CURRENT.with(|current| *current.borrow_mut() = Some(self.threads.clone()));
        loop {
            let job = {
                let mut queue = self.threads.queue();
                // Crowded (a waiter came back): leave the queue to the others, who run
                // code. (Checked before a job is taken, which would otherwise be lost.)
                let crowded = queue.busy() > self.threads.limit;
                let next = if crowded {
                    None
                } else {
                    queue.jobs.pop_front()
                };
                match next {
                    Some(job) => job,
                    None => {
                        queue.running -= 1;
                        self.counted = false;
                        break;
                    }
                }
            };
            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
        }
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let orphans = {
            let mut queue = self.threads.queue();
            queue.running -= 1;
            match queue.running {
                0 => std::mem::take(&mut queue.jobs),
                _ => VecDeque::new(),
            }
        };
        drop(orphans);
    }
}

/// While alive, this thread's guest waits on the host: its thread does not count against
/// its compensating [`CallThreads`]' limit. Does nothing on any other thread.
#[must_use = "the wait ends when this is dropped"]
pub(crate) struct Waiting {
    threads: Option<Arc<CallThreads>>,
}

impl Waiting {
    /// This thread starts waiting; if jobs are queued and no other thread would run them
    /// now, another thread is taken to.
    pub(crate) fn start() -> Waiting {
        let threads = CURRENT.with(|current| current.borrow().clone());
        let Some(threads) = threads.filter(|t| t.compensate) else {
            return Waiting { threads: None };
        };
        let mut queue = threads.queue();
        queue.waiting += 1;
        debug_assert!(
            queue.waiting <= queue.running,
            "a wait outside a job ({} waiting, {} running)",
            queue.waiting,
            queue.running
        );
        let another = !queue.jobs.is_empty()
            && queue.busy() < threads.limit
            && queue.running < threads.most
            && tokio::runtime::Handle::try_current().is_ok();
        if another {
            queue.running += 1;
        }
        drop(queue);
        // The guard first: if taking a thread fails (panics), the wait is still undone.
        let waiting = Waiting {
            threads: Some(threads.clone()),
        };
        if another {
            threads.take_thread();
        }
        waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(threads) = &self.threads {
            threads.queue().waiting -= 1;
        }
    }
}

/// Runs `wait` (a host call that blocks on something outside the guest) as a wait of
/// this thread: see [`Waiting`].
pub(crate) fn waiting<T>(wait: impl FnOnce() -> T) -> T {
    let _waiting = Waiting::start();
    wait()
}

/// Awaits `wait`, counting this thread as waiting (see [`Waiting`]) only if it does not
/// complete at its first poll: a write into a buffer with room, or a pollable already
/// ready, costs nothing here.
pub(crate) async fn waited<F: Future>(wait: F) -> F::Output {
    let mut wait = std::pin::pin!(wait);
    let first = std::future::poll_fn(|cx| Poll::Ready(wait.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(done) => done,
        Poll::Pending => {
            let _waiting = Waiting::start();
            wait.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    fn idle(threads: &CallThreads) -> bool {
        let queue = threads.queue();
        queue.running == 0 && queue.waiting == 0 && queue.jobs.is_empty()
    }

    async fn until_idle(threads: &CallThreads) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !idle(threads) {
            assert!(
                Instant::now() < deadline,
                "a thread never left: {threads:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// No more than the limit run at once, every job runs, and a panicking job neither
    /// loses the others nor a thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_limit_run_at_once_and_every_job_runs() {
        let threads = CallThreads::calls(3);
        let (now, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut results = Vec::new();
        for i in 0..40 {
            let (tx, rx) = tokio::sync::oneshot::channel::<usize>();
            let (now, most, done) = (now.clone(), most.clone(), done.clone());
            threads.submit(Box::new(move || {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                // A calls kind ignores waits: the job still counts.
                waiting(|| std::thread::sleep(Duration::from_millis(2)));
                now.fetch_sub(1, Ordering::SeqCst);
                if i % 10 == 3 {
                    panic!("a job that panics");
                }
                done.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(i);
            }));
            results.push(rx);
        }
        let mut answered = 0;
        for (i, rx) in results.into_iter().enumerate() {
            match rx.await {
                Ok(n) => {
                    assert_eq!(n, i);
                    answered += 1;
                }
                Err(_) => assert_eq!(i % 10, 3, "only the panicking jobs lose their answer"),
            }
        }
        assert_eq!(answered, 36);
        assert_eq!(done.load(Ordering::SeqCst), 36);
        assert!(
            most.load(Ordering::SeqCst) <= 3,
            "the limit is never passed"
        );
        until_idle(&threads).await;
    }

    /// Compensating: jobs that wait on the host do not hold the queue up (all of them wait
    /// at once, more than the limit), while jobs that only compute never run more than
    /// the limit at once; afterwards every thread leaves.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_jobs_do_not_count_against_the_limit() {
        let threads = CallThreads::compensating(2);
        let jobs = 16;
        let (waiters, most_waiting) =
            (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let all_waiting = Arc::new(tokio::sync::Notify::new());
        let release = Arc::new(std::sync::Barrier::new(jobs));
        let mut results = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (waiters, most_waiting, all_waiting, release) = (
                waiters.clone(),
                most_waiting.clone(),
                all_waiting.clone(),
                release.clone(),
            );
            threads.submit(Box::new(move || {
                waiting(|| {
                    let now = waiters.fetch_add(1, Ordering::SeqCst) + 1;
                    most_waiting.fetch_max(now, Ordering::SeqCst);
                    if now == jobs {
                        all_waiting.notify_one();
                    }
                    // Every job waits here until all of them are waiting at once: with
                    // waits counted against the limit, this never returns.
                    release.wait();
                });
                let _ = tx.send(());
            }));
            results.push(rx);
        }
        tokio::time::timeout(Duration::from_secs(10), all_waiting.notified())
            .await
            .expect("every waiting job ran at once, beyond the limit of 2");
        for rx in results {
            rx.await.unwrap();
        }
        assert_eq!(most_waiting.load(Ordering::SeqCst), jobs);
        until_idle(&threads).await;

        // Jobs that compute only: the limit holds.
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut results = Vec::new();
        for _ in 0..20 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (now, most) = (now.clone(), most.clone());
            threads.submit(Box::new(move || {
                most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
                now.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(());
            }));
            results.push(rx);
        }
        for rx in results {
            rx.await.unwrap();
        }
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "the limit is never passed"
        );
        until_idle(&threads).await;
    }

    /// A waiter that comes back while jobs are queued makes one thread too many: one of
    /// them leaves, and no queued job is lost with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_that_leaves_a_crowd_loses_no_job() {
        let threads = CallThreads::compensating(1);
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (first_tx, first) = tokio::sync::oneshot::channel::<()>();
        threads.submit(Box::new(move || {
            // Waits on the host until released: another thread runs the queue meanwhile.
            waiting(|| released.recv().unwrap());
            let _ = first_tx.send(());
        }));
        let started = Arc::new(AtomicUsize::new(0));
        let mut results = Vec::new();
        for _ in 0..200 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let started = started.clone();
            threads.submit(Box::new(move || {
                started.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
                let _ = tx.send(());
            }));
            results.push(rx);
        }
        // The waiter comes back while most jobs are still queued.
        while started.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        release.send(()).unwrap();
        first.await.unwrap();
        for rx in results {
            rx.await.expect("every queued job runs");
        }
        until_idle(&threads).await;
    }

    /// A pipeline's limit is its `concurrency` (up to 1024), past the compensating kind's
    /// 256 threads: that many jobs run at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_calls_kind_runs_its_whole_limit_at_once() {
        let jobs = 300;
        let threads = CallThreads::calls(jobs);
        let (arrived, present, most) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut results = Vec::new();
        for _ in 0..jobs {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let (arrived, present, most) = (arrived.clone(), present.clone(), most.clone());
            threads.submit(Box::new(move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                most.fetch_max(present.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                // Each job stays until all have arrived (or 10 s passed, so that a failure
                // ends instead of waiting forever).
                let until = Instant::now() + Duration::from_secs(10);
                while arrived.load(Ordering::SeqCst) < jobs && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(1));
                }
                present.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(());
            }));
            results.push(rx);
        }
        for rx in results {
            rx.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), jobs, "all of them ran at once");
        until_idle(&threads).await;
    }

    /// A wait that completes at its first poll does not count as one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_ready_at_once_is_no_wait() {
        let threads = CallThreads::compensating(1);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::current();
        let inner = threads.clone();
        threads.submit(Box::new(move || {
            let ready = runtime.block_on(waited(async { inner.queue().waiting }));
            let pending = runtime.block_on(waited(async {
                tokio::task::yield_now().await;
                inner.queue().waiting
            }));
            let _ = tx.send((ready, pending, inner.queue().waiting));
        }));
        assert_eq!(rx.await.unwrap(), (0, 1, 0));
        until_idle(&threads).await;
    }

    /// A thread that never starts (its runtime shut down first) gives its count back and
    /// drops the queued jobs: their submitters hear of it, nothing waits on.
    #[test]
    fn a_thread_that_never_starts_lets_its_jobs_go() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        runtime.shutdown_timeout(Duration::from_millis(100));
        let threads = CallThreads::calls(2);
        let (tx, answer) = std::sync::mpsc::channel::<()>();
        {
            let _entered = handle.enter();
            threads.submit(Box::new(move || {
                let _ = tx.send(());
            }));
        }
        assert_eq!(
            answer.recv_timeout(Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the job was dropped, not left queued"
        );
        assert!(idle(&threads));
    }
}
