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
                    match write(items).await {
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
