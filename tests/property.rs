//! Property test: random sequences of prompts, confirms, cancels, joins, leaves, handler failures
//! and failing commits never grant a receipt twice, never lose one, and never charge without one;
//! handlers that change Gold before they decline, err, panic or reject leave no trace on
//! persisted Gold, and a rejected purchase's price is back.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bevy::prelude::*;
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{PromptAction, ReceiptState};
use common::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Join(usize),
    Leave(usize),
    Prompt(usize, ProductId),
    /// Prompt, wait a few frames, answer, wait, close.
    Buy(usize, ProductId, bool),
    Answer(usize, PromptAction),
    Mode(HandlerMode),
    Frames(u8),
    Advance(u16),
    FailNextCommit,
    LoseNextAck,
}

const USERS: usize = 3;

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let product = prop_oneof![
        Just(FULL_HEAL),
        Just(GOLD_100),
        Just(GOLD_1000),
        Just(DRAGON_EGG),
        Just(ProductId(999)),
    ];
    let action = prop_oneof![
        Just(PromptAction::Confirm),
        Just(PromptAction::Cancel),
        Just(PromptAction::Close)
    ];
    let mode = prop_oneof![
        3 => Just(HandlerMode::Work),
        1 => Just(HandlerMode::Decline),
        1 => Just(HandlerMode::Error),
        1 => Just(HandlerMode::Panic),
        1 => Just(HandlerMode::Reject),
    ];
    prop_oneof![
        2 => user.clone().prop_map(Op::Join),
        1 => user.clone().prop_map(Op::Leave),
        2 => (user.clone(), product.clone()).prop_map(|(u, p)| Op::Prompt(u, p)),
        6 => (user.clone(), product, proptest::bool::weighted(0.8)).prop_map(|(u, p, b)| Op::Buy(u, p, b)),
        2 => (user, action).prop_map(|(u, a)| Op::Answer(u, a)),
        1 => mode.prop_map(Op::Mode),
        2 => (1u8..6).prop_map(Op::Frames),
        1 => (1u16..20).prop_map(Op::Advance),
        1 => Just(Op::FailNextCommit),
        1 => Just(Op::LoseNextAck),
    ]
}

fn spawn(shop: &mut TestShop, user: usize) -> Entity {
    shop.app
        .world_mut()
        .spawn((
            Buyer::new(UserId(user as i64)),
            Health {
                current: 10,
                max: 100,
            },
            Gold(0),
        ))
        .id()
}

/// Updates until the ledger has answered (bounded; failing commits keep it busy for a while).
fn idle(shop: &mut TestShop) {
    for _ in 0..50 {
        shop.app.update();
        if shop
            .world()
            .resource::<bevy_marketplace::Ledger>()
            .in_flight()
            == 0
        {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let chest_log = shop.log.clone();
    // The chest changes Gold first and decides afterwards (declines, errs, panics or rejects with
    // the mode): a handler that does not grant must leave no trace on persisted Gold.
    shop.app.set_catch_all_handler(move |receipt, mut player| {
        let Some(mut gold) = player.get_mut::<Gold>() else {
            return Ok(ProductPurchaseDecision::NotProcessedYet);
        };
        gold.0 += 1000;
        match player.world_scope(|w| *w.resource::<HandlerMode>()) {
            HandlerMode::Work => {}
            HandlerMode::Decline => return Ok(ProductPurchaseDecision::NotProcessedYet),
            HandlerMode::Error => return Err("the chest is stuck".into()),
            HandlerMode::Panic => panic!("handler bug after opening the chest"),
            HandlerMode::Reject => {
                return Ok(ProductPurchaseDecision::rejected("the chest is empty"));
            }
        }
        chest_log.grant(receipt);
        Ok::<_, BevyError>(ProductPurchaseDecision::PurchaseGranted)
    });
    let mut players: [Option<Entity>; USERS] = [None; USERS];
    for (u, slot) in players.iter_mut().enumerate() {
        *slot = Some(spawn(&mut shop, u));
    }
    shop.app.settle();
    for op in ops {
        match op {
            Op::Join(u) => {
                if players[u].is_none() {
                    players[u] = Some(spawn(&mut shop, u));
                    idle(&mut shop);
                }
            }
            Op::Leave(u) => {
                if let Some(e) = players[u].take() {
                    shop.app.world_mut().entity_mut(e).despawn();
                }
            }
            Op::Prompt(u, product) => {
                if let Some(player) = players[u] {
                    shop.app.world_mut().write_message(PromptProductPurchase {
                        player,
                        product_id: product,
                    });
                }
            }
            Op::Buy(u, product, confirm) => {
                if let Some(player) = players[u] {
                    shop.app.world_mut().write_message(PromptProductPurchase {
                        player,
                        product_id: product,
                    });
                    idle(&mut shop);
                    let action = if confirm {
                        PromptAction::Confirm
                    } else {
                        PromptAction::Cancel
                    };
                    shop.app.world_mut().answer_prompt(player, action);
                    idle(&mut shop);
                    shop.app
                        .world_mut()
                        .answer_prompt(player, PromptAction::Close);
                }
            }
            Op::Answer(u, action) => {
                if let Some(player) = players[u] {
                    shop.app.world_mut().answer_prompt(player, action);
                }
            }
            Op::Mode(mode) => shop.set_mode(mode),
            Op::Frames(n) => {
                for _ in 0..n {
                    shop.app.update();
                }
            }
            Op::Advance(secs) => shop.advance(Duration::from_secs(secs as u64)),
            Op::FailNextCommit => {
                shop.faults.fail_next_commits(1);
            }
            Op::LoseNextAck => {
                shop.faults.lose_next_acks(1);
            }
        }
        shop.app.update();
    }

    // Everyone comes back, handlers work, storage is healthy: everything must settle.
    shop.set_mode(HandlerMode::Work);
    shop.faults.fail_next_commits(0).lose_next_acks(0);
    for (u, slot) in players.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(spawn(&mut shop, u));
        }
    }
    shop.app.settle();
    for _ in 0..4 {
        shop.advance(Duration::from_secs(120));
    }
    let gold_now: Vec<u64> = players.iter().map(|p| shop.gold(p.unwrap())).collect();
    for e in players.iter().flatten() {
        shop.app.world_mut().entity_mut(*e).despawn();
    }
    shop.app.settle();

    let audit = shop.ledger.audit();
    let granted = shop.log.granted.lock().unwrap().clone();
    let unique: HashSet<_> = granted.iter().collect();
    prop_assert_eq!(
        unique.len(),
        granted.len(),
        "a purchase was granted twice: {:?}",
        granted
    );
    prop_assert_eq!(
        audit.count(ReceiptState::Pending),
        0,
        "receipts left pending after everyone returned: {:?}",
        audit.receipts
    );
    prop_assert_eq!(
        audit.purchase_debits,
        audit.receipt_total(),
        "Σ debits = Σ receipt prices"
    );
    let mut spent: BTreeMap<UserId, u64> = BTreeMap::new();
    let mut gold: BTreeMap<UserId, u64> = BTreeMap::new();
    for r in &audit.receipts {
        if r.state == ReceiptState::Rejected {
            // Its price is back, and its handler's changes were undone.
            continue;
        }
        *spent.entry(r.info.player_id).or_default() += r.info.currency_spent;
        let g = match r.info.product_id {
            GOLD_100 => 100,
            GOLD_1000 => 1000,
            _ => 0,
        };
        *gold.entry(r.info.player_id).or_default() += g;
    }
    for (u, gold_now) in gold_now.iter().enumerate() {
        let user = UserId(u as i64);
        let (balance, state) = audit.accounts.get(&user).cloned().unwrap_or_default();
        prop_assert_eq!(
            balance,
            1000 - spent.get(&user).copied().unwrap_or(0),
            "balance of {} is the start minus its receipts",
            user
        );
        let expected = gold.get(&user).copied().unwrap_or(0);
        prop_assert_eq!(*gold_now, expected, "Gold of {} equals its grants", user);
        let stored = state.0.get("Gold").cloned().unwrap_or_else(|| "(0)".into());
        prop_assert_eq!(
            stored,
            format!("({expected})"),
            "persisted Gold of {}",
            user
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_charge_has_one_receipt_granted_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("handler bug") {
                quiet(info);
            }
        }));
        run(ops)?;
    }
}
