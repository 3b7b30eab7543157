//! Handler: an `SqsEvent` → one aggregation per message → `SqsBatchResponse`.
//!
//! Each message is handled on its own, in its own span: a message whose body names
//! no valid day, or whose day fails, is listed in `batchItemFailures` (partial batch
//! response; the event source must have `ReportBatchItemFailures`), and the other
//! messages of the batch are unaffected. When *every* message of a batch failed, the
//! invocation itself returns an error listing them: the whole batch is retried either
//! way, the function's `Errors` metric counts it, and a queue wired without
//! `ReportBatchItemFailures` cannot mistake the response for success.
//!
//! With `DAY_BY=event`, a scheduled message ("aggregate yesterday", D) aggregates the
//! day before it (D−1) first, then D: at 01:00 UTC the folder D+1 holds only its first
//! hour, so D's output lacks its events delivered later; the next night's message
//! aggregates D again, once D+1's folder is whole, and that output is final. A message
//! naming a day (a backfill) aggregates that day only.

use std::fmt;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_s3::Client;
use chrono::NaiveDate;
use tracing::{error, info, info_span, Instrument};

use crate::config::Config;
use crate::error::Error;
use crate::pipeline::{aggregate_day, RunOptions, Summary};
use crate::select::DayBy;
use crate::trigger::{parse_body, Day, TriggerError, TriggerKind};

/// Time kept back from the Lambda deadline to report a clean failure.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// What the handler needs: built once per process, before the first event.
#[derive(Debug, Clone)]
pub struct App {
    pub s3: Client,
    pub config: Config,
}

/// The failures of a batch in which every message failed.
#[derive(Debug)]
pub struct BatchFailed {
    pub failures: Vec<(String, String)>,
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "every message of the batch failed")?;
        for (id, why) in &self.failures {
            write!(f, "; message {id}: {why}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BatchFailed {}

/// Lambda reports the error as `errorType: "BatchFailed"` with the whole message.
impl From<BatchFailed> for lambda_runtime::Diagnostic {
    fn from(e: BatchFailed) -> Self {
        lambda_runtime::Diagnostic {
            error_type: "BatchFailed".to_string(),
            error_message: e.to_string(),
        }
    }
}

/// Why one message failed (its id is beside it, in [`MessageOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("cannot tell which day to aggregate: {0}")]
    Trigger(#[from] TriggerError),
    #[error("day {day}: {source}")]
    Day {
        day: Day,
        #[source]
        source: Error,
    },
}

/// The result of one message: the days it aggregated, in order.
#[derive(Debug)]
pub struct MessageOutcome {
    pub message_id: String,
    pub result: Result<(TriggerKind, Vec<Summary>), MessageError>,
}

/// The days a message of `kind` for `day` aggregates, in order (see the module doc).
pub fn days_of(day: Day, kind: TriggerKind, day_by: DayBy) -> Vec<Day> {
    match (kind, day_by, day.0.pred_opt().map(Day)) {
        (TriggerKind::Schedule, DayBy::Event, Some(before)) if before >= Day::earliest() => {
            vec![before, day]
        }
        _ => vec![day],
    }
}

/// Handles every message of `event`; `today` is the current UTC date and `deadline`
/// the instant the invocation must have returned by.
pub async fn handle_batch(
    app: &App,
    event: SqsEvent,
    today: NaiveDate,
    deadline: Option<Instant>,
) -> Vec<MessageOutcome> {
    let mut outcomes = Vec::with_capacity(event.records.len());
    for message in event.records {
        let message_id = message
            .message_id
            .clone()
            .unwrap_or_else(|| "(no message id)".to_string());
        let span = info_span!("message", message_id = %message_id);
        let result = async {
            let body = message.body.as_deref().unwrap_or("");
            let (day, kind) = parse_body(body, today)?;
            let opts = RunOptions {
                deadline: deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d)),
            };
            let mut summaries = Vec::new();
            for day in days_of(day, kind, app.config.day_by) {
                info!(day = %day, trigger = %kind, day_by = %app.config.day_by, "aggregating");
                let summary = aggregate_day(&app.s3, &app.config, day, opts)
                    .await
                    .map_err(|source| MessageError::Day { day, source })?;
                crate::metrics::emit(&app.config.metrics_namespace, &summary);
                summaries.push(summary);
            }
            Ok::<_, MessageError>((kind, summaries))
        }
        .instrument(span.clone())
        .await;
        if let Err(e) = &result {
            span.in_scope(|| error!(message_id = %message_id, error = %e, "message failed"));
        }
        outcomes.push(MessageOutcome { message_id, result });
    }
    outcomes
}

/// Turns the outcomes into the Lambda response: the batch response, or an error when
/// every message failed.
pub fn batch_response(outcomes: &[MessageOutcome]) -> Result<SqsBatchResponse, BatchFailed> {
    let failures: Vec<(String, String)> = outcomes
        .iter()
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|e| (o.message_id.clone(), e.to_string()))
        })
        .collect();
    if !outcomes.is_empty() && failures.len() == outcomes.len() {
        return Err(BatchFailed { failures });
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|(id, _)| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    Ok(response)
}

/// The whole Lambda handler: [`handle_batch`] then [`batch_response`].
pub async fn handle(
    app: &App,
    event: SqsEvent,
    today: NaiveDate,
    deadline: Option<Instant>,
) -> Result<SqsBatchResponse, BatchFailed> {
    let n = event.records.len();
    info!(messages = n, "invoked by SQS");
    let outcomes = handle_batch(app, event, today, deadline).await;
    let response = batch_response(&outcomes);
    match &response {
        Ok(r) => info!(
            messages = n,
            failed = r.batch_item_failures.len(),
            "batch done"
        ),
        Err(e) => error!(
            messages = n,
            failed = e.failures.len(),
            "every message failed"
        ),
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a scheduled message in event mode takes the day before along.
    #[test]
    fn days_of_a_message() {
        let d: Day = "2024-02-12".parse().unwrap();
        let before: Day = "2024-02-11".parse().unwrap();
        assert_eq!(
            days_of(d, TriggerKind::Schedule, DayBy::Event),
            vec![before, d]
        );
        assert_eq!(days_of(d, TriggerKind::Schedule, DayBy::Delivery), vec![d]);
        assert_eq!(days_of(d, TriggerKind::Explicit, DayBy::Event), vec![d]);
        assert_eq!(days_of(d, TriggerKind::IsoDate, DayBy::Event), vec![d]);
        let first = Day::earliest();
        assert_eq!(
            days_of(first, TriggerKind::Schedule, DayBy::Event),
            vec![first]
        );
    }
}
