//! The query suite's data: `cargo run --example query_days -- DIR`.
//!
//! Aggregates two days, in NDJSON and in Parquet, through the library (in-process S3,
//! s3s-fs over `DIR/s3/`): 2024-02-12 holds the real public CloudTrail files of
//! `tests/fixtures/cloudtrail/` (see SOURCES.md there), 2024-02-13 the generated edge day
//! `tests/fixtures/cloudtrail/edge-day.json` (root activity, console logins, denied calls,
//! roles, IAM changes, S3 data events, anonymous requests, JSON nulls, fields the table
//! does not name, escapes, numbers). Prints the two day-folder globs per format, which
//! `scripts/query_suite.py` and `scripts/query_bytes.py` read.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;

use cloudtrail_aggregator::{aggregate_day, Config, Day, RunOptions};
use common::{create_bucket, fixture, log_key, put, S3};

const SRC: &str = "suite-logs";
const DST: &str = "suite-aggregated";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/query-days"));
    let root = base.join("s3");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    let server = S3::at(&root);
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let real = [
        "SerializerTestFileCompact.json.gz",
        "loki-cloudtrail-log-file.json.gz",
        "ModifyInstanceAttribute.json",
        "DescribeEventAggregates.json",
        "SerializerAllFieldsNull.json",
        "SerializerTestFileNewFieldsInRoot.json",
        "insights-example.json",
    ];
    for (n, name) in real.iter().enumerate() {
        let key = log_key("AWSLogs/", "111111111111", "us-east-1", "2024/02/12", n);
        put(&s3, SRC, &key, fixture(&format!("cloudtrail/{name}"))).await;
    }
    let edge = fixture("cloudtrail/edge-day.json");
    let key = log_key(
        "AWSLogs/o-abc123def4/",
        "222222222222",
        "us-east-1",
        "2024/02/13",
        0,
    );
    put(&s3, SRC, &key, edge).await;
    for format in ["ndjson", "parquet"] {
        let vars = [
            ("SRC_BUCKET", SRC.to_string()),
            ("DST_BUCKET", DST.to_string()),
            ("DST_PREFIX", format!("{format}/")),
            ("OUTPUT_FORMAT", format.to_string()),
        ];
        let cfg = Config::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        })?;
        for day in ["2024-02-12", "2024-02-13"] {
            let day: Day = day.parse()?;
            let s = aggregate_day(&s3, &cfg, day, RunOptions::default()).await?;
            eprintln!("{format} {day}: {} records", s.manifest.records);
        }
        let ext = if format == "ndjson" {
            "ndjson.gz"
        } else {
            "parquet"
        };
        println!(
            "{}",
            root.join(DST)
                .join(format)
                .join(format!("2024/02/*/*.{ext}"))
                .display()
        );
    }
    Ok(())
}
