//! Spool: the compressed pieces of a chunk in temporary files, from the compressor to
//! their upload.
//!
//! An S3 multipart upload needs parts of at least 5 MiB, each whole before its
//! `UploadPart` starts (its length goes first) and kept until S3 has stored it (the SDK
//! retries from it). Held in memory, the part uploading and the part filling were most
//! of what a large day has and a small one has not: ~5–10 MiB on top of a ~22 MiB
//! process. In a file they are page cache instead, which the kernel writes back and
//! drops under pressure (BENCHMARKS.md, "Output pieces spooled to files").
//!
//! Files are created in the configured directory (`TMPDIR`, else `/tmp`: on Lambda the
//! function's ephemeral storage, 512 MB by default, of which a run uses at most two
//! pieces, ~11 MB). They have random names, are written through a 64 KiB
//! buffer, and are deleted when the piece is dropped: after its upload, or on any error.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::{ByteStream, Length};
use tempfile::TempPath;

use crate::chunks::Parts;

/// Buffer between the compressor and a spool file, and between a spool file and the
/// HTTP request that uploads it.
const IO_BUFFER: usize = 64 * 1024;

/// A piece being written.
pub struct SpoolFile {
    file: BufWriter<File>,
    path: TempPath,
    written: usize,
}

impl SpoolFile {
    /// A new, empty spool file in `dir`.
    fn create_in(dir: &Path) -> io::Result<SpoolFile> {
        let (file, path) = tempfile::Builder::new()
            .prefix("cloudtrail-aggregator-")
            .suffix(".part")
            .tempfile_in(dir)
            .map_err(|e| context(e, "create a spool file in", dir))?
            .into_parts();
        Ok(SpoolFile {
            file: BufWriter::with_capacity(IO_BUFFER, file),
            path,
            written: 0,
        })
    }
}

impl Write for SpoolFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .file
            .write(buf)
            .map_err(|e| context(e, "write spool file", &self.path))?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .flush()
            .map_err(|e| context(e, "write spool file", &self.path))
    }
}

/// Pieces in spool files in one directory.
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Spool files in `dir` (the pipeline's: [`crate::Config::spool_dir`]).
    pub fn new(dir: impl Into<PathBuf>) -> Spool {
        Spool { dir: dir.into() }
    }
}

impl Parts for Spool {
    type Buf = SpoolFile;
    type Sealed = Spooled;

    fn create(&mut self) -> io::Result<SpoolFile> {
        SpoolFile::create_in(&self.dir)
    }

    fn written(buf: &SpoolFile) -> usize {
        buf.written
    }

    fn seal(mut buf: SpoolFile) -> io::Result<Spooled> {
        buf.flush()?;
        Ok(Spooled {
            path: buf.path,
            len: buf.written as u64,
        })
    }
}

/// A finished piece on disk; the file is deleted when this is dropped.
#[derive(Debug)]
pub struct Spooled {
    path: TempPath,
    len: u64,
}

impl Spooled {
    /// Size of the piece in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the piece is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the piece is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The piece as a request body of known length that the SDK can send again on a
    /// retry (it reopens the file).
    pub async fn body(&self) -> io::Result<ByteStream> {
        ByteStream::read_from()
            .path(&self.path)
            .length(Length::Exact(self.len))
            .buffer_size(IO_BUFFER)
            .build()
            .await
            .map_err(|e| context(io::Error::other(e), "read spool file", &self.path))
    }
}

/// Adds what was done to which file to an I/O error, keeping its kind.
fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spooled piece holds exactly what was written, and its file is gone once the
    /// piece is dropped.
    #[test]
    fn spooled_piece_round_trips_and_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Spool::new(dir.path()).create().unwrap();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        assert_eq!(Spool::written(&f), data.len());
        let piece = Spool::seal(f).unwrap();
        assert_eq!(piece.len(), data.len() as u64);
        assert_eq!(std::fs::read(piece.path()).unwrap(), data);
        let path = piece.path().to_path_buf();
        drop(piece);
        assert!(!path.exists(), "{} must be deleted", path.display());
    }

    /// A piece dropped before it was sealed (an error mid-chunk) leaves no file.
    #[test]
    fn unsealed_piece_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Spool::new(dir.path()).create().unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A directory that cannot hold a spool file gives an error naming it.
    #[test]
    fn error_names_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = SpoolFile::create_in(&missing)
            .err()
            .expect("no such directory");
        assert!(
            err.to_string()
                .contains(&format!("create a spool file in {}", missing.display())),
            "{err}"
        );
    }

    /// The body the SDK sends is the piece's bytes, and it can be read again (a retry).
    #[tokio::test]
    async fn body_is_the_piece_and_can_be_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = Spool::new(dir.path()).create().unwrap();
        let data = vec![7u8; 300_000];
        f.write_all(&data).unwrap();
        let piece = Spool::seal(f).unwrap();
        let body = piece.body().await.unwrap();
        let retry = body.into_inner().try_clone().expect("a retryable body");
        let first = ByteStream::new(retry.try_clone().unwrap())
            .collect()
            .await
            .unwrap()
            .into_bytes();
        let second = ByteStream::new(retry).collect().await.unwrap().into_bytes();
        assert_eq!(first, data);
        assert_eq!(second, data);
    }
}
