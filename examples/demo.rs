//! The quick start: `cargo run --example demo`.
//!
//! Starts an S3 server in-process (s3s-fs over `./demo-output/s3/`), loads it with
//! sample CloudTrail deliveries for 2024-02-12 — real public files (see
//! tests/fixtures/SOURCES.md) and generated ones, in an organisation and a
//! single-account layout, plus Digest and other-day files that must be skipped —
//! then hands `events/scheduler.json` (a nightly EventBridge Scheduler message as SQS
//! delivers it) to the same handler the Lambda runs, and prints where the output is.
//!
//! `cargo run --example demo -- DIR` puts everything under DIR instead.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use aws_lambda_events::event::sqs::SqsEvent;
use cloudtrail_aggregator::handler::{handle, App};
use cloudtrail_aggregator::{telemetry, Config};
use common::{create_bucket, delivery, gzip, log_key, put, record, S3};

const SRC: &str = "demo-cloudtrail-logs";
const DST: &str = "demo-aggregated";
const DAY: &str = "2024/02/12";
const EVENT: &str = include_str!("../events/scheduler.json");

/// Real deliveries, embedded so the demo needs nothing but the binary.
const FIXTURES: &[(&str, &[u8])] = &[
    (
        "SerializerTestFileCompact.json.gz",
        include_bytes!("../tests/fixtures/cloudtrail/SerializerTestFileCompact.json.gz"),
    ),
    (
        "loki-cloudtrail-log-file.json.gz",
        include_bytes!("../tests/fixtures/cloudtrail/loki-cloudtrail-log-file.json.gz"),
    ),
    (
        "ModifyInstanceAttribute.json",
        include_bytes!("../tests/fixtures/cloudtrail/ModifyInstanceAttribute.json"),
    ),
    (
        "DescribeEventAggregates.json",
        include_bytes!("../tests/fixtures/cloudtrail/DescribeEventAggregates.json"),
    ),
    (
        "SerializerAllFieldsNull.json",
        include_bytes!("../tests/fixtures/cloudtrail/SerializerAllFieldsNull.json"),
    ),
    (
        "SerializerTestFileNewFieldsInRoot.json",
        include_bytes!("../tests/fixtures/cloudtrail/SerializerTestFileNewFieldsInRoot.json"),
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::init(telemetry::Output::Cli);
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("demo-output"));
    let root = base.join("s3");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let server = S3::at(&root);
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;

    // Real files, spread over an organisation trail's accounts and regions.
    let org = "AWSLogs/o-abc123def4/";
    let places = [
        ("111111111111", "us-east-1"),
        ("111111111111", "eu-west-1"),
        ("222222222222", "us-east-1"),
    ];
    for (n, (_, body)) in FIXTURES.iter().enumerate() {
        let (account, region) = places[n % places.len()];
        put(
            &s3,
            SRC,
            &log_key(org, account, region, DAY, n),
            body.to_vec(),
        )
        .await;
    }
    // Generated deliveries: a single-account trail in the same bucket.
    for n in 0..20 {
        let recs: Vec<String> = (0..25)
            .map(|i| record("333333333333", "ap-southeast-2", n * 25 + i))
            .collect();
        put(
            &s3,
            SRC,
            &log_key("AWSLogs/", "333333333333", "ap-southeast-2", DAY, n),
            gzip(&delivery(&recs)),
        )
        .await;
    }
    // Never read: a digest file and another day's delivery.
    put(
        &s3,
        SRC,
        "AWSLogs/333333333333/CloudTrail-Digest/ap-southeast-2/2024/02/12/digest.json.gz",
        gzip(b"{\"digestStartTime\":\"2024-02-12T00:00:00Z\"}"),
    )
    .await;
    put(
        &s3,
        SRC,
        &log_key(
            "AWSLogs/",
            "333333333333",
            "ap-southeast-2",
            "2024/02/13",
            0,
        ),
        gzip(&delivery(&[record("333333333333", "ap-southeast-2", 0)])),
    )
    .await;

    let vars = [
        ("SRC_BUCKET", SRC),
        ("SRC_PREFIX", "AWSLogs/"),
        ("DST_BUCKET", DST),
        ("DST_PREFIX", "cloudtrail-daily/"),
    ];
    let config = Config::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })?;
    let app = App {
        s3,
        sqs: None,
        config,
    };
    let event: SqsEvent = serde_json::from_str(EVENT)?;
    let today = chrono::Utc::now().date_naive();
    let response = handle(&app, event, today, None).await?;

    let out = root.join(DST).join("cloudtrail-daily").join(DAY);
    println!("SQS batch response: {}", serde_json::to_string(&response)?);
    println!(
        "Aggregated 2024-02-12 (the day before the Scheduler message's time) into {}:",
        out.display()
    );
    let mut files: Vec<_> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        println!("  {} ({} bytes)", f.display(), std::fs::metadata(&f)?.len());
    }
    println!(
        "Look inside: zcat {}/000000.ndjson.gz | head -n 2",
        out.display()
    );
    Ok(())
}
