//! The statements every purchase runs, held for a whole batch.

use rusqlite::{CachedStatement, Connection};

/// A statement every purchase runs (a charge or a grant's save).
#[derive(Clone, Copy)]
pub(super) enum Hot {
    Account,
    InsertAccount,
    UpdateAccount,
    ReceiptByRequest,
    ReceiptStatus,
    InsertReceipt,
    GrantReceipt,
    Journal,
    PutComponent,
}

const HOT: usize = 9;

impl Hot {
    fn sql(self) -> &'static str {
        match self {
            Self::Account => {
                "SELECT balance, lease_owner, lease_expires_ms, lease_token, shortfall FROM accounts WHERE user_id = ?1"
            }
            Self::InsertAccount => {
                "INSERT INTO accounts (user_id, balance, lease_owner, lease_expires_ms, lease_token, created_ms, updated_ms, shortfall)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)"
            }
            Self::UpdateAccount => {
                "UPDATE accounts SET balance = ?2, lease_owner = ?3, lease_expires_ms = ?4, lease_token = ?5,
                 updated_ms = ?6, shortfall = ?7 WHERE user_id = ?1"
            }
            Self::ReceiptByRequest => concat!(
                "SELECT ",
                receipt_columns!(),
                " FROM receipts WHERE request_id = ?1"
            ),
            // Only what a decision reads: every save reads each receipt it grants.
            Self::ReceiptStatus => concat!(
                "SELECT ",
                receipt_columns!(),
                ", state, refunded_ms, refund_reason, clawback FROM receipts WHERE purchase_id = ?1"
            ),
            Self::InsertReceipt => {
                "INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                                       currency_type, channel, is_test, state, created_ms, product_name)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11)"
            }
            Self::GrantReceipt => {
                "UPDATE receipts SET state = 'granted', resolved_ms = ?2 WHERE purchase_id = ?1"
            }
            Self::Journal => {
                "INSERT INTO balance_journal (user_id, delta, kind, reason, purchase_id, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            }
            // A value that did not change is not written.
            Self::PutComponent => {
                "INSERT INTO player_components (user_id, name, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value
                 WHERE value IS NOT excluded.value"
            }
        }
    }
}

/// The hot statements of one batch, each taken from the connection's statement cache at its
/// first use and given back when the batch ends. A purchase runs about a dozen statements, and
/// finding one in rusqlite's cache hashes and compares its whole text, twice (taking it out and
/// putting it back): held for the batch, each is found once.
pub(super) struct HotStatements<'c> {
    conn: &'c Connection,
    held: [Option<CachedStatement<'c>>; HOT],
}

impl<'c> HotStatements<'c> {
    pub(super) fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            held: Default::default(),
        }
    }

    /// The statement, prepared (or taken from the cache) at its first use in this batch.
    pub(super) fn get(&mut self, hot: Hot) -> rusqlite::Result<&mut CachedStatement<'c>> {
        let held = &mut self.held[hot as usize];
        let statement = match held.take() {
            Some(statement) => statement,
            None => self.conn.prepare_cached(hot.sql())?,
        };
        Ok(held.insert(statement))
    }
}
