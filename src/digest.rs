//! CloudTrail's digest files, checked as `aws cloudtrail validate-logs` checks them —
//! and the chain links it leaves out. A synchronous core: bytes in, verdicts out; the
//! listing and reading of digests and `ListPublicKeys` are the caller's.
//!
//! What a digest is and how it is signed (AWS CLI `awscli/customizations/cloudtrail/
//! validation.py`, the CloudTrail User Guide; `tests/fixtures/cloudtrail-digest/SOURCES.md`):
//!
//! - the object `AWSLogs/[o-ORG/]ACCOUNT/CloudTrail-Digest/REGION/YYYY/MM/DD/…Z.json.gz`,
//!   a JSON object listing the SHA-256 of the **uncompressed** bytes of each log file
//!   delivered in the hour before `digestEndTime`;
//! - its signature, hex, in the object's user metadata `signature`
//!   (`x-amz-meta-signature`): RSASSA-PKCS1-v1_5 with SHA-256 over [`string_to_sign`];
//! - the key, from CloudTrail's `ListPublicKeys` in the digest's region, is the one whose
//!   fingerprint — the hex MD5 of its DER exactly as delivered, PKCS#1 `RSAPublicKey` or
//!   `SubjectPublicKeyInfo` (AWS has published both) — is `digestPublicKeyFingerprint`;
//! - each digest names the one before it: `previousDigestSignature` and
//!   `previousDigestHashValue` (the SHA-256 of the previous digest's uncompressed bytes),
//!   `null` in the first digest of a chain. The CLI checks only each digest's own
//!   signature; [`link`] checks both fields, so a digest removed from the middle of a
//!   chain is a gap, not silence.
//!
//! Crypto is aws-lc-rs (already in the tree through the SDK's TLS; its SHA-256 uses the
//! CPU's SHA extensions) and `md-5` for the fingerprint, which aws-lc-rs does not offer.

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use md5::{Digest as _, Md5};
use serde::Deserialize;

/// One digest file's fields (the ones the checks read, and the log files it lists).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Digest {
    pub aws_account_id: String,
    pub digest_start_time: String,
    pub digest_end_time: String,
    pub digest_s3_bucket: String,
    pub digest_s3_object: String,
    pub digest_public_key_fingerprint: String,
    #[serde(default)]
    pub previous_digest_s3_bucket: Option<String>,
    #[serde(default)]
    pub previous_digest_s3_object: Option<String>,
    #[serde(default)]
    pub previous_digest_hash_value: Option<String>,
    #[serde(default)]
    pub previous_digest_signature: Option<String>,
    pub log_files: Vec<LogFile>,
}

/// A log file a digest vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogFile {
    pub s3_bucket: String,
    pub s3_object: String,
    /// Lowercase hex SHA-256 of the file's uncompressed bytes.
    pub hash_value: String,
}

/// A digest as read: its fields, and the SHA-256 of its uncompressed bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestFile {
    pub digest: Digest,
    /// Lowercase hex SHA-256 of the bytes parsed (what the next digest's
    /// `previousDigestHashValue` names, and part of the signed string).
    pub sha256: String,
}

/// Why a digest does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error("not a CloudTrail digest: {0}")]
    Malformed(String),
    #[error("it says it is s3://{says}, but was read from s3://{read}")]
    WrongLocation { says: String, read: String },
    #[error(
        "no signature in its S3 metadata (x-amz-meta-signature and x-amz-meta-signature-algorithm)"
    )]
    NoSignature,
    #[error("its signature is not hex: {0:?}")]
    SignatureNotHex(String),
    #[error("no public key with fingerprint {0} (ListPublicKeys in the digest's region)")]
    UnknownKey(String),
    #[error("the public key with fingerprint {0} is not an RSA key in DER")]
    BadKey(String),
    #[error("its signature does not verify with the key {0}")]
    BadSignature(String),
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest(&SHA256, bytes))
}

/// Parses a digest's uncompressed bytes.
pub fn parse(bytes: &[u8]) -> Result<DigestFile, DigestError> {
    let digest: Digest =
        serde_json::from_slice(bytes).map_err(|e| DigestError::Malformed(e.to_string()))?;
    Ok(DigestFile {
        digest,
        sha256: sha256_hex(bytes),
    })
}

/// The string a digest's signature is over: `digestEndTime`, `bucket/key`, the hex
/// SHA-256 of the uncompressed digest, `previousDigestSignature` (the four characters
/// `null` when it is JSON null), joined by LF, no LF at the end.
pub fn string_to_sign(d: &DigestFile) -> String {
    let g = &d.digest;
    format!(
        "{}\n{}/{}\n{}\n{}",
        g.digest_end_time,
        g.digest_s3_bucket,
        g.digest_s3_object,
        d.sha256,
        g.previous_digest_signature.as_deref().unwrap_or("null")
    )
}

/// The fingerprint CloudTrail gives a public key: hex MD5 of its DER as delivered.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Md5::digest(der))
}

/// A public key of `ListPublicKeys`: its DER (PKCS#1 or SubjectPublicKeyInfo), as the
/// SDK's blob holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub fingerprint: String,
    pub der: Vec<u8>,
}

impl PublicKey {
    /// The key, its fingerprint computed from `der`.
    pub fn new(der: Vec<u8>) -> PublicKey {
        PublicKey {
            fingerprint: fingerprint(&der),
            der,
        }
    }

    /// Whether `signature` is this key's RSASSA-PKCS1-v1_5 SHA-256 signature of `message`.
    /// aws-lc-rs reads the key in either DER layout.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.der)
            .verify(message, signature)
            .is_ok()
    }

    /// Whether `der` holds an RSA public key at all (a wrong blob is told apart from a
    /// wrong signature): an RSA key refuses an empty signature for length, a blob that
    /// is not a key refuses it for parsing, and aws-lc-rs does not tell the two apart,
    /// so the DER is checked for an RSA public key's outer shape instead.
    fn looks_like_rsa(&self) -> bool {
        // SEQUENCE, long-form length: both PKCS#1 and SPKI of a ≥ 2048-bit key.
        self.der.len() > 200 && self.der[0] == 0x30 && self.der[1] == 0x82
    }
}

/// A digest object's S3 user metadata that the check reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metadata<'a> {
    /// `signature`: the hex signature.
    pub signature: Option<&'a str>,
    /// `signature-algorithm`: required present, as the AWS CLI requires it (its value is
    /// not read: SHA256withRSA is the only one).
    pub signature_algorithm: Option<&'a str>,
}

/// Checks one digest: read from where it says it is, signed (hex signature from its
/// metadata) by the key it names among `keys`.
pub fn check(
    d: &DigestFile,
    read_from: (&str, &str),
    metadata: Metadata<'_>,
    keys: &[PublicKey],
) -> Result<(), DigestError> {
    let g = &d.digest;
    if (g.digest_s3_bucket.as_str(), g.digest_s3_object.as_str()) != read_from {
        return Err(DigestError::WrongLocation {
            says: format!("{}/{}", g.digest_s3_bucket, g.digest_s3_object),
            read: format!("{}/{}", read_from.0, read_from.1),
        });
    }
    let (Some(signature), Some(_)) = (metadata.signature, metadata.signature_algorithm) else {
        return Err(DigestError::NoSignature);
    };
    let sig = hex::decode(signature.trim())
        .map_err(|_| DigestError::SignatureNotHex(signature.chars().take(16).collect()))?;
    let fp = g.digest_public_key_fingerprint.to_ascii_lowercase();
    let key = keys
        .iter()
        .find(|k| k.fingerprint == fp)
        .ok_or_else(|| DigestError::UnknownKey(fp.clone()))?;
    if !key.looks_like_rsa() {
        return Err(DigestError::BadKey(fp));
    }
    if key.verifies(string_to_sign(d).as_bytes(), &sig) {
        Ok(())
    } else {
        Err(DigestError::BadSignature(fp))
    }
}

/// How a digest follows the one before it in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// It names `prev` by signature, hash and location.
    Follows,
    /// It is the first of a chain (its previous-digest fields are null).
    Starts,
    /// It names another digest: the one it names is missing (a gap), or `prev` was changed.
    Gap { names: String },
}

/// How `next` follows `prev`, whose signature (hex, from its metadata) is `prev_signature`.
/// `Starts` only when all four previous-digest fields are null; a digest naming another
/// one follows `prev` only when location, hash and signature all name it.
pub fn link(prev: &DigestFile, prev_signature: Option<&str>, next: &DigestFile) -> Link {
    let n = &next.digest;
    let fields = [
        &n.previous_digest_s3_bucket,
        &n.previous_digest_s3_object,
        &n.previous_digest_hash_value,
        &n.previous_digest_signature,
    ];
    if fields.iter().all(|f| f.is_none()) {
        return Link::Starts;
    }
    let same = |a: &Option<String>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
        _ => false,
    };
    let names_prev = n.previous_digest_s3_bucket.as_deref() == Some(&prev.digest.digest_s3_bucket)
        && n.previous_digest_s3_object.as_deref() == Some(&prev.digest.digest_s3_object)
        && same(&n.previous_digest_hash_value, Some(&prev.sha256))
        && same(&n.previous_digest_signature, prev_signature);
    if names_prev {
        Link::Follows
    } else {
        Link::Gap {
            names: format!(
                "{}/{}",
                n.previous_digest_s3_bucket.as_deref().unwrap_or("?"),
                n.previous_digest_s3_object.as_deref().unwrap_or("?")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256};

    const DOCS: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail-digest/digest-example-aws-docs.json");
    const EMPTY: &[u8] =
        include_bytes!("../tests/fixtures/cloudtrail-digest/digest-empty-example-aws-docs.json");
    const REAL: &[u8] = include_bytes!(
        "../tests/fixtures/cloudtrail-digest/327878933619_CloudTrail-Digest_ap-northeast-1_llm-guard-trail_us-west-2_20231015T230404Z.json"
    );
    const KEYS: &str =
        include_str!("../tests/fixtures/cloudtrail-digest/public-keys-aws-examples.json");

    /// Real digest bodies parse, with their log files and null fields.
    #[test]
    fn real_digests_parse() {
        let d = parse(DOCS).unwrap();
        assert_eq!(d.digest.log_files.len(), 1);
        assert_eq!(
            d.digest.digest_public_key_fingerprint,
            "31e8b5433410dfb61a9dc45cc65b22ff"
        );
        assert_eq!(d.sha256, sha256_hex(DOCS));
        let e = parse(EMPTY).unwrap();
        assert!(e.digest.log_files.is_empty());
        let r = parse(REAL).unwrap();
        assert_eq!(r.digest.log_files.len(), 5);
        assert_eq!(
            r.digest.previous_digest_signature.as_ref().unwrap().len(),
            512
        );
        assert!(matches!(
            parse(b"{\"Records\":[]}"),
            Err(DigestError::Malformed(_))
        ));
    }

    /// A known answer: the documented sample's string to sign, field by field.
    #[test]
    fn the_string_to_sign_of_the_documented_sample() {
        let d = parse(DOCS).unwrap();
        let s = string_to_sign(&d);
        let lines: Vec<&str> = s.split('\n').collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "2015-08-17T15:01:31Z");
        assert_eq!(
            lines[1],
            "S3-bucket-name/AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/17/111122223333_CloudTrail-Digest_us-east-2_your-trail-name_us-east-2_20150817T150131Z.json.gz"
        );
        assert_eq!(lines[2], sha256_hex(DOCS));
        assert!(lines[3].starts_with("50887ccffad4c002") && lines[3].ends_with("8456328a"));
        // The first digest of a chain signs the literal `null`.
        let mut first = d.clone();
        first.digest.previous_digest_signature = None;
        assert!(string_to_sign(&first).ends_with(&format!("{}\nnull", d.sha256)));
    }

    /// AWS's published keys: the fingerprint is the MD5 of the DER as delivered, in
    /// either layout (keys 1, 2, 4 PKCS#1; key 3 SubjectPublicKeyInfo).
    #[test]
    fn published_keys_match_their_fingerprints() {
        use base64::Engine;
        let keys: Vec<serde_json::Value> = serde_json::from_str(KEYS).unwrap();
        assert_eq!(keys.len(), 4);
        for k in &keys {
            let der = base64::engine::general_purpose::STANDARD
                .decode(k["Value"].as_str().unwrap())
                .unwrap();
            let key = PublicKey::new(der);
            assert_eq!(key.fingerprint, k["Fingerprint"].as_str().unwrap());
            assert!(key.looks_like_rsa());
            // A signature that is not this key's is refused, not a panic.
            assert!(!key.verifies(b"message", &[0u8; 256]));
        }
    }

    fn meta(signature: &str) -> Metadata<'_> {
        Metadata {
            signature: Some(signature),
            signature_algorithm: Some("SHA256withRSA"),
        }
    }

    /// A digest signed by a key made here verifies with the key in both DER layouts,
    /// and each tampering is named.
    #[test]
    fn signatures_verify_and_tampering_is_named() {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs1 = pair.public_key().as_ref().to_vec();
        let spki = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
            .unwrap()
            .as_ref()
            .to_vec();
        assert_ne!(pkcs1, spki);
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for der in [pkcs1, spki] {
            let key = PublicKey::new(der);
            let mut body: serde_json::Value = serde_json::from_slice(DOCS).unwrap();
            body["digestPublicKeyFingerprint"] = key.fingerprint.clone().into();
            let bytes = serde_json::to_vec(&body).unwrap();
            let d = parse(&bytes).unwrap();
            let mut sig = vec![0; pair.public_modulus_len()];
            pair.sign(
                &RSA_PKCS1_SHA256,
                &rng,
                string_to_sign(&d).as_bytes(),
                &mut sig,
            )
            .unwrap();
            let sig_hex = hex::encode(&sig);
            let at = (
                d.digest.digest_s3_bucket.as_str(),
                d.digest.digest_s3_object.as_str(),
            );
            let keys = std::slice::from_ref(&key);
            assert_eq!(check(&d, at, meta(&sig_hex), keys), Ok(()));
            // Upper-case hex, as some tools write it, is the same signature.
            assert_eq!(check(&d, at, meta(&sig_hex.to_uppercase()), keys), Ok(()));
            // Moved to another key: the location no longer matches.
            let moved = (
                at.0,
                "AWSLogs/111122223333/CloudTrail-Digest/us-east-2/2015/08/18/x.json.gz",
            );
            assert!(matches!(
                check(&d, moved, meta(&sig_hex), keys),
                Err(DigestError::WrongLocation { .. })
            ));
            // Its log-file list edited without signing it again.
            let mut edited = body.clone();
            edited["logFiles"][0]["hashValue"] = "00".repeat(32).into();
            let e = parse(&serde_json::to_vec(&edited).unwrap()).unwrap();
            assert!(matches!(
                check(&e, at, meta(&sig_hex), keys),
                Err(DigestError::BadSignature(_))
            ));
            // No signature, a signature that is not hex, an unknown key.
            let none = Metadata::default();
            assert_eq!(check(&d, at, none, keys), Err(DigestError::NoSignature));
            let no_algorithm = Metadata {
                signature: Some(&sig_hex),
                signature_algorithm: None,
            };
            assert_eq!(
                check(&d, at, no_algorithm, keys),
                Err(DigestError::NoSignature)
            );
            assert!(matches!(
                check(&d, at, meta("zz"), keys),
                Err(DigestError::SignatureNotHex(_))
            ));
            assert!(matches!(
                check(&d, at, meta(&sig_hex), &[]),
                Err(DigestError::UnknownKey(_))
            ));
        }
    }

    /// Links: a digest that names the one before it follows it; one naming a digest
    /// that is not the one before (a removed digest, a changed one) is a gap.
    #[test]
    fn chain_links_and_gaps() {
        let prev = parse(EMPTY).unwrap();
        let prev_sig = "ab".repeat(256);
        let mut body: serde_json::Value = serde_json::from_slice(DOCS).unwrap();
        body["previousDigestS3Bucket"] = prev.digest.digest_s3_bucket.clone().into();
        body["previousDigestS3Object"] = prev.digest.digest_s3_object.clone().into();
        body["previousDigestHashValue"] = prev.sha256.clone().into();
        body["previousDigestSignature"] = prev_sig.clone().into();
        let next = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(link(&prev, Some(&prev_sig), &next), Link::Follows);
        // The previous digest changed (its hash differs), or re-signed, or another one.
        let mut changed = prev.clone();
        changed.sha256 = sha256_hex(b"changed");
        assert!(matches!(
            link(&changed, Some(&prev_sig), &next),
            Link::Gap { .. }
        ));
        assert!(matches!(
            link(&prev, Some(&"cd".repeat(256)), &next),
            Link::Gap { .. }
        ));
        let other = parse(DOCS).unwrap();
        assert!(matches!(
            link(&other, Some(&prev_sig), &next),
            Link::Gap { .. }
        ));
        // The first digest of a chain names none.
        let mut first = body.clone();
        for f in [
            "previousDigestS3Bucket",
            "previousDigestS3Object",
            "previousDigestHashValue",
            "previousDigestSignature",
        ] {
            first[f] = serde_json::Value::Null;
        }
        let first = parse(&serde_json::to_vec(&first).unwrap()).unwrap();
        assert_eq!(link(&prev, Some(&prev_sig), &first), Link::Starts);
        // Half of the fields null is no start; an upper-case hash names the same digest;
        // without the previous digest's signature nothing follows it.
        let mut half = body.clone();
        half["previousDigestS3Bucket"] = serde_json::Value::Null;
        half["previousDigestS3Object"] = serde_json::Value::Null;
        let half = parse(&serde_json::to_vec(&half).unwrap()).unwrap();
        assert!(matches!(
            link(&prev, Some(&prev_sig), &half),
            Link::Gap { .. }
        ));
        let mut upper = body.clone();
        upper["previousDigestHashValue"] = prev.sha256.to_uppercase().into();
        let upper = parse(&serde_json::to_vec(&upper).unwrap()).unwrap();
        assert_eq!(link(&prev, Some(&prev_sig), &upper), Link::Follows);
        assert!(matches!(link(&prev, None, &next), Link::Gap { .. }));
    }
}
