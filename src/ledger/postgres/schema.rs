//! The PostgreSQL schema: migrations, the version check that refuses a foreign or newer database,
//! the session settings every connection gets.

use postgres::{Client, GenericClient, NoTls};

use super::describe;
use crate::ledger::schema::{POSTGRES, tables_v1};

/// The schema version this build writes (in `bevy_marketplace_meta`).
pub const PG_SCHEMA_VERSION: i64 = 1;

/// Marks the database as ours in `bevy_marketplace_meta.application`.
pub(super) const APPLICATION: &str = "bevy_marketplace";

/// Serializes migrations of servers connecting to a new database at once
/// (`pg_advisory_xact_lock` key, "BMKT").
pub(super) const MIGRATION_LOCK: i64 = 0x424D_4B54;

/// Schema migrations: entry `n` moves a database from version `n` to `n + 1`.
pub(super) fn migrations() -> [String; PG_SCHEMA_VERSION as usize] {
    [format!("{META}{}", tables_v1(&POSTGRES))]
}

/// Where a database says it is ours, and at which version (created with version 1).
const META: &str = "
CREATE TABLE bevy_marketplace_meta (
    application    TEXT   NOT NULL,
    schema_version BIGINT NOT NULL
);
INSERT INTO bevy_marketplace_meta (application, schema_version) VALUES ('bevy_marketplace', 0);
";

/// Default `idle_in_transaction_session_timeout` when the connection string sets none.
pub(super) const DEFAULT_IDLE_IN_TRANSACTION_MS: i64 = 30_000;

/// Connects, and makes sure a server that freezes in the middle of a transaction (SIGSTOP, a VM
/// pause) cannot hold its players' row locks forever: PostgreSQL ends such a session after
/// `idle_in_transaction_session_timeout`, rolling it back, so other servers can take the players
/// over once their leases expire. Set it lower in the connection string
/// (`options='-c idle_in_transaction_session_timeout=1000'`) for short leases.
pub(super) fn session(url: &str) -> Result<Client, postgres::Error> {
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
pub(super) fn read_version(client: &mut impl GenericClient) -> Result<i64, VersionError> {
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
pub(super) fn migrate(client: &mut Client) -> Result<(), MigrateError> {
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
    for sql in &migrations()[from as usize..] {
        tx.batch_execute(sql).map_err(db)?;
    }
    tx.execute(
        "UPDATE bevy_marketplace_meta SET schema_version = $1",
        &[&PG_SCHEMA_VERSION],
    )
    .map_err(db)?;
    tx.commit().map_err(db)
}
