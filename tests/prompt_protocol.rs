//! The purchase prompt is a protocol: one answer per prompt, bound to that prompt, in one process
//! and over the network; the client's prompt is the server's. Each test failed before its fix.

mod common;
#[path = "common/net_harness.rs"]
mod net_harness;

use bevy::prelude::*;
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{PromptAction, PromptState, ReceiptState};
use bevy_replicon::test_app::ServerTestAppExt;
use common::*;
use net_harness::*;

fn open_prompt(shop: &mut TestShop, player: Entity, product: ProductId) {
    shop.app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: product,
    });
    shop.app.settle();
}

fn answer(shop: &mut TestShop, player: Entity, action: PromptAction) {
    shop.app.world_mut().answer_prompt(player, action);
}

/// Cancel then Buy in one frame: the player is told "not purchased", so nothing may be charged.
#[test]
fn cancel_then_confirm_in_one_frame_charges_nothing() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let p = shop.join(1);
    open_prompt(&mut shop, p, GOLD_100);
    answer(&mut shop, p, PromptAction::Cancel);
    answer(&mut shop, p, PromptAction::Confirm);
    shop.app.settle();
    shop.app.settle();
    assert_eq!(shop.collected().finished.len(), 1);
    assert!(!shop.collected().finished[0].is_purchased);
    assert_eq!(shop.ledger.audit().receipts.len(), 0, "nothing charged");
    assert_eq!(shop.balance(p), 1000);
}

/// OK twice: the prompt closes once, and says so once.
#[test]
fn ok_twice_finishes_once() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let p = shop.join(1);
    open_prompt(&mut shop, p, GOLD_100);
    answer(&mut shop, p, PromptAction::Confirm);
    shop.app.settle();
    answer(&mut shop, p, PromptAction::Close);
    answer(&mut shop, p, PromptAction::Close);
    shop.app.settle();
    assert_eq!(
        shop.collected().finished.len(),
        1,
        "Finished fires once per prompt"
    );
}

/// A hundred "get more" answers to one prompt ask the game for a top-up once.
#[test]
fn a_flood_of_top_up_answers_asks_once() {
    let mut shop = shop_with(|p| p);
    let p = shop.join(1);
    shop.buy(p, GOLD_1000);
    shop.app.insert_resource(ConfirmPolicy::Manual);
    open_prompt(&mut shop, p, GOLD_1000);
    assert!(matches!(
        shop.world().get::<OpenPrompt>(p).unwrap().state,
        PromptState::Failed(bevy_marketplace::PurchaseError::NotEnoughFunds { .. })
    ));
    for _ in 0..100 {
        answer(&mut shop, p, PromptAction::TopUp);
    }
    shop.app.update();
    let asked = shop
        .app
        .world_mut()
        .resource_mut::<Messages<bevy_marketplace::TopUpRequested>>()
        .drain()
        .count();
    assert_eq!(asked, 1);
    shop.app.settle();
    // The first purchase's prompt, then the one that asked for more: each closed once.
    assert_eq!(shop.collected().finished.len(), 2);
}

/// Over the network: a Confirm delayed by lag must not buy another prompt than the one the player
/// pressed Buy on.
#[test]
fn a_late_confirm_does_not_buy_the_prompt_that_replaced_it() {
    let mut net = Net::new();
    net.open_prompt(0, GOLD_100);
    net.answer(0, PromptAction::Confirm);
    // The Confirm is in flight; server-side game code replaces the prompt with a dearer one.
    let player = net.players[0];
    net.server
        .world_mut()
        .entity_mut(player)
        .remove::<OpenPrompt>();
    net.server
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .prompt_product_purchase(player, GOLD_1000);
    net.idle();
    let bought: Vec<ProductId> = net
        .ledger
        .audit()
        .receipts
        .iter()
        .map(|r| r.info.product_id)
        .collect();
    assert!(
        !bought.contains(&GOLD_1000),
        "the Confirm of the 80 Pouch bought the 700 Chest"
    );
}

/// The server closes a prompt and opens the next in one frame: the client shows the next one.
#[test]
fn a_close_and_a_new_prompt_in_one_frame_leave_the_client_with_the_new_prompt() {
    let mut net = Net::new();
    net.open_prompt(0, GOLD_100);
    let player = net.players[0];
    net.answer(0, PromptAction::Cancel);
    // The client's Cancel reaches the server (sent at the end of the client's frame, taken at the
    // next exchange), which closes the prompt...
    net.step();
    net.step();
    net.server.update();
    // ...and the game prompts again before the client heard of the close: the client gets the
    // close and the new prompt in one frame.
    net.server
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .prompt_product_purchase(player, GOLD_1000);
    net.server.update();
    net.idle();
    let server = net.server_prompt(0).map(|p| p.product_id);
    let client = net.client_prompt(0).map(|p| p.product_id);
    assert_eq!(client, server, "the client shows the server's prompt");
}

/// After a reconnect the client does not show its old connection's prompt.
#[test]
fn a_reconnected_client_does_not_show_its_old_prompt() {
    let mut net = Net::new();
    net.open_prompt(0, GOLD_100);
    let mut client = net.clients.remove(0);
    net.server.disconnect_client(&mut client);
    client.update();
    assert!(
        client
            .world_mut()
            .query::<&OpenPrompt>()
            .iter(client.world())
            .next()
            .is_none(),
        "a disconnect clears the client's prompt"
    );
}

/// The purchase the ledger holds is the one the screens showed, whatever the order of answers.
#[test]
fn ok_and_a_new_buy_in_one_server_frame_both_act() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let p = shop.join(1);
    open_prompt(&mut shop, p, GOLD_100);
    answer(&mut shop, p, PromptAction::Confirm);
    shop.app.settle();
    answer(&mut shop, p, PromptAction::Close);
    shop.app.world_mut().write_message(PromptProductPurchase {
        player: p,
        product_id: GOLD_100,
    });
    shop.app.settle();
    assert!(
        shop.world().get::<OpenPrompt>(p).is_some(),
        "the new Buy opened a prompt"
    );
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
}

/// One account on two connections (a game's own login lets it): the second is told clearly it
/// cannot buy, its failures reach only it, and once the first leaves it plays on.
#[test]
fn a_second_connection_of_one_user_waits_for_the_first_and_hears_only_its_own_prompts() {
    let mut net = Net::new();
    let mut second = client_app();
    let second_player = join(&mut net.server, &mut second, 1);
    net.clients.push(second);
    net.players.push(second_player);
    net.open_prompt(0, GOLD_100);
    // The second connection asks: refused, on its own screen only.
    net.ask(2, GOLD_100);
    net.run_until("the second connection's refusal", |net| {
        net.client_prompt(2)
            .is_some_and(|p| matches!(p.state, PromptState::Failed(_)))
    });
    let PromptState::Failed(bevy_marketplace::PurchaseError::Unavailable(why)) =
        net.client_prompt(2).unwrap().state
    else {
        panic!("unavailable");
    };
    assert!(why.contains("another connection"), "{why}");
    net.answer(2, PromptAction::Close);
    net.idle();
    assert!(
        net.client_prompt(0)
            .is_some_and(|p| p.state == PromptState::AwaitingConfirmation),
        "the first connection's prompt is untouched"
    );
    assert!(net.drain::<PromptProductPurchaseFinished>(0).is_empty());
    // The first leaves: the second takes the session over and buys.
    net.leave(0);
    net.run_until("the second connection's session", |net| {
        let player = *net.players.last().unwrap();
        net.server
            .world()
            .get::<bevy_marketplace::PlayerSession>(player)
            .is_some_and(bevy_marketplace::PlayerSession::is_active)
    });
    let last = net.clients.len() - 1;
    net.open_prompt(last, GOLD_100);
    net.answer(last, PromptAction::Confirm);
    net.run_until("the purchase", |net| {
        net.ledger.audit().count(ReceiptState::Granted) == 1
    });
}
