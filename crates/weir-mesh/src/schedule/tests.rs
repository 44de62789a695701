//! Schedules on a clock the tests set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use super::{Missed, Schedule, ScheduleOptions, ScheduleSource, TICKS};
use crate::Source;

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

struct Fixture {
    now: Arc<Mutex<Timestamp>>,
}

impl Fixture {
    fn new(now: &str) -> Fixture {
        Fixture {
            now: Arc::new(Mutex::new(ts(now))),
        }
    }

    fn set(&self, now: &str) {
        *self.now.lock().unwrap() = ts(now);
    }

    fn open(&self, cron: &str, missed: Missed, last: Option<&str>) -> ScheduleSource {
        let options = ScheduleOptions {
            name: "nightly".into(),
            schedule: Schedule::parse(cron, Some("Europe/Berlin")).unwrap(),
            missed,
            data: serde_json::from_str(r#"{"region":"eu"}"#).unwrap(),
        };
        let resume: BTreeMap<String, String> = last
            .map(|l| [(TICKS.to_owned(), l.to_owned())].into())
            .unwrap_or_default();
        let now = self.now.clone();
        ScheduleSource::open(options, &resume, Arc::new(move || *now.lock().unwrap())).unwrap()
    }
}

async fn fire(source: &mut ScheduleSource) -> serde_json::Value {
    let mut tick = source.next(10).await.unwrap();
    assert_eq!(tick.len(), 1);
    let tick = tick.remove(0);
    let data: serde_json::Value = serde_json::from_slice(&tick.payload).unwrap();
    assert_eq!(
        tick.position.unwrap().after,
        data["scheduled"].as_str().unwrap()
    );
    assert_eq!(
        tick.id.unwrap(),
        format!("nightly:{}", data["scheduled"].as_str().unwrap())
    );
    data
}

#[tokio::test]
async fn a_new_schedule_fires_at_its_next_occurrence_in_its_time_zone() {
    // 02:00 in Berlin is 01:00 UTC in winter.
    let clock = Fixture::new("2026-12-05T00:30:00Z");
    let mut source = clock.open("0 2 * * *", Missed::Skip, None);
    assert_eq!(source.next_tick(), Some(ts("2026-12-05T01:00:00Z")));
    clock.set("2026-12-05T01:00:00Z");
    let data = fire(&mut source).await;
    assert_eq!(data["scheduled"], "2026-12-05T01:00:00Z");
    assert_eq!(data["missed"], 0);
    assert_eq!(data["region"], "eu");
    assert_eq!(data["schedule"], "nightly");
    assert_eq!(source.next_tick(), Some(ts("2026-12-06T01:00:00Z")));
}

#[tokio::test]
async fn missed_occurrences_are_skipped_or_fired_once() {
    // Last fired on the 1st; three nights passed while nothing ran.
    let clock = Fixture::new("2026-12-04T12:00:00Z");
    let mut skip = clock.open("0 2 * * *", Missed::Skip, Some("2026-12-01T01:00:00Z"));
    assert_eq!(skip.next_tick(), Some(ts("2026-12-05T01:00:00Z")));
    clock.set("2026-12-05T01:00:00Z");
    assert_eq!(fire(&mut skip).await["missed"], 3);

    clock.set("2026-12-04T12:00:00Z");
    let mut once = clock.open("0 2 * * *", Missed::Once, Some("2026-12-01T01:00:00Z"));
    // The latest missed one at once, the two before it counted, then on schedule.
    let data = fire(&mut once).await;
    assert_eq!(
        (data["scheduled"].as_str(), data["missed"].as_u64()),
        (Some("2026-12-04T01:00:00Z"), Some(2))
    );
    assert_eq!(once.next_tick(), Some(ts("2026-12-05T01:00:00Z")));

    // Nothing missed: the next one after the last fired, whatever the policy.
    let resumed = clock.open("0 2 * * *", Missed::Once, Some("2026-12-04T01:00:00Z"));
    assert_eq!(resumed.next_tick(), Some(ts("2026-12-05T01:00:00Z")));
}

#[tokio::test]
async fn a_tick_is_not_handed_out_before_its_time_and_next_is_cancel_safe() {
    let clock = Fixture::new("2026-12-05T00:59:59Z");
    let mut source = clock.open("0 2 * * *", Missed::Skip, None);
    let early = tokio::time::timeout(std::time::Duration::from_millis(50), source.next(1)).await;
    assert!(early.is_err(), "a tick before its time");
    clock.set("2026-12-05T01:00:01Z");
    assert_eq!(fire(&mut source).await["scheduled"], "2026-12-05T01:00:00Z");
}

#[test]
fn expressions_and_zones_are_checked() {
    assert!(Schedule::parse("*/15 * * * * *", None).is_ok());
    assert!(Schedule::parse("@hourly", Some("America/New_York")).is_ok());
    let e = Schedule::parse("61 * * * *", None).unwrap_err();
    assert!(e.contains("not a cron expression"), "{e}");
    let e = Schedule::parse("0 2 * * *", Some("Mars/Olympus")).unwrap_err();
    assert!(e.contains("not a time zone"), "{e}");
    let past = Schedule::parse("0 0 0 1 1 * 2001", None).unwrap();
    assert_eq!(past.next_after(Timestamp::now()), None);
    // Each occurrence of a DST day counted once: 2026-03-29 in Berlin has no 02:30.
    let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
    let n = s.count_between(ts("2026-03-27T12:00:00Z"), ts("2026-03-31T12:00:00Z"));
    assert!((3..=4).contains(&n), "{n}");
}
