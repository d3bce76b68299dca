//! The embedded durable ledger: one SQLite file (WAL, `synchronous = FULL`) that the `sqlite3`
//! tool can open.
//!
//! One game process uses a ledger file at a time: the plugin opens it with
//! [`SqliteLedger::open_exclusive`], which holds a lock file beside it. Holding the lock, the store
//! knows that a session lease naming another server was left by a process that died, and takes it
//! over at once. [`SqliteLedger::open`] takes no lock and honours leases, for tools, audits and
//! tests that read the file while a game runs.

mod lock;
mod schema;

pub use schema::SCHEMA_VERSION;
use schema::{BUSY_TIMEOUT, check_file, migrate};

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::rules::{self, LeasePolicy, Notice};
use super::{
    LedgerAudit, LedgerError, LedgerReply, LedgerRequest, LedgerStore, ServerId, only_reply,
};
use crate::ids::{PlaceId, ProductId, PurchaseId, UserId};
use crate::receipt::{CurrencyType, ProductPurchaseChannel, ReceiptInfo};

/// The columns [`receipt_from_row`] reads, in order (a macro so queries are `concat!`ed constants).
macro_rules! receipt_columns {
    () => {
        "purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms"
    };
}

/// [`receipt_columns`], then the receipt's state, request id, product name, grant time and
/// refund (time, reason, clawback).
macro_rules! stored_columns {
    () => {
        concat!(
            receipt_columns!(),
            ", state, request_id, product_name, resolved_ms, refunded_ms, refund_reason, clawback"
        )
    };
}

mod books;
mod hot;
mod pending_sales;

/// A file beside the ledger at `db`: its path with `suffix` appended (`-wal`, `-shm`, `.lock`).
fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A ledger in one SQLite file.
pub struct SqliteLedger {
    conn: Connection,
    path: PathBuf,
    /// Held when opened with [`SqliteLedger::open_exclusive`]. Declared after `conn`, so the
    /// connection is closed (and its WAL checkpointed) before the lock is released.
    lock: Option<lock::LedgerLock>,
    /// Servers whose leftover leases this store took over, each reported once.
    reclaimed_from: Vec<String>,
    /// The open transaction's sales, written when it commits.
    sales: pending_sales::PendingSales,
}

impl std::fmt::Debug for SqliteLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqliteLedger({})", self.path.display())
    }
}

fn storage(e: rusqlite::Error) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

impl SqliteLedger {
    /// Opens (or creates) the ledger at `path`, migrating an older schema.
    ///
    /// A file that is not a ledger, is corrupted, or was written by a newer version is refused
    /// before anything is written to it: the checks read it through a connection that cannot
    /// write, so even a WAL that a killed writer left behind is read but not checkpointed, and the
    /// main file and its `-wal` keep every byte.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let location = path.display().to_string();
        let open_err = |reason: String| LedgerError::Open {
            location: location.clone(),
            reason,
        };
        let version = check_file(path, &location)?;
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_err(e.to_string()))?;
        // Room for every statement the ledger prepares (about 30): with rusqlite's default of 16,
        // a batch mixing kinds of request would prepare some of them again and again.
        conn.set_prepared_statement_cache_capacity(64);
        // Turning WAL on takes the file's exclusive lock, and SQLite answers "database is locked"
        // at once, without its busy handler, while another connection opens the same new file:
        // wait it out like any other statement.
        while_busy(|| {
            conn.execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;",
            )
        })
        .map_err(|e| open_err(e.to_string()))?;
        let mut ledger = Self {
            conn,
            path: path.to_owned(),
            lock: None,
            reclaimed_from: Vec::new(),
            sales: pending_sales::PendingSales::default(),
        };
        if version < SCHEMA_VERSION {
            while_busy(|| migrate(&mut ledger.conn))
                .map_err(|e| open_err(format!("migration from version {version} failed: {e}")))?;
        }
        Ok(ledger)
    }

    /// Opens (or creates) the ledger at `path` as the one game process using it, for `server`;
    /// this is how [`LedgerBackend::Sqlite`](super::LedgerBackend::Sqlite) opens it.
    ///
    /// Takes an exclusive OS lock on [`SqliteLedger::lock_path`] (created if missing) and writes
    /// this process's pid, `server`, host name and start time into it. The lock lasts as long as
    /// the store and is released when it is dropped, or by the OS when the process dies, however
    /// it dies. While another store holds it — in another process or in this one — the open is
    /// refused with [`LedgerError::InUse`] naming the holder, before the database is read.
    ///
    /// Holding the lock, this store is the only game using the file, so a session lease that names
    /// another server was left by a game that stopped without releasing it (a crash, a kill):
    /// [`LedgerRequest::OpenSession`] takes it over at once instead of answering
    /// [`OpenSessionReply::Busy`](super::OpenSessionReply::Busy) until it expires. (A lease that a store opened with
    /// [`SqliteLedger::open`] takes meanwhile is taken over as well: such stores are for tools.)
    ///
    /// Otherwise as [`SqliteLedger::open`]. A file refused as not a ledger or as a newer schema
    /// gets no lock file left beside it (one this call created is removed); after other failures
    /// the lock file stays, unlocked.
    pub fn open_exclusive(path: &Path, server: &ServerId) -> Result<Self, LedgerError> {
        let (lock, created) = lock::LedgerLock::acquire(path, server)?;
        match Self::open(path) {
            Ok(mut ledger) => {
                ledger.lock = Some(lock);
                Ok(ledger)
            }
            Err(error) => {
                if created
                    && matches!(
                        error,
                        LedgerError::NotALedger { .. } | LedgerError::NewerSchema { .. }
                    )
                {
                    let _ = std::fs::remove_file(lock::lock_path(path));
                }
                Err(error)
            }
        }
    }

    /// The lock file [`SqliteLedger::open_exclusive`] locks: `path` with `.lock` appended.
    pub fn lock_path(path: &Path) -> PathBuf {
        lock::lock_path(path)
    }

    /// Whether this store holds the ledger's lock file (it was opened with
    /// [`SqliteLedger::open_exclusive`]).
    pub fn is_exclusive(&self) -> bool {
        self.lock.is_some()
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole ledger (also available as [`LedgerRequest::Audit`]).
    ///
    /// It reads committed data: inside a transaction (between [`LedgerStore::begin`] and
    /// [`LedgerStore::commit`]) it is refused; apply [`LedgerRequest::Audit`] there instead.
    pub fn audit(&self) -> Result<LedgerAudit, LedgerError> {
        if !self.conn.is_autocommit() {
            return Err(LedgerError::Storage(
                "audit() reads committed data: call it outside a transaction, or apply LedgerRequest::Audit".into(),
            ));
        }
        books::audit(&self.conn).map_err(storage)
    }

    /// Reports, once per previous server, that its live lease was taken over.
    fn note_reclaimed(&mut self, user: UserId, owner: String, expires_at_ms: i64, now_ms: i64) {
        if self.reclaimed_from.contains(&owner) {
            return;
        }
        tracing::warn!(
            "ledger {}: took over the session lease of user {user} left by server {owner} ({} s before it would have expired): that game stopped without releasing it, and this process holds the ledger's lock file, so no other game uses it; further leases left by that server are taken over silently",
            self.path.display(),
            (expires_at_ms - now_ms) / 1000
        );
        self.reclaimed_from.push(owner);
    }

    /// Applies `batch` in order, holding the statements every purchase runs for all of it.
    fn apply_all(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> rusqlite::Result<Vec<LedgerReply>> {
        let policy = LeasePolicy {
            // We hold the lock file: no other game uses the ledger, so a live lease of another
            // server was left by one that died.
            take_over_foreign: self.lock.is_some(),
        };
        let mut notices = Vec::new();
        let mut replies = Vec::with_capacity(batch.len());
        {
            let mut hot = hot::HotStatements::new(&self.conn);
            for request in batch {
                let mut books = books::SqliteBooks {
                    conn: &self.conn,
                    hot: &mut hot,
                    sales: &mut self.sales,
                };
                replies.push(rules::apply(
                    &mut books,
                    request,
                    now_ms,
                    policy,
                    &mut notices,
                )?);
            }
        }
        for Notice::TookOver {
            user,
            owner,
            expires_at_ms,
        } in notices
        {
            self.note_reclaimed(user, owner, expires_at_ms, now_ms);
        }
        Ok(replies)
    }
}

/// Runs `step` again while SQLite answers that the file is busy or locked, for at most
/// [`BUSY_TIMEOUT`].
fn while_busy<T>(mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match step() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn receipt_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ReceiptInfo> {
    let channel: i64 = row.get(6)?;
    Ok(ReceiptInfo {
        purchase_id: PurchaseId(row.get(0)?),
        player_id: UserId(row.get(1)?),
        product_id: ProductId(row.get(2)?),
        place_id_where_purchased: PlaceId(row.get(3)?),
        currency_spent: row.get::<_, i64>(4)? as u64,
        currency_type: CurrencyType::Premium,
        product_purchase_channel: ProductPurchaseChannel::from_code(channel)
            .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(6, channel))?,
        is_test_purchase: row.get(7)?,
    })
}

impl LedgerStore for SqliteLedger {
    fn location(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
        self.sales.clear();
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(storage)
    }

    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        only_reply(
            self.apply_all(std::slice::from_ref(request), now_ms)
                .map_err(storage)?,
        )
    }

    fn apply_batch(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Option<Result<Vec<LedgerReply>, LedgerError>> {
        Some(self.apply_all(batch, now_ms).map_err(storage))
    }

    fn commit(&mut self) -> Result<(), LedgerError> {
        self.sales.write(&self.conn).map_err(storage)?;
        self.conn.execute_batch("COMMIT").map_err(storage)
    }

    fn rollback(&mut self) {
        self.sales.clear();
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    fn read(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        // Outside `BEGIN IMMEDIATE`: in WAL mode a reader never waits for a writer nor holds
        // one up.
        self.apply(request, now_ms)
    }
}
