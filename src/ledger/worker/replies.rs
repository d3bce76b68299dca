//! Answers as the game receives them: a batch paired with its replies, or failed, and cut into
//! chunks.

use std::sync::mpsc::{Receiver, Sender};

use super::{Envelope, FromWorker};
use crate::ledger::{Completed, LedgerError, LedgerReply};

/// Answers per chunk sent to the game thread: 128 × ~250 bytes stays under the size at which
/// glibc's `free` starts consolidating or unmapping (64 KiB), which took ~0.75 ms for one
/// 10,000-answer buffer.
pub(crate) const ANSWER_CHUNK: usize = 128;

/// Pairs a batch with its replies, or answers it all with the error.
pub(super) fn answer(
    batch: Vec<Envelope>,
    replies: Result<Vec<LedgerReply>, LedgerError>,
) -> Vec<Completed> {
    match replies {
        Ok(replies) => batch
            .into_iter()
            .zip(replies)
            .map(|(Envelope { seq, request }, reply)| Completed::new(request, Ok(reply), seq))
            .collect(),
        Err(error) => failed_all(batch, error),
    }
}

/// Answers in chunks of at most [`ANSWER_CHUNK`].
pub(super) fn chunked(done: Vec<Completed>) -> Vec<Vec<Completed>> {
    let mut chunks = Vec::with_capacity(done.len().div_ceil(ANSWER_CHUNK));
    let mut done = done.into_iter().peekable();
    while done.peek().is_some() {
        chunks.push(done.by_ref().take(ANSWER_CHUNK).collect());
    }
    chunks
}

/// Every request of `batch` answered with `error`.
pub(super) fn failed_all(batch: Vec<Envelope>, error: LedgerError) -> Vec<Completed> {
    batch
        .into_iter()
        .map(|Envelope { seq, request }| Completed::new(request, Err(error.clone()), seq))
        .collect()
}

/// The store cannot be opened: say so, then keep answering with the error so nothing waits
/// forever on a request.
pub(super) fn answer_failed(
    error: LedgerError,
    requests: Receiver<Vec<Envelope>>,
    answers: Sender<FromWorker>,
) {
    let _ = answers.send(FromWorker::OpenFailed(error.clone()));
    for batch in requests {
        let done = failed_all(batch, LedgerError::Unavailable(error.to_string()));
        if answers.send(done_message(done)).is_err() {
            return;
        }
    }
}

pub(super) fn done_message(done: Vec<Completed>) -> FromWorker {
    FromWorker::Done(chunked(done))
}
