//! The PostgreSQL ledger: one database shared by many game servers.
//!
//! Same schema and behaviour as the SQLite ledger. What changes is concurrency: several servers
//! write at once, so every request that reads-then-writes an account locks its row first
//! (`SELECT … FOR UPDATE`, or a conditional `UPDATE`), and the session lease is a compare-and-set
//! on `accounts.lease_owner` under that lock. A deadlock or serialization failure is a
//! [`LedgerError::Storage`]: the worker rolls the batch back and the plugin retries it.

mod batch;
mod schema;
mod sql;

use std::collections::{HashMap, HashSet};

use postgres::{Client, Statement};

use super::{
    LedgerAudit, LedgerError, LedgerReply, LedgerRequest, LedgerStore, PlayerSnapshot,
    StoredReceipt,
};
use crate::ids::{RequestId, UserId};
use crate::receipt::{CurrencyType, ReceiptInfo, ReceiptState};

use batch::lock_order;
pub use schema::PG_SCHEMA_VERSION;
use schema::{MigrateError, VersionError, migrate, read_version, session};
use sql::*;

/// An account row read under its lock: balance, lease owner, lease expiry (Unix ms).
type LockedAccount = (u64, Option<String>, Option<i64>);

/// A ledger in a PostgreSQL database, shared by any number of game servers.
pub struct PostgresLedger {
    client: Client,
    url: String,
    location: String,
    statements: HashMap<&'static str, Statement>,
    in_transaction: bool,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresLedger({})", self.location)
    }
}

fn storage(e: postgres::Error) -> LedgerError {
    LedgerError::Storage(describe(&e))
}

fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The URL or connection string with any password hidden, for messages.
pub(super) fn redact(url: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for word in url.split(' ') {
        if word.starts_with("password=") {
            out.push("password=***".into());
        } else {
            out.push(word.to_owned());
        }
    }
    let mut s = out.join(" ");
    // postgres://user:secret@host/db
    if let Some(scheme) = s.find("://")
        && let Some(at) = s[scheme + 3..].find('@')
    {
        let userinfo = &s[scheme + 3..scheme + 3 + at];
        if let Some(colon) = userinfo.find(':') {
            let start = scheme + 3 + colon + 1;
            s.replace_range(start..scheme + 3 + at, "***");
        }
    }
    format!("postgres:{s}")
}

impl PostgresLedger {
    /// Connects to the database at `url` (a `postgres://` URL or a `key=value` connection
    /// string, no TLS), creating the schema in an empty database and migrating an older one.
    ///
    /// A database holding other tables and no ledger, or a ledger written by a newer version,
    /// is refused before anything is written to it.
    pub fn connect(url: &str) -> Result<Self, LedgerError> {
        let location = redact(url);
        let open_err = |reason: String| LedgerError::Open {
            location: location.clone(),
            reason,
        };
        let not_ledger = |reason: String| LedgerError::NotALedger {
            location: location.clone(),
            reason,
        };
        let mut client = session(url).map_err(|e| open_err(describe(&e)))?;
        // Read-only checks first.
        let version = read_version(&mut client).map_err(|e| match e {
            VersionError::Db(e) => open_err(e),
            VersionError::NotALedger(reason) => not_ledger(reason),
        })?;
        if version > PG_SCHEMA_VERSION {
            return Err(LedgerError::NewerSchema {
                location,
                found: version,
                supported: PG_SCHEMA_VERSION,
            });
        }
        if version < PG_SCHEMA_VERSION {
            match migrate(&mut client) {
                Ok(()) => {}
                Err(MigrateError::Db(e)) => {
                    return Err(open_err(format!(
                        "migration from version {version} failed: {e}"
                    )));
                }
                Err(MigrateError::Refused(e)) => {
                    return Err(match e {
                        VersionError::Db(e) => open_err(e),
                        VersionError::NotALedger(reason) => not_ledger(reason),
                    });
                }
                Err(MigrateError::Newer(found)) => {
                    return Err(LedgerError::NewerSchema {
                        location,
                        found,
                        supported: PG_SCHEMA_VERSION,
                    });
                }
            }
        }
        Ok(Self {
            client,
            url: url.to_owned(),
            location,
            statements: HashMap::new(),
            in_transaction: false,
        })
    }

    fn stmt(&mut self, sql: &'static str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    /// Reads the whole ledger (also available as [`LedgerRequest::Audit`]).
    pub fn audit(&mut self) -> Result<LedgerAudit, LedgerError> {
        self.audit_inner().map_err(storage)
    }

    fn audit_inner(&mut self) -> Result<LedgerAudit, postgres::Error> {
        let mut audit = LedgerAudit::default();
        let stmt = self.stmt(ALL_RECEIPTS)?;
        for row in self.client.query(&stmt, &[])? {
            let info = receipt_from_row(&row)?;
            let state: String = row.try_get(9)?;
            let request: String = row.try_get(10)?;
            audit.receipts.push(StoredReceipt {
                info,
                state: ReceiptState::parse(&state).unwrap_or(ReceiptState::Pending),
                request_id: RequestId(request.parse().unwrap_or_default()),
            });
        }
        let rows = self
            .client
            .query("SELECT user_id, balance FROM accounts", &[])?;
        for row in rows {
            let user: i64 = row.try_get(0)?;
            let balance: i64 = row.try_get(1)?;
            audit
                .accounts
                .insert(UserId(user), (balance as u64, PlayerSnapshot::default()));
        }
        for row in self
            .client
            .query("SELECT user_id, name, value FROM player_components", &[])?
        {
            let user: i64 = row.try_get(0)?;
            if let Some((_, state)) = audit.accounts.get_mut(&UserId(user)) {
                state.0.insert(row.try_get(1)?, row.try_get(2)?);
            }
        }
        audit.purchase_debits = self
            .client
            .query_one(
                "SELECT coalesce(-sum(delta), 0)::bigint FROM balance_journal WHERE reason = 'purchase'",
                &[],
            )?
            .try_get::<_, i64>(0)? as u64;
        Ok(audit)
    }

    fn load_state(&mut self, user: UserId) -> Result<PlayerSnapshot, postgres::Error> {
        let stmt = self.stmt(LOAD_STATE)?;
        let rows = self.client.query(&stmt, &[&user.0])?;
        let mut state = PlayerSnapshot::default();
        for row in rows {
            state.0.insert(row.try_get(0)?, row.try_get(1)?);
        }
        Ok(state)
    }

    fn pending_of(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, postgres::Error> {
        let stmt = self.stmt(PENDING_OF)?;
        self.client
            .query(&stmt, &[&user.0])?
            .iter()
            .map(receipt_from_row)
            .collect()
    }

    fn ensure_account(
        &mut self,
        user: UserId,
        starting_balance: u64,
        now_ms: i64,
    ) -> Result<(), postgres::Error> {
        let stmt = self.stmt(ENSURE_ACCOUNT)?;
        self.client
            .execute(&stmt, &[&user.0, &(starting_balance as i64), &now_ms])?;
        Ok(())
    }

    fn balance(&mut self, user: UserId) -> Result<u64, postgres::Error> {
        let stmt = self.stmt(BALANCE)?;
        Ok(self
            .client
            .query_opt(&stmt, &[&user.0])?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .unwrap_or(0) as u64)
    }

    /// Locks the account row: (balance, lease owner, lease expiry), or `None` if there is none.
    fn lock_account(&mut self, user: UserId) -> Result<Option<LockedAccount>, postgres::Error> {
        let stmt = self.stmt(LOCK_ACCOUNT)?;
        self.client
            .query_opt(&stmt, &[&user.0])?
            .map(|r| Ok((r.try_get::<_, i64>(0)? as u64, r.try_get(1)?, r.try_get(2)?)))
            .transpose()
    }

    fn charge(
        &mut self,
        charge: &super::ChargeRequest,
        now_ms: i64,
    ) -> Result<LedgerReply, postgres::Error> {
        let request_id = charge.request_id.0.to_string();
        let receipt = charge.new_receipt();
        let stmt = self.stmt(CHARGE)?;
        let price = charge.price as i64;
        let currency = CurrencyType::Premium as i64;
        let channel = i64::from(charge.channel.code());
        let mut tried_creating = false;
        loop {
            let row = self.client.query_opt(
                &stmt,
                &[
                    &receipt.purchase_id.0,
                    &charge.user.0,
                    &price,
                    &request_id,
                    &charge.product_id.0,
                    &charge.place_id.0,
                    &currency,
                    &channel,
                    &charge.test_purchase,
                    &now_ms,
                ],
            )?;
            if let Some(row) = row {
                return Ok(LedgerReply::Charged {
                    receipt,
                    balance: row.try_get::<_, i64>(0)? as u64,
                    replayed: false,
                });
            }
            // Already charged, too poor, or no account yet.
            let replay = self.stmt(RECEIPT_BY_REQUEST)?;
            if let Some(row) = self.client.query_opt(&replay, &[&request_id])? {
                return Ok(LedgerReply::Charged {
                    receipt: receipt_from_row(&row)?,
                    balance: self.balance(charge.user)?,
                    replayed: true,
                });
            }
            // Make sure the account exists and look again once.
            if tried_creating {
                return Ok(LedgerReply::InsufficientFunds {
                    balance: self.balance(charge.user)?,
                    price: charge.price,
                });
            }
            self.ensure_account(charge.user, charge.starting_balance, now_ms)?;
            tried_creating = true;
        }
    }

    fn apply_inner(
        &mut self,
        request: &LedgerRequest,
        now_ms: i64,
    ) -> Result<LedgerReply, postgres::Error> {
        Ok(match request {
            LedgerRequest::OpenSession {
                user,
                server,
                lease_ms,
                starting_balance,
            } => {
                self.ensure_account(*user, *starting_balance, now_ms)?;
                let (balance, owner, expires) = self
                    .lock_account(*user)?
                    .expect("the account was just ensured");
                if let (Some(owner), Some(expires_at_ms)) = (owner, expires)
                    && owner.as_str() != &*server.0
                    && expires_at_ms > now_ms
                {
                    return Ok(LedgerReply::SessionBusy {
                        owner,
                        expires_at_ms,
                    });
                }
                let stmt = self.stmt(TAKE_LEASE)?;
                self.client.execute(
                    &stmt,
                    &[&user.0, &&*server.0, &(now_ms + lease_ms), &now_ms],
                )?;
                LedgerReply::SessionOpened {
                    balance,
                    state: self.load_state(*user)?,
                    pending: self.pending_of(*user)?,
                }
            }
            LedgerRequest::ReleaseSession { user, server } => {
                let stmt = self.stmt(RELEASE)?;
                self.client
                    .execute(&stmt, &[&user.0, &&*server.0, &now_ms])?;
                LedgerReply::Released
            }
            LedgerRequest::Charge(charge) => self.charge(charge, now_ms)?,
            LedgerRequest::Save(save) => {
                // Compare-and-set on the lease owner, under the row lock.
                let owner = self
                    .lock_account(save.user)?
                    .and_then(|(_, owner, _)| owner);
                if owner.as_deref() != Some(&*save.server.0) {
                    return Ok(LedgerReply::LeaseLost { owner });
                }
                let names: Vec<&str> = save.state.0.keys().map(String::as_str).collect();
                let values: Vec<&str> = save.state.0.values().map(String::as_str).collect();
                let ids: Vec<&str> = save.granted.iter().map(|p| p.0.as_str()).collect();
                let stmt = self.stmt(SAVE)?;
                let granted: HashSet<String> = self
                    .client
                    .query(
                        &stmt,
                        &[
                            &save.user.0,
                            &names,
                            &values,
                            &save.release,
                            &(now_ms + save.lease_ms),
                            &now_ms,
                            &ids,
                        ],
                    )?
                    .iter()
                    .map(|r| r.try_get(0))
                    .collect::<Result<_, _>>()?;
                let newly_granted = save
                    .granted
                    .iter()
                    .filter(|id| granted.contains(&id.0))
                    .cloned()
                    .collect();
                LedgerReply::Saved { newly_granted }
            }
            LedgerRequest::AdjustBalance {
                user,
                delta,
                reason,
                starting_balance,
            } => {
                self.ensure_account(*user, *starting_balance, now_ms)?;
                let (balance, _, _) = self
                    .lock_account(*user)?
                    .expect("the account was just ensured");
                match balance.checked_add_signed(*delta) {
                    Some(new_balance) => {
                        let stmt = self.stmt(SET_BALANCE)?;
                        self.client
                            .execute(&stmt, &[&user.0, &(new_balance as i64), &now_ms])?;
                        let stmt = self.stmt(JOURNAL)?;
                        self.client
                            .execute(&stmt, &[&user.0, delta, reason, &now_ms])?;
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
            LedgerRequest::Audit => LedgerReply::Audit(self.audit_inner()?),
        })
    }
}

impl LedgerStore for PostgresLedger {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
        if self.client.is_closed() {
            // The connection dropped (server restart, network): reconnect; prepared statements
            // belonged to the old session.
            self.client = session(&self.url).map_err(storage)?;
            self.statements.clear();
        }
        self.client.batch_execute("BEGIN").map_err(storage)?;
        self.in_transaction = true;
        Ok(())
    }

    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        self.apply_inner(request, now_ms).map_err(storage)
    }

    fn apply_order(&self, batch: &[LedgerRequest]) -> Option<Vec<usize>> {
        Some(lock_order(batch))
    }

    fn apply_batch(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Option<Result<Vec<LedgerReply>, LedgerError>> {
        // Balance changes and audits keep the one-by-one order; small batches gain nothing.
        let grouped = batch
            .iter()
            .filter(|r| matches!(r, LedgerRequest::Charge(_) | LedgerRequest::Save(_)))
            .count();
        if grouped < 2
            || batch.iter().any(|r| {
                matches!(
                    r,
                    LedgerRequest::AdjustBalance { .. } | LedgerRequest::Audit
                )
            })
        {
            return None;
        }
        Some(self.apply_batch_inner(batch, now_ms).map_err(storage))
    }

    fn commit(&mut self) -> Result<(), LedgerError> {
        self.in_transaction = false;
        self.client.batch_execute("COMMIT").map_err(storage)
    }

    fn rollback(&mut self) {
        if std::mem::take(&mut self.in_transaction) && !self.client.is_closed() {
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}
