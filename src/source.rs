//! Source: GETs of the day's objects through aws-sdk-s3, run concurrently and handed
//! on in key order, within a byte budget.
//!
//! Objects up to [`STREAM_THRESHOLD`] are fetched whole; larger ones are streamed to
//! the records stage as they arrive, and a stream whose connection is lost mid-body
//! reads on from where it broke off ([`Streamed`]). Every request — with its retries,
//! signing, proxy, checksum validation and clock-skew correction — is the SDK's.

use std::io::Read;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use aws_sdk_s3::primitives::{AggregatedBytes, ByteStream};
use aws_sdk_s3::Client;
use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use crate::error::Error;
use crate::listing::SourceObject;
use crate::ordered::in_order;
use crate::records::SourceFile;

/// Objects larger than this are streamed through the records stage as they arrive
/// rather than fetched whole. A streamed object waiting for its turn holds its
/// connection and what the connection has buffered, where a fetched one holds all its
/// bytes: on a day of a busy account's ~1 MB files, 4 MiB here let them fill the fetch
/// budget (28–29 MiB of peak RSS), 512 KiB kept them at the small day's 20 MiB.
pub const STREAM_THRESHOLD: u64 = 512 * 1024;
/// Bytes of source objects fetched ahead of the records stage: a GET's share is taken,
/// in key order, before it starts and given back when the records stage is done with
/// the object. A fetched object counts its size, a streamed one `STREAM_THRESHOLD`, so
/// at most 16 streams wait at once. 8 MiB at ~25 ms per GET is ~300 MB/s of fetching.
pub const FETCH_BUDGET: u64 = 8 * 1024 * 1024;
/// How many GETs, in multiples of `MAX_CONCURRENT_GETS`, may be started past the
/// oldest file not yet handed on: at 25 ms per GET, 16 × 128 covers a GET ~400 ms late.
const GET_WINDOW: usize = 16;
/// How many times one object's body is asked for again after its connection failed
/// mid-body (or, fetched whole, it came shorter than listed): the SDK retries requests,
/// not the bodies it has handed out. With 10 % of connections dropped, a body fails ten
/// times in a row once in 10¹⁰.
pub const STREAM_RESUMES: u32 = 10;

/// GETs of one bucket.
#[derive(Debug, Clone)]
pub struct Source {
    s3: Client,
    bucket: String,
}

impl Source {
    pub fn new(s3: &Client, bucket: &str) -> Source {
        Source {
            s3: s3.clone(),
            bucket: bucket.to_string(),
        }
    }

    /// The GetObject answer for `object`, refused when it is not the version listed: its
    /// ETag (where the listing has one) or its announced length differs.
    async fn get_object(
        &self,
        object: &SourceObject,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, Error> {
        let key = &object.key;
        let out = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| Error::s3("GetObject", &self.bucket, key, e))?;
        let changed = |what: String| {
            let detail = format!("the object changed since it was listed ({what})");
            Err(Error::s3_detail("GetObject", &self.bucket, key, detail))
        };
        if let (Some(listed), Some(got)) = (&object.etag, &out.e_tag) {
            if listed != got {
                return changed(format!("ETag {got}, listed {listed}"));
            }
        }
        if let Some(got) = out.content_length.filter(|n| *n as u64 != object.size) {
            return changed(format!("{got} bytes, listed {}", object.size));
        }
        Ok(out)
    }

    /// The whole body of `object`, in an allocation of its own: hyper hands a small body
    /// out as a view of the connection's read buffer, and a view would keep that whole
    /// buffer alive while the file waits for its turn, outside the fetch budget. A body
    /// whose connection broke, or that came shorter than listed, is asked for again, up
    /// to [`STREAM_RESUMES`] times.
    pub async fn get(&self, object: &SourceObject) -> Result<Bytes, Error> {
        let (bucket, key) = (&self.bucket, &object.key);
        let what = "GetObject (reading the body)";
        for again in 0.. {
            let failed = match self.get_object(object).await?.body.collect().await {
                Ok(body) if body.remaining() as u64 == object.size => return Ok(owned(body)),
                Ok(body) => format!(
                    "read {} bytes, but the listing said {}",
                    body.remaining(),
                    object.size
                ),
                Err(e) => crate::error::error_chain(&e),
            };
            if again == STREAM_RESUMES {
                let detail = format!("{failed} (after {again} more tries)");
                return Err(Error::s3_detail(what, bucket, key, detail));
            }
            warn!(bucket = %bucket, key = %key, error = %failed, "body broken off; asking for it again");
        }
        unreachable!("the loop returns")
    }

    /// The body of `key`, `size` bytes long, as a stream that picks up where it broke
    /// off (see [`Streamed`]).
    pub async fn stream_resuming(&self, object: &SourceObject) -> Result<Streamed, Error> {
        let (key, size) = (&object.key, object.size);
        let out = self.get_object(object).await?;
        Ok(Streamed {
            body: Box::pin(out.body.into_async_read()),
            read: 0,
            resumes: 0,
            resume: Some(Resume {
                s3: self.s3.clone(),
                bucket: self.bucket.clone(),
                key: key.to_string(),
                etag: out.e_tag,
                size,
                pending: None,
            }),
        })
    }

    /// Fetches `objects` with up to `max_gets` GETs running, yielding them in the order
    /// of `objects`. A slow GET holds back its own file, not the GETs after it; the
    /// fetch budget bounds the bytes waiting, the window the GETs started past a stuck
    /// one.
    pub fn fetch_in_order<'a>(
        &'a self,
        objects: impl Stream<Item = Result<SourceObject, Error>> + 'a,
        max_gets: usize,
    ) -> impl Stream<Item = Result<Fetched, Error>> + 'a {
        let budget = Arc::new(Semaphore::new((FETCH_BUDGET / 1024) as usize));
        // Budget shares are taken in key order (`then`), so the file the records stage
        // waits for never waits behind later ones.
        let shared = objects.then(move |o| {
            let budget = budget.clone();
            async move {
                let o = o?;
                let kib = (o.size.min(STREAM_THRESHOLD) / 1024).max(1) as u32;
                let share = budget.acquire_many_owned(kib).await.expect("never closed");
                Ok::<_, Error>((o, share))
            }
        });
        let gets = shared.map(move |r| {
            move || async move {
                let (o, share) = r?;
                self.fetch(o, share).await
            }
        });
        in_order(gets, max_gets, GET_WINDOW * max_gets)
    }

    async fn fetch(
        &self,
        object: SourceObject,
        share: OwnedSemaphorePermit,
    ) -> Result<Fetched, Error> {
        let body = if object.size > STREAM_THRESHOLD {
            debug!(key = %object.key, bytes = object.size, "object streaming");
            Body::Stream(self.stream_resuming(&object).await?)
        } else {
            let bytes = self.get(&object).await?;
            debug!(key = %object.key, bytes = bytes.len(), "object read");
            Body::Whole(bytes)
        };
        Ok(Fetched {
            key: object.key,
            size: object.size,
            etag: object.etag,
            body,
            share,
        })
    }
}

/// A fetched body in one allocation of its own, copied once from its pieces.
fn owned(body: AggregatedBytes) -> Bytes {
    let mut all = Vec::with_capacity(body.remaining());
    for piece in body.into_segments() {
        all.extend_from_slice(&piece);
    }
    Bytes::from(all)
}

/// One fetched source object; its share of the fetch budget is given back when the
/// records stage drops it.
pub struct Fetched {
    pub key: String,
    /// Its size in the listing.
    pub size: u64,
    /// Its ETag in the listing (the GET was of that version).
    pub etag: Option<String>,
    pub body: Body,
    share: OwnedSemaphorePermit,
}

/// A source object's body: whole, or a stream still being received.
pub enum Body {
    Whole(Bytes),
    Stream(Streamed),
}

impl Fetched {
    /// The object as the records stage reads it, on a blocking thread (a stream is
    /// read through `SyncIoBridge`, which needs the runtime's handle: call this on the
    /// thread that will read it, inside `spawn_blocking`).
    pub fn into_file(self) -> SourceFile<FetchedBody> {
        let reader = match self.body {
            Body::Whole(bytes) => FetchedReader::Whole(bytes.reader()),
            Body::Stream(s) => FetchedReader::Stream(tokio_util::io::SyncIoBridge::new(s)),
        };
        SourceFile {
            key: self.key,
            size: self.size,
            etag: self.etag,
            body: FetchedBody {
                reader,
                _share: self.share,
            },
        }
    }
}

/// A fetched body as a blocking [`Read`], holding its budget share.
pub struct FetchedBody {
    reader: FetchedReader,
    _share: OwnedSemaphorePermit,
}

enum FetchedReader {
    Whole(bytes::buf::Reader<Bytes>),
    Stream(tokio_util::io::SyncIoBridge<Streamed>),
}

impl Read for FetchedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.reader {
            FetchedReader::Whole(r) => r.read(buf),
            FetchedReader::Stream(r) => r.read(buf),
        }
    }
}

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
    s3: Client,
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
            .s3
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
                .map_err(|e| format!("{what}: {}", crate::error::error_chain(&e)))?;
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
