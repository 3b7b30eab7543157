//! Lease: one run per day at a time.
//!
//! Before it writes anything, a run takes the day's lease: `_lease.json` in the day's
//! output folder (`_`-prefixed, so Athena and Hive skip it), created with a
//! conditional PutObject (`If-None-Match: *`). It holds the run's id and an expiry: the
//! run's deadline (the Lambda's, less its margin) or, without one, [`LEASE_WITHOUT_DEADLINE`]
//! from the start. A run that finds a live lease fails with [`Error::Leased`] — its SQS
//! message is then redelivered after the visibility timeout — and an expired lease (a
//! run that was killed), or one of a process of this machine that has ended (a killed
//! `ctagg run`, rerun on the same machine), is taken over with `If-Match` on its ETag,
//! so that of two runs taking over at once only one wins. The writes that finish the day — stale-chunk
//! deletion and the manifest — are made only after [`Lease::check`] has seen the lease
//! still the run's own, and the lease is deleted after the manifest (or when the run
//! fails, so that a retry need not wait for the expiry).

use std::time::Duration;

use aws_sdk_s3::config::ResponseChecksumValidation;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::http::Response;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::error::Error;
use crate::layout;
use crate::source::STREAM_RESUMES;
use crate::trigger::Day;

/// How long after writing the lease a run reads it again (see [`Lease::settle`]).
pub const LEASE_SETTLE: Duration = Duration::from_millis(200);
/// How long a run without a deadline (`ctagg run`) holds the day.
pub const LEASE_WITHOUT_DEADLINE: Duration = Duration::from_secs(2 * 3600);

/// What `_lease.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseBody {
    pub run: String,
    pub day: String,
    /// RFC 3339, UTC.
    pub expires: String,
    /// Where a run outside Lambda holds it: its machine and process, so that a rerun
    /// on that machine after a kill need not wait for the expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
}

/// A process on a machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub host: String,
    pub pid: u32,
}

impl Process {
    /// This process, outside Lambda on a machine with a name (`None` in Lambda, where a
    /// killed invocation's sandbox is gone, and a pid says nothing).
    fn this() -> Option<Process> {
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            return None;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())?;
        Some(Process {
            host,
            pid: std::process::id(),
        })
    }

    /// Whether this is a process of this machine that has ended.
    fn ended_here(&self) -> bool {
        Process::this().is_some_and(|me| me.host == self.host)
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// The day's lease, held by this run.
#[derive(Debug)]
pub struct Lease {
    bucket: String,
    key: String,
    run: String,
}

/// A new run id: the process, the time, and a counter (unique among runs).
pub fn run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let host = std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default();
    let now = Utc::now().format("%Y%m%dT%H%M%S%.6fZ");
    format!(
        "{now}-{}-{n}{}{host}",
        std::process::id(),
        if host.is_empty() { "" } else { "@" }
    )
}

/// Whether an SDK error is S3's answer that a condition failed (`412`, or `409` for
/// a conditional write that raced another).
fn condition_failed<E>(e: &SdkError<E, Response>) -> bool {
    let status = e.raw_response().map(|r| r.status().as_u16());
    matches!(status, Some(412 | 409))
}

impl Lease {
    /// A handle on the lease `key` as held by `run` (taken by a planning run, and
    /// checked and released by whoever commits its plan).
    pub fn at(bucket: &str, key: &str, run: &str) -> Lease {
        Lease {
            bucket: bucket.to_string(),
            key: key.to_string(),
            run: run.to_string(),
        }
    }

    /// The id of the run this handle is for.
    pub fn run(&self) -> &str {
        &self.run
    }

    /// Takes the lease of `day` under `dst_prefix` for run `run` until `expires`.
    pub async fn acquire(
        s3: &Client,
        bucket: &str,
        dst_prefix: &str,
        day: Day,
        run: &str,
        expires: DateTime<Utc>,
    ) -> Result<Lease, Error> {
        let key = layout::lease_key(dst_prefix, day);
        Lease::acquire_key(s3, bucket, &key, day, run, expires).await
    }

    /// Takes the lease object `key` (the day's lease, or the commit of a plan) for
    /// `run` until `expires`.
    pub async fn acquire_key(
        s3: &Client,
        bucket: &str,
        key: &str,
        day: Day,
        run: &str,
        expires: DateTime<Utc>,
    ) -> Result<Lease, Error> {
        let key = key.to_string();
        let body = LeaseBody {
            run: run.to_string(),
            day: day.to_string(),
            expires: expires.to_rfc3339_opts(SecondsFormat::Secs, true),
            process: Process::this(),
        };
        let json = serde_json::to_vec_pretty(&body).expect("a lease always serialises");
        let put = |cond: Cond| {
            let req = s3
                .put_object()
                .bucket(bucket)
                .key(&key)
                .content_type("application/json")
                .body(ByteStream::from(json.clone()));
            match cond {
                Cond::Absent => req.if_none_match("*"),
                Cond::Etag(etag) => req.if_match(etag),
            }
            .send()
        };
        let lease = Lease {
            bucket: bucket.to_string(),
            key: key.clone(),
            run: run.to_string(),
        };
        // Taken, or held by another run; released between our two requests, try again.
        for _ in 0..3 {
            match put(Cond::Absent).await {
                Ok(_) => {
                    lease.settle(s3, day).await?;
                    info!(day = %day, run, lease = %lease.url(), expires = %body.expires, "lease taken");
                    return Ok(lease);
                }
                Err(e) if condition_failed(&e) => {}
                Err(e) => {
                    let what = "PutObject (taking the day's lease)";
                    return Err(Error::s3(what, bucket, &key, e));
                }
            }
            // Held: whose, and until when?
            let Some((held, etag)) = lease.read(s3).await? else {
                continue;
            };
            let now = Utc::now();
            let until = DateTime::parse_from_rfc3339(&held.expires)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now);
            // Expired, or held by a process of this machine that has ended (a killed
            // `ctagg run`): taken over.
            let gone = held.process.as_ref().is_some_and(Process::ended_here);
            let Some(etag) = etag.filter(|_| until <= now || gone) else {
                return Err(lease.leased(day, &held.run, &held.expires));
            };
            return match put(Cond::Etag(etag)).await {
                Ok(_) => {
                    lease.settle(s3, day).await?;
                    warn!(day = %day, run, expired_run = %held.run, expired = %held.expires, lease = %lease.url(), "expired lease taken over");
                    Ok(lease)
                }
                Err(e) if condition_failed(&e) => Err(lease.leased(
                    day,
                    "another run (it took the expired lease over first)",
                    "its deadline",
                )),
                Err(e) => {
                    let what = "PutObject (taking over the day's expired lease)";
                    Err(Error::s3(what, bucket, &key, e))
                }
            };
        }
        Err(lease.leased(
            day,
            "other runs (taken and released three times meanwhile)",
            "now",
        ))
    }

    /// Reads the lease again a moment after it was written: a server whose conditional
    /// writes are not atomic (S3's are; some S3-compatible servers, s3s-fs among them,
    /// check, then write) can let two runs both create it, and the one whose body landed
    /// last holds it.
    async fn settle(&self, s3: &Client, day: Day) -> Result<(), Error> {
        tokio::time::sleep(LEASE_SETTLE).await;
        match self.read(s3).await? {
            Some((held, _)) if self.holds(&held) => Ok(()),
            Some((held, _)) => Err(self.leased(day, &held.run, &held.expires)),
            None => Err(self.leased(
                day,
                "another run (it took and released the lease meanwhile)",
                "now",
            )),
        }
    }

    /// Whether `held` is this run's lease. The body alone decides: run ids are unique,
    /// and on a server whose conditional writes race (see [`Lease::settle`]) the ETag
    /// stored beside a body can be the other writer's.
    fn holds(&self, held: &LeaseBody) -> bool {
        held.run == self.run
    }

    fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn leased(&self, day: Day, run: &str, until: &str) -> Error {
        Error::Leased {
            day: day.to_string(),
            run: run.to_string(),
            until: until.to_string(),
            lease: self.url(),
        }
    }

    /// The lease as stored, and its ETag; `None` when there is none. (A body broken
    /// off is asked for again: the SDK retries requests, not the bodies it hands out.)
    ///
    /// The SDK's response checksum is not validated here: on a server whose
    /// conditional writes race, two runs creating the lease at once can leave one's body
    /// stored with the other's checksum, and every later read would fail on it. The
    /// body is a small JSON object that is parsed and compared whole, so a damaged one
    /// still fails (as "not a lease") or holds another run's id.
    async fn read(&self, s3: &Client) -> Result<Option<(LeaseBody, Option<String>)>, Error> {
        let what = "GetObject (reading the day's lease)";
        let mut again = 0;
        let (bytes, etag) = loop {
            let out = match s3
                .get_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
                )
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                    return Ok(None)
                }
                Err(e) => return Err(Error::s3(what, &self.bucket, &self.key, e)),
            };
            let etag = out.e_tag.clone();
            match out.body.collect().await {
                Ok(body) => break (body.into_bytes(), etag),
                Err(e) if again < STREAM_RESUMES => {
                    again += 1;
                    warn!(lease = %self.url(), error = %crate::error::error_chain(&e), "body broken off; asking for it again");
                }
                Err(e) => return Err(Error::s3_read(what, &self.bucket, &self.key, &e)),
            }
        };
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            Error::s3_detail(what, &self.bucket, &self.key, format!("not a lease: {e}"))
        })?;
        Ok(Some((body, etag)))
    }

    /// The lease as stored now (`None` when there is none).
    pub async fn holder(&self, s3: &Client) -> Result<Option<LeaseBody>, Error> {
        Ok(self.read(s3).await?.map(|(body, _)| body))
    }

    /// Moves the expiry of this run's lease to `expires` (a plan whose shards run from
    /// the queue holds the day until its commit). Fails when the lease is no longer
    /// this run's.
    pub async fn extend(&self, s3: &Client, expires: DateTime<Utc>) -> Result<(), Error> {
        let lost = |now: String| Error::LeaseLost {
            lease: self.url(),
            run: self.run.clone(),
            now,
        };
        let (mut body, etag) = match self.read(s3).await? {
            Some((held, etag)) if self.holds(&held) => (held, etag),
            Some((held, _)) => return Err(lost(held.run)),
            None => return Err(lost("no run (it was deleted)".into())),
        };
        body.expires = expires.to_rfc3339_opts(SecondsFormat::Secs, true);
        let json = serde_json::to_vec_pretty(&body).expect("a lease always serialises");
        let req = s3
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .body(ByteStream::from(json));
        let req = match etag {
            Some(etag) => req.if_match(etag),
            None => req,
        };
        match req.send().await {
            Ok(_) => {
                info!(lease = %self.url(), run = %self.run, expires = %body.expires, "lease extended");
                Ok(())
            }
            Err(e) if condition_failed(&e) => {
                Err(lost("another run (it wrote the lease meanwhile)".into()))
            }
            Err(e) => Err(Error::s3(
                "PutObject (extending the day's lease)",
                &self.bucket,
                &self.key,
                e,
            )),
        }
    }

    /// Fails unless the lease is still this run's (not taken over since).
    pub async fn check(&self, s3: &Client) -> Result<(), Error> {
        let now = match self.read(s3).await? {
            Some((held, _)) if self.holds(&held) => return Ok(()),
            Some((held, _)) => held.run,
            None => "no run (it was deleted)".to_string(),
        };
        Err(Error::LeaseLost {
            lease: self.url(),
            run: self.run.clone(),
            now,
        })
    }

    /// Deletes the lease (best effort: a lease left behind expires).
    pub async fn release(&self, s3: &Client) {
        let res = s3
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await;
        match res {
            Ok(_) => info!(lease = %self.url(), "lease released"),
            Err(e) => {
                warn!(lease = %self.url(), error = %crate::error::error_chain(&e), "could not release the lease; it expires by itself")
            }
        }
    }
}

enum Cond {
    Absent,
    Etag(String),
}
