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

use rusqlite::{Connection, OptionalExtension, params};

use super::{
    LedgerAudit, LedgerError, LedgerReply, LedgerRequest, LedgerStore, PlayerSnapshot, ServerId,
    StoredReceipt,
};
use crate::ids::{PlaceId, ProductId, PurchaseId, RequestId, UserId};
use crate::receipt::{CurrencyType, ProductPurchaseChannel, ReceiptInfo, ReceiptState};

/// The columns [`receipt_from_row`] reads, in order (a macro so queries are `concat!`ed constants).
macro_rules! receipt_columns {
    () => {
        "purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms"
    };
}

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
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;",
        )
        .map_err(|e| open_err(e.to_string()))?;
        let mut ledger = Self {
            conn,
            path: path.to_owned(),
            lock: None,
            reclaimed_from: Vec::new(),
        };
        if version < SCHEMA_VERSION {
            migrate(&mut ledger.conn)
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
    /// [`LedgerReply::SessionBusy`] until it expires. (A lease that a store opened with
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
    pub fn audit(&self) -> Result<LedgerAudit, LedgerError> {
        let mut audit = LedgerAudit::default();
        let mut stmt = self
            .conn
            .prepare_cached(concat!(
                "SELECT ",
                receipt_columns!(),
                ", state, request_id FROM receipts"
            ))
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |row| {
                let info = receipt_from_row(row)?;
                let state: String = row.get(9)?;
                let request: String = row.get(10)?;
                Ok((info, state, request))
            })
            .map_err(storage)?;
        for row in rows {
            let (info, state, request) = row.map_err(storage)?;
            audit.receipts.push(StoredReceipt {
                info,
                state: ReceiptState::parse(&state).ok_or_else(|| {
                    LedgerError::Storage(format!("unknown receipt state {state:?}"))
                })?,
                request_id: RequestId(request.parse().map_err(|e| {
                    LedgerError::Storage(format!("bad request id {request:?}: {e}"))
                })?),
            });
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT user_id, balance FROM accounts")
            .map_err(storage)?;
        let accounts: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(storage)?
            .collect::<Result<_, _>>()
            .map_err(storage)?;
        for (user, balance) in accounts {
            let state = self.load_state(UserId(user)).map_err(storage)?;
            audit.accounts.insert(UserId(user), (balance as u64, state));
        }
        audit.purchase_debits = self
            .conn
            .query_row(
                "SELECT coalesce(-sum(delta), 0) FROM balance_journal WHERE reason = 'purchase'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(storage)? as u64;
        Ok(audit)
    }

    fn load_state(&self, user: UserId) -> rusqlite::Result<PlayerSnapshot> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, value FROM player_components WHERE user_id = ?1")?;
        let rows = stmt.query_map([user.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(PlayerSnapshot(rows.collect::<Result<_, _>>()?))
    }

    fn pending_of(&self, user: UserId) -> rusqlite::Result<Vec<ReceiptInfo>> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            receipt_columns!(),
            " FROM receipts WHERE user_id = ?1 AND state = 'pending' ORDER BY created_ms"
        ))?;
        let rows = stmt.query_map([user.0], receipt_from_row)?;
        rows.collect()
    }

    fn ensure_account(
        &self,
        user: UserId,
        starting_balance: u64,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO accounts (user_id, balance, created_ms, updated_ms) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (user_id) DO NOTHING",
            )?
            .execute(params![user.0, starting_balance as i64, now_ms])?;
        Ok(())
    }

    fn balance(&self, user: UserId) -> rusqlite::Result<u64> {
        Ok(self.stored_balance(user)?.unwrap_or(0))
    }

    /// The balance, or `None` if the user has no account yet.
    fn stored_balance(&self, user: UserId) -> rusqlite::Result<Option<u64>> {
        Ok(self
            .conn
            .prepare_cached("SELECT balance FROM accounts WHERE user_id = ?1")?
            .query_row([user.0], |r| r.get::<_, i64>(0))
            .optional()?
            .map(|b| b as u64))
    }

    /// Gives up `server`'s lease on `user`; the number of rows changed (0: not ours).
    fn release_lease(
        &self,
        user: UserId,
        server: &ServerId,
        now_ms: i64,
    ) -> rusqlite::Result<usize> {
        self.conn
            .prepare_cached(
                "UPDATE accounts SET lease_owner = NULL, lease_expires_ms = NULL, updated_ms = ?3
                 WHERE user_id = ?1 AND lease_owner = ?2",
            )?
            .execute(params![user.0, &*server.0, now_ms])
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

    fn apply_inner(
        &mut self,
        request: &LedgerRequest,
        now_ms: i64,
    ) -> rusqlite::Result<LedgerReply> {
        Ok(match request {
            LedgerRequest::OpenSession {
                user,
                server,
                lease_ms,
                starting_balance,
            } => {
                self.ensure_account(*user, *starting_balance, now_ms)?;
                let (owner, expires): (Option<String>, Option<i64>) = self
                    .conn
                    .prepare_cached(
                        "SELECT lease_owner, lease_expires_ms FROM accounts WHERE user_id = ?1",
                    )?
                    .query_row([user.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
                if let (Some(owner), Some(expires_at_ms)) = (owner, expires)
                    && owner.as_str() != &*server.0
                    && expires_at_ms > now_ms
                {
                    if self.lock.is_none() {
                        return Ok(LedgerReply::SessionBusy {
                            owner,
                            expires_at_ms,
                        });
                    }
                    // We hold the lock file: no other game uses the ledger, so the lease was left
                    // by one that died.
                    self.note_reclaimed(*user, owner, expires_at_ms, now_ms);
                }
                self.conn
                    .prepare_cached(
                        "UPDATE accounts SET lease_owner = ?2, lease_expires_ms = ?3, updated_ms = ?4 WHERE user_id = ?1",
                    )?
                    .execute(params![user.0, &*server.0, now_ms + lease_ms, now_ms])?;
                LedgerReply::SessionOpened {
                    balance: self.balance(*user)?,
                    state: self.load_state(*user)?,
                    pending: self.pending_of(*user)?,
                }
            }
            LedgerRequest::ReleaseSession { user, server } => {
                self.release_lease(*user, server, now_ms)?;
                LedgerReply::Released
            }
            LedgerRequest::Charge(charge) => {
                let mut request_buf = uuid::Uuid::encode_buffer();
                let request_id = &*charge
                    .request_id
                    .0
                    .hyphenated()
                    .encode_lower(&mut request_buf);
                let receipt = charge.new_receipt();
                // Request ids are unique: a retried charge inserts nothing and gets the receipt of
                // the first attempt (no lookup on the usual path).
                let inserted = self
                    .conn
                    .prepare_cached(
                        "INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                                               currency_type, channel, is_test, state, created_ms)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10)
                         ON CONFLICT (request_id) DO NOTHING",
                    )?
                    .execute(params![
                        receipt.purchase_id.0,
                        request_id,
                        charge.user.0,
                        charge.product_id.0,
                        charge.place_id.0,
                        charge.price as i64,
                        CurrencyType::Premium as i32,
                        charge.channel.code(),
                        charge.test_purchase,
                        now_ms
                    ])?;
                if inserted == 0 {
                    let receipt = self
                        .conn
                        .prepare_cached(concat!(
                            "SELECT ",
                            receipt_columns!(),
                            " FROM receipts WHERE request_id = ?1"
                        ))?
                        .query_row([request_id], receipt_from_row)?;
                    return Ok(LedgerReply::Charged {
                        receipt,
                        balance: self.balance(charge.user)?,
                        replayed: true,
                    });
                }
                // Read, then write: `BEGIN IMMEDIATE` holds the write lock. (`UPDATE … RETURNING`
                // would be one statement, but SQLite builds a temporary table for it.)
                let balance = match self.stored_balance(charge.user)? {
                    Some(balance) => balance,
                    None => {
                        self.ensure_account(charge.user, charge.starting_balance, now_ms)?;
                        charge.starting_balance
                    }
                };
                if balance < charge.price {
                    self.conn
                        .prepare_cached("DELETE FROM receipts WHERE purchase_id = ?1")?
                        .execute([&receipt.purchase_id.0])?;
                    return Ok(LedgerReply::InsufficientFunds {
                        balance,
                        price: charge.price,
                    });
                }
                let balance = balance - charge.price;
                self.conn
                    .prepare_cached(
                        "UPDATE accounts SET balance = ?2, updated_ms = ?3 WHERE user_id = ?1",
                    )?
                    .execute(params![charge.user.0, balance as i64, now_ms])?;
                self.conn
                    .prepare_cached(
                        "INSERT INTO balance_journal (user_id, delta, reason, purchase_id, at_ms)
                         VALUES (?1, ?2, 'purchase', ?3, ?4)",
                    )?
                    .execute(params![
                        charge.user.0,
                        -(charge.price as i64),
                        receipt.purchase_id.0,
                        now_ms
                    ])?;
                LedgerReply::Charged {
                    receipt,
                    balance,
                    replayed: false,
                }
            }
            LedgerRequest::Save(save) => {
                // Renewing (or releasing) the lease is also the check that we still hold it.
                let renewed = if save.release {
                    self.release_lease(save.user, &save.server, now_ms)?
                } else {
                    self.conn
                        .prepare_cached(
                            "UPDATE accounts SET lease_expires_ms = ?3, updated_ms = ?4
                             WHERE user_id = ?1 AND lease_owner = ?2",
                        )?
                        .execute(params![
                            save.user.0,
                            &*save.server.0,
                            now_ms + save.lease_ms,
                            now_ms
                        ])?
                };
                if renewed == 0 {
                    let owner: Option<Option<String>> = self
                        .conn
                        .prepare_cached("SELECT lease_owner FROM accounts WHERE user_id = ?1")?
                        .query_row([save.user.0], |r| r.get(0))
                        .optional()?;
                    return Ok(LedgerReply::LeaseLost {
                        owner: owner.flatten(),
                    });
                }
                self.conn
                    .prepare_cached("DELETE FROM player_components WHERE user_id = ?1")?
                    .execute([save.user.0])?;
                {
                    let mut insert = self.conn.prepare_cached(
                        "INSERT INTO player_components (user_id, name, value) VALUES (?1, ?2, ?3)",
                    )?;
                    for (name, value) in &save.state.0 {
                        insert.execute(params![save.user.0, name, value])?;
                    }
                }
                let mut newly_granted = Vec::new();
                let mut grant = self.conn.prepare_cached(
                    "UPDATE receipts SET state = 'granted', resolved_ms = ?3
                     WHERE purchase_id = ?1 AND user_id = ?2 AND state = 'pending'",
                )?;
                for id in &save.granted {
                    if grant.execute(params![id.0, save.user.0, now_ms])? == 1 {
                        newly_granted.push(id.clone());
                    }
                }
                LedgerReply::Saved { newly_granted }
            }
            LedgerRequest::AdjustBalance {
                user,
                delta,
                reason,
                starting_balance,
            } => {
                self.ensure_account(*user, *starting_balance, now_ms)?;
                let balance = self.balance(*user)?;
                match balance.checked_add_signed(*delta) {
                    Some(new_balance) => {
                        self.conn
                            .prepare_cached("UPDATE accounts SET balance = ?2, updated_ms = ?3 WHERE user_id = ?1")?
                            .execute(params![user.0, new_balance as i64, now_ms])?;
                        self.conn
                            .prepare_cached(
                                "INSERT INTO balance_journal (user_id, delta, reason, at_ms) VALUES (?1, ?2, ?3, ?4)",
                            )?
                            .execute(params![user.0, delta, reason, now_ms])?;
                        LedgerReply::BalanceAdjusted {
                            balance: new_balance,
                        }
                    }
                    None => LedgerReply::BalanceTooLow { balance },
                }
            }
            LedgerRequest::PendingReceipts { user } => LedgerReply::PendingReceipts {
                receipts: self.pending_of(*user)?,
            },
            LedgerRequest::Audit => unreachable!("audits are answered by `apply`"),
        })
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
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(storage)
    }

    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        if let LedgerRequest::Audit = request {
            return self.audit().map(LedgerReply::Audit);
        }
        self.apply_inner(request, now_ms).map_err(storage)
    }

    fn commit(&mut self) -> Result<(), LedgerError> {
        self.conn.execute_batch("COMMIT").map_err(storage)
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}
