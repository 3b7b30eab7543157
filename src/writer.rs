//! Writer: the day's output objects — chunk uploads (PutObject, or a multipart upload
//! part by part), small JSON objects (the manifest, plan files), deletes — and the read
//! of a small object that may not exist. Keys come from [`crate::layout`].

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::chunks::Piece;
use crate::error::Error;
use crate::layout::DayOutput;
use crate::manifest::ChunkEntry;
use crate::source::STREAM_RESUMES;
use aws_lc_rs::digest::{Context as Sha256, SHA256};

/// PutObject of one body.
pub async fn put(
    s3: &Client,
    bucket: &str,
    key: &str,
    body: ByteStream,
    content_type: &str,
) -> Result<(), Error> {
    let len = body.size_hint().0;
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .content_type(content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| Error::s3("PutObject", bucket, key, e))?;
    debug!(bucket, key, bytes = len, "object written");
    Ok(())
}

/// A multipart upload of one chunk, part by part.
pub struct Multipart {
    bucket: String,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl Multipart {
    /// CreateMultipartUpload.
    pub async fn start(
        s3: &Client,
        bucket: &str,
        key: &str,
        content_type: &str,
    ) -> Result<Multipart, Error> {
        let out = s3
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| Error::s3("CreateMultipartUpload", bucket, key, e))?;
        let upload_id = out.upload_id().unwrap_or_default().to_string();
        debug!(bucket, key, upload_id = %upload_id, "multipart upload started");
        Ok(Multipart {
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id,
            parts: Vec::new(),
        })
    }

    /// UploadPart of the next part. On error the upload stays open: its owner aborts it
    /// ([`Multipart::abort`]).
    pub async fn upload_part(&mut self, s3: &Client, body: ByteStream) -> Result<(), Error> {
        let number = self.parts.len() as i32 + 1;
        let len = body.size_hint().0;
        let out = s3
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::s3("UploadPart", &self.bucket, &self.key, e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_string))
                .build(),
        );
        debug!(bucket = %self.bucket, key = %self.key, part = number, bytes = len, "part written");
        Ok(())
    }

    /// CompleteMultipartUpload (aborted if it fails).
    pub async fn complete(self, s3: &Client) -> Result<(), Error> {
        let res = s3
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            )
            .send()
            .await;
        if let Err(e) = res {
            let err = Error::s3("CompleteMultipartUpload", &self.bucket, &self.key, e);
            self.abort_ref(s3).await;
            return Err(err);
        }
        debug!(bucket = %self.bucket, key = %self.key, parts = self.parts.len(), "object written");
        Ok(())
    }

    /// AbortMultipartUpload, best effort (the caller already has an error to report).
    pub async fn abort(self, s3: &Client) {
        self.abort_ref(s3).await
    }

    async fn abort_ref(&self, s3: &Client) {
        let res = s3
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await;
        if let Err(e) = res {
            tracing::warn!(
                bucket = %self.bucket,
                key = %self.key,
                upload_id = %self.upload_id,
                error = %crate::error::error_chain(&e),
                "could not abort a multipart upload; a lifecycle rule for incomplete uploads cleans it up"
            );
        }
    }
}

/// The writer stage: receives a day's pieces in order and uploads each chunk —
/// PutObject when it came in one piece, else a multipart upload started with its first
/// full part — one piece uploading while the chunks stage fills the next. Returns the
/// manifest entries in chunk order. The chunk's multipart upload is kept in `open`
/// while it is under way: the caller aborts it when this future fails or is dropped
/// (another stage failed); when the pieces stop mid-chunk (the chunks stage failed),
/// it is aborted here.
pub async fn upload_chunks(
    s3: &Client,
    out: DayOutput<'_>,
    mut pieces: mpsc::Receiver<Piece>,
    check_deadline: impl Fn() -> Result<(), Error>,
    open: &mut Option<Multipart>,
) -> Result<Vec<ChunkEntry>, Error> {
    let mut entries = Vec::new();
    // A chunk's only piece, put whole at its end.
    let mut whole: Option<Vec<u8>> = None;
    // The SHA-256 of the chunk's bytes as they go up, for the manifest.
    let mut hash = Sha256::new(&SHA256);
    while let Some(piece) = pieces.recv().await {
        check_deadline()?;
        match piece {
            Piece::Data { bytes, last, .. } if last && open.is_none() => {
                hash.update(&bytes);
                whole = Some(bytes);
            }
            Piece::Data { index, bytes, .. } => {
                hash.update(&bytes);
                let mp = match open {
                    Some(mp) => mp,
                    None => {
                        let key = out.chunk_key(index);
                        let mp = Multipart::start(s3, out.bucket, &key, out.format.content_type());
                        open.insert(mp.await?)
                    }
                };
                mp.upload_part(s3, ByteStream::from(bytes)).await?;
            }
            Piece::End(info) => {
                let key = out.chunk_key(info.index);
                let bucket = out.bucket;
                match open.take() {
                    Some(mp) => mp.complete(s3).await?,
                    None => {
                        let body = ByteStream::from(whole.take().unwrap_or_default());
                        put(s3, bucket, &key, body, out.format.content_type()).await?
                    }
                }
                info!(
                    key = %format!("s3://{bucket}/{key}"),
                    records = info.records,
                    bytes = info.compressed_bytes,
                    "chunk written"
                );
                let sha256 = std::mem::replace(&mut hash, Sha256::new(&SHA256)).finish();
                entries.push(ChunkEntry {
                    key,
                    records: info.records,
                    bytes: info.compressed_bytes,
                    uncompressed_bytes: info.uncompressed_bytes,
                    sha256: hex::encode(sha256),
                });
            }
        }
    }
    if let Some(mp) = open.take() {
        // The pieces stopped mid-chunk (the chunks stage reports why).
        mp.abort(s3).await;
    }
    Ok(entries)
}

/// DeleteObject of one key (deleting a missing key succeeds, as in S3).
pub async fn delete(s3: &Client, bucket: &str, key: &str) -> Result<(), Error> {
    s3.delete_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| Error::s3("DeleteObject", bucket, key, e))?;
    debug!(bucket, key, "object deleted");
    Ok(())
}

/// Deletes `keys` with DeleteObjects, up to 1,000 a request; a key S3 could not delete
/// fails with its own error.
pub async fn delete_many(s3: &Client, bucket: &str, keys: &[String]) -> Result<(), Error> {
    for batch in keys.chunks(1000) {
        let objects = batch
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::s3_detail("DeleteObjects", bucket, &batch[0], e.to_string()))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| Error::s3_detail("DeleteObjects", bucket, &batch[0], e.to_string()))?;
        let out = s3
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| Error::s3("DeleteObjects", bucket, &batch[0], e))?;
        if let Some(e) = out.errors().first() {
            let key = e.key().unwrap_or(&batch[0]);
            let detail = format!(
                "{}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or("")
            );
            return Err(Error::s3_detail("DeleteObjects", bucket, key, detail));
        }
        debug!(bucket, objects = batch.len(), "objects deleted");
    }
    Ok(())
}

/// PutObject of `value` as pretty-printed JSON with a final newline.
pub async fn put_json(
    s3: &Client,
    bucket: &str,
    key: &str,
    value: &impl Serialize,
) -> Result<(), Error> {
    let mut body = serde_json::to_vec_pretty(value).expect("our types always serialise");
    body.push(b'\n');
    put(s3, bucket, key, ByteStream::from(body), "application/json").await
}

/// The whole body of a small object we wrote (a plan's file, a shard's result, the
/// manifest), or `None` when there is none (404). A body broken off is asked for
/// again: the SDK retries requests, not the bodies it hands out.
///
/// The SDK's response checksum is not validated, as for the lease: on a server whose
/// writes are not atomic (s3s-fs), two copies of one shard writing its result at once
/// can leave one's body stored with the other's checksum. What is read is parsed whole
/// (JSON, or gzip with its own CRC), so a damaged body still fails.
pub async fn get_if_exists(
    s3: &Client,
    bucket: &str,
    key: &str,
    what: &'static str,
) -> Result<Option<Bytes>, Error> {
    for again in 0.. {
        let Some(out) = open_if_exists(s3, bucket, key, what).await? else {
            return Ok(None);
        };
        match out.body.collect().await {
            Ok(body) => return Ok(Some(body.into_bytes())),
            Err(e) if again < STREAM_RESUMES => {
                tracing::warn!(bucket, key, error = %crate::error::error_chain(&e), "body broken off; asking for it again");
            }
            Err(e) => return Err(Error::s3_read(what, bucket, key, &e)),
        }
    }
    unreachable!("the loop returns")
}

/// GetObject of an object we wrote, its body not read yet; `None` when there is none
/// (404). The SDK's response checksum is not validated (see [`get_if_exists`]).
pub async fn open_if_exists(
    s3: &Client,
    bucket: &str,
    key: &str,
    what: &'static str,
) -> Result<Option<aws_sdk_s3::operation::get_object::GetObjectOutput>, Error> {
    use aws_sdk_s3::config::ResponseChecksumValidation;
    let sent = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .customize()
        .config_override(
            aws_sdk_s3::config::Builder::default()
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
        )
        .send()
        .await;
    match sent {
        Ok(out) => Ok(Some(out)),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
        Err(e) => Err(Error::s3(what, bucket, key, e)),
    }
}

/// [`get_if_exists`] of a JSON object, parsed; one that does not parse is an error
/// naming it.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    s3: &Client,
    bucket: &str,
    key: &str,
    what: &'static str,
) -> Result<Option<T>, Error> {
    let Some(bytes) = get_if_exists(s3, bucket, key, what).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::s3_detail(what, bucket, key, format!("not what we wrote there: {e}")))
}
