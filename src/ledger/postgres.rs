//! The PostgreSQL ledger: one database shared by many game servers.
//!
//! Same schema and behaviour as the SQLite ledger. What changes is concurrency: several servers
//! write at once, so every request that reads-then-writes an account locks its row first
//! (`SELECT … FOR UPDATE`, or a conditional `UPDATE`), and the session lease is a compare-and-set
//! on `accounts.lease_owner` under that lock. A deadlock or serialization failure is a
//! [`LedgerError::Storage`]: the worker rolls the batch back and the plugin retries it.

use std::collections::{HashMap, HashSet};

use postgres::{Client, GenericClient, NoTls, Row, Statement};

use super::{
    LedgerAudit, LedgerError, LedgerReply, LedgerRequest, LedgerStore, PlayerSnapshot,
    StoredReceipt,
};
use crate::ids::{PlaceId, ProductId, PurchaseId, RequestId, UserId};
use crate::receipt::{CurrencyType, ProductPurchaseChannel, ReceiptInfo, ReceiptState};

/// The schema version this build writes (in `bevy_marketplace_meta`).
pub const PG_SCHEMA_VERSION: i64 = 1;

/// Marks the database as ours in `bevy_marketplace_meta.application`.
const APPLICATION: &str = "bevy_marketplace";

/// Serializes migrations of servers connecting to a new database at once
/// (`pg_advisory_xact_lock` key, "BMKT").
const MIGRATION_LOCK: i64 = 0x424D_4B54;

/// Schema migrations: entry `n` moves a database from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE bevy_marketplace_meta (
    application    TEXT   NOT NULL,
    schema_version BIGINT NOT NULL
);
INSERT INTO bevy_marketplace_meta (application, schema_version) VALUES ('bevy_marketplace', 0);
CREATE TABLE accounts (
    user_id          BIGINT PRIMARY KEY,
    balance          BIGINT NOT NULL CHECK (balance >= 0),
    lease_owner      TEXT,
    lease_expires_ms BIGINT,
    created_ms       BIGINT NOT NULL,
    updated_ms       BIGINT NOT NULL
);
CREATE TABLE player_components (
    user_id BIGINT NOT NULL REFERENCES accounts (user_id),
    name    TEXT   NOT NULL,
    value   TEXT   NOT NULL,
    PRIMARY KEY (user_id, name)
);
CREATE TABLE receipts (
    purchase_id    TEXT    PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    user_id        BIGINT  NOT NULL,
    product_id     BIGINT  NOT NULL,
    place_id       BIGINT  NOT NULL,
    currency_spent BIGINT  NOT NULL CHECK (currency_spent >= 0),
    currency_type  BIGINT  NOT NULL,
    channel        BIGINT  NOT NULL CHECK (channel BETWEEN 1 AND 4),
    is_test        BOOLEAN NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('pending', 'granted', 'refunded')),
    created_ms     BIGINT  NOT NULL,
    resolved_ms    BIGINT
);
CREATE INDEX receipts_pending_by_user ON receipts (user_id) WHERE state = 'pending';
CREATE TABLE balance_journal (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    delta       BIGINT NOT NULL,
    reason      TEXT   NOT NULL,
    purchase_id TEXT,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX balance_journal_by_purchase ON balance_journal (purchase_id) WHERE purchase_id IS NOT NULL;
"#];

macro_rules! receipt_columns {
    () => {
        "purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms"
    };
}

const RECEIPT_BY_REQUEST: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE request_id = $1"
);
const PENDING_OF: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE user_id = $1 AND state = 'pending' ORDER BY created_ms, purchase_id"
);
const ALL_RECEIPTS: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    ", state, request_id FROM receipts ORDER BY created_ms, purchase_id"
);
const ENSURE_ACCOUNT: &str =
    "INSERT INTO accounts (user_id, balance, created_ms, updated_ms) VALUES ($1, $2, $3, $3)
     ON CONFLICT (user_id) DO NOTHING";
const BALANCE: &str = "SELECT balance FROM accounts WHERE user_id = $1";
const LOCK_ACCOUNT: &str =
    "SELECT balance, lease_owner, lease_expires_ms FROM accounts WHERE user_id = $1 FOR UPDATE";
const TAKE_LEASE: &str = "UPDATE accounts SET lease_owner = $2, lease_expires_ms = $3, updated_ms = $4 WHERE user_id = $1";
const RELEASE: &str =
    "UPDATE accounts SET lease_owner = NULL, lease_expires_ms = NULL, updated_ms = $3
     WHERE user_id = $1 AND lease_owner = $2";
const LOAD_STATE: &str = "SELECT name, value FROM player_components WHERE user_id = $1";
/// Debit, receipt and journal in one statement; no row when the balance is too low, the
/// account does not exist yet, or this request id already charged. The `UPDATE` locks the
/// account row.
const CHARGE: &str = "WITH debit AS (
        UPDATE accounts SET balance = balance - $3, updated_ms = $10
        WHERE user_id = $2 AND balance >= $3
          AND NOT EXISTS (SELECT 1 FROM receipts WHERE request_id = $4::text)
        RETURNING balance
    ), receipt AS (
        INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                              currency_type, channel, is_test, state, created_ms)
        SELECT $1::text, $4::text, $2::bigint, $5::bigint, $6::bigint, $3::bigint, $7::bigint, $8::bigint,
               $9::boolean, 'pending', $10::bigint
        FROM debit
    ), journal AS (
        INSERT INTO balance_journal (user_id, delta, reason, purchase_id, at_ms)
        SELECT $2::bigint, -$3::bigint, 'purchase', $1::text, $10::bigint FROM debit
    )
    SELECT balance FROM debit";
/// Writes the components of a save (upsert plus delete of the names no longer there), renews
/// or releases the lease and marks the listed receipts granted, in one statement; returns the
/// receipts it moved from pending to granted. Only run while holding the row lock, in a
/// statement after the one that took it (so its snapshot sees everything committed before).
const SAVE: &str = "WITH upsert AS (
        INSERT INTO player_components (user_id, name, value)
        SELECT $1::bigint, n, v FROM unnest($2::text[], $3::text[]) AS t (n, v)
        ON CONFLICT (user_id, name) DO UPDATE SET value = EXCLUDED.value
    ), removed AS (
        DELETE FROM player_components WHERE user_id = $1 AND NOT (name = ANY ($2::text[]))
    ), lease AS (
        UPDATE accounts
        SET lease_owner = CASE WHEN $4::boolean THEN NULL ELSE lease_owner END,
            lease_expires_ms = CASE WHEN $4::boolean THEN NULL ELSE $5::bigint END,
            updated_ms = $6
        WHERE user_id = $1
    ), granted AS (
        UPDATE receipts SET state = 'granted', resolved_ms = $6
        WHERE purchase_id = ANY ($7::text[]) AND user_id = $1 AND state = 'pending'
        RETURNING purchase_id
    )
    SELECT purchase_id FROM granted";
/// Charges many users at once (one charge per user): like [`CHARGE`] row by row, in one round
/// trip. Account rows are locked in user order first. Returns `(user_id, balance after)` for the
/// charges made; the others (already charged, too poor, no account) are retried one by one,
/// which creates a missing account with the charge's starting balance.
const CHARGE_MANY: &str = "WITH locked AS (
        SELECT i.*, a.balance FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[],
                                          $5::bigint[], $6::bigint[], $7::bigint[], $8::boolean[])
            AS i (purchase_id, user_id, price, request_id, product_id, place_id, channel, is_test)
        JOIN accounts a ON a.user_id = i.user_id
        WHERE NOT EXISTS (SELECT 1 FROM receipts r WHERE r.request_id = i.request_id)
        ORDER BY a.user_id FOR UPDATE OF a
    ), debit AS (
        UPDATE accounts a SET balance = a.balance - l.price, updated_ms = $9
        FROM locked l
        WHERE a.user_id = l.user_id AND a.balance >= l.price
        RETURNING l.*, a.balance AS balance_after
    ), receipt AS (
        INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                              currency_type, channel, is_test, state, created_ms)
        SELECT purchase_id, request_id, user_id, product_id, place_id, price, $10, channel, is_test,
               'pending', $9
        FROM debit
    ), journal AS (
        INSERT INTO balance_journal (user_id, delta, reason, purchase_id, at_ms)
        SELECT user_id, -price, 'purchase', purchase_id, $9 FROM debit
    )
    SELECT user_id, balance_after FROM debit";
/// Locks the accounts of a whole batch in user order.
const LOCK_ALL: &str =
    "SELECT 1 FROM accounts WHERE user_id = ANY ($1::bigint[]) ORDER BY user_id FOR UPDATE";
/// Each saver's lease owner, read after the batch's other requests (an `OpenSession` or
/// `ReleaseSession` there may have changed it); the rows are already locked by [`LOCK_ALL`].
const LOCK_MANY: &str =
    "SELECT user_id, lease_owner FROM accounts WHERE user_id = ANY ($1::bigint[])
    ORDER BY user_id FOR UPDATE";
/// Saves many players (one save each, all holding their lease as read by [`LOCK_MANY`]): [`SAVE`] for a whole batch in one round trip. Per player: release flag,
/// lease expiry and the names of their components (an array literal, so removed components are
/// found with one index scan per player); components and grants as parallel arrays. Every
/// join is driven by the input rows through an index, so the cost grows with the batch, not
/// with its square. Returns the receipts moved from pending to granted.
const SAVE_MANY: &str = "WITH input AS (
        SELECT * FROM unnest($1::bigint[], $2::boolean[], $3::bigint[], $4::text[])
            AS t (user_id, release, expires, names)
    ), upsert AS (
        INSERT INTO player_components (user_id, name, value)
        SELECT * FROM unnest($5::bigint[], $6::text[], $7::text[])
        ON CONFLICT (user_id, name) DO UPDATE SET value = EXCLUDED.value
    ), removed AS (
        DELETE FROM player_components p USING input i
        WHERE p.user_id = i.user_id AND NOT (p.name = ANY (i.names::text[]))
    ), lease AS (
        UPDATE accounts a
        SET lease_owner = CASE WHEN i.release THEN NULL ELSE a.lease_owner END,
            lease_expires_ms = CASE WHEN i.release THEN NULL ELSE i.expires END,
            updated_ms = $8
        FROM input i WHERE a.user_id = i.user_id
    ), granted AS (
        UPDATE receipts r SET state = 'granted', resolved_ms = $8
        FROM unnest($9::bigint[], $10::text[]) AS g (user_id, purchase_id)
        WHERE r.purchase_id = g.purchase_id AND r.user_id = g.user_id AND r.state = 'pending'
        RETURNING r.purchase_id
    )
    SELECT purchase_id FROM granted";
/// A PostgreSQL array literal of `items` (`{"a","b"}`).
fn array_literal<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

const SET_BALANCE: &str = "UPDATE accounts SET balance = $2, updated_ms = $3 WHERE user_id = $1";
const JOURNAL: &str =
    "INSERT INTO balance_journal (user_id, delta, reason, at_ms) VALUES ($1, $2, $3, $4)";

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

    /// The batch path: requests other than charges and saves one by one in lock order, then the
    /// saves of players with one save in the batch in two round trips, then the charges of
    /// users with one charge in one round trip; what is left (repeats, refusals) one by one.
    /// A user's charges and saves do not depend on each other within one batch (a save only
    /// grants receipts whose charge was answered earlier), so grouping them keeps the effect of
    /// applying the batch in order.
    fn apply_batch_inner(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Result<Vec<LedgerReply>, postgres::Error> {
        let mut replies: Vec<Option<LedgerReply>> = vec![None; batch.len()];
        let mut saves_of: HashMap<UserId, usize> = HashMap::new();
        let mut charges_of: HashMap<UserId, usize> = HashMap::new();
        for request in batch {
            match request {
                LedgerRequest::Save(save) => *saves_of.entry(save.user).or_default() += 1,
                LedgerRequest::Charge(charge) => *charges_of.entry(charge.user).or_default() += 1,
                _ => {}
            }
        }
        // Every account row the batch touches is locked first, in user order, by one statement:
        // the passes below touch users out of order, and two servers locking in different orders
        // would deadlock (PostgreSQL breaks that after `deadlock_timeout`, a second each time).
        let mut users: Vec<i64> = batch.iter().filter_map(|r| r.user()).map(|u| u.0).collect();
        users.sort_unstable();
        users.dedup();
        let stmt = self.stmt(LOCK_ALL)?;
        self.client.execute(&stmt, &[&users])?;
        let mut one_by_one = Vec::new();
        let mut saves = Vec::new();
        let mut charges = Vec::new();
        for i in lock_order(batch) {
            match &batch[i] {
                LedgerRequest::Save(save) if saves_of[&save.user] == 1 => saves.push(i),
                LedgerRequest::Charge(charge) if charges_of[&charge.user] == 1 => charges.push(i),
                LedgerRequest::Save(_) | LedgerRequest::Charge(_) => one_by_one.push(i),
                _ => replies[i] = Some(self.apply_inner(&batch[i], now_ms)?),
            }
        }
        self.save_many(batch, &saves, now_ms, &mut replies)?;
        self.charge_many(batch, &charges, now_ms, &mut replies)?;
        for i in one_by_one {
            replies[i] = Some(self.apply_inner(&batch[i], now_ms)?);
        }
        // Charges the set statement did not make (replays, refusals) take the one-by-one path.
        for i in charges {
            if replies[i].is_none() {
                replies[i] = Some(self.apply_inner(&batch[i], now_ms)?);
            }
        }
        Ok(replies
            .into_iter()
            .map(|reply| reply.expect("every request of the batch was applied"))
            .collect())
    }

    fn save_many(
        &mut self,
        batch: &[LedgerRequest],
        saves: &[usize],
        now_ms: i64,
        replies: &mut [Option<LedgerReply>],
    ) -> Result<(), postgres::Error> {
        if saves.is_empty() {
            return Ok(());
        }
        let save_at = |i: usize| match &batch[i] {
            LedgerRequest::Save(save) => save,
            _ => unreachable!("only saves are listed"),
        };
        let users: Vec<i64> = saves.iter().map(|&i| save_at(i).user.0).collect();
        let stmt = self.stmt(LOCK_MANY)?;
        let owners: HashMap<i64, Option<String>> = self
            .client
            .query(&stmt, &[&users])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()?;
        let (mut held, mut release, mut expires, mut name_lists) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut state_users, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut grant_users, mut grant_ids) = (Vec::new(), Vec::new());
        for &i in saves {
            let save = save_at(i);
            let owner = owners.get(&save.user.0).cloned().flatten();
            if owner.as_deref() != Some(&*save.server.0) {
                replies[i] = Some(LedgerReply::LeaseLost { owner });
                continue;
            }
            held.push(save.user.0);
            release.push(save.release);
            expires.push(now_ms + save.lease_ms);
            name_lists.push(array_literal(save.state.0.keys()));
            for (name, value) in &save.state.0 {
                state_users.push(save.user.0);
                names.push(name.as_str());
                values.push(value.as_str());
            }
            for id in &save.granted {
                grant_users.push(save.user.0);
                grant_ids.push(id.0.as_str());
            }
        }
        if held.is_empty() {
            return Ok(());
        }
        let stmt = self.stmt(SAVE_MANY)?;
        let granted: HashSet<String> = self
            .client
            .query(
                &stmt,
                &[
                    &held,
                    &release,
                    &expires,
                    &name_lists,
                    &state_users,
                    &names,
                    &values,
                    &now_ms,
                    &grant_users,
                    &grant_ids,
                ],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for &i in saves {
            if replies[i].is_none() {
                let newly_granted = save_at(i)
                    .granted
                    .iter()
                    .filter(|id| granted.contains(&id.0))
                    .cloned()
                    .collect();
                replies[i] = Some(LedgerReply::Saved { newly_granted });
            }
        }
        Ok(())
    }

    fn charge_many(
        &mut self,
        batch: &[LedgerRequest],
        charges: &[usize],
        now_ms: i64,
        replies: &mut [Option<LedgerReply>],
    ) -> Result<(), postgres::Error> {
        if charges.is_empty() {
            return Ok(());
        }
        let receipts: Vec<(usize, ReceiptInfo, String)> = charges
            .iter()
            .map(|&i| {
                let LedgerRequest::Charge(charge) = &batch[i] else {
                    unreachable!("only charges are listed")
                };
                let receipt = charge.new_receipt();
                (i, receipt, charge.request_id.0.to_string())
            })
            .collect();
        let purchase_ids: Vec<&str> = receipts
            .iter()
            .map(|(_, r, _)| r.purchase_id.as_str())
            .collect();
        let users: Vec<i64> = receipts.iter().map(|(_, r, _)| r.player_id.0).collect();
        let prices: Vec<i64> = receipts
            .iter()
            .map(|(_, r, _)| r.currency_spent as i64)
            .collect();
        let request_ids: Vec<&str> = receipts.iter().map(|(_, _, id)| id.as_str()).collect();
        let products: Vec<i64> = receipts.iter().map(|(_, r, _)| r.product_id.0).collect();
        let places: Vec<i64> = receipts
            .iter()
            .map(|(_, r, _)| r.place_id_where_purchased.0)
            .collect();
        let channels: Vec<i64> = receipts
            .iter()
            .map(|(_, r, _)| i64::from(r.product_purchase_channel.code()))
            .collect();
        let tests: Vec<bool> = receipts
            .iter()
            .map(|(_, r, _)| r.is_test_purchase)
            .collect();
        let currency = CurrencyType::Premium as i64;
        let stmt = self.stmt(CHARGE_MANY)?;
        let charged: HashMap<i64, i64> = self
            .client
            .query(
                &stmt,
                &[
                    &purchase_ids,
                    &users,
                    &prices,
                    &request_ids,
                    &products,
                    &places,
                    &channels,
                    &tests,
                    &now_ms,
                    &currency,
                ],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()?;
        for (i, receipt, _) in receipts {
            if let Some(&balance) = charged.get(&receipt.player_id.0) {
                replies[i] = Some(LedgerReply::Charged {
                    receipt,
                    balance: balance as u64,
                    replayed: false,
                });
            }
        }
        Ok(())
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

/// Default `idle_in_transaction_session_timeout` when the connection string sets none.
const DEFAULT_IDLE_IN_TRANSACTION_MS: i64 = 30_000;

/// Connects, and makes sure a server that freezes in the middle of a transaction (SIGSTOP, a VM
/// pause) cannot hold its players' row locks forever: PostgreSQL ends such a session after
/// `idle_in_transaction_session_timeout`, rolling it back, so other servers can take the players
/// over once their leases expire. Set it lower in the connection string
/// (`options='-c idle_in_transaction_session_timeout=1000'`) for short leases.
fn session(url: &str) -> Result<Client, postgres::Error> {
    let mut client = Client::connect(url, NoTls)?;
    let configured: String = client
        .query_one(
            "SELECT current_setting('idle_in_transaction_session_timeout')",
            &[],
        )?
        .try_get(0)?;
    if configured == "0" {
        client.batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = {DEFAULT_IDLE_IN_TRANSACTION_MS}"
        ))?;
    }
    Ok(client)
}

enum VersionError {
    Db(String),
    NotALedger(String),
}

enum MigrateError {
    Db(String),
    Refused(VersionError),
    Newer(i64),
}

/// The schema version of the database: 0 for an empty one. Refuses a database that has tables
/// but no ledger marker.
fn read_version(client: &mut impl GenericClient) -> Result<i64, VersionError> {
    let db = |e: postgres::Error| VersionError::Db(describe(&e));
    // Both from one MVCC snapshot of the catalog (not the catalog caches), so a server that
    // waited for another's migration sees all of it.
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE tablename = 'bevy_marketplace_meta'), count(*)
             FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .map_err(db)?;
    let has_meta: i64 = row.try_get(0).map_err(db)?;
    let tables: i64 = row.try_get(1).map_err(db)?;
    if has_meta == 0 {
        if tables > 0 {
            return Err(VersionError::NotALedger(format!(
                "it is a database of another program ({tables} tables and no bevy_marketplace_meta)"
            )));
        }
        return Ok(0);
    }
    let rows = client
        .query(
            "SELECT application, schema_version FROM bevy_marketplace_meta",
            &[],
        )
        .map_err(|e| VersionError::NotALedger(describe(&e)))?;
    match rows.as_slice() {
        [row] => {
            let application: String = row
                .try_get(0)
                .map_err(|e| VersionError::NotALedger(describe(&e)))?;
            if application != APPLICATION {
                return Err(VersionError::NotALedger(format!(
                    "its bevy_marketplace_meta names application {application:?}"
                )));
            }
            row.try_get(1)
                .map_err(|e| VersionError::NotALedger(describe(&e)))
        }
        rows => Err(VersionError::NotALedger(format!(
            "bevy_marketplace_meta has {} rows instead of one",
            rows.len()
        ))),
    }
}

/// Brings the schema up to date in one transaction. An advisory lock serializes servers that
/// connect to a new database at once; the version is read again under it.
fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    let db = |e: postgres::Error| MigrateError::Db(describe(&e));
    let mut tx = client.transaction().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db)?;
    let from = read_version(&mut tx).map_err(MigrateError::Refused)?;
    if from > PG_SCHEMA_VERSION {
        return Err(MigrateError::Newer(from));
    }
    if from == PG_SCHEMA_VERSION {
        return Ok(());
    }
    for sql in &MIGRATIONS[from as usize..PG_SCHEMA_VERSION as usize] {
        tx.batch_execute(sql).map_err(db)?;
    }
    tx.execute(
        "UPDATE bevy_marketplace_meta SET schema_version = $1",
        &[&PG_SCHEMA_VERSION],
    )
    .map_err(db)?;
    tx.commit().map_err(db)
}

fn receipt_from_row(row: &Row) -> Result<ReceiptInfo, postgres::Error> {
    let channel: i64 = row.try_get(6)?;
    Ok(ReceiptInfo {
        purchase_id: PurchaseId(row.try_get(0)?),
        player_id: UserId(row.try_get(1)?),
        product_id: ProductId(row.try_get(2)?),
        place_id_where_purchased: PlaceId(row.try_get(3)?),
        currency_spent: row.try_get::<_, i64>(4)? as u64,
        currency_type: CurrencyType::Premium,
        // The schema's CHECK keeps channels in range.
        product_purchase_channel: ProductPurchaseChannel::from_code(channel)
            .unwrap_or(ProductPurchaseChannel::InExperience),
        is_test_purchase: row.try_get(7)?,
    })
}

/// The order to apply a batch in: by user within each stretch between audits, so that every
/// server locks account rows in the same order and concurrent batches do not deadlock. The
/// requests of one user keep their order.
pub(super) fn lock_order(batch: &[LedgerRequest]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    let mut start = 0;
    for end in 0..=batch.len() {
        if end == batch.len() || matches!(batch[end], LedgerRequest::Audit) {
            order[start..end].sort_by_key(|&i| batch[i].user().map(|u| u.0));
            start = end + 1;
        }
    }
    order
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
