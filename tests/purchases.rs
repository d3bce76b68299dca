//! The purchase contract, end to end in headless apps: prompts, charging, receipts, handlers.

mod common;

use bevy_marketplace::ledger::{AdjustBalance, ChargeReply};
use std::time::Duration;

use bevy::prelude::*;
use bevy_marketplace::ledger::{ChargeRequest, InMemoryLedger, LedgerRequest, LedgerStore};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    CurrencyType, DeliveryFailure, PlaceId, ProductPurchaseChannel, PromptAction, PromptState,
    PurchaseError, ReceiptHandlers, ReceiptState, RequestId, Sessions,
};
use common::*;

#[test]
fn heal_to_full_sample_restores_health_and_charges_the_price() {
    let mut shop = shop();
    let player = shop.join(1);
    assert_eq!(shop.health(player), 30);
    shop.buy(player, FULL_HEAL);
    assert_eq!(shop.health(player), 100, "the sample heals to MaxHealth");
    assert_eq!(shop.balance(player), 1000 - 50, "the price is debited");
    let resolved = &shop.collected().resolved;
    assert_eq!(resolved.len(), 1, "one receipt resolved");
    let receipt = &resolved[0];
    assert_eq!(receipt.player_id, UserId(1));
    assert_eq!(receipt.product_id, FULL_HEAL);
    assert_eq!(receipt.currency_spent, 50);
    assert_eq!(receipt.currency_type, CurrencyType::Premium);
    assert_eq!(
        receipt.product_purchase_channel,
        ProductPurchaseChannel::InExperience
    );
    assert_eq!(receipt.product_purchase_channel.code(), 1);
    assert_eq!(receipt.place_id_where_purchased, PlaceId(0));
    assert!(!receipt.purchase_id.as_str().is_empty());
    assert!(!receipt.is_test_purchase);
    let audit = shop.ledger.audit();
    assert_eq!(audit.count(ReceiptState::Granted), 1);
    assert_eq!(audit.purchase_debits, 50);
}

#[test]
fn gold_sample_adds_100_gold_and_persists_it_with_the_grant() {
    let mut shop = shop();
    let player = shop.join(2);
    shop.buy(player, GOLD_100);
    shop.buy(player, GOLD_100);
    assert_eq!(
        shop.gold(player),
        200,
        "each purchase adds exactly 100 gold"
    );
    let audit = shop.ledger.audit();
    let (_, state) = &audit.accounts[&UserId(2)];
    assert_eq!(
        state.0.get("Gold").map(String::as_str),
        Some("(200)"),
        "saved with the grants"
    );
    assert_eq!(audit.count(ReceiptState::Granted), 2);
}

#[test]
fn sample_handler_without_its_component_does_not_grant_and_is_retried() {
    let mut shop = shop();
    let player = shop.join(3);
    shop.app.world_mut().entity_mut(player).remove::<Health>();
    shop.buy(player, FULL_HEAL);
    assert_eq!(
        shop.receipts_in(ReceiptState::Pending),
        1,
        "not granted without a Health"
    );
    assert_eq!(shop.balance(player), 950, "but charged: the receipt waits");
    assert!(matches!(
        shop.collected().failed[0].reason,
        DeliveryFailure::NotProcessedYet
    ));
    shop.app.world_mut().entity_mut(player).insert(Health {
        current: 1,
        max: 80,
    });
    shop.advance(Duration::from_secs(2));
    assert_eq!(shop.health(player), 80, "the timed retry granted it");
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
}

#[test]
fn a_second_prompt_while_one_is_open_is_ignored() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let player = shop.join(4);
    for product in [FULL_HEAL, GOLD_100] {
        shop.app.world_mut().write_message(PromptProductPurchase {
            player,
            product_id: product,
        });
    }
    shop.app.settle();
    let prompt = shop.world().get::<OpenPrompt>(player).unwrap();
    assert_eq!(prompt.product_id, FULL_HEAL, "the first request opened");
    shop.app
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .prompt_product_purchase(player, GOLD_100);
    shop.app.settle();
    assert_eq!(
        shop.world().get::<OpenPrompt>(player).unwrap().product_id,
        FULL_HEAL
    );
    let prompt = shop.world().get::<OpenPrompt>(player).unwrap().id;
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Cancel);
    shop.app.settle();
    assert_eq!(
        shop.collected().finished,
        vec![PromptProductPurchaseFinished {
            player,
            prompt,
            user_id: UserId(4),
            product_id: FULL_HEAL,
            is_purchased: false
        }],
        "exactly one prompt opened and closed"
    );
    assert_eq!(shop.balance(player), 1000, "cancel charges nothing");
}

#[test]
fn finished_fires_once_and_is_purchased_only_after_a_purchase() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let player = shop.join(5);
    shop.buy(player, GOLD_100);
    assert!(shop.collected().finished.is_empty(), "still open");
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Confirm);
    shop.app.settle();
    let state = &shop.world().get::<OpenPrompt>(player).unwrap().state;
    assert!(
        matches!(state, PromptState::Purchased(_)),
        "shows success: {state:?}"
    );
    assert!(shop.collected().finished.is_empty(), "open until OK");
    assert_eq!(
        shop.gold(player),
        100,
        "granted through the receipt, before the prompt closed"
    );
    let prompt = shop.world().get::<OpenPrompt>(player).unwrap().id;
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Close);
    shop.app.settle();
    shop.app.settle();
    assert_eq!(
        shop.collected().finished,
        vec![PromptProductPurchaseFinished {
            player,
            prompt,
            user_id: UserId(5),
            product_id: GOLD_100,
            is_purchased: true
        }]
    );
}

fn assert_refused(product: ProductId, balance: u64, expected: fn(&PurchaseError) -> bool) {
    let mut shop = shop_with(|p| MarketplacePlugin {
        starting_balance: balance,
        ..p.with_confirm_policy(ConfirmPolicy::Manual)
    });
    let player = shop.join(6);
    shop.buy(player, product);
    let state = shop
        .world()
        .get::<OpenPrompt>(player)
        .unwrap()
        .state
        .clone();
    match &state {
        PromptState::Failed(e) => assert!(expected(e), "wrong error: {e:?}"),
        other => panic!("expected a failed prompt, got {other:?}"),
    }
    // "Buy" again (a double click) is refused, so the failure stays on screen; "OK" closes it.
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Confirm);
    shop.app.settle();
    assert!(shop.world().get::<OpenPrompt>(player).is_some());
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Close);
    shop.app.settle();
    assert_eq!(shop.collected().finished.len(), 1);
    assert!(!shop.collected().finished[0].is_purchased);
    assert_eq!(shop.balance(player), balance, "nothing charged");
    assert!(shop.ledger.audit().receipts.is_empty(), "no receipt");
    assert_eq!(shop.ledger.audit().purchase_debits, 0);
}

#[test]
fn unknown_product_fails_without_charging() {
    assert_refused(ProductId(999), 1000, |e| {
        *e == PurchaseError::UnknownProduct
    });
}

#[test]
fn product_not_for_sale_fails_without_charging() {
    assert_refused(DRAGON_EGG, 100_000, |e| *e == PurchaseError::NotForSale);
}

#[test]
fn not_enough_funds_fails_without_charging() {
    assert_refused(GOLD_1000, 100, |e| {
        *e == PurchaseError::NotEnoughFunds {
            balance: 100,
            price: 700,
            missing: 600,
        }
    });
}

#[test]
fn a_price_change_between_prompt_and_confirm_fails_the_purchase() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let player = shop.join(7);
    shop.buy(player, GOLD_100);
    let text = include_str!("../assets/products.ron").replace("price: 80", "price: 95");
    let repriced = Catalog::from_ron_str(&text, "products.ron").unwrap();
    assert_eq!(repriced.products()[1].price, 95);
    shop.app
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .set_catalog(&repriced);
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Confirm);
    shop.app.settle();
    let state = shop
        .world()
        .get::<OpenPrompt>(player)
        .unwrap()
        .state
        .clone();
    assert_eq!(
        state,
        PromptState::Failed(PurchaseError::PriceChanged { shown: 80, now: 95 })
    );
    assert_eq!(shop.balance(player), 1000);
    assert!(shop.ledger.audit().receipts.is_empty());
}

#[test]
fn a_charge_whose_answer_was_lost_is_retried_without_charging_twice() {
    let mut shop = shop();
    let player = shop.join(8);
    shop.faults.lose_next_acks(1);
    shop.buy(player, GOLD_100);
    let audit = shop.ledger.audit();
    assert_eq!(audit.receipts.len(), 1, "one receipt for one purchase");
    assert_eq!(audit.purchase_debits, 80, "charged once");
    assert_eq!(shop.balance(player), 920);
    assert_eq!(shop.gold(player), 100);
    assert_eq!(shop.collected().finished.len(), 1);
    assert!(shop.collected().finished[0].is_purchased);
}

#[test]
fn the_same_request_id_never_charges_twice_in_the_store() {
    let mut store = InMemoryLedger::default();
    let charge = LedgerRequest::Charge(ChargeRequest {
        request_id: RequestId::new(),
        user: UserId(9),
        product_id: GOLD_100,
        product_name: "test product".into(),
        price: 80,
        test_purchase: false,
        place_id: PlaceId(1),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 0,
        fence: None,
    });
    store.begin().unwrap();
    store
        .apply(
            &LedgerRequest::AdjustBalance(AdjustBalance {
                user: UserId(9),
                delta: 500,
                reason: "top-up".into(),
                starting_balance: 0,
            }),
            0,
        )
        .unwrap();
    let first = store.apply(&charge, 0).unwrap();
    let second = store.apply(&charge, 0).unwrap();
    store.commit().unwrap();
    let (
        bevy_marketplace::ledger::LedgerReply::Charge(ChargeReply::Charged {
            receipt: a,
            replayed: false,
            ..
        }),
        bevy_marketplace::ledger::LedgerReply::Charge(ChargeReply::Charged {
            receipt: b,
            replayed: true,
            balance,
            ..
        }),
    ) = (first, second)
    else {
        panic!("both charges should answer Charged");
    };
    assert_eq!(
        a.purchase_id, b.purchase_id,
        "the retry returns the first receipt"
    );
    assert_eq!(balance, 420);
    assert_eq!(store.audit().receipts.len(), 1);
}

#[test]
fn test_purchases_are_free_flagged_and_still_delivered() {
    let mut shop = shop_with(|p| MarketplacePlugin {
        test_purchases: true,
        starting_balance: 0,
        ..p
    });
    let player = shop.join(10);
    shop.buy(player, GOLD_100);
    assert_eq!(shop.balance(player), 0, "no balance change");
    assert_eq!(shop.gold(player), 100, "the handler still ran");
    let receipt = &shop.collected().resolved[0];
    assert!(receipt.is_test_purchase);
    assert_eq!(receipt.currency_spent, 0, "the exact amount paid");
}

#[test]
fn a_panicking_handler_means_not_processed_yet_and_the_game_keeps_running() {
    let (mut shop, player) = bought_with(HandlerMode::Panic, 11, FULL_HEAL);
    assert_eq!(shop.health(player), 30);
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 1);
    let failure = &shop.collected().failed[0].reason;
    assert!(
        matches!(failure, DeliveryFailure::HandlerPanicked(m) if m.contains("handler bug")),
        "{failure:?}"
    );
    assert_eq!(
        shop.world()
            .resource::<bevy_marketplace::MarketplaceStats>()
            .handler_panics,
        1
    );
    shop.set_mode(HandlerMode::Work);
    shop.advance(Duration::from_secs(2));
    assert_eq!(shop.health(player), 100, "granted on the timed retry");
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
}

#[test]
fn an_erroring_handler_means_not_processed_yet() {
    let (shop, _) = bought_with(HandlerMode::Error, 12, FULL_HEAL);
    assert!(matches!(
        &shop.collected().failed[0].reason,
        DeliveryFailure::HandlerError(m) if m.contains("shelf is empty")
    ));
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 1);
}

#[test]
fn binding_a_product_twice_is_an_error() {
    let mut handlers = ReceiptHandlers::default();
    let h = bevy_marketplace::receipt_handler(|_, _| true);
    handlers.bind(GOLD_100, h.clone()).unwrap();
    assert_eq!(
        handlers.bind(GOLD_100, h.clone()),
        Err(bevy_marketplace::HandlerError::ProductAlreadyBound(
            GOLD_100
        ))
    );
    handlers.bind_catch_all(h.clone()).unwrap();
    assert_eq!(
        handlers.bind_catch_all(h.clone()),
        Err(bevy_marketplace::HandlerError::CatchAllAlreadyBound)
    );
    assert!(handlers.unbind(GOLD_100));
    handlers.bind(GOLD_100, h).unwrap();
}

#[test]
#[should_panic(expected = "already bound")]
fn add_product_handler_twice_panics_at_startup() {
    let mut app = App::new();
    app.add_product_handler(GOLD_100, |_, _| true)
        .add_product_handler(GOLD_100, |_, _| true);
}

#[test]
fn the_catch_all_gets_products_without_their_own_handler() {
    let mut shop = shop();
    shop.app.set_catch_all_handler(|receipt, mut player| {
        if receipt.product_id == ARROWS {
            player.insert(Quiver(20));
        }
        true
    });
    let player = shop.join(13);
    shop.buy(player, ARROWS);
    shop.buy(player, GOLD_100);
    assert_eq!(shop.world().get::<Quiver>(player), Some(&Quiver(20)));
    assert_eq!(
        shop.gold(player),
        100,
        "the product handler still wins for its product"
    );
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 2);
}

#[derive(Component, Debug, PartialEq)]
struct Quiver(u32);

#[test]
fn receipts_without_any_handler_stay_pending_and_are_not_acknowledged() {
    let mut shop = shop();
    let player = shop.join(14);
    shop.buy(player, ARROWS);
    shop.advance(Duration::from_secs(5));
    assert_eq!(
        shop.receipts_in(ReceiptState::Pending),
        1,
        "never auto-acknowledged"
    );
    assert!(
        shop.collected()
            .failed
            .iter()
            .all(|f| f.reason == DeliveryFailure::NoHandler)
    );
    assert!(shop.collected().failed.len() >= 2, "retried on the timer");
    // Binding a handler later picks the receipt up on the next retry.
    shop.app
        .world_mut()
        .resource_mut::<ReceiptHandlers>()
        .bind(ARROWS, bevy_marketplace::receipt_handler(|_, _| true))
        .unwrap();
    shop.advance(Duration::from_secs(60));
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
}

#[test]
fn receipts_wait_for_the_buyer_and_are_delivered_when_they_join() {
    let (mut shop, player) = bought_with(HandlerMode::Decline, 15, GOLD_100);
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 1);
    shop.app.world_mut().entity_mut(player).despawn();
    shop.app.settle();
    let calls_before = shop.log.calls.lock().unwrap().len();
    shop.set_mode(HandlerMode::Work);
    shop.advance(Duration::from_secs(120));
    assert_eq!(
        shop.log.calls.lock().unwrap().len(),
        calls_before,
        "no invocation while the buyer is away"
    );
    let player = shop.join(15);
    assert_eq!(
        shop.gold(player),
        100,
        "delivered on join (Gold was saved at 0 on leave)"
    );
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
}

#[test]
fn purchases_made_outside_the_game_are_delivered_on_join() {
    let mut shop = shop();
    // A store-page purchase lands in the ledger while the player is offline.
    let mut store = shop.ledger.clone();
    store.begin().unwrap();
    store
        .apply(
            &LedgerRequest::AdjustBalance(AdjustBalance {
                user: UserId(16),
                delta: 100,
                reason: "top-up".into(),
                starting_balance: 1000,
            }),
            0,
        )
        .unwrap();
    store
        .apply(
            &LedgerRequest::Charge(ChargeRequest {
                request_id: RequestId::new(),
                user: UserId(16),
                product_id: GOLD_100,
                product_name: "test product".into(),
                price: 80,
                test_purchase: false,
                place_id: PlaceId(0),
                channel: ProductPurchaseChannel::ExperienceDetailsPage,
                starting_balance: 1000,
                fence: None,
            }),
            0,
        )
        .unwrap();
    store.commit().unwrap();
    let player = shop.join(16);
    assert_eq!(shop.gold(player), 100);
    let receipt = &shop.collected().resolved[0];
    assert_eq!(receipt.product_purchase_channel.code(), 2);
}

#[test]
fn timed_retries_back_off() {
    let mut shop = shop_with(|p| MarketplacePlugin {
        retry: bevy_marketplace::RetryPolicy {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(8),
        },
        ..p
    });
    shop.set_mode(HandlerMode::Decline);
    let player = shop.join(17);
    shop.buy(player, GOLD_100);
    let id = shop.collected().failed[0].receipt.purchase_id.clone();
    let calls = |shop: &TestShop| shop.calls_for(&id);
    assert_eq!(calls(&shop), 1);
    shop.advance(Duration::from_millis(500));
    assert_eq!(calls(&shop), 1, "not before the first backoff (1 s)");
    shop.advance(Duration::from_millis(600));
    assert_eq!(calls(&shop), 2, "retried after 1 s");
    shop.advance(Duration::from_millis(1500));
    assert_eq!(calls(&shop), 2, "the second wait is 2 s");
    shop.advance(Duration::from_millis(600));
    assert_eq!(calls(&shop), 3);
    for _ in 0..10 {
        shop.advance(Duration::from_secs(8));
    }
    let attempts = calls(&shop);
    assert!((12..=14).contains(&attempts), "capped at 8 s: {attempts}");
    shop.set_mode(HandlerMode::Work);
    shop.advance(Duration::from_secs(8));
    assert_eq!(shop.gold(player), 100);
    shop.advance(Duration::from_secs(60));
    assert_eq!(calls(&shop), attempts + 1, "never again once granted");
}

#[test]
fn a_receipt_is_not_handed_to_its_handler_again_while_its_grant_commits() {
    let mut shop = shop();
    let player = shop.join(18);
    shop.faults.pause();
    shop.app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: GOLD_100,
    });
    for _ in 0..3 {
        shop.app.update();
    }
    shop.faults.resume();
    // Charge lands; the handler grants; hold the grant's commit in flight.
    shop.app.update_until("the grant is in flight", |w| {
        w.resource::<Sessions>().awaiting_commit().count() == 1
    });
    shop.faults.pause();
    let id = shop
        .world()
        .resource::<Sessions>()
        .awaiting_commit()
        .next()
        .unwrap()
        .purchase_id
        .clone();
    // Another purchase triggers delivery of every pending receipt of the player.
    shop.app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: FULL_HEAL,
    });
    for _ in 0..20 {
        shop.app.update();
    }
    assert_eq!(shop.calls_for(&id), 1, "in flight: not invoked again");
    shop.faults.resume();
    shop.app.settle();
    assert_eq!(shop.calls_for(&id), 1);
    assert_eq!(shop.gold(player), 100);
    assert_eq!(shop.health(player), 100);
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 2);
}

#[test]
fn a_spoofed_prompt_finished_message_grants_nothing() {
    let mut shop = shop();
    let player = shop.join(19);
    shop.app
        .world_mut()
        .write_message(PromptProductPurchaseFinished {
            player,
            prompt: bevy_marketplace::PromptId(1),
            user_id: UserId(19),
            product_id: GOLD_100,
            is_purchased: true,
        });
    shop.app.settle();
    assert_eq!(shop.gold(player), 0);
    assert!(shop.log.calls.lock().unwrap().is_empty());
    assert!(shop.ledger.audit().receipts.is_empty());
}

#[test]
fn several_pending_receipts_are_all_granted_in_any_order() {
    let mut shop = shop();
    shop.set_mode(HandlerMode::Decline);
    let player = shop.join(20);
    for _ in 0..5 {
        shop.buy(player, GOLD_100);
    }
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 5);
    shop.set_mode(HandlerMode::Work);
    shop.advance(Duration::from_secs(60));
    assert_eq!(shop.gold(player), 500);
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 5);
}

#[test]
fn unresolved_receipts_never_expire() {
    let (mut shop, player) = bought_with(HandlerMode::Decline, 21, GOLD_100);
    for _ in 0..50 {
        shop.advance(Duration::from_secs(3600));
    }
    assert_eq!(
        shop.receipts_in(ReceiptState::Pending),
        1,
        "still pending after 50 hours"
    );
    assert_eq!(
        shop.ledger.audit().count(ReceiptState::Refunded),
        0,
        "never auto-refunded"
    );
    shop.set_mode(HandlerMode::Work);
    shop.advance(Duration::from_secs(60));
    assert_eq!(shop.gold(player), 100);
}

#[test]
fn granting_premium_currency_updates_the_ledger_and_the_player() {
    let mut shop = shop();
    let player = shop.join(22);
    shop.app
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .grant_premium_currency(UserId(22), 250, "support");
    shop.app.settle();
    assert_eq!(shop.balance(player), 1250);
    assert_eq!(shop.ledger.audit().accounts[&UserId(22)].0, 1250);
}

#[test]
fn a_top_up_before_the_first_join_adds_to_the_starting_balance() {
    let mut shop = shop();
    shop.app
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .grant_premium_currency(UserId(40), 250, "gift card");
    shop.app.settle();
    assert_eq!(shop.ledger.audit().accounts[&UserId(40)].0, 1250);
    let player = shop.join(40);
    assert_eq!(
        shop.balance(player),
        1250,
        "the starting balance plus the top-up"
    );
}

#[test]
fn a_simulated_purchase_before_the_first_join_keeps_the_starting_balance() {
    let mut shop = shop_with(|p| MarketplacePlugin {
        allow_debug_grants: true,
        ..p
    });
    shop.app
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .simulate_purchase(UserId(41), GOLD_100)
        .unwrap();
    shop.app.settle();
    let player = shop.join(41);
    assert_eq!(shop.gold(player), 100, "delivered on join");
    assert_eq!(shop.balance(player), 1000, "a test purchase is free");
}

#[test]
fn an_unavailable_ledger_fails_purchases_clearly_and_the_game_runs_on() {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(unopenable_ledger())));
    let player = app.world_mut().spawn(Buyer::new(UserId(23))).id();
    app.settle();
    let session = app
        .world()
        .get::<bevy_marketplace::PlayerSession>(player)
        .unwrap();
    assert!(
        matches!(session.phase(), bevy_marketplace::SessionPhase::Failed(m) if m.contains("disk on fire")),
        "{:?}",
        session.phase()
    );
    app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: GOLD_100,
    });
    app.settle();
    for _ in 0..10 {
        app.update();
    }
    assert!(
        app.world().get::<OpenPrompt>(player).is_none(),
        "prompt closed"
    );
}

#[test]
fn a_burst_over_the_frame_budget_is_spread_over_frames_and_nothing_is_lost() {
    // A zero budget: each busy system handles one item a frame.
    let mut shop = shop_with(|p| MarketplacePlugin {
        frame_budget: Duration::ZERO,
        ..p
    });
    let players: Vec<Entity> = (100..120)
        .map(|u| {
            shop.app
                .world_mut()
                .spawn((
                    Buyer::new(UserId(u)),
                    Health {
                        current: 1,
                        max: 10,
                    },
                    Gold(0),
                ))
                .id()
        })
        .collect();
    shop.app
        .update_until("every session to load, one a frame", |w| {
            w.query::<&bevy_marketplace::PlayerSession>()
                .iter(w)
                .filter(|s| s.is_active())
                .count()
                == 20
        });
    for &player in &players {
        shop.app.world_mut().write_message(PromptProductPurchase {
            player,
            product_id: GOLD_100,
        });
    }
    shop.app.update_until("every player to be granted", |w| {
        w.resource::<bevy_marketplace::MarketplaceStats>().granted == 20
    });
    shop.app.settle();
    for &player in &players {
        assert_eq!(shop.gold(player), 100);
    }
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 20);
    assert_eq!(shop.granted_count(), 20, "each granted once");
}

#[test]
fn a_prompt_short_of_funds_can_ask_for_the_games_top_up_flow() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let player = shop.join(7); // 1000
    shop.buy(player, GOLD_1000); // 700: affordable, waits for an answer
    let answer = |shop: &mut TestShop, action| {
        shop.app.world_mut().answer_prompt(player, action);
        shop.app.update();
    };
    // Not short of funds: "Get more" does nothing.
    answer(&mut shop, PromptAction::TopUp);
    assert!(shop.world().get::<OpenPrompt>(player).is_some());
    answer(&mut shop, PromptAction::Confirm);
    shop.app.settle();
    answer(&mut shop, PromptAction::Close);
    assert_eq!(shop.balance(player), 300);

    shop.buy(player, GOLD_1000);
    assert!(matches!(
        shop.world().get::<OpenPrompt>(player).unwrap().state,
        PromptState::Failed(PurchaseError::NotEnoughFunds { missing: 400, .. })
    ));
    let mut asked = Vec::new();
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::TopUp);
    shop.app.update_until("the top-up request", |w| {
        asked.extend(
            w.resource_mut::<Messages<bevy_marketplace::TopUpRequested>>()
                .drain(),
        );
        !asked.is_empty()
    });
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].player, asked[0].missing), (player, 400));
    assert_eq!(asked[0].product_id, GOLD_1000);
    assert!(
        shop.world().get::<OpenPrompt>(player).is_none(),
        "the prompt closed"
    );
}

/// A handler that rejects: its Gold is undone, the currency is back, the open prompt says
/// "Refunded" with the reason, closing it tells the purchase failed, and the receipt is never
/// delivered again, however long the buyer plays on with handlers that would grant.
#[test]
fn a_rejected_purchase_is_refunded_undone_shown_and_never_delivered_again() {
    let mut shop = shop();
    shop.app.insert_resource(ConfirmPolicy::Manual);
    shop.set_mode(HandlerMode::Reject);
    let player = shop.join(4);
    shop.app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: GOLD_100,
    });
    shop.app.settle();
    let prompt = shop.world().get::<OpenPrompt>(player).unwrap().id;
    shop.app.world_mut().write_message(PromptAnswer {
        player,
        prompt,
        action: PromptAction::Confirm,
    });
    shop.app.settle();
    let refunded = PurchaseError::Refunded {
        reason: "sold out".into(),
    };
    assert_eq!(
        shop.world()
            .get::<OpenPrompt>(player)
            .map(|p| p.state.clone()),
        Some(PromptState::Failed(refunded.clone())),
        "the prompt, open until OK, says the purchase was refunded"
    );
    assert_eq!(refunded.to_string(), "Refunded: sold out");
    assert_eq!(shop.balance(player), 1000, "the price is back");
    assert_eq!(shop.gold(player), 0, "the handler's Gold is undone");
    let rejected = &shop.collected().rejected;
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].reason, "sold out");
    let id = rejected[0].receipt.purchase_id.clone();

    shop.app.world_mut().write_message(PromptAnswer {
        player,
        prompt,
        action: PromptAction::Close,
    });
    shop.app.settle();
    assert!(shop.world().get::<OpenPrompt>(player).is_none());
    let finished = shop.collected().finished.last().unwrap();
    assert!(!finished.is_purchased);
    assert_eq!(
        shop.collected().purchase_failed.last().unwrap().error,
        refunded
    );

    shop.set_mode(HandlerMode::Work);
    for _ in 0..4 {
        shop.advance(Duration::from_secs(30));
    }
    assert_eq!(shop.calls_for(&id), 1, "never delivered again");
    assert_eq!(shop.gold(player), 0);
    let audit = shop.ledger.audit();
    assert_eq!(audit.count(ReceiptState::Rejected), 1);
    assert_eq!(audit.accounts[&UserId(4)].0, 1000);
    assert_eq!(audit.accounts[&UserId(4)].1.0["Gold"], "(0)");
    assert!(audit.check().is_sound(), "{:?}", audit.check().problems);
    let sold: Vec<(u64, u64, u64)> = audit
        .sales_hours
        .iter()
        .map(|r| (r.units, r.rejected_units, r.rejected_currency))
        .collect();
    assert_eq!(sold, [(1, 1, 80)], "sales count the rejection apart");
}
