//! cloudtrail-aggregator: one day of CloudTrail logs in S3 → a few gzip NDJSON files.
//!
//! Data moves one way through one module per stage; each stage's core is synchronous
//! and tested with bytes, its I/O edge async:
//!
//! - [`trigger`]: an SQS message body → the [`trigger::Day`] to aggregate;
//! - [`listing`]: the delimited `ListObjectsV2` walk → the day's source keys, sorted;
//! - [`fetch`]: reads of the source bucket, GETs of those keys and pages of their
//!   listing (the SDK's first request, then lean signed ones), and streamed bodies
//!   that read on after a lost connection;
//! - [`records`]: a delivery file's bytes → its records, streamed one at a time;
//! - [`chunks`]: records → gzip NDJSON chunks under a byte bound;
//! - [`spool`]: a chunk's compressed pieces in temporary files until they are uploaded;
//! - [`writer`]: chunk uploads, stale-chunk cleanup, `_manifest.json`;
//! - [`pipeline`]: wires the stages for one day with bounded concurrency;
//! - [`handler`]: an `SqsEvent` → per-message days → `SqsBatchResponse`.
//!
//! Around them: [`sigv4`] (request signing for the lean GETs and LISTs), [`http1`] (the
//! keep-alive HTTP/1.1 connections they are sent over), [`ordered`] (GETs run
//! concurrently, handed on in key order), [`config`] (environment, validated once),
//! [`error`] (typed errors naming what failed), [`telemetry`] (tracing set-up), [`metrics`] (per-day EMF
//! lines), [`aws`] (the S3 and SQS clients) and [`backfill`] (one message per day on
//! the trigger queue).

pub mod aws;
pub mod backfill;
pub mod chunks;
pub mod config;
pub mod error;
pub mod fetch;
pub mod handler;
pub mod http1;
pub mod listing;
pub mod metrics;
pub mod ordered;
pub mod pipeline;
pub mod process;
pub mod records;
pub mod sigv4;
pub mod spool;
pub mod telemetry;
pub mod trigger;
pub mod writer;

pub use config::Config;
pub use error::Error;
pub use pipeline::{aggregate_day, RunOptions, Summary};
pub use trigger::Day;
