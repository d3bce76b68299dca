//! The reader: a second thread, on a connection of its own, that answers reports (history,
//! sales) so that a report reading a million receipts does not make purchases queue behind it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};

use super::Envelope;
use super::replies::failed_all;
use crate::ledger::{Completed, LedgerError, LedgerStore, StoreFactory, now_ms};
use crate::panic_message::panic_message;

/// The thread that answers reports (history, sales) on a connection of its own, so that a report
/// reading a million receipts does not make purchases queue behind it.
pub(super) struct Reader {
    to_reader: Sender<Vec<Envelope>>,
    // A Mutex only to make the handle Sync (the game keeps it in a resource); `get_mut` never
    // locks.
    from_reader: Mutex<Receiver<Vec<Completed>>>,
    pub(super) in_flight: usize,
}

impl Reader {
    pub(super) fn spawn(open: StoreFactory) -> Self {
        let (to_reader, requests) = mpsc::channel::<Vec<Envelope>>();
        let (answers, from_reader) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("marketplace-ledger-reader".into())
            .spawn(move || run_reader(open, requests, answers));
        if let Err(error) = spawned {
            // The requests sent to it will be answered as failed by `send`.
            tracing::error!("the OS refused to start the ledger reader thread: {error}");
        }
        Self {
            to_reader,
            from_reader: Mutex::new(from_reader),
            in_flight: 0,
        }
    }

    pub(super) fn send(&mut self, reports: Vec<Envelope>, failed: &mut Vec<Completed>) {
        let n = reports.len();
        match self.to_reader.send(reports) {
            Ok(()) => self.in_flight += n,
            Err(mpsc::SendError(reports)) => failed.extend(failed_all(
                reports,
                LedgerError::Unavailable("the ledger reader thread stopped".into()),
            )),
        }
    }

    pub(super) fn poll(&mut self, on_batch: &mut impl FnMut(Vec<Completed>)) {
        let from_reader = self
            .from_reader
            .get_mut()
            .unwrap_or_else(|e| e.into_inner());
        while let Ok(done) = from_reader.try_recv() {
            self.in_flight -= done.len();
            on_batch(done);
        }
    }
}

/// Answers each report in a transaction of its own. The connection is opened at the first report
/// and again after any failure; a panic fails only its report.
fn run_reader(
    open: StoreFactory,
    requests: Receiver<Vec<Envelope>>,
    answers: Sender<Vec<Completed>>,
) {
    let mut store: Option<Box<dyn LedgerStore>> = None;
    for batch in requests {
        let mut done = Vec::with_capacity(batch.len());
        for Envelope { seq, request } in batch {
            let result = catch_unwind(AssertUnwindSafe(|| {
                let store = match &mut store {
                    Some(store) => store,
                    None => store.insert(open()?),
                };
                store.read(&request, now_ms())
            }))
            .unwrap_or_else(|payload| {
                Err(LedgerError::Storage(format!(
                    "the ledger store panicked reading a report: {}",
                    panic_message(&*payload)
                )))
            });
            if result.is_err() {
                store = None;
            }
            done.push(Completed::new(request, result, seq));
        }
        if answers.send(done).is_err() {
            return;
        }
    }
}
