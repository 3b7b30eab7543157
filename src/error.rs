//! Typed errors. Each variant says what failed and where: the operation, the
//! `s3://bucket/key`, and the underlying cause, as one line of text (`Display` of the
//! error and its causes, never `Debug`).

use std::io;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::http::Response;

use crate::config::ConfigErrors;
use crate::records::RecordsError;

/// An error of one day's aggregation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigErrors),

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
    #[error("{} stopped before the deadline with {files_done} of {} source files read; nothing was marked complete (no _manifest.json), {}", shard.what(day), listed_text(*files_listed, *listing_complete), shard.deadline_hint())]
    Deadline {
        day: String,
        shard: ShardLabel,
        files_done: u64,
        /// Source files listed when it stopped: the shard's total once `listing_complete`.
        files_listed: u64,
        listing_complete: bool,
    },

    /// One shard of a day of many failed.
    #[error("{day}, shard {index} of {shards}: {source}")]
    Shard {
        day: String,
        index: u32,
        shards: u32,
        #[source]
        source: Box<Error>,
    },

    /// A day of many shards needs the shard queue, and none is configured.
    #[error("{day} needs {shards} shards ({files} files, {bytes} bytes; a shard holds at most SHARD_MAX_FILES = {max_files} files and SHARD_MAX_BYTES = {max_bytes} bytes): set SHARD_QUEUE_URL (the template sets it to the trigger queue), or run the day with `ctagg run {day}`")]
    NoShardQueue {
        day: String,
        shards: u32,
        files: u64,
        bytes: u64,
        max_files: u64,
        max_bytes: u64,
    },

    /// The day's shards could not be committed (their results disagree).
    #[error("committing {day} failed: {detail}")]
    Commit { day: String, detail: String },
    /// `ListPublicKeys` failed (`VALIDATE` needs CloudTrail's public keys).
    #[error("CloudTrail ListPublicKeys in {region} failed (VALIDATE is on; the role needs cloudtrail:ListPublicKeys): {detail}")]
    PublicKeys { region: String, detail: String },
    /// `VALIDATE=strict` found modified or missing files, or invalid or missing digests.
    #[error("{day} failed validation ({validation}); VALIDATE=strict writes no manifest: each problem is logged at warn with its s3:// object")]
    Integrity {
        day: String,
        validation: crate::validate::Validation,
    },

    /// The shard running in place while the day was listed was stopped: the day is
    /// larger than one shard (never reported: planning goes on).
    #[error("stopped: the day is larger than one shard")]
    Stopped,

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

/// Which shard of how many a run was, and the limits it was cut by (for the hint of a
/// deadline error).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardLabel {
    pub index: u32,
    /// Shards of the plan; 1 for a day run as one shard.
    pub shards: u32,
    pub max_files: u64,
    pub max_bytes: u64,
}

impl ShardLabel {
    /// "2024-02-12", or "2024-02-12, shard 3 of 12".
    fn what(&self, day: &str) -> String {
        if self.shards > 1 {
            format!("{day}, shard {} of {},", self.index, self.shards)
        } else {
            day.to_string()
        }
    }

    /// What to do about a deadline.
    fn deadline_hint(&self) -> String {
        let limits = format!(
            "SHARD_MAX_FILES (now {}) or SHARD_MAX_BYTES (now {})",
            self.max_files, self.max_bytes
        );
        if self.shards > 1 {
            format!("and the shard's message is retried as it is; lower {limits} and aggregate the day again for smaller shards, or give the function more memory (vCPUs)")
        } else {
            format!("and a retry starts over; lower {limits} to split the day into shards that each finish in time, or give the function more memory (vCPUs)")
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
        let err = |listing_complete, shards| Error::Deadline {
            day: "2024-02-12".into(),
            shard: ShardLabel {
                index: 3,
                shards,
                max_files: 1000,
                max_bytes: 2000,
            },
            files_done: 40,
            files_listed: 120,
            listing_complete,
        };
        let one = err(true, 1).to_string();
        assert!(
            one.starts_with(
                "2024-02-12 stopped before the deadline with 40 of 120 source files read;"
            ),
            "{one}"
        );
        assert!(
            one.contains(
                "lower SHARD_MAX_FILES (now 1000) or SHARD_MAX_BYTES (now 2000) to split the day"
            ),
            "{one}"
        );
        assert!(err(false, 1).to_string().starts_with(
            "2024-02-12 stopped before the deadline with 40 of at least 120 (listing unfinished) source files read"
        ));
        let many = err(true, 12).to_string();
        assert!(
            many.starts_with(
                "2024-02-12, shard 3 of 12, stopped before the deadline with 40 of 120"
            ),
            "{many}"
        );
        assert!(many.contains("the shard's message is retried"), "{many}");
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
