//! AWS Signature Version 4 for one request shape: an S3 `GET` with an empty body — the
//! lean GET of an object and the lean LIST of a folder in [`crate::fetch`].
//!
//! aws-sigv4 signs any request and spends ~10 µs doing it (a general canonical
//! request, header maps, formatting, a signing key derived every time); this signs the
//! one shape in ~2 µs, with the signing key derived once per day, region and secret.
//! The tests check it against aws-sigv4 byte for byte.

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// `hex(sha256(""))`: the payload hash of an empty body.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The credentials to sign with.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub session_token: Option<&'a str>,
}

/// A signer for one region and service, caching the signing key of the day.
pub struct Signer {
    region: String,
    service: String,
    /// (date `YYYYMMDD`, secret key, signing key).
    key: Option<(String, String, [u8; 32])>,
}

/// Region and service only: the cached key and secret are never printed.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(region: &str, service: &str) -> Signer {
        Signer {
            region: region.to_string(),
            service: service.to_string(),
            key: None,
        }
    }

    /// The headers that sign `GET https://{host}{path}?{query}` at `amz_date`
    /// (`YYYYMMDDTHHMMSSZ`), in the order they are signed: `host`,
    /// `x-amz-content-sha256`, `x-amz-date`, `x-amz-expected-bucket-owner` (when
    /// `owner` is given), `x-amz-security-token` (with a session token) and last
    /// `authorization`. `path` is the URL's path exactly as sent (already encoded);
    /// `query` the query string as sent, which must already be canonical: parameters
    /// sorted by name, names and values encoded as [`encode_query_value`] does (empty
    /// for none).
    pub fn sign_get(
        &mut self,
        keys: Keys<'_>,
        host: &str,
        path: &str,
        query: &str,
        owner: Option<&str>,
        amz_date: &str,
    ) -> Vec<(&'static str, String)> {
        let date = &amz_date[..8];
        let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(6);
        headers.push(("host", host.to_string()));
        headers.push(("x-amz-content-sha256", EMPTY_SHA256.to_string()));
        headers.push(("x-amz-date", amz_date.to_string()));
        if let Some(owner) = owner {
            headers.push(("x-amz-expected-bucket-owner", owner.to_string()));
        }
        if let Some(token) = keys.session_token {
            headers.push(("x-amz-security-token", token.to_string()));
        }

        let mut canonical = String::with_capacity(512);
        canonical.push_str("GET\n");
        canonical.push_str(path);
        canonical.push('\n');
        canonical.push_str(query);
        canonical.push('\n');
        for (name, value) in &headers {
            canonical.push_str(name);
            canonical.push(':');
            canonical.push_str(value.trim());
            canonical.push('\n');
        }
        canonical.push('\n');
        let signed: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        let signed = signed.join(";");
        canonical.push_str(&signed);
        canonical.push('\n');
        canonical.push_str(EMPTY_SHA256);

        let scope = format!("{date}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = self.signing_key(date, keys.secret_access_key);
        let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
        headers.push((
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
                keys.access_key_id
            ),
        ));
        headers
    }

    fn signing_key(&mut self, date: &str, secret: &str) -> [u8; 32] {
        if let Some((d, s, key)) = &self.key {
            if d == date && s == secret {
                return *key;
            }
        }
        let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
        let k_region = hmac(&k_date, self.region.as_bytes());
        let k_service = hmac(&k_region, self.service.as_bytes());
        let key = hmac(&k_service, b"aws4_request");
        self.key = Some((date.to_string(), secret.to_string(), key));
        key
    }
}

/// A query parameter's value encoded for a canonical query string: everything but
/// `A–Z a–z 0–9 - _ . ~` percent-encoded (`/` too), as the SDK encodes query values.
pub fn encode_query_value(value: &str) -> String {
    aws_smithy_http::query::fmt_string(value)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::config::Credentials;
    use aws_sigv4::http_request::{
        sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest,
        SigningSettings, UriPathNormalizationMode,
    };
    use aws_sigv4::sign::v4;
    use aws_smithy_runtime_api::client::identity::Identity;
    use std::time::{Duration, UNIX_EPOCH};

    /// The headers aws-sigv4 produces for the same request, configured as the S3
    /// client configures it.
    fn reference(
        keys: Keys<'_>,
        host: &str,
        path: &str,
        query: &str,
        owner: Option<&str>,
        unix: u64,
        region: &str,
    ) -> Vec<(String, String)> {
        let identity: Identity = Credentials::new(
            keys.access_key_id,
            keys.secret_access_key,
            keys.session_token.map(str::to_string),
            None,
            "test",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("s3")
            .time(UNIX_EPOCH + Duration::from_secs(unix))
            .settings(settings)
            .build()
            .unwrap()
            .into();
        let uri = if query.is_empty() {
            format!("https://{host}{path}")
        } else {
            format!("https://{host}{path}?{query}")
        };
        let mut headers = vec![("host", host)];
        headers.extend(owner.map(|o| ("x-amz-expected-bucket-owner", o)));
        let signable =
            SignableRequest::new("GET", uri, headers.into_iter(), SignableBody::Bytes(&[]))
                .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        instructions
            .headers()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn get<'a>(headers: &'a [(impl AsRef<str>, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.as_ref() == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn signatures_match_aws_sigv4() {
        let long_term = Keys {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token: None,
        };
        let session = Keys {
            access_key_id: "ASIAEXAMPLE",
            secret_access_key: "session/secret+key",
            session_token: Some("IQoJb3JpZ2luX2VjE//token+with/slashes=="),
        };
        // A LIST of a folder: the query as `fetch` writes it, with a continuation token
        // that needs encoding.
        let list_query = format!(
            "continuation-token={}&delimiter={}&list-type=2&prefix={}",
            encode_query_value("1x/Zm9v+YmFy=="),
            encode_query_value("/"),
            encode_query_value("AWSLogs/o-abc123/111122223333/CloudTrail/us-east-1/2024/02/12/"),
        );
        let cases = [
            (
                long_term,
                "my-trail-bucket.s3.eu-west-1.amazonaws.com",
                "/AWSLogs/o-abc123/111122223333/CloudTrail/eu-west-1/2024/02/12/111122223333_CloudTrail_eu-west-1_20240212T0005Z_AbCd.json.gz",
                "",
                None,
                "eu-west-1",
            ),
            (
                session,
                "127.0.0.1:9000",
                "/bucket/AWSLogs/111122223333/CloudTrail/us-east-1/2024/02/12/a%20b%3Ac.json.gz",
                "",
                Some("111122223333"),
                "us-east-1",
            ),
            (
                long_term,
                "my-trail-bucket.s3.eu-west-1.amazonaws.com",
                "/",
                "delimiter=%2F&list-type=2&prefix=AWSLogs%2F",
                None,
                "eu-west-1",
            ),
            (
                session,
                "127.0.0.1:9000",
                "/bucket/",
                list_query.as_str(),
                Some("111122223333"),
                "us-east-1",
            ),
        ];
        // 2024-02-12T00:05:09Z, and a second day to check the cached key is renewed.
        for unix in [1_707_696_309u64, 1_707_696_309 + 86_400] {
            let mut signer = Signer::new("eu-west-1", "s3");
            let mut signer_us = Signer::new("us-east-1", "s3");
            for (keys, host, path, query, owner, region) in cases {
                let amz_date = chrono::DateTime::from_timestamp(unix as i64, 0)
                    .unwrap()
                    .format("%Y%m%dT%H%M%SZ")
                    .to_string();
                let s = if region == "eu-west-1" {
                    &mut signer
                } else {
                    &mut signer_us
                };
                // Twice: the second time from the cached signing key.
                for _ in 0..2 {
                    let ours = s.sign_get(keys, host, path, query, owner, &amz_date);
                    let theirs = reference(keys, host, path, query, owner, unix, region);
                    for name in [
                        "authorization",
                        "x-amz-date",
                        "x-amz-content-sha256",
                        "x-amz-security-token",
                    ] {
                        assert_eq!(
                            get(&ours, name),
                            get(&theirs, name),
                            "{name} for {path}?{query}"
                        );
                    }
                    assert!(get(&ours, "authorization").is_some());
                    assert_eq!(get(&ours, "host"), Some(host));
                    assert_eq!(get(&ours, "x-amz-expected-bucket-owner"), owner);
                }
            }
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let mut s = Signer::new("us-east-1", "s3");
        let keys = Keys {
            access_key_id: "AKID",
            secret_access_key: "very-secret",
            session_token: None,
        };
        s.sign_get(keys, "h", "/k", "", None, "20240212T000509Z");
        let shown = format!("{s:?}");
        assert!(
            shown.contains("us-east-1") && !shown.contains("very-secret"),
            "{shown}"
        );
    }

    /// Query values are encoded as SigV4 wants: only unreserved characters stay.
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode_query_value("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(
            encode_query_value("a/b c+d=e&é"),
            "a%2Fb%20c%2Bd%3De%26%C3%A9"
        );
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex(&Sha256::digest(b"")), EMPTY_SHA256);
    }
}
