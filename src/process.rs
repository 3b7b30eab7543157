//! Process-wide set-up shared by the binaries.

/// Makes glibc's allocator give large buffers back to the system when they are freed.
///
/// glibc serves an allocation from `mmap` above a threshold that starts at 128 KiB and
/// *rises* to the size of every mmapped block freed; after the first upload part is
/// freed, 5–7 MiB buffers come from the thread arenas, where freed pages stay resident
/// and fragment. A fixed 256 KiB threshold keeps that from happening: the part buffers
/// (a few per chunk) are mapped and unmapped, the reused ones (line blocks, read
/// buffers) are allocated once. Organisation-sized benchmark day: peak RSS 30 → 26 MiB,
/// CPU unchanged within noise (BENCHMARKS.md). Returns whether the setting was taken
/// (`false` off glibc, where this does nothing).
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 256 * 1024;
        // SAFETY: mallopt only sets allocator parameters; glibc serialises it with
        // allocation.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

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

#[cfg(test)]
mod tests {
    /// glibc accepts the fixed mmap threshold (the Lambda runs on glibc too).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_allocator_setting() {
        assert!(super::tune_allocator());
    }
}
