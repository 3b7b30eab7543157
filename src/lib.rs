//! cloudtrail-aggregator: one day of CloudTrail logs in S3 → a few gzip NDJSON (or
//! Parquet) files.
//!
//! A day is a plan of shards: a day that fits one shard (the usual day) is run in
//! place as it is listed; a larger one is cut into shards that run as SQS messages
//! (or tasks of `ctagg run`), and the last to finish commits the day. Data moves one
//! way through one module per stage; each stage's core is synchronous and tested with
//! bytes, its I/O edge async:
//!
//! - [`trigger`]: an SQS message body → a job: a [`trigger::Day`], or a shard of a
//!   day's plan;
//! - [`listing`]: the delimited `ListObjectsV2` walk → the day's source keys, sorted;
//! - [`plan`]: the listing → shards of bounded files and bytes (keys files, the plan);
//! - [`shard`]: one shard's stages wired:
//!   [`source`] (GETs of its keys, concurrent, handed on in key order within a byte
//!   budget; large objects streamed) → [`records`] (a delivery file's bytes → its
//!   records, one at a time) → [`select`] (which records the day keeps: `DAY_BY=event`,
//!   `DEDUP`) → [`chunks`] (records → gzip NDJSON chunks under a byte bound) or
//!   [`parquet_chunks`] (records → Parquet files of a column per CloudTrail field) →
//!   [`writer`] (uploads), then [`validate`] (`VALIDATE`: CloudTrail's signed digests,
//!   checked by [`digest`], against the SHA-256 of each file read; [`inventory`]: what
//!   each source file was and where its records went);
//! - [`commit`]: the shards' results → the manifest, stale chunks removed, once (with
//!   `DAY_BY=event`, and [`delivery_index`]: which files of the day's folders hold
//!   earlier events, so that the day before's run reads only those);
//! - [`pipeline`]: plan → shards → commit for a day, and one shard's message;
//! - [`handler`]: an `SqsEvent` → per-message jobs → `SqsBatchResponse`;
//!   [`status`]: where a day stands (`ctagg status`).
//!
//! Around them: [`table`] (AWS's CloudTrail table: the Glue tables, the Parquet schema),
//! [`layout`] (every key of a day's folder, pure), [`manifest`] (what the
//! manifest and a shard's result hold, and their merge), [`lease`] (one run per day at
//! a time; the plan's commit taken once), [`ordered`] (futures run concurrently,
//! yielded in order), [`config`] (environment, validated once), [`error`] (typed errors
//! naming what failed), [`telemetry`] (tracing set-up), [`metrics`] (per-day and
//! per-shard EMF lines), [`aws`] (the S3 and SQS clients, their retries), [`queue`]
//! (messages sent ten at a time) and [`backfill`] (one message per day on the trigger
//! queue). [`verify`] and [`provenance`] re-check a day later (`ctagg verify`: the chunks
//! against the manifest; `--sources`: the source files against the inventory and their
//! digests). Every S3 and SQS request goes through the AWS SDK.

pub mod aws;
pub mod backfill;
pub mod chunks;
pub mod commit;
pub mod config;
pub mod delivery_index;
pub mod digest;
pub mod error;
pub mod handler;
pub mod inventory;
pub mod layout;
pub mod lease;
pub mod listing;
pub mod manifest;
pub mod metrics;
pub mod ordered;
pub mod pages;
pub mod parquet_chunks;
pub mod pipeline;
pub mod plan;
pub mod provenance;
pub mod queue;
pub mod records;
pub mod select;
pub mod shard;
pub mod source;
pub mod status;
pub mod table;
pub mod telemetry;
pub mod trigger;
pub mod validate;
pub mod verify;
pub mod writer;

pub use config::Config;
pub use error::Error;
pub use pipeline::{
    aggregate_day, run_day, run_shard_job, DayOutcome, RunOptions, ShardOutcome, Summary,
};
pub use trigger::Day;
