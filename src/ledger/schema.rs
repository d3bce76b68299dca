//! The ledger's tables as schema version 1 created them, written once for both SQL dialects.
//!
//! A migration is history: a database created at version 1 holds exactly these tables, so this
//! text never changes. Later versions are migrations of their own; those both dialects can spell
//! alike are here too.

/// The words in which the two dialects spell the same table.
pub(crate) struct Dialect {
    /// A 64-bit integer column.
    pub(crate) int: &'static str,
    /// A boolean column.
    pub(crate) boolean: &'static str,
    /// An auto-numbered 64-bit primary key.
    pub(crate) serial_key: &'static str,
    /// After a table whose primary key is its only index (SQLite keeps no rowid beside it).
    pub(crate) clustered: &'static str,
}

/// SQLite's spelling.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: Dialect = Dialect {
    int: "INTEGER",
    boolean: "INTEGER",
    serial_key: "INTEGER PRIMARY KEY",
    clustered: " WITHOUT ROWID",
};

/// PostgreSQL's spelling.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: Dialect = Dialect {
    int: "BIGINT",
    boolean: "BOOLEAN",
    serial_key: "BIGSERIAL PRIMARY KEY",
    clustered: "",
};

/// The tables of schema version 1: accounts (balance, session lease), persisted player
/// components, receipts, the balance journal.
pub(crate) fn tables_v1(d: &Dialect) -> String {
    let Dialect {
        int,
        boolean,
        serial_key,
        clustered,
    } = d;
    format!(
        r#"
CREATE TABLE accounts (
    user_id          {int} PRIMARY KEY,
    balance          {int} NOT NULL CHECK (balance >= 0),
    lease_owner      TEXT,
    lease_expires_ms {int},
    created_ms       {int} NOT NULL,
    updated_ms       {int} NOT NULL
);
CREATE TABLE player_components (
    user_id {int} NOT NULL REFERENCES accounts (user_id),
    name    TEXT    NOT NULL,
    value   TEXT    NOT NULL,
    PRIMARY KEY (user_id, name)
){clustered};
CREATE TABLE receipts (
    purchase_id    TEXT    PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    user_id        {int} NOT NULL,
    product_id     {int} NOT NULL,
    place_id       {int} NOT NULL,
    currency_spent {int} NOT NULL CHECK (currency_spent >= 0),
    currency_type  {int} NOT NULL,
    channel        {int} NOT NULL CHECK (channel BETWEEN 1 AND 4),
    is_test        {boolean} NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('pending', 'granted', 'refunded')),
    created_ms     {int} NOT NULL,
    resolved_ms    {int}
);
CREATE INDEX receipts_pending_by_user ON receipts (user_id) WHERE state = 'pending';
CREATE TABLE balance_journal (
    id          {serial_key},
    user_id     {int} NOT NULL,
    delta       {int} NOT NULL,
    reason      TEXT    NOT NULL,
    purchase_id TEXT,
    at_ms       {int} NOT NULL
);
CREATE INDEX balance_journal_by_purchase ON balance_journal (purchase_id) WHERE purchase_id IS NOT NULL;
"#
    )
}

/// The session lease's token (SQLite version 3, PostgreSQL version 2): it grows each time a lease
/// is taken, and saves and charges must name it, so a server that lost the lease cannot write.
pub(crate) fn lease_token(d: &Dialect) -> String {
    format!(
        "ALTER TABLE accounts ADD COLUMN lease_token {} NOT NULL DEFAULT 0;",
        d.int
    )
}

/// What purchase history, sales reports and integrity checks read (SQLite version 4, PostgreSQL
/// version 3): the product's name at purchase time; receipts indexed by buyer and time, and by
/// time; and each account's starting balance in the journal (written since for new accounts), so
/// that every balance is the sum of its journal. Both dialects spell it alike.
pub(crate) const HISTORY: &str = "ALTER TABLE receipts ADD COLUMN product_name TEXT NOT NULL DEFAULT '';
CREATE INDEX receipts_by_user_and_time ON receipts (user_id, created_ms);
CREATE INDEX receipts_by_time ON receipts (created_ms);
CREATE INDEX balance_journal_by_user ON balance_journal (user_id);
INSERT INTO balance_journal (user_id, delta, reason, at_ms)
SELECT a.user_id,
       a.balance - coalesce((SELECT sum(j.delta) FROM balance_journal j WHERE j.user_id = a.user_id), 0),
       'starting balance', a.created_ms
FROM accounts a
WHERE a.balance <> coalesce((SELECT sum(j.delta) FROM balance_journal j WHERE j.user_id = a.user_id), 0);";

/// Refunds and store top-ups (SQLite version 5, PostgreSQL version 4): when and why a receipt was
/// refunded and what became of its effect (the clawback), each account's shortfall from reversed
/// top-ups, and the store orders credited, keyed by store and order id so each credits once.
/// (The clawback check spells out its words: SQLite builds a temporary table for `IN (…)` on
/// every write of the row.)
pub(crate) fn refunds(d: &Dialect) -> String {
    let Dialect { int, clustered, .. } = d;
    format!(
        r#"
ALTER TABLE receipts ADD COLUMN refunded_ms {int};
ALTER TABLE receipts ADD COLUMN refund_reason TEXT;
ALTER TABLE receipts ADD COLUMN clawback TEXT CHECK (clawback = 'not_needed' OR clawback = 'pending' OR clawback = 'done' OR clawback = 'kept');
CREATE INDEX receipts_clawback_by_user ON receipts (user_id) WHERE clawback = 'pending';
ALTER TABLE accounts ADD COLUMN shortfall {int} NOT NULL DEFAULT 0 CHECK (shortfall >= 0);
CREATE TABLE credits (
    source             TEXT  NOT NULL,
    order_id           TEXT  NOT NULL,
    user_id            {int} NOT NULL,
    amount             {int} NOT NULL CHECK (amount > 0),
    credited_ms        {int} NOT NULL,
    reversed_ms        {int},
    reversed_taken     {int},
    reversed_shortfall {int},
    PRIMARY KEY (source, order_id)
){clustered};
"#
    )
}

/// Journal entries say what they are (SQLite version 6, PostgreSQL version 5), so checks and
/// reports read a kind instead of a reason's words. Entries written before are classified by the
/// words this crate wrote then, matched against the receipt or store order they name (one
/// statement per kind, each a join, so the migration costs a pass over the journal); any other
/// entry was an adjustment. Both dialects spell it alike.
pub(crate) const JOURNAL_KINDS: &str =
    "ALTER TABLE balance_journal ADD COLUMN kind TEXT NOT NULL DEFAULT 'adjustment'
    CHECK (kind = 'starting_balance' OR kind = 'purchase' OR kind = 'refund' OR kind = 'top_up'
        OR kind = 'top_up_reversal' OR kind = 'shortfall_repaid' OR kind = 'adjustment');
UPDATE balance_journal SET kind = 'purchase'
    WHERE purchase_id IS NOT NULL AND reason = 'purchase' AND delta < 0;
UPDATE balance_journal SET kind = 'refund'
    WHERE purchase_id IS NOT NULL AND reason = 'refund' AND delta > 0;
UPDATE balance_journal SET kind = 'starting_balance'
    WHERE id IN (SELECT min(id) FROM balance_journal
                 WHERE purchase_id IS NULL AND reason = 'starting balance' AND delta > 0
                 GROUP BY user_id);
UPDATE balance_journal SET kind = 'top_up' FROM credits AS c
    WHERE balance_journal.purchase_id IS NULL AND balance_journal.delta > 0
      AND c.user_id = balance_journal.user_id
      AND balance_journal.reason = 'top-up ' || c.source || ':' || c.order_id;
UPDATE balance_journal SET kind = 'top_up_reversal' FROM credits AS c
    WHERE balance_journal.purchase_id IS NULL AND balance_journal.delta < 0
      AND c.user_id = balance_journal.user_id
      AND balance_journal.reason = 'top-up reversed ' || c.source || ':' || c.order_id;
UPDATE balance_journal SET kind = 'shortfall_repaid' FROM credits AS c
    WHERE balance_journal.purchase_id IS NULL AND balance_journal.delta < 0
      AND c.user_id = balance_journal.user_id
      AND balance_journal.reason = 'shortfall repaid by ' || c.source || ':' || c.order_id;";

/// The change feed (SQLite version 7, PostgreSQL version 6): one row per write a running game
/// must hear about, numbered in the order made, so a game asks "what changed since N" in one read
/// however many players it has. Only the newest are kept.
pub(crate) fn changes(d: &Dialect) -> String {
    let Dialect {
        int, serial_key, ..
    } = d;
    format!(
        "CREATE TABLE changes (
    id      {serial_key},
    user_id {int} NOT NULL,
    at_ms   {int} NOT NULL
);"
    )
}

/// Sales totals per product per hour (SQLite version 8, PostgreSQL version 7), added to in the
/// transaction of every purchase and refund, so that a sales report reads totals instead of
/// receipts. Filled from the receipts already there. Each hour and product has a row per
/// `shard`: PostgreSQL servers add to the shard of their connection, so servers selling one
/// product at once do not queue on one row (SQLite has one writer and uses shard 0); readers
/// sum the shards.
pub(crate) fn sales_hours(d: &Dialect) -> String {
    let Dialect { int, clustered, .. } = d;
    format!(
        "CREATE TABLE sales_hours (
    hour_ms           {int} NOT NULL,
    product_id        {int} NOT NULL,
    units             {int} NOT NULL,
    currency          {int} NOT NULL,
    refunded_units    {int} NOT NULL,
    refunded_currency {int} NOT NULL,
    test_units        {int} NOT NULL,
    shard             {int} NOT NULL DEFAULT 0,
    PRIMARY KEY (hour_ms, product_id, shard)
){clustered};
INSERT INTO sales_hours (hour_ms, product_id, units, currency, refunded_units, refunded_currency,
                         test_units)
SELECT (created_ms / 3600000) * 3600000, product_id,
    sum(CASE WHEN is_test THEN 0 ELSE 1 END),
    sum(CASE WHEN is_test THEN 0 ELSE currency_spent END),
    sum(CASE WHEN NOT is_test AND state = 'refunded' THEN 1 ELSE 0 END),
    sum(CASE WHEN NOT is_test AND state = 'refunded' THEN currency_spent ELSE 0 END),
    sum(CASE WHEN is_test THEN 1 ELSE 0 END)
FROM receipts GROUP BY 1, 2;"
    )
}

/// Purchases their handlers rejected (SQLite version 9, PostgreSQL version 8): counted in the
/// sales totals apart from refunds. No receipt was rejected before, so nothing is filled in. (The
/// receipts' state check, which must let `'rejected'` in, is changed by each dialect its own way.)
pub(crate) fn rejections(d: &Dialect) -> String {
    let int = d.int;
    format!(
        "ALTER TABLE sales_hours ADD COLUMN rejected_units {int} NOT NULL DEFAULT 0;
ALTER TABLE sales_hours ADD COLUMN rejected_currency {int} NOT NULL DEFAULT 0;"
    )
}
