//! Concurrency with order kept: run up to `limit` futures of a stream at once and
//! yield their outputs in the stream's order.
//!
//! `futures`' `buffered(n)` does that with a window of `n` futures counted from the
//! oldest one not yet yielded: while the oldest is still running, at most `n - 1`
//! later ones can have finished, and no new one starts until it does. S3's latency
//! has a tail (most small GETs answer in ~20 ms, a few in hundreds), so with
//! `buffered` every slow GET stalls all the others behind it. Here `limit` counts only
//! the futures *running*: finished ones wait for their turn aside, so the other slots
//! keep fetching. Those waiting outputs are bounded by [`InOrder::window`] when given
//! (the LISTs of the day's folders), or by the caller (the pipeline's fetch budget,
//! taken in order before each GET starts, also counts the GETs waiting).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::{join, ready, Join, Ready};
use futures::stream::{FusedStream, FuturesUnordered, Stream, StreamExt};

/// The stream returned by [`in_order`].
#[must_use = "streams do nothing unless polled"]
pub struct InOrder<St: Stream>
where
    St::Item: Future,
{
    source: Pin<Box<futures::stream::Fuse<St>>>,
    running: FuturesUnordered<Join<Ready<u64>, St::Item>>,
    /// Finished outputs waiting for the ones before them, by position.
    finished: BTreeMap<u64, <St::Item as Future>::Output>,
    /// Position of the next future taken from `source`.
    next_in: u64,
    /// Position of the next output to yield.
    next_out: u64,
    limit: usize,
    window: usize,
}

/// Runs up to `limit` (at least 1) of `futures` at once, yielding their outputs in
/// the order of `futures`.
pub fn in_order<St>(futures: St, limit: usize) -> InOrder<St>
where
    St: Stream,
    St::Item: Future,
{
    InOrder {
        source: Box::pin(futures.fuse()),
        running: FuturesUnordered::new(),
        finished: BTreeMap::new(),
        next_in: 0,
        next_out: 0,
        limit: limit.max(1),
        window: usize::MAX,
    }
}

impl<St> InOrder<St>
where
    St: Stream,
    St::Item: Future,
{
    /// Starts no future more than `window` (at least the limit) positions after the
    /// oldest output not yet yielded: at most `window` outputs are running or waiting.
    pub fn window(mut self, window: usize) -> Self {
        self.window = window.max(self.limit);
        self
    }

    /// Futures running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Outputs finished and waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.finished.len()
    }
}

impl<St> Stream for InOrder<St>
where
    St: Stream,
    St::Item: Future,
{
    type Item = <St::Item as Future>::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = Pin::into_inner(self);
        loop {
            while this.running.len() < this.limit
                && this.running.len() + this.finished.len() < this.window
            {
                match this.source.as_mut().poll_next(cx) {
                    Poll::Ready(Some(future)) => {
                        this.running.push(join(ready(this.next_in), future));
                        this.next_in += 1;
                    }
                    // Pending: `source` wakes us when it has more.
                    _ => break,
                }
            }
            if let Some(output) = this.finished.remove(&this.next_out) {
                this.next_out += 1;
                return Poll::Ready(Some(output));
            }
            match this.running.poll_next_unpin(cx) {
                Poll::Ready(Some((position, output))) => {
                    this.finished.insert(position, output);
                }
                // Nothing running: done if the source is, else waiting for it (the
                // next output has not started, so nothing can be waiting either).
                Poll::Ready(None) if this.source.is_terminated() => return Poll::Ready(None),
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// Nothing in an `InOrder` is ever pinned in place: the source is boxed and
// `FuturesUnordered` is `Unpin`.
impl<St> Unpin for InOrder<St>
where
    St: Stream,
    St::Item: Future,
{
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
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
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let ms = if i == 0 { 1_000 } else { 10 + i % 7 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                (i, Instant::now())
            }
        });
        let out: Vec<(u64, Instant)> = in_order(futures, 4).collect().await;
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

    /// A window bounds the outputs running or waiting behind a slow one.
    #[tokio::test(start_paused = true)]
    async fn a_window_bounds_what_waits_behind_a_slow_future() {
        let started = Arc::new(AtomicUsize::new(0));
        let futures = futures::stream::iter(0..40u64).map(|i| {
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let ms = if i % 10 == 0 { 1_000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                i
            }
        });
        let mut stream = in_order(futures, 3).window(7);
        let mut yielded = 0;
        while let Some(i) = stream.next().await {
            assert_eq!(i, yielded);
            yielded += 1;
            let ahead = started.load(Ordering::SeqCst) - yielded as usize;
            assert!(ahead < 7, "{ahead} started beyond the window");
            assert!(stream.running() <= 3);
        }
        assert_eq!(yielded, 40);
        // Behind each slow one, the window filled: 6 started after it before it ended.
        let mut stream = in_order(
            futures::stream::iter(0..10u64).map(|i| async move {
                let ms = if i == 0 { 1_000 } else { 10 };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                i
            }),
            3,
        )
        .window(7);
        assert_eq!(stream.next().await, Some(0));
        assert_eq!((stream.running(), stream.waiting()), (0, 6));
    }

    /// With every future equally fast the stream keeps `limit` running, so `n` of
    /// them take about `n / limit` rounds.
    #[tokio::test(start_paused = true)]
    async fn keeps_limit_futures_running() {
        let started = Instant::now();
        let futures = futures::stream::iter(0..100u64).map(|i| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            i
        });
        let out: Vec<u64> = in_order(futures, 10).collect().await;
        assert_eq!(out, (0..100).collect::<Vec<_>>());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(120),
            "{took:?}"
        );
    }

    /// A source that is not ready yet (as the fetch budget can be) is waited for,
    /// and the stream ends once it has ended and everything has been yielded.
    #[tokio::test]
    async fn waits_for_a_pending_source_and_ends_after_it() {
        let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1);
        let futures = futures::stream::unfold(rx, |mut rx| async move {
            let i = rx.recv().await?;
            Some((async move { i * 2 }, rx))
        });
        let feeder = tokio::spawn(async move {
            for i in 0..5 {
                tokio::time::sleep(Duration::from_millis(2)).await;
                tx.send(i).await.unwrap();
            }
        });
        let mut stream = in_order(futures, 3);
        let mut out = Vec::new();
        while let Some(x) = stream.next().await {
            out.push(x);
            assert!(stream.running() <= 3);
        }
        feeder.await.unwrap();
        assert_eq!(out, vec![0, 2, 4, 6, 8]);
        assert_eq!((stream.running(), stream.waiting()), (0, 0));
    }

    /// `limit` 0 is taken as 1: one at a time, still in order.
    #[tokio::test]
    async fn a_limit_of_zero_runs_one_at_a_time() {
        let out: Vec<u64> = in_order(futures::stream::iter(0..5u64).map(ready), 0)
            .collect()
            .await;
        assert_eq!(out, vec![0, 1, 2, 3, 4]);
    }
}
