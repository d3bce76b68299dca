//! The PostgreSQL schema: migrations, the version check that refuses a foreign or newer database.

use super::conn::{Conn, PgError};
use crate::ledger::schema::{
    HISTORY, JOURNAL_KINDS, POSTGRES, changes, lease_token, refunds, rejections, sales_hours,
    tables_v1,
};

/// The schema version this build writes (in `bevy_marketplace_meta`).
pub const PG_SCHEMA_VERSION: i64 = 8;

/// Marks the database as ours in `bevy_marketplace_meta.application`.
pub(super) const APPLICATION: &str = "bevy_marketplace";

/// Serializes migrations of servers connecting to a new database at once
/// (`pg_advisory_xact_lock` key, "BMKT").
pub(super) const MIGRATION_LOCK: i64 = 0x424D_4B54;

/// Schema migrations: entry `n` moves a database from version `n` to `n + 1`.
pub(super) fn migrations() -> [String; PG_SCHEMA_VERSION as usize] {
    [
        format!("{META}{}", tables_v1(&POSTGRES)),
        lease_token(&POSTGRES),
        HISTORY.to_owned(),
        refunds(&POSTGRES),
        format!("{JOURNAL_KINDS}\n{NO_KIND_DEFAULT}\n{REFUSE}"),
        changes(&POSTGRES),
        sales_hours(&POSTGRES),
        format!(
            "{RECEIPTS_REJECTED}\n{}\n{NO_REJECTION_DEFAULTS}",
            rejections(&POSTGRES)
        ),
    ]
}

/// As with the journal's kind (version 5): a server of an older version still connected fails to
/// add to the sales totals, instead of adding without the rejections.
const NO_REJECTION_DEFAULTS: &str =
    "ALTER TABLE sales_hours ALTER COLUMN rejected_units DROP DEFAULT,
    ALTER COLUMN rejected_currency DROP DEFAULT;";

/// Version 8: the receipts' state check lets `'rejected'` in. Every check on the table that
/// names the state is replaced (version 1 left it unnamed; PostgreSQL named it).
const RECEIPTS_REJECTED: &str = "DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname FROM pg_constraint
             WHERE conrelid = 'receipts'::regclass AND contype = 'c'
               AND pg_get_constraintdef(oid) LIKE '%state%'
    LOOP
        EXECUTE format('ALTER TABLE receipts DROP CONSTRAINT %I', c.conname);
    END LOOP;
END $$;
ALTER TABLE receipts ADD CONSTRAINT receipts_state_check CHECK
    (state = 'pending' OR state = 'granted' OR state = 'refunded' OR state = 'rejected');";

/// Fails the statement it is called in with `message` (version 5): how a write-back refuses a
/// row it did not decide on.
const REFUSE: &str = "CREATE FUNCTION bevy_marketplace_refuse(message TEXT) RETURNS BIGINT
    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '%', message; END $$;";

/// After the kinds are filled, a journal entry must name its kind: a server of an older version
/// still connected (it checked the schema when it connected) fails to write one instead of
/// writing it with a wrong kind. (Servers of one ledger run one version: stop the old ones
/// before starting a new one.)
const NO_KIND_DEFAULT: &str = "ALTER TABLE balance_journal ALTER COLUMN kind DROP DEFAULT;";

/// Where a database says it is ours, and at which version (created with version 1).
const META: &str = "
CREATE TABLE bevy_marketplace_meta (
    application    TEXT   NOT NULL,
    schema_version BIGINT NOT NULL
);
INSERT INTO bevy_marketplace_meta (application, schema_version) VALUES ('bevy_marketplace', 0);
";

pub(super) enum VersionError {
    Db(String),
    NotALedger(String),
}

pub(super) enum MigrateError {
    Db(String),
    Refused(VersionError),
    Newer(i64),
}

/// The schema version of the database: 0 for an empty one. Refuses a database that has tables
/// but no ledger marker.
pub(super) fn read_version(conn: &mut Conn) -> Result<i64, VersionError> {
    let db = |e: PgError| VersionError::Db(e.to_string());
    // Both from one MVCC snapshot of the catalog (not the catalog caches), so a server that
    // waited for another's migration sees all of it.
    let rows = conn
        .query(
            "SELECT count(*) FILTER (WHERE tablename = 'bevy_marketplace_meta'), count(*)
             FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
            &[],
        )
        .map_err(db)?;
    let row = rows
        .first()
        .ok_or_else(|| VersionError::Db("the catalog query returned no row".into()))?;
    let has_meta: i64 = row.try_get(0).map_err(|e| db(e.into()))?;
    let tables: i64 = row.try_get(1).map_err(|e| db(e.into()))?;
    if has_meta == 0 {
        if tables > 0 {
            return Err(VersionError::NotALedger(format!(
                "it is a database of another program ({tables} tables and no bevy_marketplace_meta)"
            )));
        }
        return Ok(0);
    }
    let not_ledger = |e: PgError| VersionError::NotALedger(e.to_string());
    let rows = conn
        .query(
            "SELECT application, schema_version FROM bevy_marketplace_meta",
            &[],
        )
        .map_err(not_ledger)?;
    match rows.as_slice() {
        [row] => {
            let application: String = row.try_get(0).map_err(|e| not_ledger(e.into()))?;
            if application != APPLICATION {
                return Err(VersionError::NotALedger(format!(
                    "its bevy_marketplace_meta names application {application:?}"
                )));
            }
            row.try_get(1).map_err(|e| not_ledger(e.into()))
        }
        rows => Err(VersionError::NotALedger(format!(
            "bevy_marketplace_meta has {} rows instead of one",
            rows.len()
        ))),
    }
}

/// Brings the schema up to date in one transaction. An advisory lock serializes servers that
/// connect to a new database at once; the version is read again under it.
pub(super) fn migrate(conn: &mut Conn) -> Result<(), MigrateError> {
    conn.batch_execute("BEGIN")
        .map_err(|e| MigrateError::Db(e.to_string()))?;
    let result = migrate_in_transaction(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.batch_execute(end);
    result?;
    ended.map_err(|e| MigrateError::Db(e.to_string()))
}

fn migrate_in_transaction(conn: &mut Conn) -> Result<(), MigrateError> {
    let db = |e: PgError| MigrateError::Db(e.to_string());
    conn.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db)?;
    let from = read_version(conn).map_err(MigrateError::Refused)?;
    if from > PG_SCHEMA_VERSION {
        return Err(MigrateError::Newer(from));
    }
    if (from as usize) < migrations().len() {
        // A migration rewrites tables: no statement deadline (for this transaction only).
        conn.batch_execute("SET LOCAL statement_timeout = 0")
            .map_err(db)?;
    }
    for sql in migrations().iter().skip(from as usize) {
        conn.batch_execute_long(sql).map_err(db)?;
    }
    conn.query(
        "UPDATE bevy_marketplace_meta SET schema_version = $1",
        &[&PG_SCHEMA_VERSION],
    )
    .map_err(db)?;
    Ok(())
}
