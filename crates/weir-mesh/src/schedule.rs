//! Schedules: a cron expression in a time zone ([`Schedule`]) and the positional source
//! of its ticks ([`ScheduleSource`]). A tick is a message whose position is the
//! occurrence it stands for, so the engine commits it with the tick's event: each
//! occurrence fires once, across restarts and on a fleet, and what was missed while
//! nothing ran is skipped or fired once, as the schedule's [`Missed`] says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::{Error, Health, Message, Position, Source};

/// The lane of a schedule's position.
pub const TICKS: &str = "ticks";

/// Missed occurrences counted one by one at most this far; beyond, the count says so.
const MAX_COUNTED: u64 = 1_000_000;

/// A cron expression evaluated in a time zone.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    zone: TimeZone,
}

impl std::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schedule")
            .field("cron", &self.cron.as_str())
            .field("zone", &self.zone.iana_name())
            .finish()
    }
}

impl Schedule {
    /// Parses `expression`: 5 fields (minute hour day-of-month month day-of-week), or 6
    /// with seconds first (and an optional year last), or a nickname (`@daily`,
    /// `@hourly`…); in `timezone` (an IANA name; UTC when `None`).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| format!("{expression:?} is not a cron expression: {e}"))?;
        let zone = match timezone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|e| {
                format!("{name:?} is not a time zone (an IANA name such as \"Europe/Berlin\"): {e}")
            })?,
        };
        // (One that never occurs again, a past year, is valid: it waits forever. Whether a
        // manifest is valid must not depend on the clock.)
        Ok(Schedule { cron, zone })
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let at = t.to_zoned(self.zone.clone());
        self.cron
            .find_next_occurrence(&at, false)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// The last occurrence at or before `t`.
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        let at = t.to_zoned(self.zone.clone());
        self.cron
            .find_previous_occurrence(&at, true)
            .ok()
            .map(|z: Zoned| z.timestamp())
    }

    /// How many occurrences lie strictly between `a` and `b` (at most [`MAX_COUNTED`]).
    pub fn count_between(&self, a: Timestamp, b: Timestamp) -> u64 {
        let mut n = 0;
        let mut at = a;
        while n < MAX_COUNTED {
            match self.next_after(at) {
                Some(next) if next < b => {
                    n += 1;
                    at = next;
                }
                _ => break,
            }
        }
        n
    }
}

/// What a schedule does about occurrences that passed while it did not run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Missed {
    /// Nothing: it fires at the next occurrence from now.
    #[default]
    Skip,
    /// It fires once at once, for the latest missed occurrence.
    Once,
}

/// What the engine needs to run a schedule as a source.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    pub name: String,
    pub schedule: Schedule,
    pub missed: Missed,
    /// Fields added to every tick's data.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// The clock a schedule reads (the system's, or a test's).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The source of a schedule's ticks: one message per occurrence, positioned at it.
pub struct ScheduleSource {
    options: ScheduleOptions,
    clock: Clock,
    /// The occurrence to fire next and how many before it will not fire.
    next: Option<(Timestamp, u64)>,
    token: u64,
}

impl ScheduleSource {
    /// Resumes after the occurrence `resume` holds (the last one fired), if any: missed
    /// ones are skipped or fired once as `options.missed` says; a new schedule fires at
    /// its next occurrence.
    pub fn open(
        options: ScheduleOptions,
        resume: &BTreeMap<String, String>,
        clock: Clock,
    ) -> Result<ScheduleSource, Error> {
        let last = match resume.get(TICKS) {
            None => None,
            Some(text) => Some(text.parse::<Timestamp>().map_err(|e| {
                Error::config(format!(
                    "the stored tick {text:?} of schedule {:?} is not a time: {e}",
                    options.name
                ))
            })?),
        };
        let mut source = ScheduleSource {
            options,
            clock,
            next: None,
            token: 0,
        };
        source.next = source.plan(last);
        Ok(source)
    }

    /// The occurrence to fire after `last` (none fired yet: `None`), at the clock's now.
    fn plan(&self, last: Option<Timestamp>) -> Option<(Timestamp, u64)> {
        let schedule = &self.options.schedule;
        let now = (self.clock)();
        let Some(last) = last else {
            return schedule.next_after(now).map(|t| (t, 0));
        };
        let first = schedule.next_after(last)?;
        if first > now {
            return Some((first, 0));
        }
        // `first` and maybe more passed unfired.
        match self.options.missed {
            Missed::Skip => {
                // Every occurrence in (last, now] passes unfired.
                let at_now = schedule.last_at_or_before(now) == Some(now);
                let missed = schedule.count_between(last, now) + u64::from(at_now);
                schedule.next_after(now).map(|t| (t, missed))
            }
            Missed::Once => {
                let latest = schedule.last_at_or_before(now).unwrap_or(first);
                Some((latest, schedule.count_between(last, latest)))
            }
        }
    }

    /// The tick of occurrence `at`, `missed` occurrences after the one fired before it.
    fn tick(&mut self, at: Timestamp, missed: u64) -> Message {
        let mut data = serde_json::Map::new();
        data.insert("schedule".into(), self.options.name.clone().into());
        data.insert("scheduled".into(), at.to_string().into());
        data.insert("missed".into(), missed.into());
        for (key, value) in &self.options.data {
            data.entry(key.clone()).or_insert_with(|| value.clone());
        }
        let token = self.token;
        self.token += 1;
        Message {
            subject: self.options.name.clone(),
            headers: Vec::new(),
            payload: Bytes::from(serde_json::Value::Object(data).to_string()),
            id: Some(format!("{}:{at}", self.options.name)),
            redelivered: false,
            token,
            position: Some(Position {
                lane: TICKS.to_owned(),
                after: at.to_string(),
            }),
        }
    }

    /// When the next tick fires, if the schedule occurs again.
    pub fn next_tick(&self) -> Option<Timestamp> {
        self.next.map(|(t, _)| t)
    }
}

#[async_trait]
impl Source for ScheduleSource {
    fn kind(&self) -> &'static str {
        "cron"
    }

    fn separator(&self) -> char {
        '.'
    }

    fn positional(&self) -> bool {
        true
    }

    /// Waits for the next occurrence and hands out its tick (one at a time). Cancel-safe:
    /// nothing changes until it returns.
    async fn next(&mut self, _max: usize) -> Result<Vec<Message>, Error> {
        loop {
            let Some((at, missed)) = self.next else {
                return std::future::pending().await;
            };
            let now = (self.clock)();
            if now >= at {
                let tick = self.tick(at, missed);
                self.next = self.plan(Some(at));
                return Ok(vec![tick]);
            }
            // Sleeps in steps of at most a minute, so a clock set forward is noticed.
            let wait = at.duration_since(now).unsigned_abs();
            tokio::time::sleep(wait.min(Duration::from_secs(60))).await;
        }
    }

    async fn ack(&mut self, _tokens: &[u64]) -> Result<(), Error> {
        Ok(())
    }

    fn health(&self) -> Health {
        Health {
            connected: true,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests;
