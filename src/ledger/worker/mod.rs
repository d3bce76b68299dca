//! The storage worker: a thread that owns the store, applies every queued request of a batch in
//! one transaction (group commit) and sends the answers back, typed. [`Worker`] is the game's
//! handle on it (the plugin keeps it in its `Ledger` resource); nothing here knows Bevy.

mod reader;
mod replies;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::panic_message::panic_message;

use reader::Reader;
#[cfg(test)]
pub(crate) use replies::ANSWER_CHUNK;
use replies::{answer, answer_failed, chunked, done_message, failed_all};

use super::{
    Completed, LedgerError, LedgerRequest, LedgerStore, StoreFactory, now_ms, transact_timed,
};

/// A request on its way to the store, with the number the game gave it: requests are applied in
/// that order, and an answer carries it back.
pub(crate) struct Envelope {
    pub(crate) seq: u64,
    pub(crate) request: LedgerRequest,
}

/// Most requests the worker puts in one transaction by default.
pub const DEFAULT_MAX_BATCH: usize = 8192;

enum FromWorker {
    Opened(String),
    OpenFailed(LedgerError),
    /// The store panicked: its transaction was answered with errors and it is being reopened.
    Restarting(String),
    /// A transaction failed (its requests are answered with the error and retried by the plugin).
    Failing(LedgerError),
    /// A transaction succeeded after failures.
    Recovered(String),
    /// One transaction's answers, typed on this thread and cut into chunks of
    /// [`ANSWER_CHUNK`](replies::ANSWER_CHUNK), so that freeing one on the game thread is never a
    /// large free.
    Done(Vec<Vec<Completed>>),
    /// A batch's buffer, emptied, for the game to queue requests in again: each side frees only
    /// what it allocated, as a large free from the other thread's heap made glibc merge that
    /// heap's small free blocks while the owner waited on its lock.
    Emptied(Vec<Envelope>),
}

/// Whether the ledger is usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerStatus {
    /// The worker is opening the store.
    Opening,
    /// Open; the string says where the data lives.
    Ready(String),
    /// The store panicked; the requests of its transaction were answered with errors and the
    /// worker is opening it again. Nothing is written meanwhile.
    Restarting(String),
    /// It could not be opened. Purchases fail with this error; nothing is written.
    Failed(LedgerError),
    /// Open, but its last transaction failed: the database did not answer in time, the
    /// connection dropped, the disk is full. The requests are retried; the status is
    /// [`LedgerStatus::Ready`] again after the first transaction that succeeds.
    Unavailable(LedgerError),
}

/// What the storage worker has done so far, counted on the worker thread.
#[derive(Default, Debug)]
struct WorkerCounters {
    busy_ns: AtomicU64,
    commit_ns: AtomicU64,
    requests: AtomicU64,
}

/// A snapshot of the storage worker's effort: where ledger time goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerLoad {
    /// Time spent running transactions (applying requests and committing).
    pub busy: Duration,
    /// The part of `busy` spent in `commit` (for SQLite with full sync: writing and fsync).
    pub committing: Duration,
    /// Requests applied.
    pub requests: u64,
}

/// The game's handle on its storage worker: it queues requests, sends them to the worker once a
/// frame and takes the answers without blocking.
pub(crate) struct Worker {
    /// Answers reports on a connection of its own, when the store can be opened twice.
    reader: Option<Reader>,
    outbox: Vec<Envelope>,
    /// Buffers the worker gave back, for the next outboxes.
    spare_outboxes: Vec<Vec<Envelope>>,
    /// The number the next request gets.
    next_seq: u64,
    to_worker: Option<Sender<Vec<Envelope>>>,
    // A Mutex only to make the handle Sync (the game keeps it in a resource); `get_mut` never
    // locks.
    from_worker: Mutex<Receiver<FromWorker>>,
    worker: Option<JoinHandle<()>>,
    in_flight: usize,
    status: LedgerStatus,
    failed: Vec<Completed>,
    /// Answers taken from the worker and not yet handed to the game, in chunks, oldest first.
    received: std::collections::VecDeque<Vec<Completed>>,
    /// The answers in `received`.
    received_len: usize,
    transactions: u64,
    counters: Arc<WorkerCounters>,
}

impl Worker {
    /// Starts a storage worker thread that opens the store with `open` and applies at most
    /// `max_batch` requests per transaction (1 turns group commit off: one transaction, and one
    /// fsync, per request).
    /// With `reader`, reports (history, sales) are answered by a second thread on a connection
    /// it opens with `reader`, once the store has opened.
    pub(crate) fn spawn(
        open: StoreFactory,
        reader: Option<StoreFactory>,
        max_batch: usize,
    ) -> Self {
        let max_batch = max_batch.max(1);
        let (to_worker, requests) = mpsc::channel::<Vec<Envelope>>();
        let (answers, from_worker) = mpsc::channel();
        let counters = Arc::new(WorkerCounters::default());
        let worker_counters = counters.clone();
        let worker = std::thread::Builder::new()
            .name("marketplace-ledger".into())
            .spawn(move || run_worker(open, requests, answers, max_batch, &worker_counters))
            .expect("the OS refused to start the ledger worker thread");
        Self {
            reader: reader.map(Reader::spawn),
            outbox: Vec::new(),
            spare_outboxes: Vec::new(),
            next_seq: 0,
            to_worker: Some(to_worker),
            from_worker: Mutex::new(from_worker),
            worker: Some(worker),
            in_flight: 0,
            status: LedgerStatus::Opening,
            failed: Vec::new(),
            received: Default::default(),
            received_len: 0,
            transactions: 0,
            counters,
        }
    }

    /// Queues a request until the next [`flush`](Self::flush); returns the number it is sent
    /// under (they grow in the order requests are queued, which is the order they are applied).
    pub(crate) fn send(&mut self, request: LedgerRequest) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.push(Envelope { seq, request });
        seq
    }

    /// How busy the storage worker has been since it started (cheap: three atomic loads).
    pub(crate) fn load(&self) -> WorkerLoad {
        let c = &self.counters;
        WorkerLoad {
            busy: Duration::from_nanos(c.busy_ns.load(Ordering::Relaxed)),
            committing: Duration::from_nanos(c.commit_ns.load(Ordering::Relaxed)),
            requests: c.requests.load(Ordering::Relaxed),
        }
    }

    /// Sends queued requests to the worker (the plugin calls this once a frame).
    pub(crate) fn flush(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let spare = self.spare_outboxes.pop().unwrap_or_default();
        let mut batch = std::mem::replace(&mut self.outbox, spare);
        // Reports go to the reader once the store has opened (and migrated) for the game.
        if let Some(reader) = &mut self.reader
            && matches!(
                self.status,
                LedgerStatus::Ready(_) | LedgerStatus::Unavailable(_)
            )
            && batch.iter().any(|e| e.request.is_report())
        {
            let (reports, rest): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|e| e.request.is_report());
            reader.send(reports, &mut self.failed);
            batch = rest;
            if batch.is_empty() {
                return;
            }
        }
        if let LedgerStatus::Failed(error) = &self.status {
            let error = LedgerError::Unavailable(error.to_string());
            self.failed.extend(failed_all(batch, error));
            return;
        }
        let n = batch.len();
        let unavailable = |why: &str| LedgerError::Unavailable(why.into());
        match &self.to_worker {
            Some(tx) => match tx.send(batch) {
                Ok(()) => self.in_flight += n,
                Err(mpsc::SendError(batch)) => self
                    .failed
                    .extend(failed_all(batch, unavailable("the worker thread stopped"))),
            },
            None => self
                .failed
                .extend(failed_all(batch, unavailable("the ledger is shut down"))),
        }
    }

    /// The oldest answers taken by [`poll`](Self::poll) and not handed out yet: a chunk of at
    /// most [`ANSWER_CHUNK`](replies::ANSWER_CHUNK). The game takes as many chunks a frame as it
    /// has room for, so one transaction of thousands of answers is not all moved in one frame.
    pub(crate) fn next_answers(&mut self) -> Option<Vec<Completed>> {
        let chunk = self.received.pop_front()?;
        self.received_len -= chunk.len();
        Some(chunk)
    }

    /// Takes every answer that has arrived, without waiting, for
    /// [`next_answers`](Self::next_answers).
    pub(crate) fn poll(&mut self) {
        let mut on_batch = |chunk: Vec<Completed>| {
            self.received_len += chunk.len();
            self.received.push_back(chunk);
        };
        if !self.failed.is_empty() {
            chunked(std::mem::take(&mut self.failed))
                .into_iter()
                .for_each(&mut on_batch);
        }
        let from_worker = self
            .from_worker
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            match from_worker.try_recv() {
                Ok(FromWorker::Opened(location)) => {
                    tracing::info!("marketplace ledger ready: {location}");
                    self.status = LedgerStatus::Ready(location);
                }
                Ok(FromWorker::Restarting(why)) => {
                    tracing::error!("marketplace ledger store failed and is reopening: {why}");
                    self.status = LedgerStatus::Restarting(why);
                }
                Ok(FromWorker::Failing(error)) => {
                    if !matches!(self.status, LedgerStatus::Unavailable(_)) {
                        tracing::error!(
                            "marketplace ledger unavailable, requests are retried: {error}"
                        );
                    }
                    self.status = LedgerStatus::Unavailable(error);
                }
                Ok(FromWorker::Recovered(location)) => {
                    tracing::info!("marketplace ledger available again: {location}");
                    self.status = LedgerStatus::Ready(location);
                }
                Ok(FromWorker::OpenFailed(error)) => {
                    tracing::error!("marketplace ledger unavailable, purchases will fail: {error}");
                    self.status = LedgerStatus::Failed(error);
                }
                Ok(FromWorker::Emptied(buffer)) => {
                    // Two are enough: one filling, one on its way.
                    if self.spare_outboxes.len() < 2 {
                        self.spare_outboxes.push(buffer);
                    }
                }
                Ok(FromWorker::Done(chunks)) => {
                    self.in_flight -= chunks.iter().map(Vec::len).sum::<usize>();
                    self.transactions += 1;
                    chunks.into_iter().for_each(&mut on_batch);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if self.to_worker.is_some() && !matches!(self.status, LedgerStatus::Failed(_)) {
                        let why = format!(
                            "the ledger worker thread stopped with {} request(s) unanswered",
                            self.in_flight
                        );
                        tracing::error!("marketplace ledger unavailable: {why}");
                        self.status = LedgerStatus::Failed(LedgerError::Unavailable(why));
                    }
                    self.in_flight = 0;
                    break;
                }
            }
        }
        if let Some(reader) = &mut self.reader {
            reader.poll(&mut |done| chunked(done).into_iter().for_each(&mut on_batch));
        }
    }

    /// Answers taken from the worker and not yet handed to the game.
    pub(crate) fn received(&self) -> usize {
        self.received_len
    }

    /// Requests sent to the worker and not yet answered, plus those still queued.
    pub(crate) fn in_flight(&self) -> usize {
        let reading = self.reader.as_ref().map_or(0, |r| r.in_flight);
        self.in_flight + reading + self.outbox.len() + self.failed.len() + self.received_len
    }

    /// Whether the store is open.
    pub(crate) fn status(&self) -> &LedgerStatus {
        &self.status
    }

    /// Transactions the worker has answered so far.
    pub(crate) fn transactions(&self) -> u64 {
        self.transactions
    }

    /// Sends what is queued, then waits for the worker to finish everything and stop.
    /// Dropping the `Ledger` does the same; this only blocks at shutdown.
    pub(crate) fn shutdown(&mut self) {
        self.flush();
        // The reader only reads: it is not waited for, and stops after the report it is on.
        self.reader = None;
        self.to_worker = None;
        if let Some(worker) = self.worker.take()
            && worker.join().is_err()
        {
            tracing::error!("marketplace ledger worker panicked");
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Opens the store and tells the game where it lives; a panic in the factory is an open error
/// like any other.
fn open_store(
    open: &StoreFactory,
    answers: &Sender<FromWorker>,
) -> Result<Box<dyn LedgerStore>, LedgerError> {
    let store = catch_unwind(AssertUnwindSafe(|| open())).unwrap_or_else(|payload| {
        Err(LedgerError::Unavailable(format!(
            "opening the ledger store panicked: {}",
            panic_message(&*payload)
        )))
    })?;
    let _ = answers.send(FromWorker::Opened(store.location()));
    Ok(store)
}

fn run_worker(
    open: StoreFactory,
    requests: Receiver<Vec<Envelope>>,
    answers: Sender<FromWorker>,
    max_batch: usize,
    counters: &WorkerCounters,
) {
    let mut store = match open_store(&open, &answers) {
        Ok(store) => store,
        Err(error) => return answer_failed(error, requests, answers),
    };
    let mut queued: std::collections::VecDeque<Envelope> = Default::default();
    let mut failing = false;
    loop {
        if queued.is_empty() {
            match requests.recv() {
                Ok(batch) => take_batch(&mut queued, batch, &answers),
                Err(_) => return,
            }
        }
        // Group commit: everything queued so far (up to the limit) goes into one transaction.
        let mut game_gone = false;
        while queued.len() < max_batch {
            match requests.try_recv() {
                Ok(more) => take_batch(&mut queued, more, &answers),
                Err(TryRecvError::Disconnected) => {
                    game_gone = true;
                    break;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        if game_gone && failing {
            // The game is exiting and the store is failing (a database that does not answer):
            // waiting out another deadline would only hold the exit up. Nothing is written.
            let why = LedgerError::Unavailable(
                "the game exited while the ledger was failing; not written".into(),
            );
            let _ = answers.send(done_message(failed_all(queued.drain(..).collect(), why)));
            return;
        }
        let take = queued.len().min(max_batch);
        let (seqs, batch): (Vec<u64>, Vec<LedgerRequest>) = queued
            .drain(..take)
            .map(|Envelope { seq, request }| (seq, request))
            .unzip();
        let started = Instant::now();
        let span = tracing::debug_span!(
            "ledger_transaction",
            requests = batch.len(),
            first_user = batch.first().and_then(|r| r.user()).map(|u| u.0)
        );
        let _in_transaction = span.enter();
        // A store that panics (a bug, an `expect` on a surprise) fails its transaction, not the
        // game: every request in it gets an error, and the store is opened afresh.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut committing = Duration::ZERO;
            let replies = transact_timed(store.as_mut(), &batch, now_ms(), &mut committing);
            counters
                .commit_ns
                .fetch_add(committing.as_nanos() as u64, Ordering::Relaxed);
            replies
        }));
        let batch: Vec<Envelope> = seqs
            .into_iter()
            .zip(batch)
            .map(|(seq, request)| Envelope { seq, request })
            .collect();
        let (done, panicked) = match outcome {
            Ok(replies) => {
                // Say when transactions start failing, and when they work again.
                let report = match &replies {
                    Err(error) => Some(FromWorker::Failing(error.clone())),
                    Ok(_) if failing => Some(FromWorker::Recovered(store.location())),
                    Ok(_) => None,
                };
                failing = replies.is_err();
                if let Some(report) = report {
                    let _ = answers.send(report);
                }
                (answer(batch, replies), None)
            }
            Err(payload) => {
                let why = format!(
                    "the ledger store panicked: {}; its transaction was rolled back",
                    panic_message(&*payload)
                );
                let _ = catch_unwind(AssertUnwindSafe(|| store.rollback()));
                (
                    failed_all(batch, LedgerError::Storage(why.clone())),
                    Some(why),
                )
            }
        };
        counters
            .busy_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        counters
            .requests
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        if answers.send(done_message(done)).is_err() {
            return;
        }
        if let Some(why) = panicked {
            tracing::error!("{why}; reopening the store");
            let _ = answers.send(FromWorker::Restarting(why));
            // Close the old store (its file lock, its connection) before opening a new one.
            drop(store);
            store = match open_store(&open, &answers) {
                Ok(store) => store,
                Err(error) => {
                    // Requests already queued are answered with the error too.
                    let unavailable = LedgerError::Unavailable(error.to_string());
                    let queued: Vec<_> = queued.drain(..).collect();
                    let _ = answers.send(done_message(failed_all(queued, unavailable)));
                    return answer_failed(error, requests, answers);
                }
            };
        }
    }
}

/// Queues a batch's requests and gives its buffer back to the game.
fn take_batch(
    queued: &mut std::collections::VecDeque<Envelope>,
    mut batch: Vec<Envelope>,
    answers: &Sender<FromWorker>,
) {
    queued.extend(batch.drain(..));
    let _ = answers.send(FromWorker::Emptied(batch));
}
