//! The ledger: the durable record of balances, receipts, persisted player state.
//!
//! The game never touches storage directly. Systems queue requests ([`LedgerCall`]s) on the plugin's
//! `Ledger` resource; a storage worker thread that owns the connection drains everything queued, applies
//! it in **one transaction** (group commit) and sends the answers back; the plugin polls them each
//! frame. The main thread never waits on disk or network.
//!
//! A backend implements [`LedgerStore`]: a synchronous, transactional store driven by the worker.
//! The three built in — [`InMemoryLedger`], [`SqliteLedger`] and [`PostgresLedger`] — share one
//! set of rules for every decision (who may take, renew and release a session lease; when a charge
//! debits, replays or is refused; which receipts a save grants; how far a balance may go): each
//! is only storage around them, and a test holds all three to the same answers.
//!
//! Only the plugin talks to its worker (its [`Ledger`](crate::Ledger) resource sends and polls
//! inside the crate): games use
//! [`MarketplaceService`](crate::MarketplaceService), and tools and tests may drive a store
//! directly, where every charge and save must show the session lease it writes under
//! ([`LeaseFence`]).

mod backend;
mod changes;
mod credit;
#[cfg(feature = "testing")]
mod faults;
mod history;
mod integrity;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod protocol;
mod records;
mod refund;
mod reports;
mod rules;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
mod worker;

pub use crate::text::InvalidText;
pub(crate) use crate::text::keepable;
pub use backend::LedgerBackend;
pub use changes::{CHANGES_ANSWERED, CHANGES_KEPT, ChangeFeed, ReadChanges};
pub use credit::{
    CreditError, CreditOutcome, CreditRecord, CreditRequest, CreditReversal, ReversalOutcome,
};
#[cfg(feature = "testing")]
pub use faults::{FaultPlan, FaultyStore};
pub use history::{HISTORY_PAGE_SIZE, HistoryCursor, HistoryEntry, HistoryFilter, HistoryPage};
pub use integrity::IntegrityReport;
pub use memory::InMemoryLedger;
#[cfg(feature = "postgres")]
pub use postgres::{LeaseClock, PG_SCHEMA_VERSION, PostgresLedger, PostgresOptions};
pub use protocol::{
    AdjustBalance, AdjustReply, Audit, ChargeReply, ChargeRequest, HistoryRequest, LedgerCall,
    LedgerReply, LedgerRequest, OpenSession, OpenSessionReply, OpenedSession, PlayerReading,
    ReadPlayer, ReleaseSession, ReverseCredit, SaveReply, SaveRequest,
};
pub(crate) use protocol::{Answer, Completed};
pub(crate) use records::purchase_debits;
pub(crate) use records::utc;
pub use records::{
    JournalEntry, JournalKind, LeaseFence, LeaseRecord, LedgerAudit, PlayerSnapshot, StoredReceipt,
};
pub use refund::{Clawback, RefundError, RefundOutcome, RefundRecord, RefundRequest};
pub use reports::{SALES_CSV_HEADER, SalesBucket, SalesQuery, SalesRow, sales_csv};
pub use rules::MAX_BALANCE;
#[cfg(feature = "sqlite")]
pub use sqlite::{SCHEMA_VERSION, SqliteLedger};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use store::only_reply;
pub use store::{LedgerError, LedgerStore, StoreFactory, call, read, transact};
pub(crate) use store::{now_ms, transact_timed};
#[cfg(test)]
pub(crate) use worker::ANSWER_CHUNK;
pub(crate) use worker::Worker;
pub use worker::{DEFAULT_MAX_BATCH, LedgerStatus, WorkerLoad};

pub use crate::ids::ServerId;
