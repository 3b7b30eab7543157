//! The day pipeline end to end against a real S3 protocol server (s3s-fs in-process).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_s3::Client;
use cloudtrail_aggregator::source::{FETCH_BUDGET, STREAM_THRESHOLD};
use cloudtrail_aggregator::{aggregate_day, Config, Day, Error, RunOptions, Summary};
use common::*;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";
const DAY: &str = "2024/02/12";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

fn config(chunk: u64) -> Config {
    let map: HashMap<String, String> = [
        ("SRC_BUCKET", SRC),
        ("SRC_PREFIX", "AWSLogs/"),
        ("DST_BUCKET", DST),
        ("DST_PREFIX", "cloudtrail-daily/"),
        ("CHUNK_SIZE_BYTES", &chunk.to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Config::from_map(&map).unwrap()
}

async fn setup() -> (S3, Client) {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    (server, s3)
}

/// The day's chunk keys and their concatenated NDJSON.
async fn output(s3: &Client) -> (Vec<String>, Vec<u8>) {
    let keys: Vec<String> = keys(s3, DST, "cloudtrail-daily/2024/02/12/")
        .await
        .into_iter()
        .filter(|k| k.ends_with(".ndjson.gz"))
        .collect();
    let mut all = Vec::new();
    for k in &keys {
        all.extend(gunzip(&get(s3, DST, k).await.unwrap()));
    }
    (keys, all)
}

/// Puts `files` and returns the records the output must hold, in sorted-key order.
async fn put_files(s3: &Client, files: &[(String, Vec<u8>)]) -> Vec<Expected> {
    for (k, body) in files {
        put(s3, SRC, k, body.clone()).await;
    }
    let mut sorted: Vec<&(String, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted.iter().flat_map(|(_, b)| expected_lines(b)).collect()
}

/// A recording server (see `S3::recording`) holding both buckets and `files`, its
/// record of those puts cleared; with a client and the records the output must hold.
async fn recorded(
    owner: Option<&str>,
    files: &[(String, Vec<u8>)],
) -> (S3, Seen, Client, Vec<Expected>) {
    let (server, seen) = S3::recording(owner);
    let plain = server.client();
    create_bucket(&plain, SRC).await;
    create_bucket(&plain, DST).await;
    let want = put_files(&plain, files).await;
    seen.lock().unwrap().clear();
    (server, seen, plain, want)
}

/// Aggregates the day from `server` with a client built as the binaries build it.
async fn run_day(server: &S3, cfg: &Config) -> Result<Summary, Error> {
    let s3 = cloudtrail_aggregator::aws::s3_client(&server.sdk_config(), cfg);
    aggregate_day(&s3, cfg, day(), RunOptions::default()).await
}

fn generated(
    prefix: &str,
    account: &str,
    region: &str,
    files: usize,
    per_file: usize,
) -> Vec<(String, Vec<u8>)> {
    (0..files)
        .map(|n| {
            let recs: Vec<String> = (0..per_file)
                .map(|i| record(account, region, n * 100 + i))
                .collect();
            (
                log_key(prefix, account, region, DAY, n),
                gzip(&delivery(&recs)),
            )
        })
        .collect()
}

/// An organisation trail and a single-account trail in one bucket are both read; Digest,
/// Insight, other-day and non-account folders are not; records come out byte for byte
/// in key order; the manifest counts them.
#[tokio::test]
async fn org_and_single_account_layouts_in_one_bucket() {
    let (_server, s3) = setup().await;
    let mut files = generated("AWSLogs/o-abc123def4/", "111111111111", "us-east-1", 3, 4);
    files.extend(generated(
        "AWSLogs/o-abc123def4/",
        "333333333333",
        "eu-west-1",
        2,
        2,
    ));
    files.extend(generated(
        "AWSLogs/",
        "222222222222",
        "ap-southeast-2",
        2,
        3,
    ));
    // Real deliveries from the fixtures, in two more regions.
    files.push((
        log_key(
            "AWSLogs/o-abc123def4/",
            "111111111111",
            "eu-central-1",
            DAY,
            1,
        ),
        fixture("cloudtrail/SerializerTestFileCompact.json.gz"),
    ));
    files.push((
        log_key("AWSLogs/", "222222222222", "eu-west-3", DAY, 2),
        fixture("cloudtrail/loki-cloudtrail-log-file.json.gz"),
    ));
    let want = put_files(&s3, &files).await;

    // Things that must not be read: each would fail the run if it were.
    let not_json = b"this is not a CloudTrail file".to_vec();
    for key in [
        "AWSLogs/o-abc123def4/111111111111/CloudTrail-Digest/us-east-1/2024/02/12/111111111111_CloudTrail-Digest_us-east-1_x_20240212T000000Z.json.gz".to_string(),
        "AWSLogs/222222222222/CloudTrail-Insight/ap-southeast-2/2024/02/12/222222222222_CloudTrail-Insight_x.json.gz".to_string(),
        log_key("AWSLogs/", "222222222222", "ap-southeast-2", "2024/02/11", 9),
        log_key("AWSLogs/", "222222222222", "ap-southeast-2", "2024/02/13", 9),
        "AWSLogs/o-abc123def4/not-an-account/CloudTrail/us-east-1/2024/02/12/x.json.gz".to_string(),
        "AWSLogs/12345/CloudTrail/us-east-1/2024/02/12/x.json.gz".to_string(),
        "AWSLogs/222222222222/CloudTrail/ap-southeast-2/2024/02/12/nested/x.json.gz".to_string(),
        "AWSLogs/222222222222/CloudTrail/ap-southeast-2/2024/02/120/x.json.gz".to_string(),
        "elsewhere/222222222222/CloudTrail/ap-southeast-2/2024/02/12/x.json.gz".to_string(),
    ] {
        put(&s3, SRC, &key, not_json.clone()).await;
    }
    put(
        &s3,
        SRC,
        "AWSLogs/222222222222/CloudTrail-Insight/ap-southeast-2/2024/02/12/insight.json",
        fixture("cloudtrail/insights-example.json"),
    )
    .await;

    let summary = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap();
    let (chunk_keys, ndjson) = output(&s3).await;
    assert_eq!(
        chunk_keys,
        vec!["cloudtrail-daily/2024/02/12/000000.ndjson.gz"]
    );
    assert_lines(&ndjson, &want);
    assert_eq!(summary.manifest.source_files, files.len() as u64);
    assert_eq!(summary.manifest.records, want.len() as u64);
    let source_bytes: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(summary.manifest.bytes_read, source_bytes);

    let manifest: serde_json::Value = serde_json::from_slice(
        &get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["date"], "2024-02-12");
    assert_eq!(manifest["source_files"], files.len());
    assert_eq!(manifest["records"], want.len());
    assert_eq!(manifest["chunks"][0]["key"], chunk_keys[0]);
    assert_eq!(manifest["chunks"][0]["records"], want.len());
    assert_eq!(manifest["chunks"][0]["uncompressed_bytes"], ndjson.len());
    assert_eq!(manifest["uncompressed_bytes_written"], ndjson.len());
}

/// SRC_PREFIX may point straight at an organisation folder or at one account's folder.
#[tokio::test]
async fn source_prefix_at_the_organisation() {
    let (_server, s3) = setup().await;
    let files = generated("AWSLogs/o-abc123def4/", "111111111111", "us-east-1", 2, 2);
    let want = put_files(&s3, &files).await;
    put(
        &s3,
        SRC,
        &log_key("AWSLogs/", "222222222222", "us-east-1", DAY, 0),
        gzip(&delivery(&[record("222222222222", "us-east-1", 0)])),
    )
    .await;
    let mut cfg = config(64 << 20);
    cfg.src_prefix = "AWSLogs/o-abc123def4/".into();
    aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    assert_lines(&output(&s3).await.1, &want);
    // ... or at one account's folder.
    cfg.src_prefix = "AWSLogs/222222222222/".into();
    aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    let one = gzip(&delivery(&[record("222222222222", "us-east-1", 0)]));
    assert_lines(&output(&s3).await.1, &expected_lines(&one));
}

/// Listings follow continuation tokens: more than 1,000 account folders (CommonPrefixes
/// count against the page size) and more than 1,000 files in one day folder.
#[tokio::test]
async fn pagination_over_1000_prefixes_and_files() {
    let (_server, s3) = setup().await;
    let mut files = Vec::new();
    for a in 0..1005 {
        let account = format!("{:012}", 100_000_000_000u64 + a);
        // Only a few accounts have a delivery for the day; all have the folder tree.
        let recs = vec![record(&account, "us-east-1", a as usize)];
        if a % 250 == 0 || a == 1004 {
            files.push((
                log_key("AWSLogs/", &account, "us-east-1", DAY, 0),
                gzip(&delivery(&recs)),
            ));
        } else {
            put(
                &s3,
                SRC,
                &log_key("AWSLogs/", &account, "us-east-1", "2024/02/11", 0),
                gzip(&delivery(&recs)),
            )
            .await;
        }
    }
    files.extend(generated("AWSLogs/", "999999999999", "us-west-2", 1050, 1));
    let want = put_files(&s3, &files).await;
    let summary = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.manifest.source_files, 6 + 1050);
    assert_lines(&output(&s3).await.1, &want);
}

/// Plain, gzip, multi-member gzip and pretty-printed inputs all aggregate; escaped
/// newlines and non-ASCII text survive byte for byte.
#[tokio::test]
async fn input_encodings() {
    let (_server, s3) = setup().await;
    let recs: Vec<String> = (0..5)
        .map(|i| record("111111111111", "us-east-1", i))
        .collect();
    let body = delivery(&recs);
    let mut multi = gzip(&body[..body.len() / 3]);
    multi.extend(gzip(&body[body.len() / 3..]));
    let k = |n| log_key("AWSLogs/", "111111111111", "us-east-1", DAY, n);
    let mut plain_key = k(1);
    plain_key.truncate(plain_key.len() - 3); // ".json", plain
    let files = vec![
        (k(0), gzip(&body)),
        (plain_key, body.clone()),
        (k(2), multi),
        // Named .json.gz but plain: the magic bytes decide.
        (k(3), body.clone()),
        (k(4), fixture("cloudtrail/ModifyInstanceAttribute.json")),
        (
            k(5),
            gzip(&fixture("cloudtrail/DescribeEventAggregates.json")),
        ),
        (k(6), fixture("cloudtrail/SerializerAllFieldsNull.json")),
        (
            k(7),
            fixture("cloudtrail/SerializerTestFileNewFieldsInRoot.json"),
        ),
        (k(8), b"{\"Records\":[]}".to_vec()),
    ];
    let want = put_files(&s3, &files).await;
    aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap();
    let (_, ndjson) = output(&s3).await;
    assert_lines(&ndjson, &want);
    // The escapes of the generated records are in the output as they were in the source.
    let text = String::from_utf8(ndjson).unwrap();
    assert!(text.contains(r#""policyDocument":"{\n  \"Version\": \"2012-10-17\"\n}""#));
    assert!(text.contains("Zoë \\u0026 東京 3"));
    assert!(text.contains("m\\u003dx"));
}

/// A small CHUNK_SIZE_BYTES rolls over into numbered chunks, each within the bound,
/// together holding every record in order.
#[tokio::test]
async fn chunk_roll_over() {
    let (_server, s3) = setup().await;
    let files = generated("AWSLogs/", "111111111111", "us-east-1", 10, 7);
    let want = put_files(&s3, &files).await;
    let bound = 4000;
    let summary = aggregate_day(&s3, &config(bound), day(), RunOptions::default())
        .await
        .unwrap();
    let (keys, ndjson) = output(&s3).await;
    assert!(keys.len() > 5, "{keys:?}");
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(k, &format!("cloudtrail-daily/2024/02/12/{i:06}.ndjson.gz"));
        let body = gunzip(&get(&s3, DST, k).await.unwrap());
        assert!(body.len() as u64 <= bound, "{k}: {}", body.len());
        assert_eq!(
            summary.manifest.chunks[i].uncompressed_bytes,
            body.len() as u64
        );
    }
    assert_lines(&ndjson, &want);
}

/// A rerun writes byte-identical objects; a rerun that writes fewer chunks deletes the
/// stale higher-numbered ones and nothing else.
#[tokio::test]
async fn rerun_is_identical_and_removes_stale_chunks() {
    let (_server, s3) = setup().await;
    let files = generated("AWSLogs/", "111111111111", "us-east-1", 10, 7);
    let want = put_files(&s3, &files).await;
    put(
        &s3,
        DST,
        "cloudtrail-daily/2024/02/12/README.txt",
        "keep me",
    )
    .await;
    put(
        &s3,
        DST,
        "cloudtrail-daily/2024/02/13/000009.ndjson.gz",
        "other day",
    )
    .await;

    async fn snapshot(s3: &Client) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for k in keys(s3, DST, "").await {
            let body = get(s3, DST, &k).await.unwrap();
            out.push((k, body));
        }
        without_end_times(out)
    }
    aggregate_day(&s3, &config(4000), day(), RunOptions::default())
        .await
        .unwrap();
    let first = snapshot(&s3).await;
    aggregate_day(&s3, &config(4000), day(), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(
        snapshot(&s3).await,
        first,
        "a rerun must write the same bytes"
    );

    let summary = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap();
    assert!(summary.stale_chunks_deleted.len() > 3);
    let all = keys(&s3, DST, "").await;
    assert_eq!(
        all,
        vec![
            "cloudtrail-daily/2024/02/12/000000.ndjson.gz",
            "cloudtrail-daily/2024/02/12/README.txt",
            "cloudtrail-daily/2024/02/12/_manifest.json",
            "cloudtrail-daily/2024/02/13/000009.ndjson.gz",
        ]
    );
    assert_lines(&output(&s3).await.1, &want);
}

/// A day without files writes no chunk, removes stale ones and writes a zero manifest.
#[tokio::test]
async fn empty_day() {
    let (_server, s3) = setup().await;
    put(
        &s3,
        DST,
        "cloudtrail-daily/2024/02/12/000000.ndjson.gz",
        "stale",
    )
    .await;
    put(
        &s3,
        DST,
        "cloudtrail-daily/2024/02/12/000001.ndjson.gz",
        "stale",
    )
    .await;
    put(
        &s3,
        SRC,
        &log_key("AWSLogs/", "111111111111", "us-east-1", "2024/02/11", 0),
        gzip(&delivery(&[record("111111111111", "us-east-1", 1)])),
    )
    .await;
    let summary = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.manifest.source_files, 0);
    assert_eq!(summary.manifest.records, 0);
    assert!(summary.manifest.chunks.is_empty());
    assert_eq!(
        keys(&s3, DST, "").await,
        vec!["cloudtrail-daily/2024/02/12/_manifest.json"]
    );
    let m: serde_json::Value = serde_json::from_slice(
        &get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json")
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m["records"], 0);
    assert_eq!(m["chunks"], serde_json::json!([]));
}

/// Each bad input fails the day with an error naming s3://bucket/key and what is
/// wrong; the day gets no manifest, so nothing claims success.
#[tokio::test]
async fn bad_inputs_fail_the_day_naming_the_object() {
    let good = gzip(&delivery(&[record("111111111111", "us-east-1", 1)]));
    let mut corrupt = good.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid..mid + 8].copy_from_slice(b"garbage!");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bare array", b"[{\"eventName\":\"x\"}]".to_vec(), "expected a JSON object with a Records array"),
        ("digest", gzip(b"{\"awsAccountId\":\"111111111111\",\"digestStartTime\":\"2024-02-12T00:00:00Z\",\"logFiles\":[]}"), "no Records array"),
        ("malformed", fixture("cloudtrail/SerializerTestFileBadJsonFormat.json"), "not valid JSON"),
        ("truncated", good[..good.len() - 12].to_vec(), "corrupt gzip"),
        ("truncated json", b"{\"Records\":[{\"a\":1},".to_vec(), "truncated"),
        ("corrupt gzip", corrupt, "corrupt gzip"),
        ("empty object", Vec::new(), "empty"),
    ];
    for (what, body, reason) in cases {
        let (_server, s3) = setup().await;
        let ok_key = log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 0);
        let bad_key = log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 1);
        put(&s3, SRC, &ok_key, good.clone()).await;
        put(&s3, SRC, &bad_key, body).await;
        // A manifest of an earlier, good run must not survive a failed rerun.
        put(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json", "{}").await;
        let err = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Records { .. }), "{what}: {err:?}");
        assert!(
            msg.contains(&format!("s3://{SRC}/{bad_key}")),
            "{what}: {msg}"
        );
        assert!(msg.contains(reason), "{what}: {msg} should say {reason:?}");
        assert_eq!(
            get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json").await,
            None,
            "{what}"
        );
    }
}

/// A missing source bucket is an error naming the operation and the bucket.
#[tokio::test]
async fn missing_bucket_is_named() {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, DST).await;
    let err = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ListObjectsV2 s3://cloudtrail-logs/AWSLogs/ failed"),
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
}

/// A deadline already passed stops the run with how far it got, and writes no manifest.
#[tokio::test]
async fn deadline_stops_cleanly() {
    let (_server, s3) = setup().await;
    put_files(
        &s3,
        &generated("AWSLogs/", "111111111111", "us-east-1", 3, 1),
    )
    .await;
    let opts = RunOptions {
        deadline: Some(std::time::Instant::now()),
        ..RunOptions::default()
    };
    let err = aggregate_day(&s3, &config(64 << 20), day(), opts)
        .await
        .unwrap_err();
    // It stops before the first read: the folders are known, their files not yet.
    assert!(
        matches!(
            err,
            Error::Deadline {
                files_done: 0,
                listing_complete: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("with 0 of at least 0 (listing unfinished) source files read"),
        "{err}"
    );
    assert_eq!(
        get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json").await,
        None
    );
}

/// `n` hard-to-compress records of ~8 KB each (they gzip to about half).
fn noisy_records(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..n)
        .map(|i| {
            let noise: String = (0..500)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    format!("{:016x}", x)
                })
                .collect();
            format!("{{\"eventID\":\"{i}\",\"responseElements\":{{\"blob\":\"{noise}\"}}}}")
        })
        .collect()
}

/// A source object larger than the streaming threshold is streamed through the scanner,
/// and a chunk larger than one upload part goes up as a multipart upload; the bytes
/// are the same as ever. (Current-thread runtime, as in the binaries: the scanner
/// thread reads the stream while the runtime's one thread drives the I/O.)
#[tokio::test]
async fn large_file_streams_and_large_chunk_uploads_in_parts() {
    let (_server, s3) = setup().await;
    // ~20 MB of NDJSON that gzips to ~10 MB.
    let body = gzip(&delivery(&noisy_records(2500)));
    assert!(body.len() as u64 > STREAM_THRESHOLD);
    let small = gzip(&delivery(&[record("111111111111", "us-east-1", 1)]));
    let files = vec![
        (
            log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 1),
            body,
        ),
        (
            log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 2),
            small,
        ),
    ];
    let want = put_files(&s3, &files).await;
    let summary = aggregate_day(&s3, &config(64 << 20), day(), RunOptions::default())
        .await
        .unwrap();
    let (keys, ndjson) = output(&s3).await;
    assert_eq!(keys.len(), 1);
    let stored = get(&s3, DST, &keys[0]).await.unwrap();
    assert!(
        stored.len() > cloudtrail_aggregator::shard::UPLOAD_PART_BYTES,
        "the chunk must need more than one part"
    );
    assert_eq!(summary.manifest.chunks[0].bytes, stored.len() as u64);
    assert_eq!(
        summary.manifest.bytes_read,
        files.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
    );
    assert_lines(&ndjson, &want);
}

/// A chunk goes up in parts, and a run that fails mid-chunk on a bad source file (a
/// part already uploaded) aborts its multipart upload, leaving no part on the server.
#[tokio::test]
async fn a_run_failed_mid_chunk_leaves_no_upload() {
    let cfg = config(64 << 20);
    // ~13 MB of NDJSON that gzips to ~6.5 MB: two parts.
    let big = gzip(&delivery(&noisy_records(1600)));
    let big_key = log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 1);
    let bad_key = log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 2);

    let (_server, s3) = setup().await;
    let want = put_files(&s3, &[(big_key.clone(), big.clone())]).await;
    let summary = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    assert!(
        summary.manifest.bytes_written > cloudtrail_aggregator::shard::UPLOAD_PART_BYTES as u64
    );
    assert_lines(&output(&s3).await.1, &want);

    // ~24 MB of NDJSON (~12 MB of gzip) before the bad file: the records stage is at
    // most a few blocks of lines ahead of the chunks stage, so by the time it fails the
    // first part is uploading or stored.
    let (server, s3) = setup().await;
    put(&s3, SRC, &big_key, gzip(&delivery(&noisy_records(3000)))).await;
    put(&s3, SRC, &bad_key, b"not gzip, not JSON".to_vec()).await;
    let err = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!("s3://{SRC}/{bad_key}")),
        "{err}"
    );
    assert_eq!(
        upload_files(&server.root),
        Vec::<String>::new(),
        "no unfinished upload"
    );
    assert_eq!(
        get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json").await,
        None
    );
}

/// The files s3s-fs keeps for unfinished multipart uploads (parts and metadata).
fn upload_files(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                dirs.push(path);
            } else if name.contains("upload") {
                found.push(name);
            }
        }
    }
    found
}

/// EXPECTED_BUCKET_OWNER puts `x-amz-expected-bucket-owner` on every S3 request the
/// aggregation makes; a bucket of another owner is refused and the error names it.
#[tokio::test]
async fn expected_bucket_owner_is_sent_on_every_request() {
    let files = generated("AWSLogs/", "111111111111", "us-east-1", 3, 2);
    let (server, seen, plain, want) = recorded(Some("111122223333"), &files).await;

    let mut cfg = config(64 << 20);
    cfg.expected_bucket_owner = Some("111122223333".into());
    run_day(&server, &cfg).await.unwrap();
    let requests = std::mem::take(&mut *seen.lock().unwrap());
    assert!(requests.len() >= 3 + 3 + 2, "{requests:?}");
    for r in &requests {
        assert_eq!(r.owner.as_deref(), Some("111122223333"), "{r:?}");
    }
    assert!(requests.iter().all(|r| r.sdk), "{requests:?}");
    assert_lines(&output(&plain).await.1, &want);

    cfg.expected_bucket_owner = Some("999999999999".into());
    let err = run_day(&server, &cfg).await.unwrap_err().to_string();
    assert!(
        err.contains("ListObjectsV2 s3://cloudtrail-logs/AWSLogs/ failed"),
        "{err}"
    );
    assert!(err.contains("AccessDenied"), "{err}");
}

/// The day's files are listed a window of folders ahead of the reads, not all before
/// the first read: with one listing at a time, GETs start while folders are still
/// being listed. Records still come out in key order across the folders.
#[tokio::test]
async fn listing_streams_ahead_of_the_reads() {
    let mut files = Vec::new();
    for account in ["111111111111", "222222222222", "333333333333"] {
        for region in ["eu-west-1", "us-east-1", "us-west-2"] {
            files.extend(generated("AWSLogs/o-abc123def4/", account, region, 2, 2));
        }
    }
    let (server, seen, plain, want) = recorded(None, &files).await;

    let mut cfg = config(64 << 20);
    cfg.max_concurrent_lists = 1;
    cfg.max_concurrent_gets = 1;
    let summary = run_day(&server, &cfg).await.unwrap();
    assert_eq!(summary.manifest.source_files, 18);
    let ops: Vec<String> = std::mem::take(&mut *seen.lock().unwrap())
        .into_iter()
        .map(|r| r.op)
        .collect();
    let first_get = ops.iter().position(|o| o == "GetObject").unwrap();
    let last_list = ops.iter().rposition(|o| o == "ListObjectsV2").unwrap();
    assert!(
        first_get < last_list,
        "every folder was listed before the first read: {ops:?}"
    );
    assert_lines(&output(&plain).await.1, &want);
}

/// Runs the day of `files` against a server that holds back the request `hold` names;
/// checks that it was held and that the output is whole and in key order. Returns how
/// many requests of the same operation went on while it was held.
async fn run_holding(hold: Hold, files: &[(String, Vec<u8>)], cfg: &Config) -> usize {
    let (server, held) = S3::holding(hold);
    let plain = server.client();
    create_bucket(&plain, SRC).await;
    create_bucket(&plain, DST).await;
    let want = put_files(&plain, files).await;
    let summary = run_day(&server, cfg).await.unwrap();
    assert_eq!(summary.manifest.source_files, files.len() as u64);
    assert!(held.held.load(std::sync::atomic::Ordering::SeqCst));
    assert_lines(&output(&plain).await.1, &want);
    held.passed.load(std::sync::atomic::Ordering::SeqCst)
}

/// A slow GET holds back its own file, not the GETs after it: while the server holds
/// the third file's GET, every later file of the day is fetched (with 4 GETs at a time;
/// `buffered(4)` let only 3 through), and the output is still in key order.
#[tokio::test]
async fn a_slow_get_does_not_stop_the_others() {
    let files = generated("AWSLogs/", "111111111111", "us-east-1", 30, 2);
    let mut keys: Vec<&String> = files.iter().map(|f| &f.0).collect();
    keys.sort();
    let hold = Hold {
        op: "GetObject",
        target: keys[2].clone(),
        others: 27,
        at_most: std::time::Duration::from_secs(20),
    };
    let mut cfg = config(64 << 20);
    cfg.max_concurrent_gets = 4;
    assert_eq!(run_holding(hold, &files, &cfg).await, 27);
}

/// A slow LIST of a day folder holds back only that folder, within the listing's
/// window: with 2 LISTs at a time, 2 x 2 folders may be listed ahead of the one being
/// read, so while the first folder's LIST is held exactly 3 others go on (`buffered(2)`
/// let 1 through; no window would let all 8). The output is still in key order.
#[tokio::test]
async fn a_slow_list_holds_back_its_folder_within_the_window() {
    let mut files = Vec::new();
    for account in ["111111111111", "222222222222", "333333333333"] {
        for region in ["eu-west-1", "us-east-1", "us-west-2"] {
            files.extend(generated("AWSLogs/", account, region, 2, 2));
        }
    }
    let hold = Hold {
        op: "ListObjectsV2",
        target: format!("111111111111/CloudTrail/eu-west-1/{DAY}/"),
        others: 8,
        at_most: std::time::Duration::from_secs(2),
    };
    let mut cfg = config(64 << 20);
    cfg.max_concurrent_lists = 2;
    assert_eq!(run_holding(hold, &files, &cfg).await, 2 * 2 - 1);
}

/// While the server holds the first of `files`, how many of the later ones fit in
/// FETCH_BUDGET beside it, each counted as the pipeline counts it: its size, at most
/// STREAM_THRESHOLD (what a streamed object is counted as).
fn fit_in_budget(files: &[(String, Vec<u8>)]) -> usize {
    let counted: Vec<u64> = files
        .iter()
        .map(|f| (f.1.len() as u64).min(STREAM_THRESHOLD) / 1024)
        .collect();
    let budget_kib = FETCH_BUDGET / 1024;
    let mut fit = 0;
    let mut used = counted[0];
    while fit + 1 < counted.len() && used + counted[fit + 1] <= budget_kib {
        used += counted[fit + 1];
        fit += 1;
    }
    assert!(fit < files.len() - 1, "the budget must bind in this test");
    fit
}

/// Runs `files` against a server holding the first file's GET, with 64 GETs allowed at
/// a time (so the budget is what binds), until all the others have passed or 6 s have
/// gone (as they never all pass: time enough for those that fit on a loaded machine).
/// Returns how many GETs went on meanwhile.
async fn gets_beside_a_held_one(files: &[(String, Vec<u8>)]) -> usize {
    let hold = Hold {
        op: "GetObject",
        target: files[0].0.clone(),
        others: files.len() - 1,
        at_most: std::time::Duration::from_secs(6),
    };
    let mut cfg = config(64 << 20);
    cfg.max_concurrent_gets = 64;
    run_holding(hold, files, &cfg).await
}

/// Files fetched whole wait for the scanner within the fetch budget: while the server
/// holds the first of twenty-four ~450 KB files (under the streaming threshold), only
/// as many later ones are fetched as fit in FETCH_BUDGET beside it.
#[tokio::test]
async fn fetched_files_wait_within_the_byte_budget() {
    let files = random_files(24, 850_000, DAY);
    let sizes: Vec<u64> = files.iter().map(|f| f.1.len() as u64 / 1024).collect();
    assert!(
        sizes
            .iter()
            .all(|&k| k > 300 && k * 1024 <= STREAM_THRESHOLD),
        "{sizes:?}"
    );
    assert_eq!(gets_beside_a_held_one(&files).await, fit_in_budget(&files));
}

/// Runs a day of a few small files and one ~1 MB file (streamed) against a TCP server
/// whose answers to GETs of the large file break off as `breaks` says; returns the
/// result, the `Range` headers of those GETs, the records the output must hold and the
/// server.
async fn run_breaking(
    mut breaks: Breaks,
) -> (
    Result<Summary, Error>,
    Vec<Option<String>>,
    Vec<Expected>,
    S3,
) {
    let mut files = generated("AWSLogs/", "111111111111", "eu-west-1", 3, 2);
    let large = random_files(1, 1_900_000, DAY).remove(0);
    assert!(large.1.len() as u64 > STREAM_THRESHOLD);
    breaks.target = large.0.clone();
    files.push(large);
    let server = S3::new();
    let plain = server.client();
    create_bucket(&plain, SRC).await;
    create_bucket(&plain, DST).await;
    let want = put_files(&plain, &files).await;
    let breaks = Arc::new(breaks);
    let endpoint = server.serve_tcp_breaking(breaks.clone()).await;
    let cfg = config(64 << 20);
    let s3 = cloudtrail_aggregator::aws::s3_client(&S3::sdk_config_at(&endpoint), &cfg);
    let result = aggregate_day(&s3, &cfg, day(), RunOptions::default()).await;
    let ranges = breaks.ranges.lock().unwrap().clone();
    (result, ranges, want, server)
}

/// Checks that a [`run_breaking`] day failed reading its large file, naming it, and
/// wrote no manifest; returns the error's text.
async fn failed_reading_the_large_file(result: Result<Summary, Error>, server: &S3) -> String {
    let err = result.unwrap_err().to_string();
    assert!(
        err.starts_with("GetObject (reading the body) s3://cloudtrail-logs/AWSLogs/111111111111/CloudTrail/us-east-1/"),
        "{err}"
    );
    assert_eq!(
        get(
            &server.client(),
            DST,
            "cloudtrail-daily/2024/02/12/_manifest.json"
        )
        .await,
        None
    );
    err
}

/// A streamed file whose connection is lost mid-body is read on from where it broke
/// off: the rest is asked for with a `Range` (twice here, as the first rest breaks off
/// too), and the output is whole and exact.
#[tokio::test]
async fn a_connection_lost_mid_object_is_resumed() {
    let (result, ranges, want, server) = run_breaking(Breaks {
        after: 300_000,
        times: 2,
        ..Breaks::default()
    })
    .await;
    let summary = result.unwrap();
    assert_eq!(summary.manifest.source_files, 4);
    assert_eq!(ranges.len(), 3, "{ranges:?}");
    assert_eq!(ranges[0], None);
    let from = |r: &Option<String>| -> u64 {
        let r = r.as_deref().expect("a Range header");
        r.strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{r}"))
    };
    // The client asks from what it got, which is at most what was sent.
    assert!((1..=300_000).contains(&from(&ranges[1])), "{ranges:?}");
    assert!(from(&ranges[2]) > from(&ranges[1]), "{ranges:?}");
    assert_lines(&output(&server.client()).await.1, &want);
}

/// A streamed file whose connection keeps breaking fails the day, naming the object and
/// how often it was resumed, after STREAM_RESUMES asks for the rest; no manifest.
#[tokio::test]
async fn a_connection_lost_again_and_again_fails_the_day() {
    use cloudtrail_aggregator::source::STREAM_RESUMES;
    // ~1 MB, 50 KB at a time: more resumes than allowed.
    let (result, ranges, _, server) = run_breaking(Breaks {
        after: 50_000,
        times: usize::MAX,
        ..Breaks::default()
    })
    .await;
    let err = failed_reading_the_large_file(result, &server).await;
    assert!(
        err.contains(&format!("(after {STREAM_RESUMES} resumed reads)")),
        "{err}"
    );
    // Each resume asks for the rest (the SDK may send a request again when its answer
    // broke off before any of the body came).
    let resumed = ranges.iter().filter(|r| r.is_some()).count() as u32;
    assert!(resumed >= STREAM_RESUMES, "{ranges:?}");
}

/// An answer to the request for the rest that is not the asked-for range (a server
/// that ignores `Range` sends the object from its start) is refused, never read as the
/// rest: the day fails naming the object and the answer.
#[tokio::test]
async fn an_answer_without_the_asked_range_fails_the_day() {
    let (result, ranges, _, server) = run_breaking(Breaks {
        after: 300_000,
        times: 1,
        unranged: true,
        ..Breaks::default()
    })
    .await;
    let err = failed_reading_the_large_file(result, &server).await;
    assert!(err.contains("the answer is not that range"), "{err}");
    assert_eq!(ranges.len(), 2, "{ranges:?}");
}

/// A streamed file is counted in the fetch budget as STREAM_THRESHOLD, not its size:
/// waiting for the scanner it holds its connection's buffer, not its bytes. While the
/// server holds the first of twenty-four ~1 MB files, twice as many later ones are
/// requested as ~1 MB files fetched whole would fit in the budget (and the output is
/// whole and in order).
#[tokio::test]
async fn streamed_files_count_less_in_the_budget() {
    let files = random_files(24, 1_900_000, DAY);
    let sizes: Vec<u64> = files.iter().map(|f| f.1.len() as u64).collect();
    assert!(
        sizes
            .iter()
            .all(|&b| b > 2 * STREAM_THRESHOLD - 100 * 1024 && b <= 4 * 1024 * 1024),
        "{sizes:?}"
    );
    let fit = fit_in_budget(&files);
    assert_eq!(fit as u64, FETCH_BUDGET / STREAM_THRESHOLD - 1);
    assert_eq!(gets_beside_a_held_one(&files).await, fit);
}

/// Against an S3-compatible endpoint the uploads — PutObject and the parts of a
/// multipart upload — carry no optional checksum, which several S3-compatible stores
/// refuse (the SDK adds a CRC32 to every PutObject and UploadPart by default), unless
/// `AWS_REQUEST_CHECKSUM_CALCULATION` asks for one — then they do, as on AWS. The SDK
/// configuration is the one `aws_config`'s loader gives when nothing is set: it fills in
/// the SDK's default, `WhenSupported`, so the configuration alone cannot tell.
#[tokio::test]
async fn uploads_to_an_s3_compatible_endpoint_carry_no_optional_checksum() {
    use aws_sdk_s3::config::RequestChecksumCalculation;
    // Three small files and one that makes the chunk larger than an upload part, so
    // that it goes up as a multipart upload.
    let mut files = generated("AWSLogs/", "111111111111", "us-east-1", 3, 2);
    files.push((
        log_key("AWSLogs/", "111111111111", "us-east-1", DAY, 9),
        gzip(&delivery(&noisy_records(1600))),
    ));
    let (server, seen, plain, want) = recorded(None, &files).await;
    let cfg = config(64 << 20);
    let loaded = server
        .sdk_config()
        .into_builder()
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .build();
    let puts = |asked: bool| {
        let (seen, cfg, sdk) = (seen.clone(), cfg.clone(), loaded.clone());
        async move {
            seen.lock().unwrap().clear();
            let s3 = cloudtrail_aggregator::aws::s3_client_for(&sdk, &cfg, asked);
            aggregate_day(&s3, &cfg, day(), RunOptions::default())
                .await
                .unwrap();
            let requests = std::mem::take(&mut *seen.lock().unwrap());
            let puts: Vec<(String, Option<String>)> = requests
                .into_iter()
                .filter(|r| r.op == "PutObject" || r.op == "UploadPart")
                .map(|r| (r.op, r.checksum))
                .collect();
            // The lease, the chunk's two parts and the manifest.
            let ops: Vec<&str> = puts.iter().map(|(op, _)| op.as_str()).collect();
            assert_eq!(
                ops,
                ["PutObject", "UploadPart", "UploadPart", "PutObject"],
                "{puts:?}"
            );
            puts.into_iter()
                .map(|(_, checksum)| checksum)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(puts(false).await, [None, None, None, None]);
    assert_lines(&output(&plain).await.1, &want);

    let with = puts(true).await;
    assert!(with.iter().all(|c| c.is_some()), "{with:?}");
    assert_lines(&output(&plain).await.1, &want);
}
