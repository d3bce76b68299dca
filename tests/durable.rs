//! The durable SQLite ledger: restarts, refusing files that are not ours, failing commits,
//! players leaving with commits in flight, session leases.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_marketplace::Ledger;
use bevy_marketplace::ledger::{
    JournalKind, LedgerBackend, LedgerError, LedgerStatus, SCHEMA_VERSION, ServerId, SqliteLedger,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{PlayerSession, ReceiptState, SessionPhase};
use common::*;

fn durable_shop(path: &Path, server: &str) -> GameServer {
    let file = path.to_owned();
    GameServer::new(move || SqliteLedger::open(&file), server, |p| p)
}

fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    (dir, path)
}

fn audit(path: &Path) -> bevy_marketplace::ledger::LedgerAudit {
    SqliteLedger::open(path).unwrap().audit().unwrap()
}

#[test]
fn purchases_and_persisted_gold_survive_a_restart() {
    let (_dir, path) = temp_db();
    gold_survives_a_restart(|| durable_shop(&path, "a"), || audit(&path));
}

#[test]
fn the_ledger_is_a_plain_sqlite_file_in_wal_mode_with_full_sync() {
    let (_dir, path) = temp_db();
    let mut shop = durable_shop(&path, "a");
    let p = shop.join(7);
    shop.buy(p, FULL_HEAL);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let (state, spent): (String, i64) = conn
        .query_row(
            "SELECT state, currency_spent FROM receipts WHERE user_id = 7",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), spent), ("granted", 50));
    let journal: i64 = conn
        .query_row(
            "SELECT sum(delta) FROM balance_journal WHERE user_id = 7",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        journal,
        1000 - 50,
        "the starting balance and the debit are journaled"
    );
}

#[test]
fn a_top_up_before_the_first_join_adds_to_the_starting_balance() {
    let (_dir, path) = temp_db();
    let mut shop = durable_shop(&path, "a");
    let p = shop.top_up_then_join(8, 250);
    shop.buy(p, GOLD_100);
    let journal: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT sum(delta) FROM balance_journal WHERE user_id = 8",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        journal,
        1000 + 250 - 80,
        "the balance is the sum of its journal"
    );
    assert_eq!(
        audit(&path).accounts[&UserId(8)].0,
        1000 + 250 - 80,
        "the balance is the starting balance plus the journal"
    );
}

fn open_error(path: &Path) -> LedgerError {
    SqliteLedger::open(path).unwrap_err()
}

fn app_status(path: &Path) -> LedgerStatus {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(LedgerBackend::sqlite(path))));
    app.update_until("the ledger to open or fail", |w| {
        *w.resource::<Ledger>().status() != LedgerStatus::Opening
    });
    app.world().resource::<Ledger>().status().clone()
}

#[test]
fn a_file_that_is_not_a_database_is_refused_and_untouched() {
    let (_dir, path) = temp_db();
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let status = app_status(&path);
    let LedgerStatus::Failed(error) = status else {
        panic!("expected a failure, got {status:?}");
    };
    assert!(matches!(error, LedgerError::NotALedger { .. }), "{error}");
    assert!(
        error.to_string().contains("ledger.sqlite3"),
        "names the file: {error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "not modified");
    assert!(!path.with_extension("sqlite3-wal").exists());
}

#[test]
fn another_programs_database_is_refused_and_untouched() {
    let (_dir, path) = temp_db();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let error = open_error(&path);
    assert!(
        matches!(&error, LedgerError::NotALedger { reason, .. } if reason.contains("another program")),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// Turns a current ledger file back into what version 1 wrote: the receipts table with its
/// original `state IN (…)` check, accounts without lease tokens, and `user_version = 1`, holding
/// user 7 who bought twice (one receipt pending) from a starting balance of 1000 that version 1
/// did not journal.
fn downgrade_to_version_1(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "BEGIN;
         DROP TABLE receipts;
         CREATE TABLE receipts (
             purchase_id    TEXT    PRIMARY KEY,
             request_id     TEXT    NOT NULL UNIQUE,
             user_id        INTEGER NOT NULL,
             product_id     INTEGER NOT NULL,
             place_id       INTEGER NOT NULL,
             currency_spent INTEGER NOT NULL CHECK (currency_spent >= 0),
             currency_type  INTEGER NOT NULL,
             channel        INTEGER NOT NULL CHECK (channel BETWEEN 1 AND 4),
             is_test        INTEGER NOT NULL,
             state          TEXT    NOT NULL CHECK (state IN ('pending', 'granted', 'refunded')),
             created_ms     INTEGER NOT NULL,
             resolved_ms    INTEGER
         );
         CREATE INDEX receipts_pending_by_user ON receipts (user_id) WHERE state = 'pending';
         DROP TABLE balance_journal;
         CREATE TABLE balance_journal (
             id          INTEGER PRIMARY KEY,
             user_id     INTEGER NOT NULL,
             delta       INTEGER NOT NULL,
             reason      TEXT    NOT NULL,
             purchase_id TEXT,
             at_ms       INTEGER NOT NULL
         );
         CREATE INDEX balance_journal_by_purchase ON balance_journal (purchase_id) WHERE purchase_id IS NOT NULL;
         INSERT INTO receipts VALUES
             ('0001', 'a1a1a1a1-0000-4000-8000-000000000001', 7, 456456, 0, 80, 1, 2, 0, 'pending', 1, NULL),
             ('0002', 'a1a1a1a1-0000-4000-8000-000000000002', 7, 456456, 0, 80, 1, 2, 0, 'granted', 1, 2);
         INSERT INTO accounts (user_id, balance, created_ms, updated_ms) VALUES (7, 840, 1, 1);
         INSERT INTO balance_journal (user_id, delta, reason, purchase_id, at_ms)
             VALUES (7, -80, 'purchase', '0001', 1), (7, -80, 'purchase', '0002', 1);
         ALTER TABLE accounts DROP COLUMN lease_token;
         ALTER TABLE accounts DROP COLUMN shortfall;
         DROP TABLE credits;
         DROP TABLE changes;
         DROP TABLE sales_hours;
         PRAGMA user_version = 1;
         COMMIT;",
    )
    .unwrap();
}

#[test]
fn a_version_1_ledger_is_migrated_and_its_pending_receipts_are_delivered() {
    let (_dir, path) = temp_db();
    drop(SqliteLedger::open(&path).unwrap());
    downgrade_to_version_1(&path);

    let mut shop = durable_shop(&path, "a");
    let p = shop.join(7);
    shop.app.settle();
    assert_eq!(
        shop.gold(p),
        100,
        "the pending receipt of version 1 is granted once"
    );
    assert_eq!(shop.log.calls.lock().unwrap().len(), 1);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let states: Vec<(String, String)> = conn
        .prepare("SELECT purchase_id, state FROM receipts ORDER BY purchase_id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        states,
        [
            ("0001".into(), "granted".into()),
            ("0002".into(), "granted".into())
        ]
    );
    let bad_state = conn.execute(
        "UPDATE receipts SET state = 'lost' WHERE purchase_id = '0001'",
        [],
    );
    assert!(bad_state.is_err(), "the migrated table still checks states");
    // Its starting balances went into the journal: the migrated ledger adds up.
    let audit = audit(&path);
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
    let kinds: Vec<JournalKind> = audit.journal.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            JournalKind::Purchase,
            JournalKind::Purchase,
            JournalKind::StartingBalance
        ],
        "the journal written by version 1 says what each entry was"
    );
}

/// A version 5 ledger (journal entries without kinds) whose words a reader could mistake: a
/// grant whose reason is "purchase", a top-up and its reversal, a shortfall repaid.
#[test]
fn a_version_5_journal_gets_its_kinds_from_what_it_names_not_from_its_words() {
    let (_dir, path) = temp_db();
    drop(SqliteLedger::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "BEGIN;
         DROP TABLE balance_journal;
         CREATE TABLE balance_journal (
             id          INTEGER PRIMARY KEY,
             user_id     INTEGER NOT NULL,
             delta       INTEGER NOT NULL,
             reason      TEXT    NOT NULL,
             purchase_id TEXT,
             at_ms       INTEGER NOT NULL
         );
         CREATE INDEX balance_journal_by_purchase ON balance_journal (purchase_id) WHERE purchase_id IS NOT NULL;
         CREATE INDEX balance_journal_by_user ON balance_journal (user_id);
         DROP TABLE changes;
         DROP TABLE sales_hours;
         INSERT INTO accounts (user_id, balance, created_ms, updated_ms, shortfall) VALUES (1, 1020, 1, 1, 0);
         INSERT INTO credits (source, order_id, user_id, amount, credited_ms, reversed_ms, reversed_taken, reversed_shortfall)
             VALUES ('web', 'o1', 1, 500, 2, 3, 500, 0), ('web', 'o2', 1, 100, 4, NULL, NULL, NULL);
         INSERT INTO balance_journal (user_id, delta, reason, purchase_id, at_ms) VALUES
             (1, 1000, 'starting balance', NULL, 1),
             (1, 20, 'purchase', NULL, 1),
             (1, 500, 'top-up web:o1', NULL, 2),
             (1, -500, 'top-up reversed web:o1', NULL, 3),
             (1, 100, 'top-up web:o2', NULL, 4),
             (1, -100, 'shortfall repaid by web:o2', NULL, 4);
         PRAGMA user_version = 5;
         COMMIT;",
    )
    .unwrap();
    drop(conn);
    drop(SqliteLedger::open(&path).unwrap());
    let audit = audit(&path);
    let kinds: Vec<(JournalKind, &str)> = audit
        .journal
        .iter()
        .map(|e| (e.kind, e.reason.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (JournalKind::StartingBalance, "starting balance"),
            (JournalKind::Adjustment, "purchase"),
            (JournalKind::TopUp, "top-up web:o1"),
            (JournalKind::TopUpReversal, "top-up reversed web:o1"),
            (JournalKind::TopUp, "top-up web:o2"),
            (JournalKind::ShortfallRepaid, "shortfall repaid by web:o2"),
        ]
    );
    assert_eq!(
        audit.purchase_debits, 0,
        "a grant named \"purchase\" is no purchase"
    );
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

#[test]
fn a_newer_schema_is_refused_and_untouched() {
    let (_dir, path) = temp_db();
    drop(SqliteLedger::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
            .unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let error = open_error(&path);
    assert_eq!(
        error,
        LedgerError::NewerSchema {
            location: path.display().to_string(),
            found: SCHEMA_VERSION + 1,
            supported: SCHEMA_VERSION
        }
    );
    assert!(error.to_string().contains("refusing to touch it"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    for suffix in ["-wal", "-shm"] {
        assert!(
            !sidecar(&path, suffix).exists(),
            "no {suffix} left beside a refused file that had none"
        );
    }
}

#[test]
fn a_corrupted_ledger_is_refused_with_a_clear_error_and_the_game_runs_on() {
    let (_dir, path) = temp_db();
    {
        let mut shop = durable_shop(&path, "a");
        let p = shop.join(1);
        for _ in 0..20 {
            shop.buy(p, GOLD_100);
        }
    }
    // Checkpoint the WAL into the main file, then scribble over a page in the middle.
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 3 * 4096, "a few pages: {}", bytes.len());
    for b in &mut bytes[4096 + 100..2 * 4096] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let status = app_status(&path);
    let LedgerStatus::Failed(error) = status else {
        panic!("expected a failure, got {status:?}");
    };
    let message = error.to_string();
    assert!(message.contains("ledger.sqlite3"), "{message}");
    assert!(
        message.contains("corrupt") || message.contains("malformed"),
        "says what is wrong: {message}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "not modified");
}

#[test]
fn a_failing_grant_commit_leaves_the_receipt_pending_and_never_reruns_the_handler() {
    let (_dir, path) = temp_db();
    let mut shop = durable_shop(&path, "a");
    a_failing_grant_commit_is_retried_without_rerunning_the_handler(&mut shop, || audit(&path));
}

#[test]
fn a_player_leaving_while_their_grant_commits_keeps_it_exactly_once() {
    let (_dir, path) = temp_db();
    let mut shop = durable_shop(&path, "a");
    let p = shop.join(4);
    shop.app.insert_resource(HandlerMode::Decline);
    shop.buy(p, GOLD_100);
    shop.faults.pause();
    shop.app.insert_resource(HandlerMode::Work);
    shop.app
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_secs(2)));
    shop.app.update();
    shop.app
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
            10,
        )));
    shop.app.update();
    assert_eq!(
        shop.gold(p),
        100,
        "granted in memory, its commit held in flight"
    );
    shop.app.world_mut().entity_mut(p).despawn();
    shop.app.update();
    // The player comes straight back while the commit is still in flight.
    let again = shop
        .app
        .world_mut()
        .spawn((Buyer::new(UserId(4)), Gold(0)))
        .id();
    for _ in 0..5 {
        shop.app.update();
    }
    assert_eq!(
        *shop
            .app
            .world()
            .get::<PlayerSession>(again)
            .unwrap()
            .phase(),
        SessionPhase::Loading,
        "their data is not read while their last save is in flight"
    );
    shop.faults.resume();
    shop.app.update_until("the rejoined session to load", |w| {
        w.get::<PlayerSession>(again)
            .is_some_and(PlayerSession::is_active)
    });
    shop.app.settle();
    assert_eq!(
        shop.gold(again),
        100,
        "the grant came back with their saved Gold"
    );
    assert_eq!(
        shop.log.granted.lock().unwrap().len(),
        1,
        "and was not granted again"
    );
    let audit = audit(&path);
    assert_eq!(audit.count(ReceiptState::Granted), 1);
    assert_eq!(audit.count(ReceiptState::Pending), 0);
}

#[test]
fn a_player_leaving_after_a_failed_grant_commit_saves_the_grant_on_the_way_out() {
    let (_dir, path) = temp_db();
    let mut shop = durable_shop(&path, "a");
    let p = shop.join(5);
    shop.app.insert_resource(HandlerMode::Decline);
    shop.buy(p, GOLD_100);
    shop.faults.fail_next_commits(1);
    shop.app.insert_resource(HandlerMode::Work);
    shop.advance(Duration::from_secs(2));
    assert_eq!(shop.uncommitted(p), 1);
    shop.app.world_mut().entity_mut(p).despawn();
    shop.app.settle();
    let audit = audit(&path);
    assert_eq!(audit.count(ReceiptState::Granted), 1);
    assert_eq!(audit.accounts[&UserId(5)].1.0["Gold"], "(100)");
}

#[test]
fn stored_components_nobody_registered_are_kept() {
    let (_dir, path) = temp_db();
    {
        let mut shop = durable_shop(&path, "a");
        shop.join(6);
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "INSERT INTO player_components VALUES (6, 'Pet', '(\"dragon\")')",
            [],
        )
        .unwrap();
    }
    let mut shop = durable_shop(&path, "a");
    let p = shop.join(6);
    shop.buy(p, GOLD_100);
    let stored = &audit(&path).accounts[&UserId(6)].1.0;
    assert_eq!(stored["Pet"], "(\"dragon\")", "carried through the save");
    assert_eq!(stored["Gold"], "(100)");
}

#[test]
fn a_stored_component_that_does_not_load_blocks_the_session_instead_of_overwriting_it() {
    let (_dir, path) = temp_db();
    {
        let mut shop = durable_shop(&path, "a");
        let p = shop.join(8);
        shop.app.world_mut().entity_mut(p).despawn();
        shop.app.settle();
    }
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE player_components SET value = 'lots' WHERE user_id = 8",
            [],
        )
        .unwrap();
    }
    let mut shop = durable_shop(&path, "a");
    let p = shop.join(8);
    let phase = shop
        .app
        .world()
        .get::<PlayerSession>(p)
        .unwrap()
        .phase()
        .clone();
    assert!(
        matches!(&phase, SessionPhase::Failed(m) if m.contains("\"Gold\"")),
        "names the component: {phase:?}"
    );
    shop.buy(p, GOLD_100);
    shop.app.world_mut().entity_mut(p).despawn();
    shop.app.settle();
    let audit = audit(&path);
    assert!(audit.receipts.is_empty(), "no purchase on a broken profile");
    assert_eq!(
        audit.accounts[&UserId(8)].1.0["Gold"],
        "lots",
        "left for a human to fix"
    );
}

#[test]
fn a_second_server_cannot_open_a_session_the_first_holds() {
    let (_dir, path) = temp_db();
    let mut a = durable_shop(&path, "server-a");
    let mut b = durable_shop(&path, "server-b");
    a_lease_is_handed_over_when_its_holder_lets_go(&mut a, &mut b);
}

#[test]
fn a_negative_schema_version_is_refused_with_a_clear_error_and_untouched() {
    let (_dir, path) = temp_db();
    drop(SqliteLedger::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = -3").unwrap();
    }
    let before = std::fs::read(&path).unwrap();
    let error = open_error(&path);
    let message = error.to_string();
    assert!(
        message.contains("ledger.sqlite3"),
        "names the file: {message}"
    );
    assert!(message.contains("-3"), "names the version: {message}");
    assert_eq!(std::fs::read(&path).unwrap(), before, "not modified");
}

/// Copies the database at `from` (its main file, `-wal` and, if `with_shm`, `-shm`) to `to` while
/// `writer` still has it open: the copy is what a writer killed before a checkpoint leaves on
/// disk, a WAL whose content never reached the main file.
fn copy_with_hot_wal(writer: rusqlite::Connection, from: &Path, to: &Path, with_shm: bool) {
    let sidecars: &[&str] = if with_shm {
        &["", "-wal", "-shm"]
    } else {
        &["", "-wal"]
    };
    for suffix in sidecars {
        std::fs::copy(sidecar(from, suffix), sidecar(to, suffix)).unwrap();
    }
    assert!(
        std::fs::metadata(sidecar(to, "-wal")).unwrap().len() > 0,
        "the copy has a WAL with content"
    );
    drop(writer);
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The main file's bytes and the WAL's (`None` once it is gone).
fn bytes_of(path: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    (
        std::fs::read(path).unwrap(),
        std::fs::read(sidecar(path, "-wal")).ok(),
    )
}

fn assert_untouched(path: &Path, before: &(Vec<u8>, Option<Vec<u8>>)) {
    let after = bytes_of(path);
    let sizes = |(main, wal): &(Vec<u8>, Option<Vec<u8>>)| {
        format!(
            "main file {} bytes, WAL {:?} bytes",
            main.len(),
            wal.as_ref().map(Vec::len)
        )
    };
    assert!(
        after == *before,
        "main file and WAL not modified: before {}, after {}",
        sizes(before),
        sizes(&after)
    );
}

#[test]
fn refusing_a_file_with_a_hot_wal_leaves_every_byte_as_it_was() {
    let (_dir, path) = temp_db();
    let scratch = tempfile::tempdir().unwrap();

    // Another program's database, its last transaction still in the WAL (and no `-shm` left).
    let foreign = scratch.path().join("foreign.db");
    let writer = rusqlite::Connection::open(&foreign).unwrap();
    writer
        .execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');",
        )
        .unwrap();
    copy_with_hot_wal(writer, &foreign, &path, false);
    let before = bytes_of(&path);
    let error = open_error(&path);
    assert!(
        matches!(&error, LedgerError::NotALedger { reason, .. } if reason.contains("another program")),
        "{error}"
    );
    assert_untouched(&path, &before);
    assert!(
        !sidecar(&path, "-shm").exists(),
        "no -shm left where there was none"
    );

    // A ledger of a newer version, the version bump itself still in the WAL.
    let (_dir, path) = temp_db();
    let newer = scratch.path().join("newer.sqlite3");
    drop(SqliteLedger::open(&newer).unwrap());
    let writer = rusqlite::Connection::open(&newer).unwrap();
    writer
        .execute_batch(&format!(
            "PRAGMA user_version = {}; INSERT INTO accounts (user_id, balance, created_ms, updated_ms) VALUES (1, 5, 0, 0);",
            SCHEMA_VERSION + 1
        ))
        .unwrap();
    copy_with_hot_wal(writer, &newer, &path, true);
    let before = bytes_of(&path);
    let error = open_error(&path);
    assert!(
        matches!(error, LedgerError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
        "the version in the WAL is read: {error}"
    );
    assert_untouched(&path, &before);
}

// ------------------------------------------------- one game process per SQLite file

/// Runs a game with the plugin's default settings on `DURABLE_CHILD_DB`, opens player 1, says
/// `ACTIVE` and keeps running until it is killed.
#[test]
#[ignore = "the child process of the restart tests; run by them"]
fn game_process() {
    let Ok(db) = std::env::var("DURABLE_CHILD_DB") else {
        return;
    };
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(LedgerBackend::sqlite(&db))));
    let p = app.world_mut().spawn((Buyer::new(UserId(1)), Gold(0))).id();
    app.update_until("player 1 to be active", |w| {
        w.get::<PlayerSession>(p)
            .is_some_and(PlayerSession::is_active)
    });
    println!("ACTIVE");
    loop {
        app.update();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts [`game_process`] on `db` and waits until its player is active.
fn start_game_process(db: &Path) -> std::process::Child {
    let mut child = common::child::test_child("game_process")
        .env("DURABLE_CHILD_DB", db)
        .spawn()
        .expect("start the game process");
    let lines = common::child::stdout_lines(&mut child);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let (_, line) = lines
            .recv_timeout(wait)
            .expect("the game process opened its player");
        if line.contains("ACTIVE") {
            break;
        }
    }
    // Keep reading, or the child's next line fails on a closed pipe.
    std::thread::spawn(move || lines.into_iter().for_each(drop));
    child
}

#[test]
fn a_game_restarted_after_a_crash_gets_its_players_back_at_once() {
    let (_dir, path) = temp_db();
    let mut crashed = start_game_process(&path);
    crashed.kill().expect("SIGKILL the game");
    crashed.wait().unwrap();
    let (owner, expires): (Option<String>, i64) = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT lease_owner, lease_expires_ms FROM accounts WHERE user_id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        owner.is_some() && expires > now + 60_000,
        "the killed game left its lease: {owner:?} until {expires}"
    );

    // The same game again, default settings (a new random server id, 5 min leases).
    let started = std::time::Instant::now();
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(LedgerBackend::sqlite(&path))));
    let p = app.world_mut().spawn((Buyer::new(UserId(1)), Gold(0))).id();
    while !app
        .world()
        .get::<PlayerSession>(p)
        .is_some_and(PlayerSession::is_active)
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "player 1 is still not active {:?} after the restart: {:?}",
            started.elapsed(),
            app.world().get::<PlayerSession>(p).unwrap().phase()
        );
        app.update();
        std::thread::sleep(Duration::from_millis(1));
    }
    println!(
        "restart after a crash: player 1 active {:.1} ms after the new app was built",
        started.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn a_second_game_process_on_the_same_file_is_refused_with_a_message_naming_the_first() {
    let (_dir, path) = temp_db();
    let mut first = start_game_process(&path);
    let error = SqliteLedger::open_exclusive(&path, &ServerId::new("second").unwrap()).unwrap_err();
    let message = error.to_string();
    println!("{message}");
    let LedgerError::InUse { location, holder } = &error else {
        panic!("expected InUse, got {error:?}");
    };
    assert_eq!(*location, path.display().to_string());
    assert!(
        message.contains(&format!(
            "is in use by another game process (pid {}",
            first.id()
        )) && holder.contains("started"),
        "names the holder: {message}"
    );
    assert!(
        message.contains("ledger.sqlite3")
            && message.contains("only one game process may use an SQLite ledger"),
        "{message}"
    );
    assert!(
        SqliteLedger::open(&path).unwrap().audit().is_ok(),
        "tools still read the file"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        SqliteLedger::open_exclusive(&path, &ServerId::new("second").unwrap()).is_ok(),
        "the OS released the killed game's lock"
    );
}

#[test]
fn a_second_app_on_the_same_file_is_refused_and_the_first_keeps_working() {
    let (_dir, path) = temp_db();
    let mut first = App::new();
    first
        .add_plugins((MinimalPlugins, plugin(LedgerBackend::sqlite(&path))))
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_millis(
            10,
        )))
        .init_resource::<HandlerMode>()
        .persist_component::<Gold>();
    add_sample_handlers(&mut first, HandlerLog::default());
    let p = first
        .world_mut()
        .spawn((Buyer::new(UserId(1)), Gold(0)))
        .id();
    first.update_until("player 1 to be active", |w| {
        w.get::<PlayerSession>(p)
            .is_some_and(PlayerSession::is_active)
    });

    // The lock is per open file: a second app in the same process is refused too.
    let LedgerStatus::Failed(error) = app_status(&path) else {
        panic!("the second app opened the ledger the first one uses");
    };
    let message = error.to_string();
    assert!(
        matches!(&error, LedgerError::InUse { holder, .. }
            if holder.starts_with(&format!("another app in this process (pid {}", std::process::id()))),
        "{message}"
    );
    assert!(
        message.contains("ledger.sqlite3"),
        "names the file: {message}"
    );

    buy(&mut first, p, GOLD_100);
    assert_eq!(first.world().get::<Gold>(p).unwrap().0, 100);
    assert_eq!(audit(&path).count(ReceiptState::Granted), 1);

    drop(first);
    assert!(
        matches!(app_status(&path), LedgerStatus::Ready(_)),
        "the file is free once the first app is gone"
    );
}

/// A version 7 ledger (no sales totals) holding purchases, a test purchase and a refund: the
/// migration makes the totals from its receipts, and sales reports read them.
#[test]
fn a_version_7_ledger_gets_its_sales_totals_from_its_receipts() {
    use bevy_marketplace::ledger::{
        ChargeReply, ChargeRequest, RefundRequest, SalesBucket, SalesQuery, call,
    };
    use bevy_marketplace::{PlaceId, ProductPurchaseChannel, RequestId};
    let (_dir, path) = temp_db();
    let mut store = SqliteLedger::open(&path).unwrap();
    let charge = |product: i64, price: u64, test_purchase: bool| ChargeRequest {
        request_id: RequestId::new(),
        user: UserId(1),
        product_id: ProductId(product),
        product_name: "item".into(),
        price,
        test_purchase,
        place_id: PlaceId(1),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 1000,
        fence: None,
    };
    let mut bought = Vec::new();
    for request in [
        charge(456456, 80, false),
        charge(456456, 80, false),
        charge(111222, 15, false),
        charge(111222, 0, true),
    ] {
        let ChargeReply::Charged { receipt, .. } = call(&mut store, request).unwrap() else {
            panic!("the charge was refused");
        };
        bought.push(receipt.purchase_id);
    }
    call(
        &mut store,
        RefundRequest {
            purchase_id: bought[1].clone(),
            reason: "chargeback".into(),
            place: None,
        },
    )
    .unwrap()
    .unwrap();
    let everything = SalesQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        bucket: SalesBucket::Day,
    };
    let before = call(&mut store, everything).unwrap();
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("DROP TABLE sales_hours; PRAGMA user_version = 7;")
        .unwrap();
    drop(conn);

    let mut store = SqliteLedger::open(&path).unwrap();
    // Version 9 rebuilt the receipts table (to let rejected receipts in): every index is back.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'receipts' AND sql IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            "receipts_by_time",
            "receipts_by_user_and_time",
            "receipts_clawback_by_user",
            "receipts_pending_by_user"
        ]
    );
    let state_check = |state: &str| {
        conn.execute(
            "UPDATE receipts SET state = ?1 WHERE purchase_id = ?2",
            rusqlite::params![state, bought[0].0],
        )
    };
    assert!(state_check("bogus").is_err(), "the state is still checked");
    state_check("rejected").expect("a rejected receipt is let in");
    state_check("pending").unwrap();
    drop(conn);
    let audit = store.audit().unwrap();
    assert!(audit.check().is_sound(), "{:?}", audit.check().problems);
    let units: Vec<(i64, u64, u64, u64, u64)> = audit
        .sales_hours
        .iter()
        .map(|r| {
            (
                r.product_id.0,
                r.units,
                r.currency,
                r.refunded_units,
                r.test_units,
            )
        })
        .collect();
    assert_eq!(
        units,
        [(111222, 1, 15, 0, 1), (456456, 2, 160, 1, 0)],
        "the totals the migration made"
    );
    assert_eq!(
        call(&mut store, everything).unwrap(),
        before,
        "the report is the same"
    );
}

/// Two connections opening one new ledger at the same instant (a game's worker and the admin
/// tool, two servers): both open it. The second one's checks of the file see the first one's
/// migration either not yet or wholly, never a half (tables made but not yet marked as a ledger).
#[test]
fn two_connections_opening_a_new_ledger_at_once_both_open_it() {
    for round in 0..150 {
        let (_dir, path) = temp_db();
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let openers: Vec<_> = (0..2)
            .map(|_| {
                let (path, start) = (path.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    SqliteLedger::open(&path).map(drop)
                })
            })
            .collect();
        for opener in openers {
            if let Err(e) = opener.join().unwrap() {
                panic!("round {round}: {e}");
            }
        }
    }
}

/// A save writes a player's components in place, with one statement that deletes those the save
/// no longer carries and names every one it does; a player with more components than SQLite
/// binds in one statement (32,766) has them all deleted and written again instead.
#[test]
fn a_save_of_more_components_than_one_statement_binds_keeps_them_all() {
    use bevy_marketplace::UserId;
    use bevy_marketplace::ledger::{
        LeaseFence, OpenSession, OpenSessionReply, PlayerSnapshot, SaveReply, SaveRequest, call,
    };
    let (_dir, path) = temp_db();
    let mut store = SqliteLedger::open(&path).unwrap();
    let server = ServerId::new("big").unwrap();
    let OpenSessionReply::Opened(opened) = call(
        &mut store,
        OpenSession {
            user: UserId(1),
            server: server.clone(),
            lease_ms: 60_000,
            starting_balance: 0,
        },
    )
    .unwrap() else {
        panic!("the session opens");
    };
    let fence = LeaseFence {
        server,
        token: opened.lease_token,
    };
    let state = |count: usize, tag: &str| {
        PlayerSnapshot(
            (0..count)
                .map(|i| (format!("C{i}"), format!("({tag}{i})")))
                .collect(),
        )
    };
    let save = |state: PlayerSnapshot| SaveRequest {
        user: UserId(1),
        fence: fence.clone(),
        state,
        granted: vec![],
        settled: vec![],
        rejected: vec![],
        release: false,
        lease_ms: 60_000,
    };
    for (count, tag) in [(40_000, "a"), (40_000, "b"), (3, "c"), (33_000, "d")] {
        let reply = call(&mut store, save(state(count, tag))).unwrap();
        assert!(matches!(reply, SaveReply::Saved { .. }), "{reply:?}");
        let saved = &audit(&path).accounts[&UserId(1)].1;
        assert_eq!(
            saved,
            &state(count, tag),
            "{count} components saved as {tag}"
        );
    }
}

/// A charge applied outside any transaction commits its sale with it (each statement commits on
/// its own there), and `audit()` reads committed data only: inside a transaction it is refused,
/// so it never shows a transaction's receipts without the sales that commit with them.
#[test]
fn sales_outside_a_transaction_commit_with_their_receipt_and_audit_reads_committed_data() {
    use bevy_marketplace::ledger::{ChargeRequest, LedgerReply, LedgerRequest, LedgerStore};
    use bevy_marketplace::{PlaceId, ProductPurchaseChannel, RequestId, UserId};
    let (_dir, path) = temp_db();
    let mut store = SqliteLedger::open(&path).unwrap();
    let charge = || {
        LedgerRequest::Charge(ChargeRequest {
            request_id: RequestId::new(),
            user: UserId(9),
            product_id: ProductId(7),
            product_name: "Potion".into(),
            price: 80,
            test_purchase: false,
            place_id: PlaceId(1),
            channel: ProductPurchaseChannel::InExperience,
            starting_balance: 1_000,
            fence: None,
        })
    };
    let reply = store.apply(&charge(), 1_000).unwrap();
    assert!(matches!(reply, LedgerReply::Charge(_)), "{reply:?}");
    let audit = store.audit().unwrap();
    assert_eq!(audit.receipts.len(), 1);
    assert!(
        audit.check().problems.is_empty(),
        "{:?}",
        audit.check().problems
    );
    assert_eq!(audit.sales_hours.iter().map(|h| h.units).sum::<u64>(), 1);

    store.begin().unwrap();
    store.apply(&charge(), 2_000).unwrap();
    assert!(
        store.audit().is_err(),
        "refused inside a transaction: its sale is not written until it commits"
    );
    store.commit().unwrap();
    let audit = store.audit().unwrap();
    assert!(
        audit.check().problems.is_empty(),
        "{:?}",
        audit.check().problems
    );
    assert_eq!(audit.sales_hours.iter().map(|h| h.units).sum::<u64>(), 2);
}
