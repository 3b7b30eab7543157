//! The Lambda handler: SQS events from `events/` through the real pipeline and S3 server.

mod common;

use std::collections::HashMap;

use aws_lambda_events::event::sqs::SqsEvent;
use chrono::NaiveDate;
use cloudtrail_aggregator::handler::{handle, App};
use cloudtrail_aggregator::Config;
use common::*;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";
const MANIFEST: &str = "cloudtrail-daily/2024/02/12/_manifest.json";

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 1).unwrap()
}

fn event(name: &str) -> SqsEvent {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn fixture_event(name: &str) -> SqsEvent {
    serde_json::from_slice(&fixture(&format!("lambda-events/{name}"))).unwrap()
}

async fn app(server: &S3) -> App {
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let recs: Vec<String> = (0..3)
        .map(|i| record("111111111111", "us-east-1", i))
        .collect();
    put(
        &s3,
        SRC,
        &log_key("AWSLogs/", "111111111111", "us-east-1", "2024/02/12", 0),
        gzip(&delivery(&recs)),
    )
    .await;
    let vars: HashMap<String, String> = [("SRC_BUCKET", SRC), ("DST_BUCKET", DST)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    App {
        s3,
        sqs: None,
        config: Config::from_map(&vars).unwrap(),
    }
}

/// Each single-message event in events/ aggregates 2024-02-12 and reports no failure.
#[tokio::test]
async fn each_event_file_aggregates_its_day() {
    for name in ["scheduler.json", "explicit-date.json", "iso-date.json"] {
        let server = S3::new();
        let app = app(&server).await;
        let resp = handle(&app, event(name), today(), None).await.unwrap();
        assert!(resp.batch_item_failures.is_empty(), "{name}");
        let m: serde_json::Value =
            serde_json::from_slice(&get(&app.s3, DST, MANIFEST).await.unwrap()).unwrap();
        assert_eq!(m["records"], 3, "{name}");
    }
}

/// A batch mixing a Scheduler payload, an explicit date, an ISO date and a bad body
/// reports exactly the bad message; the others are done.
#[tokio::test]
async fn mixed_batch_reports_exactly_the_bad_message() {
    let server = S3::new();
    let app = app(&server).await;
    let resp = handle(&app, event("batch-with-bad-body.json"), today(), None)
        .await
        .unwrap();
    let failed: Vec<&str> = resp
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, vec!["3f2a1c4e-5b6d-4e7f-8a9b-0c1d2e3f4a14"]);
    assert!(get(&app.s3, DST, MANIFEST).await.is_some());
    // The response serialises as Lambda expects it.
    let json = serde_json::to_value(&resp).unwrap();
    assert_eq!(
        json["batchItemFailures"][0]["itemIdentifier"],
        "3f2a1c4e-5b6d-4e7f-8a9b-0c1d2e3f4a14"
    );
}

/// When every message fails, the invocation fails, naming each message and its reason.
#[tokio::test]
async fn all_bad_batch_is_an_invocation_error() {
    let server = S3::new();
    let app = app(&server).await;
    let mut ev = fixture_event("example-sqs-event.json");
    ev.records
        .extend(fixture_event("sqsDlqTriggerEvent.json").records);
    let mut unrecognised = ev.records[0].clone();
    unrecognised.message_id = Some("json-but-no-day".into());
    unrecognised.body = Some(r#"{"message": "foo1"}"#.into());
    ev.records.push(unrecognised);
    let err = handle(&app, ev, today(), None).await.unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.failures.len(), 3);
    assert!(
        msg.contains(
            "message MessageID_1: cannot tell which day to aggregate: the message body is not JSON"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("message db37cc61-1bb0-4e77-b6f3-7cf87f44a72a: cannot tell which day"),
        "{msg}"
    );
    assert!(msg.contains("message json-but-no-day: cannot tell which day to aggregate: unrecognised message body"), "{msg}");
}

/// A message whose day fails to aggregate is reported with the object that failed;
/// a good message of the same batch for another day still succeeds.
#[tokio::test]
async fn failing_day_is_reported_with_the_object() {
    let server = S3::new();
    let app = app(&server).await;
    let bad_key = log_key("AWSLogs/", "111111111111", "us-east-1", "2024/02/10", 0);
    put(&app.s3, SRC, &bad_key, b"[]".to_vec()).await;
    let mut ev = event("explicit-date.json");
    let mut bad = ev.records[0].clone();
    bad.message_id = Some("bad-day".into());
    bad.body = Some(r#"{"date":"2024-02-10"}"#.into());
    ev.records.push(bad);
    let outcomes = cloudtrail_aggregator::handler::handle_batch(&app, ev, today(), None).await;
    assert!(outcomes[0].result.is_ok());
    let err = outcomes[1].result.as_ref().unwrap_err().to_string();
    assert!(err.starts_with("day 2024-02-10: s3://"), "{err}");
    assert_eq!(outcomes[1].message_id, "bad-day");
    assert!(err.contains(&format!("s3://{SRC}/{bad_key}")), "{err}");
    let resp = cloudtrail_aggregator::handler::batch_response(&outcomes).unwrap();
    assert_eq!(resp.batch_item_failures.len(), 1);
    assert_eq!(resp.batch_item_failures[0].item_identifier, "bad-day");
}

/// The Scheduler payloads from public fixtures (detail as the string "{}") are accepted
/// as "the day before `time`".
#[tokio::test]
async fn public_scheduler_payloads_are_accepted() {
    for (name, want) in [
        ("eventBridgeSchedulerEvent.json", "2025-02-19"),
        ("scheduler-event-seen-in-production.json", "2024-11-06"),
    ] {
        let body = String::from_utf8(fixture(&format!("lambda-events/{name}"))).unwrap();
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let (day, _) = cloudtrail_aggregator::trigger::parse_body(&body, today).unwrap();
        assert_eq!(day.to_string(), want, "{name}");
    }
}
