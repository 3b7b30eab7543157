//! `bench fanout`: days of any size, planned and run as shards, against a synthetic
//! source bucket.
//!
//! The source bucket holds no files: its objects are generated from their keys. An
//! organisation of `A` accounts × `R` regions × `F` files per folder (`--shape AxRxF`,
//! `1000x17x588` is a 10 M-file day) is listed by ListObjectsV2 as S3 would list it
//! (delimited, 1,000 entries a page), and each object's body is one of 64 delivery
//! files (1–30 records of ~1.4 KB, ~21 KB of JSON on average, gzip), picked by a hash
//! of its key: the same bytes on every GET. The destination bucket is s3s-fs on disk.
//! Both are served by one S3 protocol server (s3s, TCP_NODELAY, `--latency-ms` per
//! request) in a child process; the day is planned in one child and its shards run in
//! others, `--processes K` at a time, each shard a process as each is a Lambda
//! invocation, so that wall time, CPU and peak RSS are each one's own.
//!
//! `--shards all` runs every shard (the last commits) and checks the day: its records,
//! read in the manifest's order, against the generator's (count and an xxh3-128 digest
//! of the NDJSON; Parquet: the count); `--shards 0` runs shard 0 alone; `--shards none`
//! plans only.

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::{
    arg, child, own_peak_rss_kib, record, run_measured, server_stats, Latency, Rng, DST, REGIONS,
    SRC,
};

const ORG: &str = "AWSLogs/o-bench00000/";
const DAY_PATH: &str = "2024/02/12/";
const TEMPLATES: usize = 64;

/// An organisation of `accounts` × `regions` × `per_folder` files on 2024-02-12.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    accounts: u32,
    regions: u32,
    per_folder: u32,
}

impl Shape {
    pub fn parse(s: &str) -> Shape {
        let n: Vec<u32> = s.split('x').map(|x| x.parse().expect("AxRxF")).collect();
        assert!(
            n.len() == 3 && n[1] as usize <= REGIONS.len(),
            "--shape AxRxF"
        );
        Shape {
            accounts: n[0],
            regions: n[1],
            per_folder: n[2],
        }
    }

    fn files(&self) -> u64 {
        self.accounts as u64 * self.regions as u64 * self.per_folder as u64
    }

    fn account(a: u32) -> String {
        format!("{:012}", 100_000_000_000u64 + a as u64)
    }

    /// The regions, in key order.
    fn regions(&self) -> Vec<&'static str> {
        let mut r: Vec<&str> = REGIONS[..self.regions as usize].to_vec();
        r.sort();
        r
    }

    fn folder(account: &str, region: &str) -> String {
        format!("{ORG}{account}/CloudTrail/{region}/{DAY_PATH}")
    }

    /// File `n` of a folder: its names sort as `n` does.
    fn key(&self, account: &str, region: &str, n: u32) -> String {
        let minute = n as u64 * 1440 / self.per_folder.max(1) as u64;
        format!(
            "{}{account}_CloudTrail_{region}_20240212T{:02}{:02}Z_{n:016x}.json.gz",
            Shape::folder(account, region),
            minute / 60,
            minute % 60
        )
    }

    /// Every key of the day, in key order.
    fn keys(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.accounts).flat_map(move |a| {
            let account = Shape::account(a);
            self.regions().into_iter().flat_map(move |region| {
                let account = account.clone();
                (0..self.per_folder).map(move |n| self.key(&account, region, n))
            })
        })
    }
}

/// The 64 delivery files the objects are made of.
pub struct Templates {
    bodies: Vec<Bytes>,
    etags: Vec<String>,
    /// Each file's records as NDJSON lines.
    ndjson: Vec<Vec<u8>>,
    records: Vec<u64>,
}

impl Templates {
    fn new() -> Templates {
        let mut rng = Rng(0x5eed_f00d);
        let (mut bodies, mut etags, mut ndjson, mut records) = (vec![], vec![], vec![], vec![]);
        for t in 0..TEMPLATES {
            let n = 1 + rng.below(30);
            let recs: Vec<String> = (0..n)
                .map(|i| record(&mut rng, "123456789012", "us-east-1", t as u64 * 1000 + i))
                .collect();
            let json = format!("{{\"Records\":[{}]}}", recs.join(","));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            std::io::Write::write_all(&mut gz, json.as_bytes()).unwrap();
            let body = gz.finish().unwrap();
            etags.push(format!("{:032x}", twox_hash::XxHash3_128::oneshot(&body)));
            bodies.push(Bytes::from(body));
            let mut lines = Vec::new();
            for r in &recs {
                lines.extend_from_slice(r.as_bytes());
                lines.push(b'\n');
            }
            ndjson.push(lines);
            records.push(n);
        }
        Templates {
            bodies,
            etags,
            ndjson,
            records,
        }
    }

    fn of(key: &str) -> usize {
        (twox_hash::XxHash3_128::oneshot(key.as_bytes()) % TEMPLATES as u128) as usize
    }

    /// The day's record count and the xxh3-128 of its NDJSON in key order.
    fn oracle(&self, shape: &Shape) -> (u64, u128) {
        let mut h = twox_hash::xxhash3_128::Hasher::new();
        let mut records = 0;
        for key in shape.keys() {
            let t = Templates::of(&key);
            h.write(&self.ndjson[t]);
            records += self.records[t];
        }
        (records, h.finish_128())
    }
}

/// The S3 service: the source bucket generated, everything else s3s-fs.
pub struct Synthetic {
    fs: s3s_fs::FileSystem,
    shape: Shape,
    t: Arc<Templates>,
}

impl Synthetic {
    pub fn new(root: &Path, shape: Shape) -> Synthetic {
        std::fs::create_dir_all(root.join(DST)).unwrap();
        Synthetic {
            fs: s3s_fs::FileSystem::new(root).expect("s3s-fs root"),
            shape,
            t: Arc::new(Templates::new()),
        }
    }

    /// What a delimited listing of `prefix` holds: folders, or a day folder's objects.
    fn level(&self, prefix: &str) -> (Vec<String>, Vec<String>) {
        if prefix == "AWSLogs/" {
            return (vec![ORG.to_string()], vec![]);
        }
        if prefix == ORG {
            let accounts = (0..self.shape.accounts)
                .map(|a| format!("{ORG}{}/", Shape::account(a)))
                .collect();
            return (accounts, vec![]);
        }
        if let Some(account) = prefix
            .strip_prefix(ORG)
            .and_then(|r| r.strip_suffix("/CloudTrail/"))
        {
            let regions = self
                .shape
                .regions()
                .iter()
                .map(|r| format!("{prefix}{r}/"))
                .collect();
            let _ = account;
            return (regions, vec![]);
        }
        if let Some(rest) = prefix.strip_prefix(ORG) {
            let parts: Vec<&str> = rest.split('/').collect();
            if let [account, "CloudTrail", region, "2024", "02", "12", ""] = parts.as_slice() {
                let keys = (0..self.shape.per_folder)
                    .map(|n| self.shape.key(account, region, n))
                    .collect();
                return (vec![], keys);
            }
        }
        (vec![], vec![])
    }

    fn list(&self, input: &ListObjectsV2Input) -> ListObjectsV2Output {
        let prefix = input.prefix.as_deref().unwrap_or("");
        let (folders, keys) = self.level(prefix);
        let after = input
            .continuation_token
            .as_deref()
            .or(input.start_after.as_deref())
            .unwrap_or("");
        let max = input.max_keys.unwrap_or(1000).clamp(1, 1000) as usize;
        let mut entries: Vec<(String, bool)> = folders
            .into_iter()
            .map(|f| (f, true))
            .chain(keys.into_iter().map(|k| (k, false)))
            .filter(|(e, _)| e.as_str() > after)
            .collect();
        entries.sort();
        let truncated = entries.len() > max;
        entries.truncate(max);
        let next = truncated.then(|| entries.last().unwrap().0.clone());
        let (mut contents, mut common) = (Vec::new(), Vec::new());
        for (e, is_folder) in entries {
            if is_folder {
                common.push(CommonPrefix { prefix: Some(e) });
            } else {
                let t = Templates::of(&e);
                contents.push(Object {
                    size: Some(self.t.bodies[t].len() as i64),
                    e_tag: Some(ETag::Strong(self.t.etags[t].clone())),
                    key: Some(e),
                    ..Default::default()
                });
            }
        }
        ListObjectsV2Output {
            key_count: Some((contents.len() + common.len()) as i32),
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!common.is_empty()).then_some(common),
            continuation_token: input.continuation_token.clone(),
            next_continuation_token: next,
            delimiter: input.delimiter.clone(),
            name: Some(input.bucket.clone()),
            prefix: input.prefix.clone(),
            ..Default::default()
        }
    }

    fn object(&self, key: &str) -> S3Result<usize> {
        let ok = key.starts_with(ORG)
            && key.contains(&format!("/{DAY_PATH}"))
            && key.ends_with(".json.gz");
        if !ok {
            return Err(s3s::s3_error!(NoSuchKey));
        }
        Ok(Templates::of(key))
    }
}

#[async_trait::async_trait]
impl s3s::S3 for Synthetic {
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        if req.input.bucket == SRC {
            return Ok(S3Response::new(self.list(&req.input)));
        }
        self.fs.list_objects_v2(req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        if req.input.bucket != SRC {
            return self.fs.get_object(req).await;
        }
        if req.input.range.is_some() {
            return Err(s3s::s3_error!(
                NotImplemented,
                "no ranges of generated objects"
            ));
        }
        let t = self.object(&req.input.key)?;
        let body = self.t.bodies[t].clone();
        Ok(S3Response::new(GetObjectOutput {
            content_length: Some(body.len() as i64),
            e_tag: Some(ETag::Strong(self.t.etags[t].clone())),
            body: Some(StreamingBlob::from(s3s::Body::from(body))),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        if req.input.bucket != SRC {
            return self.fs.head_object(req).await;
        }
        let t = self.object(&req.input.key)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(self.t.bodies[t].len() as i64),
            e_tag: Some(ETag::Strong(self.t.etags[t].clone())),
            ..Default::default()
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.fs.put_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }
}

// ---------------------------------------------------------------- children

fn day() -> cloudtrail_aggregator::Day {
    "2024-02-12".parse().unwrap()
}

async fn client(cfg: &cloudtrail_aggregator::Config) -> aws_sdk_s3::Client {
    cloudtrail_aggregator::aws::s3_client_from_env(cfg)
        .await
        .expect("AWS configuration")
}

/// `bench fanout-plan`: plans the day (its shards left to the driver); prints the peak
/// RSS and what was planned.
pub async fn plan_child() {
    use cloudtrail_aggregator::pipeline::{run_day, DayOutcome, Dispatch};
    let cfg = cloudtrail_aggregator::Config::from_env().expect("config");
    let s3 = client(&cfg).await;
    let outcome = run_day(&s3, &cfg, day(), Default::default(), Dispatch::Later)
        .await
        .unwrap_or_else(|e| {
            eprintln!("planning failed: {e}");
            std::process::exit(1)
        });
    let json = match outcome {
        DayOutcome::FannedOut(f) => serde_json::json!({
            "shards": f.plan.shards.len(),
            "files": f.plan.files,
            "bytes": f.plan.bytes,
            "run": cloudtrail_aggregator::layout::run_tag(&f.plan.run),
            "plan": f.plan.plan,
        }),
        DayOutcome::Committed(s) => serde_json::json!({
            "shards": 1,
            "files": s.manifest.source_files,
            "bytes": s.manifest.bytes_read,
            "committed": true,
        }),
    };
    println!("{} {json}", own_peak_rss_kib());
}

/// `bench fanout-shard --run TAG --index I --of N`: one shard, as its message runs it.
pub async fn shard_child(args: &[String]) {
    let cfg = cloudtrail_aggregator::Config::from_env().expect("config");
    let s3 = client(&cfg).await;
    let job = cloudtrail_aggregator::trigger::ShardJob {
        day: day(),
        run: arg(args, "--run").unwrap(),
        index: arg(args, "--index").unwrap().parse().unwrap(),
        of: arg(args, "--of").unwrap().parse().unwrap(),
    };
    let started = Instant::now();
    let outcome = cloudtrail_aggregator::run_shard_job(&s3, &cfg, job, None)
        .await
        .unwrap_or_else(|e| {
            eprintln!("shard failed: {e}");
            std::process::exit(1)
        });
    use cloudtrail_aggregator::ShardOutcome::*;
    let (what, result) = match &outcome {
        Done(r) => ("done", Some(r)),
        Committed(r, _) => ("committed", Some(r)),
        Superseded { .. } => ("superseded", None),
    };
    let json = serde_json::json!({
        "outcome": what,
        "files": result.map(|r| r.files),
        "records": result.map(|r| r.records),
        "shard_ms": result.map(|r| r.duration_ms),
        "total_ms": started.elapsed().as_millis() as u64,
    });
    println!("{} {json}", own_peak_rss_kib());
}

// ---------------------------------------------------------------- driver

struct Ran {
    wall: f64,
    cpu: f64,
    rss_mib: f64,
    json: serde_json::Value,
}

fn measured(cmd: &mut Command, what: &str) -> Ran {
    let (usage, out) = run_measured(cmd);
    if !out.status.success() {
        panic!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let (rss, json) = line.split_once(' ').expect("rss json");
    Ran {
        wall: usage.wall,
        cpu: usage.cpu,
        rss_mib: rss.parse::<f64>().unwrap() / 1024.0,
        json: serde_json::from_str(json).unwrap(),
    }
}

/// The day's records in the manifest's order under `root`: count and xxh3-128 (NDJSON).
fn output_digest(root: &Path, prefix: &str) -> (u64, Option<u128>, usize) {
    let folder = root.join(DST).join(prefix).join(DAY_PATH);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join("_manifest.json")).expect("a manifest"))
            .unwrap();
    let records = manifest["records"].as_u64().unwrap();
    let chunks = manifest["chunks"].as_array().unwrap();
    if manifest["format"] != "ndjson" {
        return (records, None, chunks.len());
    }
    let mut h = twox_hash::xxhash3_128::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    for c in chunks {
        let path = root.join(DST).join(c["key"].as_str().unwrap());
        let mut gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(
            std::fs::File::open(path).unwrap(),
        ));
        loop {
            let n = gz.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
    }
    (records, Some(h.finish_128()), chunks.len())
}

/// `bench fanout`: see the module doc.
pub fn run(args: &[String], exe: &Path, data: &Path) {
    let shape = Shape::parse(&arg(args, "--shape").unwrap_or_else(|| "20x17x60".into()));
    let latency = Latency::from_args(args);
    let format = arg(args, "--format").unwrap_or_else(|| "ndjson".into());
    let processes: usize = arg(args, "--processes").map_or(2, |v| v.parse().unwrap());
    let which = arg(args, "--shards").unwrap_or_else(|| "all".into());
    let root = data.join("fanout");
    let prefix = format!("fanout-{format}/");
    let _ = std::fs::remove_dir_all(root.join(DST).join(&prefix));
    std::fs::create_dir_all(&root).unwrap();
    println!(
        "fan-out: {} files ({} accounts × {} regions × {}), {format}, {}, {processes} shard processes at a time",
        shape.files(),
        shape.accounts,
        shape.regions,
        shape.per_folder,
        latency.describe()
    );
    let mut server = Command::new(exe)
        .args(["serve-synthetic", "--root", root.to_str().unwrap()])
        .args([
            "--shape",
            &format!("{}x{}x{}", shape.accounts, shape.regions, shape.per_folder),
        ])
        .args(latency.args())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server");
    let port = super::read_port(&mut server);
    let env = |cmd: &mut Command| {
        let c = cmd
            .env("DST_PREFIX", &prefix)
            .env("OUTPUT_FORMAT", &format)
            .env(
                "MAX_CONCURRENT_LISTS",
                arg(args, "--lists").unwrap_or_else(|| "16".into()),
            );
        for var in ["SHARD_MAX_FILES", "SHARD_MAX_BYTES"] {
            if let Ok(v) = std::env::var(var) {
                c.env(var, v);
            }
        }
    };

    let (before, server_cpu0) = server_stats(port);
    let mut cmd = child(exe, port);
    cmd.arg("fanout-plan");
    env(&mut cmd);
    let plan = measured(&mut cmd, "planning");
    let (after, server_cpu1) = server_stats(port);
    println!("| step | wall s | CPU s | peak RSS MiB | files | requests GET/PUT/LIST/other | server CPU s |");
    println!("|---|---|---|---|---|---|---|");
    let d = |a: [u64; 4], b: [u64; 4]| {
        format!(
            "{}/{}/{}/{}",
            b[0] - a[0],
            b[1] - a[1],
            b[2] - a[2],
            b[3] - a[3]
        )
    };
    println!(
        "| plan ({} shards) | {:.2} | {:.2} | {:.0} | {} | {} | {:.1} |",
        plan.json["shards"],
        plan.wall,
        plan.cpu,
        plan.rss_mib,
        plan.json["files"],
        d(before, after),
        server_cpu1 - server_cpu0
    );
    let shards = plan.json["shards"].as_u64().unwrap() as u32;
    let jobs: Vec<u32> = match which.as_str() {
        "none" => vec![],
        "all" => (0..shards).collect(),
        list => list.split(',').map(|v| v.parse().unwrap()).collect(),
    };
    if plan.json.get("committed").is_some() || jobs.is_empty() {
        let _ = server.kill();
        return;
    }
    let run_tag = plan.json["run"].as_str().unwrap().to_string();
    let started = Instant::now();
    let (before, server_cpu0) = server_stats(port);
    let mut pending: VecDeque<u32> = jobs.into_iter().collect();
    let mut running: Vec<std::thread::JoinHandle<(u32, Ran)>> = Vec::new();
    let mut done: Vec<(u32, Ran)> = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < processes {
            let Some(i) = pending.pop_front() else { break };
            let mut cmd = child(exe, port);
            cmd.args([
                "fanout-shard",
                "--run",
                &run_tag,
                "--index",
                &i.to_string(),
                "--of",
                &shards.to_string(),
            ]);
            env(&mut cmd);
            running.push(std::thread::spawn(move || {
                (i, measured(&mut cmd, "a shard"))
            }));
        }
        let finished = running.iter().position(|h| h.is_finished());
        match finished {
            Some(p) => done.push(running.swap_remove(p).join().unwrap()),
            None => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    let shards_wall = started.elapsed().as_secs_f64();
    let (after, server_cpu1) = server_stats(port);
    done.sort_by_key(|(i, _)| *i);
    for (i, r) in &done {
        println!(
            "| shard {i} ({}) | {:.2} | {:.2} | {:.0} | {} | | |",
            r.json["outcome"].as_str().unwrap(),
            r.wall,
            r.cpu,
            r.rss_mib,
            r.json["files"]
        );
    }
    let walls: Vec<f64> = done.iter().map(|(_, r)| r.wall).collect();
    println!(
        "| {} shards, {processes} at a time | {shards_wall:.2} | {:.2} | {:.0} (max) | | {} | {:.1} |",
        done.len(),
        done.iter().map(|(_, r)| r.cpu).sum::<f64>(),
        done.iter().map(|(_, r)| r.rss_mib).fold(0.0, f64::max),
        d(before, after),
        server_cpu1 - server_cpu0
    );
    println!(
        "shard wall: median {:.2} s, max {:.2} s",
        super::median(walls.clone()),
        walls.iter().cloned().fold(0.0, f64::max)
    );
    let committed = done
        .iter()
        .filter(|(_, r)| r.json["outcome"] == "committed")
        .count();
    for (i, r) in done
        .iter()
        .filter(|(_, r)| r.json["outcome"] == "committed")
    {
        let ms = |k: &str| r.json[k].as_u64().unwrap_or(0);
        println!(
            "commit (by shard {i}, after its own work): {:.2} s",
            (ms("total_ms") - ms("shard_ms")) as f64 / 1000.0
        );
    }
    if done.len() as u32 == shards {
        assert_eq!(committed, 1, "exactly one shard commits");
        let t = Templates::new();
        let (want_records, want_digest) = t.oracle(&shape);
        let (records, digest, chunks) = output_digest(&root, &prefix);
        let exact = records == want_records && digest.is_none_or(|d| d == want_digest);
        println!(
            "output: {records} records in {chunks} chunks ({} expected); {}",
            want_records,
            match (digest, exact) {
                (Some(_), true) => "NDJSON digest in manifest order: exact",
                (None, true) => "record count exact (Parquet)",
                _ => "WRONG",
            }
        );
        if !exact {
            let _ = server.kill();
            std::process::exit(1);
        }
    }
    let _ = server.kill();
}

/// `bench serve-synthetic --root DIR --shape AxRxF`.
pub fn serve(args: &[String]) {
    let root = PathBuf::from(arg(args, "--root").unwrap());
    let shape = Shape::parse(&arg(args, "--shape").unwrap());
    let latency = Latency::from_args(args);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = Synthetic::new(&root, shape);
    rt.block_on(super::serve_service(service, latency, None));
}
