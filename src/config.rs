//! Configuration from the environment, validated once at start.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `SRC_BUCKET` | bucket CloudTrail delivers to | required |
//! | `SRC_PREFIX` | the `AWSLogs/` folder, or an organisation's `AWSLogs/o-…/` | `AWSLogs/` |
//! | `DST_BUCKET` | bucket the daily files are written to | required |
//! | `DST_PREFIX` | folder the `YYYY/MM/DD/` folders are written under | `cloudtrail-daily/` |
//! | `OUTPUT_FORMAT` | `ndjson` (gzip NDJSON, byte-exact records) or `parquet` | `ndjson` |
//! | `DAY_BY` | `delivery` (CloudTrail's folder) or `event` (eventTime on the day; reads D and D+1) | `delivery` |
//! | `DEDUP` | `none` or `eventid` (one record per eventID and day) | `none` |
//! | `VALIDATE` | `off`, `report` or `strict`: check CloudTrail's signed digests ([`crate::validate`]) | `off` |
//! | `DEDUP_MAX_EVENTS` | eventIDs one day may remember before the run fails | 20000000 |
//! | `CHUNK_SIZE_BYTES` | NDJSON: largest uncompressed size of one output file | 67108864 (64 MiB) |
//! | `GZIP_LEVEL` | NDJSON: gzip level of the output, 1 (fast) to 9 (small) | 6 |
//! | `PARQUET_FILE_BYTES` | Parquet: size at which an output file is closed | 268435456 (256 MiB) |
//! | `PARQUET_ROW_GROUP_BYTES` | Parquet: encoded size at which a row group is closed | 33554432 (32 MiB) |
//! | `MAX_CONCURRENT_GETS` | source objects fetched at once | 128 |
//! | `MAX_CONCURRENT_LISTS` | ListObjectsV2 walks at once | 16 |
//! | `MAX_RECORD_BYTES` | largest record accepted (Athena's row limit) | 33554432 (32 MiB) |
//! | `MAX_FILE_BYTES` | largest decoded delivery file accepted | 4294967296 (4 GiB) |
//! | `SHARD_MAX_FILES` | source files of one shard; a larger day is a plan of several | 200000 |
//! | `SHARD_MAX_BYTES` | bytes (as stored) of the source files of one shard | 2147483648 (2 GiB) |
//! | `SHARD_QUEUE_URL` | queue the Lambda sends a plan's shard messages to (the trigger queue) | none |
//! | `LOG_LEVEL` | `trace`, `debug`, `info`, `warn`/`warning`, `error`/`critical` | `info` |
//! | `METRICS_NAMESPACE` | CloudWatch namespace of the per-day EMF metrics (Lambda only) | `CloudTrailAggregator` |
//! | `EXPECTED_BUCKET_OWNER` | account id that must own both buckets (sent on every S3 call) | none |
//!
//! With `VALIDATE` on, `ListPublicKeys` goes to CloudTrail as the SDK configures it
//! (`AWS_ENDPOINT_URL_CLOUDTRAIL` to point it elsewhere).
//!
//! Prefixes are normalised to end in `/` (an empty prefix means the bucket's root).
//! A missing or malformed value is an [`ConfigError`] naming the variable.

use std::collections::HashMap;

use crate::chunks::{DEFAULT_CHUNK_SIZE_BYTES, DEFAULT_GZIP_LEVEL};
use crate::parquet_chunks::{DEFAULT_PARQUET_FILE_BYTES, DEFAULT_PARQUET_ROW_GROUP_BYTES};
use crate::plan::{ShardLimits, DEFAULT_SHARD_MAX_BYTES, DEFAULT_SHARD_MAX_FILES};
use crate::records::{Limits, DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_RECORD_BYTES};
use crate::select::{DayBy, Dedup, DEFAULT_DEDUP_MAX_EVENTS};
use crate::validate::{CloudTrailConfig, Validate};

pub const DEFAULT_SRC_PREFIX: &str = "AWSLogs/";
pub const DEFAULT_DST_PREFIX: &str = "cloudtrail-daily/";
/// 128: at ~25 ms per GET, 64 left the organisation-sized benchmark day waiting on S3
/// (53.6 s wall against 35.3 s with 128, same CPU; BENCHMARKS.md).
pub const DEFAULT_MAX_CONCURRENT_GETS: usize = 128;
pub const DEFAULT_METRICS_NAMESPACE: &str = "CloudTrailAggregator";
pub const DEFAULT_MAX_CONCURRENT_LISTS: usize = 16;
/// S3's limit for a single PutObject; a chunk must fit in one.
pub const MAX_CHUNK_SIZE_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// A configuration variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration: {var}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub reason: String,
}

/// Every configuration variable that is missing or malformed, so that a deployment is
/// put right in one go rather than one variable per try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(
                    f,
                    "configuration: {} variables are missing or malformed: ",
                    all.len()
                )?;
                for (i, e) in all.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "; " };
                    write!(f, "{sep}{}: {}", e.var, e.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

fn err(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        reason: reason.into(),
    }
}

/// The output's file format (`OUTPUT_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Gzip NDJSON, each record byte for byte as CloudTrail wrote it.
    #[default]
    Ndjson,
    /// Parquet with zstd: a column per CloudTrail field ([`crate::parquet_chunks`]).
    Parquet,
}

impl OutputFormat {
    /// What a chunk's object name ends in.
    pub fn suffix(self) -> &'static str {
        match self {
            OutputFormat::Ndjson => ".ndjson.gz",
            OutputFormat::Parquet => ".parquet",
        }
    }

    /// The chunks' `Content-Type`. No `Content-Encoding` for NDJSON: the objects are
    /// `.gz` files, not transparently compressed JSON, and tools must not unpack them
    /// on download.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Ndjson => "application/gzip",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// A setting that takes one of a few names (`OUTPUT_FORMAT`, `DAY_BY`, `DEDUP`): its
/// values are listed once, in [`Setting::ALL`], and parsed, printed and named in errors
/// through that list ([`setting_str!`] gives the `FromStr` and `Display`).
pub trait Setting: Copy + Sized + 'static {
    /// Every value, the default first.
    const ALL: &'static [Self];

    /// The name the variable takes.
    fn name(self) -> &'static str;

    /// The names, for errors and `--help`.
    fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|v| v.name()).collect()
    }

    /// The value named `s` (any case, surrounding blanks ignored).
    fn parse_name(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Self::ALL
            .iter()
            .copied()
            .find(|v| v.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s:?} is not one of {}", Self::names().join(", ")))
    }
}

/// `FromStr` and `Display` of a [`Setting`], through its names.
#[macro_export]
macro_rules! setting_str {
    ($t:ty) => {
        impl ::std::str::FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$t as $crate::config::Setting>::parse_name(s)
            }
        }

        impl ::std::fmt::Display for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str($crate::config::Setting::name(*self))
            }
        }
    };
}

impl Setting for OutputFormat {
    const ALL: &'static [Self] = &[OutputFormat::Ndjson, OutputFormat::Parquet];

    fn name(self) -> &'static str {
        match self {
            OutputFormat::Ndjson => "ndjson",
            OutputFormat::Parquet => "parquet",
        }
    }
}

setting_str!(OutputFormat);

/// Validated settings of one deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub src_bucket: String,
    /// Ends in `/`, or is empty.
    pub src_prefix: String,
    pub dst_bucket: String,
    /// Ends in `/`, or is empty.
    pub dst_prefix: String,
    pub output_format: OutputFormat,
    /// What a day is ([`crate::select`]).
    pub day_by: DayBy,
    pub dedup: Dedup,
    pub dedup_max_events: u64,
    /// Whether CloudTrail's digests are checked ([`crate::validate`]).
    pub validate: Validate,
    /// The CloudTrail client `VALIDATE` asks `ListPublicKeys` with: not a setting;
    /// by default the SDK's standard configuration, loaded when first needed.
    pub cloudtrail: CloudTrailConfig,
    pub chunk_size_bytes: u64,
    pub gzip_level: u32,
    pub parquet_file_bytes: u64,
    pub parquet_row_group_bytes: u64,
    pub max_concurrent_gets: usize,
    pub max_concurrent_lists: usize,
    /// What one source file may hold (`MAX_RECORD_BYTES`, `MAX_FILE_BYTES`).
    pub limits: Limits,
    /// How large a shard may be (`SHARD_MAX_FILES`, `SHARD_MAX_BYTES`).
    pub shard_limits: ShardLimits,
    /// Where the Lambda sends the shard messages of a day of many shards.
    pub shard_queue_url: Option<String>,
    pub metrics_namespace: String,
    /// A 12-digit account id, when `EXPECTED_BUCKET_OWNER` is set.
    pub expected_bucket_owner: Option<String>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Config, ConfigErrors> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from a map (tests, or the CLI's flags laid over the environment).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
        Config::from_lookup(|name| map.get(name).cloned())
    }

    /// Reads each variable through `get`; every missing or malformed one is reported.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let mut v = Vars {
            get,
            errors: Vec::new(),
        };
        let src_bucket = v.bucket("SRC_BUCKET");
        let dst_bucket = v.bucket("DST_BUCKET");
        let src_prefix = v.prefix("SRC_PREFIX", DEFAULT_SRC_PREFIX);
        let dst_prefix = v.prefix("DST_PREFIX", DEFAULT_DST_PREFIX);
        if v.errors.is_empty()
            && src_bucket == dst_bucket
            && (dst_prefix.starts_with(&src_prefix) || src_prefix.starts_with(&dst_prefix))
        {
            v.errors.push(err(
                "DST_PREFIX",
                format!(
                    "s3://{dst_bucket}/{dst_prefix} overlaps the source s3://{src_bucket}/{src_prefix}; \
                     write the output beside the logs, not inside or above them"
                ),
            ));
        }
        let config = Config {
            output_format: v.setting("OUTPUT_FORMAT"),
            day_by: v.setting("DAY_BY"),
            dedup: v.setting("DEDUP"),
            validate: v.setting("VALIDATE"),
            cloudtrail: CloudTrailConfig::default(),
            dedup_max_events: v.number(
                "DEDUP_MAX_EVENTS",
                DEFAULT_DEDUP_MAX_EVENTS,
                1,
                u64::MAX / 64,
            ),
            parquet_file_bytes: v.number(
                "PARQUET_FILE_BYTES",
                DEFAULT_PARQUET_FILE_BYTES,
                1024 * 1024,
                MAX_CHUNK_SIZE_BYTES,
            ),
            parquet_row_group_bytes: v.number(
                "PARQUET_ROW_GROUP_BYTES",
                DEFAULT_PARQUET_ROW_GROUP_BYTES,
                64 * 1024,
                1024 * 1024 * 1024,
            ),
            chunk_size_bytes: v.number(
                "CHUNK_SIZE_BYTES",
                DEFAULT_CHUNK_SIZE_BYTES,
                1,
                MAX_CHUNK_SIZE_BYTES,
            ),
            gzip_level: v.number("GZIP_LEVEL", DEFAULT_GZIP_LEVEL as u64, 1, 9) as u32,
            max_concurrent_gets: v.number(
                "MAX_CONCURRENT_GETS",
                DEFAULT_MAX_CONCURRENT_GETS as u64,
                1,
                1024,
            ) as usize,
            max_concurrent_lists: v.number(
                "MAX_CONCURRENT_LISTS",
                DEFAULT_MAX_CONCURRENT_LISTS as u64,
                1,
                256,
            ) as usize,
            limits: Limits {
                record_bytes: v.number(
                    "MAX_RECORD_BYTES",
                    DEFAULT_MAX_RECORD_BYTES,
                    1024,
                    u64::MAX / 4,
                ),
                file_bytes: v.number("MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES, 1024, u64::MAX / 4),
            },
            shard_limits: ShardLimits {
                max_files: v.number("SHARD_MAX_FILES", DEFAULT_SHARD_MAX_FILES, 1, u64::MAX / 4),
                max_bytes: v.number("SHARD_MAX_BYTES", DEFAULT_SHARD_MAX_BYTES, 1, u64::MAX / 4),
            },
            shard_queue_url: v.text("SHARD_QUEUE_URL"),
            metrics_namespace: v
                .text("METRICS_NAMESPACE")
                .unwrap_or_else(|| DEFAULT_METRICS_NAMESPACE.to_string()),
            expected_bucket_owner: v.account_id("EXPECTED_BUCKET_OWNER"),
            src_bucket,
            src_prefix,
            dst_bucket,
            dst_prefix,
        };
        v.log_level("LOG_LEVEL");
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }
}

/// The variables, read through `get`, each named once; a bad one is remembered (and a
/// stand-in returned) so that all of them are reported together.
struct Vars<G> {
    get: G,
    errors: Vec<ConfigError>,
}

impl<G: Fn(&str) -> Option<String>> Vars<G> {
    fn take<T>(&mut self, r: Result<T, ConfigError>, stand_in: T) -> T {
        r.unwrap_or_else(|e| {
            self.errors.push(e);
            stand_in
        })
    }

    /// The trimmed value, `None` when unset or blank.
    fn text(&self, var: &str) -> Option<String> {
        (self.get)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn bucket(&mut self, var: &'static str) -> String {
        let r = bucket(var, (self.get)(var));
        self.take(r, String::new())
    }

    fn prefix(&mut self, var: &'static str, default: &str) -> String {
        let r = prefix(var, (self.get)(var), default);
        self.take(r, default.to_string())
    }

    fn number(&mut self, var: &'static str, default: u64, min: u64, max: u64) -> u64 {
        let r = number(var, (self.get)(var), default, min, max);
        self.take(r, default)
    }

    fn setting<T: Setting + Default>(&mut self, var: &'static str) -> T {
        match self.text(var) {
            Some(v) => {
                let r = T::parse_name(&v).map_err(|e| err(var, e));
                self.take(r, T::default())
            }
            None => T::default(),
        }
    }

    fn account_id(&mut self, var: &'static str) -> Option<String> {
        let v = self.text(var)?;
        let r = if is_account_id(&v) {
            Ok(Some(v))
        } else {
            Err(err(var, format!("{v:?} is not a 12-digit account id")))
        };
        self.take(r, None)
    }

    /// Read by `telemetry` when the subscriber is installed; checked here so that a
    /// misspelt level is a configuration error, not a silent default.
    fn log_level(&mut self, var: &'static str) {
        if let Some(s) = self.text(var) {
            if level_name(&s).is_none() {
                self.errors.push(err(
                    var,
                    format!("{s:?} is not one of trace, debug, info, warn, error"),
                ));
            }
        }
    }
}

/// A 12-digit AWS account id.
pub fn is_account_id(name: &str) -> bool {
    name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit())
}

/// Maps a level name (tracing's or Python logging's, any case) to tracing's.
pub fn level_name(s: &str) -> Option<String> {
    let l = s.trim().to_ascii_lowercase();
    let name = match l.as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" | "fatal" => "error",
        _ => return None,
    };
    Some(name.to_string())
}

fn bucket(var: &'static str, value: Option<String>) -> Result<String, ConfigError> {
    let v = value.unwrap_or_default();
    let v = v.trim();
    if v.is_empty() {
        return Err(err(var, "is required (the bucket name)"));
    }
    if v.starts_with("s3://") || v.contains('/') {
        return Err(err(
            var,
            format!("{v:?} must be a bucket name, not a URI or path"),
        ));
    }
    let ok_chars = v
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    if !(3..=63).contains(&v.len()) || !ok_chars || !ok_ends {
        return Err(err(
            var,
            format!(
                "{v:?} is not a valid S3 bucket name (3-63 lowercase letters, digits, '-', '.')"
            ),
        ));
    }
    Ok(v.to_string())
}

fn prefix(var: &'static str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let v = match value {
        None => return Ok(default.to_string()),
        Some(v) => v.trim().to_string(),
    };
    if v.starts_with("s3://") {
        return Err(err(
            var,
            format!("{v:?} must be a key prefix, not an s3:// URI"),
        ));
    }
    if v.starts_with('/') {
        return Err(err(
            var,
            format!("{v:?} must not start with '/' (S3 keys have no leading slash)"),
        ));
    }
    if v.contains("//") {
        return Err(err(
            var,
            format!("{v:?} contains an empty path segment '//'"),
        ));
    }
    if v.is_empty() {
        return Ok(v);
    }
    Ok(if v.ends_with('/') { v } else { format!("{v}/") })
}

fn number(
    var: &'static str,
    value: Option<String>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let Some(v) = value else {
        return Ok(default);
    };
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| err(var, format!("{v:?} is not a whole number")))?;
    if n < min || n > max {
        return Err(err(var, format!("{n} is out of range ({min} to {max})")));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    }

    /// Defaults fill in everything but the buckets; prefixes gain a trailing slash.
    #[test]
    fn defaults_and_normalisation() {
        let c = cfg(&[("SRC_BUCKET", "logs"), ("DST_BUCKET", "out")]).unwrap();
        assert_eq!(c.src_prefix, "AWSLogs/");
        assert_eq!(c.dst_prefix, "cloudtrail-daily/");
        assert_eq!(c.chunk_size_bytes, 64 * 1024 * 1024);
        assert_eq!(c.output_format, OutputFormat::Ndjson);
        assert_eq!(c.parquet_file_bytes, 256 * 1024 * 1024);
        let c = cfg(&[
            ("SRC_BUCKET", "logs"),
            ("DST_BUCKET", "out"),
            ("OUTPUT_FORMAT", "Parquet"),
        ])
        .unwrap();
        assert_eq!(c.output_format, OutputFormat::Parquet);
        let c = cfg(&[
            ("SRC_BUCKET", "logs"),
            ("DST_BUCKET", "out"),
            ("SRC_PREFIX", "AWSLogs/o-abc123def4"),
            ("DST_PREFIX", ""),
            ("CHUNK_SIZE_BYTES", "1000"),
            ("LOG_LEVEL", "WARNING"),
        ])
        .unwrap();
        assert_eq!(c.src_prefix, "AWSLogs/o-abc123def4/");
        assert_eq!(c.dst_prefix, "");
        assert_eq!(c.chunk_size_bytes, 1000);
    }

    /// Each bad value names its variable.
    #[test]
    fn errors_name_the_variable() {
        let base = [("SRC_BUCKET", "logs"), ("DST_BUCKET", "out")];
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("DST_BUCKET", "out")], "SRC_BUCKET: is required"),
            (&[("SRC_BUCKET", "logs")], "DST_BUCKET: is required"),
            (
                &[("SRC_BUCKET", "s3://logs"), ("DST_BUCKET", "out")],
                "SRC_BUCKET",
            ),
            (
                &[("SRC_BUCKET", "Logs_Bucket"), ("DST_BUCKET", "out")],
                "not a valid S3 bucket name",
            ),
            (
                &[("CHUNK_SIZE_BYTES", "64MB")],
                "CHUNK_SIZE_BYTES: \"64MB\" is not a whole number",
            ),
            (
                &[("CHUNK_SIZE_BYTES", "0")],
                "CHUNK_SIZE_BYTES: 0 is out of range",
            ),
            (&[("SRC_PREFIX", "/AWSLogs/")], "SRC_PREFIX"),
            (&[("DST_PREFIX", "a//b")], "DST_PREFIX"),
            (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
            (
                &[("OUTPUT_FORMAT", "csv")],
                "OUTPUT_FORMAT: \"csv\" is not one of ndjson, parquet",
            ),
            (&[("PARQUET_FILE_BYTES", "1000")], "PARQUET_FILE_BYTES"),
            (&[("MAX_CONCURRENT_GETS", "0")], "MAX_CONCURRENT_GETS"),
            (&[("GZIP_LEVEL", "10")], "GZIP_LEVEL"),
            (
                &[("EXPECTED_BUCKET_OWNER", "12345")],
                "EXPECTED_BUCKET_OWNER",
            ),
        ];
        for (pairs, want) in cases {
            let mut all: Vec<(&str, &str)> = base.to_vec();
            for (k, v) in pairs.iter() {
                all.retain(|(bk, _)| bk != k);
                all.push((k, v));
            }
            // Cases that omit a bucket on purpose.
            if want.contains("is required") {
                all = pairs.to_vec();
            }
            let e = cfg(&all).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    /// Every bad variable is reported, in the table's order, not only the first.
    #[test]
    fn every_bad_variable_at_once() {
        let e = cfg(&[("DAY_BY", "events"), ("GZIP_LEVEL", "0")]).unwrap_err();
        let vars: Vec<&str> = e.0.iter().map(|e| e.var).collect();
        assert_eq!(vars, ["SRC_BUCKET", "DST_BUCKET", "DAY_BY", "GZIP_LEVEL"]);
        let text = e.to_string();
        assert!(
            text.starts_with(
                "configuration: 4 variables are missing or malformed: SRC_BUCKET: is required"
            ),
            "{text}"
        );
        assert!(
            text.contains("; DAY_BY: \"events\" is not one of delivery, event;"),
            "{text}"
        );
    }

    /// The output may not be written inside the source tree of the same bucket.
    #[test]
    fn overlapping_output_refused() {
        let e = cfg(&[
            ("SRC_BUCKET", "logs"),
            ("DST_BUCKET", "logs"),
            ("SRC_PREFIX", "AWSLogs/"),
            ("DST_PREFIX", "AWSLogs/daily/"),
        ])
        .unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].var, "DST_PREFIX");
        let ok = cfg(&[
            ("SRC_BUCKET", "logs"),
            ("DST_BUCKET", "logs"),
            ("DST_PREFIX", "daily/"),
        ]);
        assert!(ok.is_ok());
    }
}
