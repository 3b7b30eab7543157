//! Backfill: one explicit-date message per day on the trigger queue.
//!
//! Messages go out with `SendMessageBatch`, ten per call. Entries a batch reports as
//! failed are sent again (with backoff) unless SQS says the fault is the sender's;
//! a day that still cannot be sent is an error naming it.

use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use tracing::{debug, warn};

use crate::error::Error;
use crate::trigger::Day;

/// Entries per `SendMessageBatch` (SQS's maximum).
pub const BATCH: usize = 10;
/// Attempts per entry before the backfill gives up.
pub const ATTEMPTS: u32 = 5;

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
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, Error> {
    let mut sent = 0;
    for batch in days.chunks(BATCH) {
        let mut pending: Vec<(usize, Day)> = batch.iter().copied().enumerate().collect();
        let mut attempt = 1;
        loop {
            let entries: Vec<SendMessageBatchRequestEntry> = pending
                .iter()
                .map(|(i, day)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body(*day))
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let out = sqs
                .send_message_batch()
                .queue_url(queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| Error::Sqs {
                    operation: "SendMessageBatch",
                    queue_url: queue_url.to_string(),
                    detail: crate::error::error_chain(&e),
                })?;
            sent += out.successful().len();
            let failed = out.failed();
            if failed.is_empty() {
                break;
            }
            let mut retry = Vec::new();
            for f in failed {
                let Some(&(i, day)) = pending.iter().find(|(i, _)| i.to_string() == f.id()) else {
                    continue;
                };
                let why = format!("{}: {}", f.code(), f.message().unwrap_or(""));
                if f.sender_fault() || attempt >= ATTEMPTS {
                    return Err(Error::Sqs {
                        operation: "SendMessageBatch",
                        queue_url: queue_url.to_string(),
                        detail: format!(
                            "the message for {day} was not sent after {attempt} attempt(s): {why}; {sent} messages were sent before it"
                        ),
                    });
                }
                warn!(day = %day, attempt, reason = %why, "message not sent; retrying");
                retry.push((i, day));
            }
            pending = retry;
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            attempt += 1;
        }
        debug!(sent, total = days.len(), "batch sent");
        progress(sent, days.len());
    }
    Ok(sent)
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
