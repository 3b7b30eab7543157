//! The benchmark: `cargo run --release --example bench -- [OPTIONS]`.
//!
//! Generates synthetic CloudTrail days of realistic shape (cached under `--data`),
//! serves them from an S3 protocol server (s3s-fs, TCP_NODELAY, an injectable
//! per-request latency) in a child process, and runs the real aggregation — the
//! library's `aggregate_day` through the same client set-up as the binaries — in
//! another child process, so that its CPU time and peak RSS are its own. Each run's
//! output is checked (record count and a digest of the NDJSON) against what the
//! generator wrote. The floor — gunzip of the sources plus gzip of the NDJSON on one
//! core, measured in the same run — is reported beside it, and so is the CPU the
//! server used during each run (it shares the machine's cores with the aggregator).
//!
//! Shapes:
//! - `seed`:  ~3,900 files (~44 % under 1 KB), ~17,000 records: the seed's day;
//! - `small`: ~1,000 files, ~20 MB of NDJSON: the flatness check's small day;
//! - `org`:   ~100,000 files over 200 accounts × 17 regions, ~2 GB of NDJSON;
//! - `big`:   one delivery file of ~1 GB uncompressed (`big-N`: of N MB; `big-3200` is a
//!   306 MB gzip file, the one BENCHMARKS.md measures);
//! - `twoday`: the `org` day's folder and the next day's (02/13, whose first file per
//!   region holds 02-12's last minutes): for `--day-by event` (the event day 02-12
//!   reads both folders);
//! - `busy`:  136 files of ~1 MB gzip (a busy account's day, ~800 MB of NDJSON);
//! - `wide`:  ~100,000 files over 1,000 accounts × 17 regions, 6 per folder, ~2 GB:
//!   an organisation of many quiet accounts (18,000 LISTs).
//! - `org-N`: the org day's shape with N accounts (~10 MB of NDJSON each; `org-2` is
//!   `small`, `org-200` is `org`): for peak RSS against the size of the day.
//!
//! Options: `--shapes seed,org,big` (default `seed`), `--latency-ms 25`, `--runs 3`,
//! `--data target/bench-data`, `--seed-algorithm` (also run, once each, the seed's
//! algorithm sequentially and with 4 threads on the same data and server; shapes of more
//! than 10,000 files are skipped unless `--seed-algorithm-all` is given),
//! `--formats ndjson,parquet` (default `ndjson`; each format writes under its own prefix,
//! `cloudtrail-daily-<format>/`, so both days stay for `scripts/query_bytes.py`),
//! `--day-by delivery,event,event-indexed` (default `delivery`; `event` runs write under
//! `cloudtrail-daily-<format>-event/` and are checked against the event day;
//! `event-indexed` runs the event day 02-13 once first, untimed but printed, so that
//! the runs of 02-12 find its delivery index and skip what it vouches for),
//! `--validate off,report` (default `off`; runs not `off` sign digests for the shape once,
//! see `digests.rs`, and check the manifest says every file and digest verified),
//! `--tail-every 100 --tail-ms 250` (a latency tail: one request in every 100, picked
//! by a hash of its path and query so that runs are alike, takes 250 ms instead).
//!
//! `bench scan [--shapes big]` times the record scanner alone (one core, sources
//! gunzipped into memory first). Internal modes: `gen`, `serve`, `agg`, `seedalg`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

mod digests;
mod fanout;

const SRC: &str = "bench-src";
const DST: &str = "bench-dst";
const DAY: &str = "2024/02/12";
/// `--seed-algorithm` skips shapes with more files than this (`--seed-algorithm-all` does not).
const SEED_ALGORITHM_MAX_FILES: u64 = 10_000;
const ACCESS_KEY: &str = "AKIDBENCHBENCH";
const SECRET_KEY: &str = "bench-secret";
const REGIONS: [&str; 17] = [
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eu-central-1",
    "eu-north-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "sa-east-1",
    "ap-northeast-3",
];

// ---------------------------------------------------------------- data

/// splitmix64: a small deterministic generator.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NAMES: [(&str, &str); 12] = [
    ("s3", "GetObject"),
    ("s3", "PutObject"),
    ("ec2", "DescribeInstances"),
    ("sts", "AssumeRole"),
    ("iam", "GetRole"),
    ("kms", "Decrypt"),
    ("lambda", "Invoke"),
    ("logs", "PutLogEvents"),
    ("dynamodb", "GetItem"),
    ("ssm", "GetParameter"),
    ("cloudtrail", "LookupEvents"),
    ("ecr", "GetAuthorizationToken"),
];

/// One CloudTrail-shaped record (~1.4 KB) with realistic variety.
fn record(rng: &mut Rng, account: &str, region: &str, seq: u64) -> String {
    record_on(rng, account, region, seq, "2024-02-12")
}

/// [`record`] at second `seq % 86,400` of `date` (`YYYY-MM-DD`).
fn record_on(rng: &mut Rng, account: &str, region: &str, seq: u64, date: &str) -> String {
    let (svc, name) = NAMES[rng.below(NAMES.len() as u64) as usize];
    let role = ["Admin", "ReadOnly", "Deployer", "Lambda-exec", "ci-runner"][rng.below(5) as usize];
    let t = seq % 86_400;
    let (h, m, s) = (t / 3600, (t / 60) % 60, t % 60);
    let id = rng.next();
    let ip = rng.next();
    format!(
        concat!(
            "{{\"eventVersion\":\"1.08\",\"userIdentity\":{{\"type\":\"AssumedRole\",\"principalId\":\"AROA{pid:016X}:session-{sess}\",",
            "\"arn\":\"arn:aws:sts::{acct}:assumed-role/{role}/session-{sess}\",\"accountId\":\"{acct}\",\"accessKeyId\":\"ASIA{key:016X}\",",
            "\"sessionContext\":{{\"sessionIssuer\":{{\"type\":\"Role\",\"principalId\":\"AROA{pid:016X}\",\"arn\":\"arn:aws:iam::{acct}:role/{role}\",",
            "\"accountId\":\"{acct}\",\"userName\":\"{role}\"}},\"webIdFederationData\":{{}},\"attributes\":{{\"creationDate\":\"{date}T{h:02}:{m:02}:{s:02}Z\",",
            "\"mfaAuthenticated\":\"false\"}}}}}},\"eventTime\":\"{date}T{h:02}:{m:02}:{s:02}Z\",\"eventSource\":\"{svc}.amazonaws.com\",",
            "\"eventName\":\"{name}\",\"awsRegion\":\"{region}\",\"sourceIPAddress\":\"{ip1}.{ip2}.{ip3}.{ip4}\",",
            "\"userAgent\":\"aws-sdk-go-v2/1.24.1 os/linux lang/go#1.21.6 md/GOOS#linux api/{svc}#1.{ua}\",",
            "\"requestParameters\":{{\"resource\":\"arn:aws:{svc}:{region}:{acct}:thing/{res:x}\",\"filter\":\"k\\u003dv\\u0026x\"}},\"responseElements\":null,",
            "\"requestID\":\"{r1:08x}-{r2:04x}-4{r3:03x}-a{r4:03x}-{r5:012x}\",\"eventID\":\"{e1:08x}-{e2:04x}-4{e3:03x}-b{e4:03x}-{e5:012x}\",",
            "\"readOnly\":true,\"eventType\":\"AwsApiCall\",\"managementEvent\":true,\"recipientAccountId\":\"{acct}\",\"eventCategory\":\"Management\",",
            "\"tlsDetails\":{{\"tlsVersion\":\"TLSv1.3\",\"cipherSuite\":\"TLS_AES_128_GCM_SHA256\",\"clientProvidedHostHeader\":\"{svc}.{region}.amazonaws.com\"}}}}"
        ),
        pid = id,
        sess = id % 100_000,
        acct = account,
        role = role,
        key = id.rotate_left(17),
        h = h, m = m, s = s, date = date,
        svc = svc, name = name, region = region,
        ip1 = ip & 0xff, ip2 = (ip >> 8) & 0xff, ip3 = (ip >> 16) & 0xff, ip4 = (ip >> 24) & 0xff,
        ua = ip % 300,
        res = ip >> 20,
        r1 = id as u32, r2 = (id >> 32) as u16, r3 = (id >> 48) & 0xfff, r4 = ip & 0xfff, r5 = ip >> 16,
        e1 = ip as u32, e2 = (ip >> 32) as u16, e3 = (ip >> 48) & 0xfff, e4 = id & 0xfff, e5 = id >> 16,
    )
}

/// FNV-1a over the NDJSON, 64-bit: the output check.
#[derive(Clone, Copy)]
struct Digest(u64);
impl Digest {
    fn new() -> Self {
        Digest(0xcbf29ce484222325)
    }
    fn update(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Meta {
    files: u64,
    small_files: u64,
    records: u64,
    ndjson_bytes: u64,
    source_bytes: u64,
    digest: u64,
    /// The event day 2024-02-12 (`DAY_BY=event`), when it differs from the delivery
    /// day (`twoday`): its records and their digest.
    #[serde(default)]
    event_records: Option<u64>,
    #[serde(default)]
    event_digest: Option<u64>,
}

/// The NDJSON size in MB of a one-file shape: `big` (1,000) or `big-N`.
fn big_mb(shape: &str) -> Option<u64> {
    match shape {
        "big" => Some(1000),
        _ => shape
            .strip_prefix("big-")
            .map(|n| n.parse().expect("big-N: N in MB")),
    }
}

/// (accounts, files per region folder, most records of a multi-record file) of a
/// shape. 44 % of the files hold one record (under 1 KB gzip), the rest 3..=max.
fn shape_plan(shape: &str) -> (usize, usize, u64) {
    match shape {
        // 5 accounts × 17 regions × 46 files = 3,910 files, ~17,000 records.
        "seed" => (5, 46, 11),
        // 200 accounts × 17 regions × 29 files = 98,600 files, ~14 records each (~2 GB).
        "org" => (200, 29, 53),
        // 2 accounts × 17 regions × 29 files = 986 files (~20 MB).
        "small" => (2, 29, 53),
        // 1 account × 17 regions × 8 files = 136 files of up to 16,000 records (a busy
        // account's 5-minute files, ~1 MB gzip each): a day held back by the fetch
        // budget rather than by the number of files (~800 MB).
        "busy" => (1, 8, 16_000),
        // 1,000 accounts × 17 regions × 6 files = 102,000 files (~2 GB): an organisation
        // of many quiet accounts, where the 18,000 LISTs weigh as much as the GETs.
        "wide" => (1000, 6, 53),
        // The org day's shape with N accounts (~10 MB of NDJSON each): days of any size
        // on one pattern, to see how memory follows the size of the day.
        other => match other.strip_prefix("org-").map(str::parse::<usize>) {
            Some(Ok(accounts)) if accounts > 0 => (accounts, 29, 53),
            _ => panic!("unknown shape {other}"),
        },
    }
}

fn gzip_to(path: &Path, data: &[u8]) -> u64 {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut e = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::default());
    e.write_all(data).unwrap();
    let gz = e.finish().unwrap();
    std::fs::write(path, &gz).unwrap();
    gz.len() as u64
}

fn key_name(account: &str, region: &str, n: usize) -> String {
    key_name_on(account, region, DAY, n)
}

/// [`key_name`] in the delivery folder `day` (`YYYY/MM/DD`).
fn key_name_on(account: &str, region: &str, day: &str, n: usize) -> String {
    let compact = day.replace('/', "");
    format!(
        "AWSLogs/o-bench00001/{account}/CloudTrail/{region}/{day}/{account}_CloudTrail_{region}_{compact}T{:02}{:02}Z_{n:016x}.json.gz",
        (n / 12) % 24,
        (n * 5) % 60
    )
}

/// Writes the shape's source objects straight into the server's folder.
fn generate(shape: &str, dir: &Path) -> Meta {
    let root = dir.join("s3");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(root.join(DST)).unwrap();
    let mut rng = Rng(0x5eed ^ shape.len() as u64);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut meta = Meta {
        files: 0,
        small_files: 0,
        records: 0,
        ndjson_bytes: 0,
        source_bytes: 0,
        digest: 0,
        event_records: None,
        event_digest: None,
    };
    let mut write_file = |key: String, recs: Vec<String>, meta: &mut Meta| {
        let body = format!("{{\"Records\":[{}]}}", recs.join(","));
        let size = gzip_to(&root.join(SRC).join(&key), body.as_bytes());
        meta.files += 1;
        meta.small_files += (size < 1024) as u64;
        meta.records += recs.len() as u64;
        meta.source_bytes += size;
        files.push((key, recs.join("\n").into_bytes()));
    };
    if let Some(mb) = big_mb(shape) {
        // One delivery file of `mb` MB of NDJSON (~1 GB for `big`), written in a streaming way.
        let key = key_name("123456789012", "us-east-1", 0);
        let path = root.join(SRC).join(&key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut e = GzEncoder::new(out, Compression::default());
        e.write_all(b"{\"Records\":[").unwrap();
        let mut digest = Digest::new();
        let mut n = 0u64;
        while meta.ndjson_bytes < mb * 1_000_000 {
            let r = record(&mut rng, "123456789012", "us-east-1", n);
            if n > 0 {
                e.write_all(b",").unwrap();
            }
            e.write_all(r.as_bytes()).unwrap();
            digest.update(r.as_bytes());
            digest.update(b"\n");
            meta.ndjson_bytes += r.len() as u64 + 1;
            n += 1;
        }
        e.write_all(b"]}").unwrap();
        e.finish().unwrap().flush().unwrap();
        meta.files = 1;
        meta.records = n;
        meta.source_bytes = std::fs::metadata(&path).unwrap().len();
        meta.digest = digest.0;
        return meta;
    }
    if shape == "twoday" {
        return generate_two_days(&mut rng, &root, meta);
    }
    let (accounts, per_region, max_records) = shape_plan(shape);
    let mut seq = 0u64;
    for a in 0..accounts {
        let account = format!("{:012}", 100_000_000_000u64 + a as u64 * 7919);
        for region in REGIONS {
            for n in 0..per_region {
                let k = if rng.below(100) < 44 {
                    1
                } else {
                    1 + rng.below(max_records)
                };
                let recs: Vec<String> = (0..k)
                    .map(|_| {
                        seq += 1;
                        record(&mut rng, &account, region, seq)
                    })
                    .collect();
                write_file(key_name(&account, region, n), recs, &mut meta);
            }
        }
    }
    // The expected NDJSON: records in sorted key order.
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut digest = Digest::new();
    for (_, lines) in &files {
        digest.update(lines);
        digest.update(b"\n");
        meta.ndjson_bytes += lines.len() as u64 + 1;
    }
    meta.digest = digest.0;
    meta
}

/// `twoday`: the org day's delivery folders 2024/02/12 and 2024/02/13. Each region's
/// first file of 02/13 holds events of 02-12 at 23:55–23:59 (delivered after
/// midnight); every other record is on its folder's day. The delivery day 02-12 is its
/// folder; the event day 02-12 is that folder and those late files.
fn generate_two_days(rng: &mut Rng, root: &Path, mut meta: Meta) -> Meta {
    let (accounts, per_region, max_records) = shape_plan("org");
    // (key, records, whether the records are events of 02-12)
    let mut files: Vec<(String, String, bool)> = Vec::new();
    let mut seq = 0u64;
    for a in 0..accounts {
        let account = format!("{:012}", 100_000_000_000u64 + a as u64 * 7919);
        for region in REGIONS {
            for (day, date) in [(DAY, "2024-02-12"), ("2024/02/13", "2024-02-13")] {
                for n in 0..per_region {
                    let late = day != DAY && n == 0;
                    let k = if rng.below(100) < 44 {
                        1
                    } else {
                        1 + rng.below(max_records)
                    };
                    let recs: Vec<String> = (0..k)
                        .map(|_| {
                            seq += 1;
                            if late {
                                let t = 86_100 + seq % 300;
                                record_on(rng, &account, region, t, "2024-02-12")
                            } else {
                                record_on(rng, &account, region, seq, date)
                            }
                        })
                        .collect();
                    let key = key_name_on(&account, region, day, n);
                    let body = format!("{{\"Records\":[{}]}}", recs.join(","));
                    let size = gzip_to(&root.join(SRC).join(&key), body.as_bytes());
                    if day == DAY {
                        meta.files += 1;
                        meta.small_files += (size < 1024) as u64;
                        meta.records += recs.len() as u64;
                        meta.source_bytes += size;
                    }
                    files.push((key, recs.join("\n"), day == DAY || late));
                }
            }
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let (mut delivery, mut event) = (Digest::new(), Digest::new());
    let mut event_records = 0;
    for (key, lines, on_day) in &files {
        if key.contains(&format!("/{DAY}/")) {
            delivery.update(lines.as_bytes());
            delivery.update(b"\n");
            meta.ndjson_bytes += lines.len() as u64 + 1;
        }
        if *on_day {
            event.update(lines.as_bytes());
            event.update(b"\n");
            event_records += lines.lines().count() as u64;
        }
    }
    meta.digest = delivery.0;
    meta.event_records = Some(event_records);
    meta.event_digest = Some(event.0);
    meta
}

fn ensure_data(shape: &str, data: &Path) -> (PathBuf, Meta) {
    let dir = data.join(shape);
    let meta_path = dir.join("meta.json");
    if let Ok(bytes) = std::fs::read(&meta_path) {
        if let Ok(meta) = serde_json::from_slice::<Meta>(&bytes) {
            return (dir, meta);
        }
    }
    eprintln!(
        "generating the {shape} day under {} (once; cached)…",
        dir.display()
    );
    let t = Instant::now();
    let meta = generate(shape, &dir);
    std::fs::write(&meta_path, serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    eprintln!("  {meta:?} in {:.1}s", t.elapsed().as_secs_f64());
    (dir, meta)
}

// ---------------------------------------------------------------- server

/// The server's injected latency: `base` per request, `tail` instead for one request
/// in every `tail_every` (0: none), picked by a hash of the request's path and query.
#[derive(Clone, Copy)]
struct Latency {
    base: Duration,
    tail: Duration,
    tail_every: u64,
}

impl Latency {
    fn from_args(args: &[String]) -> Latency {
        let ms = |name: &str, default: u64| {
            Duration::from_millis(arg(args, name).map_or(default, |v| v.parse().unwrap()))
        };
        Latency {
            base: ms("--latency-ms", 25),
            tail: ms("--tail-ms", 250),
            tail_every: arg(args, "--tail-every").map_or(0, |v| v.parse().unwrap()),
        }
    }

    fn args(&self) -> Vec<String> {
        [
            ("--latency-ms", self.base.as_millis() as u64),
            ("--tail-ms", self.tail.as_millis() as u64),
            ("--tail-every", self.tail_every),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    }

    fn describe(&self) -> String {
        let base = format!("latency {} ms per request", self.base.as_millis());
        match self.tail_every {
            0 => base,
            n => format!("{base}, {} ms for one in {n}", self.tail.as_millis()),
        }
    }

    fn of(&self, uri: &hyper::Uri) -> Duration {
        if self.tail_every > 0 {
            let mut h = Digest::new();
            h.update(uri.path().as_bytes());
            h.update(uri.query().unwrap_or("").as_bytes());
            if (h.0 ^ (h.0 >> 32)).is_multiple_of(self.tail_every) {
                return self.tail;
            }
        }
        self.base
    }
}

/// Serves s3s-fs over `root` (see [`serve_service`]).
async fn serve(root: PathBuf, latency: Latency) {
    let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs root");
    serve_service(fs, latency, digests::served(&root).map(Arc::new)).await
}

/// Serves `s3` on a port of 127.0.0.1 (printed on stdout), TCP_NODELAY, with `latency`
/// injected and a stats endpoint (`/__bench/stats`: request counts and server CPU); with
/// `cloudtrail`, CloudTrail's `ListPublicKeys` is answered, and a digest's GET carries
/// its signature metadata (`--validate`).
async fn serve_service(
    s3: impl s3s::S3,
    latency: Latency,
    cloudtrail: Option<Arc<digests::Served>>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;
    use s3s::service::S3ServiceBuilder;

    let mut b = S3ServiceBuilder::new(s3);
    b.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = b.build();
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default()); // GET, PUT/POST, LIST, other
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let service = service.clone();
        let counts = counts.clone();
        let cloudtrail = cloudtrail.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let service = service.clone();
                    let counts = counts.clone();
                    let cloudtrail = cloudtrail.clone();
                    async move {
                        if req.uri().path() == "/__bench/stats" {
                            let c: Vec<u64> =
                                counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                            // The server's own CPU so far (all its threads).
                            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
                            // SAFETY: getrusage fills the struct it is given.
                            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
                            let cpu = seconds(ru.ru_utime) + seconds(ru.ru_stime);
                            let body = format!("{} {} {} {} {cpu:.6}", c[0], c[1], c[2], c[3]);
                            return Ok(hyper::Response::new(s3s::Body::from(body)));
                        }
                        let q = req.uri().query().unwrap_or("");
                        let slot = match *req.method() {
                            hyper::Method::GET if q.contains("list-type=2") => 2,
                            hyper::Method::GET => 0,
                            hyper::Method::PUT | hyper::Method::POST => 1,
                            _ => 3,
                        };
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                        let wait = latency.of(req.uri());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        let target = req.headers().get("x-amz-target");
                        let asks_keys = target
                            .and_then(|t| t.to_str().ok())
                            .is_some_and(|t| t.ends_with(".ListPublicKeys"));
                        let Some(ct) = cloudtrail else {
                            return hyper::service::Service::call(&service, req).await;
                        };
                        if asks_keys {
                            return Ok(hyper::Response::builder()
                                .header("content-type", "application/x-amz-json-1.1")
                                .body(s3s::Body::from(ct.public_keys.clone()))
                                .unwrap());
                        }
                        // Path-style: /BUCKET/KEY.
                        let path = req.uri().path().to_string();
                        let key = path.trim_start_matches('/').split_once('/').map(|(_, k)| k);
                        let signature = key.and_then(|k| ct.signatures.get(k)).cloned();
                        let mut resp = hyper::service::Service::call(&service, req).await?;
                        if let (Some(sig), true) = (signature, resp.status().is_success()) {
                            let h = resp.headers_mut();
                            h.insert("x-amz-meta-signature", sig.parse().unwrap());
                            h.insert(
                                "x-amz-meta-signature-algorithm",
                                "SHA256withRSA".parse().unwrap(),
                            );
                        }
                        Ok(resp)
                    }
                });
            let _ = ConnBuilder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(socket), svc)
                .await;
        });
    }
}

/// Seconds in a `timeval`.
fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// The server's request counts (GET, PUT, LIST, other) and its CPU seconds so far.
fn server_stats(port: u16) -> ([u64; 4], f64) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /__bench/stats HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    let v: Vec<f64> = body
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    ([v[0] as u64, v[1] as u64, v[2] as u64, v[3] as u64], v[4])
}

// ---------------------------------------------------------------- aggregation child

async fn agg() {
    let cfg = cloudtrail_aggregator::Config::from_env().expect("config");
    let s3 = cloudtrail_aggregator::aws::s3_client_from_env(&cfg)
        .await
        .expect("AWS configuration");
    // The event day 02-13 of `twoday` writes the index `event-indexed` runs use.
    let day = std::env::var("BENCH_DAY").unwrap_or_else(|_| "2024-02-12".into());
    let day: cloudtrail_aggregator::Day = day.parse().unwrap();
    let s = cloudtrail_aggregator::aggregate_day(&s3, &cfg, day, Default::default())
        .await
        .unwrap_or_else(|e| {
            eprintln!("aggregation failed: {e}");
            std::process::exit(1)
        });
    println!(
        "{} {}",
        own_peak_rss_kib(),
        serde_json::to_string(&s.manifest).unwrap()
    );
}

/// The setup of an `event-indexed` variant: the event day 02-13 of `twoday` aggregated
/// once under the variant's prefix, writing the delivery index of folder 02/13 that
/// the variant's runs of 02-12 then use. Prints what it cost (the index is made while
/// the day is read: compare with the delivery day).
fn index_next_day(exe: &Path, port: u16, format: &str, validate: &str) {
    let prefix = format!("cloudtrail-daily-{format}-event-indexed/");
    let mut cmd = child(exe, port);
    cmd.env("OUTPUT_FORMAT", format)
        .env("DAY_BY", "event")
        .env("VALIDATE", validate)
        .env("BENCH_DAY", "2024-02-13")
        .env("DST_PREFIX", &prefix)
        .arg("agg");
    let (u, out) = run_measured(&mut cmd);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!("aggregating the next day failed");
    }
    let manifest = manifest_of(&out.stdout);
    println!(
        "setup: event day 2024-02-13 under {prefix} ({format}): wall {:.2} s, CPU {:.2} s, {} files, delivery index {}",
        u.wall,
        u.cpu,
        manifest["source_files"],
        manifest["delivery_index"]
    );
}

/// The manifest an `agg` child printed after its peak RSS.
fn manifest_of(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let json = text.split_once(' ').map_or("", |(_, m)| m);
    serde_json::from_str(json.trim()).unwrap_or_default()
}

/// Whether an event day's run skipped no file by the next day's delivery index.
fn index_unused(stdout: &[u8]) -> bool {
    let used = &manifest_of(stdout)["selection"]["next_index"]["files_skipped"];
    used.as_u64().unwrap_or(0) == 0
}

/// Peak RSS of this process since exec, in KiB (the driver's wait4 figure would include
/// the memory of the forked driver before exec).
fn own_peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The seed's algorithm, re-implemented here for comparison (the seed's Python is not in
/// this repository): list every key under `AWSLogs/`, GET each file whole, gunzip and
/// parse it to JSON values, keep every record of the day in memory, then write one gzip
/// NDJSON object. `threads` GETs at a time: 1 is the seed's sequential Lambda, 4 its
/// thread-pool variant. Prints the peak RSS (KiB) and the number of records written.
async fn seed_algorithm(threads: usize) {
    use futures::StreamExt;
    let sdk = cloudtrail_aggregator::aws::sdk_config().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    let mut keys = Vec::new();
    let mut pages = s3
        .list_objects_v2()
        .bucket(SRC)
        .prefix("AWSLogs/")
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        for o in page.expect("list").contents() {
            let k = o.key().unwrap_or_default();
            if k.contains(&format!("/{DAY}/")) && k.ends_with(".json.gz") {
                keys.push(k.to_string());
            }
        }
    }
    let files: Vec<Vec<serde_json::Value>> = futures::stream::iter(keys)
        .map(|k| {
            let s3 = s3.clone();
            async move {
                let body = s3
                    .get_object()
                    .bucket(SRC)
                    .key(&k)
                    .send()
                    .await
                    .expect("get")
                    .body
                    .collect()
                    .await
                    .expect("body")
                    .into_bytes();
                let mut text = Vec::new();
                flate2::read::MultiGzDecoder::new(&body[..])
                    .read_to_end(&mut text)
                    .expect("gunzip");
                match serde_json::from_slice::<serde_json::Value>(&text).expect("json") {
                    serde_json::Value::Object(mut m) => match m.remove("Records") {
                        Some(serde_json::Value::Array(a)) => a,
                        _ => Vec::new(),
                    },
                    _ => Vec::new(),
                }
            }
        })
        .buffered(threads)
        .collect()
        .await;
    let mut out = GzEncoder::new(Vec::new(), Compression::new(6));
    let mut records = 0u64;
    for r in files.iter().flatten() {
        serde_json::to_writer(&mut out, r).unwrap();
        out.write_all(b"\n").unwrap();
        records += 1;
    }
    let body = out.finish().unwrap();
    s3.put_object()
        .bucket(DST)
        .key(format!("seed-algorithm/{DAY}/000000.ndjson.gz"))
        .body(body.into())
        .send()
        .await
        .expect("put");
    println!("{} {records}", own_peak_rss_kib());
}

// ---------------------------------------------------------------- measurement

struct Usage {
    wall: f64,
    cpu: f64,
    /// Includes the driver's memory copied at fork; the child's own VmHWM is preferred.
    max_rss_kib: u64,
}

/// Runs a child to completion and returns its own CPU time and peak RSS (wait4).
fn run_measured(cmd: &mut Command) -> (Usage, std::process::Output) {
    let t = Instant::now();
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id() as libc::pid_t;
    // Drain pipes on threads so the child never blocks on a full pipe.
    let mut child = child;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = std::thread::spawn(move || {
        let mut v = Vec::new();
        out.read_to_end(&mut v).unwrap();
        v
    });
    let te = std::thread::spawn(move || {
        let mut v = Vec::new();
        err.read_to_end(&mut v).unwrap();
        v
    });
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    assert_eq!(r, pid, "wait4");
    let wall = t.elapsed().as_secs_f64();
    let usage = Usage {
        wall,
        cpu: seconds(ru.ru_utime) + seconds(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss as u64,
    };
    eprintln!(
        "  run: wall {wall:.2}s user {:.2}s sys {:.2}s",
        seconds(ru.ru_utime),
        seconds(ru.ru_stime)
    );
    let output = std::process::Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(status),
        stdout: to.join().unwrap(),
        stderr: te.join().unwrap(),
    };
    std::mem::forget(child); // already reaped by wait4
    (usage, output)
}

fn thread_cpu() -> f64 {
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// The paths of a shape's source objects, in key order.
fn source_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut stack = vec![dir.join("s3").join(SRC)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                // The log files (not the digests of `--validate`).
                if p.to_string_lossy().contains("/CloudTrail/") {
                    paths.push(p)
                }
            }
        }
    }
    paths.sort();
    paths
}

/// `bench scan`: the record scanner alone (`records`: structure, validation, the copy
/// of each record), on one core, over a shape's sources gunzipped into memory
/// beforehand. Prints the median of 5 passes in MB/s of source JSON.
fn scan_bench(shape: &str, data: &Path) {
    let (dir, meta) = ensure_data(shape, data);
    let plain: Vec<Vec<u8>> = source_files(&dir)
        .iter()
        .map(|p| {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(std::fs::File::open(p).unwrap())
                .read_to_end(&mut out)
                .unwrap();
            out
        })
        .collect();
    let bytes: usize = plain.iter().map(Vec::len).sum();
    for fields in [false, true] {
        let mut secs = Vec::new();
        for _ in 0..5 {
            let start = thread_cpu();
            let mut reader = cloudtrail_aggregator::records::RecordReader::default();
            if fields {
                reader = reader.with_fields();
            }
            let mut records = 0u64;
            for body in &plain {
                reader
                    .read_records(&body[..], &mut |rec| {
                        records += 1;
                        std::hint::black_box(rec);
                        true
                    })
                    .expect("valid source");
            }
            secs.push(thread_cpu() - start);
            assert_eq!(records, meta.records, "record count");
        }
        let s = median(secs);
        let how = if fields {
            "records with their fields"
        } else {
            "records"
        };
        println!(
            "| {shape} | {how} | {} | {} | {:.0} | {s:.3} | {:.0} |",
            meta.files,
            meta.records,
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / s
        );
    }
    // What validating the sources against CloudTrail's digests adds to the read: the
    // SHA-256 of each file's decoded bytes (aws-lc-rs, as `digest::sha256_hex`).
    let mut secs = Vec::new();
    for _ in 0..5 {
        let start = thread_cpu();
        for body in &plain {
            std::hint::black_box(cloudtrail_aggregator::digest::sha256_hex(body));
        }
        secs.push(thread_cpu() - start);
    }
    let s = median(secs);
    println!(
        "| {shape} | SHA-256 of the decoded bytes | {} | {} | {:.0} | {s:.3} | {:.0} |",
        meta.files,
        meta.records,
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / s
    );
}

/// The floor: gunzip every source object and gzip (level 6) the resulting bytes, on
/// this one thread. Returns CPU seconds.
fn floor(dir: &Path) -> f64 {
    let paths = source_files(dir);
    let bodies: Vec<Vec<u8>> = if paths.len() == 1 {
        Vec::new()
    } else {
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    };
    let start = thread_cpu();
    let mut enc = GzEncoder::new(std::io::sink(), Compression::new(6));
    let mut buf = vec![0u8; 256 * 1024];
    let mut gunzip_into = |r: &mut dyn Read, enc: &mut GzEncoder<std::io::Sink>| loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n]).unwrap();
    };
    if bodies.is_empty() {
        let f = std::io::BufReader::new(std::fs::File::open(&paths[0]).unwrap());
        gunzip_into(&mut flate2::read::MultiGzDecoder::new(f), &mut enc);
    } else {
        for b in &bodies {
            gunzip_into(&mut flate2::read::MultiGzDecoder::new(&b[..]), &mut enc);
        }
    }
    enc.finish().unwrap();
    thread_cpu() - start
}

/// Reads the day's output of `format` from the server's folder: (records, digest of
/// the NDJSON — `None` for Parquet, whose rows are only counted here (tests/parquet.rs
/// reads them back field by field) — chunks, bytes of the chunks).
fn check_output(dir: &Path, format: &str, prefix: &str) -> (u64, Option<u64>, usize, u64) {
    let day_dir = dir.join("s3").join(DST).join(prefix).join(DAY);
    let suffix = if format == "parquet" {
        ".parquet"
    } else {
        ".ndjson.gz"
    };
    let mut chunks: Vec<PathBuf> = std::fs::read_dir(&day_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    chunks.sort();
    let bytes = chunks
        .iter()
        .map(|c| std::fs::metadata(c).unwrap().len())
        .sum();
    let mut records = 0u64;
    if format == "parquet" {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        for c in &chunks {
            let r = SerializedFileReader::new(std::fs::File::open(c).unwrap()).unwrap();
            records += r.metadata().file_metadata().num_rows() as u64;
        }
        return (records, None, chunks.len(), bytes);
    }
    let mut digest = Digest::new();
    let mut buf = vec![0u8; 1 << 20];
    for c in &chunks {
        let mut r = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            std::fs::File::open(c).unwrap(),
        ));
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            records += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            digest.update(&buf[..n]);
        }
    }
    (records, Some(digest.0), chunks.len(), bytes)
}

/// Why the manifest (the `agg` child's output after its peak RSS) does not say that every
/// one of `want` (log files, digests) verified; `None` when it does.
fn validation_wrong(stdout: &[u8], want: (u64, u64)) -> Option<String> {
    let text = String::from_utf8_lossy(stdout);
    let json = text.split_once(' ').map_or("", |(_, j)| j);
    let manifest: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let v = &manifest["validation"];
    let all = v["files_verified"] == want.0
        && v["digests_verified"] == want.1
        && [
            "files_modified",
            "files_missing",
            "files_not_covered",
            "digests_invalid",
            "digests_missing",
        ]
        .iter()
        .all(|k| v[*k] == 0);
    (!all).then(|| {
        format!(
            "WRONG validation {v} (want {} files, {} digests verified)",
            want.0, want.1
        )
    })
}

/// One format's measurements over the runs of a shape.
#[derive(Default)]
struct FormatRuns {
    walls: Vec<f64>,
    cpus: Vec<f64>,
    rss: Vec<f64>,
    server_cpus: Vec<f64>,
    /// The last run's requests (GET/PUT/LIST/other) and output bytes.
    requests: [u64; 4],
    output_bytes: u64,
    /// A wrong output of any run.
    verdict: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let exe = std::env::current_exe().unwrap();
    let data = PathBuf::from(arg(&args, "--data").unwrap_or_else(|| "target/bench-data".into()));
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let root = PathBuf::from(arg(&args, "--root").unwrap());
            let latency = Latency::from_args(&args);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(root, latency));
            return;
        }
        Some("serve-synthetic") => return fanout::serve(&args),
        Some("fanout") => return fanout::run(&args, &exe, &data),
        Some("fanout-plan" | "fanout-shard") => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            match args[1].as_str() {
                "fanout-plan" => rt.block_on(fanout::plan_child()),
                _ => rt.block_on(fanout::shard_child(&args)),
            }
            return;
        }
        Some("agg") => {
            // The binaries' runtime (`#[tokio::main(flavor = "current_thread")]`).
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(agg());
            return;
        }
        Some("seedalg") => {
            let threads = arg(&args, "--threads")
                .map(|v| v.parse().unwrap())
                .unwrap_or(1);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(seed_algorithm(threads));
            return;
        }
        Some("scan") => {
            println!(
                "| shape | what | files | records | source JSON MB | CPU s (median of 5) | MB/s |"
            );
            println!("|---|---|---|---|---|---|---|");
            for shape in arg(&args, "--shapes")
                .unwrap_or_else(|| "big".into())
                .split(',')
            {
                scan_bench(shape, &data);
            }
            return;
        }
        Some("gen") => {
            for shape in arg(&args, "--shapes")
                .unwrap_or_else(|| "seed".into())
                .split(',')
            {
                ensure_data(shape, &data);
            }
            return;
        }
        _ => {}
    }
    let latency = Latency::from_args(&args);
    let runs: usize = arg(&args, "--runs")
        .map(|v| v.parse().unwrap())
        .unwrap_or(3);
    let shapes = arg(&args, "--shapes").unwrap_or_else(|| "seed".into());
    let formats = arg(&args, "--formats").unwrap_or_else(|| "ndjson".into());
    let day_by = arg(&args, "--day-by").unwrap_or_else(|| "delivery".into());
    let validate = arg(&args, "--validate").unwrap_or_else(|| "off".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "machine: {cpus} CPUs; {}; {runs} runs per shape (medians)",
        latency.describe()
    );
    println!("| shape | format | files | records | NDJSON MB | wall s | files/s | MB/s written | CPU s | CPU s/GB | floor CPU s | CPU/floor | peak RSS MiB | output MB | S3 requests (GET/PUT/LIST/other) | server CPU s | output |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for shape in shapes.split(',') {
        let (dir, meta) = ensure_data(shape, &data);
        let digest_count = validate
            .split(',')
            .any(|v| v != "off")
            .then(|| digests::ensure(&dir));
        // Start the server over this shape's folder.
        let mut server = Command::new(&exe)
            .args(["serve", "--root", dir.join("s3").to_str().unwrap()])
            .args(latency.args())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server");
        let port = read_port(&mut server);
        let floor_cpu = floor(&dir);
        // The variants (format × DAY_BY × VALIDATE) take turns, run by run, so that a
        // noisy stretch of the machine falls on all alike.
        let variants: Vec<(&str, &str, &str)> = formats
            .split(',')
            .flat_map(|f| day_by.split(',').map(move |d| (f, d)))
            .flat_map(|(f, d)| validate.split(',').map(move |v| (f, d, v)))
            .collect();
        let mut stats: Vec<FormatRuns> = variants.iter().map(|_| FormatRuns::default()).collect();
        for (format, day_by, validate) in &variants {
            if *day_by == "event-indexed" {
                index_next_day(&exe, port, format, validate);
            }
        }
        for _ in 0..runs {
            for ((format, day_by, validate), st) in variants.iter().zip(stats.iter_mut()) {
                // Delivery days keep the prefix scripts/query_bytes.py is given.
                let mut prefix = match *day_by {
                    "delivery" => format!("cloudtrail-daily-{format}"),
                    other => format!("cloudtrail-daily-{format}-{other}"),
                };
                if *validate != "off" {
                    prefix.push_str(&format!("-validate-{validate}"));
                }
                let (want_records, want_digest) = match *day_by {
                    "event" | "event-indexed" => (
                        meta.event_records.unwrap_or(meta.records),
                        meta.event_digest.unwrap_or(meta.digest),
                    ),
                    _ => (meta.records, meta.digest),
                };
                let (before, server_cpu_before) = server_stats(port);
                let mut cmd = child(&exe, port);
                cmd.env("OUTPUT_FORMAT", format)
                    .env("DAY_BY", day_by.trim_end_matches("-indexed"))
                    .env("VALIDATE", validate)
                    .env(
                        "AWS_ENDPOINT_URL_CLOUDTRAIL",
                        format!("http://127.0.0.1:{port}"),
                    )
                    .env("DST_PREFIX", format!("{prefix}/"))
                    .arg("agg");
                let (u, out) = run_measured(&mut cmd);
                if !out.status.success() {
                    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
                    panic!("aggregation failed");
                }
                let hwm_kib: u64 = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u.max_rss_kib);
                if *day_by == "event-indexed" && index_unused(&out.stdout) {
                    st.verdict = Some("WRONG: the next day's delivery index was not used".into());
                }
                if *validate != "off" {
                    let want = (meta.files, digest_count.unwrap_or(0));
                    if let Some(wrong) = validation_wrong(&out.stdout, want) {
                        st.verdict = Some(wrong);
                    }
                }
                let (after, server_cpu_after) = server_stats(port);
                st.server_cpus.push(server_cpu_after - server_cpu_before);
                for i in 0..4 {
                    st.requests[i] = after[i] - before[i];
                }
                let (records, digest, _chunks, bytes) = check_output(&dir, format, &prefix);
                st.output_bytes = bytes;
                if records != want_records || digest.is_some_and(|d| d != want_digest) {
                    st.verdict = Some(format!(
                        "WRONG: {records} records (want {want_records}), digest {digest:x?} (want {want_digest:x})",
                    ));
                }
                st.walls.push(u.wall);
                st.cpus.push(u.cpu);
                st.rss.push(hwm_kib as f64 / 1024.0);
            }
        }
        let mut wrong = false;
        for ((format, day_by, validate), st) in variants.iter().zip(stats) {
            let mut format = match *day_by {
                "delivery" => format.to_string(),
                other => format!("{format}, {other} day"),
            };
            if *validate != "off" {
                format.push_str(&format!(", VALIDATE={validate}"));
            }
            let (wall, cpu, peak) = (median(st.walls), median(st.cpus), median(st.rss));
            let gb = meta.ndjson_bytes as f64 / 1e9;
            let verdict = st.verdict.unwrap_or_else(|| "ok".into());
            println!(
                "| {shape} | {format} | {} | {} | {:.0} | {:.2} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.2} | {}/{}/{}/{} | {:.1} | {verdict} |",
                meta.files,
                meta.records,
                meta.ndjson_bytes as f64 / 1e6,
                wall,
                meta.files as f64 / wall,
                meta.ndjson_bytes as f64 / 1e6 / wall,
                cpu,
                cpu / gb,
                floor_cpu,
                cpu / floor_cpu,
                peak,
                st.output_bytes as f64 / 1e6,
                st.requests[0], st.requests[1], st.requests[2], st.requests[3],
                median(st.server_cpus),
            );
            wrong |= verdict != "ok";
        }
        // The seed's algorithm on the same data and server, once per variant.
        let mut seed_rows = Vec::new();
        let mut seed_wrong = false;
        let seed_all = args.iter().any(|a| a == "--seed-algorithm-all");
        let seed_alg = seed_all || args.iter().any(|a| a == "--seed-algorithm");
        if seed_alg && !seed_all && meta.files > SEED_ALGORITHM_MAX_FILES {
            eprintln!(
                "{shape}: seed's algorithm skipped ({} files; it reads one file at a time, \
                 ~40 minutes for the org day at 25 ms): --seed-algorithm-all runs it anyway",
                meta.files
            );
        } else if seed_alg {
            for threads in [1, 4] {
                let mut cmd = child(&exe, port);
                cmd.args(["seedalg", "--threads", &threads.to_string()]);
                let (u, out) = run_measured(&mut cmd);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                let v: Vec<u64> = text
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let ok = if v.get(1) == Some(&meta.records) {
                    "ok"
                } else {
                    seed_wrong = true;
                    "WRONG record count"
                };
                seed_rows.push(format!(
                    "| {shape} | seed's algorithm, {} | {:.2} | {:.2} | {:.0} | {} | {ok} |",
                    if threads == 1 {
                        "sequential".to_string()
                    } else {
                        format!("{threads} threads")
                    },
                    u.wall,
                    u.cpu,
                    v.first().copied().unwrap_or(0) as f64 / 1024.0,
                    v.get(1).copied().unwrap_or(0),
                ));
            }
        }
        let _ = server.kill();
        let _ = server.wait();
        if !seed_rows.is_empty() {
            println!();
            println!("| shape | variant (1 run each) | wall s | CPU s | peak RSS MiB | records | output |");
            println!("|---|---|---|---|---|---|---|");
            for row in &seed_rows {
                println!("{row}");
            }
        }
        // A wrong answer fails the benchmark (and CI's smoke run of it).
        if wrong || seed_wrong {
            std::process::exit(1);
        }
    }
}

/// The port a server child prints on its first line.
fn read_port(server: &mut std::process::Child) -> u16 {
    let mut line = String::new();
    let mut out = server.stdout.take().unwrap();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        line.push(b[0] as char);
    }
    line.trim().parse().expect("server port")
}

/// A child of this benchmark with the environment of the S3 server on `port`.
fn child(exe: &Path, port: u16) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("SRC_BUCKET", SRC)
        .env("DST_BUCKET", DST)
        .env("LOG_LEVEL", "warn");
    cmd
}
