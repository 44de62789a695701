//! The control topic: weir's topic specs, owners' claims and group commits, as records of
//! one compacted Kafka partition that every node replays into the same state.
//!
//! **Architecture Invariant:** the control partition's order decides. A claim's generation
//! is its offset plus one, so every claim is above every earlier one; a commit is applied
//! only when its generation is at least the newest claim for its partition that precedes
//! it in the partition, so an owner fenced before its commit was stored changes nothing,
//! whatever the clocks or the nodes' views. Every read of the state first catches up to
//! the partition's end, so it sees every write acknowledged before it began.
//!
//! Keys make compaction keep what replaying needs: the latest spec per topic, the latest
//! claim per group partition, and the latest commit per group partition *and generation*
//! (a late commit of a fenced owner cannot displace the accepted commits of its own
//! generation's successor).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use weir_log::{Error, ErrorKind, GroupCommit, Member, Result, TopicSpec};

use crate::{KafkaOptions, blocking, unavailable};

/// One record of the control topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum ControlRecord {
    Topic {
        name: String,
        spec: TopicSpec,
    },
    Claim {
        group: String,
        topic: String,
        partition: u32,
    },
    Commit {
        group: String,
        topic: String,
        partition: u32,
        next_offset: u64,
        generation: u64,
    },
    /// A fleet member is alive; `at_ms` is its clock when it wrote this.
    Heartbeat {
        member: Member,
        at_ms: i64,
    },
    /// A fleet member stopped cleanly.
    Leave {
        id: String,
    },
    /// Retention moved a partition's start here: weir reads nothing below it, even
    /// where the brokers still keep it (they delete by segments, when they get to it).
    Trim {
        topic: String,
        partition: u32,
        start: u64,
    },
    /// A fleet's deploy record (`weir_log::SharedDeploys`), its value in base64.
    Deploy {
        key: String,
        value: String,
    },
    /// A deployed component's chunks are stored, from `at.offset` of the functions topic.
    Component {
        name: String,
        at: ComponentAt,
    },
}

/// A deploy record's key and value.
pub(crate) type DeployRecord = (String, Bytes);

/// Where a component's chunks are, in the functions topic (see `deploys.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ComponentAt {
    /// The offset of its first chunk (another component's chunks may come between).
    pub(crate) offset: u64,
    pub(crate) chunks: u32,
    /// Its size in bytes.
    pub(crate) len: u64,
}

impl ControlRecord {
    fn key(&self) -> String {
        match self {
            ControlRecord::Topic { name, .. } => format!("topic/{name}"),
            ControlRecord::Claim {
                group,
                topic,
                partition,
            } => format!("claim/{group}/{topic}/{partition}"),
            ControlRecord::Commit {
                group,
                topic,
                partition,
                generation,
                ..
            } => format!("commit/{group}/{topic}/{partition}/{generation}"),
            ControlRecord::Heartbeat { member, .. } => format!("member/{}", member.id),
            ControlRecord::Leave { id } => format!("member/{id}"),
            ControlRecord::Trim {
                topic, partition, ..
            } => format!("trim/{topic}/{partition}"),
            ControlRecord::Deploy { key, .. } => format!("deploy/{key}"),
            ControlRecord::Component { name, .. } => format!("component/{name}"),
        }
    }
}

type GroupPartition = (String, String, u32);

#[derive(Default)]
struct State {
    topics: BTreeMap<String, TopicSpec>,
    /// The newest claim's generation per group partition.
    claims: HashMap<GroupPartition, u64>,
    /// The last applied commit per group partition.
    committed: HashMap<GroupPartition, u64>,
    /// Whether each recent commit record was applied, by its offset (for its writer).
    outcomes: BTreeMap<u64, bool>,
    /// Live members, with when this node applied their last heartbeat.
    members: HashMap<String, (Member, Instant)>,
    /// Each trimmed partition's start.
    trims: HashMap<(String, u32), u64>,
    /// The fleet's deploy records.
    deploys: BTreeMap<String, Bytes>,
    /// Stored components, by name.
    components: HashMap<String, ComponentAt>,
}

/// How long a member stays listed after its last heartbeat (it beats every second).
pub const MEMBER_LIFETIME: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How many commit outcomes are kept for writers to collect.
const OUTCOMES_KEPT: usize = 65_536;

impl State {
    /// Applies a record; a deploy record it set, for the watchers.
    fn apply(&mut self, offset: u64, record: ControlRecord) -> Option<(String, Bytes)> {
        match record {
            ControlRecord::Deploy { key, value } => {
                match base64::engine::general_purpose::STANDARD.decode(&value) {
                    Ok(value) => {
                        let value = Bytes::from(value);
                        self.deploys.insert(key.clone(), value.clone());
                        return Some((key, value));
                    }
                    Err(e) => {
                        tracing::warn!(offset, key, error = %e, "skipping a deploy record that is not base64")
                    }
                }
            }
            ControlRecord::Component { name, at } => {
                self.components.insert(name, at);
            }
            // Liveness is judged by this node's clock when it applies the heartbeat, so
            // members' clocks need not agree; a heartbeat already older than a lifetime
            // when applied (replayed at start) counts for nothing.
            ControlRecord::Heartbeat { member, at_ms } => {
                if now_ms().saturating_sub(at_ms) < MEMBER_LIFETIME.as_millis() as i64 {
                    self.members
                        .insert(member.id.clone(), (member, Instant::now()));
                }
            }
            ControlRecord::Leave { id } => {
                self.members.remove(&id);
            }
            ControlRecord::Trim {
                topic,
                partition,
                start,
            } => {
                let trim = self.trims.entry((topic, partition)).or_default();
                *trim = (*trim).max(start);
            }
            ControlRecord::Topic { name, spec } => {
                self.topics.insert(name, spec);
            }
            ControlRecord::Claim {
                group,
                topic,
                partition,
            } => {
                self.claims.insert((group, topic, partition), offset + 1);
            }
            ControlRecord::Commit {
                group,
                topic,
                partition,
                next_offset,
                generation,
            } => {
                let key = (group, topic, partition);
                let applied = generation >= self.claims.get(&key).copied().unwrap_or(0);
                if applied {
                    self.committed.insert(key, next_offset);
                }
                self.outcomes.insert(offset, applied);
                if self.outcomes.len() > OUTCOMES_KEPT {
                    let cut = offset.saturating_sub(OUTCOMES_KEPT as u64 / 2);
                    self.outcomes = self.outcomes.split_off(&cut);
                }
            }
        }
        None
    }
}

pub(crate) struct Control {
    topic: String,
    timeout: Duration,
    producer: FutureProducer,
    meta: Arc<BaseConsumer>,
    state: Mutex<State>,
    /// The next control offset to apply: everything below it is in `state`.
    applied: watch::Sender<u64>,
    /// Each deploy record as it is applied.
    deploy_changes: broadcast::Sender<(String, Bytes)>,
}

fn fenced(group: &str, topic: &str, partition: u32, newest: u64, mine: u64) -> Error {
    Error::new(
        ErrorKind::Fenced,
        format!(
            "group \"{group}\" has a newer owner of partition {partition} of topic \"{topic}\" (generation {newest}, this commit's is {mine}); this owner must stop"
        ),
    )
    .with_code("fenced")
}

impl Control {
    /// Starts replaying the control topic and returns once the state is caught up.
    pub(crate) async fn open(
        options: &KafkaOptions,
        producer: FutureProducer,
        meta: Arc<BaseConsumer>,
    ) -> Result<Arc<Control>> {
        let topic = options.control_topic();
        let consumer: StreamConsumer = options
            .client_config()
            .set("group.id", "weir-control")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // A write waits for this replay: held fetches would slow every commit.
            .set(
                "fetch.wait.max.ms",
                options.fetch_wait_ms.min(20).to_string(),
            )
            .create()
            .map_err(|e| unavailable("cannot start the control topic's consumer".into(), e))?;
        let mut list = rdkafka::TopicPartitionList::new();
        list.add_partition_offset(&topic, 0, rdkafka::Offset::Offset(0))
            .and_then(|()| consumer.assign(&list))
            .map_err(|e| unavailable(format!("cannot read {topic}"), e))?;
        let (applied, _) = watch::channel(0);
        let control = Arc::new(Control {
            topic,
            timeout: options.timeout,
            producer,
            meta,
            state: Mutex::new(State::default()),
            applied,
            deploy_changes: broadcast::channel(crate::deploys::WATCH_BACKLOG).0,
        });
        tokio::spawn(tail(Arc::downgrade(&control), consumer));
        control.sync().await?;
        Ok(control)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until everything below `offset` is applied.
    async fn applied_to(&self, offset: u64) -> Result<()> {
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(self.timeout, applied.wait_for(|a| *a >= offset))
            .await
            .map_err(|_| {
                unavailable(
                    format!("cannot read the control topic {}", self.topic),
                    format!("not caught up to offset {offset} in {:?}", self.timeout),
                )
            })?
            .map_err(|_| unavailable("the control topic's reader stopped".into(), "closed"))?;
        Ok(())
    }

    /// Catches up to the control partition's end as it is now.
    pub(crate) async fn sync(&self) -> Result<()> {
        let meta = self.meta.clone();
        let topic = self.topic.clone();
        let timeout = self.timeout;
        let (_, high) = blocking(format!("cannot read the end of {topic}"), move || {
            meta.fetch_watermarks(&topic, 0, timeout)
        })
        .await?;
        self.applied_to(high.max(0) as u64).await
    }

    /// Appends a record and waits until it is applied; its offset.
    pub(crate) async fn write(&self, record: ControlRecord) -> Result<u64> {
        let key = record.key();
        let value = serde_json::to_vec(&record).expect("control records serialize");
        let delivery = self
            .producer
            .send(
                FutureRecord::to(&self.topic)
                    .partition(0)
                    .key(&key)
                    .payload(&value),
                self.timeout,
            )
            .await
            .map_err(|(e, _)| unavailable(format!("cannot write to {}", self.topic), e))?;
        let offset = delivery.offset as u64;
        self.applied_to(offset + 1).await?;
        Ok(offset)
    }

    pub(crate) fn topic_spec(&self, name: &str) -> Option<TopicSpec> {
        self.state().topics.get(name).cloned()
    }

    /// Where retention moved a partition's start (0 if it never did), as of the last
    /// catch-up.
    pub(crate) fn trim(&self, topic: &str, partition: u32) -> u64 {
        self.state()
            .trims
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Where a stored component's chunks are, as of the last catch-up.
    pub(crate) fn component(&self, name: &str) -> Option<ComponentAt> {
        self.state().components.get(name).cloned()
    }

    pub(crate) fn deploy_record(&self, key: &str) -> Option<Bytes> {
        self.state().deploys.get(key).cloned()
    }

    /// Every deploy record as applied so far, and each one applied from then on.
    pub(crate) fn watch_deploys(&self) -> (Vec<DeployRecord>, broadcast::Receiver<DeployRecord>) {
        let state = self.state();
        let changes = self.deploy_changes.subscribe();
        let current = state
            .deploys
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (current, changes)
    }

    pub(crate) fn topic_names(&self) -> BTreeSet<String> {
        self.state().topics.keys().cloned().collect()
    }

    pub(crate) async fn claim(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        let offset = self
            .write(ControlRecord::Claim {
                group: group.to_owned(),
                topic: topic.to_owned(),
                partition,
            })
            .await?;
        Ok(offset + 1)
    }

    pub(crate) async fn generation(&self, group: &str, topic: &str, partition: u32) -> Result<u64> {
        self.sync().await?;
        Ok(self
            .state()
            .claims
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .copied()
            .unwrap_or(0))
    }

    pub(crate) async fn commit(&self, commit: GroupCommit) -> Result<()> {
        let newest = self
            .generation(&commit.group, &commit.topic, commit.partition)
            .await?;
        if commit.generation < newest {
            return Err(fenced(
                &commit.group,
                &commit.topic,
                commit.partition,
                newest,
                commit.generation,
            ));
        }
        let offset = self
            .write(ControlRecord::Commit {
                group: commit.group.clone(),
                topic: commit.topic.clone(),
                partition: commit.partition,
                next_offset: commit.next_offset,
                generation: commit.generation,
            })
            .await?;
        let applied = self.state().outcomes.remove(&offset);
        match applied {
            Some(true) => Ok(()),
            Some(false) => {
                let newest = self
                    .generation(&commit.group, &commit.topic, commit.partition)
                    .await?;
                Err(fenced(
                    &commit.group,
                    &commit.topic,
                    commit.partition,
                    newest,
                    commit.generation,
                ))
            }
            None => Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the commit at control offset {offset} was stored but its outcome is no longer known; read the committed offset"
                ),
            )),
        }
    }

    pub(crate) async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>> {
        self.sync().await?;
        Ok(self
            .state()
            .committed
            .get(&(group.to_owned(), topic.to_owned(), partition))
            .copied())
    }
}

/// Replays the control partition into the state for as long as the log is open.
async fn tail(control: Weak<Control>, consumer: StreamConsumer) {
    loop {
        let received = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await;
        let Some(control) = control.upgrade() else {
            return;
        };
        match received {
            Err(_) | Ok(Err(KafkaError::PartitionEOF(_))) => {}
            Ok(Err(e)) => {
                tracing::warn!(topic = %control.topic, error = %e, "cannot read the control topic; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(Ok(message)) => {
                let offset = message.offset() as u64;
                match serde_json::from_slice::<ControlRecord>(message.payload().unwrap_or_default())
                {
                    Ok(record) => {
                        let mut state = control.state();
                        // Sent under the state's lock, so a watcher's snapshot, taken
                        // under it too, holds each change or its watch gets it, never both.
                        if let Some(change) = state.apply(offset, record) {
                            // No watcher is no error.
                            let _ = control.deploy_changes.send(change);
                        }
                    }
                    // A record of a newer weir: skipped here, named in the log.
                    Err(e) => {
                        tracing::warn!(topic = %control.topic, offset, error = %e, "skipping a control record this weir cannot read")
                    }
                }
                control.applied.send_replace(offset + 1);
            }
        }
    }
}

/// The fleet's register, in the control topic.
pub(crate) struct KafkaMembers {
    pub(crate) control: Arc<Control>,
}

#[async_trait::async_trait]
impl weir_log::Membership for KafkaMembers {
    async fn heartbeat(&self, me: &Member) -> Result<()> {
        self.control
            .write(ControlRecord::Heartbeat {
                member: me.clone(),
                at_ms: now_ms(),
            })
            .await
            .map(|_| ())
    }

    async fn members(&self) -> Result<Vec<Member>> {
        self.control.sync().await?;
        let mut live: Vec<Member> = self
            .control
            .state()
            .members
            .values()
            .filter(|(_, seen)| seen.elapsed() < MEMBER_LIFETIME)
            .map(|(member, _)| member.clone())
            .collect();
        live.sort();
        Ok(live)
    }

    async fn leave(&self, id: &str) -> Result<()> {
        self.control
            .write(ControlRecord::Leave { id: id.to_owned() })
            .await
            .map(|_| ())
    }

    fn lifetime(&self) -> Duration {
        MEMBER_LIFETIME
    }
}
