//! Concurrency with order kept: up to `limit` futures of a stream running at once,
//! up to `window` started past the oldest one not yet yielded, outputs in the
//! stream's order.
//!
//! `futures`' `buffered(n)` alone counts both the running futures and the finished
//! ones waiting for an earlier one: while the oldest is still running, no new one
//! starts once `n - 1` later ones have finished. S3's latency has a tail (most small
//! GETs answer in ~20 ms, a few in hundreds), so every slow GET would stall all the
//! others behind it. Here `buffered(window)` holds the order and a semaphore of
//! `limit` permits, taken in order (tokio's semaphore is fair), bounds what runs: the
//! finished futures wait aside without a permit and the other slots keep fetching.
//!
//! The stream gives functions that make the futures, not the futures: each is made
//! (and boxed) only once it has a permit. A future of an SDK call holds all the state
//! it may need from the start, several KB; `buffered` keeps `window` of them, and 2,048
//! GET futures made up front took the seed day's peak RSS from 18 to 50 MiB.

use std::future::Future;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::Semaphore;

/// Runs up to `limit` (at least 1) of the futures that `makers` make at once, making
/// none more than `window` (at least `limit`) past the oldest output not yet yielded;
/// yields the outputs in the order of `makers`.
pub fn in_order<St, Fut>(makers: St, limit: usize, window: usize) -> impl Stream<Item = Fut::Output>
where
    St: Stream,
    St::Item: FnOnce() -> Fut,
    Fut: Future,
{
    let limit = limit.max(1);
    let running = Arc::new(Semaphore::new(limit));
    makers
        .map(move |make| {
            let running = running.clone();
            async move {
                let _slot = running.acquire().await.expect("never closed");
                Box::pin(make()).await
            }
        })
        .buffered(window.max(limit))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    /// A slow first future does not stop the others: they all run (never more than
    /// `limit` at once) and finish before it, and the outputs still come in order.
    #[tokio::test(start_paused = true)]
    async fn a_slow_future_holds_back_its_output_not_the_others() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let futures = futures::stream::iter(0..40u64).map(|i| {
            let (running, most) = (running.clone(), most.clone());
            move || async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let ms = if i == 0 { 1_000 } else { 10 + i % 7 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                (i, Instant::now())
            }
        });
        let out: Vec<(u64, Instant)> = in_order(futures, 4, 64).collect().await;
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        assert_eq!(most.load(Ordering::SeqCst), 4);
        let first_done = out[0].1;
        assert!(
            out[1..].iter().all(|o| o.1 < first_done),
            "the later futures waited for the slow one"
        );
    }

    /// The window bounds the futures made past the oldest one not yet yielded.
    #[tokio::test(start_paused = true)]
    async fn a_window_bounds_what_waits_behind_a_slow_future() {
        let started = Arc::new(AtomicUsize::new(0));
        let futures = futures::stream::iter(0..40u64).map(|i| {
            let started = started.clone();
            move || async move {
                started.fetch_add(1, Ordering::SeqCst);
                let ms = if i % 10 == 0 { 1_000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                i
            }
        });
        let mut stream = std::pin::pin!(in_order(futures, 3, 7));
        let mut yielded = 0;
        while let Some(i) = stream.next().await {
            assert_eq!(i, yielded);
            yielded += 1;
            let ahead = started.load(Ordering::SeqCst) - yielded as usize;
            assert!(ahead < 7, "{ahead} started beyond the window");
        }
        assert_eq!(yielded, 40);
    }

    /// A future is made only once it may run: never more than `limit` are made and
    /// not finished, whatever the window (an SDK call's future holds KBs from the start).
    #[tokio::test(start_paused = true)]
    async fn futures_are_made_only_when_they_may_run() {
        let made = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let makers = futures::stream::iter(0..200u64).map(|i| {
            let (made, done, most) = (made.clone(), done.clone(), most.clone());
            move || {
                let now = made.fetch_add(1, Ordering::SeqCst) + 1 - done.load(Ordering::SeqCst);
                most.fetch_max(now, Ordering::SeqCst);
                async move {
                    let ms = if i % 50 == 0 { 500 } else { 5 };
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    i
                }
            }
        });
        let out: Vec<u64> = in_order(makers, 4, 100).collect().await;
        assert_eq!(out, (0..200).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 4, "made but not finished");
    }

    /// With every future equally fast the stream keeps `limit` running, so `n` of
    /// them take about `n / limit` rounds.
    #[tokio::test(start_paused = true)]
    async fn keeps_limit_futures_running() {
        let started = Instant::now();
        let futures = futures::stream::iter(0..100u64).map(|i| {
            move || async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                i
            }
        });
        let out: Vec<u64> = in_order(futures, 10, 40).collect().await;
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(120),
            "{took:?}"
        );
    }
}
