//! Writer: output keys, chunk uploads, stale-chunk cleanup and the day's manifest.
//!
//! Layout of one day: `DST_PREFIX` + `YYYY/MM/DD/` + `000000.ndjson.gz`, `000001…` (or
//! `000000.parquet`, … with `OUTPUT_FORMAT=parquet`), and `_manifest.json`, written last. (Hive and Athena skip files whose names start with
//! `_`, so the manifest never shows up as data.) The manifest is removed before the
//! first chunk of a run is written and put back only when every chunk is in place, so
//! its presence means "this day is complete"; it holds no timestamp, so a rerun over
//! the same sources writes the very same bytes.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::chunks::Piece;
use crate::config::OutputFormat;
use crate::error::Error;
use crate::listing::list_level;
use crate::trigger::Day;

pub const MANIFEST_NAME: &str = "_manifest.json";

/// `DST_PREFIX/YYYY/MM/DD/`.
pub fn day_prefix(dst_prefix: &str, day: Day) -> String {
    format!("{dst_prefix}{}", day.path())
}

/// `DST_PREFIX/YYYY/MM/DD/NNNNNN.ndjson.gz` (or `.parquet`).
pub fn chunk_key(dst_prefix: &str, day: Day, index: u32, format: OutputFormat) -> String {
    format!(
        "{}{index:06}{}",
        day_prefix(dst_prefix, day),
        format.suffix()
    )
}

/// Where a day's chunks go: the bucket, the day's folder under `DST_PREFIX`, and the
/// format (which names the files).
#[derive(Debug, Clone, Copy)]
pub struct DayOutput<'a> {
    pub bucket: &'a str,
    pub dst_prefix: &'a str,
    pub day: Day,
    pub format: OutputFormat,
}

impl DayOutput<'_> {
    /// The key of chunk `index`.
    pub fn chunk_key(&self, index: u32) -> String {
        chunk_key(self.dst_prefix, self.day, index, self.format)
    }
}

/// `DST_PREFIX/YYYY/MM/DD/_manifest.json`.
pub fn manifest_key(dst_prefix: &str, day: Day) -> String {
    format!("{}{MANIFEST_NAME}", day_prefix(dst_prefix, day))
}

/// The chunk number and format of an object name (`000012.ndjson.gz` → 12, NDJSON);
/// `None` for anything that is not one of our chunks.
pub fn chunk_name(name: &str) -> Option<(u32, OutputFormat)> {
    let (digits, format) = OutputFormat::ALL
        .into_iter()
        .find_map(|f| Some((name.strip_suffix(f.suffix())?, f)))?;
    if digits.len() < 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, format))
}

/// One chunk as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChunkEntry {
    pub key: String,
    pub records: u64,
    /// Compressed size, as stored.
    pub bytes: u64,
    pub uncompressed_bytes: u64,
}

/// What `_manifest.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub date: String,
    /// `ndjson` or `parquet`.
    pub format: OutputFormat,
    pub source: String,
    pub source_files: u64,
    pub records: u64,
    /// Bytes of the source objects as stored (mostly gzip).
    pub bytes_read: u64,
    /// Bytes of the chunks as stored (gzip or Parquet).
    pub bytes_written: u64,
    /// Bytes of the records as NDJSON (before compression, or before Parquet encoding).
    pub uncompressed_bytes_written: u64,
    pub chunks: Vec<ChunkEntry>,
    /// What `DAY_BY=event` or `DEDUP` selected; absent with the defaults, whose
    /// manifest is unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<crate::select::Selection>,
    pub generator: String,
}

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
    while let Some(piece) = pieces.recv().await {
        check_deadline()?;
        match piece {
            Piece::Data { bytes, last, .. } if last && open.is_none() => whole = Some(bytes),
            Piece::Data { index, bytes, .. } => {
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
                entries.push(ChunkEntry {
                    key,
                    records: info.records,
                    bytes: info.compressed_bytes,
                    uncompressed_bytes: info.uncompressed_bytes,
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

/// The chunk objects already in a day's folder, as (key, index, format), sorted by
/// index.
async fn existing_chunks(
    s3: &Client,
    bucket: &str,
    dst_prefix: &str,
    day: Day,
) -> Result<Vec<(String, u32, OutputFormat)>, Error> {
    let prefix = day_prefix(dst_prefix, day);
    let (_, objects) = list_level(s3, bucket, &prefix).await?;
    let mut chunks: Vec<_> = objects
        .into_iter()
        .filter_map(|o| {
            let (idx, format) = chunk_name(&o.key[prefix.len()..])?;
            Some((o.key, idx, format))
        })
        .collect();
    chunks.sort_by_key(|(_, i, _)| *i);
    Ok(chunks)
}

/// Deletes the day's chunk objects that this run's `keep` chunks of `format` did not
/// overwrite: those numbered `keep` and above (an earlier run wrote more), and those of
/// the other format (an earlier run wrote the day in it). Returns their keys. Nothing
/// else is touched.
pub async fn delete_stale_chunks(
    s3: &Client,
    bucket: &str,
    dst_prefix: &str,
    day: Day,
    keep: u32,
    format: OutputFormat,
) -> Result<Vec<String>, Error> {
    let mut deleted = Vec::new();
    for (key, idx, f) in existing_chunks(s3, bucket, dst_prefix, day).await? {
        if idx >= keep || f != format {
            delete(s3, bucket, &key).await?;
            deleted.push(key);
        }
    }
    Ok(deleted)
}

/// Writes the manifest (pretty-printed JSON with a final newline).
pub async fn put_manifest(
    s3: &Client,
    bucket: &str,
    key: &str,
    manifest: &Manifest,
) -> Result<(), Error> {
    let mut body = serde_json::to_vec_pretty(manifest).expect("a manifest always serialises");
    body.push(b'\n');
    put(s3, bucket, key, ByteStream::from(body), "application/json").await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        "2024-02-05".parse().unwrap()
    }

    /// Keys follow DST_PREFIX/YYYY/MM/DD/NNNNNN.ndjson.gz (or .parquet).
    #[test]
    fn keys() {
        assert_eq!(
            chunk_key("daily/", day(), 0, OutputFormat::Ndjson),
            "daily/2024/02/05/000000.ndjson.gz"
        );
        assert_eq!(
            chunk_key("", day(), 12, OutputFormat::Ndjson),
            "2024/02/05/000012.ndjson.gz"
        );
        assert_eq!(
            chunk_key("d/", day(), 3, OutputFormat::Parquet),
            "d/2024/02/05/000003.parquet"
        );
        assert_eq!(manifest_key("x/y/", day()), "x/y/2024/02/05/_manifest.json");
    }

    /// Only our own chunk names are recognised, so cleanup touches nothing else.
    #[test]
    fn chunk_names() {
        let (ndjson, parquet) = (OutputFormat::Ndjson, OutputFormat::Parquet);
        assert_eq!(chunk_name("000000.ndjson.gz"), Some((0, ndjson)));
        assert_eq!(chunk_name("000123.ndjson.gz"), Some((123, ndjson)));
        assert_eq!(chunk_name("1234567.ndjson.gz"), Some((1_234_567, ndjson)));
        assert_eq!(chunk_name("000002.parquet"), Some((2, parquet)));
        for other in [
            "_manifest.json",
            "12.ndjson.gz",
            "00001a.ndjson.gz",
            "000001.ndjson",
            "000001.json.gz",
            "000001.parquet.tmp",
            "1.parquet",
            "notes.txt",
        ] {
            assert_eq!(chunk_name(other), None, "{other}");
        }
    }
}
