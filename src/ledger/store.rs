//! The contract between the storage worker and a store, and the one loop that runs a transaction
//! on a store, for the worker and for tools alike.
//!
//! # Writing a store
//!
//! A store keeps the ledger's rows; the crate's rules decide. The reference is
//! [`InMemoryLedger`](super::InMemoryLedger): a store must answer every request as it does, and
//! end with the same ledger (the crate's differential test holds the SQLite and PostgreSQL stores
//! to it). What a store must guarantee:
//!
//! - **Transactions.** Everything applied between [`begin`](LedgerStore::begin) and
//!   [`commit`](LedgerStore::commit) commits together or not at all; [`rollback`](LedgerStore::rollback)
//!   leaves no trace. A commit that returns `Ok` is durable. A commit whose outcome is unknown
//!   (the connection dropped after `COMMIT` was sent) returns `Err`: the plugin retries every
//!   request of it, and each request is idempotent (charges by request id, saves by receipt
//!   state, top-ups by store order), so nothing applies twice.
//! - **Isolation.** Requests see the effects of earlier requests of their transaction, and of every
//!   transaction committed before theirs began. Several games may use one store at once (the
//!   PostgreSQL store): then concurrent transactions must end as some serial order of them would
//!   (the crate's races test checks this) — lock what a decision reads.
//! - **Answers.** `apply` answers each request with the reply of its own kind
//!   ([`LedgerCall::Reply`]); a business refusal (not enough funds, a lost lease, a refunded
//!   receipt) is an `Ok` reply, and `Err` is only for storage failures. A store that answers a
//!   request with another kind's reply breaks the protocol: the plugin turns it into a storage
//!   error.
//! - **Text.** Text is kept exactly as given. Requests holding text the store cannot keep are
//!   refused by the rules before anything is read; a store must not send such text anywhere.
//! - **No panics for bad data.** A row the store cannot read is an error naming it, not a guess.
//!   (A panic fails its transaction and the store is opened again.)
//!
//! Wrapping a built-in store (to count, to fail on command as
//! [`FaultyStore`](super::FaultyStore) does with the `testing` feature) is the usual way to make a
//! custom one; give it to the plugin with [`LedgerBackend::custom`](super::LedgerBackend::custom).

use std::sync::Arc;

use super::{LedgerCall, LedgerReply, LedgerRequest};

/// A storage failure. Requests that fail are retried by the plugin; nothing committed is lost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The store could not be opened; the ledger is unavailable until restart.
    #[error("ledger {location} cannot be opened: {reason}")]
    Open {
        /// File or URL.
        location: String,
        /// Why.
        reason: String,
    },
    /// The store was written by a newer version of this crate.
    #[error(
        "ledger {location} has schema version {found}, newer than this build supports ({supported}); refusing to touch it"
    )]
    NewerSchema {
        /// File or URL.
        location: String,
        /// Version in the store.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// The file is not a ledger.
    #[error("{location} is not a bevy_marketplace ledger: {reason}; refusing to touch it")]
    NotALedger {
        /// File or URL.
        location: String,
        /// What gave it away.
        reason: String,
    },
    /// Another game process (or another app in this one) has the SQLite ledger open: one game
    /// process may use an SQLite ledger at a time.
    #[error(
        "ledger {location} is in use by {holder}; only one game process may use an SQLite ledger at a time — use the PostgreSQL ledger for several servers"
    )]
    InUse {
        /// The file.
        location: String,
        /// Who holds it, e.g. "another game process (pid 1234, host …, server id …, started …)".
        holder: String,
    },
    /// A transaction failed (I/O error, disk full, locked, connection lost); it was rolled back.
    #[error("ledger transaction failed: {0}")]
    Storage(String),
    /// The ledger is not available (failed to open, or shut down).
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
}

/// A synchronous, transactional ledger store, driven by the storage worker thread.
///
/// The worker calls [`begin`](Self::begin), then [`apply`](Self::apply) for every queued request,
/// then [`commit`](Self::commit) — or [`rollback`](Self::rollback) if anything returned `Err`.
/// `apply` returns `Ok` with a refusal reply (for example
/// [`ChargeReply::InsufficientFunds`](super::ChargeReply::InsufficientFunds)) for
/// business outcomes, and `Err` only for storage failures.
pub trait LedgerStore: Send + 'static {
    /// Where the data lives, for messages.
    fn location(&self) -> String;
    /// Starts a transaction.
    fn begin(&mut self) -> Result<(), LedgerError>;
    /// Applies one request inside the transaction. `now_ms` is wall-clock time (Unix ms).
    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError>;
    /// Applies a whole batch inside the transaction, for stores that do better than one request
    /// at a time (one round trip for many rows). Replies in batch order, with the same answers
    /// and the same effect as applying the requests one by one in that order. `None` (the default):
    /// the worker applies them one by one.
    fn apply_batch(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Option<Result<Vec<LedgerReply>, LedgerError>> {
        let _ = (batch, now_ms);
        None
    }
    /// Commits the transaction durably.
    fn commit(&mut self) -> Result<(), LedgerError>;
    /// Abandons the transaction.
    fn rollback(&mut self);
    /// Answers a request that only reads (a report, an audit) without holding writers up: by
    /// default in a transaction that is rolled back; SQLite reads outside any transaction.
    fn read(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        self.begin()?;
        let reply = self.apply(request, now_ms);
        self.rollback();
        reply
    }
}

/// Opens a store on the worker thread.
pub type StoreFactory =
    Arc<dyn Fn() -> Result<Box<dyn LedgerStore>, LedgerError> + Send + Sync + 'static>;

/// A [`StoreFactory`] from a function that opens one kind of store.
pub(crate) fn store_factory<S: LedgerStore>(
    open: impl Fn() -> Result<S, LedgerError> + Send + Sync + 'static,
) -> StoreFactory {
    Arc::new(move || open().map(|s| Box::new(s) as Box<dyn LedgerStore>))
}

/// Applies `batch` in one transaction at `now_ms`: every reply in batch order, or the error that
/// rolled it all back. This is how the storage worker runs its batches and how tools change a
/// ledger.
pub fn transact(
    store: &mut dyn LedgerStore,
    batch: &[LedgerRequest],
    now_ms: i64,
) -> Result<Vec<LedgerReply>, LedgerError> {
    let mut committing = std::time::Duration::ZERO;
    transact_timed(store, batch, now_ms, &mut committing)
}

/// [`transact`], adding the time spent in `commit` to `committing`.
pub(crate) fn transact_timed(
    store: &mut dyn LedgerStore,
    batch: &[LedgerRequest],
    now_ms: i64,
    committing: &mut std::time::Duration,
) -> Result<Vec<LedgerReply>, LedgerError> {
    store.begin()?;
    let replies = match store.apply_batch(batch, now_ms) {
        Some(Ok(replies)) if replies.len() == batch.len() => Ok(replies),
        Some(Ok(_)) => Err(LedgerError::Storage(
            "the store answered a batch incompletely".into(),
        )),
        Some(Err(error)) => Err(error),
        None => batch
            .iter()
            .map(|request| store.apply(request, now_ms))
            .collect(),
    };
    match replies {
        Ok(replies) => match timed(committing, || store.commit()) {
            Ok(()) => Ok(replies),
            Err(error) => {
                store.rollback();
                Err(error)
            }
        },
        Err(error) => {
            store.rollback();
            Err(error)
        }
    }
}

fn timed<T>(total: &mut std::time::Duration, f: impl FnOnce() -> T) -> T {
    let started = std::time::Instant::now();
    let out = f();
    *total += started.elapsed();
    out
}

/// Applies one call in a transaction of its own, now: a tool's change to a ledger games may be
/// using (an admin's refund, a store's web hook).
pub fn call<C: LedgerCall>(store: &mut dyn LedgerStore, call: C) -> Result<C::Reply, LedgerError> {
    let reply = only_reply(transact(store, &[call.into()], now_ms())?)?;
    unwrap_reply::<C>(reply)
}

/// The reply to a batch of one request.
pub(crate) fn only_reply(mut replies: Vec<LedgerReply>) -> Result<LedgerReply, LedgerError> {
    replies
        .pop()
        .ok_or_else(|| LedgerError::Storage("the store gave no answer".into()))
}

/// Asks one question that only reads (a report, an audit) without holding writers up.
pub fn read<C: LedgerCall>(store: &mut dyn LedgerStore, call: C) -> Result<C::Reply, LedgerError> {
    unwrap_reply::<C>(store.read(&call.into(), now_ms())?)
}

fn unwrap_reply<C: LedgerCall>(reply: LedgerReply) -> Result<C::Reply, LedgerError> {
    C::unwrap(reply).map_err(|other| {
        LedgerError::Storage(format!(
            "the store answered with a reply to another request: {other:?}"
        ))
    })
}

/// Current wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
