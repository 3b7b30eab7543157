//! Typed errors. Each variant says what failed and where: the operation, the
//! `s3://bucket/key`, and the underlying cause, as one line of text (`Display` of the
//! error and its causes, never `Debug`).

use std::io;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response;

use crate::config::ConfigError;
use crate::records::RecordsError;

/// An error of one day's aggregation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// An S3 call failed. `detail` is S3's error code and message, or the cause chain
    /// of a request that got no answer.
    #[error("{operation} s3://{bucket}/{key} failed: {detail}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        detail: String,
    },

    /// An SQS call failed.
    #[error("{operation} {queue_url} failed: {detail}")]
    Sqs {
        operation: &'static str,
        queue_url: String,
        detail: String,
    },

    /// A source object could not be read as a CloudTrail delivery file.
    #[error("s3://{bucket}/{key}: not a readable CloudTrail log file: {source}")]
    Records {
        bucket: String,
        key: String,
        #[source]
        source: RecordsError,
    },

    /// A record could not be placed in the day (`DAY_BY=event`, `DEDUP`).
    #[error("s3://{bucket}/{key}: {source}")]
    Select {
        bucket: String,
        key: String,
        #[source]
        source: crate::select::SelectError,
    },

    /// Compressing an output chunk failed.
    #[error("compressing chunk s3://{bucket}/{key} failed: {source}")]
    Compress {
        bucket: String,
        key: String,
        #[source]
        source: io::Error,
    },

    /// Another run holds the day's lease.
    #[error("{day} is being aggregated by run {run} until {until} (lease {lease}); this run wrote nothing and is retried later (if no run is under way, delete the lease to go on at once)")]
    Leased {
        day: String,
        run: String,
        until: String,
        lease: String,
    },

    /// The day's lease was taken over by another run before this one finished.
    #[error("the lease {lease} of run {run} is now held by {now}; this run stopped before writing the manifest")]
    LeaseLost {
        lease: String,
        run: String,
        now: String,
    },

    /// The source prefix holds no account or organisation folder.
    #[error("no CloudTrail account folders under s3://{bucket}/{prefix}: expected 12-digit account ids or o-… organisation folders there (is SRC_PREFIX the AWSLogs/ folder?)")]
    NoAccounts { bucket: String, prefix: String },

    /// The run stopped before it could finish within the Lambda's deadline.
    #[error("stopped before the deadline with {files_done} of {} source files read for {day}; nothing was marked complete (no _manifest.json), a retry starts over", listed_text(*files_listed, *listing_complete))]
    Deadline {
        day: String,
        files_done: u64,
        /// Source files listed when it stopped: the day's total once `listing_complete`.
        files_listed: u64,
        listing_complete: bool,
    },

    /// A worker task ended abnormally (a panic in the aggregation).
    #[error("internal error in {stage}: {detail}")]
    Internal { stage: &'static str, detail: String },
}

impl Error {
    /// An [`Error::S3`] from an SDK call's error: S3's code and message (with the HTTP
    /// status) when S3 answered, else the cause chain (a refused connection, a
    /// timeout, no credentials).
    pub fn s3<E>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        err: SdkError<E, Response>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let detail = match (err.code(), err.raw_response()) {
            (Some(code), answer) => {
                let mut d = code.to_string();
                if let Some(m) = err.message() {
                    d.push_str(": ");
                    d.push_str(m);
                }
                if let Some(r) = answer {
                    d.push_str(&format!(" (HTTP {})", r.status().as_u16()));
                }
                d
            }
            (None, Some(r)) if matches!(err, SdkError::ServiceError(_)) => {
                format!("HTTP {} with no S3 error code", r.status().as_u16())
            }
            _ => error_chain(&err),
        };
        Error::s3_detail(operation, bucket, key, detail)
    }

    /// An [`Error::S3`] from the failed read of an answer's body.
    pub fn s3_read(
        operation: &'static str,
        bucket: &str,
        key: &str,
        err: &(dyn std::error::Error + 'static),
    ) -> Error {
        Error::s3_detail(operation, bucket, key, error_chain(err))
    }

    pub fn s3_detail(operation: &'static str, bucket: &str, key: &str, detail: String) -> Error {
        Error::S3 {
            operation,
            bucket: bucket.to_string(),
            key: key.to_string(),
            detail,
        }
    }
}

/// An error and its causes on one line, `: `-separated; a cause whose text the line
/// already holds is not repeated (the SDK's errors often repeat their source).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// "120", or "at least 120 (listing unfinished)" while the day's folders are still being
/// listed (the listing runs a window ahead of the reads).
fn listed_text(listed: u64, complete: bool) -> String {
    if complete {
        listed.to_string()
    } else {
        format!("at least {listed} (listing unfinished)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deadline error says how far the run got, and whether the total is known.
    #[test]
    fn deadline_says_how_far_it_got() {
        let err = |listing_complete| Error::Deadline {
            day: "2024-02-12".into(),
            files_done: 40,
            files_listed: 120,
            listing_complete,
        };
        assert!(err(true).to_string().starts_with(
            "stopped before the deadline with 40 of 120 source files read for 2024-02-12;"
        ));
        assert!(err(false).to_string().starts_with(
            "stopped before the deadline with 40 of at least 120 (listing unfinished) source files read"
        ));
    }

    /// The cause chain is one line, each cause once.
    #[test]
    fn causes_on_one_line() {
        let inner = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let outer = io::Error::other(Wrapped(inner));
        assert_eq!(error_chain(&outer), "dispatch failure: connection refused");
        #[derive(Debug)]
        struct Wrapped(io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("dispatch failure")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
    }
}
