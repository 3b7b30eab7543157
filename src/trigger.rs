//! Trigger: an SQS message body → the [`Day`] to aggregate.
//!
//! Accepted bodies (JSON objects; other keys are ignored):
//! - the EventBridge Scheduler default payload (`"source": "aws.scheduler"`, `"time"`):
//!   the UTC day *before* `time` ("aggregate yesterday"). The EventBridge *rule*
//!   schedule shape (`"source": "aws.events"`, `"detail-type": "Scheduled Event"`) is
//!   accepted the same way, since users wire either to the queue;
//! - an explicit date `{"year": 2024, "month": 2, "day": 14}` (what `ctagg backfill`
//!   sends); all three integers are required;
//! - an ISO date `{"date": "2024-02-14"}`.
//!
//! - a shard of a day's plan, `{"shard": {"day": "2024-02-14", "run": "0123456789ab",
//!   "index": 3, "of": 12}}`: what a planning invocation sends for each shard of a day
//!   too large for one ([`Job::Shard`]; `run` is the tag of the planning run).
//!
//! A day must lie between 2013-11-01 (CloudTrail's first deliveries) and today (UTC),
//! inclusive. Today is allowed: it aggregates what has arrived so far, and a later
//! rerun overwrites it.

use std::fmt;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde_json::{Map, Value};

/// One UTC calendar day of CloudTrail logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(pub NaiveDate);

impl Day {
    /// The first day CloudTrail delivered logs.
    pub fn earliest() -> Day {
        Day(NaiveDate::from_ymd_opt(2013, 11, 1).expect("valid date"))
    }

    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Day> {
        NaiveDate::from_ymd_opt(year, month, day).map(Day)
    }

    /// The folder of this day in CloudTrail's and our layout: `YYYY/MM/DD/`.
    pub fn path(&self) -> String {
        format!(
            "{:04}/{:02}/{:02}/",
            self.0.year(),
            self.0.month(),
            self.0.day()
        )
    }

    /// The next day, if any.
    pub fn succ(&self) -> Option<Day> {
        self.0.succ_opt().map(Day)
    }

    /// Checks that the day is within CloudTrail's life: not before 2013-11-01 and not
    /// after `today`.
    pub fn check_range(self, today: NaiveDate) -> Result<Day, TriggerError> {
        if self < Day::earliest() {
            return Err(TriggerError::BeforeCloudTrail(self));
        }
        if self.0 > today {
            return Err(TriggerError::InFuture { day: self, today });
        }
        Ok(self)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

impl std::str::FromStr for Day {
    type Err = TriggerError;

    /// Parses `YYYY-MM-DD` strictly (no range check).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_iso(s)
    }
}

/// How the day of a message was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    Schedule,
    Explicit,
    IsoDate,
}

impl fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TriggerKind::Schedule => "schedule",
            TriggerKind::Explicit => "explicit date",
            TriggerKind::IsoDate => "ISO date",
        })
    }
}

/// Why a message body does not name a day.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriggerError {
    #[error("the message body is not JSON: {0}")]
    NotJson(String),
    #[error("the message body is not a JSON object")]
    NotAnObject,
    #[error("unrecognised message body: expected an EventBridge Scheduler event, {{\"year\",\"month\",\"day\"}} or {{\"date\":\"YYYY-MM-DD\"}}")]
    Unrecognised,
    #[error("ambiguous message body: it has both \"date\" and year/month/day")]
    Ambiguous,
    #[error("unsupported event source {0:?}: only aws.scheduler (and aws.events scheduled events) are accepted")]
    UnsupportedSource(String),
    #[error("field \"{field}\" is missing")]
    Missing { field: &'static str },
    #[error("field \"{field}\" must be {expected}, found {found}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{year:04}-{month:02}-{day:02} is not a calendar date")]
    NoSuchDate { year: i64, month: i64, day: i64 },
    #[error("{0:?} is not a date of the form YYYY-MM-DD")]
    BadIsoDate(String),
    #[error("{0:?} is not an RFC 3339 timestamp")]
    BadTime(String),
    #[error("{0} is before CloudTrail existed (2013-11-01)")]
    BeforeCloudTrail(Day),
    #[error("{day} is in the future (today is {today} UTC)")]
    InFuture { day: Day, today: NaiveDate },
}

/// What one message asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    /// Aggregate a day (plan it, and run it or send its shards).
    Day(Day, TriggerKind),
    /// Run one shard of a day's plan.
    Shard(ShardJob),
}

/// One shard of the plan of run `run` (its tag) for `day`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShardJob {
    pub day: Day,
    pub run: String,
    pub index: u32,
    /// How many shards the plan has.
    pub of: u32,
}

impl ShardJob {
    /// The message body that asks for this shard.
    pub fn body(&self) -> String {
        serde_json::json!({"shard": {
            "day": self.day.to_string(),
            "run": self.run,
            "index": self.index,
            "of": self.of,
        }})
        .to_string()
    }
}

impl fmt::Display for ShardJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, shard {} of {} (plan of run {})",
            self.day, self.index, self.of, self.run
        )
    }
}

/// Parses a message body into what it asks for: a day (see [`parse_body`]) or a shard
/// of a day's plan.
pub fn parse_job(body: &str, today: NaiveDate) -> Result<Job, TriggerError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| TriggerError::NotJson(e.to_string()))?;
    let Some(shard) = value.as_object().and_then(|m| m.get("shard")) else {
        let (day, kind) = parse_body(body, today)?;
        return Ok(Job::Day(day, kind));
    };
    let Value::Object(map) = shard else {
        return Err(TriggerError::WrongType {
            field: "shard",
            expected: "an object",
            found: shard.to_string(),
        });
    };
    let day = parse_iso(string_field(map, "day")?)?.check_range(today)?;
    let run = string_field(map, "run")?;
    if run.len() != 12 || !run.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TriggerError::WrongType {
            field: "run",
            expected: "12 hex digits",
            found: format!("{run:?}"),
        });
    }
    let count = |field: &'static str| {
        let n = int_field(map, field)?;
        u32::try_from(n).map_err(|_| TriggerError::WrongType {
            field,
            expected: "a shard number (0 or more)",
            found: n.to_string(),
        })
    };
    let (index, of) = (count("index")?, count("of")?);
    if index >= of {
        return Err(TriggerError::WrongType {
            field: "index",
            expected: "less than \"of\"",
            found: format!("{index} of {of}"),
        });
    }
    Ok(Job::Shard(ShardJob {
        day,
        run: run.to_ascii_lowercase(),
        index,
        of,
    }))
}

/// Parses a message body into the day it asks for, checked against `today` (UTC).
pub fn parse_body(body: &str, today: NaiveDate) -> Result<(Day, TriggerKind), TriggerError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| TriggerError::NotJson(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(TriggerError::NotAnObject);
    };
    let (day, kind) = if map.contains_key("source") {
        (from_schedule(&map)?, TriggerKind::Schedule)
    } else if map.contains_key("date") {
        if ["year", "month", "day"]
            .iter()
            .any(|k| map.contains_key(*k))
        {
            return Err(TriggerError::Ambiguous);
        }
        let s = string_field(&map, "date")?;
        (parse_iso(s)?, TriggerKind::IsoDate)
    } else if ["year", "month", "day"]
        .iter()
        .any(|k| map.contains_key(*k))
    {
        (from_explicit(&map)?, TriggerKind::Explicit)
    } else {
        return Err(TriggerError::Unrecognised);
    };
    Ok((day.check_range(today)?, kind))
}

fn from_schedule(map: &Map<String, Value>) -> Result<Day, TriggerError> {
    let source = string_field(map, "source")?;
    let accepted = source == "aws.scheduler"
        || (source == "aws.events"
            && map.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event"));
    if !accepted {
        return Err(TriggerError::UnsupportedSource(source.to_string()));
    }
    let time = string_field(map, "time")?;
    let at: DateTime<Utc> = DateTime::parse_from_rfc3339(time)
        .map_err(|_| TriggerError::BadTime(time.to_string()))?
        .with_timezone(&Utc);
    let day = at
        .date_naive()
        .checked_sub_days(Days::new(1))
        .ok_or_else(|| TriggerError::BadTime(time.to_string()))?;
    Ok(Day(day))
}

fn from_explicit(map: &Map<String, Value>) -> Result<Day, TriggerError> {
    let year = int_field(map, "year")?;
    let month = int_field(map, "month")?;
    let day = int_field(map, "day")?;
    let date = (|| {
        NaiveDate::from_ymd_opt(
            i32::try_from(year).ok()?,
            u32::try_from(month).ok()?,
            u32::try_from(day).ok()?,
        )
    })();
    date.map(Day)
        .ok_or(TriggerError::NoSuchDate { year, month, day })
}

fn parse_iso(s: &str) -> Result<Day, TriggerError> {
    let bad = || TriggerError::BadIsoDate(s.to_string());
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().map_err(|_| bad());
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32)
        .map(Day)
        .ok_or(TriggerError::NoSuchDate { year, month, day })
}

fn string_field<'a>(
    map: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, TriggerError> {
    match map.get(field) {
        None => Err(TriggerError::Missing { field }),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(TriggerError::WrongType {
            field,
            expected: "a string",
            found: other.to_string(),
        }),
    }
}

fn int_field(map: &Map<String, Value>, field: &'static str) -> Result<i64, TriggerError> {
    match map.get(field) {
        None => Err(TriggerError::Missing { field }),
        Some(Value::Number(n)) if n.as_i64().is_some() => Ok(n.as_i64().unwrap_or_default()),
        Some(other) => Err(TriggerError::WrongType {
            field,
            expected: "an integer",
            found: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
    }

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    /// Every accepted shape gives the right day and kind.
    #[test]
    fn accepted_bodies() {
        let cases = [
            (
                r#"{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.scheduler","account":"123456789012","time":"2024-02-13T01:00:00Z","region":"us-east-1","resources":["arn:aws:scheduler:us-east-1:123456789012:schedule/default/s"],"detail":"{}"}"#,
                "2024-02-12",
                TriggerKind::Schedule,
            ),
            (
                r#"{"source":"aws.scheduler","time":"2024-02-13T00:00:00Z","detail":"{}"}"#,
                "2024-02-12",
                TriggerKind::Schedule,
            ),
            // A time with an offset is converted to UTC first.
            (
                r#"{"source":"aws.scheduler","time":"2024-02-13T01:00:00+02:00"}"#,
                "2024-02-11",
                TriggerKind::Schedule,
            ),
            (
                r#"{"source":"aws.events","detail-type":"Scheduled Event","time":"2024-01-01T01:00:00Z","detail":{}}"#,
                "2023-12-31",
                TriggerKind::Schedule,
            ),
            (
                r#"{"month": 2, "day": 14, "year": 2024}"#,
                "2024-02-14",
                TriggerKind::Explicit,
            ),
            (
                r#"{"year":2024,"month":2,"day":29}"#,
                "2024-02-29",
                TriggerKind::Explicit,
            ),
            (
                r#"{"date": "2024-02-14"}"#,
                "2024-02-14",
                TriggerKind::IsoDate,
            ),
            (
                r#"{"date":"2013-11-01"}"#,
                "2013-11-01",
                TriggerKind::IsoDate,
            ),
            (
                r#"{"date":"2024-03-01"}"#,
                "2024-03-01",
                TriggerKind::IsoDate,
            ),
        ];
        for (body, want, kind) in cases {
            assert_eq!(parse_body(body, today()), Ok((day(want), kind)), "{body}");
        }
    }

    /// Every malformed body is refused with the reason.
    #[test]
    fn refused_bodies() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not JSON"),
            ("", "not JSON"),
            ("[1,2]", "not a JSON object"),
            (r#"{"hello":"world"}"#, "unrecognised"),
            (r#"{"year":2024,"month":2}"#, "\"day\" is missing"),
            (
                r#"{"year":2024,"month":13,"day":1}"#,
                "2024-13-01 is not a calendar date",
            ),
            (
                r#"{"year":2023,"month":2,"day":30}"#,
                "2023-02-30 is not a calendar date",
            ),
            (r#"{"year":"2024","month":2,"day":1}"#, "must be an integer"),
            (r#"{"year":2024.5,"month":2,"day":1}"#, "must be an integer"),
            (r#"{"date":"2024-2-14"}"#, "not a date of the form"),
            (r#"{"date":"2024-02-30"}"#, "not a calendar date"),
            (r#"{"date":20240214}"#, "must be a string"),
            (r#"{"date":"2024-02-14","year":2024}"#, "ambiguous"),
            (r#"{"date":"2013-10-31"}"#, "before CloudTrail existed"),
            (
                r#"{"year":1970,"month":1,"day":1}"#,
                "before CloudTrail existed",
            ),
            (r#"{"date":"2024-03-02"}"#, "in the future"),
            (
                r#"{"source":"aws.s3","time":"2024-02-13T01:00:00Z"}"#,
                "unsupported event source",
            ),
            (
                r#"{"source":"aws.events","detail-type":"Object Created","time":"2024-02-13T01:00:00Z"}"#,
                "unsupported event source",
            ),
            (r#"{"source":"aws.scheduler"}"#, "\"time\" is missing"),
            (
                r#"{"source":"aws.scheduler","time":"yesterday"}"#,
                "not an RFC 3339",
            ),
            (
                r#"{"source":"aws.scheduler","time":"2013-11-01T01:00:00Z"}"#,
                "before CloudTrail existed",
            ),
        ];
        for (body, want) in cases {
            let err = parse_body(body, today()).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{body}: {err:?} should contain {want:?}"
            );
        }
    }

    /// A shard message reads back as the job it was made from; malformed ones are
    /// refused with the reason; a day message is still a day.
    #[test]
    fn shard_jobs() {
        let job = ShardJob {
            day: day("2024-02-12"),
            run: "0123456789ab".into(),
            index: 3,
            of: 12,
        };
        assert_eq!(parse_job(&job.body(), today()), Ok(Job::Shard(job.clone())));
        assert_eq!(
            parse_job(r#"{"date":"2024-02-12"}"#, today()),
            Ok(Job::Day(day("2024-02-12"), TriggerKind::IsoDate))
        );
        let cases: &[(&str, &str)] = &[
            (r#"{"shard":1}"#, "\"shard\" must be an object"),
            (
                r#"{"shard":{"run":"0123456789ab","index":0,"of":1}}"#,
                "\"day\" is missing",
            ),
            (
                r#"{"shard":{"day":"2024-02-12","run":"xyz","index":0,"of":1}}"#,
                "12 hex digits",
            ),
            (
                r#"{"shard":{"day":"2024-02-12","run":"0123456789ab","index":2,"of":2}}"#,
                "less than",
            ),
            (
                r#"{"shard":{"day":"2024-02-12","run":"0123456789ab","index":-1,"of":2}}"#,
                "a shard number",
            ),
            (
                r#"{"shard":{"day":"2024-03-02","run":"0123456789ab","index":0,"of":2}}"#,
                "in the future",
            ),
        ];
        for (body, want) in cases {
            let err = parse_job(body, today()).unwrap_err().to_string();
            assert!(
                err.contains(want),
                "{body}: {err:?} should contain {want:?}"
            );
        }
    }

    /// The day's folder is zero-padded.
    #[test]
    fn day_path() {
        assert_eq!(day("2024-02-05").path(), "2024/02/05/");
    }
}
