//! `VALIDATE`: a day of log files and CloudTrail digests signed with a key made here, on a
//! real S3 protocol server (s3s-fs in-process), with `ListPublicKeys` answered by a small
//! server on loopback. Each outcome is provoked by tampering as an attacker would, and
//! counted in the manifest; `strict` fails the day on it, with no manifest and no chunks.
//!
//! The digests are written as CloudTrail writes them (the AWS CLI's `validation.py` and
//! the User Guide: see `tests/fixtures/cloudtrail-digest/SOURCES.md`): hourly, per
//! account and region, chained, the signature in `x-amz-meta-signature` over
//! `digestEndTime \n bucket/key \n hex SHA-256 of the uncompressed digest \n
//! previousDigestSignature` (`null` for the first). That string is built here by hand,
//! not with the library's `digest::string_to_sign`.

mod common;

use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use base64::Engine;
use cloudtrail_aggregator::inventory::Line;
use cloudtrail_aggregator::manifest::Manifest;
use cloudtrail_aggregator::validate::{CloudTrailConfig, Status, Validation};
use cloudtrail_aggregator::verify::{verify_day, Finding};
use cloudtrail_aggregator::{aggregate_day, Config, Day, Error, RunOptions};
use common::*;
use serde_json::json;

/// Short names: s3s-fs keeps user metadata in a file named after the base64 of bucket
/// and key, which must fit a file name (255 bytes).
const SRC: &str = "ctl";
const DST: &str = "aggregated";
const MANIFEST: &str = "cloudtrail-daily/2024/02/12/_manifest.json";
const TRAIL: &str = "t_1";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

/// (prefix, account): an organisation trail's layout and a single account's.
const LAYOUTS: [(&str, &str); 2] = [
    ("AWSLogs/o-abcdefghij/", "222222222222"),
    ("AWSLogs/", "111111111111"),
];
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
/// Delivery times (HHMM) of each account and region's files on the day.
const TIMES: [usize; 4] = [15, 530, 1200, 2345];

/// An RSA key pair and its public key in both of the DER layouts AWS has published.
struct Signer {
    pair: RsaKeyPair,
    pkcs1: Vec<u8>,
    spki: Vec<u8>,
}

impl Signer {
    fn new() -> Signer {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs1 = pair.public_key().as_ref().to_vec();
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        Signer { pair, pkcs1, spki }
    }

    fn sign(&self, message: &str) -> String {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut sig)
            .unwrap();
        hex::encode(sig)
    }
}

fn md5_hex(der: &[u8]) -> String {
    use md5::Digest as _;
    hex::encode(md5::Md5::digest(der))
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// One object of the source bucket: key, stored bytes, user metadata.
#[derive(Clone)]
struct Obj {
    key: String,
    body: Vec<u8>,
    meta: Vec<(String, String)>,
}

/// The day's log files and their digests: per account and region, the files at
/// [`TIMES`] and 25 hourly digests ending at 00:30 on the day through 00:30 the next
/// (each listing the files delivered in the hour before its end), one chain.
fn signed_day(signer: &Signer, fingerprint_der: &[u8]) -> (Vec<Obj>, Vec<Obj>) {
    signed_day_with(signer, fingerprint_der, None)
}

/// The first account and region's digests made as backfill: `_backfill` names, signed
/// by another key, with the time they were made in their metadata.
struct Backfill<'a> {
    signer: &'a Signer,
    der: &'a [u8],
    made: &'a str,
}

fn signed_day_with(
    signer: &Signer,
    fingerprint_der: &[u8],
    backfill: Option<&Backfill>,
) -> (Vec<Obj>, Vec<Obj>) {
    let (mut logs, mut digests) = (Vec::new(), Vec::new());
    let mut i = 0;
    for (n, (prefix, account)) in LAYOUTS.iter().enumerate() {
        for (m, region) in REGIONS.iter().enumerate() {
            let backfill = backfill.filter(|_| (n, m) == (0, 0));
            let (signer, fingerprint, suffix) = match backfill {
                Some(b) => (b.signer, md5_hex(b.der), "_backfill"),
                None => (signer, md5_hex(fingerprint_der), ""),
            };
            let mut files = Vec::new();
            for t in TIMES {
                let recs: Vec<String> = (0..3)
                    .map(|_| {
                        i += 1;
                        record(account, region, (t / 100) * 3600 + (t % 100) * 60 + i % 60)
                    })
                    .collect();
                let body = delivery(&recs);
                let key = log_key(prefix, account, region, "2024/02/12", t);
                files.push((t, key.clone(), sha256_hex(&body)));
                logs.push(Obj {
                    key,
                    body: gzip(&body),
                    meta: vec![],
                });
            }
            let mut prev: Option<(String, String, String)> = None; // key, sha, signature
            for h in 0..25usize {
                let (date, folder, hour) = if h < 24 {
                    ("20240212", "2024/02/12", h)
                } else {
                    ("20240213", "2024/02/13", 0)
                };
                let stamp = format!("{date}T{hour:02}3000Z");
                let end = format!(
                    "{}-{}-{}T{hour:02}:30:00Z",
                    &date[..4],
                    &date[4..6],
                    &date[6..]
                );
                let key = format!(
                    "{prefix}{account}/CloudTrail-Digest/{region}/{folder}/{account}_CloudTrail-Digest_{region}_{TRAIL}_us-east-1_{stamp}{suffix}.json.gz"
                );
                // Files delivered in [end - 1 h, end): HHMM in [(h-1)*100+30, h*100+30).
                let from = (h as i64 - 1) * 100 + 30;
                let to = h as i64 * 100 + 30;
                let listed: Vec<serde_json::Value> = files
                    .iter()
                    .filter(|(t, _, _)| (*t as i64) >= from && (*t as i64) < to)
                    .map(|(_, k, sha)| {
                        json!({"s3Bucket": SRC, "s3Object": k, "hashValue": sha, "hashAlgorithm": "SHA-256",
                               "newestEventTime": end, "oldestEventTime": end})
                    })
                    .collect();
                let (pb, pk, ph, ps) = match &prev {
                    Some((k, sha, sig)) => (json!(SRC), json!(k), json!(sha), json!(sig)),
                    None => (json!(null), json!(null), json!(null), json!(null)),
                };
                let body = serde_json::to_vec(&json!({
                    "awsAccountId": account,
                    "digestStartTime": end, "digestEndTime": end,
                    "digestS3Bucket": SRC, "digestS3Object": key,
                    "digestPublicKeyFingerprint": fingerprint,
                    "digestSignatureAlgorithm": "SHA256withRSA",
                    "newestEventTime": null, "oldestEventTime": null,
                    "previousDigestS3Bucket": pb, "previousDigestS3Object": pk,
                    "previousDigestHashValue": ph, "previousDigestHashAlgorithm": "SHA-256",
                    "previousDigestSignature": ps,
                    "logFiles": listed,
                }))
                .unwrap();
                let sha = sha256_hex(&body);
                let prev_sig = prev.as_ref().map_or("null".to_string(), |p| p.2.clone());
                let signature = signer.sign(&format!("{end}\n{SRC}/{key}\n{sha}\n{prev_sig}"));
                let mut meta = vec![
                    ("signature".into(), signature.clone()),
                    ("signature-algorithm".into(), "SHA256withRSA".into()),
                ];
                if let Some(b) = backfill {
                    meta.push(("backfill-generation-timestamp".into(), b.made.into()));
                }
                digests.push(Obj {
                    key: key.clone(),
                    body: gzip(&body),
                    meta,
                });
                prev = Some((key, sha, signature));
            }
        }
    }
    (logs, digests)
}

async fn put_obj(s3: &Client, o: &Obj) {
    let mut req = s3
        .put_object()
        .bucket(SRC)
        .key(&o.key)
        .body(ByteStream::from(o.body.clone()));
    for (k, v) in &o.meta {
        req = req.metadata(k, v);
    }
    req.send().await.unwrap();
}

/// A `ListPublicKeys` endpoint on loopback answering with `keys` (DER), recording the
/// region each request was signed for.
async fn key_server(keys: Vec<Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    key_server_for(keys.into_iter().map(always).collect()).await
}

/// A key valid from 2023-11 to 2027-01.
fn always(der: Vec<u8>) -> (Vec<u8>, (i64, i64)) {
    (der, (1_700_000_000, 1_800_000_000))
}

/// [`key_server`] with each key's validity (epoch seconds): a request gets the keys
/// valid at some time between its `StartTime` and `EndTime`.
async fn key_server_for(keys: Vec<(Vec<u8>, (i64, i64))>) -> (String, Arc<Mutex<Vec<String>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let regions = Arc::new(Mutex::new(Vec::new()));
    let keys: Arc<Vec<(serde_json::Value, (i64, i64))>> = Arc::new(
        keys.iter()
            .map(|(der, (from, to))| {
                let key = json!({"Value": base64::engine::general_purpose::STANDARD.encode(der),
                       "ValidityStartTime": from, "ValidityEndTime": to,
                       "Fingerprint": md5_hex(der)});
                (key, (*from, *to))
            })
            .collect(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = regions.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (keys, seen) = (keys.clone(), seen.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let header = |name: &str| {
                        let v = req.headers().get(name).and_then(|v| v.to_str().ok());
                        v.unwrap_or_default().to_string()
                    };
                    let (target, auth) = (header("x-amz-target"), header("authorization"));
                    // Credential=AKID/DATE/REGION/cloudtrail/aws4_request
                    let region = auth.split('/').nth(2).unwrap_or_default().to_string();
                    seen.lock().unwrap().push(region);
                    let keys = keys.clone();
                    async move {
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let asked: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let time = |f: &str| asked[f].as_f64().map(|t| t as i64);
                        let (start, end) = (
                            time("StartTime").unwrap_or(i64::MIN),
                            time("EndTime").unwrap_or(i64::MAX),
                        );
                        let valid: Vec<&serde_json::Value> = (keys.iter())
                            .filter(|(_, (from, to))| *from <= end && *to >= start)
                            .map(|(k, _)| k)
                            .collect();
                        let (status, text) = if target.ends_with(".ListPublicKeys") {
                            (200, json!({ "PublicKeyList": valid }).to_string())
                        } else {
                            (
                                400,
                                format!(
                                    "{{\"__type\":\"UnknownOperation\",\"message\":\"{target}\"}}"
                                ),
                            )
                        };
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(status)
                                .header("content-type", "application/x-amz-json-1.1")
                                .body(Full::new(bytes::Bytes::from(text)))
                                .unwrap(),
                        )
                    }
                });
                let io = hyper_util::rt::TokioIo::new(conn);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), regions)
}

fn cloudtrail_at(endpoint: &str) -> CloudTrailConfig {
    CloudTrailConfig::with(
        aws_sdk_cloudtrail::config::Builder::new()
            .behavior_version(aws_sdk_cloudtrail::config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_cloudtrail::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            ))
            .region(aws_sdk_cloudtrail::config::Region::new(REGION))
            .endpoint_url(endpoint),
    )
}

/// A fresh bucket holding `logs` and `digests`, after `tamper` has had its way with
/// them (and with the bucket), then the day run with `vars`.
struct Run {
    result: Result<Manifest, Error>,
    s3: Client,
    regions: Vec<String>,
    _server: S3,
}

async fn run(
    vars: &[(&str, &str)],
    served: Vec<(Vec<u8>, (i64, i64))>,
    logs: &[Obj],
    digests: &[Obj],
    tamper: impl AsyncFnOnce(&Client),
) -> Run {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for o in logs.iter().chain(digests) {
        put_obj(&s3, o).await;
    }
    tamper(&s3).await;
    let (endpoint, regions) = key_server_for(served).await;
    let mut vars = vars.to_vec();
    vars.push(("SRC_BUCKET", SRC));
    let mut cfg: Config = config_with(&vars);
    cfg.cloudtrail = cloudtrail_at(&endpoint);
    let result = match aggregate_day(&s3, &cfg, day(), RunOptions::default()).await {
        Ok(summary) => Ok(summary.manifest),
        Err(e) => Err(e),
    };
    let regions = regions.lock().unwrap().clone();
    Run {
        result,
        s3,
        regions,
        _server: server,
    }
}

fn all_good() -> Validation {
    Validation {
        files_verified: 16,
        digests_verified: 100,
        ..Validation::default()
    }
}

/// An untouched signed day verifies whole — every file, every digest — in both
/// layouts, both DER encodings of the key, NDJSON and Parquet, `DAY_BY=event`, and a
/// plan of shards; `ListPublicKeys` is asked in each digest's own region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_signed_day_verifies_whole() {
    let signer = Signer::new();
    for (encoding, der) in [("pkcs1", &signer.pkcs1), ("spki", &signer.spki)] {
        let (logs, digests) = signed_day(&signer, der);
        for vars in [
            vec![("VALIDATE", "report")],
            vec![("VALIDATE", "strict"), ("OUTPUT_FORMAT", "parquet")],
            vec![("VALIDATE", "strict"), ("DAY_BY", "event")],
            vec![("VALIDATE", "strict"), ("SHARD_MAX_FILES", "4")],
        ] {
            let r = run(
                &vars,
                vec![always(der.clone())],
                &logs,
                &digests,
                async |_| {},
            )
            .await;
            let m = r
                .result
                .unwrap_or_else(|e| panic!("{encoding} {vars:?}: {e}"));
            assert_eq!(m.validation, Some(all_good()), "{encoding} {vars:?}");
            assert_eq!(m.source_files, 16);
            let lines = inventory_of(&r.s3, &m).await;
            assert_eq!(lines.len(), 16, "{vars:?}");
            assert_eq!(lines.iter().map(|l| l.records).sum::<u64>(), m.records);
            let chunk_names: Vec<&str> = m
                .chunks
                .iter()
                .map(|c| c.key.rsplit('/').next().unwrap())
                .collect();
            for l in &lines {
                assert_eq!(l.validation, Status::Verified, "{l:?}");
                let source = logs.iter().find(|o| o.key == l.key).unwrap();
                assert_eq!(l.sha256, sha256_hex(&gunzip(&source.body)));
                assert_eq!(l.size, Some(source.body.len() as u64));
                assert!(l.digest.as_deref().unwrap().contains("/CloudTrail-Digest/"));
                assert!(!l.chunks.is_empty(), "{l:?}");
                assert!(
                    l.chunks.iter().all(|c| chunk_names.contains(&c.as_str())),
                    "{l:?}"
                );
            }
            // The inventory is proved by the manifest, as the chunks are.
            let v = verify_day(&r.s3, &config_with(&vars), day(), None)
                .await
                .unwrap();
            assert!(v.holds(), "{v}");
            assert_eq!(v.chunks.len(), m.chunks.len() + m.inventory.len());
            if vars.contains(&("SHARD_MAX_FILES", "4")) {
                assert_eq!(m.shards.len(), 4, "one account and region per shard");
            }
            let mut regions = r.regions.clone();
            regions.sort();
            regions.dedup();
            assert_eq!(regions, ["eu-west-1", "us-east-1"], "{vars:?}");
        }
    }
    // Off: no digest is read, and the manifest has no validation.
    let (logs, digests) = signed_day(&signer, &signer.pkcs1);
    let r = run(&[], vec![], &logs, &digests, async |_| {}).await;
    assert_eq!(r.result.unwrap().validation, None);
    assert!(
        r.regions.is_empty(),
        "ListPublicKeys asked with VALIDATE=off"
    );
}

/// Replaces an object's body (metadata kept, as an attacker with write access would).
async fn rewrite(s3: &Client, digests: &[Obj], key: &str, body: Vec<u8>) {
    let mut o = digests.iter().find(|o| o.key == key).unwrap().clone();
    o.body = body;
    put_obj(s3, &o).await;
}

fn digest_key(prefix: &str, account: &str, region: &str, folder: &str, stamp: &str) -> String {
    format!("{prefix}{account}/CloudTrail-Digest/{region}/{folder}/{account}_CloudTrail-Digest_{region}_{TRAIL}_us-east-1_{stamp}.json.gz")
}

/// Each tampering gives its outcome, counted and in `report` written; `strict` fails
/// the day on it, writing no manifest and leaving no chunk. A day whose last digest is
/// not delivered yet has files not covered, which `strict` lets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tampering_is_counted_and_strict_fails_the_day() {
    let signer = Signer::new();
    let other = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.spki);
    let (prefix, account) = LAYOUTS[0];
    let region = REGIONS[0];
    let log_0530 = log_key(prefix, account, region, "2024/02/12", 530);
    let dig = |folder: &str, stamp: &str| digest_key(prefix, account, region, folder, stamp);
    let covering_0530 = dig("2024/02/12", "20240212T063000Z");
    let last = dig("2024/02/13", "20240213T003000Z");
    let good = all_good();
    type Case = (&'static str, Validation, bool);
    let cases: Vec<Case> = vec![
        // One byte of one record changed, the file gzipped again.
        (
            "modified",
            Validation {
                files_verified: 15,
                files_modified: 1,
                ..good
            },
            true,
        ),
        (
            "deleted",
            Validation {
                files_verified: 15,
                files_missing: 1,
                ..good
            },
            true,
        ),
        // Every file of one account and region deleted for the day (the region's folder
        // remains, holding other days): its digests still name them.
        (
            "emptied folder",
            Validation {
                files_verified: 12,
                files_missing: 4,
                ..good
            },
            true,
        ),
        // A digest's hash list edited without signing again: it vouches for nothing.
        (
            "edited digest",
            Validation {
                files_verified: 15,
                files_not_covered: 1,
                digests_verified: 99,
                digests_invalid: 1,
                ..good
            },
            true,
        ),
        // A digest removed from the middle of its chain: a gap.
        (
            "removed digest",
            Validation {
                files_verified: 15,
                files_not_covered: 1,
                digests_verified: 99,
                digests_missing: 1,
                ..good
            },
            true,
        ),
        // A digest copied to another key (and the original removed): wrong location.
        (
            "moved digest",
            Validation {
                files_verified: 15,
                files_not_covered: 1,
                digests_verified: 99,
                digests_invalid: 1,
                ..good
            },
            true,
        ),
        // A digest signed by a key CloudTrail does not publish.
        (
            "unknown key",
            Validation {
                files_verified: 15,
                files_not_covered: 1,
                digests_verified: 99,
                digests_invalid: 1,
                ..good
            },
            true,
        ),
        // The day's last digest not delivered yet (a run at 00:40): not a failure.
        (
            "last digest not yet",
            Validation {
                files_verified: 15,
                files_not_covered: 1,
                digests_verified: 99,
                ..good
            },
            false,
        ),
    ];
    // A plan of shards answers for the emptied folder as a day of one shard does.
    let shards = [("SHARD_MAX_FILES", "4")];
    let variants = |case| match case {
        "emptied folder" => vec![&[][..], &shards[..]],
        _ => vec![&[][..]],
    };
    for (case, want, fails) in cases {
        for (mode, extra) in ["report", "strict"]
            .into_iter()
            .flat_map(|m| variants(case).into_iter().map(move |x| (m, x)))
        {
            let tamper = async |s3: &Client| match case {
                "modified" => {
                    let o = logs.iter().find(|o| o.key == log_0530).unwrap();
                    let mut body = gunzip(&o.body);
                    let at = body.windows(6).position(|w| w == b"Admin/").unwrap();
                    body[at] = b'X';
                    put(s3, SRC, &log_0530, gzip(&body)).await;
                }
                "deleted" => delete(s3, &log_0530).await,
                "emptied folder" => {
                    let other_day = log_key(prefix, account, region, "2024/02/11", 1200);
                    let one = delivery(&[record(account, region, 1)]);
                    put(s3, SRC, &other_day, gzip(&one)).await;
                    for t in TIMES {
                        delete(s3, &log_key(prefix, account, region, "2024/02/12", t)).await;
                    }
                }
                "edited digest" => {
                    let o = digests.iter().find(|o| o.key == covering_0530).unwrap();
                    let mut d: serde_json::Value =
                        serde_json::from_slice(&gunzip(&o.body)).unwrap();
                    d["logFiles"][0]["hashValue"] = json!(sha256_hex(b"what the attacker wrote"));
                    rewrite(
                        s3,
                        &digests,
                        &covering_0530,
                        gzip(&serde_json::to_vec(&d).unwrap()),
                    )
                    .await;
                }
                "removed digest" => delete(s3, &covering_0530).await,
                "moved digest" => {
                    let mut o = digests
                        .iter()
                        .find(|o| o.key == covering_0530)
                        .unwrap()
                        .clone();
                    o.key = dig("2024/02/12", "20240212T063100Z");
                    put_obj(s3, &o).await;
                    delete(s3, &covering_0530).await;
                }
                "unknown key" => {
                    let o = digests.iter().find(|o| o.key == covering_0530).unwrap();
                    let mut d: serde_json::Value =
                        serde_json::from_slice(&gunzip(&o.body)).unwrap();
                    d["digestPublicKeyFingerprint"] = json!(md5_hex(&other.spki));
                    let body = serde_json::to_vec(&d).unwrap();
                    let msg = format!(
                        "{}\n{SRC}/{}\n{}\n{}",
                        d["digestEndTime"].as_str().unwrap(),
                        covering_0530,
                        sha256_hex(&body),
                        d["previousDigestSignature"].as_str().unwrap()
                    );
                    let mut o = o.clone();
                    o.body = gzip(&body);
                    o.meta[0].1 = other.sign(&msg);
                    put_obj(s3, &o).await;
                }
                "last digest not yet" => delete(s3, &last).await,
                _ => unreachable!(),
            };
            let mut vars = vec![("VALIDATE", mode), ("CHUNK_SIZE_BYTES", "4000")];
            vars.extend_from_slice(extra);
            let r = run(
                &vars,
                vec![always(signer.spki.clone())],
                &logs,
                &digests,
                tamper,
            )
            .await;
            let label = format!("{case} {extra:?}");
            if mode == "strict" && fails {
                // A plan's day fails in the shard that commits it.
                let result = match r.result {
                    Err(Error::Shard { source, .. }) => Err(*source),
                    other => other,
                };
                match result {
                    Err(Error::Integrity { validation, .. }) => {
                        assert_eq!(validation, want, "{label} {mode}")
                    }
                    other => panic!("{label} {mode}: {other:?}"),
                }
                assert_eq!(get(&r.s3, DST, MANIFEST).await, None, "{label}: a manifest");
                let left = keys(&r.s3, DST, "cloudtrail-daily/2024/02/12/").await;
                assert!(
                    left.iter()
                        .all(|k| k.rsplit('/').next().unwrap().starts_with('_')),
                    "{label}: {left:?}"
                );
            } else {
                let m = r.result.unwrap_or_else(|e| panic!("{label} {mode}: {e}"));
                assert_eq!(m.validation, Some(want), "{label} {mode}");
                // The inventory says it of the file.
                let lines = inventory_of(&r.s3, &m).await;
                let status = lines
                    .iter()
                    .find(|l| l.key == log_0530)
                    .map(|l| l.validation);
                let want_status = match case {
                    "modified" => Status::Modified,
                    "deleted" | "emptied folder" => Status::Missing,
                    "last digest not yet" => Status::Verified,
                    _ => Status::NotCovered,
                };
                assert_eq!(status, Some(want_status), "{label}");
                let written: Manifest =
                    serde_json::from_slice(&get(&r.s3, DST, MANIFEST).await.unwrap()).unwrap();
                assert_eq!(written.validation, Some(want), "{label} {mode}");
            }
        }
    }
}

/// Backfill digests (made late, named `…_backfill.json.gz`) are a chain of their own.
/// One made months after the day is signed with a key of that time, which
/// `ListPublicKeys` gives only when asked about that time: it is asked, as the AWS CLI
/// asks it, around the digest's `backfill-generation-timestamp`. Without that metadata
/// a backfill digest is invalid (as the CLI has it), and vouches for nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_digests_are_checked_with_the_keys_of_their_time() {
    let (signer, later) = (Signer::new(), Signer::new());
    let made_at = 1_717_236_000; // 2024-06-01T10:00:00Z
    let backfill = Backfill {
        signer: &later,
        der: &later.spki,
        made: "2024-06-01T10:00:00Z",
    };
    let (logs, digests) = signed_day_with(&signer, &signer.spki, Some(&backfill));
    let backfills: Vec<&Obj> = digests
        .iter()
        .filter(|d| d.key.ends_with("_backfill.json.gz"))
        .collect();
    assert_eq!(backfills.len(), 25);
    let served = vec![
        always(signer.spki.clone()),
        (later.spki.clone(), (made_at - 1800, made_at + 1800)),
    ];
    let vars = [("VALIDATE", "strict")];
    let r = run(&vars, served.clone(), &logs, &digests, async |_| {}).await;
    let m = r.result.unwrap();
    assert_eq!(m.validation, Some(all_good()));

    // The later key not published: the backfill chain does not verify.
    let r = run(
        &vars,
        vec![always(signer.spki.clone())],
        &logs,
        &digests,
        async |_| {},
    )
    .await;
    match r.result {
        Err(Error::Integrity { validation, .. }) => assert_eq!(
            validation,
            Validation {
                files_verified: 12,
                files_not_covered: 4,
                digests_verified: 75,
                digests_invalid: 25,
                ..Validation::default()
            }
        ),
        other => panic!("{other:?}"),
    }

    // One backfill digest without the time it was made.
    let (prefix, account) = LAYOUTS[0];
    let bare = format!(
        "{}_backfill.json.gz",
        digest_key(
            prefix,
            account,
            REGIONS[0],
            "2024/02/12",
            "20240212T063000Z"
        )
        .trim_end_matches(".json.gz")
    );
    let strip = async |s3: &Client| {
        let mut o = (*backfills.iter().find(|o| o.key == bare).unwrap()).clone();
        o.meta.retain(|(k, _)| k != "backfill-generation-timestamp");
        put_obj(s3, &o).await;
    };
    let r = run(&[("VALIDATE", "report")], served, &logs, &digests, strip).await;
    let want = Validation {
        files_verified: 15,
        files_not_covered: 1,
        digests_verified: 99,
        digests_invalid: 1,
        ..Validation::default()
    };
    assert_eq!(r.result.unwrap().validation, Some(want));
}

/// The lines of every inventory the manifest lists, in order.
async fn inventory_of(s3: &Client, m: &Manifest) -> Vec<Line> {
    assert!(!m.inventory.is_empty(), "no inventory in {m:?}");
    let mut lines = Vec::new();
    for i in &m.inventory {
        let bytes = get(s3, DST, &i.key).await.unwrap();
        assert_eq!(i.sha256, sha256_hex(&bytes));
        let k = i.key.rsplit('/').next().unwrap();
        assert!(k.starts_with("_inventory"), "{k}");
        lines.extend(cloudtrail_aggregator::inventory::parse(&bytes).unwrap());
    }
    lines
}

async fn delete(s3: &Client, key: &str) {
    s3.delete_object()
        .bucket(SRC)
        .key(key)
        .send()
        .await
        .unwrap();
}

/// `ListPublicKeys` refused (no permission, no endpoint) fails the day naming the
/// operation and the region: validation asked for is never skipped quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_public_keys_fails_the_day_naming_why() {
    let signer = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.pkcs1);
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for o in logs.iter().chain(&digests) {
        put_obj(&s3, o).await;
    }
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut cfg = config_with(&[("VALIDATE", "report"), ("SRC_BUCKET", SRC)]);
    cfg.cloudtrail = CloudTrailConfig::with(
        aws_sdk_cloudtrail::config::Builder::new()
            .behavior_version(aws_sdk_cloudtrail::config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_cloudtrail::config::Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            ))
            .retry_config(aws_sdk_cloudtrail::config::retry::RetryConfig::disabled())
            .endpoint_url(refused),
    );
    let e = aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap_err();
    let text = cloudtrail_aggregator::error::error_chain(&e);
    assert!(matches!(e, Error::PublicKeys { .. }), "{text}");
    assert!(text.contains("ListPublicKeys in "), "{text}");
    assert!(text.contains("cloudtrail:ListPublicKeys"), "{text}");
    assert_eq!(get(&s3, DST, MANIFEST).await, None);
}

/// A fresh S3 server holding `logs` and `digests`.
async fn bucket_with(logs: &[Obj], digests: &[Obj]) -> (S3, Client) {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for o in logs.iter().chain(digests) {
        put_obj(&s3, o).await;
    }
    (server, s3)
}

/// One record of the 05:30 file changed by one byte.
async fn modify_0530(s3: &Client, logs: &[Obj]) -> String {
    let (prefix, account) = LAYOUTS[0];
    let key = log_key(prefix, account, REGIONS[0], "2024/02/12", 530);
    let o = logs.iter().find(|o| o.key == key).unwrap();
    let mut body = gunzip(&o.body);
    let at = body.windows(6).position(|w| w == b"Admin/").unwrap();
    body[at] = b'X';
    put(s3, SRC, &key, gzip(&body)).await;
    key
}

/// Through the Lambda handler: a day whose digests hold is committed with its
/// validation; with `VALIDATE=strict` a modified file fails the message, naming the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_validates() {
    use cloudtrail_aggregator::handler::{handle, App};
    let signer = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.pkcs1);
    let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_slice(
        &std::fs::read(format!(
            "{}/events/explicit-date.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let today = chrono::NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    for tampered in [false, true] {
        let (_server, s3) = bucket_with(&logs, &digests).await;
        if tampered {
            modify_0530(&s3, &logs).await;
        }
        let (endpoint, _) = key_server(vec![signer.pkcs1.clone()]).await;
        let mut config = config_with(&[("VALIDATE", "strict"), ("SRC_BUCKET", SRC)]);
        config.cloudtrail = cloudtrail_at(&endpoint);
        let app = App {
            s3: s3.clone(),
            sqs: None,
            config,
        };
        let got = handle(&app, event.clone(), today, None).await;
        if tampered {
            let e = got.unwrap_err().to_string();
            assert!(e.contains("2024-02-12 failed validation"), "{e}");
            assert!(e.contains("1 modified"), "{e}");
            assert_eq!(get(&s3, DST, MANIFEST).await, None);
        } else {
            assert!(got.unwrap().batch_item_failures.is_empty());
            let m: Manifest =
                serde_json::from_slice(&get(&s3, DST, MANIFEST).await.unwrap()).unwrap();
            assert_eq!(m.validation, Some(all_good()));
        }
    }
}

/// `ctagg run` as a user runs it, the CloudTrail endpoint given as the SDK reads it
/// (`AWS_ENDPOINT_URL_CLOUDTRAIL`): `VALIDATE=report` prints and writes the counts;
/// `--validate strict` on a modified file exits non-zero, the file named in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctagg_validates() {
    let signer = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.spki);
    let (server, s3) = bucket_with(&logs, &digests).await;
    let s3_endpoint = server.serve_tcp().await;
    let (keys_endpoint, regions) = key_server(vec![signer.spki.clone()]).await;
    let ctagg = |args: &'static [&'static str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ctagg"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_ENDPOINT_URL", &s3_endpoint)
            .env("AWS_ENDPOINT_URL_CLOUDTRAIL", &keys_endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", REGION)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("SRC_BUCKET", SRC)
            .env("DST_BUCKET", DST)
            .env("VALIDATE", "report");
        cmd.output()
    };
    let out = ctagg(&["run", "2024-02-12"]).await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    let m: Manifest = serde_json::from_slice(&get(&s3, DST, MANIFEST).await.unwrap()).unwrap();
    assert_eq!(m.validation, Some(all_good()), "{err}");
    assert!(!regions.lock().unwrap().is_empty());
    let out = ctagg(&["verify", "2024-02-12", "--sources"]).await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    assert!(
        said.contains(
            "2024-02-12: 16 of 16 source files verified against their CloudTrail digests"
        ),
        "{said}"
    );

    let key = modify_0530(&s3, &logs).await;
    let out = ctagg(&["run", "2024-02-12", "--validate", "strict"])
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("failed validation"), "{err}");
    assert!(err.contains(&format!("s3://{SRC}/{key}")), "{err}");
    assert_eq!(get(&s3, DST, MANIFEST).await, None);
}

/// The signed test day is what CloudTrail writes, by an independent reader: the AWS
/// CLI's `aws cloudtrail validate-logs` (its own S3 and CloudTrail clients, against the
/// same S3 server over loopback and the same key server) finds every digest and log
/// file of the single-account layout valid, and finds the tampered file. Needs the CLI:
/// `AWS_CLI=path/to/aws cargo test --test validate -- --ignored` (`.ci/run` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the AWS CLI in AWS_CLI; run by .ci/run"]
async fn the_aws_cli_accepts_the_signed_test_day() {
    let aws = std::env::var("AWS_CLI").expect("AWS_CLI: the path of the aws command");
    let signer = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.pkcs1);
    let (server, s3) = bucket_with(&logs, &digests).await;
    let s3_endpoint = server.serve_tcp().await;
    let (keys_endpoint, _) = key_server(vec![signer.pkcs1.clone()]).await;
    let config = std::env::temp_dir().join(format!("ctagg-awscli-{}", std::process::id()));
    std::fs::write(&config, "[default]\ns3 =\n    addressing_style = path\n").unwrap();
    let (_, account) = LAYOUTS[1];
    let validate = || {
        let mut cmd = tokio::process::Command::new(&aws);
        cmd.args([
            "cloudtrail",
            "validate-logs",
            "--trail-arn",
            &format!("arn:aws:cloudtrail:us-east-1:{account}:trail/{TRAIL}"),
            "--start-time",
            "2024-02-12T00:00:00Z",
            "--end-time",
            "2024-02-13T00:30:00Z",
            "--s3-bucket",
            SRC,
            "--region",
            "us-east-1",
            "--verbose",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_ENDPOINT_URL_S3", &s3_endpoint)
        .env("AWS_ENDPOINT_URL_CLOUDTRAIL", &keys_endpoint)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd.output()
    };
    let out = validate().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("25/25 digest files valid"), "{text}");
    assert!(text.contains("4/4 log files valid"), "{text}");
    let key = log_key(LAYOUTS[1].0, account, REGIONS[0], "2024/02/12", 530);
    let o = logs.iter().find(|o| o.key == key).unwrap();
    let mut body = gunzip(&o.body);
    let at = body.windows(6).position(|w| w == b"Admin/").unwrap();
    body[at] = b'X';
    put(&s3, SRC, &key, gzip(&body)).await;
    let out = validate().await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&format!("s3://{SRC}/{key}")), "{text}");
    assert!(
        text.contains("3/4 log files valid, 1/4 log files INVALID"),
        "{text}"
    );
    let _ = std::fs::remove_file(&config);
}

/// An inventory changed after the run is named by `verify`, as a changed chunk is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_changed_inventory() {
    let signer = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.pkcs1);
    let vars = [("VALIDATE", "report"), ("SHARD_MAX_FILES", "8")];
    let r = run(
        &vars,
        vec![always(signer.pkcs1.clone())],
        &logs,
        &digests,
        async |_| {},
    )
    .await;
    let m = r.result.unwrap();
    assert_eq!(m.inventory.len(), 2, "one per shard");
    let cfg = config_with(&vars);
    assert!(verify_day(&r.s3, &cfg, day(), None).await.unwrap().holds());
    let target = &m.inventory[1].key;
    let mut lines =
        cloudtrail_aggregator::inventory::parse(&get(&r.s3, DST, target).await.unwrap()).unwrap();
    lines[0].validation = Status::Verified;
    lines[0].sha256 = "00".repeat(32);
    let body: Vec<u8> = lines
        .iter()
        .flat_map(|l| {
            let mut b = serde_json::to_vec(l).unwrap();
            b.push(b'\n');
            b
        })
        .collect();
    put(&r.s3, DST, target, gzip(&body)).await;
    let v = verify_day(&r.s3, &cfg, day(), None).await.unwrap();
    assert!(!v.holds());
    let changed: Vec<&str> = v
        .chunks
        .iter()
        .filter(|(_, f)| matches!(f, Finding::Changed { .. }))
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(changed, [format!("s3://{DST}/{target}")]);
}

/// `verify --sources` follows the chain of custody again: every source file of the
/// inventories read again and checked against its line and its digest; a file changed
/// after the run, and a file whose digest was re-written, are named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_sources_follows_each_file_to_its_digest() {
    use cloudtrail_aggregator::provenance::verify_sources;
    let signer = Signer::new();
    let (logs, digests) = signed_day(&signer, &signer.spki);
    let vars = [
        ("VALIDATE", "report"),
        ("SHARD_MAX_FILES", "8"),
        ("SRC_BUCKET", SRC),
    ];
    let r = run(
        &vars,
        vec![always(signer.spki.clone())],
        &logs,
        &digests,
        async |_| {},
    )
    .await;
    r.result.unwrap();
    let (endpoint, _) = key_server(vec![signer.spki.clone()]).await;
    let mut cfg = config_with(&vars);
    cfg.cloudtrail = cloudtrail_at(&endpoint);
    let s = verify_sources(&r.s3, &cfg, day()).await.unwrap();
    assert!(s.holds(), "{s}");
    assert_eq!(s.files.len(), 16);
    assert!(s.files.iter().all(|(_, f)| *f == Finding::Verified), "{s}");
    assert!(
        s.to_string().starts_with("16 of 16 source files verified"),
        "{s}"
    );
    // After the run: one file changed, and the digest of another re-written.
    let changed = modify_0530(&r.s3, &logs).await;
    let (prefix, account) = LAYOUTS[1];
    let other = log_key(prefix, account, REGIONS[1], "2024/02/12", 1200);
    let covering = digest_key(
        prefix,
        account,
        REGIONS[1],
        "2024/02/12",
        "20240212T123000Z",
    );
    let o = digests.iter().find(|o| o.key == covering).unwrap();
    let mut d: serde_json::Value = serde_json::from_slice(&gunzip(&o.body)).unwrap();
    d["logFiles"][0]["hashValue"] = json!("ab".repeat(32));
    rewrite(
        &r.s3,
        &digests,
        &covering,
        gzip(&serde_json::to_vec(&d).unwrap()),
    )
    .await;
    let s = verify_sources(&r.s3, &cfg, day()).await.unwrap();
    assert!(!s.holds());
    let bad: Vec<(&str, String)> = s
        .files
        .iter()
        .filter_map(|(k, f)| match f {
            Finding::Changed { detail } => Some((k.as_str(), detail.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(bad.len(), 2, "{s}");
    let said = |key: &str| {
        let k = format!("s3://{SRC}/{key}");
        bad.iter()
            .find(|(b, _)| *b == k)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    };
    assert!(said(&changed).contains("the inventory says"), "{s}");
    assert!(said(&other).contains("does not verify"), "{s}");
    // A day aggregated without VALIDATE has no inventory: said so.
    let off = run(
        &[("SRC_BUCKET", SRC)],
        vec![],
        &logs,
        &digests,
        async |_| {},
    )
    .await;
    off.result.unwrap();
    let e = verify_sources(&off.s3, &config_with(&[("SRC_BUCKET", SRC)]), day())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("VALIDATE=off"), "{e}");
}
