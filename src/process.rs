//! Process-wide set-up shared by the binaries.

use std::time::Duration;

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

/// How long the I/O thread waits, once it has run out of work, before it sleeps in the
/// kernel until the next event (see [`runtime`]).
pub const IO_COALESCE: Duration = Duration::from_millis(1);

/// The async runtime of the binaries: tokio's *current-thread* runtime.
///
/// The async side only moves bytes (S3 requests, queues); gunzip + record scan and gzip
/// run on two blocking threads of their own. One I/O thread instead of a worker per
/// core avoids cross-thread wake-ups on every request: on the organisation-sized
/// benchmark day, CPU 39.6 s → 37.5 s and system time 6.3 s → 3.8 s (medians of 3
/// runs each; BENCHMARKS.md).
///
/// Its wake-ups are coalesced: when it runs out of work it first sleeps
/// [`IO_COALESCE`], then collects every event that came meanwhile in one `epoll_wait`.
/// With 128 GETs in flight answers arrive every ~0.2 ms, and without the pause the
/// thread slept and woke for almost each of them (67,900 times for the ~102,000
/// requests of the organisation-sized day), each time a context switch on the I/O
/// thread and, on a busy machine, a preemption of the compressor. With it: 11,000
/// wake-ups, the I/O thread's CPU 4.4 → 3.5 s, the day's 16.0 → 15.6 s (medians of 4
/// alternating runs at 0 ms per request). The cost is up to 1 ms of latency per wake-up,
/// not seen in the wall time at 25 ms per request (BENCHMARKS.md).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(|| std::thread::sleep(IO_COALESCE))
        .build()
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use tokio::io::AsyncReadExt;

    use super::IO_COALESCE;

    /// glibc accepts the fixed mmap threshold (the Lambda runs on glibc too).
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_allocator_setting() {
        assert!(super::tune_allocator());
    }

    /// The runtime's thread sleeps in the kernel at most once per `IO_COALESCE`, however
    /// fast events come: 400 writes on a loopback socket, one every 50 µs, are read in
    /// a fraction of as many wake-ups.
    #[test]
    fn wake_ups_are_coalesced() {
        const WRITES: usize = 400;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket.set_nodelay(true).unwrap();
            for _ in 0..WRITES {
                socket.write_all(b"x").unwrap();
                // Busy-wait: a sleep this short would overshoot.
                let until = Instant::now() + Duration::from_micros(50);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
        });
        let rt = super::runtime().unwrap();
        let started = Instant::now();
        let read = rt.block_on(async {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = [0u8; 64];
            let mut read = 0;
            loop {
                match socket.read(&mut buf).await.unwrap() {
                    0 => return read,
                    n => read += n,
                }
            }
        });
        let elapsed = started.elapsed();
        writer.join().unwrap();
        let parks = rt.metrics().worker_park_count(0);
        assert_eq!(read, WRITES);
        // Each park is preceded by a pause of `IO_COALESCE` (one more for the connect).
        let most = (elapsed.as_micros() / IO_COALESCE.as_micros()) as u64 + 2;
        assert!(
            parks <= most,
            "{parks} parks in {elapsed:?}: more than one per {IO_COALESCE:?}"
        );
        // And far fewer than the writes: the test measured something.
        assert!(
            parks < WRITES as u64 / 4,
            "{parks} parks for {WRITES} writes"
        );
    }
}
