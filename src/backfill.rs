//! Backfill: one explicit-date message per day on the trigger queue (sent by
//! [`crate::queue`]).

use aws_sdk_sqs::Client;

use crate::error::Error;
use crate::queue::{self, Message};
use crate::trigger::Day;

/// The message body that asks for `day`: `{"year":2024,"month":2,"day":14}`.
pub fn body(day: Day) -> String {
    use chrono::Datelike;
    format!(
        "{{\"year\":{},\"month\":{},\"day\":{}}}",
        day.0.year(),
        day.0.month(),
        day.0.day()
    )
}

/// Every day from `from` to `to`, inclusive.
pub fn days(from: Day, to: Day) -> Vec<Day> {
    let mut out = Vec::new();
    let mut d = Some(from);
    while let Some(day) = d.filter(|d| *d <= to) {
        out.push(day);
        d = day.succ();
    }
    out
}

/// Sends one message per day; `progress(sent, total)` is called after each batch.
/// Returns the number of messages sent.
pub async fn send(
    sqs: &Client,
    queue_url: &str,
    days: &[Day],
    progress: impl FnMut(usize, usize),
) -> Result<usize, Error> {
    let messages: Vec<Message> = days
        .iter()
        .map(|d| Message {
            what: d.to_string(),
            body: body(*d),
        })
        .collect();
    queue::send(sqs, queue_url, &messages, progress).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies are the explicit-date shape the trigger accepts.
    #[test]
    fn bodies_round_trip_through_the_trigger() {
        let today = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
        for d in days("2023-12-30".parse().unwrap(), "2024-01-02".parse().unwrap()) {
            let (got, kind) = crate::trigger::parse_body(&body(d), today).unwrap();
            assert_eq!(got, d);
            assert_eq!(kind, crate::trigger::TriggerKind::Explicit);
        }
        assert_eq!(
            body("2024-02-05".parse().unwrap()),
            r#"{"year":2024,"month":2,"day":5}"#
        );
    }

    /// A range includes both ends; a reversed range is empty.
    #[test]
    fn day_ranges() {
        let d = |s: &str| -> Day { s.parse().unwrap() };
        assert_eq!(days(d("2024-02-28"), d("2024-03-01")).len(), 3);
        assert_eq!(
            days(d("2024-02-28"), d("2024-02-28")),
            vec![d("2024-02-28")]
        );
        assert!(days(d("2024-03-01"), d("2024-02-28")).is_empty());
        assert_eq!(days(d("2023-01-01"), d("2023-12-31")).len(), 365);
    }
}
