//! Process-wide set-up shared by the binaries.

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
