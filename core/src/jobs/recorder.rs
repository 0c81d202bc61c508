//! Records the ends of runs off the scheduler's task, many at a time: ends that arrive while a
//! write runs are written together by the next one (a minute's tick of thousands of runs is a
//! handful of transactions, not one each).

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::runs::Run;
use crate::store::jobs::JobStore;

/// Most runs one write carries.
const BATCH: usize = 2000;

enum Item {
    Run(Box<Run>),
    Flush(oneshot::Sender<()>),
}

/// The recorder's handle.
pub(super) struct Recorder {
    tx: mpsc::UnboundedSender<Item>,
}

impl Recorder {
    /// Starts the recorder's task on `store`.
    pub(super) fn start(store: Arc<dyn JobStore>) -> Recorder {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = Vec::new();
                let mut flushed = Vec::new();
                let mut next = Some(first);
                while let Some(item) = next {
                    match item {
                        Item::Run(r) => batch.push(*r),
                        Item::Flush(done) => flushed.push(done),
                    }
                    next = if batch.len() < BATCH {
                        rx.try_recv().ok()
                    } else {
                        None
                    };
                }
                if !batch.is_empty() {
                    let store = store.clone();
                    let n = batch.len();
                    let written = tokio::task::spawn_blocking(move || store.update(&batch)).await;
                    match written {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(runs = n, error = %e, "jobs: cannot record the ends of runs")
                        }
                        Err(e) => {
                            tracing::warn!(runs = n, error = %e, "jobs: cannot record the ends of runs")
                        }
                    }
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Recorder { tx }
    }

    /// Records a run's end (soon).
    pub(super) fn record(&self, run: Run) {
        let _ = self.tx.send(Item::Run(Box::new(run)));
    }

    /// Waits until every end recorded so far is written.
    pub(super) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}
