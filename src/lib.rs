//! cloudtrail-aggregator: one day of CloudTrail logs in S3 → a few gzip NDJSON (or
//! Parquet) files.
//!
//! Data moves one way through one module per stage; each stage's core is synchronous
//! and tested with bytes, its I/O edge async:
//!
//! - [`trigger`]: an SQS message body → the [`trigger::Day`] to aggregate;
//! - [`listing`]: the delimited `ListObjectsV2` walk → the day's source keys, sorted;
//! - [`source`]: GETs of those keys, concurrent, handed on in key order within a byte
//!   budget; large objects streamed;
//! - [`records`]: a delivery file's bytes → its records, one at a time (the records
//!   stage's loop); [`select`]: which of them the day keeps (`DAY_BY=event`, `DEDUP`);
//! - [`chunks`]: records → gzip NDJSON chunks under a byte bound (the chunks stage's
//!   loop); [`parquet_chunks`]: the same stage for `OUTPUT_FORMAT=parquet`, records →
//!   Parquet files of a column per CloudTrail field;
//! - [`writer`]: chunk uploads (the writer stage's loop), stale-chunk cleanup,
//!   `_manifest.json`;
//! - [`lease`]: one run per day at a time (`_lease.json`);
//! - [`pipeline`]: wires the stages for one day;
//! - [`handler`]: an `SqsEvent` → per-message days → `SqsBatchResponse`.
//!
//! Around them: [`ordered`] (futures run concurrently, yielded in order), [`config`]
//! (environment, validated once), [`error`] (typed errors naming what failed),
//! [`telemetry`] (tracing set-up), [`metrics`] (per-day EMF lines), [`aws`] (the S3 and
//! SQS clients, their retries) and [`backfill`] (one message per day on the trigger
//! queue). Every S3 and SQS request goes through the AWS SDK.

pub mod aws;
pub mod backfill;
pub mod chunks;
pub mod config;
pub mod error;
pub mod handler;
pub mod lease;
pub mod listing;
pub mod metrics;
pub mod ordered;
pub mod parquet_chunks;
pub mod pipeline;
pub mod records;
pub mod select;
pub mod source;
pub mod telemetry;
pub mod trigger;
pub mod writer;

pub use config::Config;
pub use error::Error;
pub use pipeline::{aggregate_day, RunOptions, Summary};
pub use trigger::Day;
