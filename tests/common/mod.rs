//! Shared test helpers: an S3 protocol server (s3s + s3s-fs) over a temporary folder,
//! reached either in-process (s3s-aws as the SDK's HTTP client) or over TCP on
//! loopback, plus generators of CloudTrail-shaped data.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use flate2::write::GzEncoder;
use flate2::Compression;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::{S3Service, S3ServiceBuilder};

pub const ACCESS_KEY: &str = "AKIDTESTTESTTEST";
pub const SECRET_KEY: &str = "secret-for-tests-only";
pub const REGION: &str = "us-east-1";

/// The s3s service over `root`, verifying SigV4 with the tests' credentials.
fn builder(root: &Path) -> S3ServiceBuilder {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs");
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    b
}

/// An S3 server backed by a folder.
pub struct S3 {
    pub root: PathBuf,
    _dir: Option<tempfile::TempDir>,
    service: S3Service,
    accepted: Arc<AtomicUsize>,
}

impl S3 {
    /// A server over a new temporary folder.
    pub fn new() -> S3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let mut s = S3::at(&root);
        s._dir = Some(dir);
        s
    }

    /// A server over `root` (kept after the server is gone).
    pub fn at(root: &Path) -> S3 {
        std::fs::create_dir_all(root).expect("create root");
        S3 {
            root: root.to_path_buf(),
            _dir: None,
            service: builder(root).build(),
            accepted: Arc::default(),
        }
    }

    /// A server over a new temporary folder that records every request it is sent
    /// (see [`Seen`]) and refuses, with AccessDenied as S3 does, a request whose
    /// `x-amz-expected-bucket-owner` header names another owner than `owner`.
    pub fn recording(owner: Option<&str>) -> (S3, Seen) {
        let seen: Seen = Arc::new(Mutex::new(Vec::new()));
        let s3 = S3::with_access(Recorder {
            owner: owner.map(str::to_string),
            seen: seen.clone(),
        });
        (s3, seen)
    }

    /// A server over a new temporary folder that holds one request back, as a slow S3
    /// answer would (see [`Hold`]).
    pub fn holding(hold: Hold) -> (S3, Arc<Held>) {
        let held = Arc::new(Held::default());
        let s3 = S3::with_access(Holder {
            hold,
            held: held.clone(),
        });
        (s3, held)
    }

    /// A server over a new temporary folder whose requests, once their signature is
    /// verified, go through `access`.
    fn with_access(access: impl s3s::access::S3Access) -> S3 {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut b = builder(dir.path());
        b.set_access(access);
        S3 {
            root: dir.path().to_path_buf(),
            _dir: Some(dir),
            service: b.build(),
            accepted: Arc::default(),
        }
    }

    /// An SDK configuration whose HTTP client is the in-process server, for building
    /// clients the way the binaries do (`cloudtrail_aggregator::aws::s3_client`).
    pub fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests"),
            ))
            .region(Region::new(REGION))
            .endpoint_url("http://s3.local")
            .http_client(s3s_aws::Client::from(self.service.clone()))
            .build()
    }

    /// An SDK client whose HTTP client is the in-process server, path-style.
    pub fn client(&self) -> Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            ))
            .region(Region::new(REGION))
            .endpoint_url("http://s3.local")
            .force_path_style(true)
            .http_client(s3s_aws::Client::from(self.service.clone()))
            .build();
        Client::from_conf(conf)
    }

    /// Serves the same buckets over TCP on 127.0.0.1 (TCP_NODELAY set); returns the
    /// endpoint URL. The server lives as long as the current tokio runtime.
    pub async fn serve_tcp(&self) -> String {
        self.serve_tcp_breaking(Arc::default()).await
    }

    /// [`S3::serve_tcp`], whose answers to the GETs `breaks` names break off mid-body
    /// (the connection is dropped, as a lost connection would be).
    pub async fn serve_tcp_breaking(&self, breaks: Arc<Breaks>) -> String {
        self.serve(breaks, Arc::default()).await
    }

    /// [`S3::serve_tcp`], with `faults` injected into the requests it is sent.
    pub async fn serve_tcp_faulty(&self, faults: Arc<Faults>) -> String {
        self.serve(Arc::default(), faults).await
    }

    /// How many connections the TCP server accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    async fn serve(&self, breaks: Arc<Breaks>, faults: Arc<Faults>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let service = self.service.clone();
        let accepted = self.accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, Ordering::Relaxed);
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let breaks = breaks.clone();
                let faults = faults.clone();
                let breaking = hyper::service::service_fn(move |req| {
                    let service = service.clone();
                    let mut after = breaks.next(&req);
                    let unranged = breaks.unranged && req.headers().contains_key("range");
                    let fault = faults.pick(&req);
                    async move {
                        let answer_with = |status: u16, code: &str| {
                            let xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test</Message><RequestId>test</RequestId></Error>");
                            let mut r = hyper::Response::new(BreakAfter {
                                body: s3s::Body::from(xml),
                                after: None,
                            });
                            *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            r.headers_mut()
                                .insert("content-type", "application/xml".parse().unwrap());
                            Ok(r)
                        };
                        match fault {
                            Some(Fault::SlowDown) => return answer_with(503, "SlowDown"),
                            Some(Fault::Internal) => return answer_with(500, "InternalError"),
                            Some(Fault::Drop) => {
                                return Err(s3s::HttpError::new(
                                    "connection dropped by the test".into(),
                                ))
                            }
                            Some(Fault::SlowFirstByte(d)) => tokio::time::sleep(d).await,
                            _ => {}
                        }
                        let mut answer = hyper::service::Service::call(&service, req).await?;
                        if unranged {
                            answer.headers_mut().remove("content-range");
                        }
                        let len = answer
                            .headers()
                            .get("content-length")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<usize>().ok())
                            .unwrap_or(0);
                        match fault {
                            Some(Fault::CutBody { announced }) if len > 1 => {
                                after = Some(len / 2);
                                if !announced {
                                    answer.headers_mut().remove("content-length");
                                }
                            }
                            Some(Fault::OtherSize) if len > 1 => {
                                let other = vec![b'x'; len / 2];
                                answer
                                    .headers_mut()
                                    .insert("content-length", other.len().into());
                                *answer.body_mut() = s3s::Body::from(other);
                            }
                            _ => {}
                        }
                        Ok::<_, s3s::HttpError>(answer.map(|body| BreakAfter { body, after }))
                    }
                });
                tokio::spawn(async move {
                    let builder = ConnBuilder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(TokioIo::new(socket), breaking)
                        .await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// An SDK configuration for the tests' credentials and the server at `endpoint`
    /// (from [`S3::serve_tcp`]): the SDK's own HTTP client and the binaries' retries, as
    /// in the Lambda.
    pub fn sdk_config_at(endpoint: &str) -> aws_config::SdkConfig {
        S3::sdk_config_retrying(endpoint, cloudtrail_aggregator::aws::retry_config())
    }

    /// [`S3::sdk_config_at`] with other retries.
    pub fn sdk_config_retrying(
        endpoint: &str,
        retries: aws_config::retry::RetryConfig,
    ) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(
                Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests"),
            ))
            .region(Region::new(REGION))
            .endpoint_url(endpoint)
            .retry_config(retries)
            .build()
    }
}

/// Which GET answers a TCP server breaks off: the first `times` GETs whose path
/// contains `target` stop after `after` bytes of body. Records the `Range` header of
/// every GET of `target`. With `unranged`, answers to a GET with a `Range` lose their
/// `Content-Range`, as from a server that ignores ranges.
#[derive(Debug, Default)]
pub struct Breaks {
    pub target: String,
    pub after: usize,
    pub times: usize,
    pub unranged: bool,
    pub ranges: Mutex<Vec<Option<String>>>,
}

impl Breaks {
    /// After how many bytes the answer to `req` breaks off, if it does.
    fn next<B>(&self, req: &hyper::Request<B>) -> Option<usize> {
        if self.target.is_empty()
            || req.method() != hyper::Method::GET
            || !req.uri().path().contains(&self.target)
        {
            return None;
        }
        let range = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut ranges = self.ranges.lock().unwrap();
        ranges.push(range);
        (ranges.len() <= self.times).then_some(self.after)
    }
}

/// A rate that faults the first attempt of every request and no other.
pub const FIRST_ATTEMPT: u64 = u64::MAX;

/// A fault the test server injects into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 SlowDown`, as S3 answers while it scales a prefix up.
    SlowDown,
    /// `500 InternalError`.
    Internal,
    /// The connection closed before any answer.
    Drop,
    /// The answer's body broken off halfway, with its `Content-Length` announced or
    /// without (sent chunked).
    CutBody { announced: bool },
    /// The answer held back this long before its first byte.
    SlowFirstByte(std::time::Duration),
    /// The answer is an object of another size than the one listed (replaced since).
    OtherSize,
}

/// Which requests get which fault: the first rule whose operation matches and whose
/// draw falls under its rate. The draw is a hash of the seed, the request (method,
/// path and query) and how many times that request was sent before, so a run's faults
/// do not depend on timing.
#[derive(Debug, Default)]
pub struct Faults {
    pub seed: u64,
    /// (operation as [`operation`] names it, or `"*"`, optionally followed by a space and
    /// the start of the path, e.g. `"GetObject /cloudtrail-logs/"`; the fault; per mille
    /// of the requests, 1000 for every one, [`FIRST_ATTEMPT`] for the first attempt of
    /// every request: each is sent again and then passes).
    pub rules: Vec<(&'static str, Fault, u64)>,
    sent: Mutex<HashMap<String, u64>>,
    /// The faults injected, as (operation, fault).
    pub injected: Mutex<Vec<(&'static str, Fault)>>,
}

impl Faults {
    pub fn new(seed: u64, rules: Vec<(&'static str, Fault, u64)>) -> Arc<Faults> {
        Arc::new(Faults {
            seed,
            rules,
            ..Faults::default()
        })
    }

    fn pick<B>(&self, req: &hyper::Request<B>) -> Option<Fault> {
        if self.rules.is_empty() {
            return None;
        }
        let op = operation(req);
        let what = format!("{} {}", req.method(), req.uri());
        let n = {
            let mut sent = self.sent.lock().unwrap();
            let n = sent.entry(what.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let draw = fnv(&format!("{}|{what}|{n}", self.seed)) % 1000;
        let fault = self
            .rules
            .iter()
            .find(|(rule, _, per_mille)| {
                let (rule_op, path) = rule.split_once(' ').unwrap_or((rule, ""));
                let hit = match *per_mille {
                    FIRST_ATTEMPT => n == 1,
                    rate => draw < rate,
                };
                (rule_op == "*" || rule_op == op) && req.uri().path().starts_with(path) && hit
            })
            .map(|(_, f, _)| *f)?;
        self.injected.lock().unwrap().push((op, fault));
        Some(fault)
    }

    /// How many faults were injected into `op`.
    pub fn count(&self, op: &str) -> usize {
        self.injected
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| *o == op)
            .count()
    }
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// The S3 operation of a request, from its method and query.
pub fn operation<B>(req: &hyper::Request<B>) -> &'static str {
    let query = req.uri().query().unwrap_or("");
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    match *req.method() {
        hyper::Method::GET if has("list-type") => "ListObjectsV2",
        hyper::Method::GET => "GetObject",
        hyper::Method::HEAD => "HeadObject",
        hyper::Method::PUT if has("partNumber") => "UploadPart",
        hyper::Method::PUT => "PutObject",
        hyper::Method::POST if has("uploads") => "CreateMultipartUpload",
        hyper::Method::POST if has("uploadId") => "CompleteMultipartUpload",
        hyper::Method::POST if has("delete") => "DeleteObjects",
        hyper::Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        hyper::Method::DELETE => "DeleteObject",
        _ => "other",
    }
}

/// A body that fails after `after` bytes, if set.
struct BreakAfter {
    body: s3s::Body,
    after: Option<usize>,
}

impl http_body::Body for BreakAfter {
    type Data = bytes::Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        use std::task::Poll;
        if self.after == Some(0) {
            return Poll::Ready(Some(Err("broken off by the test".into())));
        }
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx));
        let Some(Ok(frame)) = frame else {
            return Poll::Ready(frame);
        };
        let (Some(left), Some(data)) = (self.after, frame.data_ref()) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let sent = data.len().min(left);
        let cut = data.slice(..sent);
        self.after = Some(left - sent);
        Poll::Ready(Some(Ok(http_body::Frame::data(cut))))
    }
}

/// A request a recording server was sent (after its signature was verified).
#[derive(Debug, Clone)]
pub struct Request {
    /// The S3 operation, e.g. `GetObject`.
    pub op: String,
    /// Its path and query.
    pub uri: String,
    /// Its `x-amz-expected-bucket-owner` header.
    pub owner: Option<String>,
    /// Whether the SDK sent it (it carries `amz-sdk-invocation-id`).
    pub sdk: bool,
    /// Its `x-amz-sdk-checksum-algorithm` header, or the name of an `x-amz-checksum-*`
    /// header it carries.
    pub checksum: Option<String>,
}

pub type Seen = Arc<Mutex<Vec<Request>>>;

struct Recorder {
    owner: Option<String>,
    seen: Seen,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Recorder {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        let header = |name: &str| {
            cx.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request = Request {
            op: cx.s3_op().name().to_string(),
            uri: cx
                .uri()
                .path_and_query()
                .map_or_else(String::new, |p| p.to_string()),
            owner: header("x-amz-expected-bucket-owner"),
            sdk: header("amz-sdk-invocation-id").is_some(),
            checksum: header("x-amz-sdk-checksum-algorithm").or_else(|| {
                cx.headers()
                    .keys()
                    .find(|k| k.as_str().starts_with("x-amz-checksum-"))
                    .map(|k| k.to_string())
            }),
        };
        self.seen.lock().unwrap().push(request.clone());
        match (&self.owner, &request.owner) {
            (Some(want), Some(h)) if h != want => {
                return Err(s3s::s3_error!(
                    AccessDenied,
                    "the bucket owner is not {}",
                    h
                ))
            }
            _ => {}
        }
        Ok(())
    }
}

pub async fn create_bucket(s3: &Client, bucket: &str) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create bucket");
}

pub async fn put(s3: &Client, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.into()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
}

pub async fn get(s3: &Client, bucket: &str, key: &str) -> Option<Vec<u8>> {
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
        Err(e) => {
            let svc = e.into_service_error();
            assert!(svc.is_no_such_key(), "get {key}: {svc:?}");
            None
        }
    }
}

/// Every key under `prefix`, sorted.
pub async fn keys(s3: &Client, bucket: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.try_next().await.unwrap() {
        for o in page.contents() {
            out.push(o.key().unwrap().to_string());
        }
    }
    out.sort();
    out
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// A CloudTrail-shaped record with the awkward bits of real ones: HTML-safe escapes,
/// escaped newlines inside a policy document, non-ASCII text, a big integer.
pub fn record(account: &str, region: &str, i: usize) -> String {
    format!(
        concat!(
            "{{\"eventVersion\":\"1.08\",\"userIdentity\":{{\"type\":\"AssumedRole\",",
            "\"principalId\":\"AROAEXAMPLE:session-{i}\",\"arn\":\"arn:aws:sts::{account}:assumed-role/Admin/s{i}\",",
            "\"accountId\":\"{account}\"}},\"eventTime\":\"2024-02-12T{h:02}:{m:02}:{s:02}Z\",",
            "\"eventSource\":\"iam.amazonaws.com\",\"eventName\":\"PutRolePolicy\",\"awsRegion\":\"{region}\",",
            "\"sourceIPAddress\":\"203.0.113.{ip}\",\"userAgent\":\"aws-cli/2.15.0 Python/3.11 m\\u003dx\",",
            "\"requestParameters\":{{\"policyDocument\":\"{{\\n  \\\"Version\\\": \\\"2012-10-17\\\"\\n}}\",",
            "\"note\":\"Zoë \\u0026 東京 {i}\"}},\"responseElements\":null,",
            "\"requestID\":\"{i:08x}-aaaa\",\"eventID\":\"{i:08x}-{account}\",\"readOnly\":false,",
            "\"eventType\":\"AwsApiCall\",\"recipientAccountId\":\"{account}\",\"n\":123456789012345678901}}"
        ),
        account = account,
        region = region,
        i = i,
        h = (i / 3600) % 24,
        m = (i / 60) % 60,
        s = i % 60,
        ip = i % 250,
    )
}

/// A delivery file body `{"Records":[...]}` in AWS's compact form.
pub fn delivery(records: &[String]) -> Vec<u8> {
    format!("{{\"Records\":[{}]}}", records.join(",")).into_bytes()
}

/// CloudTrail's key for a delivery file.
pub fn log_key(prefix: &str, account: &str, region: &str, day: &str, n: usize) -> String {
    let compact = day.replace('/', "");
    format!(
        "{prefix}{account}/CloudTrail/{region}/{day}/{account}_CloudTrail_{region}_{compact}T{:04}Z_{n:016x}.json.gz",
        n % 2400
    )
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The records of a source file as the aggregator must write them: the exact bytes,
/// or — for a record with raw line breaks — the same value on one line.
pub fn expected_lines(file: &[u8]) -> Vec<Expected> {
    let json = if file.starts_with(&[0x1f, 0x8b]) {
        gunzip(file)
    } else {
        file.to_vec()
    };
    #[derive(serde::Deserialize)]
    struct F {
        #[serde(rename = "Records")]
        records: Vec<Box<serde_json::value::RawValue>>,
    }
    let f: F = serde_json::from_slice(&json).expect("oracle parse");
    f.records
        .iter()
        .map(|r| {
            let raw = r.get();
            if raw.contains('\n') || raw.contains('\r') {
                Expected::Value(serde_json::from_str(raw).unwrap())
            } else {
                Expected::Bytes(raw.as_bytes().to_vec())
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
pub enum Expected {
    Bytes(Vec<u8>),
    Value(serde_json::Value),
}

/// Asserts that the NDJSON `got` holds exactly the `want` records, in order.
pub fn assert_lines(got: &[u8], want: &[Expected]) {
    assert!(
        got.is_empty() || got.ends_with(b"\n"),
        "NDJSON must end with a newline"
    );
    let lines: Vec<&[u8]> = if got.is_empty() {
        Vec::new()
    } else {
        got[..got.len() - 1].split(|b| *b == b'\n').collect()
    };
    assert_eq!(lines.len(), want.len(), "record count");
    for (i, (line, want)) in lines.iter().zip(want).enumerate() {
        match want {
            Expected::Bytes(b) => assert!(
                *line == b.as_slice(),
                "record {i} differs:\n got {}\nwant {}",
                String::from_utf8_lossy(line),
                String::from_utf8_lossy(b)
            ),
            Expected::Value(v) => {
                let got: serde_json::Value = serde_json::from_slice(line).unwrap();
                assert_eq!(&got, v, "record {i}");
                assert!(!line.contains(&b'\r'));
            }
        }
    }
}

/// `n` delivery files of account 111111111111 in us-east-1 on `day`, each of one record
/// with a random hex string of `chars` characters (gzip keeps ~half of it), sorted by key.
pub fn random_files(n: usize, chars: usize, day: &str) -> Vec<(String, Vec<u8>)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let blob: String = (0..chars)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from_digit((state & 15) as u32, 16).unwrap()
        })
        .collect();
    let mut files: Vec<(String, Vec<u8>)> = (0..n)
        .map(|n| {
            let rec = format!("{{\"eventID\":\"{n}\",\"blob\":\"{blob}\"}}");
            let key = log_key("AWSLogs/", "111111111111", "us-east-1", day, n);
            (key, gzip(&delivery(&[rec])))
        })
        .collect();
    files.sort();
    files
}

/// Which request a holding server holds back, and until when: the first request of
/// operation `op` whose URI (with `%2F` read as `/`) contains `target` waits until
/// `others` more requests of that operation have been let through, or for `at_most`.
#[derive(Debug, Clone)]
pub struct Hold {
    pub op: &'static str,
    pub target: String,
    pub others: usize,
    pub at_most: std::time::Duration,
}

/// What a holding server saw.
#[derive(Debug, Default)]
pub struct Held {
    /// Whether the target request came (and was held).
    pub held: std::sync::atomic::AtomicBool,
    /// Requests of the same operation let through while it was held.
    pub passed: std::sync::atomic::AtomicUsize,
    /// Whether it has been let go.
    pub released: std::sync::atomic::AtomicBool,
}

struct Holder {
    hold: Hold,
    held: Arc<Held>,
}

#[async_trait::async_trait]
impl s3s::access::S3Access for Holder {
    async fn check(&self, cx: &mut s3s::access::S3AccessContext<'_>) -> s3s::S3Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        if cx.s3_op().name() != self.hold.op {
            return Ok(());
        }
        let uri = cx.uri().to_string().replace("%2F", "/");
        let h = &self.held;
        if uri.contains(&self.hold.target) && !h.held.swap(true, SeqCst) {
            let until = tokio::time::Instant::now() + self.hold.at_most;
            while h.passed.load(SeqCst) < self.hold.others && tokio::time::Instant::now() < until {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            h.released.store(true, SeqCst);
        } else if h.held.load(SeqCst) && !h.released.load(SeqCst) {
            h.passed.fetch_add(1, SeqCst);
        }
        Ok(())
    }
}

/// The requests a [`forward_proxy`] forwarded, as `METHOD absolute-URI`.
pub type Proxied = Arc<Mutex<Vec<String>>>;

/// An HTTP forward proxy on 127.0.0.1 (for `http://` targets: absolute-form requests
/// forwarded over a new connection each): returns its URL and the requests it
/// forwarded. It lives as long as the current tokio runtime.
pub async fn forward_proxy() -> (String, Proxied) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let proxied: Proxied = Arc::default();
    let seen = proxied.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            let forward = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock()
                            .unwrap()
                            .push(format!("{} {}", req.method(), req.uri()));
                        let authority = req.uri().authority().expect("absolute-form").to_string();
                        let origin_form = req
                            .uri()
                            .path_and_query()
                            .map_or("/", |p| p.as_str())
                            .parse()
                            .unwrap();
                        *req.uri_mut() = origin_form;
                        let upstream = tokio::net::TcpStream::connect(&authority).await?;
                        let (mut send, conn) =
                            hyper::client::conn::http1::handshake(TokioIo::new(upstream))
                                .await
                                .map_err(std::io::Error::other)?;
                        tokio::spawn(conn);
                        send.send_request(req).await.map_err(std::io::Error::other)
                    }
                },
            );
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), forward)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), proxied)
}

/// A day's output folder is whole: its `_manifest.json` lists exactly the chunks in the
/// folder, in order, and they hold exactly `want`, in order.
pub async fn assert_day_whole(s3: &Client, bucket: &str, folder: &str, want: &[Expected]) {
    let manifest = get(s3, bucket, &format!("{folder}_manifest.json"))
        .await
        .expect("a manifest");
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let listed: Vec<String> = manifest["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap().to_string())
        .collect();
    let present: Vec<String> = keys(s3, bucket, folder)
        .await
        .into_iter()
        .filter(|k| k.ends_with(".ndjson.gz"))
        .collect();
    assert_eq!(
        listed, present,
        "the manifest lists exactly the chunks in the folder"
    );
    let mut ndjson = Vec::new();
    for k in &present {
        ndjson.extend(gunzip(&get(s3, bucket, k).await.unwrap()));
    }
    assert_lines(&ndjson, want);
    assert_eq!(manifest["records"], want.len() as u64);
}

/// A CloudTrail-shaped record of `account` in `region` at `time` (RFC 3339), with
/// `id` as its eventID (and AWS's `\u003d` escape, so that byte-exactness shows).
pub fn event_record(account: &str, region: &str, time: &str, id: &str) -> String {
    format!(
        concat!(
            "{{\"eventVersion\":\"1.09\",\"userIdentity\":{{\"type\":\"AssumedRole\",\"accountId\":\"{account}\"}},",
            "\"eventTime\":\"{time}\",\"eventSource\":\"s3.amazonaws.com\",\"eventName\":\"GetObject\",",
            "\"awsRegion\":\"{region}\",\"userAgent\":\"aws-sdk-go m\\u003dx\",\"requestID\":\"r-{id}\",",
            "\"eventID\":\"{id}\",\"readOnly\":true,\"recipientAccountId\":\"{account}\"}}"
        ),
        account = account,
        region = region,
        time = time,
        id = id,
    )
}

/// Delivery folders 2024/02/11, 12 and 13 of two accounts × two regions that straddle
/// midnight, sorted by key. In each folder F: the first file holds two events of the
/// day before at 23:5x (delivered after midnight) and one of F at 00:01, and repeats
/// the last event of the folder before's last file (an event delivered twice, across
/// folders); the second file holds three events of F; the third two events of F at
/// 23:5x and a repeat of the second file's first event (twice in one folder). In
/// 2024/02/13 one file also holds an event of 2024-02-11 (two days late).
pub fn straddling_days() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (fi, folder) in ["2024-02-11", "2024-02-12", "2024-02-13"]
        .iter()
        .enumerate()
    {
        let before = ["2024-02-10", "2024-02-11", "2024-02-12"][fi];
        let path = folder.replace('-', "/");
        for account in ["111111111111", "222222222222"] {
            for region in ["eu-west-1", "us-east-1"] {
                let id = |f: &str, n: usize, k: usize| format!("{account}-{region}-{f}-{n}-{k}");
                let ev = |t: String, i: String| event_record(account, region, &t, &i);
                let mut first = vec![
                    ev(format!("{before}T23:58:01Z"), id(folder, 0, 0)),
                    ev(format!("{before}T23:59:59Z"), id(folder, 0, 1)),
                    ev(format!("{folder}T00:01:00Z"), id(folder, 0, 2)),
                ];
                if fi > 0 {
                    // The folder before's last file's last event, delivered again.
                    let prev = ["2024-02-11", "2024-02-12"][fi - 1];
                    first.push(ev(format!("{prev}T23:57:00Z"), id(prev, 2, 1)));
                }
                let mut second: Vec<String> = (0..3)
                    .map(|k| ev(format!("{folder}T10:0{k}:00Z"), id(folder, 1, k)))
                    .collect();
                if fi == 2 && account == "111111111111" && region == "eu-west-1" {
                    second.push(ev("2024-02-11T12:00:00Z".into(), id("late", 1, 9)));
                }
                let third = vec![
                    ev(format!("{folder}T23:55:00Z"), id(folder, 2, 0)),
                    ev(format!("{folder}T23:57:00Z"), id(folder, 2, 1)),
                    ev(format!("{folder}T10:00:00Z"), id(folder, 1, 0)),
                ];
                for (n, recs) in [first, second, third].iter().enumerate() {
                    let key = log_key("AWSLogs/", account, region, &path, n);
                    files.push((key, gzip(&delivery(recs))));
                }
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// What an event day must hold, computed from the sources independently of the
/// aggregator: the records of the delivery folders `day` and the next, in key order,
/// whose eventTime is on `day` (UTC), with `dedup` the first of each eventID.
/// Returns (records, records read, of other days, duplicates).
pub fn event_day_oracle(
    files: &[(String, Vec<u8>)],
    day: &str,
    dedup: bool,
) -> (Vec<Expected>, u64, u64, u64) {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
    let folders = [d, d.succ_opt().unwrap()].map(|d| format!("/{}/", d.format("%Y/%m/%d")));
    let (mut out, mut read, mut other, mut dups) = (Vec::new(), 0, 0, 0);
    let mut seen = std::collections::HashSet::new();
    for (key, body) in files {
        if !folders.iter().any(|f| key.contains(f.as_str())) {
            continue;
        }
        let values: serde_json::Value = serde_json::from_slice(&gunzip(body)).unwrap();
        let records = values["Records"].as_array().unwrap();
        for (record, expected) in records.iter().zip(expected_lines(body)) {
            read += 1;
            let time = record["eventTime"].as_str().unwrap();
            let on = chrono::DateTime::parse_from_rfc3339(time)
                .unwrap()
                .with_timezone(&chrono::Utc)
                .date_naive();
            if on != d {
                other += 1;
                continue;
            }
            if dedup {
                if let Some(id) = record["eventID"].as_str() {
                    if !seen.insert(id.to_string()) {
                        dups += 1;
                        continue;
                    }
                }
            }
            out.push(expected);
        }
    }
    (out, read, other, dups)
}

/// The configuration of a day from the source bucket `cloudtrail-logs` to `aggregated`,
/// with `vars` laid over the defaults.
pub fn config_with(vars: &[(&str, &str)]) -> cloudtrail_aggregator::Config {
    let mut map: HashMap<String, String> = [
        ("SRC_BUCKET", "cloudtrail-logs"),
        ("DST_BUCKET", "aggregated"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    cloudtrail_aggregator::Config::from_map(&map).unwrap()
}

/// `objects` (key, bytes) with the manifests' shard end times blanked: the only bytes
/// of a day's output that a rerun over the same sources does not write again the same.
pub fn without_end_times(objects: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    objects
        .into_iter()
        .map(|(k, v)| {
            if !k.ends_with("_manifest.json") {
                return (k, v);
            }
            let mut m: serde_json::Value = serde_json::from_slice(&v).expect("a manifest");
            for s in m["shards"].as_array_mut().expect("shards").iter_mut() {
                assert!(s["ended"].is_string(), "a shard's end time: {s}");
                s["ended"] = serde_json::Value::from("");
            }
            (k, serde_json::to_vec(&m).unwrap())
        })
        .collect()
}
