//! What a fleet shares besides the log: its deploys.
//!
//! A backend several nodes share (NATS) offers [`SharedDeploys`]: components stored once
//! by version, and small records (each function's active version, the app's manifest)
//! that every node watches and converges to, so a deploy or rollback sent to one node
//! reaches the fleet. The records are the engine's (JSON); the backend only keeps them.

use async_trait::async_trait;
use bytes::Bytes;

use crate::Result;

/// The fleet's components and deploy records.
#[async_trait]
pub trait SharedDeploys: Send + Sync + 'static {
    /// Stores a component under `name` (its SHA-256): idempotent, durable when it returns.
    async fn put_component(&self, name: &str, wasm: Bytes) -> Result<()>;
    /// The component stored under `name`, if any.
    async fn component(&self, name: &str) -> Result<Option<Bytes>>;
    /// Sets the record `key` (`a-z A-Z 0-9 - _ .`) to `value`; the last put wins.
    async fn put_record(&self, key: &str, value: Bytes) -> Result<()>;
    /// The record `key`, if any.
    async fn record(&self, key: &str) -> Result<Option<Bytes>>;
    /// Every record's current value, then each change as it is put.
    async fn watch(&self) -> Result<Box<dyn RecordWatch>>;
}

/// The records of [`SharedDeploys::watch`].
#[async_trait]
pub trait RecordWatch: Send {
    /// The next record put, as `(key, value)`; none once the watch has ended (its
    /// backend was lost): watch again.
    async fn next(&mut self) -> Option<Result<(String, Bytes)>>;
}
