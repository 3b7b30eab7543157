//! The fault matrix: a day aggregated over TCP, with the SDK's own HTTP client and the
//! binaries' retries, from an S3 protocol server that injects faults into one operation
//! at a time, deterministically by seed. Every cell ends in byte-identical output or in
//! an error naming the operation and `s3://bucket/key` — and never in a manifest that
//! claims a day the run did not write. README.md, "Reliability", lists the cells.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use cloudtrail_aggregator::{aggregate_day, Config, Day, Error, RunOptions, Summary};
use common::*;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";
const DAY: &str = "2024/02/12";
const FOLDER: &str = "cloudtrail-daily/2024/02/12/";
const MANIFEST: &str = "cloudtrail-daily/2024/02/12/_manifest.json";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

fn config() -> Config {
    let map: HashMap<String, String> = [("SRC_BUCKET", SRC), ("DST_BUCKET", DST)]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_map(&map).unwrap()
}

/// A day that uses every operation: small files fetched whole, seven ~1 MB files
/// streamed, a chunk of ~6.5 MB of gzip uploaded in two parts, a stale chunk deleted.
async fn the_day(server: &S3) -> (Client, Vec<Expected>) {
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let mut files = random_files(7, 1_900_000, DAY);
    for n in 0..12 {
        let recs: Vec<String> = (0..3)
            .map(|i| record("222222222222", "eu-west-1", n * 10 + i))
            .collect();
        files.push((
            log_key("AWSLogs/", "222222222222", "eu-west-1", DAY, n),
            gzip(&delivery(&recs)),
        ));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, b) in &files {
        put(&s3, SRC, k, b.clone()).await;
    }
    put(&s3, DST, &format!("{FOLDER}000007.ndjson.gz"), "stale").await;
    let want = files.iter().flat_map(|(_, b)| expected_lines(b)).collect();
    (s3, want)
}

/// Runs the day against `faults` with `retries`.
async fn run(
    faults: std::sync::Arc<Faults>,
    retries: aws_config::retry::RetryConfig,
) -> (Result<Summary, Error>, Client, Vec<Expected>, Duration, S3) {
    let server = S3::new();
    let (plain, want) = the_day(&server).await;
    let endpoint = server.serve_tcp_faulty(faults).await;
    let cfg = config();
    let s3 =
        cloudtrail_aggregator::aws::s3_client(&S3::sdk_config_retrying(&endpoint, retries), &cfg);
    let started = Instant::now();
    let result = aggregate_day(&s3, &cfg, day(), RunOptions::default()).await;
    (result, plain, want, started.elapsed(), server)
}

/// The output is whole (see `common::assert_day_whole`).
async fn assert_whole(s3: &Client, want: &[Expected]) {
    assert_day_whole(s3, DST, FOLDER, want).await;
}

/// A transient fault on `op` (`per_mille` of its requests, or the first attempt of
/// each): the day completes exactly.
async fn rides_out(op: &'static str, fault: Fault, per_mille: u64, seed: u64) {
    let faults = Faults::new(seed, vec![(op, fault, per_mille)]);
    let (result, s3, want, _, _server) =
        run(faults.clone(), cloudtrail_aggregator::aws::retry_config()).await;
    if let Err(e) = &result {
        panic!("{op} {fault:?}: {e}");
    }
    assert!(faults.count(op) > 0, "no fault was injected into {op}");
    assert_whole(&s3, &want).await;
}

/// A fault on every request of `op`: the day fails within bounded time, naming the
/// operation and the object, and writes no manifest.
async fn fails_naming(op: &'static str, fault: Fault, want: &[&str]) {
    assert!(!want.is_empty());
    let faults = Faults::new(1, vec![(op, fault, 1000)]);
    // Few, quick retries: the bound is the retry configuration's, tested here with
    // a small one (with the binaries', a call gives up after ~40 s).
    let retries = aws_config::retry::RetryConfig::standard()
        .with_max_attempts(3)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(20));
    let (result, s3, _, took, _server) = run(faults, retries).await;
    let err = match result {
        Ok(_) => panic!("{op} {fault:?}: the day succeeded"),
        Err(e) => e.to_string(),
    };
    for w in want {
        assert!(err.contains(w), "{op} {fault:?}: {err:?} should say {w:?}");
    }
    assert!(
        took < Duration::from_secs(30),
        "{op} {fault:?}: took {took:?}"
    );
    assert_eq!(
        get(&s3, DST, MANIFEST).await,
        None,
        "{op} {fault:?}: a manifest"
    );
}

const SOURCE_KEY: &str = "s3://cloudtrail-logs/AWSLogs/";
const CHUNK: &str = "s3://aggregated/cloudtrail-daily/2024/02/12/000000.ndjson.gz";

macro_rules! cell {
    ($name:ident, rides_out($op:literal, $fault:expr)) => {
        /// This cell of the matrix rides out the fault on the first attempt of every
        /// request of its operation.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            rides_out($op, $fault, FIRST_ATTEMPT, 7).await;
        }
    };
    ($name:ident, fails($op:literal, $fault:expr, $($want:expr),+)) => {
        /// This cell of the matrix fails naming the operation and the object.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            fails_naming($op, $fault, &[$($want),+]).await;
        }
    };
}

const SLOW: Fault = Fault::SlowDown;
const E500: Fault = Fault::Internal;
const DROP: Fault = Fault::Drop;
const CUT: Fault = Fault::CutBody { announced: true };
const CUT_CHUNKED: Fault = Fault::CutBody { announced: false };

cell!(list_slowdown, rides_out("ListObjectsV2", SLOW));
cell!(list_500, rides_out("ListObjectsV2", E500));
cell!(list_dropped, rides_out("ListObjectsV2", DROP));
cell!(get_slowdown, rides_out("GetObject", SLOW));
cell!(get_500, rides_out("GetObject", E500));
cell!(get_dropped, rides_out("GetObject", DROP));
cell!(get_body_cut, rides_out("GetObject", CUT));
cell!(get_body_cut_chunked, rides_out("GetObject", CUT_CHUNKED));
cell!(
    get_slow_first_byte,
    rides_out(
        "GetObject",
        Fault::SlowFirstByte(Duration::from_millis(300))
    )
);
cell!(put_slowdown, rides_out("PutObject", SLOW));
cell!(put_500, rides_out("PutObject", E500));
cell!(put_dropped, rides_out("PutObject", DROP));
cell!(
    create_upload_slowdown,
    rides_out("CreateMultipartUpload", SLOW)
);
cell!(
    create_upload_dropped,
    rides_out("CreateMultipartUpload", DROP)
);
cell!(upload_part_slowdown, rides_out("UploadPart", SLOW));
cell!(upload_part_500, rides_out("UploadPart", E500));
cell!(upload_part_dropped, rides_out("UploadPart", DROP));
cell!(
    complete_upload_slowdown,
    rides_out("CompleteMultipartUpload", SLOW)
);
cell!(
    complete_upload_dropped,
    rides_out("CompleteMultipartUpload", DROP)
);
cell!(delete_slowdown, rides_out("DeleteObject", SLOW));
cell!(delete_dropped, rides_out("DeleteObject", DROP));
cell!(delete_many_slowdown, rides_out("DeleteObjects", SLOW));
cell!(delete_many_dropped, rides_out("DeleteObjects", DROP));

cell!(list_always_slowdown, fails("ListObjectsV2", SLOW, "ListObjectsV2 s3://cloudtrail-logs/AWSLogs/ failed: SlowDown: injected by the test (HTTP 503)"));
cell!(
    list_always_dropped,
    fails(
        "ListObjectsV2",
        DROP,
        "ListObjectsV2 s3://cloudtrail-logs/AWSLogs/ failed"
    )
);
cell!(
    get_always_500,
    fails(
        "GetObject /cloudtrail-logs/",
        E500,
        "GetObject s3://cloudtrail-logs/AWSLogs/",
        "InternalError"
    )
);
cell!(
    get_always_dropped,
    fails(
        "GetObject /cloudtrail-logs/",
        DROP,
        "GetObject s3://cloudtrail-logs/AWSLogs/",
        "failed"
    )
);
// Every GET's body is cut: the error is the cut body's ("GetObject (reading the body)"
// or "(the rest, from byte …)") or, when a retry meets a connection the server has just
// closed, the send's ("connection closed before message completed") — which one comes
// first is timing. Either names the operation and the object.
cell!(
    get_always_cut,
    fails(
        "GetObject /cloudtrail-logs/",
        CUT,
        "GetObject ",
        SOURCE_KEY,
        " failed"
    )
);
cell!(
    get_other_size,
    fails(
        "GetObject /cloudtrail-logs/",
        Fault::OtherSize,
        "GetObject s3://cloudtrail-logs/AWSLogs/",
        "changed since it was listed"
    )
);
cell!(put_always_slowdown, fails("PutObject", SLOW, "PutObject (taking the day's lease) s3://aggregated/cloudtrail-daily/2024/02/12/_lease.json failed: SlowDown"));
cell!(
    create_upload_always_500,
    fails(
        "CreateMultipartUpload",
        E500,
        "CreateMultipartUpload",
        CHUNK
    )
);
cell!(
    upload_part_always_slowdown,
    fails("UploadPart", SLOW, "UploadPart", CHUNK)
);
cell!(
    complete_upload_always_dropped,
    fails(
        "CompleteMultipartUpload",
        DROP,
        "CompleteMultipartUpload",
        CHUNK
    )
);
cell!(delete_always_500, fails("DeleteObject", E500, "DeleteObject s3://aggregated/cloudtrail-daily/2024/02/12/_manifest.json failed: InternalError"));
cell!(delete_many_always_500, fails("DeleteObjects", E500, "DeleteObjects s3://aggregated/cloudtrail-daily/2024/02/12/000007.ndjson.gz failed: InternalError"));

/// 30 % SlowDown and 10 % dropped connections on every operation at once, over three
/// seeds: the day completes exactly each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_slowdown_and_ten_percent_drops_everywhere() {
    for seed in [1, 2, 3] {
        let faults = Faults::new(seed, vec![("*", SLOW, 300), ("*", DROP, 400)]);
        let (result, s3, want, _, _server) =
            run(faults.clone(), cloudtrail_aggregator::aws::retry_config()).await;
        if let Err(e) = &result {
            panic!("seed {seed}: {e}");
        }
        let injected = faults.injected.lock().unwrap().len();
        assert!(injected >= 8, "seed {seed}: {injected} faults");
        assert!(faults.count("GetObject") > 0);
        assert_whole(&s3, &want).await;
    }
}

/// An object whose ETag differs from the one listed (replaced since the listing) is
/// refused, naming it. (s3s-fs lists no ETags, so the listing is made by hand here;
/// S3's listings carry them.)
#[tokio::test]
async fn an_object_of_another_etag_than_listed_is_refused() {
    let server = S3::new();
    let (s3, _) = the_day(&server).await;
    let key = log_key("AWSLogs/", "222222222222", "eu-west-1", DAY, 0);
    let size = get(&s3, SRC, &key).await.unwrap().len() as u64;
    let src = cloudtrail_aggregator::source::Source::new(&s3, SRC);
    let object = |etag: Option<&str>| cloudtrail_aggregator::listing::SourceObject {
        key: key.clone(),
        size,
        etag: etag.map(str::to_string),
    };
    let real = s3.head_object().bucket(SRC).key(&key).send().await.unwrap();
    assert!(src.get(&object(real.e_tag())).await.is_ok());
    let err = src
        .get(&object(Some("\"0123456789abcdef0123456789abcdef\"")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "GetObject s3://{SRC}/{key} failed: the object changed since it was listed (ETag "
        )),
        "{err}"
    );
}
