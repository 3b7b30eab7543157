//! Queue: messages sent to an SQS queue, ten per `SendMessageBatch`, shared by the
//! backfill (one message per day) and the plan of a day of many shards (one message
//! per shard).
//!
//! Entries a batch reports as failed are sent again (with backoff) unless SQS says the
//! fault is the sender's; a message that still cannot be sent is an error naming it
//! and how many were sent before it.

use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_sdk_sqs::Client;
use tracing::{debug, warn};

use crate::error::Error;

/// Entries per `SendMessageBatch` (SQS's maximum).
pub const BATCH: usize = 10;
/// Attempts per entry before giving up.
pub const ATTEMPTS: u32 = 5;

/// One message to send: what it is for (in errors and logs) and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub what: String,
    pub body: String,
}

/// Sends `messages` in order, ten per call; `progress(sent, total)` is called after
/// each batch. Returns the number sent.
pub async fn send(
    sqs: &Client,
    queue_url: &str,
    messages: &[Message],
    mut progress: impl FnMut(usize, usize),
) -> Result<usize, Error> {
    let error = |detail: String| Error::Sqs {
        operation: "SendMessageBatch",
        queue_url: queue_url.to_string(),
        detail,
    };
    let mut sent = 0;
    for batch in messages.chunks(BATCH) {
        let mut pending: Vec<(usize, &Message)> = batch.iter().enumerate().collect();
        let mut attempt = 1;
        loop {
            let entries: Vec<SendMessageBatchRequestEntry> = pending
                .iter()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(&m.body)
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
                .map_err(|e| {
                    error(format!(
                        "{}; {sent} messages were sent before it",
                        crate::error::error_chain(&e)
                    ))
                })?;
            sent += out.successful().len();
            let failed = out.failed();
            if failed.is_empty() {
                break;
            }
            let mut retry = Vec::new();
            for f in failed {
                let Some(&(i, m)) = pending.iter().find(|(i, _)| i.to_string() == f.id()) else {
                    continue;
                };
                let why = format!("{}: {}", f.code(), f.message().unwrap_or(""));
                if f.sender_fault() || attempt >= ATTEMPTS {
                    return Err(error(format!(
                        "the message for {} was not sent after {attempt} attempt(s): {why}; {sent} messages were sent before it",
                        m.what
                    )));
                }
                warn!(message = %m.what, attempt, reason = %why, "message not sent; retrying");
                retry.push((i, m));
            }
            pending = retry;
            tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            attempt += 1;
        }
        debug!(sent, total = messages.len(), "batch sent");
        progress(sent, messages.len());
    }
    Ok(sent)
}
