//! Group commit: callers hand in one item each and wait for its answer,
//! while a few writer tasks turn whatever has piled up into one statement.
//! Under load a batch fills while the previous one is in flight, so
//! throughput grows with load; when idle, a lone item is written at once,
//! without waiting for company.
//!
//! Under steady load, each statement costs Postgres about as much to plan,
//! start and commit as a few dozen rows cost to write, so a writer whose
//! previous batch had company waits up to a *linger* (a millisecond or two)
//! for more before it writes: fewer, fuller statements, for a bounded
//! latency that only loaded moments pay.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, oneshot};

use crate::StoreError;

type Request<T, R> = (T, oneshot::Sender<Result<R, StoreError>>);

/// Sends items to the writers. Dropping every `Batcher` stops them once
/// the queue is empty.
pub struct Batcher<T, R> {
    sender: mpsc::Sender<Request<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

impl<T, R> std::fmt::Debug for Batcher<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts `writers` tasks, each writing up to `max_batch` items at a
    /// time with `write`, which must answer one result per item, in order.
    /// A writer whose last batch held more than one item waits up to
    /// `linger` for a batch to fill (zero: never).
    pub fn spawn<F, Fut>(writers: usize, max_batch: usize, linger: Duration, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<R>, StoreError>> + Send,
    {
        let (sender, receiver) = mpsc::channel::<Request<T, R>>(max_batch * writers * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        let write = Arc::new(write);
        for _ in 0..writers.max(1) {
            let receiver = Arc::clone(&receiver);
            let write = Arc::clone(&write);
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(max_batch);
                let mut loaded = false;
                loop {
                    {
                        let mut receiver = receiver.lock().await;
                        if receiver.recv_many(&mut batch, max_batch).await == 0 {
                            return;
                        }
                        if loaded && !linger.is_zero() {
                            let until = tokio::time::Instant::now() + linger;
                            while batch.len() < max_batch {
                                let more = max_batch - batch.len();
                                match tokio::time::timeout_at(until, receiver.recv_many(&mut batch, more)).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(_) => {}
                                }
                            }
                        }
                    }
                    loaded = batch.len() > 1;
                    let (items, replies): (Vec<T>, Vec<_>) = batch.drain(..).unzip();
                    let count = items.len();
                    let started = std::time::Instant::now();
                    let written = write(items).await;
                    tracing::trace!(
                        count,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "batch written"
                    );
                    match written {
                        Ok(results) if results.len() == count => {
                            for (reply, result) in replies.into_iter().zip(results) {
                                let _ = reply.send(Ok(result));
                            }
                        }
                        Ok(results) => {
                            let message = format!("batch of {count} answered {} results", results.len());
                            for reply in replies {
                                let _ = reply.send(Err(StoreError::BatchFailed(message.clone())));
                            }
                        }
                        Err(error) => {
                            let shared = error.to_string();
                            let unavailable = error.is_unavailable();
                            tracing::warn!(%error, count, "batched write failed");
                            for reply in replies {
                                let _ = reply.send(Err(if unavailable {
                                    StoreError::WriterStopped
                                } else {
                                    StoreError::BatchFailed(shared.clone())
                                }));
                            }
                        }
                    }
                }
            });
        }
        Self { sender }
    }

    /// Queues `item` and waits until its batch is written.
    pub async fn submit(&self, item: T) -> Result<R, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((item, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A batcher whose writer records each batch's size.
    fn recording(max_batch: usize, linger: Duration) -> (Batcher<u32, u32>, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher = Batcher::spawn(1, max_batch, linger, move |items: Vec<u32>| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().map_err(|_| StoreError::WriterStopped)?.push(items.len());
                Ok(items.into_iter().map(|i| i * 10).collect())
            }
        });
        (batcher, sizes)
    }

    #[tokio::test]
    async fn a_lone_item_on_an_idle_batcher_is_written_at_once_whatever_the_linger() {
        let (batcher, sizes) = recording(8, Duration::from_secs(3600));
        for i in 0..3 {
            let answer = tokio::time::timeout(Duration::from_secs(10), batcher.submit(i)).await;
            assert_eq!(answer.expect("written without lingering").expect("written"), i * 10);
        }
        assert_eq!(*sizes.lock().expect("sizes"), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn a_full_batch_is_written_without_waiting_out_the_linger() {
        let (batcher, sizes) = recording(2, Duration::from_secs(3600));
        // Two at once: one batch of two, after which the writer lingers.
        let (a, b) = tokio::join!(batcher.submit(1), batcher.submit(2));
        assert_eq!((a.expect("a"), b.expect("b")), (10, 20));
        // The next two fill the batch, which ends the linger.
        let (c, d) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(batcher.submit(3), batcher.submit(4))
        })
        .await
        .expect("a full batch is written at once");
        assert_eq!((c.expect("c"), d.expect("d")), (30, 40));
        assert_eq!(*sizes.lock().expect("sizes"), vec![2, 2]);
    }
}
