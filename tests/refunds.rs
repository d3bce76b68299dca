//! Refunds with clawback and store top-ups, as a game sees them: through `MarketplaceService`,
//! refund handlers and messages, with the plugin's default refresh interval. Each story runs on
//! the in-memory store, SQLite and PostgreSQL.

mod common;
#[path = "common/stores.rs"]
mod stores;

use bevy_marketplace::ledger::RefundOutcome;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bevy::prelude::*;
use bevy_marketplace::ledger::{
    Clawback, CreditError, LedgerReply, LedgerRequest, RefundError, RefundRequest,
};
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    CreditFailure, CreditFinished, CreditReversalFinished, RefundFailure, RefundFinished,
};
use bevy_marketplace::{
    MarketplaceAppExt, MarketplaceService, PlayerSession, PremiumBalance, PurchaseId,
    ReceiptRefunded, ReceiptState, UserId,
};
use common::*;
use stores::TestStore;

fn service(game: &mut GameServer) -> Mut<'_, MarketplaceService> {
    game.app.world_mut().resource_mut::<MarketplaceService>()
}

/// Runs frames until a message `M` is written; returns it (messages live two frames).
fn answer<M: Message + Clone>(game: &mut GameServer, what: &str) -> M {
    let mut found = None;
    game.app.update_until(what, |w| {
        found = w.resource_mut::<Messages<M>>().drain().next();
        found.is_some()
    });
    found.unwrap()
}

/// A game on `store` whose GOLD_100 refund handler takes the 100 Gold back.
fn game_on(store: &TestStore, server: &str) -> GameServer {
    let mut game = store.game(server, |p| p);
    game.app
        .add_refund_handler(GOLD_100, |_receipt, mut player| {
            let Some(mut gold) = player.get_mut::<Gold>() else {
                return false;
            };
            gold.0 -= 100;
            true
        });
    game
}

fn balance(game: &GameServer, player: Entity) -> u64 {
    game.app.world().get::<PremiumBalance>(player).unwrap().0
}

/// The newest receipt of `user` in the ledger.
fn newest_receipt(store: &TestStore, user: i64) -> PurchaseId {
    store
        .audit()
        .receipts
        .iter()
        .filter(|r| r.info.player_id == UserId(user))
        .max_by_key(|r| r.purchased_at_ms)
        .unwrap()
        .info
        .purchase_id
        .clone()
}

fn stored_refund(store: &TestStore, id: &PurchaseId) -> Option<Clawback> {
    let audit = store.audit();
    let receipt = audit
        .receipts
        .iter()
        .find(|r| &r.info.purchase_id == id)
        .unwrap();
    receipt.refund.as_ref().map(|r| r.clawback)
}

fn refunding_a_granted_purchase_gives_the_gems_back_and_takes_the_gold_back_once(
    store: &TestStore,
) {
    let mut game = game_on(store, "a");
    let p = game.join(7);
    game.buy(p, GOLD_100);
    game.buy(p, GOLD_100);
    assert_eq!(game.gold(p), 200);
    assert_eq!(balance(&game, p), 1000 - 160);
    let id = newest_receipt(store, 7);

    service(&mut game).refund(id.clone(), "chargeback");
    let finished: RefundFinished = answer(&mut game, "the refund's answer");
    let outcome = finished.result.unwrap();
    assert_eq!(outcome.clawback, Clawback::Pending);
    assert_eq!(outcome.balance, 1000 - 80);
    let refunded: ReceiptRefunded = answer(&mut game, "the clawback to commit");
    assert_eq!(refunded.receipt.purchase_id, id);
    assert_eq!(refunded.clawback, Clawback::Done);
    assert_eq!(game.gold(p), 100, "one purchase's Gold taken back");
    assert_eq!(balance(&game, p), 1000 - 80);

    game.app.settle();
    assert_eq!(stored_refund(store, &id), Some(Clawback::Done));
    let audit = store.audit();
    assert_eq!(audit.accounts[&UserId(7)].1.0["Gold"], "(100)");
    assert!(audit.check().is_sound(), "{:?}", audit.check().problems);

    service(&mut game).refund(id.clone(), "again");
    let again: RefundFinished = answer(&mut game, "the second refund's answer");
    assert!(matches!(
        again.result,
        Err(RefundFailure::Refused(RefundError::AlreadyRefunded { .. }))
    ));
    service(&mut game).refund(PurchaseId("no-such-purchase".into()), "typo");
    let unknown: RefundFinished = answer(&mut game, "the unknown refund's answer");
    assert_eq!(
        unknown.result,
        Err(RefundFailure::Refused(RefundError::UnknownPurchase(
            PurchaseId("no-such-purchase".into())
        )))
    );
    game.app.settle();
    assert_eq!(game.gold(p), 100, "a refused refund takes nothing");
    assert_eq!(balance(&game, p), 1000 - 80);
}

fn a_receipt_of_another_place_is_not_refunded_here(store: &TestStore) {
    let mut game = game_on(store, "a");
    let p = game.join(7);
    game.buy(p, GOLD_100);
    let id = newest_receipt(store, 7);
    let mut other = store.game("b", |p| bevy_marketplace::MarketplacePlugin {
        place_id: bevy_marketplace::PlaceId(99),
        ..p
    });
    other
        .app
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .refund(id.clone(), "wrong game");
    let finished: RefundFinished = answer(&mut other, "the refund's answer");
    assert!(matches!(
        finished.result,
        Err(RefundFailure::Refused(RefundError::OtherGame { .. }))
    ));
    assert_eq!(stored_refund(store, &id), None);
}

fn a_refunded_pending_receipt_is_never_granted(store: &TestStore) {
    let mut game = game_on(store, "a");
    game.app.insert_resource(HandlerMode::Decline);
    let p = game.join(7);
    game.buy(p, GOLD_100);
    assert_eq!(game.gold(p), 0);
    let id = newest_receipt(store, 7);

    service(&mut game).refund(id.clone(), "never delivered");
    let finished: RefundFinished = answer(&mut game, "the refund's answer");
    assert_eq!(finished.result.unwrap().clawback, Clawback::NotNeeded);
    game.app.insert_resource(HandlerMode::Work);
    service(&mut game).retry_pending(p);
    game.app.settle();
    assert_eq!(
        game.gold(p),
        0,
        "the handler never grants a refunded receipt"
    );
    assert_eq!(balance(&game, p), 1000);
    assert!(
        game.app
            .world()
            .get::<PlayerSession>(p)
            .unwrap()
            .pending_receipts()
            .is_empty()
    );
    assert_eq!(store.audit().count(ReceiptState::Refunded), 1);
}

fn the_gold_of_a_buyer_who_is_away_is_taken_back_when_they_join(store: &TestStore) {
    let mut game = game_on(store, "a");
    let p = game.join(7);
    game.buy(p, GOLD_100);
    game.app.world_mut().despawn(p);
    game.app.settle();
    let id = newest_receipt(store, 7);

    service(&mut game).refund(id.clone(), "chargeback");
    let finished: RefundFinished = answer(&mut game, "the refund's answer");
    assert_eq!(finished.result.unwrap().clawback, Clawback::Pending);
    assert_eq!(stored_refund(store, &id), Some(Clawback::Pending));

    // They come back on another server.
    let mut b = game_on(store, "b");
    let back = b.join(7);
    let refunded: ReceiptRefunded = answer(&mut b, "the clawback on join");
    assert_eq!(refunded.receipt.purchase_id, id);
    assert_eq!(b.gold(back), 0);
    assert_eq!(balance(&b, back), 1000);
    b.app.settle();
    assert_eq!(stored_refund(store, &id), Some(Clawback::Done));
}

fn a_declining_refund_handler_is_retried_and_its_changes_undone(store: &TestStore) {
    let mut game = store.game("a", |p| p);
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    game.app
        .add_refund_handler(GOLD_100, move |_receipt, mut player| {
            let Some(mut gold) = player.get_mut::<Gold>() else {
                return false;
            };
            gold.0 -= 100;
            // The first attempt changes Gold and then declines: that change must not stay.
            seen.fetch_add(1, Ordering::SeqCst) > 0
        });
    let p = game.join(7);
    game.buy(p, GOLD_100);
    game.buy(p, GOLD_100);
    let id = newest_receipt(store, 7);

    service(&mut game).refund(id.clone(), "chargeback");
    let failed: bevy_marketplace::ClawbackFailed = answer(&mut game, "the declined clawback");
    assert_eq!(failed.attempts, 1);
    assert_eq!(game.gold(p), 200, "the declined attempt's change is undone");
    // Retried with the default backoff (1 s first).
    game.advance(std::time::Duration::from_secs(2));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let stats = game
        .app
        .world()
        .resource::<bevy_marketplace::MarketplaceStats>();
    assert_eq!(stats.refunds_settled, 1);
    assert_eq!(game.gold(p), 100, "taken back exactly once");
    game.app.settle();
    assert_eq!(store.audit().accounts[&UserId(7)].1.0["Gold"], "(100)");
}

fn a_product_without_a_refund_handler_keeps_its_effect_and_says_so(store: &TestStore) {
    let mut game = game_on(store, "a");
    let p = game.join(7);
    game.buy(p, FULL_HEAL);
    let healed = game.app.world().get::<Health>(p).unwrap().current;
    assert_eq!(healed, 100);
    let id = newest_receipt(store, 7);

    service(&mut game).refund(id.clone(), "goodwill");
    let refunded: ReceiptRefunded = answer(&mut game, "the refund to settle");
    assert_eq!(refunded.clawback, Clawback::Kept);
    assert_eq!(game.app.world().get::<Health>(p).unwrap().current, 100);
    assert_eq!(balance(&game, p), 1000);
    game.app.settle();
    assert_eq!(stored_refund(store, &id), Some(Clawback::Kept));
}

fn a_refund_made_outside_the_game_reaches_the_online_player_within_seconds(store: &TestStore) {
    let mut game = game_on(store, "a");
    let p = game.join(7);
    game.buy(p, GOLD_100);
    game.app.settle();
    let id = newest_receipt(store, 7);

    // The admin tool (or another server) refunds straight in the ledger.
    let reply = store.apply_outside(LedgerRequest::Refund(RefundRequest {
        purchase_id: id.clone(),
        reason: "support ticket".into(),
        place: None,
    }));
    assert!(matches!(
        reply,
        LedgerReply::Refund(Ok(RefundOutcome { .. }))
    ));

    // With the default refresh interval (2 s of the game's clock): no rejoin, no shortened wait.
    let refunded: ReceiptRefunded = answer(&mut game, "the refund to reach the running game");
    assert_eq!(refunded.receipt.purchase_id, id);
    assert_eq!(game.gold(p), 0);
    assert_eq!(balance(&game, p), 1000);
}

fn store_top_ups_credit_once_per_order_and_a_reversal_leaves_a_shortfall(store: &TestStore) {
    let mut game = game_on(store, "a");
    let p = game.join(7);

    for _ in 0..3 {
        service(&mut game).credit_premium_currency(UserId(7), 500, "steam", "order-1");
    }
    let mut answers = Vec::new();
    game.app.update_until("three answers", |w| {
        answers.extend(w.resource_mut::<Messages<CreditFinished>>().drain());
        answers.len() == 3
    });
    let already: Vec<bool> = answers
        .iter()
        .map(|a| a.result.as_ref().unwrap().already_credited)
        .collect();
    assert_eq!(already, [false, true, true]);
    assert_eq!(balance(&game, p), 1500, "credited once");

    service(&mut game).credit_premium_currency(UserId(8), 500, "steam", "order-1");
    let mismatch: CreditFinished = answer(&mut game, "a reused order id");
    assert!(matches!(
        mismatch.result,
        Err(CreditFailure::Refused(CreditError::OrderMismatch { .. }))
    ));
    service(&mut game).credit_premium_currency(UserId(7), 0, "steam", "order-2");
    let zero: CreditFinished = answer(&mut game, "a zero top-up");
    assert!(matches!(
        zero.result,
        Err(CreditFailure::Refused(CreditError::InvalidAmount {
            amount: 0
        }))
    ));

    // The player spends most of it, then the store charges the order back.
    game.buy(p, GOLD_1000); // 700
    game.buy(p, GOLD_1000); // 700
    assert_eq!(balance(&game, p), 100);
    service(&mut game).reverse_credit("steam", "order-1");
    let reversed: CreditReversalFinished = answer(&mut game, "the reversal");
    let outcome = reversed.result.unwrap();
    let reversal = outcome.record.reversal.unwrap();
    assert_eq!((reversal.taken, reversal.shortfall), (100, 400));
    assert_eq!(balance(&game, p), 0, "never below zero");
    let session = game.app.world().get::<PlayerSession>(p).unwrap();
    assert_eq!(session.shortfall(), 400);

    service(&mut game).reverse_credit("steam", "order-1");
    let again: CreditReversalFinished = answer(&mut game, "the second reversal");
    assert!(again.result.unwrap().already_reversed);
    assert_eq!(balance(&game, p), 0);

    // The next top-up pays the shortfall first.
    service(&mut game).credit_premium_currency(UserId(7), 1000, "steam", "order-3");
    let paid: CreditFinished = answer(&mut game, "a top-up after the shortfall");
    let paid = paid.result.unwrap();
    assert_eq!((paid.balance, paid.shortfall), (600, 0));
    assert_eq!(balance(&game, p), 600);
    game.app.settle();
    let audit = store.audit();
    assert!(audit.check().is_sound(), "{:?}", audit.check().problems);
    assert!(audit.shortfalls.is_empty());
}

on_every_store!(
    refunding_a_granted_purchase_gives_the_gems_back_and_takes_the_gold_back_once,
    a_receipt_of_another_place_is_not_refunded_here,
    a_refunded_pending_receipt_is_never_granted,
    the_gold_of_a_buyer_who_is_away_is_taken_back_when_they_join,
    a_declining_refund_handler_is_retried_and_its_changes_undone,
    a_product_without_a_refund_handler_keeps_its_effect_and_says_so,
    a_refund_made_outside_the_game_reaches_the_online_player_within_seconds,
    store_top_ups_credit_once_per_order_and_a_reversal_leaves_a_shortfall,
);
