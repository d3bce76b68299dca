//! Live operations: purchase history and sales data through `MarketplaceService` (on the
//! in-memory store, SQLite and PostgreSQL), and the `marketplace` admin tool on a ledger a game
//! is using.

mod common;
#[path = "common/stores.rs"]
mod stores;

use std::path::Path;
use std::process::Command;

use bevy::prelude::*;
use bevy_marketplace::ledger::{
    HISTORY_PAGE_SIZE, HistoryFilter, LedgerBackend, SALES_CSV_HEADER, SalesBucket, SalesQuery,
    SqliteLedger, sales_csv,
};
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    MarketplaceAppExt, MarketplaceError, MarketplaceService, PremiumBalance, ReceiptState, UserId,
};
use bevy_marketplace::{PurchaseHistoryReady, SalesReportReady};
use common::*;
use stores::TestStore;
#[cfg(feature = "postgres")]
use stores::pg;

fn service(game: &mut GameServer) -> Mut<'_, MarketplaceService> {
    game.app.world_mut().resource_mut::<MarketplaceService>()
}

/// Runs frames until a message `M` is written; returns it (messages live two frames).
fn answer<M: Message + Clone>(game: &mut GameServer) -> M {
    let mut found = None;
    game.app.update_until("the ledger's answer", |w| {
        found = w.resource_mut::<Messages<M>>().drain().next();
        found.is_some()
    });
    found.unwrap()
}

fn history(
    game: &mut GameServer,
    user: i64,
    filter: HistoryFilter,
    page: u32,
) -> PurchaseHistoryReady {
    service(game).request_purchase_history(UserId(user), filter, page);
    answer(game)
}

/// A game on `store` where user 7 bought GOLD_100 55 times and FULL_HEAL 5 times, then a debug
/// grant (a test purchase) of GOLD_100.
fn shopped(store: &TestStore) -> (GameServer, Entity) {
    let mut game = store.game("a", |p| bevy_marketplace::MarketplacePlugin {
        allow_debug_grants: true,
        ..p
    });
    service(&mut game).grant_premium_currency(UserId(7), 100_000, "gift card");
    game.app.settle();
    let p = game.join(7);
    for _ in 0..55 {
        game.buy(p, GOLD_100);
    }
    for _ in 0..5 {
        game.buy(p, FULL_HEAL);
    }
    service(&mut game)
        .simulate_purchase(UserId(7), GOLD_100)
        .unwrap();
    game.app.settle();
    (game, p)
}

fn purchase_history_pages_newest_first_with_filters(store: &TestStore) {
    let (mut game, _) = shopped(store);

    let first = history(&mut game, 7, HistoryFilter::default(), 0);
    let page = first.result.clone().unwrap();
    assert_eq!(page.entries.len(), HISTORY_PAGE_SIZE);
    assert!(!page.is_finished);
    assert!(
        page.entries
            .windows(2)
            .all(|w| w[0].purchased_at_ms >= w[1].purchased_at_ms),
        "newest first"
    );
    assert!(
        page.entries[0].receipt.is_test_purchase,
        "the debug grant was the last"
    );
    service(&mut game)
        .request_next_history_page(&first)
        .unwrap();
    let second: PurchaseHistoryReady = answer(&mut game);
    let last = second.result.clone().unwrap();
    assert_eq!(
        (second.page, last.entries.len()),
        (1, 61 - HISTORY_PAGE_SIZE)
    );
    assert!(last.is_finished);
    assert!(second.after.is_some(), "the next page starts from a cursor");
    let by_number = history(&mut game, 7, HistoryFilter::default(), 1);
    assert_eq!(
        by_number.result.unwrap(),
        last,
        "a page asked by number is the page the cursor reaches"
    );
    assert_eq!(
        service(&mut game).request_next_history_page(&second),
        Err(MarketplaceError::PagesFinished),
        "advancing past the end is an error"
    );

    let heals = history(
        &mut game,
        7,
        HistoryFilter {
            product: Some(FULL_HEAL),
            ..HistoryFilter::default()
        },
        0,
    )
    .result
    .unwrap();
    assert_eq!(heals.entries.len(), 5);
    let name = game
        .app
        .world()
        .resource::<MarketplaceService>()
        .get_product_info(FULL_HEAL)
        .unwrap()
        .name;
    assert!(heals.entries.iter().all(|e| e.product_name == name
        && e.state == ReceiptState::Granted
        && e.granted_at_ms.is_some()));
    let pending = history(
        &mut game,
        7,
        HistoryFilter {
            state: Some(ReceiptState::Pending),
            ..HistoryFilter::default()
        },
        0,
    );
    assert!(pending.result.unwrap().entries.is_empty());
    let nobody = history(&mut game, 8, HistoryFilter::default(), 0)
        .result
        .unwrap();
    assert!(nobody.entries.is_empty() && nobody.is_finished);
    // The ledger agrees with itself: what history lists is what it holds.
    assert_eq!(store.audit().receipts.len(), 61);
}

fn sales_totals_equal_the_receipts_and_test_purchases_count_apart(store: &TestStore) {
    let (mut game, _) = shopped(store);
    let query = SalesQuery {
        from_ms: 0,
        to_ms: i64::MAX,
        bucket: SalesBucket::Hour,
    };
    service(&mut game).request_sales_report(query);
    let report: SalesReportReady = answer(&mut game);
    let rows = report.result.unwrap();
    let audit = store.audit();
    let sold = audit.receipts.iter().filter(|r| !r.info.is_test_purchase);
    assert_eq!(
        rows.iter().map(|r| r.units).sum::<u64>(),
        sold.clone().count() as u64
    );
    assert_eq!(
        rows.iter().map(|r| r.currency).sum::<u64>(),
        audit.purchase_debits
    );
    assert_eq!(rows.iter().map(|r| r.test_units).sum::<u64>(), 1);
    let gold = rows.iter().find(|r| r.product_id == GOLD_100).unwrap();
    assert_eq!(gold.units, 55);
    let csv = sales_csv(&rows);
    assert!(csv.starts_with(SALES_CSV_HEADER));
    assert_eq!(csv.lines().count(), rows.len() + 1);
    assert!(audit.check().is_sound(), "{:?}", audit.check().problems);
}

on_every_store!(
    purchase_history_pages_newest_first_with_filters,
    sales_totals_equal_the_receipts_and_test_purchases_count_apart,
);

/// The hour the filler receipts of the large-report tests were made in (an hour's start).
const FILLER_HOUR_MS: i64 = 494_444 * 3_600_000;

/// A sales report reads the ledger beside the game's writes: a purchase made while a report over
/// 400,000 receipts runs is charged and granted before the report is done. (With one connection
/// the purchase would wait for the report.) The receipts are all in one hour and the report
/// starts and ends inside it, so it reads receipts, not the hourly totals. Default settings, the
/// game's own backend.
fn a_large_report_does_not_hold_a_purchase_up(backend: LedgerBackend) {
    let everything = SalesQuery {
        from_ms: FILLER_HOUR_MS + 1,
        to_ms: FILLER_HOUR_MS + 3_599_999,
        bucket: SalesBucket::Hour,
    };
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(backend)))
        .init_resource::<HandlerMode>()
        .persist_component::<Gold>();
    add_sample_handlers(&mut app, HandlerLog::default());
    let p = spawn_buyer(&mut app, 7, 30);
    app.update_until("the buyer's session to load", |w| {
        w.get::<bevy_marketplace::PlayerSession>(p)
            .is_some_and(|s| s.is_active())
    });

    let started = std::time::Instant::now();
    app.world_mut()
        .resource_mut::<MarketplaceService>()
        .request_sales_report(everything);
    app.update();
    app.world_mut()
        .write_message(bevy_marketplace::PromptProductPurchase {
            player: p,
            product_id: GOLD_100,
        });
    let (mut granted_at, mut report_at) = (None, None);
    let mut rows = Vec::new();
    app.update_until("the grant and the report", |w| {
        if granted_at.is_none()
            && w.resource_mut::<Messages<bevy_marketplace::ReceiptResolved>>()
                .drain()
                .next()
                .is_some()
        {
            granted_at = Some(started.elapsed());
        }
        if let Some(report) = w
            .resource_mut::<Messages<SalesReportReady>>()
            .drain()
            .next()
        {
            report_at = Some(started.elapsed());
            rows = report.result.unwrap();
        }
        granted_at.is_some() && report_at.is_some()
    });
    let (granted_at, report_at) = (granted_at.unwrap(), report_at.unwrap());
    println!(
        "report over 400,000 receipts answered after {report_at:?}; the purchase made after it \
         was granted after {granted_at:?}"
    );
    assert!(
        granted_at < report_at,
        "the purchase ({granted_at:?}) waited for the report ({report_at:?})"
    );
    assert_eq!(app.world().get::<Gold>(p).unwrap().0, 100);
    let units: u64 = rows.iter().map(|r| r.units + r.test_units).sum();
    assert_eq!(units, 400_000, "the report counted {units}");
}

#[test]
fn a_large_report_on_sqlite_does_not_hold_a_purchase_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    drop(SqliteLedger::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400000)
         INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id,
                               currency_spent, currency_type, channel, is_test, state,
                               created_ms, resolved_ms, product_name)
         SELECT printf('%032x', i), 'filler-' || i, 1000 + i % 5000, 456456, 0, 80, 1, 1,
                i % 50 = 0, 'granted', ?1 + i * 8, ?1 + i * 8, 'Pouch of Gold'
         FROM n",
        [FILLER_HOUR_MS],
    )
    .unwrap();
    drop(conn);
    a_large_report_does_not_hold_a_purchase_up(LedgerBackend::sqlite(&path));
}

#[cfg(feature = "postgres")]
#[test]
fn a_large_report_on_postgres_does_not_hold_a_purchase_up() {
    let url = pg::PgCluster::shared().create_database("large_report");
    drop(bevy_marketplace::ledger::PostgresLedger::connect(url.as_str()).unwrap());
    let mut sql = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    sql.execute(
        "INSERT INTO receipts (purchase_id, request_id, user_id, product_id, place_id,
                               currency_spent, currency_type, channel, is_test, state,
                               created_ms, resolved_ms, product_name)
         SELECT lpad(to_hex(i), 32, '0'), 'filler-' || i, 1000 + i % 5000, 456456, 0, 80, 1, 1,
                i % 50 = 0, 'granted', $1 + i * 8::bigint, $1 + i * 8::bigint, 'Pouch of Gold'
         FROM generate_series(1, 400000) AS i",
        &[&FILLER_HOUR_MS],
    )
    .unwrap();
    sql.batch_execute("ANALYZE receipts").unwrap();
    a_large_report_does_not_hold_a_purchase_up(LedgerBackend::postgres(url));
}

// ------------------------------------------------------------------ the admin tool

fn marketplace(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_marketplace"))
        .args(args)
        .output()
        .expect("run marketplace");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn on(path: &Path, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--ledger", path.to_str().unwrap()];
    all.extend_from_slice(args);
    marketplace(&all)
}

#[test]
fn the_admin_tool_reads_a_ledger_a_game_is_using_and_finds_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let file = path.clone();
    let mut game = GameServer::new(move || SqliteLedger::open(&file), "a", |p| p);
    game.app
        .add_refund_handler(GOLD_100, |_receipt, mut player| {
            player
                .get_mut::<Gold>()
                .map(|mut gold| gold.0 -= 100)
                .is_some()
        });
    let a = game.join(1);
    let b = game.join(2);
    for _ in 0..3 {
        game.buy(a, GOLD_100);
    }
    game.buy(b, FULL_HEAL);
    let audit = SqliteLedger::open(&path).unwrap().audit().unwrap();

    // Sales while the game runs: the CSV's totals are the receipts'.
    let (code, csv, err) = on(&path, &["sales", "--csv"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(SALES_CSV_HEADER));
    let (mut units, mut currency) = (0u64, 0u64);
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        units += fields[2].parse::<u64>().unwrap();
        currency += fields[3].parse::<u64>().unwrap();
    }
    assert_eq!(units, audit.receipts.len() as u64);
    assert_eq!(currency, audit.purchase_debits);

    let (code, json, err) = on(&path, &["history", "1", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json.lines().count(), 3);
    assert!(
        json.lines().all(|l| l.contains("\"state\":\"Granted\"")),
        "{json}"
    );

    let (code, out, err) = on(&path, &["pending"]);
    assert_eq!(
        (code, out.trim_end().lines().last()),
        (0, Some("0 pending receipt(s)")),
        "{err}"
    );

    let (code, out, err) = on(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("the ledger adds up"), "{out}");

    // The tool took no lease: the game still saves its players.
    game.buy(a, GOLD_100);
    assert_eq!(game.gold(a), 400);

    // A refund by the tool reaches the running game within seconds (the default refresh
    // interval): the Gems come back, the Gold goes.
    let balance = |game: &GameServer| game.app.world().get::<PremiumBalance>(a).unwrap().0;
    let before = balance(&game);
    let newest = SqliteLedger::open(&path)
        .unwrap()
        .audit()
        .unwrap()
        .receipts
        .into_iter()
        .filter(|r| r.info.player_id == UserId(1))
        .max_by_key(|r| r.purchased_at_ms)
        .unwrap();
    let id = newest.info.purchase_id.to_string();
    let (code, out, err) = on(&path, &["refund", &id, "--reason", "support ticket 17"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("refunded 80 to user 1"), "{out}");
    game.app.update_until("the refund to reach the game", |w| {
        w.get::<Gold>(a).unwrap().0 == 300
    });
    assert_eq!(balance(&game), before + 80);
    let (code, _, err) = on(&path, &["refund", &id, "--reason", "twice"]);
    assert_eq!(code, 2);
    assert!(err.contains("already refunded"), "{err}");

    // A store top-up by the tool credits once per order, and reaches the game too.
    for expected in ["credited;", "already credited before"] {
        let (code, out, err) = on(
            &path,
            &["credit", "1", "250", "--source", "web", "--order-id", "w-1"],
        );
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(expected), "{out}");
    }
    game.app.update_until("the top-up to reach the game", |w| {
        w.get::<PremiumBalance>(a).unwrap().0 == before + 80 + 250
    });
    game.app.settle();
    let (code, out, err) = on(&path, &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    drop(game);

    // A balance changed behind the ledger's back is found, by account.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE accounts SET balance = balance + 5 WHERE user_id = 2",
            [],
        )
        .unwrap();
    let (code, out, _) = on(&path, &["check"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("account 2: balance"), "{out}");
}

#[test]
fn the_admin_tool_checks_catalogs_and_says_what_is_wrong() {
    let (code, out, err) = marketplace(&["catalog-check", "assets/products.ron"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.ron");
    std::fs::write(
        &broken,
        "(products: [\n  (id: 1, name: \"x\" price: 5),\n])\n",
    )
    .unwrap();
    let (code, _, err) = marketplace(&["catalog-check", broken.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("broken.ron") && err.contains('2'),
        "names the file and line: {err}"
    );

    let (code, _, err) = marketplace(&["--ledger", "/no/such/file.sqlite3", "check"]);
    assert_eq!(code, 2);
    assert!(err.contains("no such ledger file"), "{err}");
}

/// The same on PostgreSQL, with two game servers: a refund and a top-up made by the tool reach
/// the player on server A, and server B refunds a purchase of a player it does not host.
#[cfg(feature = "postgres")]
#[test]
fn the_admin_tool_and_another_server_refund_and_credit_on_postgres() {
    use bevy_marketplace::RefundFinished;
    use bevy_marketplace::ledger::PostgresLedger;

    let url = pg::PgCluster::shared().create_database("live_ops");
    let server = |id: &str| {
        let url = url.clone();
        let mut game = GameServer::new(move || PostgresLedger::connect(url.as_str()), id, |p| p);
        game.app
            .add_refund_handler(GOLD_100, |_receipt, mut player| {
                player
                    .get_mut::<Gold>()
                    .map(|mut gold| gold.0 -= 100)
                    .is_some()
            });
        game
    };
    let mut a = server("a");
    let mut b = server("b");
    let p = a.join(1);
    for _ in 0..3 {
        a.buy(p, GOLD_100);
    }
    assert_eq!(a.gold(p), 300);
    let balance = |game: &GameServer| game.app.world().get::<PremiumBalance>(p).unwrap().0;
    assert_eq!(balance(&a), 1000 - 240);
    let receipts = PostgresLedger::connect(url.as_str())
        .unwrap()
        .audit()
        .unwrap()
        .receipts;
    let ids: Vec<String> = receipts
        .iter()
        .map(|r| r.info.purchase_id.to_string())
        .collect();

    // The tool refunds one: server A takes the Gold back within its refresh interval.
    let pg = |args: &[&str]| {
        let mut all = vec!["--postgres", url.as_str()];
        all.extend_from_slice(args);
        marketplace(&all)
    };
    let (code, out, err) = pg(&["refund", &ids[0], "--reason", "ticket 9"]);
    assert_eq!(code, 0, "{out}{err}");
    a.app
        .update_until("the tool's refund to reach server A", |w| {
            w.get::<Gold>(p).unwrap().0 == 200
        });

    // Server B refunds another (its player is on A): A takes that Gold back too.
    service(&mut b).refund(
        bevy_marketplace::PurchaseId(ids[1].clone()),
        "from server b",
    );
    let finished: RefundFinished = answer(&mut b);
    assert!(finished.result.is_ok(), "{:?}", finished.result);
    a.app
        .update_until("server B's refund to reach server A", |w| {
            w.get::<Gold>(p).unwrap().0 == 100
        });

    // A store top-up by the tool, twice: credited once, seen on A.
    for _ in 0..2 {
        let (code, _, err) = pg(&[
            "credit",
            "1",
            "500",
            "--source",
            "steam",
            "--order-id",
            "s-1",
        ]);
        assert_eq!(code, 0, "{err}");
    }
    a.app.update_until("the top-up to reach server A", |w| {
        w.get::<PremiumBalance>(p).unwrap().0 == 1000 - 240 + 160 + 500
    });
    a.app.settle();
    let (code, out, err) = pg(&["check"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = pg(&["history", "1", "--state", "refunded", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 2, "{out}");
}
