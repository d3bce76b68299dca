//! The PostgreSQL ledger: one database shared by many game servers.
//!
//! Same schema and the same rules as the other stores. What changes is concurrency: several
//! servers write at once, so a batch first locks every account row it touches (existing rows in
//! user order, then the rows it creates in user order), decides with the ledger rules on what it
//! read, and writes back in one statement. The session lease — owner, expiry and token — is part
//! of the locked row, and expiry is judged by the database's clock. A deadlock or a lock timeout is
//! a [`LedgerError::Storage`]: the worker rolls the batch back and the plugin retries it.

mod books;
mod conn;
mod listen;
mod options;
mod schema;
mod sql;

use super::rules::{self, LeasePolicy};
use super::{
    JournalEntry, JournalKind, LeaseRecord, LedgerAudit, LedgerError, LedgerReply, LedgerRequest,
    LedgerStore, PlayerSnapshot, only_reply, purchase_debits,
};
use crate::ids::{PurchaseId, UserId};

use books::CachedBooks;
use conn::{Conn, PgError};
pub(crate) use listen::listen;
pub use options::{LeaseClock, PostgresOptions};
pub use schema::PG_SCHEMA_VERSION;
use schema::{MigrateError, VersionError, migrate, read_version};
use sql::*;

/// A ledger in a PostgreSQL database, shared by any number of game servers.
pub struct PostgresLedger {
    /// `None` after a failure left the connection unusable; the next transaction reconnects.
    conn: Option<Conn>,
    options: PostgresOptions,
    location: String,
    /// Between `begin` and `commit` or `rollback`.
    in_transaction: bool,
    /// `BEGIN` has been sent: it goes with the transaction's first reads, in one round trip.
    begun: bool,
    /// The database's time at the start of the transaction (Unix ms), with
    /// [`LeaseClock::Database`].
    database_now_ms: Option<i64>,
    /// The last batch's decisions, written back with the `COMMIT` in one round trip.
    unwritten: Option<(CachedBooks, i64)>,
}

impl std::fmt::Debug for PostgresLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresLedger({})", self.location)
    }
}

fn storage(e: PgError) -> LedgerError {
    LedgerError::Storage(e.to_string())
}

/// The URL or connection string with any password hidden, for messages.
pub(super) fn redact(url: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    for word in url.split(' ') {
        if word.starts_with("password=") {
            words.push("password=***".into());
        } else {
            words.push(word.to_owned());
        }
    }
    let mut s = words.join(" ");
    if let Some(scheme) = s.find("://") {
        // postgres://user:secret@host/db
        let rest = scheme + 3;
        let authority_end = s[rest..].find(['/', '?']).map_or(s.len(), |i| rest + i);
        if let Some(at) = s[rest..authority_end].rfind('@')
            && let Some(colon) = s[rest..rest + at].find(':')
        {
            s.replace_range(rest + colon + 1..rest + at, "***");
        }
        // postgres://host/db?user=u&password=secret
        if let Some(query) = s.find('?') {
            let params: Vec<String> = s[query + 1..]
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some(("password", _)) => "password=***".to_owned(),
                    _ => param.to_owned(),
                })
                .collect();
            s = format!("{}?{}", &s[..query], params.join("&"));
        }
    }
    format!("postgres:{s}")
}

impl PostgresLedger {
    /// Connects to the database (a `postgres://` URL or a `key=value` connection string, no TLS,
    /// or [`PostgresOptions`] with timeouts of your choosing), creating the schema in an empty
    /// database and migrating an older one.
    ///
    /// A database holding other tables and no ledger, or a ledger written by a newer version,
    /// is refused before anything is written to it.
    pub fn connect(options: impl Into<PostgresOptions>) -> Result<Self, LedgerError> {
        let options = options.into();
        let location = redact(&options.url);
        let open_err = |reason: String| LedgerError::Open {
            location: location.clone(),
            reason,
        };
        let not_ledger = |reason: String| LedgerError::NotALedger {
            location: location.clone(),
            reason,
        };
        let mut conn = Conn::connect(&options).map_err(|e| open_err(e.to_string()))?;
        // Read-only checks first.
        let version = read_version(&mut conn).map_err(|e| match e {
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
            match migrate(&mut conn) {
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
            conn: Some(conn),
            options,
            location,
            in_transaction: false,
            begun: false,
            database_now_ms: None,
            unwritten: None,
        })
    }

    /// The options it connected with.
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    fn conn(&mut self) -> Result<&mut Conn, PgError> {
        if !self.conn.as_ref().is_some_and(Conn::is_usable) {
            // The connection dropped or timed out (a restart, the network): make a new one.
            self.conn = None;
            self.conn = Some(Conn::connect(&self.options)?);
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    /// The connection of the transaction in progress: never a new one, whose statements would
    /// run outside it.
    fn transaction_conn(&mut self) -> Result<&mut Conn, PgError> {
        self.conn
            .as_mut()
            .filter(|c| c.is_usable())
            .ok_or(PgError::Lost)
    }

    /// Reads the whole ledger (also available as [`LedgerRequest::Audit`]).
    pub fn audit(&mut self) -> Result<LedgerAudit, LedgerError> {
        if self.in_transaction {
            return Err(LedgerError::Storage(
                "audit() reads committed data: call it outside a transaction, or apply LedgerRequest::Audit".into(),
            ));
        }
        let conn = self.conn().map_err(storage)?;
        audit(conn).map_err(storage)
    }

    fn apply_all(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Result<Vec<LedgerReply>, PgError> {
        if !self.in_transaction {
            return Err(PgError::Corrupt("a request outside a transaction".into()));
        }
        let clock = self.options.clock;
        let mut begun = self.begun;
        // From here a ROLLBACK is due whatever happens (harmless if BEGIN never arrived).
        self.begun = true;
        let mut database_now = self.database_now_ms;
        let mut unwritten = self.unwritten.take();
        let conn = self.transaction_conn()?;
        // Decisions of an earlier batch in this transaction are written before new reads.
        if let Some((books, at)) = unwritten.take() {
            books.write(conn, at, false)?;
        }
        let mut replies = Vec::with_capacity(batch.len());
        let stretches: Vec<&[LedgerRequest]> =
            batch.split_inclusive(LedgerRequest::reads_ledger).collect();
        let last = stretches.len().saturating_sub(1);
        for (i, stretch) in stretches.into_iter().enumerate() {
            let (requests, read_after) = match stretch.split_last() {
                Some((last, requests)) if last.reads_ledger() => (requests, Some(last)),
                _ => (stretch, None),
            };
            if !requests.is_empty() || !begun {
                let (mut books, at) = CachedBooks::read(conn, requests, now_ms, !begun)?;
                begun = true;
                let now = match clock {
                    LeaseClock::Database => *database_now.get_or_insert(at),
                    LeaseClock::GameServer => now_ms,
                };
                for request in requests {
                    replies.push(rules::apply(
                        &mut books,
                        request,
                        now,
                        LeasePolicy::default(),
                        &mut Vec::new(),
                    )?);
                }
                if i == last && read_after.is_none() {
                    // Written back with the COMMIT.
                    unwritten = Some((books, now));
                } else {
                    books.write(conn, now, false)?;
                }
            }
            if let Some(request) = read_after {
                // It reads the database, so it sees what the requests before it wrote.
                replies.push(read_ledger(conn, request)?);
            }
        }
        self.begun = begun;
        self.database_now_ms = database_now;
        self.unwritten = unwritten;
        Ok(replies)
    }
}

/// Answers a request that reads the stored ledger as a whole.
fn read_ledger(conn: &mut Conn, request: &LedgerRequest) -> Result<LedgerReply, PgError> {
    Ok(match request {
        LedgerRequest::History(history) if history.cursor_keepable().is_err() => {
            LedgerReply::History(history.cursor_keepable().map(|()| Default::default()))
        }
        LedgerRequest::History(super::HistoryRequest {
            user,
            filter,
            page,
            after,
        }) => {
            let offset = super::HistoryPage::skipped(*page, after.as_ref()) as i64;
            let rows = conn.query(
                HISTORY,
                &[
                    &user.0,
                    &filter.product.map(|p| p.0),
                    &filter.state.map(crate::receipt::ReceiptState::as_str),
                    &filter.from_ms,
                    &filter.to_ms,
                    &((super::HISTORY_PAGE_SIZE + 1) as i64),
                    &offset,
                    &after.as_ref().map(|c| c.purchased_at_ms),
                    &after.as_ref().map(|c| c.purchase_id.0.as_str()),
                ],
            )?;
            let entries = rows
                .iter()
                .map(|row| Ok(receipt_from_row(row)?.stored().history_entry()))
                .collect::<Result<Vec<_>, PgError>>()?;
            LedgerReply::History(Ok(super::HistoryPage::of(entries.into_iter(), 0, None)))
        }
        LedgerRequest::ReadChanges(read) => {
            let span = conn.query(CHANGES_SPAN, &[])?;
            let row = span
                .first()
                .ok_or_else(|| PgError::Corrupt("the change feed gave no span".into()))?;
            let latest: i64 = row.try_get(0)?;
            let oldest: Option<i64> = row.try_get(1)?;
            let mut changes = Vec::new();
            if let Some(since) = read.since {
                for row in conn.query(
                    CHANGES_AFTER,
                    &[&since, &(super::CHANGES_ANSWERED as i64 + 1)],
                )? {
                    changes.push((row.try_get::<_, i64>(0)?, UserId(row.try_get(1)?)));
                }
            }
            LedgerReply::ReadChanges(super::ChangeFeed::of(
                read.since,
                changes,
                latest,
                oldest.unwrap_or(latest + 1),
            ))
        }
        LedgerRequest::Sales(query) => {
            // Whole hours from the totals; the part of an hour at either edge from the receipts.
            let spans = query.spans();
            let bucket = query.bucket.millis();
            let mut rows = super::reports::SalesRows::default();
            if let Some((from, to)) = spans.hours {
                for row in conn.query(SALES_FROM_TOTALS, &[&from, &to, &bucket])? {
                    rows.add(sales_row(&row)?);
                }
            }
            for (from, to) in spans.edges {
                for row in conn.query(SALES, &[&from, &to, &bucket])? {
                    rows.add(sales_row(&row)?);
                }
            }
            LedgerReply::Sales(rows.into_rows())
        }
        _ => LedgerReply::Audit(audit(conn)?),
    })
}

/// Reads the whole ledger; a row it cannot read is an error naming it.
fn audit(conn: &mut Conn) -> Result<LedgerAudit, PgError> {
    let mut audit = LedgerAudit::default();
    for row in conn.query(ALL_RECEIPTS, &[])? {
        audit.receipts.push(receipt_from_row(&row)?.stored());
    }
    for row in conn.query(ALL_ACCOUNTS, &[])? {
        let user = UserId(row.try_get(0)?);
        let balance: i64 = row.try_get(1)?;
        let balance = u64::try_from(balance)
            .map_err(|_| PgError::Corrupt(format!("account {user}: balance {balance}")))?;
        audit
            .accounts
            .insert(user, (balance, PlayerSnapshot::default()));
        audit.leases.insert(
            user,
            LeaseRecord {
                owner: row.try_get(2)?,
                expires_at_ms: row.try_get(3)?,
                token: row.try_get(4)?,
            },
        );
    }
    for row in conn.query(ALL_STATES, &[])? {
        let user = UserId(row.try_get(0)?);
        let (_, state) = audit.accounts.get_mut(&user).ok_or_else(|| {
            PgError::Corrupt(format!("components of user {user}, who has no account"))
        })?;
        state.0.insert(row.try_get(1)?, row.try_get(2)?);
    }
    for row in conn.query(ALL_JOURNAL, &[])? {
        audit.journal.push(JournalEntry {
            user: UserId(row.try_get(0)?),
            delta: row.try_get(1)?,
            reason: row.try_get(2)?,
            purchase_id: row.try_get::<_, Option<String>>(3)?.map(PurchaseId),
            kind: {
                let kind: String = row.try_get(4)?;
                JournalKind::parse(&kind)
                    .ok_or_else(|| PgError::Corrupt(format!("journal kind {kind:?}")))?
            },
        });
    }
    for row in conn.query(ALL_CREDITS, &[])? {
        audit.credits.push(credit_from_row(&row)?);
    }
    for row in conn.query(ALL_SHORTFALLS, &[])? {
        let user = UserId(row.try_get(0)?);
        let shortfall: i64 = row.try_get(1)?;
        audit.shortfalls.insert(user, shortfall.max(0) as u64);
    }
    audit.purchase_debits = purchase_debits(&audit.journal);
    for row in conn.query(ALL_SALES_HOURS, &[])? {
        audit.sales_hours.push(sales_row(&row)?);
    }
    Ok(audit)
}

/// A row of sales: bucket, product, units, currency, refunded units, refunded currency, test
/// units, rejected units, rejected currency.
fn sales_row(row: &tokio_postgres::Row) -> Result<super::SalesRow, PgError> {
    let count = |i: usize| -> Result<u64, PgError> { Ok(row.try_get::<_, i64>(i)?.max(0) as u64) };
    Ok(super::SalesRow {
        bucket_start_ms: row.try_get(0)?,
        product_id: crate::ids::ProductId(row.try_get(1)?),
        units: count(2)?,
        currency: count(3)?,
        refunded_units: count(4)?,
        refunded_currency: count(5)?,
        test_units: count(6)?,
        rejected_units: count(7)?,
        rejected_currency: count(8)?,
    })
}

impl LedgerStore for PostgresLedger {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn begin(&mut self) -> Result<(), LedgerError> {
        // A new connection if the last one failed; `BEGIN` itself goes with the first reads.
        self.conn().map_err(storage)?;
        self.in_transaction = true;
        self.begun = false;
        self.database_now_ms = None;
        self.unwritten = None;
        Ok(())
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
        self.in_transaction = false;
        let unwritten = self.unwritten.take();
        if !std::mem::take(&mut self.begun) {
            return Ok(()); // nothing was sent
        }
        let conn = self.transaction_conn().map_err(storage)?;
        match unwritten {
            Some((books, now)) => books.write(conn, now, true),
            None => conn.pipeline(&[(COMMIT, &[])]).map(drop),
        }
        .map_err(storage)
    }

    fn rollback(&mut self) {
        self.in_transaction = false;
        self.unwritten = None;
        if std::mem::take(&mut self.begun)
            && let Some(conn) = self.conn.as_mut().filter(|c| c.is_usable())
        {
            let _ = conn.batch_execute("ROLLBACK");
        }
    }
}
