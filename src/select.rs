//! Select: which of the records read a day keeps (`DAY_BY`, `DEDUP`). It sits between
//! the records and the chunks stages, on the records stage's thread, and has no I/O.
//!
//! **`DAY_BY=delivery`** (the default) keeps every record of the day's delivery folders:
//! the day is CloudTrail's folder `YYYY/MM/DD/`.
//!
//! **`DAY_BY=event`**: the run of day D reads the delivery folders D and D+1 of every
//! account and region (CloudTrail delivers an event within minutes, so D's last events
//! are in D+1's first files) and keeps exactly the records whose `eventTime` falls on D
//! (UTC). The others are left for their own day's run and counted (`other_days`); those
//! that no event day's run will read — an event more than a day older than the folder
//! it was delivered in, which the run of its day does not list — are counted apart
//! (`in_no_day`) and logged as a warning, since they are in no event day's output. A
//! record whose `eventTime` is missing, not a string, not RFC 3339 or given twice fails
//! the run naming the file and the record: nothing is dropped on a guess.
//!
//! **`DEDUP=eventid`**: a record whose `eventID` was already kept for the day is dropped
//! (`duplicates`); the first in the output's order (source key, then position) wins. A
//! record without a string `eventID` is kept (`without_event_id`). The seen set holds
//! a 128-bit hash (xxh3-128) of each eventID kept — a collision, which would drop a
//! record, has a probability of about n² / 2¹²⁹ (10⁻²⁶ for the 1.5 M-record organisation
//! day) — in a hash set of 17 bytes per slot, at most 7/8 full: 19–39 bytes per record
//! kept, and for a moment half as much again while the table doubles (both tables are
//! held): the 1.59 M-record event day of BENCHMARKS.md peaked 59 MiB above the run
//! without it. Past `DEDUP_MAX_EVENTS` records (20 M by default, ~0.9 GiB at most) the
//! run fails saying so, rather than grow without bound.
//!
//! Order is never changed: a record is kept or not, in the order it was read.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use crate::config::Setting;
use crate::delivery_index::{FolderEntry, IndexBuilder, IndexUse};
use crate::records::{json_str, Record};

use crate::trigger::Day;

/// `DEDUP_MAX_EVENTS` default: eventIDs remembered for one day before the run fails.
pub const DEFAULT_DEDUP_MAX_EVENTS: u64 = 20_000_000;

/// What a day is (`DAY_BY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DayBy {
    /// CloudTrail's delivery folder.
    #[default]
    Delivery,
    /// The events whose `eventTime` is on the day.
    Event,
}

/// Duplicate removal (`DEDUP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dedup {
    #[default]
    None,
    /// One record per `eventID`.
    #[serde(rename = "eventid")]
    EventId,
}

impl Setting for DayBy {
    const ALL: &'static [Self] = &[DayBy::Delivery, DayBy::Event];

    fn name(self) -> &'static str {
        match self {
            DayBy::Delivery => "delivery",
            DayBy::Event => "event",
        }
    }
}

impl Setting for Dedup {
    const ALL: &'static [Self] = &[Dedup::None, Dedup::EventId];

    fn name(self) -> &'static str {
        match self {
            Dedup::None => "none",
            Dedup::EventId => "eventid",
        }
    }
}

crate::setting_str!(DayBy);
crate::setting_str!(Dedup);

/// The delivery folders a day reads: D, and with `DAY_BY=event` also D+1.
pub fn folders_read(day: Day, day_by: DayBy) -> Vec<Day> {
    match (day_by, day.succ()) {
        (DayBy::Event, Some(next)) => vec![day, next],
        _ => vec![day],
    }
}

/// Files and records read from one delivery folder (summed over accounts and regions).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct FolderCount {
    /// The delivery day, `YYYY-MM-DD`.
    pub day: String,
    pub files: u64,
    pub records: u64,
}

/// What selection did, for the manifest (only when `DAY_BY` or `DEDUP` is not the
/// default, so that a default manifest is unchanged).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Selection {
    pub day_by: DayBy,
    pub dedup: Dedup,
    /// The delivery folders read, in order, with what each held.
    pub folders: Vec<FolderCount>,
    pub records_read: u64,
    pub records_written: u64,
    /// Records of other days, left for their own day's run.
    pub other_days: u64,
    /// Of those, the ones no event day's run reads (delivered more than a day late).
    pub in_no_day: u64,
    /// Records dropped because their eventID was already written.
    pub duplicates: u64,
    /// Records kept without a string eventID (with `DEDUP=eventid`).
    pub without_event_id: u64,
    /// How the next day's delivery index spared files of its folders
    /// ([`crate::delivery_index`]); absent when none was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_index: Option<Box<IndexUse>>,
}

impl Selection {
    /// Adds what another shard of the same day selected (the same folders, in the same
    /// order).
    pub fn merge(&mut self, other: &Selection) {
        for (mine, theirs) in self.folders.iter_mut().zip(&other.folders) {
            mine.files += theirs.files;
            mine.records += theirs.records;
        }
        self.records_read += other.records_read;
        self.records_written += other.records_written;
        self.other_days += other.other_days;
        self.in_no_day += other.in_no_day;
        self.duplicates += other.duplicates;
        self.without_event_id += other.without_event_id;
        if self.next_index.is_none() {
            self.next_index.clone_from(&other.next_index);
        }
    }
}

/// Why a record could not be selected (the file's key is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("record {index} has no usable eventTime ({why}); DAY_BY=event places every record by it (DAY_BY=delivery does not read it)")]
    EventTime { index: u64, why: String },
    #[error("record {index}: {why}")]
    Unreadable { index: u64, why: String },
    #[error("more than DEDUP_MAX_EVENTS ({limit}) records for one day: raise DEDUP_MAX_EVENTS (each costs 19–39 bytes of memory) or set DEDUP=none")]
    TooManyEvents { limit: u64 },
}

/// The first value of `eventTime` and of `eventID` in `record` (one pass over its fields),
/// and whether either is given more than once.
fn time_and_id<'a>(record: &Record<'a>) -> ([Option<&'a str>; 2], [bool; 2]) {
    let (mut values, mut twice) = ([None, None], [false, false]);
    for f in record.fields {
        let slot = if record.key_is(f, "eventTime") {
            0
        } else if record.key_is(f, "eventID") {
            1
        } else {
            continue;
        };
        match values[slot] {
            None => values[slot] = Some(record.value(f)),
            Some(_) => twice[slot] = true,
        }
    }
    (values, twice)
}

/// Decides record by record; see the module doc.
#[derive(Debug)]
pub struct Selector {
    day: NaiveDate,
    /// The delivery days read (D, or D and D+1).
    folders: Vec<Day>,
    seen: HashSet<u128>,
    max_events: u64,
    stats: Selection,
    /// The folder of the file being read (an index into `folders`).
    folder: usize,
    /// The index of the next record in the file being read.
    index: u64,
    /// With `DAY_BY=event`: the run's delivery folders indexed, for the day before's run.
    delivery_index: Option<IndexBuilder>,
    /// Whether the file being read holds a record of a day before its folder's.
    earlier: bool,
}

impl Selector {
    pub fn new(day: Day, day_by: DayBy, dedup: Dedup, max_events: u64) -> Selector {
        let folders = folders_read(day, day_by);
        let counts = folders
            .iter()
            .map(|d| FolderCount {
                day: d.to_string(),
                files: 0,
                records: 0,
            })
            .collect();
        Selector {
            day: day.0,
            folders,
            seen: HashSet::new(),
            max_events,
            stats: Selection {
                day_by,
                dedup,
                folders: counts,
                records_read: 0,
                records_written: 0,
                other_days: 0,
                in_no_day: 0,
                duplicates: 0,
                without_event_id: 0,
                next_index: None,
            },
            folder: 0,
            index: 0,
            delivery_index: (day_by == DayBy::Event).then(|| IndexBuilder::new(day)),
            earlier: false,
        }
    }

    /// Whether selection has anything to do: not for the default settings.
    pub fn needed(day_by: DayBy, dedup: Dedup) -> bool {
        day_by != DayBy::Delivery || dedup != Dedup::None
    }

    /// A file of the day begins (`…/YYYY/MM/DD/name`): its records count for its
    /// delivery folder.
    pub fn file_start(&mut self, key: &str) {
        let mut parts = key.rsplit('/').skip(1);
        let (d, m, y) = (parts.next(), parts.next(), parts.next());
        let day = match (y, m, d) {
            (Some(y), Some(m), Some(d)) => match (y.parse(), m.parse(), d.parse()) {
                (Ok(y), Ok(m), Ok(d)) => Day::from_ymd(y, m, d),
                _ => None,
            },
            _ => None,
        };
        // The listing only hands out keys of the folders read; the first is the safe
        // guess for any other.
        self.folder = day
            .and_then(|day| self.folders.iter().position(|f| *f == day))
            .unwrap_or(0);
        self.stats.folders[self.folder].files += 1;
        self.index = 0;
        self.earlier = false;
    }

    /// The file begun last was read to its end (as listed: `size`, `etag`).
    pub fn file_done(&mut self, key: &str, size: u64, etag: Option<&str>) {
        if let Some(index) = &mut self.delivery_index {
            index.file(key, size, etag, self.earlier);
        }
    }

    /// Whether `record` (one element of a file's `Records`, with its fields) is kept.
    pub fn keep(&mut self, record: &Record<'_>) -> Result<bool, SelectError> {
        let index = self.index;
        self.index += 1;
        self.stats.records_read += 1;
        self.stats.folders[self.folder].records += 1;
        let ([event_time, event_id], [time_twice, id_twice]) = time_and_id(record);
        if self.stats.day_by == DayBy::Event && time_twice {
            let why = "eventTime is given twice".to_string();
            return Err(SelectError::EventTime { index, why });
        }
        if self.stats.dedup == Dedup::EventId && id_twice {
            let why = "eventID is given twice".to_string();
            return Err(SelectError::Unreadable { index, why });
        }
        if self.stats.day_by == DayBy::Event {
            let event_day = self.event_day(index, event_time)?;
            if event_day != self.day {
                self.stats.other_days += 1;
                // Day E's run reads folders E and E+1.
                let folder = self.folders[self.folder].0;
                self.earlier |= event_day < folder;
                if event_day != folder && event_day.succ_opt() != Some(folder) {
                    self.stats.in_no_day += 1;
                    tracing::warn!(
                        record = index,
                        event_day = %event_day,
                        delivered = %folder,
                        "an event delivered more than a day late: no DAY_BY=event run reads it"
                    );
                }
                return Ok(false);
            }
        }
        if self.stats.dedup == Dedup::EventId {
            match event_id.and_then(json_str) {
                Some(id) => {
                    let hash = twox_hash::XxHash3_128::oneshot(id.as_bytes());
                    if !self.seen.insert(hash) {
                        self.stats.duplicates += 1;
                        return Ok(false);
                    }
                    if self.seen.len() as u64 > self.max_events {
                        return Err(SelectError::TooManyEvents {
                            limit: self.max_events,
                        });
                    }
                }
                None => self.stats.without_event_id += 1,
            }
        }
        self.stats.records_written += 1;
        Ok(true)
    }

    /// The UTC day of a record's `eventTime`.
    fn event_day(&self, index: u64, raw: Option<&str>) -> Result<NaiveDate, SelectError> {
        let why = |why: String| SelectError::EventTime { index, why };
        let raw = raw.ok_or_else(|| why("it is missing".into()))?;
        let text = json_str(raw).ok_or_else(|| why(format!("{raw} is not a string")))?;
        let time = DateTime::parse_from_rfc3339(&text)
            .map_err(|e| why(format!("{:?} is not an RFC 3339 time: {e}", text.as_ref())))?;
        Ok(time.with_timezone(&Utc).date_naive())
    }

    /// Consumes the selector: what it selected, and with `DAY_BY=event` the index of
    /// the run's own delivery folders.
    pub fn finish(self) -> (Selection, Option<Vec<FolderEntry>>) {
        (self.stats, self.delivery_index.map(IndexBuilder::finish))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s.keep` of a record given as bytes (its fields found as the records stage finds
    /// them).
    fn keep(s: &mut Selector, bytes: &[u8]) -> Result<bool, SelectError> {
        let mut fields = Vec::new();
        crate::records::fields_of(bytes, &mut fields).unwrap();
        s.keep(&Record {
            bytes,
            fields: &fields,
        })
    }

    fn day() -> Day {
        "2024-02-12".parse().unwrap()
    }

    fn rec(time: &str, id: &str) -> Vec<u8> {
        format!(r#"{{"eventVersion":"1.08","eventTime":"{time}","eventID":"{id}","x":{{"eventTime":"nested"}}}}"#)
            .into_bytes()
    }

    const D: &str = "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/12/f.json.gz";
    const D1: &str = "AWSLogs/111111111111/CloudTrail/eu-west-1/2024/02/13/f.json.gz";

    /// Event mode keeps D's events from both folders and counts the rest per folder.
    #[test]
    fn event_day_keeps_the_events_of_the_day() {
        let mut s = Selector::new(day(), DayBy::Event, Dedup::None, 10);
        s.file_start(D);
        assert!(!keep(&mut s, &rec("2024-02-11T23:58:00Z", "a")).unwrap());
        assert!(keep(&mut s, &rec("2024-02-12T00:01:00Z", "b")).unwrap());
        assert!(keep(&mut s, &rec("2024-02-12T23:59:59Z", "c")).unwrap());
        s.file_start(D1);
        assert!(keep(&mut s, &rec("2024-02-12T23:59:59.999Z", "d")).unwrap());
        assert!(!keep(&mut s, &rec("2024-02-13T00:00:00Z", "e")).unwrap());
        // Another offset: 2024-02-13T00:30+01:00 is 2024-02-12T23:30Z.
        assert!(keep(&mut s, &rec("2024-02-13T00:30:00+01:00", "f")).unwrap());
        let sel = s.finish().0;
        assert_eq!(sel.records_read, 6);
        assert_eq!(sel.records_written, 4);
        assert_eq!(sel.other_days, 2);
        assert_eq!(sel.in_no_day, 0);
        assert_eq!(
            sel.folders,
            vec![
                FolderCount {
                    day: "2024-02-12".into(),
                    files: 1,
                    records: 3
                },
                FolderCount {
                    day: "2024-02-13".into(),
                    files: 1,
                    records: 3
                },
            ]
        );
    }

    /// An event of D-1 found in D+1's folder is read by no event day's run: counted.
    #[test]
    fn an_event_two_days_late_is_counted_as_in_no_day() {
        let mut s = Selector::new(day(), DayBy::Event, Dedup::None, 10);
        s.file_start(D1);
        assert!(!keep(&mut s, &rec("2024-02-11T12:00:00Z", "a")).unwrap());
        let sel = s.finish().0;
        assert_eq!((sel.other_days, sel.in_no_day), (1, 1));
    }

    /// A record without a usable eventTime fails, naming the record.
    #[test]
    fn an_unusable_event_time_is_an_error() {
        for bad in [
            r#"{"eventID":"a"}"#,
            r#"{"eventTime":12,"eventID":"a"}"#,
            r#"{"eventTime":null}"#,
            r#"{"eventTime":"yesterday"}"#,
            r#"{"eventTime":"2024-02-12T10:00:00Z","eventTime":"2024-02-12T10:00:00Z"}"#,
        ] {
            let mut s = Selector::new(day(), DayBy::Event, Dedup::None, 10);
            s.file_start(D);
            assert!(keep(&mut s, &rec("2024-02-12T00:00:00Z", "x")).unwrap());
            let e = keep(&mut s, bad.as_bytes()).unwrap_err();
            assert!(
                matches!(e, SelectError::EventTime { index: 1, .. }),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains("record 1"), "{e}");
        }
        // In delivery mode eventTime is not read.
        let mut s = Selector::new(day(), DayBy::Delivery, Dedup::EventId, 10);
        assert!(keep(&mut s, br#"{"eventTime":"yesterday","eventID":"a"}"#).unwrap());
    }

    /// DEDUP keeps the first of each eventID, across files and folders, and every
    /// record without one.
    #[test]
    fn dedup_keeps_the_first_of_each_event_id() {
        let mut s = Selector::new(day(), DayBy::Event, Dedup::EventId, 10);
        s.file_start(D);
        assert!(keep(&mut s, &rec("2024-02-12T01:00:00Z", "a")).unwrap());
        assert!(!keep(&mut s, &rec("2024-02-12T01:00:00Z", "a")).unwrap());
        assert!(keep(&mut s, &rec("2024-02-12T01:00:00Z", "b")).unwrap());
        s.file_start(D1);
        assert!(!keep(&mut s, &rec("2024-02-12T01:00:00Z", "b")).unwrap());
        // Another day's record does not enter the seen set.
        assert!(!keep(&mut s, &rec("2024-02-13T01:00:00Z", "c")).unwrap());
        assert!(keep(&mut s, br#"{"eventTime":"2024-02-12T02:00:00Z"}"#).unwrap());
        assert!(keep(
            &mut s,
            br#"{"eventTime":"2024-02-12T02:00:00Z","eventID":7}"#
        )
        .unwrap());
        let sel = s.finish().0;
        assert_eq!(sel.duplicates, 2);
        assert_eq!(sel.without_event_id, 2);
        assert_eq!(sel.records_written, 4);
        assert_eq!(sel.other_days, 1);
    }

    /// An escaped eventID is the same eventID.
    #[test]
    fn dedup_compares_event_ids_by_value() {
        let mut s = Selector::new(day(), DayBy::Delivery, Dedup::EventId, 10);
        assert!(keep(&mut s, br#"{"eventID":"ab"}"#).unwrap());
        assert!(!keep(&mut s, br#"{"eventID":"a\u0062"}"#).unwrap());
    }

    /// Past DEDUP_MAX_EVENTS the run fails, saying how to go on.
    #[test]
    fn dedup_is_bounded() {
        let mut s = Selector::new(day(), DayBy::Delivery, Dedup::EventId, 2);
        assert!(keep(&mut s, br#"{"eventID":"a"}"#).unwrap());
        assert!(keep(&mut s, br#"{"eventID":"b"}"#).unwrap());
        let e = keep(&mut s, br#"{"eventID":"c"}"#).unwrap_err();
        assert_eq!(e, SelectError::TooManyEvents { limit: 2 });
        assert!(e.to_string().contains("DEDUP_MAX_EVENTS"));
    }

    #[test]
    fn settings_parse() {
        assert_eq!("EVENT".parse::<DayBy>().unwrap(), DayBy::Event);
        assert_eq!(" delivery".parse::<DayBy>().unwrap(), DayBy::Delivery);
        assert!("events".parse::<DayBy>().is_err());
        assert_eq!("eventId".parse::<Dedup>().unwrap(), Dedup::EventId);
        assert!("yes".parse::<Dedup>().is_err());
        assert_eq!(folders_read(day(), DayBy::Delivery).len(), 1);
        assert_eq!(
            folders_read(day(), DayBy::Event)[1].to_string(),
            "2024-02-13"
        );
        assert!(!Selector::needed(DayBy::Delivery, Dedup::None));
    }
}
