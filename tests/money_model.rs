//! A game-level model test of the money paths: two game servers share one ledger (in memory,
//! SQLite, PostgreSQL); players join and leave them, hop between them, buy; purchases are
//! refunded in the game and from outside it (the admin tool), before and after their grant and
//! while it commits; store top-ups are credited and reversed from both; handlers decline, or
//! reject and refund (after adding the Gold, which must be undone), for a while; the refresh runs.
//! Afterwards everyone plays on until nothing is pending, and:
//!
//! - every receipt was granted (committed) at most once, on one server, and never one refunded
//!   before its grant;
//! - every rejected receipt was told rejected exactly once, on one server, and never granted;
//! - each player's persisted Gold is 100 per Gold pack granted, less 100 per one taken back
//!   (nothing for a rejected one), in the ledger and in the game;
//! - every balance is the sum of its journal, and the ledger passes `check()`;
//! - every store order credited once, to one user.
//!
//! `PROPTEST_CASES=100 cargo test --all-features --test money_model` searches longer.

mod common;
#[path = "common/stores.rs"]
mod stores;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bevy::prelude::*;
use bevy_marketplace::ledger::{Clawback, CreditRequest, RefundRequest, ReverseCredit};
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    MarketplaceAppExt, MarketplaceService, PromptProductPurchase, PurchaseId, ReceiptState, UserId,
};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stores::TestStore;

const USERS: u8 = 3;

#[derive(Clone, Debug)]
enum Op {
    /// The player joins server `server` (if they are on neither).
    Join { user: u8, server: u8 },
    /// The player leaves.
    Leave { user: u8 },
    /// The player buys a Gold pack (or a heal) where they are.
    Buy { user: u8, gold: bool },
    /// A server refunds a receipt (index from the newest) through its service.
    RefundInGame { server: u8, back: u8 },
    /// The admin tool refunds a receipt.
    RefundOutside { back: u8 },
    /// A store top-up, through a server's service or the admin tool.
    Credit {
        user: u8,
        order: u8,
        amount: u64,
        outside: bool,
    },
    /// The store reversed an order.
    Reverse { order: u8 },
    /// A server's handlers work (0), decline (1) or reject and refund (2).
    Handlers { server: u8, mode: u8 },
    /// Frames on both servers.
    Frames { n: u8 },
    /// Time passes on both servers (retries, refreshes).
    Advance { ms: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let server = 0u8..2;
    prop_oneof![
        3 => (user.clone(), server.clone()).prop_map(|(user, server)| Op::Join { user, server }),
        1 => user.clone().prop_map(|user| Op::Leave { user }),
        5 => (user.clone(), proptest::bool::weighted(0.8)).prop_map(|(user, gold)| Op::Buy { user, gold }),
        2 => (server.clone(), 0u8..4).prop_map(|(server, back)| Op::RefundInGame { server, back }),
        2 => (0u8..4).prop_map(|back| Op::RefundOutside { back }),
        2 => (user, 0u8..3, prop_oneof![Just(100u64), Just(300)], any::<bool>())
            .prop_map(|(user, order, amount, outside)| Op::Credit { user, order, amount, outside }),
        1 => (0u8..3).prop_map(|order| Op::Reverse { order }),
        2 => (server.clone(), 0u8..3).prop_map(|(server, mode)| Op::Handlers { server, mode }),
        3 => (1u8..8).prop_map(|n| Op::Frames { n }),
        2 => prop_oneof![Just(300u16), Just(1100), Just(2100)].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A game server with Gold packs that give 100 Gold and take it back when refunded.
fn server(store: &TestStore, name: &str) -> GameServer {
    let mut game = store.game(name, |p| p);
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

fn service(game: &mut GameServer) -> Mut<'_, MarketplaceService> {
    game.app.world_mut().resource_mut::<MarketplaceService>()
}

/// Frames on both servers, each a little apart so their transactions interleave.
fn frames(servers: &mut [GameServer; 2], n: u8) {
    for _ in 0..n {
        for game in servers.iter_mut() {
            game.app.update();
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

fn run(store: &TestStore, ops: &[Op]) -> Result<(), String> {
    let mut servers = [server(store, "a"), server(store, "b")];
    let mut on: [Option<(usize, Entity)>; USERS as usize] = [None; USERS as usize];
    let mut receipts: Vec<PurchaseId> = Vec::new();
    let note_receipts = |receipts: &mut Vec<PurchaseId>| {
        for r in store.audit().receipts {
            if !receipts.contains(&r.info.purchase_id) {
                receipts.push(r.info.purchase_id);
            }
        }
    };
    let pick = |receipts: &[PurchaseId], back: u8| receipts.iter().rev().nth(back.into()).cloned();
    for op in ops {
        match *op {
            Op::Join { user, server } => {
                if on[usize::from(user)].is_none() {
                    let e = servers[usize::from(server)].spawn(i64::from(user));
                    on[usize::from(user)] = Some((usize::from(server), e));
                }
            }
            Op::Leave { user } => {
                if let Some((s, e)) = on[usize::from(user)].take() {
                    servers[s].app.world_mut().entity_mut(e).despawn();
                }
            }
            Op::Buy { user, gold } => {
                if let Some((s, e)) = on[usize::from(user)] {
                    servers[s]
                        .app
                        .world_mut()
                        .write_message(PromptProductPurchase {
                            player: e,
                            product_id: if gold { GOLD_100 } else { FULL_HEAL },
                        });
                }
            }
            Op::RefundInGame { server, back } => {
                note_receipts(&mut receipts);
                if let Some(id) = pick(&receipts, back) {
                    service(&mut servers[usize::from(server)]).refund(id, "support");
                }
            }
            Op::RefundOutside { back } => {
                note_receipts(&mut receipts);
                if let Some(id) = pick(&receipts, back) {
                    let _ = store.call_outside(RefundRequest {
                        purchase_id: id,
                        reason: "admin".into(),
                        place: None,
                    });
                }
            }
            Op::Credit {
                user,
                order,
                amount,
                outside,
            } => {
                let order_id = format!("order-{order}");
                if outside {
                    let _ = store.call_outside(CreditRequest {
                        user: UserId(i64::from(user)),
                        amount,
                        source: "web".into(),
                        order_id,
                        starting_balance: 1000,
                    });
                } else {
                    service(&mut servers[usize::from(user) % 2]).credit_premium_currency(
                        UserId(i64::from(user)),
                        amount,
                        "web",
                        order_id,
                    );
                }
            }
            Op::Reverse { order } => {
                let _ = store.call_outside(ReverseCredit {
                    source: "web".into(),
                    order_id: format!("order-{order}"),
                });
            }
            Op::Handlers { server, mode } => {
                servers[usize::from(server)]
                    .app
                    .insert_resource(match mode {
                        0 => HandlerMode::Work,
                        1 => HandlerMode::Decline,
                        _ => HandlerMode::Reject,
                    });
            }
            Op::Frames { n } => frames(&mut servers, n),
            Op::Advance { ms } => {
                for game in servers.iter_mut() {
                    game.app
                        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
                            Duration::from_millis(u64::from(ms)),
                        ));
                    game.app.update();
                    game.app
                        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
                            Duration::from_millis(10),
                        ));
                }
            }
        }
        frames(&mut servers, 1);
    }

    // Everyone plays on, where they are or on server a, with handlers working, until nothing is
    // pending; then everyone leaves.
    for game in servers.iter_mut() {
        game.app.insert_resource(HandlerMode::Work);
    }
    for user in 0..USERS {
        if on[usize::from(user)].is_none() {
            let e = servers[0].spawn(i64::from(user));
            on[usize::from(user)] = Some((0, e));
        }
    }
    for _ in 0..12 {
        for game in servers.iter_mut() {
            game.advance(Duration::from_secs(20));
        }
    }
    let audit = store.audit();
    let waiting: Vec<_> = audit
        .receipts
        .iter()
        .filter(|r| {
            r.state == ReceiptState::Pending
                || r.refund
                    .as_ref()
                    .is_some_and(|f| f.clawback == Clawback::Pending)
        })
        .collect();
    if !waiting.is_empty() {
        return Err(format!(
            "still waiting after everyone played on: {waiting:#?}"
        ));
    }
    let gold_in_game: BTreeMap<UserId, u64> = on
        .iter()
        .enumerate()
        .filter_map(|(u, at)| {
            let (s, e) = (*at)?;
            Some((UserId(u as i64), servers[s].gold(e)))
        })
        .collect();
    for (s, e) in on.iter().flatten() {
        servers[*s].app.world_mut().entity_mut(*e).despawn();
    }
    for game in servers.iter_mut() {
        game.app.settle();
    }

    let audit = store.audit();
    let report = audit.check();
    if !report.is_sound() {
        return Err(format!("the ledger does not add up: {:?}", report.problems));
    }
    // Committed grants, as the servers were told of them.
    let mut resolved: HashMap<PurchaseId, usize> = HashMap::new();
    for game in &servers {
        for receipt in &game.app.world().resource::<Collected>().resolved {
            *resolved.entry(receipt.purchase_id.clone()).or_default() += 1;
        }
    }
    let mut rejected: HashMap<PurchaseId, usize> = HashMap::new();
    for game in &servers {
        for told in &game.app.world().resource::<Collected>().rejected {
            if told.reason != "sold out" {
                return Err(format!("a rejection told the reason {:?}", told.reason));
            }
            *rejected
                .entry(told.receipt.purchase_id.clone())
                .or_default() += 1;
        }
    }
    let mut expected_gold: BTreeMap<UserId, i64> = BTreeMap::new();
    for r in &audit.receipts {
        let id = &r.info.purchase_id;
        let times = resolved.get(id).copied().unwrap_or(0);
        if times > 1 {
            return Err(format!("receipt {id} was granted {times} times"));
        }
        let told_rejected = rejected.get(id).copied().unwrap_or(0);
        let is_rejected = r.state == ReceiptState::Rejected;
        if told_rejected != usize::from(is_rejected) {
            return Err(format!(
                "receipt {id} ({:?}, refund {:?}) was told rejected {told_rejected} time(s)",
                r.state, r.refund
            ));
        }
        if is_rejected
            && r.refund
                .as_ref()
                .is_none_or(|f| f.clawback != Clawback::NotNeeded || f.reason != "sold out")
        {
            return Err(format!("rejected receipt {id} has refund {:?}", r.refund));
        }
        let granted = match (&r.state, &r.refund) {
            (ReceiptState::Granted, _) => true,
            (ReceiptState::Refunded, Some(refund)) => refund.clawback != Clawback::NotNeeded,
            _ => false,
        };
        if granted != (times == 1) {
            return Err(format!(
                "receipt {id} ({:?}, refund {:?}) was told granted {times} time(s)",
                r.state, r.refund
            ));
        }
        if r.info.product_id == GOLD_100 && granted {
            let taken_back = r
                .refund
                .as_ref()
                .is_some_and(|f| f.clawback == Clawback::Done);
            *expected_gold.entry(r.info.player_id).or_default() += if taken_back { 0 } else { 100 };
        }
    }
    for user in 0..USERS {
        let user = UserId(i64::from(user));
        let want = expected_gold.get(&user).copied().unwrap_or(0);
        let stored = audit
            .accounts
            .get(&user)
            .and_then(|(_, state)| state.0.get("Gold").cloned())
            .unwrap_or_else(|| "(0)".into());
        if stored != format!("({want})") {
            return Err(format!(
                "user {user}: persisted Gold {stored}, but granted less taken back is {want}"
            ));
        }
        if let Some(shown) = gold_in_game.get(&user)
            && *shown as i64 != want
        {
            return Err(format!(
                "user {user}: Gold {shown} in the game, {want} granted"
            ));
        }
    }
    let mut orders: HashMap<(&str, &str), usize> = HashMap::new();
    for credit in &audit.credits {
        *orders
            .entry((&credit.source, &credit.order_id))
            .or_default() += 1;
    }
    if let Some(twice) = orders.iter().find(|(_, n)| **n > 1) {
        return Err(format!("a store order was credited twice: {twice:?}"));
    }
    Ok(())
}

fn search(store: impl Fn() -> TestStore) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(12);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        run(&store(), &ops).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

#[test]
fn memory() {
    search(TestStore::memory);
}

#[test]
fn sqlite() {
    search(TestStore::sqlite);
}

#[cfg(feature = "postgres")]
#[test]
fn postgres() {
    search(|| TestStore::postgres("money_model"));
}
