//! The Lambda function: SQS event → one day aggregated per message.
//! All logic lives in the library; this only sets up and serves.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use cloudtrail_aggregator::handler::{self, App};
use cloudtrail_aggregator::{aws, telemetry, Config};
use lambda_runtime::{service_fn, Error, LambdaEvent};

/// Converts the invocation deadline (epoch milliseconds) to an `Instant`.
fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let left = deadline_ms.checked_sub(now_ms)?;
    Some(Instant::now() + Duration::from_millis(left))
}

async fn serve(
    app: &App,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Diagnostic> {
    let deadline = deadline_instant(event.context.deadline);
    let today = chrono::Utc::now().date_naive();
    Ok(handler::handle(app, event.payload, today, deadline).await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init(telemetry::Output::Lambda);
    // A bad configuration is an init error, reported once, not a failure per message.
    let config = Config::from_env().map_err(|e| {
        tracing::error!(error = %e, "invalid configuration");
        e
    })?;
    tracing::info!(
        source = %format!("s3://{}/{}", config.src_bucket, config.src_prefix),
        destination = %format!("s3://{}/{}", config.dst_bucket, config.dst_prefix),
        chunk_size_bytes = config.chunk_size_bytes,
        "cloudtrail-aggregator starting"
    );
    let (s3, sqs) = aws::clients_from_env(&config).await.map_err(|e| {
        tracing::error!(error = %e, "cannot use the AWS configuration");
        e
    })?;
    let app = App { s3, sqs, config };
    let app = &app;
    lambda_runtime::run(service_fn(move |event| serve(app, event))).await
}
