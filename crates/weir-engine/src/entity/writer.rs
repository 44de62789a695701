//! The writer of one journal partition: takes the commands of the entities whose ids map
//! to the partition, in rounds.
//!
//! A round takes every request queued (up to [`MAX_ROUND`]), loads the states it needs
//! (the cache, else the latest snapshot and the events after it), runs the commands in
//! arrival order (a later command to the same entity sees the earlier one's state), and
//! appends every accepted event of the round with one `append_to` conditional on the
//! partition's end offset, so the round's commands share one fsync. Then it answers:
//! each command with its events, or with why it wrote nothing. Snapshots of the entities
//! that crossed a multiple of `snapshot_every` follow, after their events are durable.
//!
//! The writer keeps an index of its partition (entity id -> each event's offset and append
//! time), built by scanning the partition when it starts and extended by each append: a
//! cache of the log, which stays the truth.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use weir_cloudevents::CloudEvent;
use weir_log::{ErrorKind, Expect};
use weir_wasm::{Decision, EntityCommand};

use super::journal::{self, SNAPSHOT_TYPE};
use super::{CommandOutcome, ConsistencyToken, EntityState, Shared};
use crate::codec::{LoggedEvent, decode_event};
use crate::{Error, Result};

/// Most requests one round takes.
const MAX_ROUND: usize = 256;
/// Records one scan read asks for.
const SCAN_BATCH: usize = 1000;
/// Bytes of records one round appends at most (half the embedded log's default batch
/// limit): commands past it wait for the next round.
const ROUND_BYTES: usize = 4 << 20;

/// Where one event of an entity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    /// When the log appended it.
    pub(crate) timestamp_ms: i64,
}

/// What a writer is asked.
pub(crate) enum Request {
    Command {
        id: String,
        name: String,
        data: Vec<u8>,
        if_match: Option<u64>,
        /// Whether it was decided once already and lost its append to another writer of
        /// the partition (it is decided again once, after a catch-up).
        retried: bool,
        reply: oneshot::Sender<Result<CommandOutcome>>,
    },
    /// The latest state (version 0: no events).
    State {
        id: String,
        reply: oneshot::Sender<Result<EntityState>>,
    },
    /// Where each of the entity's events is.
    History {
        id: String,
        reply: oneshot::Sender<Result<Vec<Entry>>>,
    },
    /// The partition's counts.
    Stats {
        reply: oneshot::Sender<Result<Stats>>,
    },
}

/// A partition's counts, for `weir status`.
pub(crate) struct Stats {
    pub(crate) entities: u64,
    pub(crate) events: u64,
    pub(crate) cached: u64,
}

/// An entity's state as the writer knows it.
#[derive(Debug, Clone, Default)]
struct Current {
    version: u64,
    state: Option<Vec<u8>>,
}

/// Hot states: two generations of at most half the capacity each; a state found in the
/// old one moves to the new one, and when the new one is full the old one is dropped.
/// Approximately least-recently-used, at the cost of a map lookup.
struct Cache {
    capacity: usize,
    young: HashMap<String, Current>,
    old: HashMap<String, Current>,
}

impl Cache {
    fn new(capacity: usize) -> Cache {
        Cache {
            capacity: capacity.max(2),
            young: HashMap::new(),
            old: HashMap::new(),
        }
    }

    fn get(&mut self, id: &str) -> Option<Current> {
        if let Some(current) = self.young.get(id) {
            return Some(current.clone());
        }
        let current = self.old.remove(id)?;
        self.put(id.to_owned(), current.clone());
        Some(current)
    }

    fn put(&mut self, id: String, current: Current) {
        if self.young.len() >= self.capacity / 2 && !self.young.contains_key(&id) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&id);
        self.young.insert(id, current);
    }

    fn remove(&mut self, id: &str) {
        self.young.remove(id);
        self.old.remove(id);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}

/// What a state is rebuilt from: the latest snapshot and the events after it.
struct Load {
    snapshot: Option<(u64, Option<Vec<u8>>)>,
    tail: Vec<LoggedEvent>,
}

/// A command of the round, as the blocking part runs it.
struct Pending {
    id: String,
    name: String,
    data: Vec<u8>,
    if_match: Option<u64>,
}

/// What a command decided: its events, and the state after them.
struct Accepted {
    events: Vec<CloudEvent>,
    after: Current,
    before: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    partition: u32,
    /// The partition's end offset: the next append's condition.
    end: u64,
    /// The partition's start offset when it was last scanned: a catch-up that finds it
    /// moved scans again, since records the index has are gone.
    start: u64,
    /// How far the snapshot topic's partition has been read.
    snapshots_end: u64,
    /// The offset and key of the last journal record the index took in (read or
    /// appended): a catch-up first checks it is still there, so a journal that lost its
    /// tail and grew again past the old end is scanned, not read on from a wrong place.
    last: Option<(u64, Option<String>)>,
    index: HashMap<String, Vec<Entry>>,
    /// Each entity's latest snapshot's offset in the snapshot topic.
    snapshots: HashMap<String, u64>,
    cache: Cache,
    /// The last scan failed: the index is not to be trusted until one succeeds.
    broken: bool,
    /// The append time of the latest round, so append times never go backwards.
    last_timestamp_ms: i64,
    /// Commands a full round left for the next one, oldest first.
    carried: std::collections::VecDeque<Request>,
}

/// What a scan of the partition finds.
struct Scanned {
    index: HashMap<String, Vec<Entry>>,
    snapshots: HashMap<String, u64>,
    start: u64,
    end: u64,
    snapshots_end: u64,
    last: Option<(u64, Option<String>)>,
}

impl Writer {
    /// A writer of `partition`, with its index built from the partition.
    pub(crate) async fn open(shared: Arc<Shared>, partition: u32) -> Result<Writer> {
        let mut writer = Writer {
            cache: Cache::new(shared.spec.cache_entities as usize),
            shared,
            partition,
            end: 0,
            start: 0,
            snapshots_end: 0,
            last: None,
            index: HashMap::new(),
            snapshots: HashMap::new(),
            broken: true,
            last_timestamp_ms: 0,
            carried: std::collections::VecDeque::new(),
        };
        writer.scan().await?;
        Ok(writer)
    }

    /// Rebuild the index and the snapshot offsets from the log and empty the cache; if
    /// the log cannot be read, the writer is broken (it answers nothing from its index)
    /// until a later scan succeeds.
    async fn scan(&mut self) -> Result<()> {
        self.cache.clear();
        self.broken = true;
        let scanned = self.read_partition().await?;
        self.index = scanned.index;
        self.snapshots = scanned.snapshots;
        self.start = scanned.start;
        self.end = scanned.end;
        self.snapshots_end = scanned.snapshots_end;
        self.last = scanned.last;
        self.broken = false;
        if let Some(last) = self
            .index
            .values()
            .filter_map(|e| e.last())
            .map(|e| e.timestamp_ms)
            .max()
        {
            self.last_timestamp_ms = self.last_timestamp_ms.max(last);
        }
        tracing::debug!(entity = %self.shared.ty, partition = self.partition, entities = self.index.len(), end = self.end, "journal partition scanned");
        Ok(())
    }

    async fn read_partition(&self) -> Result<Scanned> {
        let mut index: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut snapshots = HashMap::new();
        let offsets = self
            .shared
            .log
            .offsets(&self.shared.spec.journal, self.partition)
            .await?;
        let mut last = None;
        let end = self
            .read_journal(offsets.start, &mut index, &mut last, |_| {})
            .await?;
        let snapshots_end = self.read_snapshots(0, &mut snapshots).await?;
        Ok(Scanned {
            index,
            snapshots,
            start: offsets.start,
            end: end.max(offsets.end),
            snapshots_end,
            last,
        })
    }

    /// Brings the index up to the partition's end by reading only what was appended since
    /// the writer last looked (and the snapshots since), evicting from the cache every
    /// entity with new events. **Invariant:** the index, snapshot offsets and end it
    /// leaves are those a full [`Writer::scan`] would build; where that cannot be known
    /// (the writer is broken, the partition's start moved, its end went back, the last
    /// record it took in is gone) it scans. A read that fails leaves the writer broken,
    /// so the next round scans, and its cache empty.
    async fn catch_up(&mut self) -> Result<()> {
        if self.broken {
            return self.scan().await;
        }
        self.broken = true;
        match self.read_since().await {
            Ok(true) => {
                self.broken = false;
                Ok(())
            }
            Ok(false) => self.scan().await,
            Err(e) => {
                self.cache.clear();
                Err(e)
            }
        }
    }

    /// [`Writer::catch_up`]'s reads: false, having changed nothing, where only a scan
    /// can tell.
    async fn read_since(&mut self) -> Result<bool> {
        let log = &self.shared.log;
        let journal = &self.shared.spec.journal;
        let offsets = log.offsets(journal, self.partition).await?;
        if offsets.start != self.start || offsets.end < self.end {
            return Ok(false);
        }
        if let Some((offset, key)) = &self.last {
            let there = log
                .read(journal, self.partition, *offset, 1)
                .await?
                .into_iter()
                .next()
                .is_some_and(|r| {
                    r.offset == *offset && r.key.as_deref() == key.as_deref().map(str::as_bytes)
                });
            if !there {
                tracing::warn!(entity = %self.shared.ty, partition = self.partition, offset, "the journal partition's last record known to its writer is gone: it is scanned again");
                return Ok(false);
            }
        }
        let mut index = std::mem::take(&mut self.index);
        let mut last = self.last.take();
        let mut touched = std::collections::HashSet::new();
        let read = self
            .read_journal(self.end, &mut index, &mut last, |key| {
                touched.insert(key.to_owned());
            })
            .await;
        self.index = index;
        self.last = last;
        let end = read?.max(offsets.end);
        // Snapshots change no state, only where one is rebuilt from.
        let mut snapshots = std::mem::take(&mut self.snapshots);
        let read = self
            .read_snapshots(self.snapshots_end, &mut snapshots)
            .await;
        self.snapshots = snapshots;
        let snapshots_end = read?;
        for id in &touched {
            self.cache.remove(id);
            if let Some(last) = self.index.get(id).and_then(|e| e.last()) {
                self.last_timestamp_ms = self.last_timestamp_ms.max(last.timestamp_ms);
            }
        }
        tracing::debug!(entity = %self.shared.ty, partition = self.partition, from = self.end, end, entities = touched.len(), "journal partition caught up");
        self.end = end;
        self.snapshots_end = snapshots_end;
        Ok(true)
    }

    /// Adds the journal's records from `from` to `index`, calling `seen` with each
    /// record's entity id and keeping the last record's offset and key in `taken_in`; the
    /// offset after the last one read (`from` if none).
    async fn read_journal(
        &self,
        from: u64,
        index: &mut HashMap<String, Vec<Entry>>,
        taken_in: &mut Option<(u64, Option<String>)>,
        mut seen: impl FnMut(&str),
    ) -> Result<u64> {
        let journal = &self.shared.spec.journal;
        self.read_on(journal, from, |offset, key, timestamp_ms| {
            *taken_in = Some((offset, key.map(str::to_owned)));
            let Some(key) = key else {
                tracing::warn!(topic = %journal, partition = self.partition, offset, "journal record without an entity id as key: ignored");
                return;
            };
            seen(key);
            index.entry(key.to_owned()).or_default().push(Entry {
                offset,
                timestamp_ms,
            });
        })
        .await
    }

    /// Records in `snapshots` each entity's latest snapshot from offset `from` of the
    /// snapshot topic's partition on; the offset after the last one read (`from` if none).
    async fn read_snapshots(&self, from: u64, snapshots: &mut HashMap<String, u64>) -> Result<u64> {
        self.read_on(&self.shared.spec.snapshots, from, |offset, key, _| {
            if let Some(key) = key {
                snapshots.insert(key.to_owned(), offset);
            }
        })
        .await
    }

    /// Reads `topic`'s partition from `from` to its end, handing `each` every record's
    /// offset, key (when it is UTF-8) and append time; the offset after the last one
    /// read (`from` if none).
    async fn read_on(
        &self,
        topic: &str,
        mut from: u64,
        mut each: impl FnMut(u64, Option<&str>, i64),
    ) -> Result<u64> {
        loop {
            let records = self
                .shared
                .log
                .read(topic, self.partition, from, SCAN_BATCH)
                .await?;
            let Some(last) = records.last() else {
                return Ok(from);
            };
            from = last.offset + 1;
            for record in &records {
                let key = record
                    .key
                    .as_deref()
                    .and_then(|k| std::str::from_utf8(k).ok());
                each(record.offset, key, record.timestamp_ms);
            }
        }
    }

    /// Serve requests until the node stops (requests still queued then are dropped: their
    /// callers get a shutting-down error, and nothing of them was written).
    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        cancel: CancellationToken,
    ) {
        loop {
            let first = match self.carried.pop_front() {
                Some(carried) if !cancel.is_cancelled() => Some(carried),
                _ => tokio::select! {
                    biased;
                    _ = cancel.cancelled() => None,
                    request = requests.recv() => request,
                },
            };
            let Some(first) = first else { break };
            let mut round = vec![first];
            while round.len() < MAX_ROUND
                && let Some(carried) = self.carried.pop_front()
            {
                round.push(carried);
            }
            while round.len() < MAX_ROUND {
                match requests.try_recv() {
                    Ok(request) => round.push(request),
                    Err(_) => break,
                }
            }
            self.round(round).await;
        }
    }

    /// What the state of `id` is rebuilt from.
    async fn load(&self, id: &str) -> Result<Load> {
        let entries = self.index.get(id).map(Vec::as_slice).unwrap_or_default();
        let mut snapshot = None;
        if let Some(&offset) = self.snapshots.get(id) {
            let topic = &self.shared.spec.snapshots;
            let record = self
                .shared
                .log
                .read(topic, self.partition, offset, 1)
                .await?
                .into_iter()
                .find(|r| r.offset == offset);
            if let Some(record) = record {
                let event = decode_event(topic, record)?.event;
                match journal::read_snapshot(&event) {
                    // The snapshot covers the events the index has, up to the same offset
                    // (a journal that lost its tail in a power loss, with fsync other than
                    // `always`, makes it stale).
                    Some((version, covers, state))
                        if event.ty == SNAPSHOT_TYPE
                            && version as usize <= entries.len()
                            && (version == 0 || entries[version as usize - 1].offset == covers) =>
                    {
                        snapshot = Some((version, state));
                    }
                    _ => {
                        tracing::warn!(entity = %self.shared.ty, %id, offset, "snapshot ignored: not a snapshot of this journal; the state is rebuilt from the events")
                    }
                }
            }
        }
        let from = snapshot.as_ref().map_or(0, |(v, _)| *v as usize);
        let tail = journal::read_events(&self.shared, self.partition, &entries[from..]).await?;
        Ok(Load { snapshot, tail })
    }

    /// Whether another writer appended to the partition since this one last looked: on a
    /// log several nodes share (a fleet), where every node may take commands, each round
    /// first asks the partition's end, so its commands and reads are decided against
    /// every event appended before the round (a round that then loses its append to
    /// another writer is decided again, see below). The embedded log has one process.
    async fn moved_elsewhere(&self) -> bool {
        if self.shared.log.membership().is_none() {
            return false;
        }
        match self
            .shared
            .log
            .offsets(&self.shared.spec.journal, self.partition)
            .await
        {
            Ok(offsets) => offsets.end != self.end,
            Err(_) => true,
        }
    }

    async fn round(&mut self, requests: Vec<Request>) {
        if (self.broken || self.moved_elsewhere().await)
            && let Err(e) = self.catch_up().await
        {
            let reason = format!("its journal partition cannot be read: {e}");
            for request in requests {
                match request {
                    Request::Command { id, reply, .. } => {
                        let _ = reply.send(Err(self.load_failed(&id, &reason)));
                    }
                    Request::State { id, reply } => {
                        let _ = reply.send(Err(self.load_failed(&id, &reason)));
                    }
                    Request::History { id, reply } => {
                        let _ = reply.send(Err(self.load_failed(&id, &reason)));
                    }
                    Request::Stats { reply } => {
                        let _ = reply.send(Err(self.load_failed("", &reason)));
                    }
                }
            }
            return;
        }
        // The states the round needs: cached, or rebuilt.
        let mut states: HashMap<String, Current> = HashMap::new();
        let mut loads: HashMap<String, Load> = HashMap::new();
        let mut failed: HashMap<String, String> = HashMap::new();
        for request in &requests {
            let id = match request {
                Request::Command { id, .. } | Request::State { id, .. } => id,
                Request::History { .. } | Request::Stats { .. } => continue,
            };
            if states.contains_key(id) || loads.contains_key(id) || failed.contains_key(id) {
                continue;
            }
            if let Some(current) = self.cache.get(id) {
                states.insert(id.clone(), current);
                continue;
            }
            match self.load(id).await {
                Ok(load) => {
                    loads.insert(id.clone(), load);
                }
                Err(e) => {
                    failed.insert(id.clone(), e.to_string());
                }
            }
        }

        let mut commands = Vec::new();
        let mut retries = Vec::new();
        let mut others = Vec::new();
        let mut replies = Vec::new();
        for request in requests {
            match request {
                Request::Command {
                    id,
                    name,
                    data,
                    if_match,
                    retried,
                    reply,
                } => {
                    if let Some(reason) = failed.get(&id) {
                        let _ = reply.send(Err(self.load_failed(&id, reason)));
                        continue;
                    }
                    retries.push(retried);
                    commands.push(Pending {
                        id,
                        name,
                        data,
                        if_match,
                    });
                    replies.push(reply);
                }
                other => others.push(other),
            }
        }

        let time = crate::pipeline::now_rfc3339();
        let ids: Vec<String> = commands.iter().map(|c| c.id.clone()).collect();
        // What a command needs to be sent again, should the round be too large for it.
        let mut copies: Vec<(String, Vec<u8>, Option<u64>, bool)> = commands
            .iter()
            .zip(&retries)
            .map(|(c, retried)| (c.name.clone(), c.data.clone(), c.if_match, *retried))
            .collect();
        let shared = self.shared.clone();
        let decided = crate::blocking(move || {
            let pool = shared.pool()?;
            // Each entity's fold on its own: one that cannot be rebuilt fails only its
            // own requests.
            let mut unloadable = HashMap::new();
            for (id, load) in loads {
                match fold(&shared, &pool, load) {
                    Ok(current) => {
                        states.insert(id, current);
                    }
                    Err(e) => {
                        unloadable.insert(id, e.to_string());
                    }
                }
            }
            let results: Vec<Result<Accepted>> = commands
                .into_iter()
                .map(|c| match unloadable.get(&c.id) {
                    Some(reason) => Err(Error::EntityLoad {
                        ty: shared.ty.clone(),
                        id: c.id,
                        reason: reason.clone(),
                    }),
                    None => decide(&shared, &pool, &mut states, c, &time),
                })
                .collect();
            Ok((states, results, unloadable))
        })
        .await;
        let (mut states, mut results, unloadable) = match decided {
            Ok(decided) => decided,
            Err(e) => {
                let reason = e.to_string();
                for (reply, id) in replies.into_iter().zip(&ids) {
                    let _ = reply.send(Err(self.load_failed(id, &reason)));
                }
                self.answer(others, &HashMap::new(), &failed);
                return;
            }
        };
        failed.extend(unloadable);
        // The append time: now, and never before the previous round's.
        let timestamp_ms = ((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
            as i64)
            .max(self.last_timestamp_ms);
        self.last_timestamp_ms = timestamp_ms;

        // A round whose events would be too large for one append keeps the commands that
        // fit (at least one) and carries the rest to the next round, where they are
        // decided again; entities they touched are reloaded from the log then.
        let mut replies = replies;
        let mut bytes = 0;
        let cut = results.iter().enumerate().position(|(i, r)| {
            let size: usize = r.as_ref().map_or(0, |a| {
                a.events.iter().map(|e| e.to_json_vec().len() + 64).sum()
            });
            bytes += size;
            bytes > ROUND_BYTES && i > 0
        });
        if let Some(cut) = cut {
            let deferred_replies = replies.split_off(cut);
            results.truncate(cut);
            for ((reply, id), (name, data, if_match, retried)) in deferred_replies
                .into_iter()
                .zip(ids[cut..].iter())
                .zip(copies.drain(cut..))
            {
                states.remove(id);
                self.cache.remove(id);
                self.carried.push_back(Request::Command {
                    id: id.clone(),
                    name,
                    data,
                    if_match,
                    retried,
                    reply,
                });
            }
            tracing::debug!(entity = %self.shared.ty, partition = self.partition, carried = self.carried.len(), "round over its byte limit: commands carried to the next round");
        }
        let ids = &ids[..results.len()];

        // One append for every accepted event of the round.
        let records: Vec<_> = results
            .iter()
            .zip(&replies)
            .filter_map(|(r, _)| r.as_ref().ok())
            .flat_map(|accepted| accepted.events.iter())
            .map(|event| {
                let id = entity_id(event);
                journal::record(id, event, timestamp_ms)
            })
            .collect();
        let appended = if records.is_empty() {
            Ok(Vec::new())
        } else {
            self.shared
                .log
                .append_to(
                    &self.shared.spec.journal,
                    self.partition,
                    records,
                    Expect::End(self.end),
                )
                .await
        };
        let positions = match appended {
            Ok(positions) => positions,
            Err(e) => {
                let conflict = e.kind() == ErrorKind::Conflict;
                if conflict {
                    tracing::warn!(entity = %self.shared.ty, partition = self.partition, "the journal partition changed under its writer; its index catches up");
                }
                // Another writer appended (a worker of a fleet, until commands are
                // forwarded to the partition's owner): every command of the round was
                // decided against states that may be old. After a catch-up they are
                // decided again in the next round, once; a second loss fails them.
                let caught_up = conflict
                    && match self.catch_up().await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(entity = %self.shared.ty, partition = self.partition, error = %e, "cannot catch up with the journal partition");
                            false
                        }
                    };
                let error = || {
                    if conflict {
                        Error::JournalMoved {
                            ty: self.shared.ty.clone(),
                        }
                    } else {
                        Error::Log(
                            weir_log::Error::new(e.kind(), e.to_string()).with_code(e.code()),
                        )
                    }
                };
                // A command decided after an accepted one to the same entity was decided
                // against a state that was never written: it fails the same way.
                let mut unwritten = std::collections::HashSet::new();
                for (((result, reply), id), (name, data, if_match, retried)) in
                    results.into_iter().zip(replies).zip(ids).zip(copies)
                {
                    if caught_up && !retried {
                        self.carried.push_back(Request::Command {
                            id: id.clone(),
                            name,
                            data,
                            if_match,
                            retried: true,
                            reply,
                        });
                        continue;
                    }
                    let answer = match result {
                        _ if unwritten.contains(id) => Err(error()),
                        Ok(_) => {
                            unwritten.insert(id.clone());
                            Err(error())
                        }
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(answer);
                }
                if !conflict {
                    // The states the failed commands left in memory were never written.
                    for id in states.keys() {
                        self.cache.remove(id);
                    }
                }
                self.answer(others, &HashMap::new(), &failed);
                return;
            }
        };

        let mut positions = positions.into_iter();
        let mut snapshots = Vec::new();
        for (result, reply) in results.into_iter().zip(replies) {
            let outcome = result.map(|accepted| {
                let mut events = Vec::with_capacity(accepted.events.len());
                let id = entity_id_owned(&accepted.events);
                for event in accepted.events {
                    let Some(position) = positions.next() else {
                        break;
                    };
                    if let Some(id) = &id {
                        self.index.entry(id.clone()).or_default().push(Entry {
                            offset: position.offset,
                            timestamp_ms,
                        });
                    }
                    self.end = self.end.max(position.offset + 1);
                    self.last = Some((position.offset, id.clone()));
                    events.push(LoggedEvent {
                        topic: self.shared.spec.journal.clone(),
                        partition: position.partition,
                        offset: position.offset,
                        timestamp_ms,
                        event,
                    });
                }
                let every = u64::from(self.shared.spec.snapshot_every);
                if let Some(id) = id
                    && every > 0
                    && accepted.after.version / every > accepted.before / every
                {
                    let covers = events.last().map_or(0, |e| e.offset);
                    snapshots.push((id, covers, accepted.after.clone()));
                }
                CommandOutcome {
                    version: accepted.after.version,
                    state: accepted.after.state,
                    events,
                    token: ConsistencyToken {
                        topic: self.shared.spec.journal.clone(),
                        partition: self.partition,
                        offset: self.end,
                    },
                }
            });
            let _ = reply.send(outcome);
        }
        for (id, current) in &states {
            self.cache.put(id.clone(), current.clone());
        }
        self.answer(others, &states, &failed);
        if !snapshots.is_empty() {
            self.snapshot(snapshots, timestamp_ms).await;
        }
    }

    /// Answer the round's reads, after its commands.
    fn answer(
        &mut self,
        requests: Vec<Request>,
        states: &HashMap<String, Current>,
        failed: &HashMap<String, String>,
    ) {
        for request in requests {
            match request {
                Request::State { id, reply } => {
                    let answer = match (states.get(&id), failed.get(&id)) {
                        (_, Some(reason)) => Err(self.load_failed(&id, reason)),
                        (Some(current), _) => Ok(self.state_of(&id, current)),
                        (None, None) => match self.cache.get(&id) {
                            Some(current) => Ok(self.state_of(&id, &current)),
                            None => Err(self.load_failed(&id, "the round could not load it")),
                        },
                    };
                    let _ = reply.send(answer);
                }
                Request::History { id, reply } => {
                    let _ = reply.send(Ok(self.index.get(&id).cloned().unwrap_or_default()));
                }
                Request::Stats { reply } => {
                    let _ = reply.send(Ok(Stats {
                        entities: self.index.len() as u64,
                        events: self.index.values().map(|v| v.len() as u64).sum(),
                        cached: (self.cache.young.len() + self.cache.old.len()) as u64,
                    }));
                }
                Request::Command { reply, .. } => {
                    let _ = reply.send(Err(Error::ShuttingDown));
                }
            }
        }
    }

    fn state_of(&self, id: &str, current: &Current) -> EntityState {
        EntityState {
            version: current.version,
            state: current.state.clone(),
            timestamp_ms: self
                .index
                .get(id)
                .and_then(|entries| entries.last())
                .map(|e| e.timestamp_ms),
        }
    }

    fn load_failed(&self, id: &str, reason: &str) -> Error {
        Error::EntityLoad {
            ty: self.shared.ty.clone(),
            id: id.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// Write the snapshots of entities that crossed a multiple of `snapshot_every`. A
    /// failure costs only replay time later: it is logged, not returned.
    async fn snapshot(&mut self, snapshots: Vec<(String, u64, Current)>, timestamp_ms: i64) {
        let time = crate::pipeline::now_rfc3339();
        let records: Vec<_> = snapshots
            .iter()
            .map(|(id, covers, current)| {
                let event = journal::snapshot_event(
                    &self.shared.ty,
                    id,
                    current.version,
                    *covers,
                    current.state.as_deref(),
                    &time,
                );
                journal::record(id, &event, timestamp_ms)
            })
            .collect();
        match self
            .shared
            .log
            .append_to(
                &self.shared.spec.snapshots,
                self.partition,
                records,
                Expect::Any,
            )
            .await
        {
            Ok(positions) => {
                for ((id, _, _), position) in snapshots.into_iter().zip(positions) {
                    self.snapshots.insert(id, position.offset);
                }
            }
            Err(e) => {
                tracing::warn!(entity = %self.shared.ty, partition = self.partition, error = %e, "snapshots not written; states are rebuilt from older snapshots and the journal");
            }
        }
    }
}

/// The entity id of an entity's event (the writer sets the extension).
fn entity_id(event: &CloudEvent) -> &str {
    match event.extensions.get("entityid") {
        Some(weir_cloudevents::ExtensionValue::String(id)) => id,
        _ => "",
    }
}

fn entity_id_owned(events: &[CloudEvent]) -> Option<String> {
    events.first().map(|e| entity_id(e).to_owned())
}

/// A state from its snapshot and the events after it. Blocking.
fn fold(shared: &Shared, pool: &weir_wasm::InstancePool, load: Load) -> Result<Current> {
    let (mut version, mut state) = load.snapshot.unwrap_or_default();
    for event in &load.tail {
        state = journal::apply(shared, pool, state.as_deref(), &event.event)?;
        version += 1;
    }
    Ok(Current { version, state })
}

/// Run one command against the round's states. Blocking.
fn decide(
    shared: &Shared,
    pool: &weir_wasm::InstancePool,
    states: &mut HashMap<String, Current>,
    command: Pending,
    time: &str,
) -> Result<Accepted> {
    let current = states.get(&command.id).cloned().unwrap_or_default();
    if let Some(expected) = command.if_match
        && expected != current.version
    {
        return Err(Error::VersionMismatch {
            ty: shared.ty.clone(),
            id: command.id,
            expected,
            actual: current.version,
        });
    }
    let call = EntityCommand {
        name: command.name.clone(),
        entity_id: command.id.clone(),
        data: command.data,
        version: current.version,
    };
    let on = format!("command {:?} to {:?}", command.name, command.id);
    let decision = pool
        .handle_command(current.state.as_deref(), &call)
        .map_err(|e| journal::function_failed(shared, "handle", &on, e))?;
    let new_events = match decision {
        Decision::Reject(reason) => {
            return Err(Error::CommandRejected {
                ty: shared.ty.clone(),
                id: command.id,
                command: command.name,
                reason,
            });
        }
        Decision::Accept(events) => events,
    };
    let mut after = current.clone();
    let mut events = Vec::with_capacity(new_events.len());
    for new in new_events {
        let version = after.version + 1;
        let event = journal::journal_event(&shared.ty, &command.id, version, new, time).map_err(
            |reason| Error::EntityFunction {
                ty: shared.ty.clone(),
                export: "handle".to_owned(),
                on: on.clone(),
                retryable: false,
                reason: format!("it returned an invalid event: {reason}"),
            },
        )?;
        shared
            .schemas
            .check_one_typed(&shared.spec.journal, &event)
            .map_err(|reason| Error::SchemaRejected {
                topic: shared.spec.journal.clone(),
                index: events.len(),
                ty: event.ty.clone(),
                reason,
            })?;
        after.state = journal::apply(shared, pool, after.state.as_deref(), &event)?;
        after.version = version;
        events.push(event);
    }
    states.insert(command.id, after.clone());
    Ok(Accepted {
        events,
        after,
        before: current.version,
    })
}
