//! What the sources whose broker client runs in a task of its own share: the channel the
//! task fills and [`crate::Source::next`] takes from ([`Inbox`]), and the health both
//! sides see ([`SharedHealth`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::Health;

/// The receiving side of a source's reading task: items in the order the task sent them.
pub struct Inbox<T> {
    received: mpsc::Receiver<T>,
    pending: VecDeque<T>,
}

/// A channel of `capacity` items: the task's sender and the source's [`Inbox`].
pub fn inbox<T>(capacity: usize) -> (mpsc::Sender<T>, Inbox<T>) {
    let (sender, received) = mpsc::channel(capacity);
    let inbox = Inbox {
        received,
        pending: VecDeque::new(),
    };
    (sender, inbox)
}

impl<T> Inbox<T> {
    /// Up to `max` items, waiting for the first; `None` once the task is gone and nothing
    /// is left. Cancel-safe: an item taken from the channel stays until handed out.
    pub async fn next(&mut self, max: usize) -> Option<Vec<T>> {
        if self.pending.is_empty() {
            let first = self.received.recv().await?;
            self.pending.push_back(first);
        }
        while self.pending.len() < max {
            match self.received.try_recv() {
                Ok(item) => self.pending.push_back(item),
                Err(_) => break,
            }
        }
        let n = max.min(self.pending.len());
        Some(self.pending.drain(..n).collect())
    }
}

/// A source's [`Health`], set by its reading task and read by the engine.
#[derive(Debug, Clone, Default)]
pub struct SharedHealth(Arc<Mutex<Health>>);

impl SharedHealth {
    pub fn set(&self, connected: bool, error: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Health { connected, error };
    }

    pub fn get(&self) -> Health {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
