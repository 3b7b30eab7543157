//! Process-wide set-up shared by the binaries.

/// The async runtime of the binaries: tokio's *current-thread* runtime.
///
/// The async side only moves bytes (S3 requests, queues); gunzip + record scan and gzip
/// run on two blocking threads of their own. One I/O thread instead of a worker per
/// core avoids cross-thread wake-ups on every request: on the organisation-sized
/// benchmark day, CPU 39.6 s → 37.5 s and system time 6.3 s → 3.8 s (medians of 3
/// runs each; BENCHMARKS.md).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
