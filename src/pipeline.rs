//! Pipeline: one day, end to end. Wires the stages with bounded queues:
//!
//! ```text
//! listing ─▶ GETs (≤ max_concurrent_gets in flight, in key order)
//!         ─▶ [blocking thread] decode + record scan + chunk gzip
//!         ─▶ uploads (one chunk uploads while the next is built)
//!         ─▶ stale-chunk cleanup ─▶ _manifest.json
//! ```
//!
//! The order of records is the order of the sorted source keys and, within a file,
//! the order of its `Records` array, whatever the concurrency: GETs complete out of
//! order but are consumed in order (`buffered`). Any failed read or write fails the
//! day; the manifest, which marks a day complete, is then absent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::chunks::{Chunk, ChunkBuilder};
use crate::config::Config;
use crate::error::Error;
use crate::listing::{self, SourceObject};
use crate::records;
use crate::trigger::Day;
use crate::writer::{self, ChunkEntry, Manifest, CHUNK_CONTENT_TYPE};

/// Source files fetched but not yet consumed by the chunk builder, beyond those in
/// flight.
const FILE_QUEUE: usize = 8;

/// Options of one run that are not configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Stop with [`Error::Deadline`] instead of starting work that would pass this
    /// instant (the Lambda's deadline less a safety margin).
    pub deadline: Option<Instant>,
}

/// The outcome of one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub day: Day,
    pub manifest_key: String,
    pub manifest: Manifest,
    pub stale_chunks_deleted: Vec<String>,
    pub duration: Duration,
}

/// One fetched source object.
struct Fetched {
    key: String,
    body: Bytes,
}

async fn fetch(s3: &Client, bucket: &str, key: String) -> Result<Fetched, Error> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .map_err(|e| Error::s3("GetObject", bucket, &key, e))?;
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| Error::s3("GetObject (reading the body)", bucket, &key, e))?
        .into_bytes();
    debug!(bucket, key = %key, bytes = body.len(), "object read");
    Ok(Fetched { key, body })
}

/// Totals of the records stage.
#[derive(Debug, Default)]
struct ReadStats {
    files: u64,
    records: u64,
    bytes_read: u64,
}

/// Reads every fetched file, in order, and builds the chunks. Runs on a blocking
/// thread: gunzip, the record scan and gzip are CPU work.
fn build_chunks(
    cfg: &Config,
    day: Day,
    mut files: mpsc::Receiver<Fetched>,
    chunks: mpsc::Sender<Chunk>,
) -> Result<ReadStats, Error> {
    let mut builder = ChunkBuilder::new(cfg.chunk_size_bytes, cfg.gzip_level);
    let mut stats = ReadStats::default();
    let compress_err = |index: u32, source| Error::Compress {
        bucket: cfg.dst_bucket.clone(),
        key: writer::chunk_key(&cfg.dst_prefix, day, index),
        source,
    };
    while let Some(file) = files.blocking_recv() {
        let mut reader = records::open_slice(&file.body);
        loop {
            let record = reader.next_record().map_err(|source| Error::Records {
                bucket: cfg.src_bucket.clone(),
                key: file.key.clone(),
                source,
            })?;
            let Some(record) = record else { break };
            let index = builder.chunks_closed();
            if let Some(chunk) = builder.push(record).map_err(|e| compress_err(index, e))? {
                if chunks.blocking_send(chunk).is_err() {
                    // The uploader stopped; its error is the one to report.
                    return Ok(stats);
                }
            }
        }
        stats.files += 1;
        stats.records += reader.records_read();
        stats.bytes_read += file.body.len() as u64;
        debug!(key = %file.key, records = reader.records_read(), "file aggregated");
    }
    let index = builder.chunks_closed();
    if let Some(chunk) = builder.finish().map_err(|e| compress_err(index, e))? {
        let _ = chunks.blocking_send(chunk);
    }
    Ok(stats)
}

/// Aggregates one day: lists, reads, writes the chunks, removes stale ones and writes
/// the manifest. Fails on the first failed read or write.
pub async fn aggregate_day(
    s3: &Client,
    cfg: &Config,
    day: Day,
    opts: RunOptions,
) -> Result<Summary, Error> {
    let started = Instant::now();
    let found = listing::list_day(
        s3,
        &cfg.src_bucket,
        &cfg.src_prefix,
        day,
        cfg.max_concurrent_lists,
    )
    .await?;
    let total = found.objects.len() as u64;
    info!(
        day = %day,
        accounts = found.accounts,
        regions = found.regions,
        files = total,
        source = %format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix),
        "files found"
    );
    if total == 0 {
        warn!(
            day = %day,
            accounts = found.accounts,
            source = %format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix),
            "no CloudTrail files for this day{}",
            if found.accounts == 0 {
                ": no account or organisation folders under the source prefix (is SRC_PREFIX the AWSLogs/ folder?)"
            } else {
                ""
            }
        );
    }

    // The day is incomplete from now until the new manifest is written.
    let manifest_key = writer::manifest_key(&cfg.dst_prefix, day);
    writer::delete(s3, &cfg.dst_bucket, &manifest_key).await?;

    let bytes_listed: u64 = found.objects.iter().map(|o| o.size).sum();
    let keys: Vec<String> = found
        .objects
        .into_iter()
        .map(|o: SourceObject| o.key)
        .collect();
    let (file_tx, file_rx) = mpsc::channel::<Fetched>(FILE_QUEUE);
    let (chunk_tx, mut chunk_rx) = mpsc::channel::<Chunk>(1);
    let files_sent = Arc::new(std::sync::atomic::AtomicU64::new(0));

    let fetcher = {
        let files_sent = files_sent.clone();
        async move {
            let mut stream = futures::stream::iter(keys)
                .map(|key| fetch(s3, &cfg.src_bucket, key))
                .buffered(cfg.max_concurrent_gets);
            while let Some(file) = stream.try_next().await? {
                if let Some(deadline) = opts.deadline {
                    if Instant::now() >= deadline {
                        return Err(Error::Deadline {
                            day: day.to_string(),
                            files_done: files_sent.load(std::sync::atomic::Ordering::Relaxed),
                            files_total: total,
                        });
                    }
                }
                if file_tx.send(file).await.is_err() {
                    break; // the chunk builder stopped and reports why
                }
                files_sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok::<(), Error>(())
        }
    };

    let builder = {
        let cfg = cfg.clone();
        let handle =
            tokio::task::spawn_blocking(move || build_chunks(&cfg, day, file_rx, chunk_tx));
        async move {
            handle.await.map_err(|e| Error::Internal {
                stage: "chunk builder",
                detail: e.to_string(),
            })?
        }
    };

    let uploader = async {
        let mut entries = Vec::new();
        while let Some(chunk) = chunk_rx.recv().await {
            let key = writer::chunk_key(&cfg.dst_prefix, day, chunk.index);
            let entry = ChunkEntry {
                key: key.clone(),
                records: chunk.records,
                bytes: chunk.data.len() as u64,
                uncompressed_bytes: chunk.uncompressed_bytes,
            };
            writer::put(s3, &cfg.dst_bucket, &key, chunk.data, CHUNK_CONTENT_TYPE).await?;
            info!(key = %format!("s3://{}/{}", cfg.dst_bucket, key), records = entry.records, bytes = entry.bytes, "chunk written");
            entries.push(entry);
        }
        Ok::<_, Error>(entries)
    };

    let ((), stats, entries) = tokio::try_join!(fetcher, builder, uploader)?;
    if stats.files != total {
        // Only reachable if a stage stopped early without an error of its own.
        return Err(Error::Internal {
            stage: "pipeline",
            detail: format!("{} of {total} files were aggregated", stats.files),
        });
    }
    debug_assert_eq!(stats.bytes_read, bytes_listed);

    let stale = writer::delete_stale_chunks(
        s3,
        &cfg.dst_bucket,
        &cfg.dst_prefix,
        day,
        entries.len() as u32,
    )
    .await?;
    for key in &stale {
        info!(key = %format!("s3://{}/{}", cfg.dst_bucket, key), "stale chunk from an earlier run deleted");
    }

    let manifest = Manifest {
        date: day.to_string(),
        source: format!("s3://{}/{}", cfg.src_bucket, cfg.src_prefix),
        source_files: stats.files,
        records: stats.records,
        bytes_read: stats.bytes_read,
        bytes_written: entries.iter().map(|e| e.bytes).sum(),
        uncompressed_bytes_written: entries.iter().map(|e| e.uncompressed_bytes).sum(),
        chunks: entries,
        generator: concat!("cloudtrail-aggregator ", env!("CARGO_PKG_VERSION")).to_string(),
    };
    writer::put_manifest(s3, &cfg.dst_bucket, &manifest_key, &manifest).await?;
    let duration = started.elapsed();
    info!(
        day = %day,
        files = manifest.source_files,
        records = manifest.records,
        chunks = manifest.chunks.len(),
        bytes_read = manifest.bytes_read,
        bytes_written = manifest.bytes_written,
        duration_ms = duration.as_millis() as u64,
        manifest = %format!("s3://{}/{}", cfg.dst_bucket, manifest_key),
        "day aggregated"
    );
    Ok(Summary {
        day,
        manifest_key,
        manifest,
        stale_chunks_deleted: stale,
        duration,
    })
}
