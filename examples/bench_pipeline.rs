//! Benchmarks of the whole pipeline. Prints one JSON object per line:
//! `{"name", "value", "unit"[, "baseline", "ratio"]}`; exits non-zero if a receipt is lost or
//! granted twice during the run.
//!
//! ```sh
//! cargo run --release --example bench_pipeline            # about a minute
//! cargo run --release --example bench_pipeline -- --quick # a few seconds
//! cargo run --release --example bench_pipeline -- --only durable # one scenario, for profiling
//! PG_URL="host=127.0.0.1 port=5432 user=postgres" \
//!   cargo run --release --features postgres --example bench_pipeline   # adds PostgreSQL figures
//! ```

use bevy_marketplace::ledger::{AdjustBalance, HistoryRequest};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_marketplace::Ledger;
use bevy_marketplace::ledger::{
    ChargeRequest, InMemoryLedger, LedgerBackend, LedgerRequest, LedgerStore,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::{
    CatalogIndex, PlaceId, PlayerSession, ProductPurchaseChannel, PurchaseId, ReceiptState,
    RequestId,
};
use serde::{Deserialize, Serialize};

const GOLD: ProductId = ProductId(456456);

#[derive(Component, Default, Serialize, Deserialize)]
struct Gold(u64);

fn emit(name: &str, value: f64, unit: &str, baseline: Option<f64>) {
    match baseline {
        Some(b) => println!(
            "{{\"name\":\"{name}\",\"value\":{value:.3},\"unit\":\"{unit}\",\"baseline\":{b:.3},\"ratio\":{:.2}}}",
            value / b
        ),
        None => println!("{{\"name\":\"{name}\",\"value\":{value:.3},\"unit\":\"{unit}\"}}"),
    }
}

fn fail(what: String) -> ! {
    eprintln!("INVARIANT BROKEN: {what}");
    std::process::exit(1);
}

fn catalog() -> Catalog {
    Catalog::from_ron_str(include_str!("../assets/products.ron"), "products.ron").unwrap()
}

/// A headless server with the gold handler; returns the app and the grant log. The plugin runs
/// on its default settings but two: `max_batch` (the default, or 1 for the one-transaction-per-
/// request baseline) and a starting balance that lets every player buy (the game's economy, not
/// the plugin's work).
fn server(ledger: LedgerBackend, max_batch: usize) -> (App, Arc<Mutex<Vec<PurchaseId>>>) {
    // The grant log is the benchmark's bookkeeping, not the plugin's work: it is reserved up
    // front so that its growth (a copy of up to megabytes) is not timed as a plugin stall.
    let granted = Arc::new(Mutex::new(Vec::with_capacity(1 << 16)));
    let log = granted.clone();
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        MarketplacePlugin {
            starting_balance: 1_000_000_000,
            max_batch,
            ..MarketplacePlugin::default()
                .with_catalog(catalog())
                .with_ledger(ledger)
        },
    ))
    .persist_component::<Gold>()
    .add_product_handler(GOLD, move |receipt, mut player| {
        let Some(mut gold) = player.get_mut::<Gold>() else {
            return false;
        };
        gold.0 += 100;
        log.lock().unwrap().push(receipt.purchase_id.clone());
        true
    });
    (app, granted)
}

/// Runs frames until `done`. With a `frame` interval the loop sleeps out the rest of each frame
/// as Bevy's `ScheduleRunnerPlugin` does, so several servers on one machine share its cores the
/// way real ones would; `Duration::ZERO` runs frames back to back (one server, fastest).
fn update_until(
    app: &mut App,
    frame: Duration,
    limit: Duration,
    mut done: impl FnMut(&mut World) -> bool,
) {
    let deadline = Instant::now() + limit;
    loop {
        let frame_start = Instant::now();
        app.update();
        if done(app.world_mut()) {
            return;
        }
        if let Some(rest) = frame.checked_sub(frame_start.elapsed())
            && !rest.is_zero()
        {
            std::thread::sleep(rest);
        }
        if Instant::now() > deadline {
            fail("the pipeline did not finish in time".into());
        }
    }
}

fn spawn_players(app: &mut App, users: std::ops::Range<i64>, frame: Duration) -> Vec<Entity> {
    let players: Vec<Entity> = users
        .map(|u| app.world_mut().spawn((Buyer::new(UserId(u)), Gold(0))).id())
        .collect();
    let n = players.len();
    update_until(app, frame, Duration::from_secs(120), |w| {
        w.query::<&PlayerSession>()
            .iter(w)
            .filter(|s| s.is_active())
            .count()
            == n
    });
    players
}

/// Charge → handler → grant commit for `players × rounds` purchases, with frames at most every
/// `frame` (see [`update_until`]). Returns receipts/s.
fn pipeline(
    ledger: LedgerBackend,
    max_batch: usize,
    users: std::ops::Range<i64>,
    rounds: usize,
    frame: Duration,
) -> f64 {
    let (mut app, granted) = server(ledger, max_batch);
    let players = spawn_players(&mut app, users, frame);
    let target = players.len() * rounds;
    let by_user: HashMap<UserId, usize> = players
        .iter()
        .enumerate()
        .map(|(i, &p)| (app.world().get::<Buyer>(p).unwrap().user_id, i))
        .collect();
    // Like a game: a player buys again once their last purchase is resolved. The harness only
    // touches players with news, so it costs what a game's own input handling would.
    let mut bought = vec![0usize; players.len()];
    let mut ready: Vec<usize> = (0..players.len()).collect();
    let mut resolved = app
        .world()
        .resource::<Messages<ReceiptResolved>>()
        .get_cursor();
    let started = Instant::now();
    let load_before = app.world().resource::<Ledger>().worker_load();
    let tx_before = app.world().resource::<Ledger>().transactions();
    let mut frames = 0u64;
    update_until(&mut app, frame, Duration::from_secs(600), |world| {
        frames += 1;
        let messages = world.resource::<Messages<ReceiptResolved>>();
        for message in resolved.read(messages) {
            ready.push(by_user[&message.receipt.player_id]);
        }
        ready.retain(|&i| {
            if bought[i] == rounds {
                return false;
            }
            if world.get::<OpenPrompt>(players[i]).is_some() {
                return true;
            }
            bought[i] += 1;
            world.write_message(PromptProductPurchase {
                player: players[i],
                product_id: GOLD,
            });
            false
        });
        world
            .resource::<bevy_marketplace::MarketplaceStats>()
            .granted as usize
            >= target
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ledger = app.world().resource::<Ledger>();
    let load = ledger.worker_load();
    eprintln!(
        "{target} receipts in {elapsed:.3} s, {frames} frames, {} transactions; worker busy {:.3} s ({:.3} s committing), {} requests",
        ledger.transactions() - tx_before,
        (load.busy - load_before.busy).as_secs_f64(),
        (load.committing - load_before.committing).as_secs_f64(),
        load.requests - load_before.requests,
    );
    // Invariants: every purchase granted exactly once, gold matches.
    let grants = granted.lock().unwrap().clone();
    let unique: HashSet<_> = grants.iter().collect();
    if unique.len() != grants.len() {
        fail(format!(
            "{} purchases granted twice",
            grants.len() - unique.len()
        ));
    }
    if grants.len() != target {
        fail(format!("{} grants for {target} purchases", grants.len()));
    }
    for &p in &players {
        let gold = app.world().get::<Gold>(p).unwrap().0;
        if gold != 100 * rounds as u64 {
            fail(format!("a player has {gold} gold after {rounds} purchases"));
        }
    }
    target as f64 / elapsed
}

fn check_sqlite(path: &Path, expected: usize) {
    let audit = bevy_marketplace::ledger::SqliteLedger::open(path)
        .unwrap()
        .audit()
        .unwrap();
    if audit.count(ReceiptState::Granted) != expected || audit.receipts.len() != expected {
        fail(format!(
            "ledger has {} receipts, {} granted; expected {expected}",
            audit.receipts.len(),
            audit.count(ReceiptState::Granted)
        ));
    }
    if audit.purchase_debits != audit.receipt_total() {
        fail("debits and receipts disagree".into());
    }
}

/// The same purchases as [`pipeline`] with no game, no worker and no rules: a bare rusqlite loop
/// issuing the statements the SQLite ledger issues for them, with the values it writes
/// (time-ordered ids, the clock's milliseconds, the product's name, a server id as the lease
/// owner): per charge, the replay check, the account read, the debit, the receipt, the journal
/// entry (and per transaction, the sales total); per grant, the account read, the lease renewal, the components
/// written, the receipt read and marked granted. Each round's charges go in one transaction
/// and its grants in another (the best group commit can do), each statement taken from
/// rusqlite's cache once per transaction as the ledger does, on a file with the same schema
/// and settings. Returns receipts/s: the ceiling for ours.
fn raw_sqlite(path: &Path, players: i64, rounds: usize) -> f64 {
    use rusqlite::{OptionalExtension, params};
    const NAME: &str = "Pouch of Gold";
    const LEASE_MS: i64 = 300_000;
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let owner = uuid::Uuid::new_v4().simple().to_string();
    drop(bevy_marketplace::ledger::SqliteLedger::open(path).unwrap());
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;")
        .unwrap();
    conn.set_prepared_statement_cache_capacity(64);
    let tx = conn.transaction().unwrap();
    for user in 0..players {
        let now = now_ms();
        tx.execute(
            "INSERT INTO accounts (user_id, balance, lease_owner, lease_expires_ms, lease_token, created_ms, updated_ms, shortfall)
             VALUES (?1, 1000000000, ?2, ?3, 1, ?4, ?4, 0)",
            params![user, owner, now + LEASE_MS, now],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO balance_journal (user_id, delta, kind, reason, purchase_id, at_ms)
             VALUES (?1, 1000000000, 'starting_balance', 'starting balance', NULL, ?2)",
            params![user, now],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    const ACCOUNT: &str = "SELECT balance, lease_owner, lease_expires_ms, lease_token, shortfall FROM accounts WHERE user_id = ?1";
    const PUT_ACCOUNT: &str = "UPDATE accounts SET balance = ?2, lease_owner = ?3, lease_expires_ms = ?4, lease_token = ?5,
             updated_ms = ?6, shortfall = ?7 WHERE user_id = ?1";
    let started = Instant::now();
    for round in 0..rounds {
        let tx = conn.transaction().unwrap();
        let now = now_ms();
        let mut made = Vec::with_capacity(players as usize);
        {
            // As the ledger does, each statement is taken from the cache once per transaction.
            let mut replay = tx
                .prepare_cached(
                    "SELECT purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms
                     FROM receipts WHERE request_id = ?1",
                )
                .unwrap();
            let mut account = tx.prepare_cached(ACCOUNT).unwrap();
            let mut put_account = tx.prepare_cached(PUT_ACCOUNT).unwrap();
            let mut receipt = tx
                .prepare_cached(
                    "INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                                           currency_type, channel, is_test, state, created_ms, product_name)
                     VALUES (?1, ?2, ?3, 456456, 0, 80, 1, 1, 0, 'pending', ?4, ?5)",
                )
                .unwrap();
            let mut journal = tx
                .prepare_cached(
                    "INSERT INTO balance_journal (user_id, delta, kind, reason, purchase_id, at_ms)
                     VALUES (?1, -80, 'purchase', ?2, ?3, ?4)",
                )
                .unwrap();
            for user in 0..players {
                let request_id = uuid::Uuid::now_v7().hyphenated().to_string();
                let purchase_id = uuid::Uuid::now_v7().simple().to_string();
                let replayed: Option<String> = replay
                    .query_row([&request_id], |r| r.get(0))
                    .optional()
                    .unwrap();
                assert!(replayed.is_none());
                let balance: i64 = account.query_row([user], |r| r.get(0)).unwrap();
                put_account
                    .execute(params![
                        user,
                        balance - 80,
                        owner,
                        now + LEASE_MS,
                        1,
                        now,
                        0
                    ])
                    .unwrap();
                receipt
                    .execute(params![purchase_id, request_id, user, now, NAME])
                    .unwrap();
                journal
                    .execute(params![user, NAME, purchase_id, now])
                    .unwrap();
                made.push(purchase_id);
            }
        }
        // The ledger adds a transaction's sales to the totals once per hour and product.
        tx.prepare_cached(
            "INSERT INTO sales_hours (hour_ms, product_id, units, currency, refunded_units,
                                      refunded_currency, test_units, rejected_units,
                                      rejected_currency)
             VALUES (?1, 456456, ?2, ?3, 0, 0, 0, 0, 0)
             ON CONFLICT (hour_ms, product_id, shard) DO UPDATE SET
                units = units + excluded.units,
                currency = currency + excluded.currency,
                refunded_units = refunded_units + excluded.refunded_units,
                refunded_currency = refunded_currency + excluded.refunded_currency,
                test_units = test_units + excluded.test_units,
                rejected_units = rejected_units + excluded.rejected_units,
                rejected_currency = rejected_currency + excluded.rejected_currency",
        )
        .unwrap()
        .execute([now / 3_600_000 * 3_600_000, players, 80 * players])
        .unwrap();
        tx.commit().unwrap();
        let tx = conn.transaction().unwrap();
        let now = now_ms();
        {
            let mut account = tx.prepare_cached(ACCOUNT).unwrap();
            let mut put_account = tx.prepare_cached(PUT_ACCOUNT).unwrap();
            let mut status = tx
                .prepare_cached(
                    "SELECT purchase_id, user_id, product_id, place_id, currency_spent, currency_type, channel, is_test, created_ms,
                            state, refunded_ms, refund_reason, clawback FROM receipts WHERE purchase_id = ?1",
                )
                .unwrap();
            let mut put_component = tx
                .prepare_cached(
                    "INSERT INTO player_components (user_id, name, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value
                     WHERE value IS NOT excluded.value",
                )
                .unwrap();
            let mut grant = tx
                .prepare_cached(
                    "UPDATE receipts SET state = 'granted', resolved_ms = ?2 WHERE purchase_id = ?1",
                )
                .unwrap();
            for (user, purchase_id) in made.iter().enumerate() {
                let user = user as i64;
                let balance: i64 = account.query_row([user], |r| r.get(0)).unwrap();
                let _: String = status.query_row([purchase_id], |r| r.get(9)).unwrap();
                put_account
                    .execute(params![user, balance, owner, now + LEASE_MS, 1, now, 0])
                    .unwrap();
                // The ledger takes this one from the cache per save: its text depends on how many
                // components the player has.
                tx.prepare_cached(
                    "DELETE FROM player_components WHERE user_id = ?1 AND name NOT IN (?2)",
                )
                .unwrap()
                .execute(params![user, "Gold"])
                .unwrap();
                put_component
                    .execute(params![user, "Gold", format!("({})", 100 * (round + 1))])
                    .unwrap();
                grant.execute(params![purchase_id, now]).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    (players as usize * rounds) as f64 / started.elapsed().as_secs_f64()
}

/// Purchase history and sales reports on an SQLite ledger of `total` receipts over 30 days, of
/// which 10,000 are one player's: the first and the last page of that player's history, and
/// sales per day over everything. Returns (first page ms, last page ms from a cursor, last page
/// ms by number, sales ms).
fn live_ops(total: i64) -> (f64, f64, f64, f64) {
    use bevy_marketplace::ledger::{
        HistoryFilter, LedgerReply, LedgerRequest, LedgerStore, SalesBucket, SalesQuery,
        SqliteLedger,
    };
    let dir = tempfile_dir();
    let path = dir.join("live_ops.sqlite3");
    drop(SqliteLedger::open(&path).unwrap());
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id, currency_spent,
                                       currency_type, channel, is_test, state, created_ms, resolved_ms, product_name)
                 VALUES (?1, ?2, ?3, ?4, 0, 80, 1, 1, ?5, 'granted', ?6, ?6, 'Gold')",
            )
            .unwrap();
        let month_ms = 30 * 86_400_000i64;
        for i in 0..total {
            let id = uuid::Uuid::from_u128(i as u128 + 1);
            // User 1 owns every hundredth receipt up to 10,000; the rest spread over 100,000 users.
            let user = if i % 100 == 0 && i / 100 < 10_000 {
                1
            } else {
                2 + i % 100_000
            };
            insert
                .execute(rusqlite::params![
                    id.simple().to_string(),
                    id.hyphenated().to_string(),
                    user,
                    [456456, 123123, 789789][(i % 3) as usize],
                    i % 50 == 0,
                    1_780_000_000_000 + i * month_ms / total
                ])
                .unwrap();
        }
    }
    // The receipts went in behind the ledger's back: the sales totals are made from them as a
    // ledger made before the totals existed is migrated (timed).
    tx.execute_batch("DROP TABLE sales_hours; PRAGMA user_version = 7;")
        .unwrap();
    tx.commit().unwrap();
    drop(conn);
    let migrating = Instant::now();
    let mut store = SqliteLedger::open(&path).unwrap();
    emit(
        &format!("sales_totals_migration_ms_{}_receipts", total),
        migrating.elapsed().as_secs_f64() * 1e3,
        "ms",
        None,
    );
    let mut timed = |request: LedgerRequest| {
        let started = Instant::now();
        let reply = store.apply(&request, 0).unwrap();
        (started.elapsed().as_secs_f64() * 1000.0, reply)
    };
    let history = |page, after| {
        LedgerRequest::History(HistoryRequest {
            user: UserId(1),
            filter: HistoryFilter::default(),
            page,
            after,
        })
    };
    let (first, reply) = timed(history(0, None));
    if !matches!(reply, LedgerReply::History(Ok(ref p)) if p.entries.len() == 50 && !p.is_finished)
    {
        fail(format!("history page 0 of 10,000 receipts: {reply:?}"));
    }
    // The last page, asked by number (the store skips 199 pages) and from the cursor the page
    // before ends at (as `request_next_history_page` asks).
    let (by_number, reply) = timed(history(199, None));
    let LedgerReply::History(Ok(last_page)) = reply else {
        fail("no history".into());
    };
    if !(last_page.entries.len() == 50 && last_page.is_finished) {
        fail(format!(
            "history page 199 of 10,000 receipts: {last_page:?}"
        ));
    }
    let (_, reply) = timed(history(198, None));
    let LedgerReply::History(Ok(before)) = reply else {
        fail("no history".into());
    };
    let (from_cursor, reply) = timed(history(199, before.next_cursor()));
    if !matches!(reply, LedgerReply::History(Ok(ref p)) if *p == last_page) {
        fail(format!(
            "page 199 from a cursor differs from page 199 by number: {reply:?}"
        ));
    }
    let (sales, reply) = timed(LedgerRequest::Sales(SalesQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        bucket: SalesBucket::Day,
    }));
    let LedgerReply::Sales(rows) = reply else {
        fail("no sales".into());
    };
    let units: u64 = rows.iter().map(|r| r.units + r.test_units).sum();
    if units != total as u64 {
        fail(format!("sales count {units} of {total} receipts"));
    }
    // A week per hour, from and to the middle of an hour (the edges are read from receipts).
    let week_from = 1_780_000_000_000 + 10 * 86_400_000 + 1_234_567;
    let week_to = week_from + 7 * 86_400_000;
    let (week, reply) = timed(LedgerRequest::Sales(SalesQuery {
        from_ms: week_from,
        to_ms: week_to,
        bucket: SalesBucket::Hour,
    }));
    let LedgerReply::Sales(rows) = reply else {
        fail("no sales".into());
    };
    let month_ms = 30 * 86_400_000i64;
    let expected = (0..total)
        .filter(|i| (week_from..week_to).contains(&(1_780_000_000_000 + i * month_ms / total)))
        .count() as u64;
    let units: u64 = rows.iter().map(|r| r.units + r.test_units).sum();
    if units != expected {
        fail(format!(
            "hourly sales of a week count {units} of {expected} receipts"
        ));
    }
    emit(
        &format!("sales_week_by_hour_ms_{total}_receipts"),
        week,
        "ms",
        None,
    );
    let _ = std::fs::remove_dir_all(dir);
    (first, from_cursor, by_number, sales)
}

/// Runs of a scenario that is repeated; its figure is the median (the machine is shared).
const RUNS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn durable_receipts(quick: bool) {
    let dir = tempfile_dir();
    let (players, rounds) = if quick { (1000, 2) } else { (5000, 4) };
    let (players_1, rounds_1) = if quick { (100, 2) } else { (500, 2) };
    let (mut grouped, mut single, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    // Interleaved, so all see the same machine.
    for run in 0..RUNS {
        raw.push(raw_sqlite(
            &dir.join(format!("raw{run}.sqlite3")),
            players,
            rounds,
        ));
        let grouped_path = dir.join(format!("grouped{run}.sqlite3"));
        grouped.push(pipeline(
            LedgerBackend::sqlite(&grouped_path),
            bevy_marketplace::ledger::DEFAULT_MAX_BATCH,
            0..players,
            rounds,
            Duration::ZERO,
        ));
        check_sqlite(&grouped_path, players as usize * rounds);
        if std::env::var_os("NO_SINGLE").is_some() {
            single.push(1.0);
            continue;
        }
        let single_path = dir.join(format!("single{run}.sqlite3"));
        single.push(pipeline(
            LedgerBackend::sqlite(&single_path),
            1,
            0..players_1,
            rounds_1,
            Duration::ZERO,
        ));
        check_sqlite(&single_path, players_1 as usize * rounds_1);
    }
    let grouped = median(grouped);
    let raw = median(raw);
    emit(
        "durable_receipts_per_s",
        grouped,
        "receipts/s",
        Some(median(single)),
    );
    emit("raw_sqlite_receipts_per_s", raw, "receipts/s", None);
    emit("durable_vs_raw_sqlite", grouped / raw, "ratio", None);
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bevy_marketplace_bench_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn frame_time(app: &mut App, frames: u32) -> f64 {
    for _ in 0..50 {
        app.update();
    }
    let started = Instant::now();
    for _ in 0..frames {
        app.update();
    }
    started.elapsed().as_secs_f64() * 1e6 / frames as f64
}

fn idle_frame_cost(quick: bool) {
    let players = 10_000;
    let frames = if quick { 500 } else { 3000 };
    let mut bare = App::new();
    bare.add_plugins(MinimalPlugins);
    for u in 0..players {
        bare.world_mut().spawn((Buyer::new(UserId(u)), Gold(0)));
    }
    let (mut with_plugin, _) = server(
        LedgerBackend::in_memory(),
        bevy_marketplace::ledger::DEFAULT_MAX_BATCH,
    );
    spawn_players(&mut with_plugin, 0..players, Duration::ZERO);
    // Interleave to share the machine's noise fairly.
    let (mut base, mut plugin) = (0.0, 0.0);
    for _ in 0..4 {
        base += frame_time(&mut bare, frames / 4);
        plugin += frame_time(&mut with_plugin, frames / 4);
    }
    let (base, plugin) = (base / 4.0, plugin / 4.0);
    emit(
        "idle_frame_cost_us",
        (plugin - base).max(0.0),
        "us/frame",
        None,
    );
    emit("idle_frame_us_with_plugin", plugin, "us/frame", Some(base));
}

/// 60 Hz of the wall clock, as a game server runs.
const SIXTY_HZ: Duration = Duration::from_micros(16_667);

/// Despawns `players` and runs frames until their final saves are committed.
fn leave(app: &mut App, players: Vec<Entity>) {
    for e in players {
        app.world_mut().despawn(e);
    }
    let mut frames = 0;
    update_until(app, SIXTY_HZ, Duration::from_secs(120), |w| {
        frames += 1;
        frames > 2 && w.resource::<Ledger>().in_flight() == 0
    });
}

/// 10,000 returning players online on default settings for 200 s of game time, nothing bought:
/// what staying current costs the ledger, past the first refresh (2 s), the autosaves (every
/// 30 s) and the first lease renewal (half of the 5 min lease). The clock advances 1/60 s per
/// frame and a frame takes at least 1 ms of the wall clock (the 200 s take 12 s), which leaves
/// the storage worker time to answer as it would at 60 Hz; its work is counted per second of
/// game time.
fn idle_ledger(quick: bool) {
    let players = if quick { 2_000 } else { 10_000 };
    let game_time = Duration::from_secs(200);
    let dir = tempfile_dir();
    let path = dir.join("idle.sqlite3");
    let (mut app, _) = server(
        LedgerBackend::sqlite(&path),
        bevy_marketplace::ledger::DEFAULT_MAX_BATCH,
    );
    // A first visit, so that they return with saved state, as most of a game's players do.
    let first = spawn_players(&mut app, 0..players, SIXTY_HZ);
    leave(&mut app, first);
    spawn_players(&mut app, 0..players, SIXTY_HZ);
    let load = |app: &App| {
        let ledger = app.world().resource::<Ledger>();
        (ledger.worker_load(), ledger.transactions())
    };
    let saves = |app: &App| {
        app.world()
            .resource::<bevy_marketplace::MarketplaceStats>()
            .saves
    };
    let ((load_before, tx_before), saves_before) = (load(&app), saves(&app));
    app.insert_resource(TimeUpdateStrategy::ManualDuration(SIXTY_HZ));
    let started = Instant::now();
    let frames = (game_time.as_secs_f64() / SIXTY_HZ.as_secs_f64()).ceil() as u64;
    let mut longest = Duration::ZERO;
    for _ in 0..frames {
        let frame = Instant::now();
        app.update();
        let took = frame.elapsed();
        longest = longest.max(took);
        if let Some(rest) = Duration::from_millis(1).checked_sub(took) {
            std::thread::sleep(rest);
        }
    }
    // Let the ledger answer what the last frames asked.
    update_until(&mut app, Duration::ZERO, Duration::from_secs(60), |w| {
        w.resource::<Ledger>().in_flight() == 0
    });
    let wall = started.elapsed().as_secs_f64();
    let game_s = game_time.as_secs_f64();
    let (load_after, tx_after) = load(&app);
    let requests = load_after.requests - load_before.requests;
    let busy = (load_after.busy - load_before.busy).as_secs_f64();
    let saved = saves(&app) - saves_before;
    let intervals = game_s / MarketplacePlugin::default().refresh_interval.as_secs_f64();
    let reads = requests.saturating_sub(saved);
    eprintln!(
        "{players} players idle for {game_s:.0} s of game time ({frames} frames in {wall:.1} s, longest {:.1} ms): {requests} ledger requests in {} transactions, {saved} saves; worker busy {:.1} ms",
        longest.as_secs_f64() * 1e3,
        tx_after - tx_before,
        busy * 1e3,
    );
    if saved < players as u64 {
        fail(format!(
            "{saved} saves in {game_s:.0} s: every idle player's lease should have been renewed once"
        ));
    }
    let suffix = if quick { "2000" } else { "10000" };
    emit(
        &format!("idle_ledger_reads_per_s_{suffix}_players"),
        reads as f64 / game_s,
        "requests/s",
        None,
    );
    emit(
        &format!("idle_ledger_reads_per_refresh_interval_{suffix}_players"),
        reads as f64 / intervals,
        "requests",
        None,
    );
    emit(
        &format!("idle_lease_renewals_per_s_{suffix}_players"),
        saved as f64 / game_s,
        "saves/s",
        None,
    );
    emit(
        &format!("idle_worker_busy_ms_per_s_{suffix}_players"),
        busy * 1e3 / game_s,
        "ms/s",
        None,
    );
    emit(
        &format!("idle_longest_frame_ms_{suffix}_players"),
        longest.as_secs_f64() * 1e3,
        "ms",
        None,
    );
    drop(app);
    let _ = std::fs::remove_dir_all(dir);
}

/// A refund made by the admin tool (on a connection of its own) while its buyer is online among
/// `players` others, until the game has applied it (the buyer's balance is back): default
/// settings, frames at 60 Hz. Five refunds at different points of the refresh interval; returns
/// the median and the longest, in ms.
fn refund_elsewhere(
    backend: LedgerBackend,
    users: std::ops::Range<i64>,
    refund: impl Fn(PurchaseId),
) -> (f64, f64) {
    const REFUNDS: usize = 5;
    let (mut app, granted) = server(backend, bevy_marketplace::ledger::DEFAULT_MAX_BATCH);
    let players = spawn_players(&mut app, users, SIXTY_HZ);
    let buyer = players[0];
    for _ in 0..REFUNDS {
        let before = granted.lock().unwrap().len();
        // The default confirm policy answers the prompt (no UI here).
        app.world_mut().write_message(PromptProductPurchase {
            player: buyer,
            product_id: GOLD,
        });
        update_until(&mut app, SIXTY_HZ, Duration::from_secs(30), |w| {
            granted.lock().unwrap().len() > before && w.get::<OpenPrompt>(buyer).is_none()
        });
    }
    let purchases = granted.lock().unwrap().clone();
    let balance = |app: &App| app.world().get::<PremiumBalance>(buyer).unwrap().0;
    let mut seen = Vec::new();
    for (i, purchase) in purchases.into_iter().enumerate() {
        // Spread the refunds over the refresh interval: 0.37 s apart, modulo 2 s.
        let wait = Instant::now();
        update_until(&mut app, SIXTY_HZ, Duration::from_secs(30), |_| {
            wait.elapsed() >= Duration::from_millis(2_000 + 370 * i as u64)
        });
        let before = balance(&app);
        let refunded = Instant::now();
        refund(purchase);
        update_until(&mut app, SIXTY_HZ, Duration::from_secs(30), |w| {
            w.get::<PremiumBalance>(buyer).unwrap().0 != before
        });
        seen.push(refunded.elapsed().as_secs_f64() * 1e3);
        if balance(&app) != before + 80 {
            fail(format!(
                "a refund of 80 moved the balance from {before} to {}",
                balance(&app)
            ));
        }
    }
    let longest = seen.iter().copied().fold(0.0, f64::max);
    eprintln!("refunds made elsewhere reached the game after (ms): {seen:.0?}");
    (median(seen), longest)
}

fn refund_elsewhere_sqlite(quick: bool) {
    let dir = tempfile_dir();
    let path = dir.join("refunds.sqlite3");
    let players = if quick { 100 } else { 1_000 };
    let admin = path.clone();
    let (median, longest) = refund_elsewhere(LedgerBackend::sqlite(&path), 0..players, |id| {
        let mut store = bevy_marketplace::ledger::SqliteLedger::open(&admin).unwrap();
        refund_by_admin(&mut store, id);
    });
    emit("refund_elsewhere_seen_ms_sqlite", median, "ms", None);
    emit(
        "refund_elsewhere_seen_longest_ms_sqlite",
        longest,
        "ms",
        None,
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn refund_by_admin(store: &mut dyn LedgerStore, purchase_id: PurchaseId) {
    bevy_marketplace::ledger::call(
        store,
        bevy_marketplace::ledger::RefundRequest {
            purchase_id,
            reason: "bench".into(),
            place: None,
        },
    )
    .unwrap_or_else(|e| fail(format!("the admin's refund failed: {e}")))
    .unwrap_or_else(|e| fail(format!("the admin's refund was refused: {e}")));
}

fn burst_stall(quick: bool) {
    let dir = tempfile_dir();
    let path = dir.join("burst.sqlite3");
    let sqlite = bevy_marketplace::ledger::SqliteLedger::open(&path).unwrap();
    let run = burst(quick, false, sqlite, LedgerBackend::sqlite(&path), || {
        bevy_marketplace::ledger::SqliteLedger::open(&path)
            .unwrap()
            .audit()
            .unwrap()
    });
    emit("burst_max_stall_ms", run.max_stall_ms, "ms", None);
    emit(
        "burst_max_stall_ms_kept_cpu",
        run.max_stall_kept_cpu_ms,
        "ms",
        None,
    );
    emit("burst_p999_stall_ms", run.p999_stall_ms, "ms", None);
    let memory = InMemoryLedger::default();
    let backend = LedgerBackend::InMemory(memory.clone());
    let audit = memory.clone();
    let run = burst(quick, false, memory, backend, || audit.audit());
    emit("burst_max_stall_ms_in_memory", run.max_stall_ms, "ms", None);
    emit(
        "burst_max_stall_ms_kept_cpu_in_memory",
        run.max_stall_kept_cpu_ms,
        "ms",
        None,
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A store whose every commit takes `delay` longer: a slow disk, a loaded database server.
struct SlowCommits<S> {
    inner: S,
    delay: Duration,
}

impl<S: LedgerStore> LedgerStore for SlowCommits<S> {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn begin(&mut self) -> Result<(), bevy_marketplace::ledger::LedgerError> {
        self.inner.begin()
    }
    fn apply(
        &mut self,
        request: &LedgerRequest,
        now_ms: i64,
    ) -> Result<bevy_marketplace::ledger::LedgerReply, bevy_marketplace::ledger::LedgerError> {
        self.inner.apply(request, now_ms)
    }
    fn apply_batch(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Option<
        Result<Vec<bevy_marketplace::ledger::LedgerReply>, bevy_marketplace::ledger::LedgerError>,
    > {
        self.inner.apply_batch(batch, now_ms)
    }
    fn commit(&mut self) -> Result<(), bevy_marketplace::ledger::LedgerError> {
        std::thread::sleep(self.delay);
        self.inner.commit()
    }
    fn rollback(&mut self) {
        self.inner.rollback()
    }
    fn read(
        &mut self,
        request: &LedgerRequest,
        now_ms: i64,
    ) -> Result<bevy_marketplace::ledger::LedgerReply, bevy_marketplace::ledger::LedgerError> {
        self.inner.read(request, now_ms)
    }
}

/// The burst on a server whose ledger commits 200 ms slower than usual, so that the game is
/// more than a refresh interval behind its ledger for most of the burst: it must drain anyway
/// (a refresh that read every player each interval fed a backlog that never drained).
fn burst_while_behind(quick: bool) {
    let dir = tempfile_dir();
    let path = dir.join("behind.sqlite3");
    let sqlite = bevy_marketplace::ledger::SqliteLedger::open(&path).unwrap();
    let slow = path.clone();
    let backend = LedgerBackend::custom(move || {
        Ok(SlowCommits {
            inner: bevy_marketplace::ledger::SqliteLedger::open(&slow)?,
            delay: Duration::from_millis(200),
        })
    });
    let run = burst(quick, true, sqlite, backend, || {
        bevy_marketplace::ledger::SqliteLedger::open(&path)
            .unwrap()
            .audit()
            .unwrap()
    });
    eprintln!(
        "burst while behind: the last of the buyers waited {:.2} s for their session (refresh interval 2 s); {} ledger requests for {} receipts",
        run.all_active_s, run.requests, run.receipts
    );
    emit("burst_while_behind_s", run.seconds, "s", None);
    emit(
        "burst_while_behind_requests_per_receipt",
        run.requests as f64 / run.receipts as f64,
        "requests",
        None,
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// What one burst measured.
struct BurstRun {
    /// The longest time a frame spent in the plugin's systems, ms.
    max_stall_ms: f64,
    /// The longest among frames in which the game thread kept its CPU (see
    /// [`ThreadClock::lost_cpu_since`]): the plugin's own work, without the machine's.
    max_stall_kept_cpu_ms: f64,
    /// The 99.9th percentile of that.
    p999_stall_ms: f64,
    /// From the buyers' arrival until every receipt was granted and committed.
    seconds: f64,
    /// From the buyers' arrival until every session had opened.
    all_active_s: f64,
    /// Ledger requests sent meanwhile.
    requests: u64,
    receipts: usize,
}

/// `n` receipts are waiting in the ledger; `n` buyers join at once; the frames run until all are
/// granted and committed: back to back, or `paced` at 60 Hz of the wall clock.
fn burst(
    quick: bool,
    paced: bool,
    mut store: impl LedgerStore,
    backend: LedgerBackend,
    audit: impl Fn() -> bevy_marketplace::ledger::LedgerAudit,
) -> BurstRun {
    let n: i64 = if quick { 2000 } else { 10_000 };
    store.begin().unwrap();
    for u in 0..n {
        store
            .apply(
                &LedgerRequest::AdjustBalance(AdjustBalance {
                    user: UserId(u),
                    delta: 1000,
                    reason: "bench".into(),
                    // Store-page buyers who never played: their accounts start empty.
                    starting_balance: 0,
                }),
                0,
            )
            .unwrap();
        store
            .apply(
                &LedgerRequest::Charge(ChargeRequest {
                    request_id: RequestId::new(),
                    user: UserId(u),
                    product_id: GOLD,
                    product_name: "test product".into(),
                    price: 80,
                    test_purchase: false,
                    place_id: PlaceId(0),
                    channel: ProductPurchaseChannel::ExperienceDetailsPage,
                    starting_balance: 0,
                    fence: None,
                }),
                0,
            )
            .unwrap();
    }
    store.commit().unwrap();
    drop(store);
    let (mut app, granted) = server(backend, bevy_marketplace::ledger::DEFAULT_MAX_BATCH);
    // Each frame advances the clock by 1/60 s, as on a 60 Hz server (Bevy swaps message buffers
    // once per fixed step, so uncapped frames would pile up a step's worth of messages).
    app.insert_resource(TimeUpdateStrategy::ManualDuration(Duration::from_micros(
        16_667,
    )));
    app.init_resource::<SetClock>();
    let sets = [
        MarketplaceSystems::Receive,
        MarketplaceSystems::Sessions,
        MarketplaceSystems::Prompts,
        MarketplaceSystems::Deliver,
        MarketplaceSystems::Persist,
        MarketplaceSystems::Send,
    ];
    // The plugin's systems run from its first set to its last: the stall is that span of each
    // frame (the rest of a frame is Bevy's own schedules and whatever the OS does meanwhile).
    app.add_systems(
        PreUpdate,
        (|mut clock: ResMut<SetClock>| {
            clock.start = Some(Instant::now());
            clock.marks.clear();
        })
        .before(MarketplaceSystems::Receive),
    );
    for (i, set) in sets.into_iter().enumerate() {
        let mark = (move |mut clock: ResMut<SetClock>| {
            clock.marks.push((format!("{set:?}"), Instant::now()))
        })
        .after(set);
        match sets.get(i + 1) {
            Some(&next) => app.add_systems(PreUpdate, mark.before(next)),
            None => app.add_systems(PreUpdate, mark),
        };
    }
    app.update();
    let requests_before = app.world().resource::<Ledger>().worker_load().requests;
    let arrived = Instant::now();
    for u in 0..n {
        app.world_mut().spawn((Buyer::new(UserId(u)), Gold(0)));
    }
    let (mut frames, mut stalls) = (Vec::new(), Vec::new());
    // Stalls of frames in which the game thread kept its CPU.
    let mut kept_cpu = Vec::new();
    let mut all_active = None;
    let mut worst_breakdown = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let thread_before = ThreadClock::now();
        let started = Instant::now();
        app.update();
        frames.push(started.elapsed());
        let lost_cpu = ThreadClock::now().lost_cpu_since(&thread_before, started.elapsed());
        let clock = app.world().resource::<SetClock>();
        let (Some(start), Some((_, end))) = (clock.start, clock.marks.last()) else {
            fail("the plugin's systems did not run".into());
        };
        let stall = *end - start;
        if stalls.iter().all(|&s| s < stall) {
            // Where the longest stall so far went: time to each set's end from the previous one.
            let mut last = start;
            worst_breakdown = clock
                .marks
                .iter()
                .map(|(name, at)| {
                    let part = format!("{name} {:.2}", (*at - last).as_secs_f64() * 1e3);
                    last = *at;
                    part
                })
                .collect::<Vec<_>>()
                .join(", ");
        }
        stalls.push(stall);
        if !lost_cpu {
            kept_cpu.push(stall);
        }
        if all_active.is_none() && frames.len() % 16 == 0 {
            let world = app.world_mut();
            let active = world
                .query::<&PlayerSession>()
                .iter(world)
                .filter(|s| s.is_active())
                .count();
            if active == n as usize {
                all_active = Some(arrived.elapsed());
            }
        }
        let done = app
            .world()
            .resource::<bevy_marketplace::MarketplaceStats>()
            .granted as i64
            >= n
            && app.world().resource::<Ledger>().in_flight() == 0;
        if done {
            break;
        }
        if Instant::now() > deadline {
            fail("the burst did not finish".into());
        }
        if paced && let Some(rest) = Duration::from_micros(16_667).checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let seconds = arrived.elapsed().as_secs_f64();
    let requests = app.world().resource::<Ledger>().worker_load().requests - requests_before;
    let grants = granted.lock().unwrap();
    if grants.iter().collect::<HashSet<_>>().len() != n as usize || grants.len() != n as usize {
        fail(format!("{} grants for {n} receipts", grants.len()));
    }
    drop(app);
    if audit().count(ReceiptState::Pending) != 0 {
        fail("receipts left pending after the burst".into());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut worst: Vec<(usize, Duration)> = stalls.iter().copied().enumerate().collect();
    worst.sort_by_key(|(_, d)| std::cmp::Reverse(*d));
    eprintln!(
        "{} frames; longest plugin stalls (frame, ms): {:?}; longest whole frame {:.2} ms",
        frames.len(),
        worst
            .iter()
            .take(5)
            .map(|(i, d)| (*i, (ms(*d) * 10.0).round() / 10.0))
            .collect::<Vec<_>>(),
        ms(frames.iter().max().copied().unwrap_or_default()),
    );
    eprintln!("longest stall by set (ms): {worst_breakdown}");
    eprintln!(
        "{} of {} frames lost the CPU to another thread, process or virtual machine",
        frames.len() - kept_cpu.len(),
        frames.len()
    );
    stalls.sort();
    let p999 = stalls[(stalls.len() * 999 / 1000).min(stalls.len() - 1)];
    BurstRun {
        max_stall_ms: ms(stalls[stalls.len() - 1]),
        max_stall_kept_cpu_ms: ms(kept_cpu.iter().copied().max().unwrap_or_default()),
        p999_stall_ms: ms(p999),
        seconds,
        all_active_s: all_active.map_or(seconds, |d| d.as_secs_f64()),
        requests,
        receipts: n as usize,
    }
}

/// When the plugin's systems started this frame and when each of its sets ended.
#[derive(Resource, Default)]
struct SetClock {
    start: Option<Instant>,
    marks: Vec<(String, Instant)>,
}

fn catalog_scale(quick: bool) {
    let n = if quick { 20_000 } else { 100_000 };
    let mut text = String::from("(products: [\n");
    for i in 0..n {
        text.push_str(&format!(
            "  (id: {}, name: \"Product {i}\", description: \"A product for the benchmark.\", price: {}, icon: \"icons/p{i}.png\", category: \"Cat {}\"),\n",
            i + 1,
            1 + i % 1000,
            i % 20
        ));
    }
    text.push_str("])\n");
    let mut loads = Vec::new();
    let (mut catalog, mut index) = (None, None);
    for _ in 0..RUNS {
        // Free the previous run's catalog first: its drop is not part of a load.
        drop((catalog.take(), index.take()));
        let started = Instant::now();
        let parsed =
            Catalog::from_ron_str(&text, "bench.ron").unwrap_or_else(|e| fail(e.to_string()));
        let built = CatalogIndex::build(&parsed, None, std::time::SystemTime::now());
        loads.push(started.elapsed().as_secs_f64() * 1e3);
        (catalog, index) = (Some(parsed), Some(built));
    }
    let (catalog, index) = (catalog.unwrap(), index.unwrap());
    emit(&format!("catalog_load_ms_{n}"), median(loads), "ms", None);
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        MarketplacePlugin::default()
            .with_catalog(catalog)
            .with_ledger(LedgerBackend::in_memory()),
    ));
    let service = app.world().resource::<MarketplaceService>();
    let started = Instant::now();
    let mut pages = service.get_developer_products();
    let mut seen = 0usize;
    loop {
        seen += pages
            .current_page()
            .iter()
            .filter(|p| !p.name.is_empty())
            .count();
        if pages.is_finished() {
            break;
        }
        pages.advance_to_next_page().unwrap();
    }
    let paging = started.elapsed();
    if seen != n || index.len() != n {
        fail(format!("paged {seen} of {n} products"));
    }
    emit(
        &format!("catalog_page_all_ms_{n}"),
        paging.as_secs_f64() * 1e3,
        "ms",
        None,
    );
    let started = Instant::now();
    let mut found = 0;
    for i in 0..n as i64 {
        found += usize::from(service.get_product_info(ProductId(i + 1)).is_ok());
    }
    let lookup = started.elapsed().as_secs_f64() * 1e9 / n as f64;
    if found != n {
        fail("a product was not found".into());
    }
    emit("get_product_info_ns", lookup, "ns", None);
}

#[cfg(feature = "postgres")]
fn refund_elsewhere_postgres(quick: bool) {
    let Ok(url) = std::env::var("PG_URL") else {
        return;
    };
    let players = if quick { 100 } else { 1_000 };
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        * 10_000_000
        + 9_000_000;
    let admin = url.clone();
    let (median, longest) =
        refund_elsewhere(LedgerBackend::postgres(url), base..base + players, |id| {
            let mut store =
                bevy_marketplace::ledger::PostgresLedger::connect(admin.as_str()).unwrap();
            refund_by_admin(&mut store, id);
        });
    emit("refund_elsewhere_seen_ms_postgres", median, "ms", None);
    emit(
        "refund_elsewhere_seen_longest_ms_postgres",
        longest,
        "ms",
        None,
    );
}

#[cfg(feature = "postgres")]
fn postgres(quick: bool) {
    let Ok(url) = std::env::var("PG_URL") else {
        eprintln!("PG_URL not set: skipping the PostgreSQL figures");
        return;
    };
    let (players, rounds) = if quick { (500, 2) } else { (2000, 4) };
    // Servers run 1 ms frames (a 1,000 Hz loop) rather than spinning: four spinning game loops
    // would take the cores from the database. Users are fresh for each run, so the database
    // may hold earlier runs.
    let frame = Duration::from_millis(1);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        * 10_000_000;
    let one = pipeline(
        LedgerBackend::postgres(url.clone()),
        bevy_marketplace::ledger::DEFAULT_MAX_BATCH,
        base..base + players,
        rounds,
        frame,
    );
    emit("pg_receipts_per_s_1_server", one, "receipts/s", None);
    let started = Instant::now();
    let threads: Vec<_> = (0..4i64)
        .map(|s| {
            let url = url.clone();
            std::thread::spawn(move || {
                let base = base + (s + 1) * 1_000_000;
                pipeline(
                    LedgerBackend::postgres(url),
                    bevy_marketplace::ledger::DEFAULT_MAX_BATCH,
                    base..base + players,
                    rounds,
                    frame,
                );
            })
        })
        .collect();
    for t in threads {
        t.join()
            .unwrap_or_else(|_| fail("a server thread panicked".into()));
    }
    let total = 4.0 * (players as usize * rounds) as f64 / started.elapsed().as_secs_f64();
    emit("pg_receipts_per_s_4_servers", total, "receipts/s", None);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only NAME` runs one scenario (for profiling): catalog, idle, idle_ledger, burst,
    // burst_while_behind, refund_elsewhere, durable, live_ops, postgres.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let started = Instant::now();
    if run("catalog") {
        catalog_scale(quick);
    }
    if run("idle") {
        idle_frame_cost(quick);
    }
    if run("idle_ledger") {
        idle_ledger(quick);
    }
    if run("burst") {
        burst_stall(quick);
    }
    if run("burst_while_behind") {
        burst_while_behind(quick);
    }
    if run("refund_elsewhere") {
        refund_elsewhere_sqlite(quick);
        #[cfg(feature = "postgres")]
        refund_elsewhere_postgres(quick);
    }
    if run("durable") {
        durable_receipts(quick);
    }
    if run("live_ops") {
        let total = if quick { 200_000 } else { 1_000_000 };
        let (first, last, by_number, sales) = live_ops(total);
        emit("history_first_page_ms_10k_receipts", first, "ms", None);
        emit("history_last_page_ms_10k_receipts", last, "ms", None);
        emit(
            "history_last_page_by_number_ms_10k_receipts",
            by_number,
            "ms",
            None,
        );
        emit(
            if quick {
                "sales_report_ms_200k_receipts"
            } else {
                "sales_report_ms_1m_receipts"
            },
            sales,
            "ms",
            None,
        );
    }
    #[cfg(feature = "postgres")]
    if run("postgres") {
        postgres(quick);
    }
    eprintln!(
        "bench_pipeline finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The game thread's CPU time and context switches so far.
struct ThreadClock {
    cpu: Duration,
    involuntary: i64,
    voluntary: i64,
}

impl ThreadClock {
    #[cfg(target_os = "linux")]
    fn now() -> Self {
        // SAFETY: both calls only write the structs they are given.
        unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
            let mut cpu: libc::timespec = std::mem::zeroed();
            libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut cpu);
            Self {
                cpu: Duration::new(cpu.tv_sec as u64, cpu.tv_nsec as u32),
                involuntary: usage.ru_nivcsw,
                voluntary: usage.ru_nvcsw,
            }
        }
    }

    /// Elsewhere nothing is read, and every frame counts as having kept its CPU.
    #[cfg(not(target_os = "linux"))]
    fn now() -> Self {
        Self {
            cpu: Duration::ZERO,
            involuntary: 0,
            voluntary: 0,
        }
    }

    /// Whether something else ran on the thread's CPU during a frame of `wall` time that began at
    /// `before`: the OS preempted it (an involuntary switch), or, with no switch at all, the
    /// thread ran for 0.2 ms less than the frame lasted (the machine's virtual CPU was
    /// descheduled). A frame that waited on a lock (a voluntary switch) counts as kept: the
    /// wait is the plugin's.
    #[cfg(target_os = "linux")]
    fn lost_cpu_since(&self, before: &Self, wall: Duration) -> bool {
        let ran = self.cpu.saturating_sub(before.cpu);
        self.involuntary != before.involuntary
            || (self.voluntary == before.voluntary
                && wall.saturating_sub(ran) > Duration::from_micros(200))
    }

    #[cfg(not(target_os = "linux"))]
    fn lost_cpu_since(&self, _before: &Self, _wall: Duration) -> bool {
        false
    }
}
