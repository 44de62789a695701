//! A pipeline's call threads: where its lanes run.
//!
//! **Architecture Invariant:** at most `concurrency` lanes of a pipeline run at once (so
//! at most that many calls), each on a thread of the runtime's blocking pool. A lane is
//! queued, in the order lanes were handed over (across the pipeline's partitions); a
//! thread that finishes one takes the next from the queue itself, and goes back to the
//! pool only when the queue is empty. So a busy pipeline's lanes follow each other on
//! the same threads with no hand-off through the runtime (a semaphore's wake-up, then a
//! `spawn_blocking`'s), which left a core idle for a moment at every lane's end. A lane
//! waiting out a retry's backoff is not queued and holds no thread.
//!
//! `running` (the threads taken) and the queue change together under one lock: a job
//! queued while every thread is taken is run by one of them before it leaves, since a
//! thread leaves only when it finds the queue empty under that lock.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// A lane's run, with whatever it reports its result through.
pub(super) type Job = Box<dyn FnOnce() + Send>;

pub(super) struct Runners {
    limit: usize,
    queue: Mutex<Queue>,
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Threads taken from the blocking pool, each running jobs until the queue is empty.
    running: usize,
}

impl Runners {
    pub(super) fn new(limit: usize) -> Runners {
        Runners {
            limit: limit.max(1),
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                running: 0,
            }),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `job`, taking another thread from the blocking pool if fewer than the limit
    /// run. Must be called within the runtime.
    pub(super) fn submit(self: &Arc<Self>, job: Job) {
        let mut queue = self.queue();
        queue.jobs.push_back(job);
        if queue.running < self.limit {
            queue.running += 1;
            drop(queue);
            let mut taken = Taken {
                runners: self.clone(),
                counted: true,
            };
            tokio::task::spawn_blocking(move || taken.run());
        }
    }
}

/// One thread counted in `running`. If it never runs (the runtime shut down first, or
/// no thread could be started), dropping it gives the count back, and the last one out
/// drops the jobs queued, which their lanes see as an error, rather than leaving them
/// (and the pipeline each holds) queued for a thread that never comes.
struct Taken {
    runners: Arc<Runners>,
    counted: bool,
}

impl Taken {
    /// Runs queued jobs until there are none. A job that panics is dropped there (its
    /// result channel with it, which its lane reports as an error); the thread goes on.
    fn run(&mut self) {
        loop {
            let job = {
                let mut queue = self.runners.queue();
                match queue.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        queue.running -= 1;
                        self.counted = false;
                        return;
                    }
                }
            };
            let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        if !self.counted {
            return;
        }
        let orphans = {
            let mut queue = self.runners.queue();
            queue.running -= 1;
            match queue.running {
                0 => std::mem::take(&mut queue.jobs),
                _ => VecDeque::new(),
            }
        };
        drop(orphans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// No more than the limit run at once, every job runs, and a panicking job neither
    /// loses the others nor a thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_the_limit_run_at_once_and_every_job_runs() {
        let runners = Arc::new(Runners::new(3));
        let (now, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut results = Vec::new();
        for i in 0..40 {
            let (tx, rx) = tokio::sync::oneshot::channel::<usize>();
            let (now, most, done) = (now.clone(), most.clone(), done.clone());
            runners.submit(Box::new(move || {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(running, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
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
        // Every thread went back once the queue was empty.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while runners.queue.lock().unwrap().running > 0 {
            assert!(std::time::Instant::now() < deadline, "a thread never left");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A thread that never starts (its runtime shut down first) gives its count back and
    /// drops the queued jobs: their lanes hear of it, nothing waits on.
    #[test]
    fn a_thread_that_never_starts_lets_its_jobs_go() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        runtime.shutdown_timeout(Duration::from_millis(100));
        let runners = Arc::new(Runners::new(2));
        let (tx, answer) = std::sync::mpsc::channel::<()>();
        {
            let _entered = handle.enter();
            runners.submit(Box::new(move || {
                let _ = tx.send(());
            }));
        }
        assert_eq!(
            answer.recv_timeout(Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the job was dropped, not left queued"
        );
        let queue = runners.queue.lock().unwrap();
        assert_eq!((queue.running, queue.jobs.len()), (0, 0));
    }
}
