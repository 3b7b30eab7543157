//! Per-day metrics as CloudWatch Embedded Metric Format (EMF) lines.
//!
//! In Lambda, one JSON line per aggregated day is printed to stdout; CloudWatch turns
//! it into metrics in `METRICS_NAMESPACE` with the dimension `FunctionName`:
//! `FilesRead`, `RecordsWritten`, `RecordsOtherDays` (left for their own event day,
//! `DAY_BY=event`), `DuplicatesDropped` (`DEDUP=eventid`), `BytesRead`, `BytesWritten`,
//! `ChunksWritten`, `Shards` (Count and Bytes) and `DurationMs` (Milliseconds). The
//! template's record-count alarms use `RecordsWritten`. A shard of a day of many prints
//! a line of its own when it is done: `ShardFilesRead`, `ShardRecordsWritten`,
//! `ShardBytesRead` and `ShardDurationMs`, with `Day` and `Shard` as properties. With
//! `VALIDATE` on, the commit prints a line of what the digests showed, before a strict
//! failure too: `LogFilesVerified`, `LogFilesModified`, `LogFilesMissing`,
//! `LogFilesNotCovered`, `DigestsVerified`, `DigestsInvalid`, `DigestsMissing`; the
//! template alarms on the modified, missing and invalid ones.

use serde_json::json;

use crate::manifest::ShardResult;
use crate::pipeline::Summary;
use crate::trigger::Day;
use crate::validate::Validation;

/// An EMF line: `metrics` (name, unit, value) declared in `namespace` with the
/// dimension `FunctionName`, and `properties` beside them.
fn emf(
    namespace: &str,
    function_name: &str,
    timestamp_ms: u64,
    metrics: &[(&str, &str, u64)],
    properties: serde_json::Value,
) -> String {
    let declared: Vec<serde_json::Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut line = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": declared,
            }]
        },
        "FunctionName": function_name,
    });
    for (name, _, value) in metrics {
        line[*name] = json!(value);
    }
    if let serde_json::Value::Object(props) = properties {
        for (k, v) in props {
            line[k] = v;
        }
    }
    line.to_string()
}

/// The EMF line of one day's summary.
pub fn emf_line(
    namespace: &str,
    function_name: &str,
    summary: &Summary,
    timestamp_ms: u64,
) -> String {
    let m = &summary.manifest;
    let (other_days, duplicates) = m
        .selection
        .as_ref()
        .map_or((0, 0), |s| (s.other_days, s.duplicates));
    let metrics = [
        ("FilesRead", "Count", m.source_files),
        ("RecordsWritten", "Count", m.records),
        ("RecordsOtherDays", "Count", other_days),
        ("DuplicatesDropped", "Count", duplicates),
        ("BytesRead", "Bytes", m.bytes_read),
        ("BytesWritten", "Bytes", m.bytes_written),
        ("ChunksWritten", "Count", m.chunks.len() as u64),
        ("Shards", "Count", m.shards.len().max(1) as u64),
        (
            "DurationMs",
            "Milliseconds",
            summary.duration.as_millis() as u64,
        ),
    ];
    let props = json!({"Day": summary.day.to_string()});
    emf(namespace, function_name, timestamp_ms, &metrics, props)
}

/// The EMF line of one shard's result.
pub fn shard_emf_line(
    namespace: &str,
    function_name: &str,
    day: Day,
    r: &ShardResult,
    timestamp_ms: u64,
) -> String {
    let metrics = [
        ("ShardFilesRead", "Count", r.files),
        ("ShardRecordsWritten", "Count", r.records),
        ("ShardBytesRead", "Bytes", r.bytes_read),
        ("ShardDurationMs", "Milliseconds", r.duration_ms),
    ];
    let props = json!({"Day": day.to_string(), "Shard": r.index, "Shards": r.shards});
    emf(namespace, function_name, timestamp_ms, &metrics, props)
}

/// The EMF line of what `VALIDATE` found for a day.
pub fn validation_emf_line(
    namespace: &str,
    function_name: &str,
    day: Day,
    v: &Validation,
    timestamp_ms: u64,
) -> String {
    let metrics = [
        ("LogFilesVerified", "Count", v.files_verified),
        ("LogFilesModified", "Count", v.files_modified),
        ("LogFilesMissing", "Count", v.files_missing),
        ("LogFilesNotCovered", "Count", v.files_not_covered),
        ("DigestsVerified", "Count", v.digests_verified),
        ("DigestsInvalid", "Count", v.digests_invalid),
        ("DigestsMissing", "Count", v.digests_missing),
    ];
    let props = json!({"Day": day.to_string()});
    emf(namespace, function_name, timestamp_ms, &metrics, props)
}

/// Prints the validation line when running in Lambda.
pub fn emit_validation(namespace: &str, day: Day, v: &Validation) {
    if let Some((function, now_ms)) = in_lambda() {
        println!(
            "{}",
            validation_emf_line(namespace, &function, day, v, now_ms)
        );
    }
}

/// The function's name in Lambda (`AWS_LAMBDA_FUNCTION_NAME`), and the time.
fn in_lambda() -> Option<(String, u64)> {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok()?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Some((function, now_ms))
}

/// Prints the day's EMF line when running in Lambda (`AWS_LAMBDA_FUNCTION_NAME` set).
pub fn emit(namespace: &str, summary: &Summary) {
    if let Some((function, now_ms)) = in_lambda() {
        println!("{}", emf_line(namespace, &function, summary, now_ms));
    }
}

/// Prints a shard's EMF line when running in Lambda.
pub fn emit_shard(namespace: &str, day: Day, result: &ShardResult) {
    if let Some((function, now_ms)) = in_lambda() {
        println!(
            "{}",
            shard_emf_line(namespace, &function, day, result, now_ms)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ChunkEntry, Manifest};

    /// The line is EMF: metric declarations match top-level values of the same name.
    #[test]
    fn emf_shape() {
        let summary = Summary {
            day: "2024-02-12".parse().unwrap(),
            manifest_key: "p/2024/02/12/_manifest.json".into(),
            manifest: Manifest {
                date: "2024-02-12".into(),
                format: crate::config::OutputFormat::Ndjson,
                source: "s3://b/AWSLogs/".into(),
                source_files: 3,
                records: 17,
                bytes_read: 1000,
                bytes_written: 400,
                uncompressed_bytes_written: 5000,
                chunks: vec![ChunkEntry {
                    key: "p/2024/02/12/000000.ndjson.gz".into(),
                    records: 17,
                    bytes: 400,
                    uncompressed_bytes: 5000,
                    sha256: String::new(),
                }],
                selection: None,
                validation: None,
                inventory: vec![],
                delivery_index: None,
                plan: None,
                shards: vec![],
                generator: "x".into(),
            },
            stale_chunks_deleted: vec![],
            duration: std::time::Duration::from_millis(1234),
        };
        let v: serde_json::Value =
            serde_json::from_str(&emf_line("NS", "fn", &summary, 42)).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 42);
        let decl = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(decl["Namespace"], "NS");
        assert_eq!(v["FunctionName"], "fn");
        let want = [
            ("FilesRead", 3),
            ("RecordsWritten", 17),
            ("RecordsOtherDays", 0),
            ("DuplicatesDropped", 0),
            ("BytesRead", 1000),
            ("BytesWritten", 400),
            ("ChunksWritten", 1),
            ("Shards", 1),
            ("DurationMs", 1234),
        ];
        for (i, (name, value)) in want.iter().enumerate() {
            assert_eq!(decl["Metrics"][i]["Name"], *name);
            assert_eq!(v[*name], *value, "{name}");
        }
    }
}
