//! Typed errors. Each variant says what failed and where: the operation, the
//! `s3://bucket/key`, and the underlying cause.

use std::io;

use crate::config::ConfigError;
use crate::records::RecordsError;

/// An error of one day's aggregation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// An S3 call failed. `detail` holds the SDK's whole error chain.
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

    /// Compressing an output chunk failed: writing its spool file (the source names the
    /// file: a full disk, a `TMPDIR` that cannot be written).
    #[error("compressing chunk s3://{bucket}/{key} failed: {source}")]
    Compress {
        bucket: String,
        key: String,
        #[source]
        source: io::Error,
    },

    /// A piece of an output chunk could not be read back from its spool file to upload.
    #[error("uploading chunk s3://{bucket}/{key} failed: {source}")]
    Spool {
        bucket: String,
        key: String,
        #[source]
        source: io::Error,
    },

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
    /// Builds an [`Error::S3`] from any SDK error, keeping its full cause chain.
    pub fn s3<E: std::error::Error>(
        operation: &'static str,
        bucket: &str,
        key: &str,
        err: E,
    ) -> Error {
        Error::S3 {
            operation,
            bucket: bucket.to_string(),
            key: key.to_string(),
            detail: aws_sdk_s3::error::DisplayErrorContext(err).to_string(),
        }
    }
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
}
