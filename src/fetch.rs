//! Reads of the source bucket: GETs of the day's objects and pages of its listing.
//!
//! A day is up to ~100,000 GetObject calls for files of a few KB, and a LIST per
//! account and region. Through the SDK, each call costs about 0.1 ms of CPU in its
//! orchestration — interceptors, endpoint rules, configuration layers, response
//! deserialisation, signing — as much as gunzipping the file it fetches. So the SDK
//! sends the first request of a run and, on the way, the `Learn` interceptor notes
//! what it resolved for the bucket: the endpoint, the SigV4 signing scope, the
//! `x-amz-expected-bucket-owner` header and its connect timeout. The later requests
//! are the same requests — `GET {endpoint}/{key}` for an object, `GET {endpoint}/?
//! delimiter=%2F&list-type=2&prefix=…` for a page of a listing — signed by
//! [`crate::sigv4`] with the credentials from the SDK's own identity cache.
//!
//! They are sent over connections of their own ([`crate::http1`]: keep-alive, TLS with
//! the platform's roots as the SDK's default client has it) when the SDK uses its
//! default HTTP client, as the binaries do: a hyper connection's state grows with the
//! requests it carries, and at ~150 connections that made the 2 GB day's peak memory
//! ~4 MiB larger than the 20 MB day's (BENCHMARKS.md, "Lean requests over connections
//! of their own"). When the SDK was given an HTTP client (a test's in-process server,
//! a custom TLS setup), they are sent on that client's connector instead.
//!
//! Anything other than a `200 OK` on that lean path (an error status, a connection
//! error, a timeout) sends the request back through the SDK, with its retries and its
//! typed error naming `s3://bucket/key`, and turns that lean path (GETs or LISTs) off
//! for the rest of the run; so does a listing page that [`crate::listing`] does not
//! accept. So the lean path can make a run faster but never changes what it reads or
//! how a failure is reported. Objects that are streamed (see
//! [`crate::pipeline::STREAM_THRESHOLD`]) always go through the SDK.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    ConfigBag, Credentials, HttpClient, Intercept, ResolveCachedIdentity, RuntimeComponents,
};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::primitives::{AggregatedBytes, ByteStream, SdkBody};
use aws_sdk_s3::Client;
use aws_smithy_runtime_api::client::auth::AuthSchemeId;
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::identity::{Identity, SharedIdentityResolver};
use aws_smithy_runtime_api::client::runtime_components::GetIdentityResolver;
use aws_smithy_runtime_api::http::Request as HttpRequest;
use aws_smithy_types::endpoint::Endpoint;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tracing::{info, warn};

use crate::error::Error;
use crate::http1;
use crate::sigv4::{encode_query_value, Keys, Signer};

/// The longest a lean request may take before it is sent through the SDK.
const LEAN_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest answer a lean request reads (a page of a listing is ~0.3 MB; larger
/// objects are streamed through the SDK, see [`crate::pipeline::STREAM_THRESHOLD`]).
const LEAN_MAX_BODY: usize = 16 << 20;
/// The header CloudTrail buckets are commonly protected with (see `aws.rs`).
const OWNER_HEADER: &str = "x-amz-expected-bucket-owner";

/// What the SDK resolved for requests to the source bucket.
#[derive(Debug)]
struct Lean {
    /// `scheme://authority` of the bucket's endpoint.
    origin: String,
    /// The authority, sent and signed as `host`.
    host: String,
    /// The endpoint's path (`/bucket` when path-style, else empty): an object's path
    /// is this, `/` and the encoded key.
    base_path: String,
    signer: Mutex<Signer>,
    access_key_id: String,
    owner: Option<String>,
    transport: Transport,
    /// The SDK's runtime components, for its identity cache and resolver.
    components: RuntimeComponents,
    identity: SharedIdentityResolver,
}

/// What a lean request is sent over.
#[derive(Debug)]
enum Transport {
    /// Connections of its own ([`crate::http1`]), when the SDK uses its default HTTP
    /// client.
    Own(http1::Client),
    /// The HTTP client the SDK was given (a test's in-process server, a custom TLS
    /// setup): its connector.
    Sdk(SharedHttpConnector),
}

type Slot = Arc<Mutex<Option<Arc<Lean>>>>;

/// Notes, from the first request the SDK sends, what a lean request needs; `own_http`
/// when the lean requests may go over connections of their own.
#[derive(Debug)]
struct Learn {
    slot: Slot,
    own_http: bool,
}

impl Intercept for Learn {
    fn name(&self) -> &'static str {
        "LearnLeanRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.slot.lock().expect("not poisoned").is_some() {
            return Ok(());
        }
        if let Some(lean) = learn(context, components, cfg, self.own_http) {
            *self.slot.lock().expect("not poisoned") = Some(Arc::new(lean));
        }
        Ok(())
    }
}

/// The lean path's parts, or `None` when this request is not one it can repeat (not
/// plain SigV4 with headers, an endpoint with headers of its own, no HTTP client).
fn learn(
    context: &BeforeTransmitInterceptorContextRef<'_>,
    components: &RuntimeComponents,
    cfg: &ConfigBag,
    own_http: bool,
) -> Option<Lean> {
    let request = context.request();
    let endpoint = cfg.load::<Endpoint>()?;
    if endpoint.headers().next().is_some() {
        return None;
    }
    let base = endpoint.url().trim_end_matches('/');
    if !request.uri().starts_with(&format!("{base}/")) {
        return None;
    }
    let (scheme, rest) = base.split_once("://")?;
    let (host, base_path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let scope = parse_authorization(request.headers().get("authorization")?)?;
    let timeouts = cfg.load::<TimeoutConfig>()?;
    let mut settings = HttpConnectorSettings::builder();
    settings.set_connect_timeout(timeouts.connect_timeout());
    settings.set_read_timeout(timeouts.read_timeout());
    let http_client = components.http_client()?;
    let sdk_connector =
        || Transport::Sdk(http_client.http_connector(&settings.build(), components));
    let transport = if own_http {
        match http1::Client::new(scheme, host, timeouts.connect_timeout()) {
            Ok(client) => Transport::Own(client),
            Err(e) => {
                info!(reason = %e, "lean requests go through the SDK's connector");
                sdk_connector()
            }
        }
    } else {
        sdk_connector()
    };
    let identity = components.identity_resolver(AuthSchemeId::new("sigv4"))?;
    Some(Lean {
        origin: format!("{scheme}://{host}"),
        host: host.to_string(),
        base_path: base_path.to_string(),
        signer: Mutex::new(Signer::new(&scope.region, &scope.service)),
        access_key_id: scope.access_key_id,
        owner: request.headers().get(OWNER_HEADER).map(str::to_string),
        transport,
        components: components.clone(),
        identity,
    })
}

/// The credential scope of a SigV4 `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
struct Scope {
    access_key_id: String,
    region: String,
    service: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AKID/20240212/us-east-1/s3/aws4_request, …`;
/// `None` for any other scheme (SigV4a, S3 Express sessions, anonymous).
fn parse_authorization(header: &str) -> Option<Scope> {
    let rest = header.strip_prefix("AWS4-HMAC-SHA256 Credential=")?;
    let credential = rest.split(',').next()?.trim();
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [akid, _date, region, service, "aws4_request"] if !akid.is_empty() => Some(Scope {
            access_key_id: akid.to_string(),
            region: region.to_string(),
            service: service.to_string(),
        }),
        _ => None,
    }
}

/// A key as the path of an S3 URL, encoded exactly as the SDK encodes it.
fn encode_key(key: &str) -> String {
    aws_smithy_http::label::fmt_string(key, aws_smithy_http::label::EncodingStrategy::Greedy)
}

/// Why a lean request did not succeed (the SDK then sends it).
#[derive(Debug)]
pub struct LeanFailed(pub String);

impl Lean {
    /// The identity the SDK signs with, from its identity cache.
    async fn identity(&self) -> Result<Identity, LeanFailed> {
        self.components
            .identity_cache()
            .resolve_cached_identity(self.identity.clone(), &self.components, &ConfigBag::base())
            .await
            .map_err(|e| LeanFailed(format!("credentials: {e}")))
    }

    /// `GET {endpoint}{path}?{query}` (`path` after the endpoint's own path, encoded;
    /// `query` canonical, see [`Signer::sign_get`]), signed; the body of a `200 OK`.
    async fn send(&self, path: &str, query: &str) -> Result<Bytes, LeanFailed> {
        let failed = |what: &str, e: &dyn std::fmt::Display| LeanFailed(format!("{what}: {e}"));
        let identity = self.identity().await?;
        let credentials = identity
            .data::<Credentials>()
            .filter(|c| c.access_key_id() == self.access_key_id)
            .ok_or_else(|| {
                LeanFailed("the SDK signed with other credentials than its cache gives".into())
            })?;
        let path = format!("{}{path}", self.base_path);
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let keys = Keys {
            access_key_id: credentials.access_key_id(),
            secret_access_key: credentials.secret_access_key(),
            session_token: credentials.session_token(),
        };
        let signed = self.signer.lock().expect("not poisoned").sign_get(
            keys,
            &self.host,
            &path,
            query,
            self.owner.as_deref(),
            &amz_date,
        );
        let target = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let not_ok = |status: u16| LeanFailed(format!("HTTP status {status}"));
        let answer = async {
            match &self.transport {
                Transport::Own(client) => {
                    let response = client
                        .get(&target, &signed, LEAN_MAX_BODY)
                        .await
                        .map_err(|e| failed("request", &e))?;
                    match response.status {
                        200 => Ok(response.body),
                        status => Err(not_ok(status)),
                    }
                }
                Transport::Sdk(connector) => {
                    let mut request = HttpRequest::new(SdkBody::empty());
                    request
                        .set_uri(format!("{}{target}", self.origin))
                        .map_err(|e| failed("URL", &e))?;
                    let headers = request.headers_mut();
                    for (name, value) in signed {
                        headers.insert(name, value);
                    }
                    let response = connector.call(request).await.map_err(|e| {
                        failed("request", &aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                    match response.status().as_u16() {
                        200 => {}
                        status => return Err(not_ok(status)),
                    }
                    ByteStream::new(response.into_body())
                        .collect()
                        .await
                        .map(owned)
                        .map_err(|e| failed("reading the body", &e))
                }
            }
        };
        tokio::time::timeout(LEAN_TIMEOUT, answer)
            .await
            .unwrap_or_else(|_| Err(LeanFailed("timed out".into())))
    }
}

/// A fetched body in one allocation of its own, copied once from the pieces it came
/// in (see [`Source::get`] for why).
fn owned(body: AggregatedBytes) -> Bytes {
    let mut all = Vec::with_capacity(body.remaining());
    for piece in body.into_segments() {
        all.extend_from_slice(&piece);
    }
    Bytes::from(all)
}

/// One lean path (GETs or LISTs): open until its first failure.
#[derive(Debug, Default)]
struct LeanSwitch {
    off: AtomicBool,
    sent: AtomicU64,
}

impl LeanSwitch {
    fn turn_off(&self, what: &str, url: &str, why: &str) {
        if !self.off.swap(true, Ordering::Relaxed) {
            info!(
                url,
                reason = why,
                "lean {what} failed; this and later ones go through the SDK"
            );
        }
    }
}

/// The requests the lean path sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeanUse {
    /// GETs of objects.
    pub gets: u64,
    /// Pages of listings.
    pub lists: u64,
    /// Whether they went over connections of their own ([`crate::http1`]), rather than
    /// through the SDK's HTTP client.
    pub own_connections: bool,
}

/// Reads of the source bucket — GETs of objects and pages of delimited listings: the
/// SDK for the first request, the lean path after.
pub struct Source {
    sdk: Client,
    bucket: String,
    lean: Slot,
    gets: LeanSwitch,
    lists: LeanSwitch,
}

impl Source {
    /// Reads of `bucket` through `s3`'s configuration (and connection pool).
    pub fn new(s3: &Client, bucket: &str) -> Source {
        let lean: Slot = Arc::default();
        let learn = Learn {
            slot: lean.clone(),
            own_http: s3.config().http_client().is_none(),
        };
        let conf = s3.config().to_builder().interceptor(learn);
        Source {
            sdk: Client::from_conf(conf.build()),
            bucket: bucket.to_string(),
            lean,
            gets: LeanSwitch::default(),
            lists: LeanSwitch::default(),
        }
    }

    /// The SDK client (it teaches the lean path what it sends).
    pub fn sdk(&self) -> &Client {
        &self.sdk
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// What the lean path has sent so far, and over what.
    pub fn lean_use(&self) -> LeanUse {
        let lean = self.lean.lock().expect("not poisoned").clone();
        LeanUse {
            gets: self.gets.sent.load(Ordering::Relaxed),
            lists: self.lists.sent.load(Ordering::Relaxed),
            own_connections: lean.is_some_and(|l| matches!(l.transport, Transport::Own(_))),
        }
    }

    fn learnt(&self, switch: &LeanSwitch) -> Option<Arc<Lean>> {
        if switch.off.load(Ordering::Relaxed) {
            return None;
        }
        self.lean.lock().expect("not poisoned").clone()
    }

    /// The whole body of `key`, in an allocation of its own.
    ///
    /// Over the lean path's own connections the body is read into an allocation of the
    /// size the answer announces. Through hyper (the SDK, or the lean path on the SDK's
    /// connector) a small body arrives as a view of the connection's read buffer (8 KiB
    /// or more, grown up to ~400 KiB), and a view keeps that whole buffer alive. A
    /// fetched file may wait for the scanner among a couple of thousand others, with the
    /// fetch budget counting their sizes, so such a body is copied out: the budget then
    /// counts what is held, and the connection reuses its buffer (the copy took the
    /// organisation-sized benchmark day's peak RSS from 32–38 to 30–31 MiB;
    /// BENCHMARKS.md).
    pub async fn get(&self, key: &str) -> Result<Bytes, Error> {
        if let Some(lean) = self.learnt(&self.gets) {
            match lean.send(&format!("/{}", encode_key(key)), "").await {
                Ok(body) => {
                    self.gets.sent.fetch_add(1, Ordering::Relaxed);
                    return Ok(body);
                }
                Err(LeanFailed(why)) => {
                    let url = format!("s3://{}/{}", self.bucket, key);
                    self.gets.turn_off("GET", &url, &why)
                }
            }
        }
        self.stream(key)
            .await?
            .collect()
            .await
            .map(owned)
            .map_err(|e| Error::s3("GetObject (reading the body)", &self.bucket, key, e))
    }

    /// The GetObject answer for `key`, through the SDK.
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, Error> {
        self.sdk
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::s3("GetObject", &self.bucket, key, e))
    }

    /// The body of `key` as a stream, through the SDK.
    pub async fn stream(&self, key: &str) -> Result<ByteStream, Error> {
        Ok(self.get_object(key).await?.body)
    }

    /// The body of `key`, `size` bytes long, as a stream through the SDK that picks up
    /// where it broke off (see [`Streamed`]).
    pub async fn stream_resuming(&self, key: &str, size: u64) -> Result<Streamed, Error> {
        let out = self.get_object(key).await?;
        Ok(Streamed {
            body: Box::pin(out.body.into_async_read()),
            read: 0,
            resumes: 0,
            resume: Some(Resume {
                sdk: self.sdk.clone(),
                bucket: self.bucket.clone(),
                key: key.to_string(),
                etag: out.e_tag,
                size,
                pending: None,
            }),
        })
    }

    /// The XML of one page of `ListObjectsV2` with delimiter `/` under `prefix` by the
    /// lean path, or `None` when that path is not (or no longer) open: the caller then
    /// lists through the SDK. `continuation` is the token of the page before.
    pub async fn lean_list_page(
        &self,
        prefix: &str,
        continuation: Option<&str>,
    ) -> Option<Result<Bytes, LeanFailed>> {
        let lean = self.learnt(&self.lists)?;
        // Parameters sorted by name, as the canonical query string wants them.
        let mut query = String::with_capacity(96 + prefix.len());
        if let Some(token) = continuation {
            query.push_str("continuation-token=");
            query.push_str(&encode_query_value(token));
            query.push('&');
        }
        query.push_str("delimiter=%2F&list-type=2&prefix=");
        query.push_str(&encode_query_value(prefix));
        let page = lean.send("/", &query).await;
        if page.is_ok() {
            self.lists.sent.fetch_add(1, Ordering::Relaxed);
        }
        Some(page)
    }

    /// Turns the lean LIST off for the rest of the run, after it failed on `prefix`.
    pub fn lean_list_failed(&self, prefix: &str, why: &str) {
        let url = format!("s3://{}/{}", self.bucket, prefix);
        self.lists.turn_off("LIST", &url, why);
    }
}

/// How many times one streamed object's body is asked for again after its connection
/// failed mid-body.
pub const STREAM_RESUMES: u32 = 3;

/// The body of a streamed object. When its connection fails mid-body (a reset, a
/// timeout), the rest is asked for — `Range: bytes=N-`, `If-Match` the first answer's
/// ETag, through the SDK with its retries — and read on, up to [`STREAM_RESUMES`] times:
/// the SDK retries a request, not a body already being read, and a streamed object can
/// be hundreds of MB, so one lost connection would otherwise fail the day. An answer
/// that is not the asked-for range is an error, never read as the rest.
pub struct Streamed {
    body: Pin<Box<dyn AsyncBufRead + Send>>,
    read: u64,
    resumes: u32,
    /// How to ask for the rest; `None` for a body that cannot resume.
    resume: Option<Resume>,
}

struct Resume {
    sdk: Client,
    bucket: String,
    key: String,
    etag: Option<String>,
    size: u64,
    pending: Option<futures::future::BoxFuture<'static, Result<ByteStream, String>>>,
}

impl Resume {
    /// Asks for the object's bytes from `from` on.
    fn request(
        &self,
        from: u64,
    ) -> futures::future::BoxFuture<'static, Result<ByteStream, String>> {
        let call = self
            .sdk
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .range(format!("bytes={from}-"))
            .set_if_match(self.etag.clone());
        Box::pin(async move {
            let what = format!("GetObject (the rest, from byte {from})");
            let out = call
                .send()
                .await
                .map_err(|e| format!("{what}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)))?;
            let want = format!("bytes {from}-");
            match out.content_range.as_deref() {
                Some(range) if range.starts_with(&want) => Ok(out.body),
                other => Err(format!(
                    "{what}: the answer is not that range (Content-Range {other:?})"
                )),
            }
        })
    }
}

impl Streamed {
    /// A body that does not resume (tests of what a failed read does).
    pub fn once(body: ByteStream) -> Streamed {
        Streamed {
            body: Box::pin(body.into_async_read()),
            read: 0,
            resumes: 0,
            resume: None,
        }
    }
}

impl AsyncRead for Streamed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(pending) = this.resume.as_mut().and_then(|r| r.pending.as_mut()) {
                let answer = ready!(pending.as_mut().poll(cx));
                let resume = this.resume.as_mut().expect("pending implies resume");
                resume.pending = None;
                match answer {
                    Ok(rest) => this.body = Box::pin(rest.into_async_read()),
                    Err(e) => {
                        this.resume = None;
                        return Poll::Ready(Err(std::io::Error::other(e)));
                    }
                }
            }
            let before = buf.filled().len();
            match ready!(this.body.as_mut().poll_read(cx, buf)) {
                Ok(()) => {
                    this.read += (buf.filled().len() - before) as u64;
                    return Poll::Ready(Ok(()));
                }
                Err(e) => match this.resume.as_mut() {
                    Some(resume) if this.resumes < STREAM_RESUMES && this.read < resume.size => {
                        this.resumes += 1;
                        warn!(
                            bucket = %resume.bucket,
                            key = %resume.key,
                            at = this.read,
                            error = %e,
                            "connection lost mid-object; asking for the rest"
                        );
                        resume.pending = Some(resume.request(this.read));
                    }
                    _ if this.resumes > 0 => {
                        let after = format!("{e} (after {} resumed reads)", this.resumes);
                        return Poll::Ready(Err(std::io::Error::new(e.kind(), after)));
                    }
                    _ => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_scope() {
        let h = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240212/eu-west-1/s3/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=abc";
        assert_eq!(
            parse_authorization(h),
            Some(Scope {
                access_key_id: "AKIDEXAMPLE".into(),
                region: "eu-west-1".into(),
                service: "s3".into(),
            })
        );
        assert_eq!(
            parse_authorization("AWS4-ECDSA-P256-SHA256 Credential=AKID/20240212/s3/aws4_request"),
            None
        );
        assert_eq!(
            parse_authorization("AWS4-HMAC-SHA256 Credential=AKID/20240212/us-east-1/s3"),
            None
        );
    }

    #[test]
    fn keys_are_encoded_like_the_sdk() {
        assert_eq!(
            encode_key("AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2024/02/12/x_1.json.gz"),
            "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2024/02/12/x_1.json.gz"
        );
        assert_eq!(encode_key("a b/c:d,é"), "a%20b/c%3Ad%2C%C3%A9");
    }
}
