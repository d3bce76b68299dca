//! The ledger: the durable record of balances, receipts, persisted player state.
//!
//! The game never touches storage directly. Systems queue [`LedgerRequest`]s on the [`Ledger`]
//! resource; a storage worker thread that owns the connection drains everything queued, applies
//! it in **one transaction** (group commit) and sends the answers back; the plugin polls them each
//! frame. The main thread never waits on disk or network.
//!
//! A backend implements [`LedgerStore`]: a synchronous, transactional store driven by the worker.
//! The three built in — [`InMemoryLedger`], [`SqliteLedger`] and [`PostgresLedger`] — share one
//! set of rules for every decision (who may take, renew and release a session lease; when a charge
//! debits, replays or is refused; which receipts a save grants; how far a balance may go): each
//! is only storage around them, and a test holds all three to the same answers.
//!
//! Only the plugin talks to its worker ([`Ledger`] sends and polls inside the crate): games use
//! [`MarketplaceService`](crate::MarketplaceService), and tools and tests may drive a store
//! directly, where every charge and save must show the session lease it writes under
//! ([`LeaseFence`]).

mod credit;
mod faults;
mod integrity;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod refund;
mod reports;
mod rules;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
#[cfg(feature = "sqlite")]
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use credit::{
    CreditError, CreditFailure, CreditFinished, CreditOutcome, CreditRecord, CreditRequest,
    CreditReversal, CreditReversalFinished, ReversalOutcome,
};
pub use faults::{FaultPlan, FaultyStore};
pub use integrity::IntegrityReport;
pub use memory::InMemoryLedger;
#[cfg(feature = "postgres")]
pub use postgres::{LeaseClock, PG_SCHEMA_VERSION, PostgresLedger, PostgresOptions};
pub use refund::{
    Clawback, ReceiptRefunded, RefundError, RefundFailure, RefundFinished, RefundOutcome,
    RefundRecord, RefundRequest,
};
pub use reports::{
    HISTORY_PAGE_SIZE, HistoryCursor, HistoryEntry, HistoryFilter, HistoryPage,
    PurchaseHistoryReady, SALES_CSV_HEADER, SalesBucket, SalesQuery, SalesReportReady, SalesRow,
    sales_csv,
};
pub use rules::MAX_BALANCE;
#[cfg(feature = "sqlite")]
pub use sqlite::{SCHEMA_VERSION, SqliteLedger};
pub use worker::{DEFAULT_MAX_BATCH, Ledger, LedgerStatus, WorkerLoad};

pub use crate::ids::ServerId;
use crate::ids::{PlaceId, ProductId, PurchaseId, RequestId, UserId};
use crate::receipt::{ProductPurchaseChannel, ReceiptInfo, ReceiptState};

/// A player's persisted components: registered name → RON text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerSnapshot(pub BTreeMap<String, String>);

/// Proof that a server holds a player's session lease: the server's id and the lease's token.
///
/// Every time a session lease is taken its token grows, so a server that lost the lease — or a
/// stale process that shares its id — cannot write with the token it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFence {
    /// The lease holder.
    pub server: ServerId,
    /// The token [`LedgerReply::SessionOpened`] gave it.
    pub token: i64,
}

/// Charge a user for a product and create its receipt, atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Idempotency key: a second charge with this id returns the first receipt.
    pub request_id: RequestId,
    /// The buyer.
    pub user: UserId,
    /// The product.
    pub product_id: ProductId,
    /// Its name now, kept with the receipt for purchase history.
    pub product_name: String,
    /// Amount to debit (0 for test purchases).
    pub price: u64,
    /// Test purchase: free, flagged on the receipt.
    pub test_purchase: bool,
    /// Place of purchase.
    pub place_id: PlaceId,
    /// How it was bought.
    pub channel: ProductPurchaseChannel,
    /// Balance given to a user the ledger has never seen (before the debit).
    pub starting_balance: u64,
    /// The buyer's session lease, held by the charging game server: a server that lost the lease
    /// is refused ([`LedgerReply::LeaseLost`]) and takes no money. `None` for a purchase made
    /// outside any game server (a store page, a tool, a debug grant for a player who is away):
    /// its receipt is delivered by the player's session.
    pub fence: Option<LeaseFence>,
}

impl ChargeRequest {
    /// The receipt this charge creates.
    pub(crate) fn new_receipt(&self) -> ReceiptInfo {
        ReceiptInfo {
            purchase_id: PurchaseId::of_request(self.request_id),
            player_id: self.user,
            product_id: self.product_id,
            place_id_where_purchased: self.place_id,
            currency_spent: self.price,
            currency_type: crate::receipt::CurrencyType::Premium,
            product_purchase_channel: self.channel,
            is_test_purchase: self.test_purchase,
        }
    }
}

/// Save a player's persisted state, marking receipts granted in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveRequest {
    /// Whose state.
    pub user: UserId,
    /// The lease held by the server doing the save.
    pub fence: LeaseFence,
    /// The persisted components now.
    pub state: PlayerSnapshot,
    /// Receipts granted in memory whose effects `state` includes.
    pub granted: Vec<PurchaseId>,
    /// Refunded receipts whose clawback this save settles: [`Clawback::Done`] when the refund
    /// handler's changes are in `state`, [`Clawback::Kept`] when the product has no refund handler.
    pub settled: Vec<(PurchaseId, Clawback)>,
    /// Release the session lease (the player left).
    pub release: bool,
    /// New lease length in milliseconds, counted from the save.
    pub lease_ms: i64,
}

/// One request to the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerRequest {
    /// A player joined: take their session lease and load balance, persisted state and pending receipts.
    OpenSession {
        /// The player.
        user: UserId,
        /// This server.
        server: ServerId,
        /// Lease length in milliseconds.
        lease_ms: i64,
        /// Balance given to a user the ledger has never seen.
        starting_balance: u64,
    },
    /// The player left before their session finished opening: release the lease if we hold it.
    ReleaseSession {
        /// The player.
        user: UserId,
        /// This server.
        server: ServerId,
        /// The lease's token, when known; `None` releases whichever lease this server holds.
        token: Option<i64>,
    },
    /// Debit and create a receipt.
    Charge(ChargeRequest),
    /// Persist state and grants.
    Save(SaveRequest),
    /// Credit (or debit, if negative) premium currency outside a purchase.
    AdjustBalance {
        /// Whose balance.
        user: UserId,
        /// Signed amount.
        delta: i64,
        /// Why, kept in the balance journal.
        reason: String,
        /// Balance given to a user the ledger has never seen (before the adjustment).
        starting_balance: u64,
    },
    /// Refund a purchase: the currency goes back to the buyer; a granted purchase's effect is
    /// taken back by its refund handler on the buyer's server.
    Refund(RefundRequest),
    /// Credit premium currency bought through a store, once per `(source, order_id)`.
    Credit(CreditRequest),
    /// The store refunded a top-up: take its currency back (never below zero; the rest becomes
    /// the account's shortfall). Reversing an order twice changes nothing the second time.
    ReverseCredit {
        /// The store.
        source: String,
        /// The store's order id.
        order_id: String,
    },
    /// Re-read a user's pending receipts, pending clawbacks and balance (after an uncertain
    /// charge, and periodically, so changes made outside this game reach it).
    PendingReceipts {
        /// Whose.
        user: UserId,
    },
    /// Read everything, for audits, tests and the debug panel.
    Audit,
    /// A page of a player's purchase history, newest first.
    History {
        /// Whose.
        user: UserId,
        /// Which purchases.
        filter: HistoryFilter,
        /// Which page, from 0 ([`HISTORY_PAGE_SIZE`] entries each). With `after` it only
        /// numbers the page.
        page: u32,
        /// Start right after this purchase (the last of the page before) instead of skipping
        /// `page` pages: a deep page then costs what the first does.
        after: Option<HistoryCursor>,
    },
    /// Sales per product per day or hour.
    Sales(SalesQuery),
}

impl LedgerRequest {
    /// The user this request is about, if any.
    pub fn user(&self) -> Option<UserId> {
        match self {
            Self::OpenSession { user, .. }
            | Self::ReleaseSession { user, .. }
            | Self::AdjustBalance { user, .. }
            | Self::PendingReceipts { user }
            | Self::History { user, .. } => Some(*user),
            Self::Charge(c) => Some(c.user),
            Self::Credit(c) => Some(c.user),
            Self::Save(s) => Some(s.user),
            // Known once the receipt or the order is read.
            Self::Refund(_) | Self::ReverseCredit { .. } => None,
            Self::Audit | Self::Sales(_) => None,
        }
    }

    /// A report for the people who run the game (purchase history, sales): it only reads, may
    /// read much, and is answered by the ledger's reader when the store has one.
    pub(crate) fn is_report(&self) -> bool {
        matches!(self, Self::History { .. } | Self::Sales(_))
    }

    /// Whether the request reads the stored ledger as a whole rather than rows a batch can gather
    /// up front (audits, history, sales).
    #[cfg(feature = "postgres")]
    pub(crate) fn reads_ledger(&self) -> bool {
        matches!(self, Self::Audit | Self::History { .. } | Self::Sales(_))
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerReply {
    /// The session is ours; here is the player's stored data.
    SessionOpened {
        /// Premium balance.
        balance: u64,
        /// Persisted components (empty for a new user).
        state: PlayerSnapshot,
        /// Receipts not yet granted.
        pending: Vec<ReceiptInfo>,
        /// Refunded receipts whose effect is still to be taken back.
        clawbacks: Vec<ReceiptInfo>,
        /// Currency owed from reversed top-ups the balance could not cover.
        shortfall: u64,
        /// The new lease's token: saves and charges must carry it.
        lease_token: i64,
    },
    /// Another server holds the player's lease.
    SessionBusy {
        /// The holder.
        owner: String,
        /// When its lease ends (ms since the Unix epoch).
        expires_at_ms: i64,
    },
    /// The lease was released (or was not ours).
    Released,
    /// Charged; the receipt exists.
    Charged {
        /// The receipt.
        receipt: ReceiptInfo,
        /// Balance after the debit.
        balance: u64,
        /// `true` if this request id had already charged (nothing was debited now).
        replayed: bool,
    },
    /// Not enough premium currency; nothing changed.
    InsufficientFunds {
        /// Balance now.
        balance: u64,
        /// Price asked.
        price: u64,
    },
    /// Saved; the listed receipts are granted.
    Saved {
        /// Receipts this save moved from pending to granted.
        newly_granted: Vec<PurchaseId>,
        /// Refunds whose clawback this save settled.
        newly_settled: Vec<PurchaseId>,
        /// Receipts the save granted that had been refunded meanwhile: their effect is now
        /// committed, so it must be taken back.
        clawbacks_due: Vec<ReceiptInfo>,
    },
    /// This server no longer holds the player's lease; nothing was written.
    LeaseLost {
        /// The holder now, if any.
        owner: Option<String>,
    },
    /// Balance changed.
    BalanceAdjusted {
        /// Balance now.
        balance: u64,
    },
    /// The balance cannot go below zero; nothing changed.
    BalanceTooLow {
        /// Balance now.
        balance: u64,
    },
    /// The balance cannot go above [`MAX_BALANCE`]; nothing changed.
    BalanceTooHigh {
        /// Balance now.
        balance: u64,
    },
    /// Pending receipts of a user.
    PendingReceipts {
        /// The receipts.
        receipts: Vec<ReceiptInfo>,
        /// Refunded receipts whose effect is still to be taken back.
        clawbacks: Vec<ReceiptInfo>,
        /// Balance now (0 for a user the ledger has never seen).
        balance: u64,
        /// Shortfall now.
        shortfall: u64,
    },
    /// Refunded: the currency is back.
    Refunded {
        /// The receipt.
        receipt: ReceiptInfo,
        /// The buyer's balance now.
        balance: u64,
        /// What becomes of its effect.
        clawback: Clawback,
    },
    /// The refund was refused; nothing changed.
    RefundRefused(RefundError),
    /// The top-up is credited (now, or by an earlier attempt).
    Credited {
        /// Whose wallet.
        user: UserId,
        /// Balance now.
        balance: u64,
        /// Shortfall now (a credit pays a shortfall first).
        shortfall: u64,
        /// An earlier attempt credited it; nothing changed now.
        already_credited: bool,
    },
    /// The top-up is reversed (now, or by an earlier attempt).
    CreditReversed {
        /// The order, with its reversal.
        record: CreditRecord,
        /// The user's balance now.
        balance: u64,
        /// The user's shortfall now.
        shortfall: u64,
        /// An earlier attempt reversed it; nothing changed now.
        already_reversed: bool,
    },
    /// The top-up or reversal was refused; nothing changed.
    CreditRefused(CreditError),
    /// Everything in the ledger.
    Audit(LedgerAudit),
    /// A page of purchase history.
    History(HistoryPage),
    /// Sales rows, by bucket then product.
    Sales(Vec<SalesRow>),
}

/// A receipt with its ledger state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The receipt.
    pub info: ReceiptInfo,
    /// Its state.
    pub state: ReceiptState,
    /// The charge request that created it.
    pub request_id: RequestId,
    /// The product's name when it was bought.
    pub product_name: String,
    /// When it was bought (Unix ms).
    pub purchased_at_ms: i64,
    /// When it was granted (Unix ms), if it was.
    pub granted_at_ms: Option<i64>,
    /// How it was refunded, if it was.
    pub refund: Option<RefundRecord>,
}

impl StoredReceipt {
    /// The receipt as a purchase-history entry.
    pub fn history_entry(&self) -> HistoryEntry {
        HistoryEntry {
            receipt: self.info.clone(),
            state: self.state,
            product_name: self.product_name.clone(),
            purchased_at_ms: self.purchased_at_ms,
            granted_at_ms: self.granted_at_ms,
            refund: self.refund.clone(),
        }
    }
}

/// A user's session lease as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder, if any.
    pub owner: Option<String>,
    /// When the lease ends (Unix ms), if held.
    pub expires_at_ms: Option<i64>,
    /// The token of the newest lease taken (0: never taken).
    pub token: i64,
}

/// One change of a balance, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalEntry {
    /// Whose balance.
    pub user: UserId,
    /// Signed change.
    pub delta: i64,
    /// `"purchase"`, or the reason given to an adjustment.
    pub reason: String,
    /// The receipt of a purchase.
    pub purchase_id: Option<PurchaseId>,
}

/// A full read of the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerAudit {
    /// Every receipt.
    pub receipts: Vec<StoredReceipt>,
    /// Every account: balance and persisted state.
    pub accounts: BTreeMap<UserId, (u64, PlayerSnapshot)>,
    /// Every account's session lease.
    pub leases: BTreeMap<UserId, LeaseRecord>,
    /// Every balance change, in the order made.
    pub journal: Vec<JournalEntry>,
    /// Accounts owing currency from reversed top-ups (only those owing).
    pub shortfalls: BTreeMap<UserId, u64>,
    /// Every store top-up, by source and order id.
    pub credits: Vec<CreditRecord>,
    /// Sum of all purchase debits.
    pub purchase_debits: u64,
}

impl LedgerAudit {
    /// Receipts in a state.
    pub fn count(&self, state: ReceiptState) -> usize {
        self.receipts.iter().filter(|r| r.state == state).count()
    }

    /// Σ `currency_spent` over all receipts.
    pub fn receipt_total(&self) -> u64 {
        self.receipts.iter().map(|r| r.info.currency_spent).sum()
    }
}

/// A request and its outcome, as the worker hands it back.
#[derive(Debug)]
pub struct LedgerCompletion {
    /// The request, returned to its sender.
    pub request: LedgerRequest,
    /// What happened.
    pub result: Result<LedgerReply, LedgerError>,
}

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
/// `apply` returns `Ok` with a refusal reply (for example [`LedgerReply::InsufficientFunds`]) for
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

/// Which ledger the plugin uses.
#[derive(Clone)]
pub enum LedgerBackend {
    /// Kept in memory only: for tests and throwaway demos.
    InMemory(InMemoryLedger),
    /// An embedded SQLite file (WAL, full sync), created if missing, for one game process: the
    /// plugin opens it with [`SqliteLedger::open_exclusive`], which locks `<file>.lock` beside it
    /// for as long as the game runs and refuses a second game process
    /// ([`LedgerError::InUse`]). In return a game restarted after a crash takes its players back
    /// at once instead of waiting for their session leases to expire.
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by many game servers, with per-player session leases: where
    /// it is and how long to wait for it.
    #[cfg(feature = "postgres")]
    Postgres(PostgresOptions),
    /// Any store: the factory runs on the worker thread.
    Custom(StoreFactory),
}

impl LedgerBackend {
    /// An in-memory ledger with a fresh store.
    pub fn in_memory() -> Self {
        Self::InMemory(InMemoryLedger::default())
    }

    /// An SQLite ledger at `path`.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite(path.into())
    }

    /// A PostgreSQL ledger at `url`, e.g. `"host=127.0.0.1 port=5432 user=postgres dbname=game"`
    /// or `"postgres://postgres@127.0.0.1/game"` (no TLS).
    #[cfg(feature = "postgres")]
    pub fn postgres(url: impl Into<String>) -> Self {
        Self::Postgres(PostgresOptions::new(url))
    }

    /// A custom store.
    pub fn custom<S: LedgerStore>(
        open: impl Fn() -> Result<S, LedgerError> + Send + Sync + 'static,
    ) -> Self {
        Self::Custom(store_factory(open))
    }

    /// Opens the store on the worker thread; `server` is the game's id, which an SQLite ledger
    /// writes into its lock file.
    pub(crate) fn factory(&self, server: &ServerId) -> StoreFactory {
        #[cfg(not(feature = "sqlite"))]
        let _ = server;
        match self {
            Self::InMemory(store) => {
                let store = store.clone();
                store_factory(move || Ok(store.clone()))
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let (path, server) = (path.clone(), server.clone());
                store_factory(move || SqliteLedger::open_exclusive(&path, &server))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => {
                let options = options.clone();
                store_factory(move || PostgresLedger::connect(options.clone()))
            }
            Self::Custom(f) => f.clone(),
        }
    }

    /// Opens a second connection to the same store for reports (history, sales), so that a
    /// report over a large ledger never holds purchases up. Only stores that several connections
    /// can share have one: an SQLite file (WAL lets it read while the game writes; the game
    /// holds the file's lock, so the reader opens it without) and PostgreSQL.
    pub(crate) fn reader_factory(&self) -> Option<StoreFactory> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let path = path.clone();
                Some(store_factory(move || SqliteLedger::open(&path)))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => {
                let options = options.clone();
                Some(store_factory(move || {
                    PostgresLedger::connect(options.clone())
                }))
            }
            _ => None,
        }
    }
}

/// A [`StoreFactory`] from a function that opens one kind of store.
fn store_factory<S: LedgerStore>(
    open: impl Fn() -> Result<S, LedgerError> + Send + Sync + 'static,
) -> StoreFactory {
    Arc::new(move || open().map(|s| Box::new(s) as Box<dyn LedgerStore>))
}

impl Default for LedgerBackend {
    fn default() -> Self {
        #[cfg(feature = "sqlite")]
        {
            Self::Sqlite(PathBuf::from("marketplace.sqlite3"))
        }
        #[cfg(not(feature = "sqlite"))]
        {
            Self::in_memory()
        }
    }
}

impl fmt::Debug for LedgerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InMemory(_) => f.write_str("InMemory"),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => write!(f, "Postgres({})", postgres::redact(&options.url)),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}

/// Σ of purchase debits in a journal.
pub(crate) fn purchase_debits(journal: &[JournalEntry]) -> u64 {
    journal
        .iter()
        .filter(|e| e.reason == "purchase")
        .map(|e| e.delta.unsigned_abs())
        .sum()
}

/// Current wall-clock time in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
