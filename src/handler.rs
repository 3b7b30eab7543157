//! Handler: an `SqsEvent` → one job per message → `SqsBatchResponse`.
//!
//! Each message is handled on its own, in its own span: a message whose body names
//! no valid job, or whose job fails, is listed in `batchItemFailures` (partial batch
//! response; the event source must have `ReportBatchItemFailures`), and the other
//! messages of the batch are unaffected. When *every* message of a batch failed, the
//! invocation itself returns an error listing them: the whole batch is retried either
//! way, the function's `Errors` metric counts it, and a queue wired without
//! `ReportBatchItemFailures` cannot mistake the response for success.
//!
//! A day message plans the day: a day of one shard is aggregated in the invocation; a
//! larger one is sent as one message per shard to `SHARD_QUEUE_URL` (the trigger
//! queue), and the message is done. A shard message runs its shard, and the last shard
//! of a plan to finish commits the day ([`crate::pipeline`]); a shard that fails is
//! retried by SQS and dead-lettered like any message, naming the day and the shard.
//!
//! With `DAY_BY=event`, a scheduled message ("aggregate yesterday", D) aggregates D,
//! then the day before it (D−1) again: at 01:00 UTC the folder D+1 holds only its first
//! hour, so D's output lacks its events delivered later; the next night's message
//! aggregates D again, once D+1's folder is whole, and that output is final. D goes
//! first so that D−1's run finds D's delivery index and reads, of folder D, only the
//! files holding its events ([`crate::delivery_index`]). A message naming a day (a
//! backfill) aggregates that day only.

use std::fmt;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use aws_sdk_s3::Client;
use chrono::NaiveDate;
use tracing::{error, info, info_span, Instrument};

use crate::config::Config;
use crate::error::Error;
use crate::pipeline::{run_day, run_shard_job, DayOutcome, Dispatch, RunOptions, ShardOutcome};
use crate::select::DayBy;
use crate::trigger::{parse_job, Day, Job, ShardJob, TriggerError, TriggerKind};

/// Time kept back from the Lambda deadline to report a clean failure.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// What the handler needs: built once per process, before the first event.
#[derive(Debug, Clone)]
pub struct App {
    pub s3: Client,
    /// Sends the shard messages of a day of many shards (with `SHARD_QUEUE_URL`).
    pub sqs: Option<aws_sdk_sqs::Client>,
    pub config: Config,
}

impl App {
    /// Where this app sends the shards of a day of many.
    fn dispatch(&self) -> Dispatch<'_> {
        match (&self.sqs, &self.config.shard_queue_url) {
            (Some(sqs), Some(queue_url)) => Dispatch::Queue { sqs, queue_url },
            _ => Dispatch::Refuse,
        }
    }
}

/// The days of a day message, one after the other.
async fn handle_days(
    app: &App,
    day: Day,
    kind: TriggerKind,
    opts: RunOptions,
) -> Result<Handled, MessageError> {
    let mut outcomes = Vec::new();
    for day in days_of(day, kind, app.config.day_by) {
        info!(day = %day, trigger = %kind, day_by = %app.config.day_by, "aggregating");
        let outcome = run_day(&app.s3, &app.config, day, opts, app.dispatch())
            .await
            .map_err(|source| MessageError::Day { day, source })?;
        match &outcome {
            DayOutcome::Committed(summary) => {
                crate::metrics::emit(&app.config.metrics_namespace, summary)
            }
            DayOutcome::FannedOut(f) => {
                info!(day = %day, shards = f.plan.shards.len(), files = f.plan.files, "day planned as shards; the last shard commits it")
            }
        }
        outcomes.push(outcome);
    }
    Ok(Handled::Days(kind, outcomes))
}

/// One shard message.
async fn handle_shard(app: &App, job: ShardJob, opts: RunOptions) -> Result<Handled, MessageError> {
    info!(shard = %job, "running a shard");
    let outcome = run_shard_job(&app.s3, &app.config, job.clone(), opts.deadline)
        .await
        .map_err(|source| MessageError::Shard {
            job: job.clone(),
            source,
        })?;
    match &outcome {
        ShardOutcome::Done(r) => {
            crate::metrics::emit_shard(&app.config.metrics_namespace, job.day, r)
        }
        ShardOutcome::Committed(r, summary) => {
            crate::metrics::emit_shard(&app.config.metrics_namespace, job.day, r);
            crate::metrics::emit(&app.config.metrics_namespace, summary);
        }
        ShardOutcome::Superseded { why } => {
            info!(shard = %job, why = %why, "shard of a superseded plan: nothing written")
        }
    }
    Ok(Handled::Shard(job, Box::new(outcome)))
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
    #[error("{source}")]
    Shard {
        job: ShardJob,
        #[source]
        source: Error,
    },
}

/// What a message did.
#[derive(Debug)]
pub enum Handled {
    /// The days it asked for, in order: each committed, or planned and sent as shards.
    Days(TriggerKind, Vec<DayOutcome>),
    /// The shard it asked for.
    Shard(ShardJob, Box<ShardOutcome>),
}

impl Handled {
    /// The days this message committed, in order.
    pub fn committed(&self) -> Vec<&crate::pipeline::Summary> {
        match self {
            Handled::Days(_, days) => days
                .iter()
                .filter_map(|d| match d {
                    DayOutcome::Committed(s) => Some(s),
                    DayOutcome::FannedOut(_) => None,
                })
                .collect(),
            Handled::Shard(_, outcome) => match outcome.as_ref() {
                ShardOutcome::Committed(_, s) => vec![s.as_ref()],
                _ => vec![],
            },
        }
    }
}

/// The result of one message.
#[derive(Debug)]
pub struct MessageOutcome {
    pub message_id: String,
    pub result: Result<Handled, MessageError>,
}

/// The days a message of `kind` for `day` aggregates, in order (see the module doc).
pub fn days_of(day: Day, kind: TriggerKind, day_by: DayBy) -> Vec<Day> {
    match (kind, day_by, day.0.pred_opt().map(Day)) {
        (TriggerKind::Schedule, DayBy::Event, Some(before)) if before >= Day::earliest() => {
            vec![day, before]
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
            let opts = RunOptions {
                deadline: deadline.map(|d| d.checked_sub(DEADLINE_MARGIN).unwrap_or(d)),
                shard_concurrency: 1,
            };
            match parse_job(body, today)? {
                Job::Day(day, kind) => handle_days(app, day, kind, opts).await,
                Job::Shard(job) => handle_shard(app, job, opts).await,
            }
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
            vec![d, before]
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
