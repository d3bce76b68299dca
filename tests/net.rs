//! Networked purchases with bevy_replicon's in-process test connection: one server app (the
//! ledger, the handlers, the catalog) and two client apps (no ledger), exchanging the same bytes
//! a transport would carry.

mod common;
#[path = "common/net_harness.rs"]
mod net_harness;

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_marketplace::net::{
    BuyerClient, DistrustedClient, MAX_CLIENT_MESSAGE_BYTES, NetBalance, NetPromptFinished,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::{
    PlayerSession, PromptAction, PromptRefusal, PromptRefused, PromptState, PurchaseError,
    ReceiptState, Sessions,
};
use bevy_replicon::bytes::Bytes;
use bevy_replicon::prelude::*;
use bevy_replicon::test_app::{ServerTestAppExt, TestClientEntity};
use common::*;

use net_harness::*;

#[test]
fn a_client_prompts_confirms_and_sees_its_purchase_granted_on_the_server() {
    let mut net = Net::new();
    let (up, down) = (net.bytes_up, net.bytes_down);
    net.open_prompt(0, GOLD_100);
    let prompt = net.client_prompt(0).unwrap();
    assert_eq!((prompt.price, prompt.balance_before), (80, 1000));
    assert_eq!(prompt.product.unwrap().name, "Pouch of Gold");
    assert!(
        net.server_prompt(0)
            .is_some_and(|p| p.state == PromptState::AwaitingConfirmation),
        "the server waits for the client's answer (no auto-confirm)"
    );

    net.answer(0, PromptAction::Confirm);
    let mut resolved = Vec::new();
    net.run_until("the grant to be committed and reported", |net| {
        resolved.extend(net.drain::<ReceiptResolved>(0));
        !resolved.is_empty()
    });
    assert_eq!(resolved[0].receipt.product_id, GOLD_100);
    assert_eq!(resolved[0].receipt.currency_spent, 80);
    let player = net.players[0];
    assert_eq!(net.server.world().get::<Gold>(player).unwrap().0, 100);
    net.run_until("the balance on the client", |net| {
        net.client_balance(0) == 920
    });
    assert!(matches!(
        net.client_prompt(0).unwrap().state,
        PromptState::Purchased(_)
    ));

    net.answer(0, PromptAction::Close);
    let mut finished = Vec::new();
    net.run_until("the prompt to close", |net| {
        finished.extend(net.drain::<PromptProductPurchaseFinished>(0));
        !finished.is_empty()
    });
    assert!(finished[0].is_purchased);
    assert!(net.client_prompt(0).is_none());
    assert_eq!(net.ledger.audit().count(ReceiptState::Granted), 1);
    eprintln!(
        "net: one purchase (prompt, confirm, grant, close) carried {} payload bytes client to server and {} server to client (both clients' traffic, replicon's ticks included)",
        net.bytes_up - up,
        net.bytes_down - down
    );

    // The other client learnt nothing of it.
    assert!(net.client_prompt(1).is_none());
    assert!(net.drain::<ReceiptResolved>(1).is_empty());
    assert!(net.drain::<PromptProductPurchaseFinished>(1).is_empty());
    assert_eq!(net.client_balance(1), 1000);
}

/// A purchase the server's handler rejects: the client hears the rejection with its reason, its
/// prompt says "Refunded", its balance is back, and the other client hears nothing.
#[test]
fn a_client_hears_its_purchase_rejected_and_refunded() {
    let mut net = Net::new();
    net.server.insert_resource(HandlerMode::Reject);
    net.open_prompt(0, GOLD_100);
    net.answer(0, PromptAction::Confirm);
    let mut rejected = Vec::new();
    net.run_until("the rejection to be committed and reported", |net| {
        rejected.extend(net.drain::<ReceiptRejected>(0));
        !rejected.is_empty()
    });
    assert_eq!(rejected[0].receipt.product_id, GOLD_100);
    assert_eq!(rejected[0].reason, "sold out");
    net.run_until("the refunded prompt and balance on the client", |net| {
        net.client_balance(0) == 1000
            && net.client_prompt(0).is_some_and(|p| {
                p.state
                    == PromptState::Failed(PurchaseError::Refunded {
                        reason: "sold out".into(),
                    })
            })
    });
    let player = net.players[0];
    assert_eq!(net.server.world().get::<Gold>(player).unwrap().0, 0);
    assert_eq!(net.ledger.audit().count(ReceiptState::Rejected), 1);
    assert!(net.drain::<ReceiptRejected>(1).is_empty());
    assert!(net.drain::<ReceiptResolved>(0).is_empty());
}

#[test]
fn the_catalog_reaches_clients_on_connect_and_after_a_reload() {
    let mut net = Net::new();
    let server_catalog: Vec<(ProductId, u64)> = net
        .server
        .world()
        .resource::<MarketplaceService>()
        .catalog()
        .products()
        .iter()
        .map(|p| (p.product_id, p.price))
        .collect();
    for i in 0..2 {
        let client: Vec<(ProductId, u64)> = net
            .client(i)
            .world()
            .resource::<MarketplaceService>()
            .catalog()
            .products()
            .iter()
            .map(|p| (p.product_id, p.price))
            .collect();
        assert_eq!(client, server_catalog);
        let currency = net
            .client(i)
            .world()
            .resource::<MarketplaceService>()
            .currency()
            .clone();
        assert_eq!(
            &currency,
            net.server
                .world()
                .resource::<MarketplaceService>()
                .currency()
        );
    }

    let text = include_str!("../assets/products.ron").replace("price: 80", "price: 95");
    let repriced = Catalog::from_ron_str(&text, "products.ron").unwrap();
    net.server
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .set_catalog(&repriced);
    net.run_until("the new price on both clients", |net| {
        (0..2).all(|i| {
            net.client(i)
                .world()
                .resource::<MarketplaceService>()
                .get_product_info(GOLD_100)
                .is_ok_and(|p| p.price == 95)
        })
    });
}

#[test]
fn a_client_can_only_prompt_for_and_answer_its_own_player() {
    let mut net = Net::new();
    net.ask(0, GOLD_1000);
    net.run_until("player 1's prompt", |net| net.server_prompt(0).is_some());

    // Client 2 names client 1's player entity (as the server knows it): messages carry no
    // player, so the prompt is for client 2's own.
    let victim = net.players[0];
    net.client(1)
        .world_mut()
        .write_message(PromptProductPurchase {
            player: victim,
            product_id: FULL_HEAL,
        });
    net.run_until("player 2's own prompt", |net| {
        net.server_prompt(1).is_some()
    });
    assert_eq!(net.server_prompt(1).unwrap().product_id, FULL_HEAL);
    assert_eq!(net.server_prompt(0).unwrap().product_id, GOLD_1000);

    // Client 2 confirms and cancels: only its own prompt moves.
    net.answer(1, PromptAction::Cancel);
    net.run_until("player 2's prompt to close", |net| {
        net.server_prompt(1).is_none()
    });
    net.answer(1, PromptAction::Confirm);
    net.idle();
    assert_eq!(
        net.server_prompt(0).unwrap().state,
        PromptState::AwaitingConfirmation,
        "player 1's prompt is untouched"
    );
    assert!(net.ledger.audit().receipts.is_empty(), "nobody was charged");
}

#[test]
fn a_client_cannot_pick_the_price_or_buy_what_is_not_for_sale() {
    let mut net = Net::new();
    // The client's own copy of the catalog says Gold costs 1: the server charges its own 80.
    let text = include_str!("../assets/products.ron").replace("price: 80", "price: 1");
    let cheap = Catalog::from_ron_str(&text, "products.ron").unwrap();
    net.client(0)
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .set_catalog(&cheap);
    net.ask(0, GOLD_100);
    net.run_until("the prompt", |net| net.client_prompt(0).is_some());
    assert_eq!(net.client_prompt(0).unwrap().price, 80);
    net.answer(0, PromptAction::Confirm);
    net.run_until("the charge", |net| net.ledger.audit().receipts.len() == 1);
    assert_eq!(net.ledger.audit().receipts[0].info.currency_spent, 80);
    net.answer(0, PromptAction::Close);
    net.run_until("the prompt to close", |net| net.client_prompt(0).is_none());

    net.ask(0, DRAGON_EGG);
    net.run_until("the refusal", |net| {
        net.client_prompt(0)
            .is_some_and(|p| p.state == PromptState::Failed(PurchaseError::NotForSale))
    });
    assert_eq!(net.ledger.audit().receipts.len(), 1);
}

#[test]
fn prompts_are_rate_limited_per_client() {
    let mut net = Net::new();
    for _ in 0..8 {
        net.ask(0, GOLD_100);
    }
    let mut refusals = Vec::new();
    net.run_until("the refusals", |net| {
        refusals.extend(net.drain::<PromptRefused>(0));
        refusals.len() >= 7
    });
    net.idle();
    refusals.extend(net.drain::<PromptRefused>(0));
    let too_many = refusals
        .iter()
        .filter(|r| r.reason == PromptRefusal::TooManyRequests)
        .count();
    let open = refusals
        .iter()
        .filter(|r| matches!(r.reason, PromptRefusal::AlreadyOpen(_)))
        .count();
    assert_eq!(
        (too_many, open),
        (3, 4),
        "a burst of 5 passes (one opens the prompt, four are told it is open), 3 are refused: {refusals:?}"
    );
    // The other client is not limited by this one.
    net.ask(1, GOLD_100);
    net.run_until("client 2's prompt", |net| net.client_prompt(1).is_some());
}

#[test]
fn a_client_that_disconnects_with_an_open_prompt_is_not_charged() {
    let mut net = Net::new();
    net.ask(0, GOLD_100);
    net.run_until("the prompt", |net| net.server_prompt(0).is_some());
    let mut client = net.clients.remove(0);
    net.server.disconnect_client(&mut client);
    net.run_until("the prompt to be cancelled", |net| {
        net.server_prompt(0).is_none()
    });
    assert!(net.ledger.audit().receipts.is_empty());
    let player = net.players[0];
    assert_eq!(
        net.server.world().get::<PremiumBalance>(player).unwrap().0,
        1000
    );
}

#[test]
fn a_client_that_disconnects_after_the_charge_gets_the_grant_when_it_comes_back() {
    let mut net = Net::new();
    net.server.insert_resource(HandlerMode::Decline);
    net.ask(0, GOLD_100);
    net.run_until("the prompt", |net| net.client_prompt(0).is_some());
    net.answer(0, PromptAction::Confirm);
    net.run_until("the charge", |net| net.ledger.audit().receipts.len() == 1);
    // Gone before the handler granted: the game despawns the player when their client leaves.
    net.leave(0);
    assert_eq!(net.ledger.audit().count(ReceiptState::Pending), 1);

    // Back, on a new connection, with the handler working: granted, and told to this client.
    net.server.insert_resource(HandlerMode::Work);
    let player = net.rejoin(0);
    let mut resolved = Vec::new();
    net.run_until("the grant on return", |net| {
        resolved.extend(net.drain::<ReceiptResolved>(0));
        !resolved.is_empty()
    });
    assert_eq!(resolved[0].receipt.product_id, GOLD_100);
    assert_eq!(net.server.world().get::<Gold>(player).unwrap().0, 100);
    assert_eq!(net.ledger.audit().count(ReceiptState::Granted), 1);
    assert!(net.drain::<ReceiptResolved>(1).is_empty());
}

#[test]
fn a_malformed_or_oversized_message_is_dropped_and_its_client_no_longer_trusted() {
    type Tamper = fn(Bytes) -> Bytes;
    let cases: [(&str, Tamper); 3] = [
        ("more than the 64", |message| {
            let mut bytes = message.to_vec();
            bytes.resize(MAX_CLIENT_MESSAGE_BYTES + 1, 0);
            bytes.into()
        }),
        ("do not decode", |_| Bytes::from_static(&[0xff, 0xff, 0xff])),
        ("after the message", |message| {
            let mut bytes = message.to_vec();
            bytes.push(7);
            bytes.into()
        }),
    ];
    for (problem, tamper) in cases {
        let mut net = Net::new();
        let connection = **net.clients[0].world().resource::<TestClientEntity>();
        net.ask(0, GOLD_100);
        for _ in 0..3 {
            net.step_tampering(|i, message| if i == 0 { tamper(message) } else { message });
        }
        net.idle();
        assert!(
            net.server_prompt(0).is_none(),
            "{problem}: no prompt opened"
        );
        let distrusted = net.server.world().get::<DistrustedClient>(connection);
        assert!(
            distrusted.is_some_and(|d| d.reason.contains(problem)),
            "{problem}: the client is distrusted, saying why: {distrusted:?}"
        );
        assert_eq!(net.disconnects, [connection], "{problem}: disconnected");

        // Until the transport drops it, even its well-formed requests are ignored.
        net.ask(0, GOLD_100);
        net.idle();
        assert!(net.server_prompt(0).is_none(), "{problem}: still no prompt");
        // The other client is unaffected.
        net.ask(1, GOLD_100);
        net.run_until("client 2's prompt", |net| net.client_prompt(1).is_some());
        assert!(net.ledger.audit().receipts.is_empty());
    }
}

#[test]
fn a_listen_server_hosts_its_own_player_beside_remote_clients() {
    let mut net = Net::new();
    // The host's own player lives on the server and is owned by no client.
    let host = net
        .server
        .world_mut()
        .spawn((
            Buyer::new(UserId(9)),
            Health {
                current: 10,
                max: 100,
            },
            Gold(0),
        ))
        .id();
    net.run_until("the host's player to load", |net| {
        net.server
            .world()
            .get::<PlayerSession>(host)
            .is_some_and(PlayerSession::is_active)
    });
    net.server
        .world_mut()
        .resource_mut::<MarketplaceService>()
        .prompt_product_purchase(host, GOLD_100);
    net.ask(0, GOLD_100);
    let awaiting =
        |p: Option<&OpenPrompt>| p.is_some_and(|p| p.state == PromptState::AwaitingConfirmation);
    net.run_until("both prompts", |net| {
        awaiting(net.server.world().get::<OpenPrompt>(host))
            && awaiting(net.client_prompt(0).as_ref())
    });
    // The host answers its prompt on the server (what its own egui prompt sends).
    net.server
        .world_mut()
        .answer_prompt(host, PromptAction::Confirm);
    net.answer(0, PromptAction::Confirm);
    let mut heard = [Vec::new(), Vec::new()];
    net.run_until("both grants", |net| {
        for (i, heard) in heard.iter_mut().enumerate() {
            heard.extend(net.drain::<ReceiptResolved>(i));
        }
        net.ledger.audit().count(ReceiptState::Granted) == 2 && !heard[0].is_empty()
    });
    net.idle();
    for (i, heard) in heard.iter_mut().enumerate() {
        heard.extend(net.drain::<ReceiptResolved>(i));
    }
    assert_eq!(net.server.world().get::<Gold>(host).unwrap().0, 100);
    assert_eq!(
        net.server.world().get::<Gold>(net.players[0]).unwrap().0,
        100
    );
    // Client 1 hears of its own grant only; client 2 of nothing.
    assert_eq!(heard[0].len(), 1);
    assert_eq!(heard[0][0].receipt.player_id, UserId(1));
    assert!(heard[1].is_empty());
}

#[test]
fn a_client_that_disconnects_at_any_moment_of_a_purchase_pays_at_most_once_and_gets_it() {
    // Cut the connection 0, 1, 2, … frames after the player pressed Buy: before the answer left,
    // while the server charges, after the charge, while the grant commits.
    for cut in 0..12 {
        let mut net = Net::new();
        net.open_prompt(0, GOLD_100);
        net.answer(0, PromptAction::Confirm);
        for _ in 0..cut {
            net.step();
            std::thread::sleep(Duration::from_micros(300));
        }
        net.leave(0);
        let audit = net.ledger.audit();
        let paid = audit.receipts.len();
        assert!(paid <= 1, "cut after {cut} frames: charged {paid} times");
        assert_eq!(
            audit.accounts[&UserId(1)].0,
            1000 - audit.receipt_total(),
            "cut after {cut} frames: the balance pays exactly for the receipts"
        );

        // Back on a new connection: whatever was paid for is granted, once.
        let player = net.rejoin(0);
        let gold = |net: &Net| net.server.world().get::<Gold>(player).map(|g| g.0);
        net.run_until("the grant on return", |net| {
            net.server
                .world()
                .get::<PlayerSession>(player)
                .is_some_and(PlayerSession::is_active)
                && net.ledger.audit().count(ReceiptState::Granted) == paid
                && gold(net) == Some(100 * paid as u64)
        });
        net.idle();
        assert_eq!(
            gold(&net),
            Some(100 * paid as u64),
            "cut after {cut} frames"
        );
        assert_eq!(net.ledger.audit().count(ReceiptState::Granted), paid);
    }
}

#[test]
fn a_client_that_sends_the_servers_own_messages_gets_nothing() {
    let mut net = Net::new();
    let encode = |message: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = Vec::new();
        message(&mut bytes);
        Bytes::from(bytes)
    };
    use bevy_replicon::postcard_utils::to_extend_mut;
    // What the server says when a purchase went through, and a rich balance.
    let forged = [
        encode(&|b| {
            to_extend_mut(
                &NetPromptFinished {
                    prompt: bevy_marketplace::PromptId(1),
                    product_id: GOLD_100,
                    is_purchased: true,
                },
                b,
            )
            .unwrap()
        }),
        encode(&|b| to_extend_mut(&NetBalance { balance: 1_000_000 }, b).unwrap()),
    ];
    let connection = **net.clients[0].world().resource::<TestClientEntity>();
    let channels = net
        .server
        .world()
        .resource::<RepliconChannels>()
        .client_channels()
        .len();
    // On every channel a client can send on.
    for channel in 0..channels {
        for bytes in &forged {
            net.server
                .world_mut()
                .resource_mut::<ServerMessages>()
                .insert_received(connection, channel, bytes.clone());
        }
    }
    net.idle();
    assert!(net.ledger.audit().receipts.is_empty(), "nothing charged");
    assert_eq!(net.ledger.audit().count(ReceiptState::Granted), 0);
    let player = net.players[0];
    assert_eq!(net.server.world().get::<Gold>(player).unwrap().0, 0);
    assert_eq!(
        net.server.world().get::<PremiumBalance>(player).unwrap().0,
        1000
    );
    assert_eq!(net.client_balance(0), 1000);
}

#[test]
fn a_client_prompts_for_the_player_it_owns_now() {
    let mut net = Net::new();
    let connection = **net.clients[0].world().resource::<TestClientEntity>();
    // The game despawns the client's player (the client stays connected): it owns none.
    let old = net.players[0];
    net.server.world_mut().despawn(old);
    net.run_until("the final save", |net| {
        net.server.world().resource::<Sessions>().departing() == 0
    });
    net.ask(0, GOLD_100);
    net.idle();
    assert!(net.client_prompt(0).is_none(), "a client with no player");
    // A new player, owned by the same client: its prompts are now that player's.
    let new = net
        .server
        .world_mut()
        .spawn((
            Buyer::new(UserId(1)),
            Health {
                current: 10,
                max: 100,
            },
            Gold(0),
            BuyerClient(connection),
        ))
        .id();
    net.players[0] = new;
    net.run_until("the new player to load", |net| {
        net.server
            .world()
            .get::<PlayerSession>(new)
            .is_some_and(PlayerSession::is_active)
    });
    net.ask(0, GOLD_100);
    net.run_until("the prompt on the new player", |net| {
        net.server_prompt(0).is_some() && net.client_prompt(0).is_some()
    });
}

/// A double click on Buy: the second Confirm leaves the client before the server's answer to the
/// first has come back. It must not reach the server after the purchase, as the "OK" that closes
/// "Purchase successful" before the player saw it.
#[test]
fn a_double_click_on_buy_buys_once_and_leaves_purchase_successful_open() {
    let mut net = Net::new();
    net.open_prompt(0, GOLD_100);
    net.answer(0, PromptAction::Confirm);
    net.step(); // the first click leaves the client…
    net.step(); // …and reaches the server, which has not answered yet
    net.answer(0, PromptAction::Confirm);
    net.client(0).update(); // the second click, with no answer yet from the server
    // The server charges and grants while the second click is on its way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !net
        .server_prompt(0)
        .is_some_and(|p| matches!(p.state, PromptState::Purchased(_)))
    {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the charge"
        );
        net.server.update();
        std::thread::sleep(Duration::from_micros(300));
    }
    net.idle();
    assert!(
        matches!(
            net.client_prompt(0).map(|p| p.state),
            Some(PromptState::Purchased(_))
        ),
        "\"Purchase successful\" stays until the player closes it"
    );
    assert!(net.drain::<PromptProductPurchaseFinished>(0).is_empty());
    assert_eq!(net.ledger.audit().receipts.len(), 1, "bought once");

    // Another click on Buy is refused, not taken as the OK; the OK closes it.
    net.answer(0, PromptAction::Confirm);
    let mut refused = Vec::new();
    net.run_until("the refusal", |net| {
        refused.extend(net.drain::<PromptRefused>(0));
        !refused.is_empty()
    });
    assert!(matches!(refused[0].reason, PromptRefusal::NotNow { .. }));
    assert!(net.client_prompt(0).is_some(), "still showing the purchase");
    net.answer(0, PromptAction::Close);
    let mut finished = Vec::new();
    net.run_until("the prompt to close", |net| {
        finished.extend(net.drain::<PromptProductPurchaseFinished>(0));
        !finished.is_empty()
    });
    assert!(finished[0].is_purchased);
}
