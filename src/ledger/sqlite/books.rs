//! The SQLite ledger's rows as the ledger rules read and write them, written through at once
//! inside the store's `BEGIN IMMEDIATE` transaction.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, params};

use super::hot::{Hot, HotStatements};
use super::pending_sales::PendingSales;
use super::receipt_from_row;
use crate::ids::ProductId;
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::ledger::reports::{SalesDelta, SalesRows};
use crate::ledger::rules::{AccountRow, Books, ReceiptStatus};
use crate::ledger::{
    CHANGES_ANSWERED, CHANGES_KEPT, ChangeFeed, Clawback, CreditRecord, CreditReversal,
    HISTORY_PAGE_SIZE, HistoryCursor, HistoryFilter, HistoryPage, JournalEntry, JournalKind,
    LedgerAudit, PlayerSnapshot, RefundRecord, SalesQuery, SalesRow, StoredReceipt,
};
use crate::receipt::{CurrencyType, ReceiptInfo, ReceiptState};

pub(super) struct SqliteBooks<'a, 'c> {
    pub(super) conn: &'c Connection,
    /// The statements every purchase runs, held for the batch.
    pub(super) hot: &'a mut HotStatements<'c>,
    /// The open transaction's additions to the sales totals, written once per hour and product
    /// when it commits (see [`PendingSales`]).
    pub(super) sales: &'a mut PendingSales,
}

/// A request id as the receipts table keeps it.
fn request_text(request: RequestId) -> String {
    request.0.hyphenated().to_string()
}

/// The statement that deletes a player's components other than the `names` a save carries
/// (`?1` the user, `?2`… the names), kept for the usual counts so a save formats none.
fn delete_other_components(names: usize) -> std::borrow::Cow<'static, str> {
    const KEPT: usize = 16;
    static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let text = |n: usize| {
        if n == 0 {
            "DELETE FROM player_components WHERE user_id = ?1".to_owned()
        } else {
            let list: Vec<String> = (2..n + 2).map(|i| format!("?{i}")).collect();
            format!(
                "DELETE FROM player_components WHERE user_id = ?1 AND name NOT IN ({})",
                list.join(", ")
            )
        }
    };
    match STATEMENTS
        .get_or_init(|| (0..=KEPT).map(text).collect())
        .get(names)
    {
        Some(kept) => kept.as_str().into(),
        None => text(names).into(),
    }
}

impl Books for SqliteBooks<'_, '_> {
    type Error = rusqlite::Error;

    fn account(&mut self, user: UserId) -> rusqlite::Result<Option<AccountRow>> {
        self.hot
            .get(Hot::Account)?
            .query_row([user.0], |r| {
                Ok(AccountRow {
                    balance: r.get::<_, i64>(0)? as u64,
                    lease_owner: r.get(1)?,
                    lease_expires_ms: r.get(2)?,
                    lease_token: r.get(3)?,
                    shortfall: r.get::<_, i64>(4)? as u64,
                })
            })
            .optional()
    }

    fn put_account(
        &mut self,
        user: UserId,
        account: &AccountRow,
        created: bool,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        let values = params![
            user.0,
            account.balance as i64,
            account.lease_owner,
            account.lease_expires_ms,
            account.lease_token,
            now_ms,
            account.shortfall as i64
        ];
        let statement = if created {
            Hot::InsertAccount
        } else {
            Hot::UpdateAccount
        };
        self.hot.get(statement)?.execute(values)?;
        Ok(())
    }

    fn receipt_by_request(&mut self, request: RequestId) -> rusqlite::Result<Option<ReceiptInfo>> {
        self.hot
            .get(Hot::ReceiptByRequest)?
            .query_row([request_text(request)], receipt_from_row)
            .optional()
    }

    fn receipt(&mut self, id: &PurchaseId) -> rusqlite::Result<Option<ReceiptStatus>> {
        self.hot
            .get(Hot::ReceiptStatus)?
            .query_row([&id.0], |row| {
                Ok(ReceiptStatus {
                    info: receipt_from_row(row)?,
                    state: state_at(row, 9)?,
                    refund: refund_from_row(row, 10)?,
                    purchased_at_ms: row.get(8)?,
                })
            })
            .optional()
    }

    fn insert_receipt(
        &mut self,
        receipt: &ReceiptInfo,
        request: RequestId,
        product_name: &str,
        now_ms: i64,
    ) -> rusqlite::Result<()> {
        self.hot.get(Hot::InsertReceipt)?.execute(params![
            receipt.purchase_id.0,
            request_text(request),
            receipt.player_id.0,
            receipt.product_id.0,
            receipt.place_id_where_purchased.0,
            receipt.currency_spent as i64,
            CurrencyType::Premium as i32,
            receipt.product_purchase_channel.code(),
            receipt.is_test_purchase,
            now_ms,
            product_name
        ])?;
        Ok(())
    }

    fn grant_receipt(&mut self, id: &PurchaseId, now_ms: i64) -> rusqlite::Result<()> {
        self.hot
            .get(Hot::GrantReceipt)?
            .execute(params![id.0, now_ms])?;
        Ok(())
    }

    fn put_refund(
        &mut self,
        id: &PurchaseId,
        state: ReceiptState,
        refund: &RefundRecord,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE receipts SET state = ?5, refunded_ms = ?2, refund_reason = ?3, clawback = ?4
                 WHERE purchase_id = ?1",
            )?
            .execute(params![
                id.0,
                refund.at_ms,
                refund.reason,
                refund.clawback.as_str(),
                state.as_str()
            ])?;
        Ok(())
    }

    fn clawbacks(&mut self, user: UserId) -> rusqlite::Result<Vec<ReceiptInfo>> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            receipt_columns!(),
            " FROM receipts WHERE user_id = ?1 AND clawback = 'pending' ORDER BY created_ms, purchase_id"
        ))?;
        let rows = stmt.query_map([user.0], receipt_from_row)?;
        rows.collect()
    }

    fn credit(&mut self, source: &str, order_id: &str) -> rusqlite::Result<Option<CreditRecord>> {
        self.conn
            .prepare_cached(concat!(
                "SELECT ",
                credit_columns!(),
                " FROM credits WHERE source = ?1 AND order_id = ?2"
            ))?
            .query_row([source, order_id], credit_from_row)
            .optional()
    }

    fn put_credit(&mut self, credit: &CreditRecord, _created: bool) -> rusqlite::Result<()> {
        let reversal = credit.reversal.as_ref();
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO credits (source, order_id, user_id, amount, credited_ms,
                                                 reversed_ms, reversed_taken, reversed_shortfall)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                credit.source,
                credit.order_id,
                credit.user.0,
                credit.amount as i64,
                credit.credited_at_ms,
                reversal.map(|r| r.at_ms),
                reversal.map(|r| r.taken as i64),
                reversal.map(|r| r.shortfall as i64)
            ])?;
        Ok(())
    }

    fn journal(&mut self, entry: JournalEntry, now_ms: i64) -> rusqlite::Result<()> {
        self.hot.get(Hot::Journal)?.execute(params![
            entry.user.0,
            entry.delta,
            entry.kind.as_str(),
            entry.reason,
            entry.purchase_id.map(|p| p.0),
            now_ms
        ])?;
        Ok(())
    }

    fn state(&mut self, user: UserId) -> rusqlite::Result<PlayerSnapshot> {
        load_state(self.conn, user)
    }

    fn put_state(&mut self, user: UserId, state: &PlayerSnapshot) -> rusqlite::Result<()> {
        // Components the player no longer has go; the rest are written over in place, and one
        // whose value did not change is not written at all. (Deleting every row and inserting
        // them again moved each save's rows through the table's b-tree twice.)
        // SQLite binds at most 32,766 parameters a statement: a player with more components than
        // that has every row deleted and written again.
        const MOST_NAMES: usize = 32_000;
        let names = if state.0.len() <= MOST_NAMES {
            state.0.len()
        } else {
            0
        };
        let delete = |gone: &mut rusqlite::Statement| {
            for (i, name) in state.0.keys().take(names).enumerate() {
                gone.raw_bind_parameter(i + 2, name)?;
            }
            gone.raw_bind_parameter(1, user.0)?;
            gone.raw_execute()
        };
        match delete_other_components(names) {
            std::borrow::Cow::Borrowed(usual) => delete(&mut *self.conn.prepare_cached(usual)?)?,
            // An unusual count is not kept in the statement cache, where it would push out the
            // statements every purchase runs.
            std::borrow::Cow::Owned(unusual) => delete(&mut self.conn.prepare(&unusual)?)?,
        };
        let upsert = self.hot.get(Hot::PutComponent)?;
        for (name, value) in &state.0 {
            upsert.execute(params![user.0, name, value])?;
        }
        Ok(())
    }

    fn pending(&mut self, user: UserId) -> rusqlite::Result<Vec<ReceiptInfo>> {
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            receipt_columns!(),
            " FROM receipts WHERE user_id = ?1 AND state = 'pending' ORDER BY created_ms, purchase_id"
        ))?;
        let rows = stmt.query_map([user.0], receipt_from_row)?;
        rows.collect()
    }

    fn audit(&mut self) -> rusqlite::Result<LedgerAudit> {
        self.sales.write(self.conn)?;
        audit(self.conn)
    }

    fn history(
        &mut self,
        user: UserId,
        filter: &HistoryFilter,
        page: u32,
        after: Option<&HistoryCursor>,
    ) -> rusqlite::Result<HistoryPage> {
        // `created_ms <= coalesce(?8, …)` lets the (user, time) index seek to a cursor, so a deep
        // page reads no more rows than the first.
        let mut stmt = self.conn.prepare_cached(concat!(
            "SELECT ",
            stored_columns!(),
            " FROM receipts WHERE user_id = ?1 AND (?2 IS NULL OR product_id = ?2)
               AND (?3 IS NULL OR state = ?3) AND (?4 IS NULL OR created_ms >= ?4)
               AND (?5 IS NULL OR created_ms < ?5)
               AND created_ms <= coalesce(?8, 9223372036854775807)
               AND (?8 IS NULL OR created_ms < ?8 OR purchase_id < ?9)
             ORDER BY created_ms DESC, purchase_id DESC LIMIT ?6 OFFSET ?7"
        ))?;
        let rows = stmt.query_map(
            params![
                user.0,
                filter.product.map(|p| p.0),
                filter.state.map(ReceiptState::as_str),
                filter.from_ms,
                filter.to_ms,
                (HISTORY_PAGE_SIZE + 1) as i64,
                HistoryPage::skipped(page, after) as i64,
                after.map(|c| c.purchased_at_ms),
                after.map(|c| c.purchase_id.0.as_str()),
            ],
            stored_from_row,
        )?;
        let entries = rows
            .map(|r| r.map(|r| r.history_entry()))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(HistoryPage::of(entries.into_iter(), 0, None))
    }

    fn sales(&mut self, query: &SalesQuery) -> rusqlite::Result<Vec<SalesRow>> {
        // Whole hours from the totals; the part of an hour at either edge from the receipts.
        self.sales.write(self.conn)?;
        let spans = query.spans();
        let mut rows = SalesRows::default();
        let bucket = query.bucket.millis();
        if let Some((from, to)) = spans.hours {
            let mut stmt = self.conn.prepare_cached(
                "SELECT (hour_ms / ?3) * ?3 AS bucket, product_id, sum(units), sum(currency),
                        sum(refunded_units), sum(refunded_currency), sum(test_units),
                        sum(rejected_units), sum(rejected_currency)
                 FROM sales_hours WHERE hour_ms >= ?1 AND hour_ms < ?2
                 GROUP BY bucket, product_id",
            )?;
            for row in stmt.query_map(params![from, to, bucket], sales_row)? {
                rows.add(row?);
            }
        }
        for (from, to) in spans.edges {
            let mut stmt = self.conn.prepare_cached(
                "SELECT (created_ms / ?3) * ?3 AS bucket, product_id,
                        sum(CASE WHEN is_test THEN 0 ELSE 1 END),
                        sum(CASE WHEN is_test THEN 0 ELSE currency_spent END),
                        sum(CASE WHEN NOT is_test AND state = 'refunded' THEN 1 ELSE 0 END),
                        sum(CASE WHEN NOT is_test AND state = 'refunded' THEN currency_spent ELSE 0 END),
                        sum(CASE WHEN is_test THEN 1 ELSE 0 END),
                        sum(CASE WHEN NOT is_test AND state = 'rejected' THEN 1 ELSE 0 END),
                        sum(CASE WHEN NOT is_test AND state = 'rejected' THEN currency_spent ELSE 0 END)
                 FROM receipts WHERE created_ms >= ?1 AND created_ms < ?2
                 GROUP BY bucket, product_id",
            )?;
            for row in stmt.query_map(params![from, to, bucket], sales_row)? {
                rows.add(row?);
            }
        }
        Ok(rows.into_rows())
    }

    fn count_sale(&mut self, sale: &SalesDelta) -> rusqlite::Result<()> {
        self.sales.add(sale);
        // Outside a transaction every statement commits on its own: so does the sale, at once.
        if self.conn.is_autocommit() {
            self.sales.write(self.conn)?;
        }
        Ok(())
    }

    fn note_change(&mut self, user: UserId, now_ms: i64) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached("INSERT INTO changes (user_id, at_ms) VALUES (?1, ?2)")?
            .execute(params![user.0, now_ms])?;
        let id = self.conn.last_insert_rowid();
        // Now and then, the oldest go: the feed keeps at least the newest `CHANGES_KEPT`.
        if id % 1000 == 0 {
            self.conn
                .prepare_cached("DELETE FROM changes WHERE id <= ?1")?
                .execute(params![id - CHANGES_KEPT])?;
        }
        Ok(())
    }

    fn changes(&mut self, since: Option<i64>) -> rusqlite::Result<ChangeFeed> {
        let (latest, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT coalesce(max(id), 0), min(id) FROM changes",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut rows = Vec::new();
        if let Some(since) = since {
            let mut stmt = self.conn.prepare_cached(
                "SELECT id, user_id FROM changes WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            rows = stmt
                .query_map(params![since, CHANGES_ANSWERED as i64 + 1], |r| {
                    Ok((r.get(0)?, UserId(r.get(1)?)))
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(ChangeFeed::of(
            since,
            rows,
            latest,
            oldest.unwrap_or(latest + 1),
        ))
    }
}

/// The columns [`credit_from_row`] reads.
macro_rules! credit_columns {
    () => {
        "source, order_id, user_id, amount, credited_ms, reversed_ms, reversed_taken, reversed_shortfall"
    };
}
use credit_columns;

fn credit_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CreditRecord> {
    let reversed_ms: Option<i64> = row.get(5)?;
    Ok(CreditRecord {
        source: row.get(0)?,
        order_id: row.get(1)?,
        user: UserId(row.get(2)?),
        amount: row.get::<_, i64>(3)? as u64,
        credited_at_ms: row.get(4)?,
        reversal: match reversed_ms {
            Some(at_ms) => Some(CreditReversal {
                at_ms,
                taken: row.get::<_, i64>(6)? as u64,
                shortfall: row.get::<_, i64>(7)? as u64,
            }),
            None => None,
        },
    })
}

/// A receipt with its state and history (the columns of [`stored_columns`]).
fn stored_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredReceipt> {
    let info = receipt_from_row(row)?;
    let request: String = row.get(10)?;
    let request_id = request.parse().map_err(|e: uuid::Error| {
        rusqlite::Error::FromSqlConversionFailure(
            10,
            rusqlite::types::Type::Text,
            format!("bad request id {request:?}: {e}").into(),
        )
    })?;
    Ok(StoredReceipt {
        info,
        state: state_at(row, 9)?,
        request_id: RequestId(request_id),
        product_name: row.get(11)?,
        purchased_at_ms: row.get(8)?,
        granted_at_ms: row.get(12)?,
        refund: refund_from_row(row, 13)?,
    })
}

/// The refund in the columns from `at` (time, reason, clawback), if the receipt has one.
fn refund_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<RefundRecord>> {
    let Some(at_ms) = row.get::<_, Option<i64>>(at)? else {
        return Ok(None);
    };
    let clawback: String = row.get(at + 2)?;
    Ok(Some(RefundRecord {
        at_ms,
        reason: row.get::<_, Option<String>>(at + 1)?.unwrap_or_default(),
        clawback: Clawback::parse(&clawback).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                at + 2,
                rusqlite::types::Type::Text,
                format!("unknown clawback {clawback:?}").into(),
            )
        })?,
    }))
}

pub(super) fn load_state(conn: &Connection, user: UserId) -> rusqlite::Result<PlayerSnapshot> {
    let mut stmt =
        conn.prepare_cached("SELECT name, value FROM player_components WHERE user_id = ?1")?;
    let rows = stmt.query_map([user.0], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(PlayerSnapshot(rows.collect::<Result<_, _>>()?))
}

/// The receipt state in column `i`; a word the schema's check would not let in is a corrupt row.
fn state_at(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<ReceiptState> {
    let corrupt =
        |why: String| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, why.into());
    let text = row
        .get_ref(i)?
        .as_str()
        .map_err(|e| corrupt(format!("receipt state: {e}")))?;
    ReceiptState::parse(text).ok_or_else(|| corrupt(format!("unknown receipt state {text:?}")))
}

/// Reads the whole ledger.
pub(super) fn audit(conn: &Connection) -> rusqlite::Result<LedgerAudit> {
    use crate::ledger::LeaseRecord;
    let mut audit = LedgerAudit::default();
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        stored_columns!(),
        " FROM receipts ORDER BY created_ms, purchase_id"
    ))?;
    let rows = stmt.query_map([], stored_from_row)?;
    audit.receipts = rows.collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, balance, lease_owner, lease_expires_ms, lease_token FROM accounts",
    )?;
    let accounts = stmt
        .query_map([], |r| {
            let lease = LeaseRecord {
                owner: r.get(2)?,
                expires_at_ms: r.get(3)?,
                token: r.get(4)?,
            };
            Ok((UserId(r.get(0)?), r.get::<_, i64>(1)? as u64, lease))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (user, balance, lease) in accounts {
        audit
            .accounts
            .insert(user, (balance, load_state(conn, user)?));
        audit.leases.insert(user, lease);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT user_id, delta, reason, purchase_id, kind FROM balance_journal ORDER BY id",
    )?;
    audit.journal = stmt
        .query_map([], |r| {
            Ok(JournalEntry {
                user: UserId(r.get(0)?),
                delta: r.get(1)?,
                reason: r.get(2)?,
                purchase_id: r.get::<_, Option<String>>(3)?.map(PurchaseId),
                kind: {
                    let kind: String = r.get(4)?;
                    JournalKind::parse(&kind).ok_or_else(|| {
                        rusqlite::Error::FromSqlConversionFailure(
                            4,
                            rusqlite::types::Type::Text,
                            format!("journal kind {kind:?}").into(),
                        )
                    })?
                },
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(concat!(
        "SELECT ",
        credit_columns!(),
        " FROM credits ORDER BY source, order_id"
    ))?;
    audit.credits = stmt
        .query_map([], credit_from_row)?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare_cached("SELECT user_id, shortfall FROM accounts WHERE shortfall > 0")?;
    audit.shortfalls = stmt
        .query_map([], |r| Ok((UserId(r.get(0)?), r.get::<_, i64>(1)? as u64)))?
        .collect::<Result<_, _>>()?;
    audit.purchase_debits = crate::ledger::purchase_debits(&audit.journal);
    let mut stmt = conn.prepare_cached(
        "SELECT hour_ms, product_id, sum(units), sum(currency), sum(refunded_units),
                sum(refunded_currency), sum(test_units), sum(rejected_units), sum(rejected_currency)
         FROM sales_hours GROUP BY hour_ms, product_id ORDER BY hour_ms, product_id",
    )?;
    audit.sales_hours = stmt.query_map([], sales_row)?.collect::<Result<_, _>>()?;
    Ok(audit)
}

/// A row of sales: bucket, product, units, currency, refunded units, refunded currency, test
/// units, rejected units, rejected currency.
fn sales_row(r: &rusqlite::Row) -> rusqlite::Result<SalesRow> {
    let count = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(SalesRow {
        bucket_start_ms: r.get(0)?,
        product_id: ProductId(r.get(1)?),
        units: count(2)?,
        currency: count(3)?,
        refunded_units: count(4)?,
        refunded_currency: count(5)?,
        test_units: count(6)?,
        rejected_units: count(7)?,
        rejected_currency: count(8)?,
    })
}
