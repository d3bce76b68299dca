//! The PostgreSQL ledger when the database misbehaves, with the default timeouts: a database that
//! stops answering, a peer frozen while holding a row lock, servers whose clocks disagree, a row
//! the ledger cannot read. Every wait is bounded and said; nothing is skipped or guessed.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/proxy.rs"]
mod proxy;

use bevy_marketplace::ledger::{ChargeReply, OpenSession, OpenSessionReply, OpenedSession};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_marketplace::Ledger;
use bevy_marketplace::ledger::{
    ChargeRequest, LeaseClock, LeaseFence, LedgerBackend, LedgerError, LedgerReply, LedgerRequest,
    LedgerStatus, LedgerStore, PostgresLedger, PostgresOptions, ServerId,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    PlaceId, ProductPurchaseChannel, PurchaseError, PurchaseFailed, ReceiptState, RequestId,
};
use common::*;
use pg::PgCluster;
use proxy::Proxy;

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn open(user: i64, server: &str, lease_ms: i64) -> LedgerRequest {
    LedgerRequest::OpenSession(OpenSession {
        user: UserId(user),
        server: ServerId::new(server).unwrap(),
        lease_ms,
        starting_balance: 1000,
    })
}

fn charge(user: i64, fence: Option<LeaseFence>) -> LedgerRequest {
    LedgerRequest::Charge(ChargeRequest {
        request_id: RequestId::new(),
        user: UserId(user),
        product_id: GOLD_100,
        product_name: "test product".into(),
        price: 80,
        test_purchase: false,
        place_id: PlaceId(0),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 1000,
        fence,
    })
}

fn apply_at(store: &mut PostgresLedger, now_ms: i64, request: LedgerRequest) -> LedgerReply {
    store.begin().unwrap();
    let reply = store.apply(&request, now_ms).unwrap();
    store.commit().unwrap();
    reply
}

/// A game on the database behind `proxy`, with the plugin's and the ledger's default settings.
fn game_behind(proxy: &Proxy, url: &str) -> GameServer {
    let dbname = url.rsplit("dbname=").next().unwrap();
    let via = proxy.url(&format!("user=postgres dbname={dbname}"));
    GameServer::new(move || PostgresLedger::connect(via.as_str()), "a", |p| p)
}

fn status(game: &GameServer) -> LedgerStatus {
    game.app.world().resource::<Ledger>().status().clone()
}

/// Runs frames in real time until `done`, at most `limit`; returns the longest frame.
fn frames_until(
    game: &mut GameServer,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&GameServer) -> bool,
) -> Duration {
    let started = Instant::now();
    let mut longest = Duration::ZERO;
    while !done(game) {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        let frame = Instant::now();
        game.app.update();
        longest = longest.max(frame.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    longest
}

#[test]
fn a_stalled_database_is_reported_unavailable_and_the_game_runs_on_and_recovers() {
    let cluster = PgCluster::shared();
    let url = cluster.create_database("stall");
    let proxy = Proxy::start(cluster.addr());
    let mut game = game_behind(&proxy, &url);
    let p = game.join(1);
    game.buy(p, GOLD_100);
    assert_eq!(game.gold(p), 100);

    // The database stops answering; the connection stays open.
    proxy.stall();
    let stalled = Instant::now();
    game.app.world_mut().write_message(PromptProductPurchase {
        player: p,
        product_id: GOLD_100,
    });
    let longest = frames_until(&mut game, Duration::from_secs(30), "unavailable", |g| {
        matches!(status(g), LedgerStatus::Unavailable(_))
    });
    let reported = stalled.elapsed();
    eprintln!(
        "stalled database reported unavailable after {reported:?}; longest frame meanwhile {longest:?}"
    );
    assert!(
        longest < Duration::from_millis(500),
        "a frame waited on the database: {longest:?}"
    );
    // A prompt opened now fails at once, saying why.
    let q = game.spawn(2);
    game.app.update();
    game.app.world_mut().write_message(PromptProductPurchase {
        player: q,
        product_id: GOLD_100,
    });
    // It opens failed, and the auto-confirm policy closes it the frame after.
    game.app.update();
    game.app.update();
    let failures: Vec<PurchaseError> = game
        .app
        .world_mut()
        .resource_mut::<Messages<PurchaseFailed>>()
        .drain()
        .filter(|f| f.user_id == UserId(2))
        .map(|f| f.error)
        .collect();
    assert!(
        matches!(&failures[..], [PurchaseError::Unavailable(why)] if why.contains("no answer")),
        "{failures:?}"
    );

    // It answers again: the ledger is ready, and the purchase made meanwhile counts once.
    proxy.pass();
    frames_until(&mut game, Duration::from_secs(60), "ready again", |g| {
        matches!(status(g), LedgerStatus::Ready(_))
    });
    game.app.settle();
    game.buy(p, GOLD_100);
    let audit = PostgresLedger::connect(url.as_str())
        .unwrap()
        .audit()
        .unwrap();
    let granted = audit.count(ReceiptState::Granted) as u64;
    assert_eq!(audit.count(ReceiptState::Pending), 0);
    assert!(granted >= 2, "the purchases after the stall went through");
    assert_eq!(game.gold(p), 100 * granted, "each granted once");
    assert_eq!(audit.purchase_debits, audit.receipt_total());
}

#[test]
fn the_game_exits_while_the_database_is_stalled() {
    let cluster = PgCluster::shared();
    let url = cluster.create_database("stall_exit");
    let proxy = Proxy::start(cluster.addr());
    let mut game = game_behind(&proxy, &url);
    let p = game.join(1);
    game.buy(p, GOLD_100);
    proxy.stall();
    game.app.world_mut().write_message(PromptProductPurchase {
        player: p,
        product_id: GOLD_100,
    });
    for _ in 0..5 {
        game.app.update();
    }
    // A watchdog ends the test process if the exit hangs (the app cannot leave this thread).
    let (done, exited) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if exited.recv_timeout(Duration::from_secs(90)).is_err() {
            eprintln!("the game did not exit within 90 s of AppExit with a stalled database");
            std::process::exit(101);
        }
    });
    let stopping = Instant::now();
    game.app.world_mut().write_message(AppExit::Success);
    game.app.update();
    drop(game);
    let _ = done.send(());
    eprintln!("exit with a stalled database took {:?}", stopping.elapsed());
    proxy.pass();
}

#[test]
fn a_batch_behind_a_frozen_servers_row_lock_fails_after_the_lock_timeout() {
    let url = PgCluster::shared().create_database("lock_wait");
    let mut a = PostgresLedger::connect(url.as_str()).unwrap();
    let mut b = PostgresLedger::connect(url.as_str()).unwrap();
    let LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { lease_token, .. })) =
        apply_at(&mut a, 0, open(1, "a", 60_000))
    else {
        panic!("opened");
    };
    let fence = LeaseFence {
        server: ServerId::new("a").unwrap(),
        token: lease_token,
    };
    // Server A freezes in the middle of a transaction that holds player 1's row.
    a.begin().unwrap();
    a.apply(&charge(1, Some(fence)), 0).unwrap();
    // Server B's batch needs that row too (a store-page purchase for player 1).
    b.begin().unwrap();
    let waiting = Instant::now();
    let result = b
        .apply_batch(&[open(2, "b", 60_000), charge(1, None)], 0)
        .unwrap();
    let waited = waiting.elapsed();
    b.rollback();
    eprintln!("a batch behind a frozen server's lock failed after {waited:?}");
    match result {
        Err(LedgerError::Storage(why)) => assert!(why.contains("55P03"), "{why}"),
        other => panic!("the batch should fail with a lock timeout: {other:?}"),
    }
    assert!(
        waited < Duration::from_secs(10),
        "the default lock timeout is 2 s, not PostgreSQL's forever: {waited:?}"
    );
    // Once A finishes, B's retry goes through.
    a.commit().unwrap();
    b.begin().unwrap();
    let replies = b
        .apply_batch(&[open(2, "b", 60_000), charge(1, None)], 0)
        .unwrap()
        .unwrap();
    b.commit().unwrap();
    assert!(matches!(
        replies[1],
        LedgerReply::Charge(ChargeReply::Charged { .. })
    ));
}

#[test]
fn lease_expiry_follows_the_database_clock_not_a_skewed_server_clock() {
    let url = PgCluster::shared().create_database("clock");
    let mut a = PostgresLedger::connect(url.as_str()).unwrap();
    let mut ahead = PostgresLedger::connect(url.as_str()).unwrap();
    let now = wall_ms();
    assert!(matches!(
        apply_at(&mut a, now, open(1, "a", 60_000)),
        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { .. }))
    ));
    // A server whose clock runs ten minutes ahead does not steal the live lease.
    assert!(
        matches!(
            apply_at(&mut ahead, now + 600_000, open(1, "ahead", 60_000)),
            LedgerReply::OpenSession(OpenSessionReply::Busy { .. })
        ),
        "the database's clock says A's lease is live"
    );
    // Judged by the skewed clock it would have (the old behaviour, kept for tests).
    let mut skewed = PostgresLedger::connect(
        PostgresOptions::new(url.clone()).with_clock(LeaseClock::GameServer),
    )
    .unwrap();
    assert!(matches!(
        apply_at(&mut skewed, now + 600_000, open(1, "ahead", 60_000)),
        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { .. }))
    ));

    // A server whose clock runs ten minutes behind takes an expired lease when it is expired.
    apply_at(&mut a, now, open(2, "a", 300));
    std::thread::sleep(Duration::from_millis(600));
    let mut behind = PostgresLedger::connect(url.as_str()).unwrap();
    assert!(
        matches!(
            apply_at(&mut behind, now - 600_000, open(2, "behind", 60_000)),
            LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { .. }))
        ),
        "the database's clock says the lease expired"
    );
}

#[test]
fn an_unreadable_row_is_reported_by_name_not_skipped() {
    let url = PgCluster::shared().create_database("unreadable");
    let mut store = PostgresLedger::connect(url.as_str()).unwrap();
    let LedgerReply::Charge(ChargeReply::Charged { receipt, .. }) =
        apply_at(&mut store, 0, charge(1, None))
    else {
        panic!("charged");
    };
    postgres::Client::connect(&url, postgres::NoTls)
        .unwrap()
        .execute("UPDATE receipts SET request_id = 'not a uuid'", &[])
        .unwrap();
    let error = store.audit().unwrap_err().to_string();
    assert!(
        error.contains(receipt.purchase_id.as_str()) && error.contains("request id"),
        "{error}"
    );
    store.begin().unwrap();
    let error = store.apply(&open(1, "a", 60_000), 0).unwrap_err();
    store.rollback();
    assert!(
        error.to_string().contains(receipt.purchase_id.as_str()),
        "loading the player names the row: {error}"
    );
}

#[test]
fn passwords_are_hidden_in_every_form_of_connection_string() {
    for url in [
        "host=h user=u password=hunter2 dbname=d",
        "postgres://u:hunter2@h/d",
        "postgres://h/d?user=u&password=hunter2",
        "postgresql://u@h:5432/d?sslmode=disable&password=hunter2&application_name=x",
    ] {
        let shown = format!("{:?}", LedgerBackend::postgres(url));
        assert!(!shown.contains("hunter2"), "{shown}");
        let shown = format!("{:?}", PostgresOptions::new(url));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
