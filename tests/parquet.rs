//! `OUTPUT_FORMAT=parquet`: the columns of AWS's CloudTrail table and the rules that keep
//! every field (otherfields), files bounded by size, byte-identical reruns, and whole
//! days over the real S3 protocol server (s3s-fs in-process), read back field by field by
//! the parquet crate as the module doc of `parquet_chunks` says. (DuckDB reads the same
//! days with the query suite, `scripts/query_suite.py`, in `.ci/run`.)

mod common;

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use aws_sdk_s3::Client;
use cloudtrail_aggregator::chunks::{Build, Lines, Piece};
use cloudtrail_aggregator::parquet_chunks::{ParquetBuilder, BATCH_BYTES};
use cloudtrail_aggregator::table::{Col, Kind, COLUMNS, EVENTTIME_TS, OTHER_FIELDS};
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

/// A value of column `kind` in `a` at `i`, read back (`None` for SQL null): a string;
/// `'true'`/`'false'` as booleans; JSON text parsed; structs as objects of their non-null
/// fields under CloudTrail's keys; lists and maps as arrays and objects.
fn read_value(kind: Kind, a: &dyn Array, i: usize) -> Option<Value> {
    if a.is_null(i) {
        return None;
    }
    Some(match kind {
        Kind::Str => Value::String(a.as_string::<i32>().value(i).to_string()),
        Kind::BoolText => match a.as_string::<i32>().value(i) {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_string()),
        },
        Kind::Json => {
            let text = a.as_string::<i32>().value(i);
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
        }
        Kind::Struct(cols) => {
            let s = a.as_struct();
            Value::Object(object_of(cols, s.columns(), i))
        }
        Kind::ListOf(cols) => {
            let list = a.as_list::<i32>().value(i);
            let items = list.as_struct();
            Value::Array(
                (0..items.len())
                    .map(|j| read_value(Kind::Struct(cols), items, j).unwrap_or(Value::Null))
                    .collect(),
            )
        }
        Kind::MapStr => {
            let m = a.as_map().value(i);
            let (k, v) = (m.column(0).as_string::<i32>(), m.column(1));
            let mut out = Map::new();
            for j in 0..m.len() {
                let value = read_value(Kind::Str, v.as_ref(), j).unwrap_or(Value::Null);
                out.insert(k.value(j).to_string(), value);
            }
            Value::Object(out)
        }
    })
}

/// The non-null fields `cols` of row `i`, under CloudTrail's keys.
fn object_of(cols: &[Col], arrays: &[arrow_array::ArrayRef], i: usize) -> Map<String, Value> {
    let mut m = Map::new();
    for (c, a) in cols.iter().zip(arrays) {
        if let Some(v) = read_value(c.kind, a.as_ref(), i) {
            m.insert(c.key.to_string(), v);
        }
    }
    m
}

/// `over` merged into `base`: an object into an object key by key, recursively;
/// anything else replacing.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The records of a Parquet file read back as `parquet_chunks` documents: the non-null
/// columns, then otherfields merged over them.
fn records_of(file: &[u8]) -> Vec<Value> {
    let mut out = Vec::new();
    for batch in batches(file) {
        let schema = batch.schema();
        assert_eq!(batch.num_columns(), COLUMNS.len() + 2);
        assert_eq!(schema.field(COLUMNS.len()).name(), EVENTTIME_TS);
        assert_eq!(schema.field(COLUMNS.len() + 1).name(), OTHER_FIELDS);
        assert!(matches!(
            schema.field(COLUMNS.len()).data_type(),
            DataType::Timestamp(..)
        ));
        for row in 0..batch.num_rows() {
            let mut record =
                Value::Object(object_of(COLUMNS, &batch.columns()[..COLUMNS.len()], row));
            let other = batch.column(COLUMNS.len() + 1);
            if !other.is_null(row) {
                let text = other.as_string::<i32>().value(row);
                merge(&mut record, serde_json::from_str(text).unwrap());
            }
            out.push(record);
        }
    }
    out
}

/// What a source record reads back as: its value, without the JSON nulls of columns and
/// struct fields (Parquet, like the JSON SerDe, does not tell them from absent keys).
fn expected(source: &str) -> Value {
    fn fits(items: &[Value], cols: &[Col]) -> bool {
        items.iter().all(|e| {
            e.as_object().is_some_and(|o| {
                o.iter().all(|(k, v)| {
                    cols.iter()
                        .any(|c| c.key == k && matches!(c.kind, Kind::Str))
                        && (v.is_string() || v.is_null())
                })
            })
        })
    }
    fn strip(v: &mut Value, cols: &[Col]) {
        let Some(obj) = v.as_object_mut() else { return };
        for c in cols {
            let null = obj.get(c.key).is_some_and(Value::is_null);
            if null {
                obj.remove(c.key);
                continue;
            }
            match (c.kind, obj.get_mut(c.key)) {
                (Kind::Struct(sub), Some(x)) => strip(x, sub),
                (Kind::ListOf(sub), Some(Value::Array(items))) if fits(items, sub) => {
                    items.iter_mut().for_each(|e| strip(e, sub))
                }
                _ => {}
            }
        }
    }
    let mut v: Value = serde_json::from_str(source).unwrap();
    strip(&mut v, COLUMNS);
    v
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

/// Every part of every record reads back, from its column or from otherfields: nested
/// fields the table does not name, values of other types, a name given twice, escapes,
/// big numbers, JSON nulls (as absent), and what the columns hold for them.
#[test]
fn every_field_lands_in_a_column_or_other_fields() {
    let records = [
        r#"{"eventVersion":"1.08","userIdentity":{"type":"Root","arn":"a\u003db","invokedBy":null,"sessionContext":{"sessionIssuer":{"userName":"u","x":null},"sourceIdentity":"s"}},"eventTime":"2024-02-12T10:00:00Z","eventSource":"s3.amazonaws.com","eventName":"Get\u0026Put","readOnly":true,"managementEvent":false,"resources":[{"ARN":"x","type":null}],"responseElements":null,"requestParameters":{"k":null,"n":1.50,"s":"a\u003cb"},"eventID":"e1"}"#,
        r#"{"eventID":"e2","readOnly":"true","eventName":42,"errorCode":null,"eventTime":"2024-02-12T11:00:00+01:00","brandNew":{"k":[1,2]},"big":123456789012345678901}"#,
        r#"{"eventID":"e3","eventTime":"yesterday","managementEvent":null,"resources":[{"ARN":"a","arnPrefix":"p","type":null},"s"],"tlsDetails":{"tlsVersion":"TLSv1.3","extra":{"a":1}}}"#,
        r#"{"eventID":"e4","eventTime":"2024-02-12T10:00:00.123Z","userIdentity":{"sessionContext":{"webIdFederationData":{"federatedProvider":"p","attributes":{"a":"b","n":3,"z":null}}}}}"#,
        r#"{"eventID":"e5","eventName":"First","eventName":"Second","even\u0074Source":"k","additionalEventData":"text"}"#,
        r#"{"userIdentity":"not an object","resources":{"ARN":"x"},"addendum":null}"#,
        r#"{}"#,
    ];
    let files = build(&records, 256 << 20, 5 << 20);
    assert_eq!(files.len(), 1);
    let got = records_of(&files[0]);
    assert_eq!(got.len(), records.len());
    for (g, r) in got.iter().zip(records) {
        assert_eq!(g, &expected(r), "{r}");
    }
    // What the columns themselves hold, as a query sees them.
    let batch = &batches(&files[0])[0];
    let col = |name: &str| batch.column_by_name(name).unwrap().clone();
    let text = |name: &str, row: usize| {
        let c = col(name);
        (!c.is_null(row)).then(|| c.as_string::<i32>().value(row).to_string())
    };
    assert_eq!(text("eventname", 0).as_deref(), Some("Get&Put"));
    assert_eq!(text("readonly", 0).as_deref(), Some("true"));
    assert_eq!(text("managementevent", 0).as_deref(), Some("false"));
    assert_eq!(text("responseelements", 0), None, "JSON null is SQL NULL");
    assert_eq!(
        text("requestparameters", 0).as_deref(),
        Some(r#"{"k":null,"n":1.5,"s":"a<b"}"#)
    );
    assert_eq!(text("readonly", 1).as_deref(), Some("true"));
    assert_eq!(text("eventname", 1).as_deref(), Some("42"));
    assert_eq!(text("eventname", 4).as_deref(), Some("First"));
    assert_eq!(text("eventsource", 4).as_deref(), Some("k"));
    assert_eq!(
        text(OTHER_FIELDS, 0).as_deref(),
        Some(
            r#"{"userIdentity":{"sessionContext":{"sessionIssuer":{"x":null},"sourceIdentity":"s"}}}"#
        )
    );
    assert_eq!(text(OTHER_FIELDS, 6), None);
    let ts = col(EVENTTIME_TS);
    let ts = ts.as_primitive::<arrow_array::types::TimestampMicrosecondType>();
    assert_eq!(ts.value(1), 1_707_732_000_000_000, "11:00+01:00 is 10:00Z");
    assert!(ts.is_null(2), "an eventTime that is no time");
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
            assert_eq!(g, &expected(r));
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
    for (i, (g, line)) in got.iter().zip(&lines).enumerate() {
        assert_eq!(g, &expected(line), "record {i}");
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
