//! `DAY_BY=event` and `DEDUP=eventid` over the real S3 protocol server (s3s-fs
//! in-process): delivery folders that straddle midnight, duplicates within a folder and
//! across folders, a next folder that does not exist yet, an unusable eventTime, the
//! real fixtures, and the nightly message that settles the day before. Each output is
//! compared byte for byte with an oracle computed from the sources
//! (`common::event_day_oracle`).

mod common;

use aws_sdk_s3::Client;
use cloudtrail_aggregator::handler::{handle_batch, App};
use cloudtrail_aggregator::{aggregate_day, Config, Day, Error, RunOptions, Summary};
use common::*;
use serde_json::Value;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";

fn config(vars: &[(&str, &str)]) -> Config {
    config_with(vars)
}

fn folder(day: &str) -> String {
    format!("cloudtrail-daily/{}/", day.replace('-', "/"))
}

/// A server holding `files` in the source bucket, and an empty destination.
async fn serve(files: &[(String, Vec<u8>)]) -> (S3, Client) {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for (k, b) in files {
        put(&s3, SRC, k, b.clone()).await;
    }
    (server, s3)
}

async fn run(s3: &Client, vars: &[(&str, &str)], day: &str) -> Result<Summary, Error> {
    let day: Day = day.parse().unwrap();
    // Boxed: a test of several runs would hold them all in its own future.
    Box::pin(aggregate_day(s3, &config(vars), day, RunOptions::default())).await
}

async fn manifest(s3: &Client, day: &str) -> Value {
    let m = get(s3, DST, &format!("{}_manifest.json", folder(day)))
        .await
        .expect("a manifest");
    serde_json::from_slice(&m).unwrap()
}

/// Every object of the day's output folder, with its bytes.
async fn outputs(s3: &Client, day: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for k in keys(s3, DST, &folder(day)).await {
        let body = get(s3, DST, &k).await.unwrap();
        out.push((k, body));
    }
    without_end_times(out)
}

const EVENT: &[(&str, &str)] = &[("DAY_BY", "event")];
const EVENT_DEDUP: &[(&str, &str)] = &[("DAY_BY", "event"), ("DEDUP", "eventid")];

/// An event day holds exactly the records whose eventTime is on it, from its folder and
/// the next, in key order; the manifest counts what each folder held and what was left.
#[tokio::test]
async fn an_event_day_holds_exactly_its_events() {
    let files = straddling_days();
    let (_server, s3) = serve(&files).await;
    let summary = run(&s3, EVENT, "2024-02-12").await.unwrap();
    let (want, read, other, dups) = event_day_oracle(&files, "2024-02-12", false);
    assert_eq!(dups, 0);
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let m = manifest(&s3, "2024-02-12").await;
    let sel = &m["selection"];
    assert_eq!(sel["day_by"], "event");
    assert_eq!(sel["dedup"], "none");
    assert_eq!(sel["records_read"], read);
    assert_eq!(sel["records_written"], want.len() as u64);
    assert_eq!(sel["other_days"], other);
    // The event of 2024-02-11 in 2024/02/13's folder: no event day's run reads it.
    assert_eq!(sel["in_no_day"], 1);
    assert_eq!(sel["duplicates"], 0);
    // 4 folders × 3 files per delivery day; records as generated.
    assert_eq!(
        sel["folders"],
        serde_json::json!([
            {"day": "2024-02-12", "files": 12, "records": 40},
            {"day": "2024-02-13", "files": 12, "records": 41},
        ])
    );
    assert_eq!(m["source_files"], 24);
    assert_eq!(summary.manifest.records, want.len() as u64);
    // The late events of 02-12 are in; 02-11's late ones and 02-13's are not.
    let text = String::from_utf8(gunzip(&outputs(&s3, "2024-02-12").await[0].1)).unwrap();
    assert!(text.contains("\"eventTime\":\"2024-02-12T23:59:59Z\""));
    assert!(!text.contains("\"eventTime\":\"2024-02-11T"));
    assert!(!text.contains("\"eventTime\":\"2024-02-13T"));
}

/// With DEDUP=eventid each eventID is written once per day — the first in key order —
/// whether it repeats within a folder or across the two folders; a rerun writes the
/// same bytes.
#[tokio::test]
async fn dedup_writes_each_event_once_and_reruns_are_identical() {
    let files = straddling_days();
    let (_server, s3) = serve(&files).await;
    run(&s3, EVENT_DEDUP, "2024-02-12").await.unwrap();
    let (want, _, other, dups) = event_day_oracle(&files, "2024-02-12", true);
    // Per account and region: one repeat in 02-12's folder, one across into 02-13's.
    assert_eq!(dups, 8);
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let m = manifest(&s3, "2024-02-12").await;
    assert_eq!(m["selection"]["duplicates"], dups);
    assert_eq!(m["selection"]["other_days"], other);
    assert_eq!(m["selection"]["dedup"], "eventid");
    let first = outputs(&s3, "2024-02-12").await;
    run(&s3, EVENT_DEDUP, "2024-02-12").await.unwrap();
    assert_eq!(outputs(&s3, "2024-02-12").await, first, "a rerun differs");
    // The same in Parquet: as many rows, and the same bytes on a rerun.
    let parquet = [
        ("DAY_BY", "event"),
        ("DEDUP", "eventid"),
        ("OUTPUT_FORMAT", "parquet"),
    ];
    let s = run(&s3, &parquet, "2024-02-12").await.unwrap();
    assert_eq!(s.manifest.records, want.len() as u64);
    let first = outputs(&s3, "2024-02-12").await;
    assert!(first.iter().any(|(k, _)| k.ends_with("000000.parquet")));
    run(&s3, &parquet, "2024-02-12").await.unwrap();
    assert_eq!(
        outputs(&s3, "2024-02-12").await,
        first,
        "a Parquet rerun differs"
    );
}

/// DEDUP in delivery mode: the delivery folder's records, one per eventID.
#[tokio::test]
async fn dedup_by_delivery_day() {
    let files = straddling_days();
    let (_server, s3) = serve(&files).await;
    run(&s3, &[("DEDUP", "eventid")], "2024-02-12")
        .await
        .unwrap();
    let mut seen = std::collections::HashSet::new();
    let want: Vec<Expected> = files
        .iter()
        .filter(|(k, _)| k.contains("/2024/02/12/"))
        .flat_map(|(_, b)| {
            let v: Value = serde_json::from_slice(&gunzip(b)).unwrap();
            let ids: Vec<String> = v["Records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["eventID"].as_str().unwrap().to_string())
                .collect();
            ids.into_iter().zip(expected_lines(b))
        })
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(_, e)| e)
        .collect();
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let m = manifest(&s3, "2024-02-12").await;
    assert_eq!(m["selection"]["day_by"], "delivery");
    assert_eq!(m["selection"]["duplicates"], 4);
    assert_eq!(m["selection"]["folders"].as_array().unwrap().len(), 1);
}

/// The default is unchanged: the delivery folder whole, and a manifest without a
/// selection.
#[tokio::test]
async fn the_default_day_is_the_delivery_folder() {
    let files = straddling_days();
    let (_server, s3) = serve(&files).await;
    run(&s3, &[], "2024-02-12").await.unwrap();
    let want: Vec<Expected> = files
        .iter()
        .filter(|(k, _)| k.contains("/2024/02/12/"))
        .flat_map(|(_, b)| expected_lines(b))
        .collect();
    assert_eq!(want.len(), 40);
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let m = manifest(&s3, "2024-02-12").await;
    assert!(m.get("selection").is_none(), "{m}");
}

/// The newest day: its next folder does not exist yet. The day holds what its own
/// folder has of it, and the manifest says the next folder held nothing.
#[tokio::test]
async fn a_day_whose_next_folder_does_not_exist_yet() {
    let files = straddling_days();
    let (_server, s3) = serve(&files).await;
    run(&s3, EVENT_DEDUP, "2024-02-13").await.unwrap();
    let (want, _, _, _) = event_day_oracle(&files, "2024-02-13", true);
    assert_eq!(want.len(), 4 * 6);
    assert_day_whole(&s3, DST, &folder("2024-02-13"), &want).await;
    let m = manifest(&s3, "2024-02-13").await;
    assert_eq!(
        m["selection"]["folders"][1],
        serde_json::json!({"day": "2024-02-14", "files": 0, "records": 0})
    );
}

/// A record without a usable eventTime fails an event day naming the file and the
/// record, and no manifest claims the day; the delivery day of the same files works.
#[tokio::test]
async fn an_unusable_event_time_fails_naming_the_file() {
    let mut files = straddling_days();
    let key = log_key("AWSLogs/", "111111111111", "eu-west-1", "2024/02/12", 7);
    let good = event_record("111111111111", "eu-west-1", "2024-02-12T11:00:00Z", "g");
    let bad = r#"{"eventVersion":"1.09","eventTime":"12/02/2024 11:00","eventID":"b"}"#;
    files.push((key.clone(), gzip(&delivery(&[good, bad.to_string()]))));
    files.sort();
    let (_server, s3) = serve(&files).await;
    let err = run(&s3, EVENT, "2024-02-12").await.unwrap_err().to_string();
    for want in [
        format!("s3://{SRC}/{key}"),
        "record 1".to_string(),
        "eventTime".to_string(),
        "12/02/2024 11:00".to_string(),
    ] {
        assert!(err.contains(&want), "{err:?} should say {want:?}");
    }
    assert_eq!(
        get(&s3, DST, &format!("{}_manifest.json", folder("2024-02-12"))).await,
        None
    );
    run(&s3, &[], "2024-02-12").await.unwrap();
}

/// Real files: CloudTrail's own sample delivery (loki) on its event day, a real record
/// of years before delivered in the next folder (counted, not written), and AWS's
/// serializer test file, whose records have no eventID (kept under DEDUP).
#[tokio::test]
async fn real_fixtures_by_event_day() {
    let loki = fixture("cloudtrail/loki-cloudtrail-log-file.json.gz");
    let old = fixture("cloudtrail/ModifyInstanceAttribute.json");
    let no_ids = fixture("cloudtrail/SerializerTestFileCompact.json.gz");
    let files = vec![
        (
            log_key("AWSLogs/", "111111111111", "us-east-1", "2023/05/19", 0),
            loki.clone(),
        ),
        (
            log_key("AWSLogs/", "111111111111", "us-east-1", "2023/05/20", 0),
            old,
        ),
        (
            log_key("AWSLogs/", "111111111111", "us-east-1", "2013/11/01", 0),
            no_ids.clone(),
        ),
    ];
    let (_server, s3) = serve(&files).await;
    run(&s3, EVENT_DEDUP, "2023-05-19").await.unwrap();
    assert_day_whole(&s3, DST, &folder("2023-05-19"), &expected_lines(&loki)).await;
    let m = manifest(&s3, "2023-05-19").await;
    assert_eq!(m["selection"]["other_days"], 1);
    assert_eq!(m["selection"]["in_no_day"], 1);
    run(&s3, EVENT_DEDUP, "2013-11-01").await.unwrap();
    let want = expected_lines(&no_ids);
    assert_eq!(want.len(), 6);
    assert_day_whole(&s3, DST, &folder("2013-11-01"), &want).await;
    let m = manifest(&s3, "2013-11-01").await;
    assert_eq!(m["selection"]["without_event_id"], 6);
}

/// In event mode the nightly message ("aggregate yesterday", D) aggregates D, then D−1
/// again, now that D's folder is whole; a backfill message aggregates its day only.
#[tokio::test]
async fn the_nightly_message_settles_the_day_before() {
    let files = straddling_days();
    let (_server, s3) = serve(&files).await;
    let app = App {
        s3: s3.clone(),
        sqs: None,
        config: config(EVENT_DEDUP),
    };
    let read = |name: &str| -> aws_lambda_events::event::sqs::SqsEvent {
        let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    };
    let today = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    // events/scheduler.json fires at 2024-02-13T01:00:00Z: yesterday is 2024-02-12.
    let outcomes = handle_batch(&app, read("scheduler.json"), today, None).await;
    let days: Vec<String> = outcomes[0]
        .result
        .as_ref()
        .unwrap()
        .committed()
        .iter()
        .map(|s| s.day.to_string())
        .collect();
    // D first: D−1's run then reads, of D's folder, only the files its index names.
    assert_eq!(days, ["2024-02-12", "2024-02-11"]);
    let m = manifest(&s3, "2024-02-11").await;
    assert_eq!(m["selection"]["next_index"]["files_skipped"], 8);
    for day in ["2024-02-11", "2024-02-12"] {
        let (want, _, _, _) = event_day_oracle(&files, day, true);
        assert_day_whole(&s3, DST, &folder(day), &want).await;
    }
    let outcomes = handle_batch(&app, read("explicit-date.json"), today, None).await;
    assert_eq!(outcomes[0].result.as_ref().unwrap().committed().len(), 1);
}

/// The chunks of a day's output folder, with their bytes.
async fn chunks(s3: &Client, day: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = outputs(s3, day).await;
    out.retain(|(k, _)| k.ends_with(".ndjson.gz"));
    out
}

/// Once the next day is aggregated, its delivery index spares an event day the files
/// of the next folder that hold no event of an earlier day — the same bytes as reading
/// them all; a folder changed since the index is read whole (a late file's event is
/// in), and an index that is not the one its manifest names is not used.
#[tokio::test]
async fn the_next_days_index_spares_the_files_without_earlier_events() {
    let mut files = straddling_days();
    let (_server, s3) = serve(&files).await;
    run(&s3, EVENT, "2024-02-12").await.unwrap();
    let whole = chunks(&s3, "2024-02-12").await;
    assert!(manifest(&s3, "2024-02-12").await["selection"]["next_index"].is_null());
    run(&s3, EVENT, "2024-02-13").await.unwrap();
    let index = &manifest(&s3, "2024-02-13").await["delivery_index"];
    let index_key = format!("{}_delivery-index.json.gz", folder("2024-02-13"));
    assert_eq!(index["key"], index_key.as_str());
    assert_eq!(index["files"], 12);

    run(&s3, EVENT, "2024-02-12").await.unwrap();
    assert_eq!(chunks(&s3, "2024-02-12").await, whole);
    let (want, _, _, _) = event_day_oracle(&files, "2024-02-12", false);
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let sel = manifest(&s3, "2024-02-12").await["selection"].clone();
    let used = &sel["next_index"];
    assert_eq!(used["index"], format!("s3://{DST}/{index_key}").as_str());
    // Each folder's first file holds 02-12's last events; 111…/eu-west-1's second, an
    // event of 02-11 (read: it is counted in no day's output).
    assert_eq!(
        (
            &used["folders_matched"],
            &used["folders_read_whole"],
            &used["files_skipped"]
        ),
        (&Value::from(4), &Value::from(0), &Value::from(7))
    );
    assert_eq!(sel["folders"][1]["files"], 5);
    assert_eq!(sel["in_no_day"], 1);

    // A file delivered late into one folder of 02-13, holding an event of 02-12.
    let late = log_key("AWSLogs/", "222222222222", "us-east-1", "2024/02/13", 7);
    let record = event_record(
        "222222222222",
        "us-east-1",
        "2024-02-12T18:00:00Z",
        "late-2",
    );
    let body = gzip(&delivery(&[record]));
    put(&s3, SRC, &late, body.clone()).await;
    files.push((late, body));
    files.sort();
    run(&s3, EVENT, "2024-02-12").await.unwrap();
    let (want, _, _, _) = event_day_oracle(&files, "2024-02-12", false);
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let used = manifest(&s3, "2024-02-12").await["selection"]["next_index"].clone();
    assert_eq!(
        (&used["folders_matched"], &used["folders_read_whole"]),
        (&Value::from(3), &Value::from(1))
    );
    assert_eq!(used["files_skipped"], 5);

    // The index rewritten under its manifest: read whole again.
    put(&s3, DST, &index_key, b"not the index".to_vec()).await;
    run(&s3, EVENT, "2024-02-12").await.unwrap();
    assert_day_whole(&s3, DST, &folder("2024-02-12"), &want).await;
    let sel = manifest(&s3, "2024-02-12").await["selection"].clone();
    assert!(sel["next_index"].is_null());
    assert_eq!(sel["folders"][1]["files"], 13);
    // With VALIDATE, every file is read (each checked against its digest).
    run(&s3, EVENT, "2024-02-13").await.unwrap();
    let validating = [("DAY_BY", "event"), ("VALIDATE", "report")];
    run(&s3, &validating, "2024-02-12").await.unwrap();
    let sel = manifest(&s3, "2024-02-12").await["selection"].clone();
    assert!(sel["next_index"].is_null());
    assert_eq!(sel["folders"][1]["files"], 13);
    // The next day aggregated again by delivery day: its manifest names no index, and
    // the old one is gone.
    run(&s3, &[], "2024-02-13").await.unwrap();
    assert!(manifest(&s3, "2024-02-13").await["delivery_index"].is_null());
    assert!(!keys(&s3, DST, &folder("2024-02-13"))
        .await
        .contains(&index_key));
}
