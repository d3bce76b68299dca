//! The SQLite ledger's schema: its migrations, the checks that decide whether a file is a ledger
//! this build may open (made without writing to it).

use std::path::Path;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::sidecar;
use crate::ledger::LedgerError;
use crate::ledger::schema::{
    HISTORY, JOURNAL_KINDS, SQLITE, changes, lease_token, refunds, rejections, sales_hours,
    tables_v1,
};

/// Marks a SQLite file as ours (`PRAGMA application_id`, "BMKT").
pub(super) const APPLICATION_ID: i64 = 0x424D_4B54;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 9;

/// Schema migrations: entry `n` moves a database from version `n` to `n + 1`.
pub(super) fn migrations() -> [String; SCHEMA_VERSION as usize] {
    [
        tables_v1(&SQLITE),
        RECEIPTS_V2.to_owned(),
        lease_token(&SQLITE),
        HISTORY.to_owned(),
        refunds(&SQLITE),
        JOURNAL_KINDS.to_owned(),
        changes(&SQLITE),
        sales_hours(&SQLITE),
        format!("{RECEIPTS_V9}{}", rejections(&SQLITE)),
    ]
}

/// Version 2: the state check without `IN (…)`, for which SQLite builds a temporary table on every
/// insert and update of a receipt (a third of the ledger's time). SQLite cannot alter a check, so
/// the table is rebuilt (https://sqlite.org/lang_altertable.html#otheralter).
const RECEIPTS_V2: &str = r#"
CREATE TABLE receipts_v2 (
    purchase_id    TEXT    PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL,
    product_id     INTEGER NOT NULL,
    place_id       INTEGER NOT NULL,
    currency_spent INTEGER NOT NULL CHECK (currency_spent >= 0),
    currency_type  INTEGER NOT NULL,
    channel        INTEGER NOT NULL CHECK (channel BETWEEN 1 AND 4),
    is_test        INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state = 'pending' OR state = 'granted' OR state = 'refunded'),
    created_ms     INTEGER NOT NULL,
    resolved_ms    INTEGER
);
INSERT INTO receipts_v2 SELECT * FROM receipts;
DROP TABLE receipts;
ALTER TABLE receipts_v2 RENAME TO receipts;
CREATE INDEX receipts_pending_by_user ON receipts (user_id) WHERE state = 'pending';
"#;

/// Version 9: the state check lets `'rejected'` in (a purchase its handler rejected). The table
/// is rebuilt as in version 2, with every column and index versions 4 and 5 added.
const RECEIPTS_V9: &str = r#"
CREATE TABLE receipts_v9 (
    purchase_id    TEXT    PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    user_id        INTEGER NOT NULL,
    product_id     INTEGER NOT NULL,
    place_id       INTEGER NOT NULL,
    currency_spent INTEGER NOT NULL CHECK (currency_spent >= 0),
    currency_type  INTEGER NOT NULL,
    channel        INTEGER NOT NULL CHECK (channel BETWEEN 1 AND 4),
    is_test        INTEGER NOT NULL,
    state          TEXT    NOT NULL CHECK (state = 'pending' OR state = 'granted' OR state = 'refunded' OR state = 'rejected'),
    created_ms     INTEGER NOT NULL,
    resolved_ms    INTEGER,
    product_name   TEXT    NOT NULL DEFAULT '',
    refunded_ms    INTEGER,
    refund_reason  TEXT,
    clawback       TEXT CHECK (clawback = 'not_needed' OR clawback = 'pending' OR clawback = 'done' OR clawback = 'kept')
);
INSERT INTO receipts_v9 (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                         currency_type, channel, is_test, state, created_ms, resolved_ms,
                         product_name, refunded_ms, refund_reason, clawback)
SELECT purchase_id, request_id, user_id, product_id, place_id, currency_spent, currency_type,
       channel, is_test, state, created_ms, resolved_ms, product_name, refunded_ms, refund_reason,
       clawback
FROM receipts;
DROP TABLE receipts;
ALTER TABLE receipts_v9 RENAME TO receipts;
CREATE INDEX receipts_pending_by_user ON receipts (user_id) WHERE state = 'pending';
CREATE INDEX receipts_by_user_and_time ON receipts (user_id, created_ms);
CREATE INDEX receipts_by_time ON receipts (created_ms);
CREATE INDEX receipts_clawback_by_user ON receipts (user_id) WHERE clawback = 'pending';
"#;

/// Brings the schema up to date. The version is read again under the write lock, so two
/// servers opening a new ledger at once migrate it once.
pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if from >= SCHEMA_VERSION {
        return Ok(());
    }
    // `open` refused a negative version; this one was written since.
    let from =
        usize::try_from(from).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, from))?;
    for sql in &migrations()[from..] {
        tx.execute_batch(sql)?;
    }
    tx.execute_batch(&format!(
        "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
    ))?;
    tx.commit()
}

/// How long a statement waits for another connection's lock before failing.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Decides whether the file at `path` is a ledger this build may open, without writing to it;
/// returns its schema version (0 for a new or empty file).
///
/// A read-only connection still reads a WAL left behind (it rebuilds the `-shm` index, creating
/// `-shm` and an empty `-wal` if they are missing) but never checkpoints it. A refused file gets
/// back the sidecars it had: the ones this check created are removed.
pub(super) fn check_file(path: &Path, location: &str) -> Result<i64, LedgerError> {
    if std::fs::metadata(path).is_err() {
        return Ok(0); // missing: a new ledger (any other problem shows when it is opened)
    }
    let (wal, shm) = (sidecar(path, "-wal"), sidecar(path, "-shm"));
    let (had_wal, had_shm) = (wal.exists(), shm.exists());
    let checked = check_read_only(path, location);
    if checked.is_err() {
        if !had_wal && std::fs::metadata(&wal).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&wal);
        }
        if !had_shm {
            let _ = std::fs::remove_file(&shm);
        }
    }
    checked
}

/// The checks of [`check_file`], on a read-only connection closed before it returns.
fn check_read_only(path: &Path, location: &str) -> Result<i64, LedgerError> {
    let open_err = |reason: String| LedgerError::Open {
        location: location.to_owned(),
        reason,
    };
    let not_ledger = |reason: String| LedgerError::NotALedger {
        location: location.to_owned(),
        reason,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| open_err(e.to_string()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| open_err(e.to_string()))?;
    // One read transaction, so every check sees one snapshot: another connection's migration
    // committing between two reads would otherwise show tables without the ledger's mark.
    conn.execute_batch("BEGIN")
        .map_err(|e| open_err(e.to_string()))?;
    let application_id: i64 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(|e| not_ledger(e.to_string()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| not_ledger(e.to_string()))?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| not_ledger(e.to_string()))?;
    if application_id != APPLICATION_ID && !(application_id == 0 && tables == 0) {
        return Err(not_ledger(if application_id == 0 {
            format!("it is an SQLite database of another program ({tables} schema objects)")
        } else {
            format!("its application_id is {application_id:#x}")
        }));
    }
    if version > SCHEMA_VERSION {
        return Err(LedgerError::NewerSchema {
            location: location.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 0 {
        return Err(open_err(format!(
            "its schema version is {version}, which no version of bevy_marketplace writes (the file was altered); refusing to touch it"
        )));
    }
    if tables > 0 {
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| open_err(format!("integrity check failed: {e}")))?;
        if check != "ok" {
            return Err(open_err(format!("the file is corrupted: {check}")));
        }
    }
    Ok(version)
}
