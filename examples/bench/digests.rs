//! CloudTrail digests for a generated day (`--validate report`): per account and region
//! of the day's folders, 25 hourly digests ending at 00:30 on the day through 00:30 the
//! next (as CloudTrail writes them whether or not the hour had files), chained, signed
//! with an RSA key made once and kept beside the data (`public-key.der`). The signatures
//! are kept in `digest-signatures.tsv` (key, tab, hex signature): s3s-fs names its
//! metadata files after the base64 of the key, too long for a file name with these
//! keys, so the bench server adds `x-amz-meta-signature` to a digest's GET itself. It
//! answers `ListPublicKeys` with the key.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};
use base64::Engine;
use serde_json::json;

use super::{DAY, SRC};

const TRAIL: &str = "bench";

/// (prefix up to the account's folder, account, region) → [(HHMM, key, SHA-256)].
type Groups = BTreeMap<(String, String, String), Vec<(u32, String, String)>>;

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Writes the digests of the shape under `dir` once; returns how many there are.
pub fn ensure(dir: &Path) -> u64 {
    let marker = dir.join("digests.count");
    if let Some(n) = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return n;
    }
    eprintln!("signing digests for {} (once; cached)…", dir.display());
    let t = std::time::Instant::now();
    let root = dir.join("s3");
    let bucket_root = root.join(SRC);
    let mut files = Vec::new();
    walk(&bucket_root, &mut files);
    let mut groups = Groups::new();
    for path in files {
        let key = path
            .strip_prefix(&bucket_root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let Some(i) = key.find("/CloudTrail/") else {
            continue;
        };
        let parts: Vec<&str> = key[i + 1..].split('/').collect();
        if parts.len() != 6 || format!("{}/{}/{}", parts[2], parts[3], parts[4]) != DAY {
            continue;
        }
        let account_start = key[..i].rfind('/').map_or(0, |j| j + 1);
        let (prefix, account) = (&key[..account_start], &key[account_start..i]);
        let name = parts[5];
        let time = name.split('_').nth(3).unwrap_or_default();
        let hhmm: u32 = time.get(9..13).and_then(|t| t.parse().ok()).unwrap_or(0);
        let mut body = Vec::new();
        flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
            .read_to_end(&mut body)
            .unwrap();
        groups
            .entry((
                prefix.to_string(),
                account.to_string(),
                parts[1].to_string(),
            ))
            .or_default()
            .push((hhmm, key.clone(), sha256_hex(&body)));
    }
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let der = pair.public_key().as_ref().to_vec();
    let fingerprint = {
        use md5::Digest as _;
        hex::encode(md5::Md5::digest(&der))
    };
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut signatures = String::new();
    let compact = DAY.replace('/', "");
    let next = "2024/02/13";
    let mut count = 0u64;
    for ((prefix, account, region), files) in &groups {
        let mut prev: Option<(String, String, String)> = None;
        for h in 0..25u32 {
            let (date, folder, hour) = if h < 24 {
                (compact.as_str(), DAY, h)
            } else {
                ("20240213", next, 0)
            };
            let end = format!(
                "{}-{}-{}T{hour:02}:30:00Z",
                &date[..4],
                &date[4..6],
                &date[6..]
            );
            let key = format!(
                "{prefix}{account}/CloudTrail-Digest/{region}/{folder}/{account}_CloudTrail-Digest_{region}_{TRAIL}_us-east-1_{date}T{hour:02}3000Z.json.gz"
            );
            let (from, to) = (h as i64 * 100 - 70, h as i64 * 100 + 30);
            let listed: Vec<serde_json::Value> = files
                .iter()
                .filter(|(t, _, _)| (*t as i64) >= from && (*t as i64) < to)
                .map(|(_, k, sha)| {
                    json!({"s3Bucket": SRC, "s3Object": k, "hashValue": sha, "hashAlgorithm": "SHA-256"})
                })
                .collect();
            let (pb, pk, ph, ps) = match &prev {
                Some((k, sha, sig)) => (json!(SRC), json!(k), json!(sha), json!(sig)),
                None => (json!(null), json!(null), json!(null), json!(null)),
            };
            let body = serde_json::to_vec(&json!({
                "awsAccountId": account, "digestStartTime": end, "digestEndTime": end,
                "digestS3Bucket": SRC, "digestS3Object": key,
                "digestPublicKeyFingerprint": fingerprint, "digestSignatureAlgorithm": "SHA256withRSA",
                "newestEventTime": null, "oldestEventTime": null,
                "previousDigestS3Bucket": pb, "previousDigestS3Object": pk,
                "previousDigestHashValue": ph, "previousDigestHashAlgorithm": "SHA-256",
                "previousDigestSignature": ps, "logFiles": listed,
            }))
            .unwrap();
            let sha = sha256_hex(&body);
            let prev_sig = prev.as_ref().map_or("null".to_string(), |p| p.2.clone());
            let message = format!("{end}\n{SRC}/{key}\n{sha}\n{prev_sig}");
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, message.as_bytes(), &mut sig)
                .unwrap();
            let signature = hex::encode(sig);
            super::gzip_to(&bucket_root.join(&key), &body);
            signatures.push_str(&format!("{key}\t{signature}\n"));
            prev = Some((key, sha, signature));
            count += 1;
        }
    }
    std::fs::write(dir.join("digest-signatures.tsv"), signatures).unwrap();
    std::fs::write(dir.join("public-key.der"), &der).unwrap();
    std::fs::write(&marker, count.to_string()).unwrap();
    eprintln!(
        "  {count} digests over {} accounts and regions in {:.1}s",
        groups.len(),
        t.elapsed().as_secs_f64()
    );
    count
}

/// What the bench server answers for CloudTrail: `ListPublicKeys`, and each digest's
/// signature metadata.
pub struct Served {
    pub public_keys: String,
    /// Digest key → hex signature.
    pub signatures: HashMap<String, String>,
}

/// What to serve for the digests made beside the data under `root`'s parent, if any.
pub fn served(root: &Path) -> Option<Served> {
    let dir = root.parent()?;
    let signatures = std::fs::read_to_string(dir.join("digest-signatures.tsv"))
        .ok()?
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, s)| (k.to_string(), s.to_string()))
        .collect();
    Some(Served {
        public_keys: public_keys_body(&std::fs::read(dir.join("public-key.der")).ok()?),
        signatures,
    })
}

/// The `ListPublicKeys` answer for `der`.
fn public_keys_body(der: &[u8]) -> String {
    let fingerprint = {
        use md5::Digest as _;
        hex::encode(md5::Md5::digest(der))
    };
    let value = base64::engine::general_purpose::STANDARD.encode(der);
    json!({"PublicKeyList": [{"Value": value, "ValidityStartTime": 1_700_000_000,
        "ValidityEndTime": 1_800_000_000, "Fingerprint": fingerprint}]})
    .to_string()
}
