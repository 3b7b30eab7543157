//! Per-day metrics as CloudWatch Embedded Metric Format (EMF) lines.
//!
//! In Lambda, one JSON line per aggregated day is printed to stdout; CloudWatch turns
//! it into metrics in `METRICS_NAMESPACE` with the dimension `FunctionName`:
//! `FilesRead`, `RecordsWritten`, `RecordsOtherDays` (left for their own event day,
//! `DAY_BY=event`), `DuplicatesDropped` (`DEDUP=eventid`), `BytesRead`, `BytesWritten`,
//! `ChunksWritten` (Count and Bytes) and `DurationMs` (Milliseconds). The template's
//! record-count alarms use `RecordsWritten`.

use serde_json::json;

use crate::pipeline::Summary;

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
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": [
                    {"Name": "FilesRead", "Unit": "Count"},
                    {"Name": "RecordsWritten", "Unit": "Count"},
                    {"Name": "RecordsOtherDays", "Unit": "Count"},
                    {"Name": "DuplicatesDropped", "Unit": "Count"},
                    {"Name": "BytesRead", "Unit": "Bytes"},
                    {"Name": "BytesWritten", "Unit": "Bytes"},
                    {"Name": "ChunksWritten", "Unit": "Count"},
                    {"Name": "DurationMs", "Unit": "Milliseconds"}
                ]
            }]
        },
        "FunctionName": function_name,
        "Day": summary.day.to_string(),
        "FilesRead": m.source_files,
        "RecordsWritten": m.records,
        "RecordsOtherDays": other_days,
        "DuplicatesDropped": duplicates,
        "BytesRead": m.bytes_read,
        "BytesWritten": m.bytes_written,
        "ChunksWritten": m.chunks.len(),
        "DurationMs": summary.duration.as_millis() as u64,
    })
    .to_string()
}

/// Prints the day's EMF line when running in Lambda (`AWS_LAMBDA_FUNCTION_NAME` set).
pub fn emit(namespace: &str, summary: &Summary) {
    let Ok(function) = std::env::var("AWS_LAMBDA_FUNCTION_NAME") else {
        return;
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    println!("{}", emf_line(namespace, &function, summary, now_ms));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{ChunkEntry, Manifest};

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
                }],
                selection: None,
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
            ("DurationMs", 1234),
        ];
        for (i, (name, value)) in want.iter().enumerate() {
            assert_eq!(decl["Metrics"][i]["Name"], *name);
            assert_eq!(v[*name], *value, "{name}");
        }
    }
}
