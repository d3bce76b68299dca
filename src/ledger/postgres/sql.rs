//! The PostgreSQL ledger's statements, with the reading of a receipt row.

use postgres::Row;

use crate::ids::{PlaceId, ProductId, PurchaseId, UserId};
use crate::receipt::{CurrencyType, ProductPurchaseChannel, ReceiptInfo};

macro_rules! receipt_columns {
    () => {
        "purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms"
    };
}

pub(super) const RECEIPT_BY_REQUEST: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE request_id = $1"
);
pub(super) const PENDING_OF: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    " FROM receipts WHERE user_id = $1 AND state = 'pending' ORDER BY created_ms, purchase_id"
);
pub(super) const ALL_RECEIPTS: &str = concat!(
    "SELECT ",
    receipt_columns!(),
    ", state, request_id FROM receipts ORDER BY created_ms, purchase_id"
);
pub(super) const ENSURE_ACCOUNT: &str =
    "INSERT INTO accounts (user_id, balance, created_ms, updated_ms) VALUES ($1, $2, $3, $3)
     ON CONFLICT (user_id) DO NOTHING";
pub(super) const BALANCE: &str = "SELECT balance FROM accounts WHERE user_id = $1";
pub(super) const LOCK_ACCOUNT: &str =
    "SELECT balance, lease_owner, lease_expires_ms FROM accounts WHERE user_id = $1 FOR UPDATE";
pub(super) const TAKE_LEASE: &str = "UPDATE accounts SET lease_owner = $2, lease_expires_ms = $3, updated_ms = $4 WHERE user_id = $1";
pub(super) const RELEASE: &str =
    "UPDATE accounts SET lease_owner = NULL, lease_expires_ms = NULL, updated_ms = $3
     WHERE user_id = $1 AND lease_owner = $2";
pub(super) const LOAD_STATE: &str = "SELECT name, value FROM player_components WHERE user_id = $1";
/// Debit, receipt and journal in one statement; no row when the balance is too low, the
/// account does not exist yet, or this request id already charged. The `UPDATE` locks the
/// account row.
pub(super) const CHARGE: &str = "WITH debit AS (
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
pub(super) const SAVE: &str = "WITH upsert AS (
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
pub(super) const CHARGE_MANY: &str = "WITH locked AS (
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
pub(super) const LOCK_ALL: &str =
    "SELECT 1 FROM accounts WHERE user_id = ANY ($1::bigint[]) ORDER BY user_id FOR UPDATE";
/// Each saver's lease owner, read after the batch's other requests (an `OpenSession` or
/// `ReleaseSession` there may have changed it); the rows are already locked by [`LOCK_ALL`].
pub(super) const LOCK_MANY: &str =
    "SELECT user_id, lease_owner FROM accounts WHERE user_id = ANY ($1::bigint[])
    ORDER BY user_id FOR UPDATE";
/// Saves many players (one save each, all holding their lease as read by [`LOCK_MANY`]): [`SAVE`] for a whole batch in one round trip. Per player: release flag,
/// lease expiry and the names of their components (an array literal, so removed components are
/// found with one index scan per player); components and grants as parallel arrays. Every
/// join is driven by the input rows through an index, so the cost grows with the batch, not
/// with its square. Returns the receipts moved from pending to granted.
pub(super) const SAVE_MANY: &str = "WITH input AS (
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
pub(super) fn array_literal<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items
        .map(|item| format!("\"{}\"", item.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

pub(super) const SET_BALANCE: &str =
    "UPDATE accounts SET balance = $2, updated_ms = $3 WHERE user_id = $1";
pub(super) const JOURNAL: &str =
    "INSERT INTO balance_journal (user_id, delta, reason, at_ms) VALUES ($1, $2, $3, $4)";

pub(super) fn receipt_from_row(row: &Row) -> Result<ReceiptInfo, postgres::Error> {
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
