//! `verify`: an aggregated day re-checked from S3 alone, as an auditor runs it, against
//! a real S3 protocol server (s3s-fs in-process): every chunk's size and SHA-256 against
//! the manifest, a changed, missing or extra chunk named — in both formats and with shards.

mod common;

use cloudtrail_aggregator::manifest::Manifest;
use cloudtrail_aggregator::verify::{verify_day, Finding};
use cloudtrail_aggregator::{aggregate_day, Day, RunOptions};
use common::*;

const SRC: &str = "cloudtrail-logs";
const DST: &str = "aggregated";
const MANIFEST: &str = "cloudtrail-daily/2024/02/12/_manifest.json";

fn day() -> Day {
    "2024-02-12".parse().unwrap()
}

/// A few accounts' files of one day.
fn files() -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (a, account) in ["111111111111", "222222222222"].iter().enumerate() {
        for f in 0..6 {
            let recs: Vec<String> = (0..3)
                .map(|i| record(account, "us-east-1", a * 100 + f * 10 + i))
                .collect();
            files.push((
                log_key("AWSLogs/", account, "us-east-1", "2024/02/12", f),
                gzip(&delivery(&recs)),
            ));
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_verifies_and_each_alteration_is_named() {
    for vars in [
        vec![("CHUNK_SIZE_BYTES", "2000")],
        vec![("OUTPUT_FORMAT", "parquet")],
        vec![("CHUNK_SIZE_BYTES", "2000"), ("SHARD_MAX_FILES", "4")],
    ] {
        let server = S3::new();
        let s3 = server.client();
        create_bucket(&s3, SRC).await;
        create_bucket(&s3, DST).await;
        for (k, b) in files() {
            put(&s3, SRC, &k, b).await;
        }
        let cfg = config_with(&vars);
        aggregate_day(&s3, &cfg, day(), RunOptions::default())
            .await
            .unwrap();
        let manifest: Manifest = serde_json::from_slice(
            &get(&s3, DST, "cloudtrail-daily/2024/02/12/_manifest.json")
                .await
                .unwrap(),
        )
        .unwrap();
        // NDJSON in several chunks; Parquet in one file (its smallest file is 1 MiB).
        let parquet = vars.contains(&("OUTPUT_FORMAT", "parquet"));
        assert!(
            parquet || manifest.chunks.len() >= 2,
            "{vars:?}: {manifest:?}"
        );
        // The manifest's SHA-256 is the SHA-256 of the object.
        for c in &manifest.chunks {
            let bytes = get(&s3, DST, &c.key).await.unwrap();
            assert_eq!(
                c.sha256,
                cloudtrail_aggregator::digest::sha256_hex(&bytes),
                "{vars:?}"
            );
            assert_eq!(c.bytes, bytes.len() as u64);
        }
        let v = verify_day(&s3, &cfg, day(), None).await.unwrap();
        assert!(v.holds(), "{vars:?}: {v}");
        assert_eq!(v.chunks.len(), manifest.chunks.len());
        // The manifest's own SHA-256 is said, and holds when given back.
        let manifest_bytes = get(&s3, DST, MANIFEST).await.unwrap();
        let pinned = cloudtrail_aggregator::digest::sha256_hex(&manifest_bytes);
        assert_eq!(v.manifest_sha256, pinned);
        assert!(v.to_string().contains(&pinned));
        let v = verify_day(&s3, &cfg, day(), Some(&pinned)).await.unwrap();
        assert!(v.holds(), "{vars:?}: {v}");
        // Names Athena skips (`_`, `.`) are not the table's; anything else is.
        put(
            &s3,
            DST,
            "cloudtrail-daily/2024/02/12/_notes.txt",
            b"x".to_vec(),
        )
        .await;
        assert!(verify_day(&s3, &cfg, day(), None).await.unwrap().holds());

        // One byte of one chunk changed (same size), another chunk deleted, one added.
        let first = &manifest.chunks[0].key;
        let second = manifest.chunks.get(1).map(|c| c.key.clone());
        let mut bytes = get(&s3, DST, first).await.unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        put(&s3, DST, first, bytes).await;
        if let Some(second) = &second {
            let delete = s3.delete_object().bucket(DST).key(second).send().await;
            delete.unwrap();
        }
        let extra = "cloudtrail-daily/2024/02/12/000099.ndjson.gz";
        put(&s3, DST, extra, gzip(b"{}\n")).await;
        let stray = "cloudtrail-daily/2024/02/12/evil.json";
        put(&s3, DST, stray, b"{}\n".to_vec()).await;
        put(
            &s3,
            DST,
            "cloudtrail-daily/2024/02/12/sub/x.ndjson.gz",
            gzip(b"{}\n"),
        )
        .await;
        let v = verify_day(&s3, &cfg, day(), None).await.unwrap();
        assert!(!v.holds());
        let finding = |key: &str| {
            v.chunks
                .iter()
                .find(|(k, _)| k == &format!("s3://{DST}/{key}"))
                .map(|(_, f)| f.clone())
        };
        assert!(
            matches!(finding(first), Some(Finding::Changed { .. })),
            "{v}"
        );
        if let Some(second) = &second {
            assert_eq!(finding(second), Some(Finding::Missing), "{v}");
            let text = v.to_string();
            assert!(text.contains(&format!("s3://{DST}/{second}: missing")));
        }
        assert_eq!(finding(extra), Some(Finding::Extra), "{v}");
        assert_eq!(finding(stray), Some(Finding::Extra), "{v}");
        let folder = "cloudtrail-daily/2024/02/12/sub/";
        assert_eq!(finding(folder), Some(Finding::Extra), "{v}");
        let text = v.to_string();
        assert!(
            text.contains(&format!("s3://{DST}/{first}: changed: SHA-256 ")),
            "{text}"
        );
        assert!(
            text.contains(&format!("s3://{DST}/{extra}: extra")),
            "{text}"
        );
    }
}

/// A day with no manifest is an error naming where the manifest should be.
#[tokio::test]
async fn a_day_without_a_manifest_is_an_error() {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, DST).await;
    let e = verify_day(&s3, &config_with(&[]), day(), None)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("s3://aggregated/cloudtrail-daily/2024/02/12/_manifest.json")
            && text.contains("no manifest"),
        "{text}"
    );
}

/// A manifest changed together with its chunks (a chunk dropped from both) passes the
/// chunk checks, and is caught by the manifest's SHA-256 kept from the day it was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_changed_with_its_chunks_is_caught_by_its_pinned_hash() {
    let server = S3::new();
    let s3 = server.client();
    create_bucket(&s3, SRC).await;
    create_bucket(&s3, DST).await;
    for (k, b) in files() {
        put(&s3, SRC, &k, b).await;
    }
    let cfg = config_with(&[("CHUNK_SIZE_BYTES", "2000")]);
    aggregate_day(&s3, &cfg, day(), RunOptions::default())
        .await
        .unwrap();
    let pinned = cloudtrail_aggregator::digest::sha256_hex(&get(&s3, DST, MANIFEST).await.unwrap());
    let mut manifest: Manifest =
        serde_json::from_slice(&get(&s3, DST, MANIFEST).await.unwrap()).unwrap();
    let dropped = manifest.chunks.pop().unwrap();
    s3.delete_object()
        .bucket(DST)
        .key(&dropped.key)
        .send()
        .await
        .unwrap();
    put(
        &s3,
        DST,
        MANIFEST,
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .await;
    assert!(verify_day(&s3, &cfg, day(), None).await.unwrap().holds());
    let v = verify_day(&s3, &cfg, day(), Some(&pinned)).await.unwrap();
    assert!(!v.holds());
    assert!(
        v.to_string()
            .contains(&format!("s3://{DST}/{MANIFEST}: changed: SHA-256 ")),
        "{v}"
    );
}
