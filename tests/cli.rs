//! `ctagg` as a user runs it: the real binary, configured by environment variables,
//! against an S3 protocol server listening on loopback.

mod common;

use std::process::Output;

use common::*;
use tokio::process::Command;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";

async fn ctagg(endpoint: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctagg"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SRC_BUCKET", SRC)
        .env("DST_BUCKET", DST);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("run ctagg")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `ctagg run DAY` aggregates the day over HTTP and prints a one-line summary;
/// `--from/--to` does a range; flags override the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_one_day_and_a_range() {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for (day, n) in [("2024/02/11", 2), ("2024/02/12", 3)] {
        let recs: Vec<String> = (0..n)
            .map(|i| record("111111111111", "us-east-1", i))
            .collect();
        put(
            &s3,
            SRC,
            &log_key("AWSLogs/", "111111111111", "us-east-1", day, 0),
            gzip(&delivery(&recs)),
        )
        .await;
    }
    let endpoint = server.serve_tcp().await;

    let out = ctagg(&endpoint, &["run", "2024-02-12"], &[("LOG_LEVEL", "debug")]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("2024-02-12: 1 files, 3 records, 1 chunks"),
        "{stdout}"
    );
    assert!(
        stdout.contains("s3://aggregated/cloudtrail-daily/2024/02/12/_manifest.json"),
        "{stdout}"
    );
    // Debug logging names every list call and object read.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("listed") && stderr.contains("object read"),
        "{stderr}"
    );
    // `verify`: the day holds; with its chunk changed it does not, and says which.
    let out = ctagg(&endpoint, &["verify", "2024-02-12"], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let manifest = get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json").await;
    let pinned = cloudtrail_aggregator::digest::sha256_hex(&manifest.unwrap());
    assert_eq!(
        said,
        format!("2024-02-12: 1 of 1 chunks verified against s3://aggregated/cloudtrail-daily/2024/02/12/_manifest.json (SHA-256 {pinned})\n")
    );
    let args = ["verify", "2024-02-12", "--manifest-sha256", &pinned];
    assert!(ctagg(&endpoint, &args, &[]).await.status.success());
    let wrong = "0".repeat(64);
    let args = ["verify", "2024-02-12", "--manifest-sha256", &wrong];
    assert!(!ctagg(&endpoint, &args, &[]).await.status.success());
    let chunk = "cloudtrail-daily/2024/02/12/000000.ndjson.gz";
    let original = get(&s3, DST, chunk).await.unwrap();
    put(&s3, DST, chunk, gzip(b"{}\n")).await;
    let out = ctagg(&endpoint, &["verify", "2024-02-12"], &[]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: 2024-02-12 does not match its manifest: 0 of 1 chunks verified")
            && stderr.contains(&format!("\n  s3://aggregated/{chunk}: changed: ")),
        "{stderr}"
    );
    put(&s3, DST, chunk, original).await;
    let body = get(&s3, DST, "cloudtrail-daily/2024/02/12/000000.ndjson.gz")
        .await
        .unwrap();
    assert_eq!(gunzip(&body).iter().filter(|b| **b == b'\n').count(), 3);

    let out = ctagg(
        &endpoint,
        &[
            "run",
            "--from",
            "2024-02-10",
            "--to",
            "2024-02-12",
            "--dst-prefix",
            "ranged",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("2024-02-10: 0 files, 0 records"));
    assert!(lines[1].starts_with("2024-02-11: 1 files, 2 records"));
    assert!(lines[2].starts_with("2024-02-12: 1 files, 3 records"));
    assert!(get(&s3, DST, "ranged/2024/02/11/000000.ndjson.gz")
        .await
        .is_some());
    assert!(text(&out.stderr).contains("no CloudTrail files for this day"));

    // --format parquet: the day as one Parquet file; a bad OUTPUT_FORMAT is refused.
    let args = [
        "run",
        "2024-02-12",
        "--format",
        "parquet",
        "--dst-prefix",
        "pq",
    ];
    let out = ctagg(&endpoint, &args, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 records, 1 chunks")
            && text(&out.stdout).contains("written as parquet"),
        "{}",
        text(&out.stdout)
    );
    let body = get(&s3, DST, "pq/2024/02/12/000000.parquet").await.unwrap();
    assert!(body.starts_with(b"PAR1") && body.ends_with(b"PAR1"));
    // --day-by event --dedup eventid: the event day 02-11 reads the folders 02/11 and
    // 02/12, whose records are all of 02-12; a bad DAY_BY is refused.
    let args = [
        "run",
        "2024-02-11",
        "--day-by",
        "event",
        "--dedup",
        "eventid",
        "--dst-prefix",
        "ev",
    ];
    let out = ctagg(&endpoint, &args, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(
            "2024-02-11: 2 files, 0 records (by event: 5 read, 5 of other days, 0 duplicates dropped)"
        ),
        "{}",
        text(&out.stdout)
    );
    let out = ctagg(&endpoint, &["run", "2024-02-12"], &[("DAY_BY", "events")]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("DAY_BY (--day-by): \"events\" is not one of delivery, event"),
        "{}",
        text(&out.stderr)
    );
    let out = ctagg(
        &endpoint,
        &["run", "2024-02-12"],
        &[("OUTPUT_FORMAT", "orc")],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("OUTPUT_FORMAT (--format): \"orc\" is not one of ndjson, parquet"),
        "{}",
        text(&out.stderr)
    );
}

/// A bad source file makes `ctagg run` exit non-zero with the object named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fails_loudly_on_a_bad_file() {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let key = log_key("AWSLogs/", "111111111111", "us-east-1", "2024/02/12", 0);
    put(
        &s3,
        SRC,
        &key,
        fixture("cloudtrail/SerializerTestFileBadJsonFormat.json"),
    )
    .await;
    let endpoint = server.serve_tcp().await;
    let out = ctagg(&endpoint, &["run", "2024-02-12"], &[]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: aggregating 2024-02-12 failed"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("s3://{SRC}/{key}")), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// Bad configuration and bad dates are refused before any S3 call, naming what is wrong.
#[tokio::test]
async fn refuses_bad_configuration_and_dates() {
    let endpoint = "http://127.0.0.1:9"; // nothing listens: no call may be made
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["run", "2024-02-12"],
            vec![("SRC_BUCKET", "")],
            "SRC_BUCKET (--src-bucket): is required",
        ),
        (
            vec!["run", "2024-02-12"],
            vec![("CHUNK_SIZE_BYTES", "lots")],
            "CHUNK_SIZE_BYTES",
        ),
        (
            vec!["run", "2024-02-30"],
            vec![],
            "2024-02-30 is not a calendar date",
        ),
        (
            vec!["run", "2013-10-31"],
            vec![],
            "before CloudTrail existed",
        ),
        (vec!["run", "2999-01-01"], vec![], "in the future"),
        (
            vec!["run", "--from", "2024-02-12", "--to", "2024-02-01"],
            vec![],
            "is after --to",
        ),
        (
            vec!["run", "2024-02-12"],
            vec![("DAY_BY", "events")],
            "DAY_BY (--day-by): \"events\" is not one of delivery, event",
        ),
    ];
    for (args, env, want) in cases {
        let out = ctagg(endpoint, &args, &env).await;
        assert!(!out.status.success(), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

/// `ctagg backfill --dry-run` prints one explicit-date body per day and sends nothing;
/// bad ranges are refused with the reason.
#[tokio::test]
async fn backfill_dry_run_and_refusals() {
    let endpoint = "http://127.0.0.1:9"; // nothing listens: a dry run makes no call
    let q = "http://127.0.0.1:9/123456789012/trigger";
    let out = ctagg(
        endpoint,
        &[
            "backfill",
            "--queue-url",
            q,
            "--from",
            "2024-02-28",
            "--to",
            "2024-03-01",
            "--dry-run",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            r#"{"year":2024,"month":2,"day":28}"#,
            r#"{"year":2024,"month":2,"day":29}"#,
            r#"{"year":2024,"month":3,"day":1}"#,
            "dry run: would send 3 messages to http://127.0.0.1:9/123456789012/trigger",
        ]
    );
    for (from, to, want) in [
        ("2024-03-01", "2024-02-01", "is after --to"),
        ("2013-10-30", "2013-11-02", "before CloudTrail existed"),
        ("2024-01-01", "2999-01-01", "in the future"),
        ("2024-01-01", "2024-13-01", "not a calendar date"),
    ] {
        let out = ctagg(
            endpoint,
            &["backfill", "--queue-url", q, "--from", from, "--to", to],
            &[],
        )
        .await;
        assert!(!out.status.success(), "{from}..{to}");
        assert!(
            text(&out.stderr).contains(want),
            "{from}..{to}: {}",
            text(&out.stderr)
        );
    }
}

/// With `HTTP_PROXY` set, every S3 request of a day — LIST, GET (whole and streamed),
/// DELETE, PUT and the multipart upload's — goes through the proxy; with `NO_PROXY`
/// naming the endpoint's host, none does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_goes_through_the_proxy_and_no_proxy_is_honoured() {
    let (server, seen) = S3::recording(None);
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    // ~15 MB of hard-to-compress records (~7.5 MB of gzip): streamed GETs, and a chunk
    // that goes up in two parts; and two small files, fetched whole.
    let mut files = random_files(8, 1_900_000, "2024/02/12");
    files.push((
        log_key("AWSLogs/", "222222222222", "eu-west-1", "2024/02/12", 0),
        gzip(&delivery(&[record("222222222222", "eu-west-1", 1)])),
    ));
    files.push((
        log_key("AWSLogs/", "222222222222", "eu-west-1", "2024/02/12", 1),
        gzip(&delivery(&[record("222222222222", "eu-west-1", 2)])),
    ));
    for (key, body) in &files {
        put(&s3, SRC, key, body.clone()).await;
    }
    let endpoint = server.serve_tcp().await;
    let (proxy, proxied) = forward_proxy().await;

    seen.lock().unwrap().clear();
    let out = ctagg(&endpoint, &["run", "2024-02-12"], &[("HTTP_PROXY", &proxy)]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let served: Vec<Request> = std::mem::take(&mut *seen.lock().unwrap());
    let forwarded = std::mem::take(&mut *proxied.lock().unwrap());
    let ops: std::collections::BTreeSet<&str> = served.iter().map(|r| r.op.as_str()).collect();
    for op in [
        "ListObjectsV2",
        "GetObject",
        "DeleteObject",
        "PutObject",
        "CreateMultipartUpload",
        "UploadPart",
        "CompleteMultipartUpload",
    ] {
        assert!(ops.contains(op), "no {op} in {ops:?}");
    }
    assert_eq!(
        forwarded.len(),
        served.len(),
        "every request the server saw came through the proxy: {forwarded:#?}"
    );
    for (f, s) in forwarded.iter().zip(&served) {
        assert!(
            f.starts_with("GET ")
                || f.starts_with("PUT ")
                || f.starts_with("POST ")
                || f.starts_with("DELETE "),
            "{f}"
        );
        assert!(
            f.contains(&format!("{endpoint}/")),
            "{f} is not for the endpoint"
        );
        assert!(!s.uri.is_empty());
    }
    let gets = served
        .iter()
        .filter(|r| r.op == "GetObject" && r.uri.starts_with(&format!("/{SRC}/")))
        .count();
    assert_eq!(gets, files.len(), "one GET per file: {served:#?}");

    let out = ctagg(
        &endpoint,
        &["run", "2024-02-12"],
        &[("HTTP_PROXY", &proxy), ("NO_PROXY", "127.0.0.1")],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!seen.lock().unwrap().is_empty());
    assert_eq!(
        *proxied.lock().unwrap(),
        Vec::<String>::new(),
        "NO_PROXY bypasses the proxy"
    );
}

/// An endpoint that refuses connections: the retries are said at info while they run,
/// and the error is the operation, the object and the cause, one line each — no Rust
/// `Debug` dump.
#[tokio::test]
async fn a_refused_endpoint_is_said_plainly() {
    let refused = {
        // A port that was just free: nothing listens on it.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let out = ctagg(
        &refused,
        &["run", "2024-02-12"],
        &[("AWS_MAX_ATTEMPTS", "2")],
    )
    .await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("S3 request got no answer; the SDK retries it"),
        "{stderr}"
    );
    // The retry settings in force (AWS_MAX_ATTEMPTS), and the address tried.
    assert!(stderr.contains("max_attempts=2"), "{stderr}");
    assert!(stderr.contains(&format!("uri={refused}/")), "{stderr}");
    let error: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("error: "))
        .collect();
    assert_eq!(
        error[0], "error: aggregating 2024-02-12 failed (0 of 1 days done before it)",
        "{stderr}"
    );
    assert!(
        error[1].starts_with(
            "  caused by: ListObjectsV2 s3://cloudtrail-logs/AWSLogs/ failed: dispatch failure"
        ),
        "{stderr}"
    );
    assert!(
        error
            .iter()
            .any(|l| l.contains("Connection refused") || l.contains("connection refused")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("DispatchFailure") && !stderr.contains("ConnectorError {"),
        "{stderr}"
    );
}

/// A metadata endpoint that answers every request `403 Forbidden`, as many networks
/// do for 169.254.169.254; its address.
async fn forbidding_metadata_endpoint() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {
                    let answer = "HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// No region, or no credentials, is said as such before any request, and nothing of
/// the SDK's search (no IMDS warning, no `Debug` dump) comes before it — whether the
/// metadata endpoint answers 403 or refuses the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_region_or_credentials_is_said_as_such() {
    let home = tempfile::tempdir().unwrap();
    let refusing = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for imds in [forbidding_metadata_endpoint().await, refusing] {
        let run = |env: Vec<(&'static str, String)>| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctagg"));
            cmd.args(["run", "2024-02-12"])
                .env_clear()
                .env("HOME", home.path())
                .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &imds)
                .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
                .env("SRC_BUCKET", SRC)
                .env("DST_BUCKET", DST)
                .envs(env);
            async move { cmd.output().await.unwrap() }
        };
        let quiet = |stderr: &str| {
            for noise in ["WARN", "IMDS", "FailedToLoadToken", "{", "Error {"] {
                assert!(!stderr.contains(noise), "{imds}: {noise:?} in {stderr}");
            }
            assert!(stderr.lines().all(|l| l.len() < 200), "{imds}: {stderr}");
        };
        let out = run(vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ])
        .await;
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with("error: no AWS region configured (set AWS_REGION"),
            "{imds}: {stderr}"
        );
        quiet(&stderr);
        let out = run(vec![("AWS_REGION", REGION.into())]).await;
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert!(
            lines[0].starts_with("error: no AWS credentials found: set AWS_ACCESS_KEY_ID"),
            "{imds}: {stderr}"
        );
        // The providers tried, one per line, in the chain's order.
        for (i, provider) in [
            "1. environment",
            "2. profile",
            "3. web identity",
            "4. container",
            "5. EC2 instance metadata",
        ]
        .iter()
        .enumerate()
        {
            assert!(
                lines[i + 1].starts_with(&format!("  {provider}")),
                "{imds}: {stderr}"
            );
        }
        assert_eq!(lines.len(), 6, "{imds}: {stderr}");
        quiet(&stderr.replace("(IMDS)", ""));
    }
}

/// `ctagg` with no environment but `env`: its stderr, after checking that it failed.
async fn bare(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ctagg"))
        .args(args)
        .env_clear()
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success(), "{args:?}");
    text(&out.stderr)
}

/// Mistakes on the command line are reported before the environment is read (here
/// there is none), by clap, in one sentence; `yesterday` is a day; every missing or
/// malformed variable is reported at once with its flag.
#[tokio::test]
async fn command_line_mistakes_come_first_and_all_settings_at_once() {
    let cases: &[(&[&str], &[&str], &[&str])] = &[
        (
            &["run", "2024-02-30"],
            &["error: invalid value '2024-02-30' for '[DAY]': 2024-02-30 is not a calendar date"],
            &["SRC_BUCKET"],
        ),
        (
            &["run", "tomorrow"],
            &["error: invalid value 'tomorrow' for '[DAY]'", "YYYY-MM-DD"],
            &["SRC_BUCKET"],
        ),
        (
            &["run", "--from", "2024-02-01"],
            &[
                "error: the following required arguments were not provided:",
                "--to <TO>",
            ],
            &["<DAY>", "SRC_BUCKET"],
        ),
        (
            &["run"],
            &[
                "error: the following required arguments were not provided:",
                "<DAY|--from <FROM>>",
            ],
            &["SRC_BUCKET"],
        ),
        (
            &["run", "2024-02-12", "--format", "csv"],
            &[
                "error: invalid value 'csv' for '--format <FORMAT>'",
                "[possible values: ndjson, parquet]",
            ],
            &["SRC_BUCKET"],
        ),
        (
            &["run", "--from", "2024-02-12", "--to", "2024-02-01"],
            &["error: --from 2024-02-12 is after --to 2024-02-01"],
            &["SRC_BUCKET"],
        ),
        (
            &["status", "2024-02-30"],
            &["error: invalid value '2024-02-30' for '<DAY>'"],
            &["SRC_BUCKET"],
        ),
        (
            &["run", "yesterday"],
            &[
                "error: 2 settings are missing or malformed; set each variable, or its flag:",
                "\n  SRC_BUCKET (--src-bucket): is required",
                "\n  DST_BUCKET (--dst-bucket): is required",
            ],
            &[],
        ),
    ];
    for (args, want, not) in cases {
        let stderr = bare(args, &[]).await;
        for w in *want {
            assert!(stderr.contains(w), "{args:?}: want {w:?} in {stderr}");
        }
        for n in *not {
            assert!(!stderr.contains(n), "{args:?}: {n:?} in {stderr}");
        }
    }
    // Every bad variable, each on its line with its flag (or none when it has none).
    let stderr = bare(
        &["run", "2024-02-12", "--dst-bucket", "out"],
        &[
            ("CHUNK_SIZE_BYTES", "64MB"),
            ("GZIP_LEVEL", "11"),
            ("LOG_LEVEL", "loud"),
        ],
    )
    .await;
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "error: 4 settings are missing or malformed; set each variable, or its flag:",
            "  SRC_BUCKET (--src-bucket): is required (the bucket name)",
            "  CHUNK_SIZE_BYTES (--chunk-size-bytes): \"64MB\" is not a whole number",
            "  GZIP_LEVEL: 11 is out of range (1 to 9)",
            "  LOG_LEVEL: \"loud\" is not one of trace, debug, info, warn, error",
        ],
        "{stderr}"
    );
}

/// `ctagg run --help` says what a run needs besides its arguments.
#[tokio::test]
async fn run_help_names_what_a_run_needs() {
    let out = Command::new(env!("CARGO_BIN_EXE_ctagg"))
        .args(["run", "--help"])
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    for want in [
        "SRC_BUCKET",
        "--src-bucket",
        "DST_BUCKET",
        "--dst-bucket",
        "AWS_REGION",
        "AWS_PROFILE",
        "yesterday",
        "[possible values: ndjson, parquet]",
    ] {
        assert!(help.contains(want), "{want:?} in {help}");
    }
}

/// No secret and no record content reaches the log at any level: a day run at trace
/// (our crate via LOG_LEVEL, and everything via RUST_LOG) over a record holding a
/// marker, with a marked secret key, prints neither marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_record_content_in_the_log() {
    const RECORD_MARKER: &str = "MARKER-in-a-record-7f3a9c";
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    let rec =
        format!("{{\"eventID\":\"e1\",\"requestParameters\":{{\"secret\":\"{RECORD_MARKER}\"}}}}");
    put(
        &s3,
        SRC,
        &log_key("AWSLogs/", "111111111111", "us-east-1", "2024/02/12", 0),
        gzip(&delivery(&[rec])),
    )
    .await;
    let endpoint = server.serve_tcp().await;
    for level in [("LOG_LEVEL", "trace"), ("RUST_LOG", "trace")] {
        let out = ctagg(&endpoint, &["run", "2024-02-12"], &[level]).await;
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.lines().count() > 10,
            "{level:?}: the log says things: {stderr}"
        );
        assert!(
            !stderr.contains(RECORD_MARKER),
            "{level:?}: a record's content is in the log"
        );
        assert!(
            !stderr.contains(SECRET_KEY),
            "{level:?}: the secret key is in the log"
        );
        assert!(!text(&out.stdout).contains(RECORD_MARKER));
    }
}

/// In event mode a range runs newest first, so that each day finds the next day's
/// delivery index: the summaries come newest first, and the earlier day's manifest says
/// which files of the next folder the index spared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_day_range_runs_newest_first() {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for (key, body) in straddling_days() {
        put(&s3, SRC, &key, body).await;
    }
    let endpoint = server.serve_tcp().await;
    let args = [
        "run",
        "--from",
        "2024-02-12",
        "--to",
        "2024-02-13",
        "--day-by",
        "event",
    ];
    let out = ctagg(&endpoint, &args, &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let days: Vec<&str> = stdout.lines().filter_map(|l| l.get(..10)).collect();
    assert_eq!(days, ["2024-02-13", "2024-02-12"], "{stdout}");
    let manifest = get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json")
        .await
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["selection"]["next_index"]["files_skipped"], 7);
}
