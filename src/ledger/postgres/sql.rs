//! The PostgreSQL ledger's statements, with the reading of a receipt row.
//!
//! A batch reads every row its requests need in a few statements (the accounts locked in user
//! order), the ledger rules decide in memory, and one statement writes back what changed.

use tokio_postgres::Row;

use super::conn::PgError;
use crate::ids::{PlaceId, ProductId, PurchaseId, RequestId, UserId};
use crate::receipt::{CurrencyType, ProductPurchaseChannel, ReceiptInfo, ReceiptState};

macro_rules! credit_columns {
    () => {
        "c.source, c.order_id, c.user_id, c.amount, c.credited_ms, c.reversed_ms, c.reversed_taken, c.reversed_shortfall"
    };
}

macro_rules! receipt_columns {
    () => {
        "purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms, state, request_id, product_name, resolved_ms, refunded_ms, refund_reason, clawback"
    };
}

/// Starts a batch's transaction (sent with its reads).
pub(super) const BEGIN: &str = "BEGIN";
/// Ends it (sent with its write-back).
pub(super) const COMMIT: &str = "COMMIT";
/// The database's time at the start of the transaction, Unix ms: the clock leases expire by.
pub(super) const DATABASE_NOW: &str =
    "SELECT (extract(epoch FROM transaction_timestamp()) * 1000)::bigint";
/// Locks the store orders a batch credits or reverses, in key order (a transaction-scoped
/// advisory lock per order, so an order not credited yet is locked too).
pub(super) const LOCK_ORDERS: &str = "SELECT count(pg_advisory_xact_lock(k)) FROM (
        SELECT DISTINCT hashtextextended(s || chr(31) || o, 0) AS k
        FROM unnest($1::text[], $2::text[]) AS t (s, o) ORDER BY k
    ) AS keys";
/// [`LOCK_ORDERS`]'s place in a batch whose orders are locked already.
pub(super) const NO_ORDERS: &str =
    "SELECT count(*) FROM unnest($1::text[], $2::text[]) AS t (s, o) WHERE false";
/// Locks the existing accounts of a batch, in user order.
pub(super) const LOCK_ACCOUNTS: &str =
    "SELECT user_id, balance, lease_owner, lease_expires_ms, lease_token, shortfall
    FROM accounts WHERE user_id = ANY ($1::bigint[]) ORDER BY user_id FOR UPDATE";
/// Inserts a row for each account a batch may create that did not exist, in user order, locking
/// it (a row another server created meanwhile is locked by the no-op update instead). Returns the
/// rows, and whether each was inserted now.
pub(super) const RESERVE_ACCOUNTS: &str =
    "INSERT INTO accounts AS a (user_id, balance, created_ms, updated_ms)
    SELECT u, 0, $2, $2 FROM unnest($1::bigint[]) AS t (u) ORDER BY u
    ON CONFLICT (user_id) DO UPDATE SET user_id = a.user_id
    RETURNING user_id, balance, lease_owner, lease_expires_ms, lease_token, shortfall, xmax = 0";
/// The buyers of receipts and the users of store orders a batch refunds or reverses, so their
/// accounts are locked with the others (read before the batch's other reads).
pub(super) const USERS_OF_RECEIPTS: &str =
    "SELECT DISTINCT user_id FROM receipts WHERE purchase_id = ANY ($1::text[])";
pub(super) const USERS_OF_CREDITS: &str = "SELECT DISTINCT c.user_id FROM credits c
    JOIN unnest($1::text[], $2::text[]) AS k (source, order_id)
      ON c.source = k.source AND c.order_id = k.order_id";
/// Store orders by (source, order id).
pub(super) const CREDITS_BY_KEY: &str = concat!(
    "SELECT ",
    credit_columns!(),
    " FROM credits c JOIN unnest($1::text[], $2::text[]) AS k (source, order_id)
      ON c.source = k.source AND c.order_id = k.order_id"
);
pub(super) const ALL_CREDITS: &str = concat!(
    "SELECT ",
    credit_columns!(),
    r#" FROM credits c ORDER BY c.source COLLATE "C", c.order_id COLLATE "C""#
);
pub(super) const ALL_SHORTFALLS: &str =
    "SELECT user_id, shortfall FROM accounts WHERE shortfall > 0";
pub(super) const RECEIPTS_BY_REQUEST: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE request_id = ANY ($1::text[])"
);
pub(super) const RECEIPTS_BY_ID: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE purchase_id = ANY ($1::text[])"
);
/// The change feed after $1, at most $2 changes.
pub(super) const CHANGES_AFTER: &str =
    "SELECT id, user_id FROM changes WHERE id > $1 ORDER BY id LIMIT $2";
/// The newest change id (0: none yet), and the oldest kept. (Changes commit in id order: see
/// [`LOCK_CHANGES`]; so the newest visible is a prefix of the feed.)
pub(super) const CHANGES_SPAN: &str = "SELECT coalesce(max(id), 0), min(id) FROM changes";
/// Taken by a batch that adds to the change feed, before its ids are drawn, until it commits: the
/// feed's ids commit in order, so a game that read up to id N never misses a smaller one
/// committed after. (Writes that add changes — refunds, top-ups, grants of currency, purchases
/// outside a game — are few beside purchases and saves, which add none.)
pub(super) const LOCK_CHANGES: &str = "SELECT pg_advisory_xact_lock(4776784521245132101)";
/// The players' pending receipts and refunds waiting for a clawback.
pub(super) const PENDING_OF: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE user_id = ANY ($1::bigint[]) AND (state = 'pending' OR clawback = 'pending')"
);
pub(super) const ALL_RECEIPTS: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts ORDER BY created_ms, purchase_id"
);
/// A page of a player's purchase history (one more row than a page, to know if it is the last),
/// from a cursor ($8, $9) or an offset ($7). The `coalesce` bound lets the index seek to the cursor.
pub(super) const HISTORY: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE user_id = $1 AND ($2::bigint IS NULL OR product_id = $2)
       AND ($3::text IS NULL OR state = $3) AND ($4::bigint IS NULL OR created_ms >= $4)
       AND ($5::bigint IS NULL OR created_ms < $5)
       AND created_ms <= coalesce($8::bigint, 9223372036854775807)
       AND ($8::bigint IS NULL OR created_ms < $8 OR purchase_id < $9::text)
     ORDER BY created_ms DESC, purchase_id DESC LIMIT $6 OFFSET $7"
);
/// Sales per bucket per product over whole hours, from the totals.
pub(super) const SALES_FROM_TOTALS: &str = "SELECT (hour_ms / $3) * $3 AS bucket, product_id,
        sum(units)::bigint, sum(currency)::bigint, sum(refunded_units)::bigint,
        sum(refunded_currency)::bigint, sum(test_units)::bigint, sum(rejected_units)::bigint,
        sum(rejected_currency)::bigint
    FROM sales_hours WHERE hour_ms >= $1 AND hour_ms < $2
    GROUP BY bucket, product_id";
/// The sales totals, as an audit reads them.
pub(super) const ALL_SALES_HOURS: &str = "SELECT hour_ms, product_id, sum(units)::bigint,
        sum(currency)::bigint, sum(refunded_units)::bigint, sum(refunded_currency)::bigint,
        sum(test_units)::bigint, sum(rejected_units)::bigint, sum(rejected_currency)::bigint
    FROM sales_hours GROUP BY hour_ms, product_id ORDER BY hour_ms, product_id";
/// Sales per bucket per product, from the receipts (the parts of an hour at a query's edges).
pub(super) const SALES: &str = "SELECT (created_ms / $3) * $3 AS bucket, product_id,
        count(*) FILTER (WHERE NOT is_test),
        coalesce(sum(currency_spent) FILTER (WHERE NOT is_test), 0)::bigint,
        count(*) FILTER (WHERE NOT is_test AND state = 'refunded'),
        coalesce(sum(currency_spent) FILTER (WHERE NOT is_test AND state = 'refunded'), 0)::bigint,
        count(*) FILTER (WHERE is_test),
        count(*) FILTER (WHERE NOT is_test AND state = 'rejected'),
        coalesce(sum(currency_spent) FILTER (WHERE NOT is_test AND state = 'rejected'), 0)::bigint
    FROM receipts WHERE created_ms >= $1 AND created_ms < $2
    GROUP BY bucket, product_id ORDER BY bucket, product_id";
pub(super) const STATES_OF: &str =
    "SELECT user_id, name, value FROM player_components WHERE user_id = ANY ($1::bigint[])";
pub(super) const ALL_ACCOUNTS: &str =
    "SELECT user_id, balance, lease_owner, lease_expires_ms, lease_token FROM accounts";
pub(super) const ALL_STATES: &str = "SELECT user_id, name, value FROM player_components";
pub(super) const ALL_JOURNAL: &str =
    "SELECT user_id, delta, reason, purchase_id, kind FROM balance_journal ORDER BY id";

/// Writes back everything a batch changed, in one statement: accounts (balance, lease,
/// shortfall), new receipts (in their final state), state changes of older receipts (grant,
/// refund), journal entries (in order), players' components (upserted, with the names no longer
/// saved deleted), store orders (upserted), and the rows reserved for accounts that were not made
/// after all. Each part touches rows no other part does, as the
/// statement's parts all see one snapshot.
pub(super) const WRITE_BACK: &str = "WITH accounts_changed AS (
        UPDATE accounts a
        SET balance = u.balance, lease_owner = u.owner, lease_expires_ms = u.expires,
            lease_token = u.token, updated_ms = $1, shortfall = u.shortfall
        FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[], $30::bigint[])
            AS u (user_id, balance, owner, expires, token, shortfall)
        WHERE a.user_id = u.user_id
    ), receipts_made AS (
        INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                              currency_type, channel, is_test, state, created_ms, resolved_ms,
                              product_name, refunded_ms, refund_reason, clawback)
        SELECT p, r, u, pr, pl, c, $16, ch, t, s, $1, g, nm, rf, rr, cb
        FROM unnest($7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[],
                    $13::bigint[], $14::boolean[], $15::text[], $29::text[], $31::bigint[],
                    $32::bigint[], $33::text[], $34::text[])
            AS n (p, r, u, pr, pl, c, ch, t, s, nm, g, rf, rr, cb)
    ), receipts_resolved AS (
        UPDATE receipts r SET state = c.state, resolved_ms = c.granted, refunded_ms = c.refunded,
            refund_reason = c.reason, clawback = c.clawback
        FROM unnest($17::text[], $18::text[], $35::bigint[], $36::bigint[], $37::text[], $38::text[])
            AS c (purchase_id, state, granted, refunded, reason, clawback)
        WHERE r.purchase_id = c.purchase_id
    ), journal AS (
        INSERT INTO balance_journal (user_id, delta, reason, purchase_id, at_ms, kind)
        SELECT u, d, r, p, $1, k
        FROM unnest($19::bigint[], $20::bigint[], $21::text[], $22::text[], $47::text[])
            WITH ORDINALITY AS j (u, d, r, p, k, n)
        ORDER BY n
    ), saved AS (
        SELECT * FROM unnest($23::bigint[], $24::text[]) AS s (user_id, names)
    ), components_kept AS (
        INSERT INTO player_components (user_id, name, value)
        SELECT * FROM unnest($25::bigint[], $26::text[], $27::text[])
        ON CONFLICT (user_id, name) DO UPDATE SET value = EXCLUDED.value
    ), components_removed AS (
        DELETE FROM player_components p USING saved s
        WHERE p.user_id = s.user_id AND NOT (p.name = ANY (s.names::text[]))
    ), unused_rows AS (
        DELETE FROM accounts WHERE user_id = ANY ($28::bigint[])
    ), credits_kept AS (
        INSERT INTO credits (source, order_id, user_id, amount, credited_ms, reversed_ms,
                             reversed_taken, reversed_shortfall)
        SELECT * FROM unnest($39::text[], $40::text[], $41::bigint[], $42::bigint[], $43::bigint[],
                             $44::bigint[], $45::bigint[], $46::bigint[])
        ON CONFLICT (source, order_id) DO UPDATE SET reversed_ms = EXCLUDED.reversed_ms,
            reversed_taken = EXCLUDED.reversed_taken, reversed_shortfall = EXCLUDED.reversed_shortfall
        WHERE credits.user_id = EXCLUDED.user_id AND credits.amount = EXCLUDED.amount
          AND credits.credited_ms = EXCLUDED.credited_ms
          AND (credits.reversed_ms IS NULL OR credits.reversed_ms = EXCLUDED.reversed_ms)
        RETURNING 1
    ), changes_made AS (
        INSERT INTO changes (user_id, at_ms)
        SELECT u, $1 FROM unnest($49::bigint[]) WITH ORDINALITY AS c (u, n) ORDER BY n
        RETURNING id
    ), changes_dropped AS (
        DELETE FROM changes WHERE id <= (SELECT coalesce(max(id), 0) FROM changes) - $50
    ), sales_counted AS (
        -- Each connection adds to its own shard of a total, so that servers selling one
        -- product in one hour do not wait on each other's row.
        INSERT INTO sales_hours (hour_ms, product_id, units, currency, refunded_units,
                                 refunded_currency, test_units, rejected_units, rejected_currency,
                                 shard)
        SELECT h, p, u, c, ru, rc, t, xu, xc, pg_backend_pid() % 64
        FROM unnest($51::bigint[], $52::bigint[], $53::bigint[], $54::bigint[], $55::bigint[],
                    $56::bigint[], $57::bigint[], $58::bigint[], $59::bigint[])
            WITH ORDINALITY AS s (h, p, u, c, ru, rc, t, xu, xc, n)
        ORDER BY n
        ON CONFLICT (hour_ms, product_id, shard) DO UPDATE SET
            units = sales_hours.units + EXCLUDED.units,
            currency = sales_hours.currency + EXCLUDED.currency,
            refunded_units = sales_hours.refunded_units + EXCLUDED.refunded_units,
            refunded_currency = sales_hours.refunded_currency + EXCLUDED.refunded_currency,
            test_units = sales_hours.test_units + EXCLUDED.test_units,
            rejected_units = sales_hours.rejected_units + EXCLUDED.rejected_units,
            rejected_currency = sales_hours.rejected_currency + EXCLUDED.rejected_currency
    )
    -- Store orders are locked while a batch reads them, so each one written back is the one the
    -- rules decided on; one that is not (another writer's order under the same key) fails the
    -- batch rather than credit one order twice.
    SELECT CASE WHEN (SELECT count(*) FROM credits_kept) = $48 THEN 1
        ELSE bevy_marketplace_refuse('a store order was credited by another writer meanwhile; the batch is not kept') END,
    -- Games listening hear of the feed's new changes when this commits.
        (SELECT count(pg_notify('bevy_marketplace_changes', ''))
         FROM (SELECT 1 FROM changes_made LIMIT 1) AS made)";

/// A PostgreSQL array literal of `items` (`{"a","b"}`).
pub(super) fn array_literal<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// A receipt row: the receipt, its state, the request that made it, when it was made.
pub(super) struct ReceiptRow {
    pub(super) info: ReceiptInfo,
    pub(super) state: ReceiptState,
    pub(super) request_id: RequestId,
    pub(super) created_ms: i64,
    pub(super) product_name: String,
    pub(super) granted_at_ms: Option<i64>,
    pub(super) refund: Option<crate::ledger::RefundRecord>,
}

impl ReceiptRow {
    pub(super) fn stored(self) -> crate::ledger::StoredReceipt {
        crate::ledger::StoredReceipt {
            info: self.info,
            state: self.state,
            request_id: self.request_id,
            product_name: self.product_name,
            purchased_at_ms: self.created_ms,
            granted_at_ms: self.granted_at_ms,
            refund: self.refund,
        }
    }
}

/// Reads a row of [`receipt_columns`]; a value the schema would not let in is reported, not
/// skipped or guessed.
pub(super) fn receipt_from_row(row: &Row) -> Result<ReceiptRow, PgError> {
    let purchase_id: String = row.try_get(0)?;
    let corrupt = |what: String| PgError::Corrupt(format!("receipt {purchase_id}: {what}"));
    let channel: i64 = row.try_get(6)?;
    let spent: i64 = row.try_get(4)?;
    let state: String = row.try_get(9)?;
    let request: String = row.try_get(10)?;
    Ok(ReceiptRow {
        info: ReceiptInfo {
            purchase_id: PurchaseId(purchase_id.clone()),
            player_id: UserId(row.try_get(1)?),
            product_id: ProductId(row.try_get(2)?),
            place_id_where_purchased: PlaceId(row.try_get(3)?),
            currency_spent: u64::try_from(spent)
                .map_err(|_| corrupt(format!("currency spent {spent}")))?,
            currency_type: CurrencyType::Premium,
            product_purchase_channel: ProductPurchaseChannel::from_code(channel)
                .ok_or_else(|| corrupt(format!("channel {channel}")))?,
            is_test_purchase: row.try_get(7)?,
        },
        created_ms: row.try_get(8)?,
        product_name: row.try_get(11)?,
        granted_at_ms: row.try_get(12)?,
        refund: match row.try_get::<_, Option<i64>>(13)? {
            None => None,
            Some(at_ms) => {
                let clawback: Option<String> = row.try_get(15)?;
                let clawback = clawback.as_deref().unwrap_or_default();
                Some(crate::ledger::RefundRecord {
                    at_ms,
                    reason: row.try_get::<_, Option<String>>(14)?.unwrap_or_default(),
                    clawback: crate::ledger::Clawback::parse(clawback)
                        .ok_or_else(|| corrupt(format!("clawback {clawback:?}")))?,
                })
            }
        },
        state: ReceiptState::parse(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
        request_id: RequestId(
            request
                .parse()
                .map_err(|e| corrupt(format!("request id {request:?}: {e}")))?,
        ),
    })
}

/// Reads a row of [`credit_columns`].
pub(super) fn credit_from_row(row: &Row) -> Result<crate::ledger::CreditRecord, PgError> {
    let source: String = row.try_get(0)?;
    let order_id: String = row.try_get(1)?;
    let amount = |i: usize| -> Result<u64, PgError> {
        let value: i64 = row.try_get(i)?;
        u64::try_from(value)
            .map_err(|_| PgError::Corrupt(format!("top-up {source}:{order_id}: amount {value}")))
    };
    Ok(crate::ledger::CreditRecord {
        user: UserId(row.try_get(2)?),
        amount: amount(3)?,
        credited_at_ms: row.try_get(4)?,
        reversal: match row.try_get::<_, Option<i64>>(5)? {
            None => None,
            Some(at_ms) => Some(crate::ledger::CreditReversal {
                at_ms,
                taken: amount(6)?,
                shortfall: amount(7)?,
            }),
        },
        source: source.clone(),
        order_id: order_id.clone(),
    })
}
