//! `OUTPUT_FORMAT=parquet`: the columns and the rules that keep every field, files
//! bounded by size, byte-identical reruns, and whole days over the real S3 protocol
//! server (s3s-fs in-process), read back field by field by the parquet crate and by a
//! real engine, DuckDB.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use arrow_array::RecordBatch;
use aws_sdk_s3::Client;
use chrono::{DateTime, SecondsFormat};
use cloudtrail_aggregator::chunks::{Build, Lines, Piece};
use cloudtrail_aggregator::parquet_chunks::{
    Kind, ParquetBuilder, BATCH_BYTES, COLUMNS, OTHER_FIELDS,
};
use cloudtrail_aggregator::{aggregate_day, Config, Day, RunOptions};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";
const DAY: &str = "2024/02/12";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

fn config(vars: &[(&str, &str)]) -> Config {
    config_with(vars)
}

/// The batches of one Parquet file, read by the parquet crate.
fn batches(file: &[u8]) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file))
        .unwrap()
        .build()
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// One column's value in `batch` at `row`, as JSON (`None` for SQL null); JSON text
/// columns as their text.
fn cell(batch: &RecordBatch, col: usize, row: usize) -> Option<Value> {
    let a = batch.column(col);
    if a.is_null(row) {
        return None;
    }
    let kind = COLUMNS.get(col).map_or(Kind::Json, |c| c.1);
    Some(match kind {
        Kind::Str | Kind::Json => Value::String(a.as_string::<i32>().value(row).to_string()),
        Kind::Bool => Value::Bool(a.as_boolean().value(row)),
        Kind::Time => {
            let micros = a.as_primitive::<TimestampMicrosecondType>().value(row);
            let t = DateTime::from_timestamp_micros(micros).unwrap();
            Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
    })
}

/// The records of a Parquet file as the README says to read them back: the non-null
/// columns (JSON text columns parsed), then the entries of `otherFields` over them.
fn records_of(file: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    for batch in batches(file) {
        assert_eq!(batch.num_columns(), COLUMNS.len() + 1);
        assert_eq!(batch.schema().field(COLUMNS.len()).name(), OTHER_FIELDS);
        for row in 0..batch.num_rows() {
            let mut m = Map::new();
            for (i, (name, kind)) in COLUMNS.iter().enumerate() {
                let Some(v) = cell(&batch, i, row) else {
                    continue;
                };
                let v = match (kind, v) {
                    (Kind::Json, Value::String(text)) => serde_json::from_str(&text).unwrap(),
                    (_, v) => v,
                };
                m.insert(name.to_string(), v);
            }
            if let Some(Value::String(text)) = cell(&batch, COLUMNS.len(), row) {
                let other: Map<String, Value> = serde_json::from_str(&text).unwrap();
                m.extend(other);
            }
            out.push(Value::Object(m));
        }
    }
    out
}

/// Builds Parquet files from `records` with `ParquetBuilder`; returns each file whole
/// and checks the pieces' protocol (a file's pieces but the last are full parts).
fn build(records: &[&str], file_limit: u64, part: usize) -> Vec<Vec<u8>> {
    let mut b = ParquetBuilder::new(file_limit, 64 << 20, part);
    let mut lines = Lines::default();
    for r in records {
        lines.push(r.as_bytes());
    }
    b.push_lines(&lines).unwrap();
    b.finish().unwrap();
    let mut files: Vec<Vec<u8>> = Vec::new();
    let mut current = Vec::new();
    for piece in b.pieces() {
        match piece {
            Piece::Data { index, bytes, last } => {
                assert_eq!(index as usize, files.len());
                assert!(last || bytes.len() >= part, "a part below the minimum");
                current.extend(bytes);
            }
            Piece::End(info) => {
                assert_eq!(info.compressed_bytes, current.len() as u64);
                files.push(std::mem::take(&mut current));
            }
        }
    }
    assert_eq!(b.chunks_closed() as usize, files.len());
    files
}

/// Typed columns hold typed values; objects and arrays their source text; anything
/// the columns cannot hold exactly is in otherFields with its source text, so every
/// field reads back.
#[test]
fn every_field_lands_in_a_column_or_other_fields() {
    let records = [
        // An ordinary record: escapes unescaped in string columns, kept in JSON text.
        r#"{"eventVersion":"1.08","userIdentity":{"type":"Root","arn":"a\u003db"},"eventTime":"2024-02-12T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"Get\u0026Put","readOnly":true,"managementEvent":false,"resources":[{"ARN":"x"}],"responseElements":null,"eventID":"e1"}"#,
        // Unexpected types, a nameless field, non-canonical and broken times.
        r#"{"eventID":"e2","readOnly":"true","eventName":42,"errorCode":null,"eventTime":"2024-02-12T11:00:00+01:00","brandNew":{"k":[1,2]},"big":123456789012345678901}"#,
        r#"{"eventID":"e3","eventTime":"yesterday","managementEvent":null}"#,
        r#"{"eventID":"e4","eventTime":"2024-02-12T10:00:00.123Z"}"#,
        // A name twice (the last counts when the JSON is read), an escaped key.
        r#"{"eventID":"e5","eventName":"First","eventName":"Second","even\u0074Source":"k"}"#,
        r#"{}"#,
    ];
    let files = build(&records, 256 << 20, 5 << 20);
    assert_eq!(files.len(), 1);
    let batch = &batches(&files[0])[0];
    let col = |name: &str| COLUMNS.iter().position(|c| c.0 == name).unwrap();
    let other = |row| cell(batch, COLUMNS.len(), row);
    let s = |v: &str| Some(Value::String(v.into()));

    assert_eq!(cell(batch, col("eventName"), 0), s("Get&Put"));
    assert_eq!(
        cell(batch, col("userIdentity"), 0),
        s(r#"{"type":"Root","arn":"a\u003db"}"#)
    );
    assert_eq!(cell(batch, col("resources"), 0), s(r#"[{"ARN":"x"}]"#));
    assert_eq!(cell(batch, col("responseElements"), 0), s("null"));
    assert_eq!(cell(batch, col("readOnly"), 0), Some(Value::Bool(true)));
    assert_eq!(
        cell(batch, col("managementEvent"), 0),
        Some(Value::Bool(false))
    );
    assert_eq!(cell(batch, col("eventTime"), 0), s("2024-02-12T10:00:00Z"));
    assert_eq!(cell(batch, col("errorCode"), 0), None);
    assert_eq!(other(0), None);

    assert_eq!(cell(batch, col("readOnly"), 1), None);
    assert_eq!(cell(batch, col("eventName"), 1), None);
    assert_eq!(cell(batch, col("errorCode"), 1), None);
    assert_eq!(cell(batch, col("eventTime"), 1), s("2024-02-12T10:00:00Z"));
    assert_eq!(
        other(1),
        s(
            r#"{"readOnly":"true","eventName":42,"errorCode":null,"eventTime":"2024-02-12T11:00:00+01:00","brandNew":{"k":[1,2]},"big":123456789012345678901}"#
        )
    );
    assert_eq!(cell(batch, col("eventTime"), 2), None);
    assert_eq!(
        other(2),
        s(r#"{"eventTime":"yesterday","managementEvent":null}"#)
    );
    assert_eq!(
        cell(batch, col("eventTime"), 3),
        s("2024-02-12T10:00:00.123Z")
    );
    assert_eq!(other(3), None);
    assert_eq!(cell(batch, col("eventName"), 4), s("First"));
    assert_eq!(cell(batch, col("eventSource"), 4), s("k"));
    assert_eq!(other(4), s(r#"{"eventName":"Second"}"#));
    assert_eq!(other(5), None);

    // Read back by the README's rule, each record is its source's value.
    let got = records_of(&files[0]);
    for (g, r) in got.iter().zip(records) {
        assert_eq!(g, &serde_json::from_str::<Value>(r).unwrap(), "{r}");
    }
    assert_eq!(got.len(), records.len());
}

/// Files close at the size bound — none more than one batch above it, none far
/// below it but the last — each a whole Parquet file; the same records give the same
/// bytes.
#[test]
fn files_close_at_their_size_and_repeat_byte_for_byte() {
    let recs: Vec<String> = (0..30_000)
        .map(|i| record("111111111111", "eu-west-1", i))
        .collect();
    let refs: Vec<&str> = recs.iter().map(String::as_str).collect();
    let limit = 1 << 20;
    let files = build(&refs, limit, 256 << 10);
    assert!(files.len() >= 2, "{} files", files.len());
    let mut n = 0;
    for (i, f) in files.iter().enumerate() {
        let size = f.len() as u64;
        assert!(size <= limit + BATCH_BYTES as u64, "file {i}: {size} bytes");
        // The writer's estimate counts the pages in progress uncompressed (up to ~1 MiB
        // per column): at a 1 MiB bound a file closes well below it, not at a batch.
        if i + 1 < files.len() {
            assert!(size >= limit / 8, "file {i}: {size} bytes");
        }
        let rows = records_of(f);
        for (g, r) in rows.iter().zip(&recs[n..]) {
            assert_eq!(g, &serde_json::from_str::<Value>(r).unwrap());
        }
        n += rows.len();
    }
    assert_eq!(n, recs.len());
    assert_eq!(build(&refs, limit, 256 << 10), files);
}

/// A day with real deliveries (the fixtures) and generated edge cases, in two accounts
/// and three regions.
async fn edge_day() -> (S3, Client, Vec<Expected>) {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let k = |account, region, n| log_key("AWSLogs/", account, region, DAY, n);
    let generated: Vec<String> = (0..300)
        .map(|i| record("111111111111", "eu-west-1", i))
        .collect();
    let odd = [
        r#"{"eventVersion":"1.09","eventTime":"2024-02-12T23:59:59Z","eventSource":"sts.amazonaws.com","eventName":"AssumeRole","readOnly":"true","eventID":"odd-1","newTopLevel":{"a":[1,{"b":null}]}}"#,
        r#"{"eventID":"odd-2","eventTime":"2024-02-12 10:00:00","eventName":null,"managementEvent":1,"tlsDetails":{"tlsVersion":"TLSv1.3"}}"#,
        r#"{"eventID":"odd-3","eventSource":"s3.amazonaws.com","eventName":"GetObject","eventTime":"2024-02-12T10:00:00.000001Z","additionalEventData":"text, not an object"}"#,
    ]
    .map(String::from);
    let files = vec![
        (
            k("111111111111", "eu-west-1", 0),
            gzip(&delivery(&generated)),
        ),
        (k("111111111111", "eu-west-1", 1), gzip(&delivery(&odd))),
        (
            k("111111111111", "us-east-1", 2),
            fixture("cloudtrail/SerializerTestFileCompact.json.gz"),
        ),
        (
            k("111111111111", "us-east-1", 3),
            fixture("cloudtrail/loki-cloudtrail-log-file.json.gz"),
        ),
        (
            k("222222222222", "us-east-1", 4),
            fixture("cloudtrail/SerializerAllFieldsNull.json"),
        ),
        (
            k("222222222222", "us-east-1", 5),
            fixture("cloudtrail/SerializerTestFileNewFieldsInRoot.json"),
        ),
        (
            k("222222222222", "us-east-1", 6),
            fixture("cloudtrail/ModifyInstanceAttribute.json"),
        ),
        (
            k("222222222222", "us-east-1", 7),
            gzip(&fixture("cloudtrail/DescribeEventAggregates.json")),
        ),
        (
            k("222222222222", "us-east-1", 8),
            fixture("cloudtrail/insights-example.json"),
        ),
    ];
    let mut sorted = files.clone();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (key, body) in &sorted {
        put(&s3, SRC, key, body.clone()).await;
    }
    let want = sorted.iter().flat_map(|(_, b)| expected_lines(b)).collect();
    (server, s3, want)
}

/// The chunk keys under `folder` and their bytes, in key order (not the manifest).
async fn chunks_in(s3: &Client, folder: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in keys(s3, DST, folder).await {
        if !key[folder.len()..].starts_with('_') {
            let body = get(s3, DST, &key).await.unwrap();
            out.push((key, body));
        }
    }
    out
}

/// A day written as Parquet holds every record of the sources, in order, every field
/// equal to the source's (JSON text columns byte for byte as in the NDJSON output);
/// the manifest names the format and exactly the files; a rerun writes the same bytes.
#[tokio::test]
async fn a_parquet_day_reads_back_field_by_field() {
    let (_server, s3, want) = edge_day().await;
    let ndjson_cfg = config(&[("DST_PREFIX", "ndjson/")]);
    aggregate_day(&s3, &ndjson_cfg, day(), RunOptions::default())
        .await
        .unwrap();
    let lines: Vec<u8> = chunks_in(&s3, "ndjson/2024/02/12/")
        .await
        .into_iter()
        .flat_map(|(_, b)| gunzip(&b))
        .collect();
    assert_lines(&lines, &want);
    let lines: Vec<&str> = std::str::from_utf8(&lines).unwrap().lines().collect();

    let cfg = config(&[("OUTPUT_FORMAT", "parquet"), ("DST_PREFIX", "pq/")]);
    let summary = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    let files = chunks_in(&s3, "pq/2024/02/12/").await;
    assert_eq!(
        files.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        ["pq/2024/02/12/000000.parquet"]
    );
    let m = &summary.manifest;
    assert_eq!(m.records, want.len() as u64);
    assert_eq!(m.chunks[0].key, files[0].0);
    assert_eq!(m.chunks[0].bytes, files[0].1.len() as u64);
    let manifest: Value =
        serde_json::from_slice(&get(&s3, DST, "pq/2024/02/12/_manifest.json").await.unwrap())
            .unwrap();
    assert_eq!(manifest["format"], "parquet");

    let got = records_of(&files[0].1);
    assert_eq!(got.len(), lines.len());
    let batches = batches(&files[0].1);
    let mut row_of =
        (0..batches.len()).flat_map(|b| (0..batches[b].num_rows()).map(move |r| (b, r)));
    for (i, (g, line)) in got.iter().zip(&lines).enumerate() {
        assert_eq!(
            g,
            &serde_json::from_str::<Value>(line).unwrap(),
            "record {i}"
        );
        // JSON text columns hold the very bytes of the NDJSON record.
        let raw: HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_str(line).unwrap();
        let (b, r) = row_of.next().unwrap();
        for (c, (name, kind)) in COLUMNS.iter().enumerate() {
            if let (Kind::Json, Some(Value::String(text))) = (kind, cell(&batches[b], c, r)) {
                assert_eq!(text, raw[*name].get(), "record {i} {name}");
            }
        }
    }

    aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(chunks_in(&s3, "pq/2024/02/12/").await, files, "rerun");
}

/// A day rewritten in the other format keeps only the new format's files.
#[tokio::test]
async fn switching_format_replaces_the_days_files() {
    let (_server, s3, want) = edge_day().await;
    let small = config(&[("CHUNK_SIZE_BYTES", "20000")]);
    aggregate_day(&s3, &small, day(), RunOptions::default())
        .await
        .unwrap();
    let folder = "cloudtrail-daily/2024/02/12/";
    assert!(chunks_in(&s3, folder).await.len() > 3);
    let parquet = config(&[("OUTPUT_FORMAT", "parquet")]);
    let summary = aggregate_day(&s3, &parquet, day(), RunOptions::default())
        .await
        .unwrap();
    let now = chunks_in(&s3, folder).await;
    assert_eq!(
        now.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(),
        [format!("{folder}000000.parquet")]
    );
    assert!(summary.stale_chunks_deleted.len() > 3);
    assert_eq!(records_of(&now[0].1).len(), want.len());
    aggregate_day(&s3, &small, day(), RunOptions::default())
        .await
        .unwrap();
    common::assert_day_whole(&s3, DST, folder, &want).await;
}

/// A Python with DuckDB: `DUCKDB_PYTHON`, or `.ci/.venv` (CI installs DuckDB there),
/// or a venv made once under `target/` with `pip install duckdb`. Never skipped: no
/// DuckDB fails the test, saying how to get one.
fn duckdb_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let has_duckdb = |py: &Path| {
            std::process::Command::new(py)
                .args(["-c", "import duckdb"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let mut candidates: Vec<PathBuf> = std::env::var_os("DUCKDB_PYTHON")
            .map(PathBuf::from)
            .into_iter()
            .collect();
        candidates.push(root.join(".ci/.venv/bin/python"));
        let venv = root.join("target/duckdb-venv");
        candidates.push(venv.join("bin/python"));
        if let Some(py) = candidates.iter().find(|p| has_duckdb(p)) {
            return py.clone();
        }
        let run = |cmd: &mut std::process::Command| {
            let out = cmd.output().expect("run python3");
            assert!(
                out.status.success(),
                "making a venv with DuckDB failed ({cmd:?}): {}\nset DUCKDB_PYTHON to a Python that can `import duckdb`",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "duckdb",
        ]));
        venv.join("bin/python")
    })
    .clone()
}

/// DuckDB reads the Parquet day: the row count, the eventID multiset and every field
/// of every record equal the sources (read from the NDJSON day by Python's json),
/// `eventTime` is a TIMESTAMP WITH TIME ZONE, and `GROUP BY eventSource, eventName`
/// gives the same counts over both formats.
#[tokio::test]
async fn duckdb_reads_the_parquet_day_as_the_sources() {
    let (server, s3, want) = edge_day().await;
    for (format, prefix) in [("ndjson", "ndjson/"), ("parquet", "pq/")] {
        let cfg = config(&[("OUTPUT_FORMAT", format), ("DST_PREFIX", prefix)]);
        aggregate_day(&s3, &cfg, day(), RunOptions::default())
            .await
            .unwrap();
    }
    // s3s-fs keeps each object as a file under its root: DuckDB reads them there.
    let dst = server.root.join(DST);
    let out = std::process::Command::new(duckdb_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/duckdb_check.py"))
        .arg(dst.join("ndjson/2024/02/12"))
        .arg(dst.join("pq/2024/02/12"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let equal = format!("records equal: {}\n", want.len());
    assert!(text.contains(&equal), "{text}");
}
