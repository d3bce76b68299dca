//! Staying current costs what changed, not who is online: a game follows the ledger's change
//! feed with one read per refresh interval, however many players it has, and reads again only
//! the players the feed names. On PostgreSQL a change made elsewhere is notified, and reaches the
//! player at once.

mod common;
#[path = "common/stores.rs"]
mod stores;

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::time::TimeUpdateStrategy;
use bevy_marketplace::ledger::{LedgerBackend, RefundRequest};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{Ledger, MarketplaceStats, PlayerSession, SessionPhase};
use common::*;
use stores::TestStore;

/// 1,000 players online and nothing happening: the ledger is asked once per interval (not once
/// per player). A refund made by the admin tool then reaches its buyer with one more read.
fn a_thousand_players_cost_one_read_per_interval(store: &TestStore) {
    let mut game = store.game("a", |p| p);
    let players: Vec<Entity> = (1..=1000).map(|user| game.spawn(user)).collect();
    game.app.update_until("everyone to load", |w| {
        players.iter().all(|&p| {
            w.get::<PlayerSession>(p)
                .is_some_and(PlayerSession::is_active)
        })
    });
    game.buy(players[0], GOLD_100);
    game.app.settle();
    let requests = |game: &GameServer| game.app.world().resource::<Ledger>().worker_load().requests;
    let before = requests(&game);
    let intervals = 10;
    for _ in 0..intervals {
        game.advance(Duration::from_secs(2));
    }
    let idle = requests(&game) - before;
    eprintln!(
        "1,000 players, {intervals} refresh intervals, nothing changed: {idle} ledger requests"
    );
    assert!(
        idle <= intervals + 2,
        "{idle} requests for {intervals} intervals with nothing changing"
    );

    let receipt = store.audit().receipts[0].info.purchase_id.clone();
    store
        .call_outside(RefundRequest {
            purchase_id: receipt,
            reason: "admin".into(),
            place: None,
        })
        .unwrap();
    let before = requests(&game);
    game.advance(Duration::from_secs(2));
    game.advance(Duration::from_secs(2));
    let after = requests(&game) - before;
    assert_eq!(
        game.app
            .world()
            .get::<PremiumBalance>(players[0])
            .unwrap()
            .0,
        1000,
        "the refund reached the buyer"
    );
    assert!(after <= 6, "{after} requests to learn of one refund");
}

/// Moves the game's clock by exactly `by` in one frame, then lets the ledger answer what that
/// frame asked without moving the clock again.
fn advance_exactly(game: &mut GameServer, by: Duration) {
    game.app
        .insert_resource(TimeUpdateStrategy::ManualDuration(by));
    game.app.update();
    game.app
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::ZERO));
    game.app.settle();
}

/// Autosaves on the default settings (every 30 s, a 5 min lease): a player whose persisted
/// components did not change is not saved again until their next autosave would come after half
/// their lease, and that save keeps the lease.
fn an_idle_player_is_saved_once_per_half_lease(store: &TestStore) {
    let defaults = MarketplacePlugin::default();
    let mut game = store.game("a", |p| MarketplacePlugin {
        autosave_interval: defaults.autosave_interval,
        lease_duration: defaults.lease_duration,
        ..p
    });
    // The clock stands still but when the test moves it, however many frames the ledger's
    // answers take on a slow machine.
    game.app
        .insert_resource(TimeUpdateStrategy::ManualDuration(Duration::ZERO));
    let players: Vec<Entity> = (1..=100).map(|user| game.spawn(user)).collect();
    game.app.update_until("everyone to load", |w| {
        players.iter().all(|&p| {
            w.get::<PlayerSession>(p)
                .is_some_and(PlayerSession::is_active)
        })
    });
    let saves = |game: &GameServer| game.app.world().resource::<MarketplaceStats>().saves;
    let before = saves(&game);
    // New players: nothing of theirs is stored yet, so the first autosave saves each once. The
    // first autosaves are spread over the second half of the interval, so that players who
    // joined together are not all saved in one frame.
    advance_exactly(&mut game, defaults.autosave_interval * 3 / 4);
    let early = saves(&game) - before;
    assert!(
        (20..=80).contains(&early),
        "{early} of 100 players who joined together were autosaved in the first three quarters of the interval"
    );
    advance_exactly(&mut game, defaults.autosave_interval / 4);
    assert_eq!(
        saves(&game) - before,
        100,
        "the first autosave saves new players"
    );
    for _ in 0..2 {
        advance_exactly(&mut game, defaults.autosave_interval);
    }
    assert_eq!(
        saves(&game) - before,
        100,
        "two autosave intervals with nothing changed save nothing"
    );
    game.app.world_mut().get_mut::<Gold>(players[0]).unwrap().0 = 7;
    advance_exactly(&mut game, defaults.autosave_interval);
    assert_eq!(saves(&game) - before, 101, "the changed player is saved");
    // The others' next autosave would come after half the lease since their first save
    // (15-30 s in, spread by user id): they are saved now, to renew it.
    advance_exactly(&mut game, defaults.autosave_interval);
    assert_eq!(
        saves(&game) - before,
        200,
        "the other 99 renew their leases"
    );
    advance_exactly(&mut game, defaults.autosave_interval);
    assert_eq!(saves(&game) - before, 200, "and then wait again");
    assert_eq!(game.gold(players[0]), 7);
}

/// The same with a lease of 1 s and autosaves every 100 ms, in real time: an idle player's
/// lease is renewed by those saves, so after three lease lengths another server's join still
/// waits for it.
fn an_idle_players_lease_is_kept_by_its_saves(store: &TestStore) {
    let mut game = store.game("a", |p| MarketplacePlugin {
        autosave_interval: Duration::from_millis(100),
        lease_duration: Duration::from_secs(1),
        ..p
    });
    let player = game.join(1);
    assert!(
        game.app
            .world()
            .get::<PlayerSession>(player)
            .unwrap()
            .is_active()
    );
    let mut other = store.game("b", |p| p);
    // The game's clock is the real one, as the ledger's is.
    game.app.insert_resource(TimeUpdateStrategy::Automatic);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        game.app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    let taken = other.spawn(1);
    for _ in 0..30 {
        other.app.update();
        game.app.update();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        other.phase(taken),
        SessionPhase::Loading,
        "the lease of an idle player online on server a is still held"
    );
}

on_every_store!(
    a_thousand_players_cost_one_read_per_interval,
    an_idle_player_is_saved_once_per_half_lease,
    an_idle_players_lease_is_kept_by_its_saves
);

/// On PostgreSQL, a refund made by the admin tool reaches the online buyer well within the
/// refresh interval: the ledger notifies the game. (Real time, default settings.)
#[cfg(feature = "postgres")]
#[test]
fn a_refund_made_elsewhere_is_notified_at_once_on_postgres() {
    let url = stores::pg::PgCluster::shared().create_database("notified");
    let store = TestStore::Postgres { url: url.clone() };
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(LedgerBackend::postgres(url))))
        .init_resource::<HandlerMode>()
        .persist_component::<Gold>();
    add_sample_handlers(&mut app, HandlerLog::default());
    let p = spawn_buyer(&mut app, 1, 5);
    app.update_until("the session", |w| {
        w.get::<PlayerSession>(p)
            .is_some_and(PlayerSession::is_active)
    });
    app.world_mut().write_message(PromptProductPurchase {
        player: p,
        product_id: GOLD_100,
    });
    app.update_until("the grant", |w| {
        w.get::<Gold>(p).is_some_and(|g| g.0 == 100)
    });
    // Past the first read of the feed, so the game follows it.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(2500) {
        app.update();
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let receipt = store
            .audit()
            .receipts
            .iter()
            .find(|r| r.refund.is_none())
            .unwrap()
            .info
            .purchase_id
            .clone();
        let balance = app.world().get::<PremiumBalance>(p).unwrap().0;
        let refunded = Instant::now();
        if store
            .call_outside(RefundRequest {
                purchase_id: receipt,
                reason: "admin".into(),
                place: None,
            })
            .is_err()
        {
            break;
        }
        app.update_until("the refund to reach the game", |w| {
            w.get::<PremiumBalance>(p).unwrap().0 != balance
        });
        seen.push(refunded.elapsed());
        // Buy again for the next round.
        app.world_mut().write_message(PromptProductPurchase {
            player: p,
            product_id: GOLD_100,
        });
        let bought = app.world().get::<PremiumBalance>(p).unwrap().0 - 80;
        app.update_until("the next purchase", |w| {
            w.get::<PremiumBalance>(p).unwrap().0 == bought
        });
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("refund elsewhere seen by the game after {seen:?} (refresh interval 2 s)");
    assert!(
        seen.iter().all(|d| *d < Duration::from_millis(500)),
        "{seen:?}"
    );
}
