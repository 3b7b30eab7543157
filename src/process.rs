//! Process-wide set-up shared by the binaries.
//!
//! The binaries run tokio's *current-thread* runtime: the async side only moves bytes
//! (S3 requests, queues), while gunzip/scan and gzip run on two blocking threads of
//! their own. One I/O thread instead of a worker per core avoids cross-thread wake-ups
//! on every request: on the organisation-sized benchmark day it cut CPU from 43.4 s
//! to 34.6 s and wall time from 39 s to 34 s (BENCHMARKS.md).

/// Limits glibc's malloc to two arenas.
///
/// glibc gives each thread that allocates under contention an arena of its own (up to
/// eight per core). Buffers freed by another thread go back to the arena they came
/// from, so with the pipeline's hand-offs between the runtime and the two CPU threads
/// the peak RSS grew to several times the data actually live: 283 MiB against 35 MiB
/// with two arenas on the 1 GB single-file benchmark (BENCHMARKS.md). The same effect
/// as `MALLOC_ARENA_MAX=2`, without relying on the environment. No-op elsewhere.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning; it is called before the runtime
        // starts its threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
