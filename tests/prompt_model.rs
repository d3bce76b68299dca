//! A model-based test of the networked purchase prompt: random sequences of prompt requests and
//! answers from two clients — naming the open prompt, a stale one or one that never was, sent
//! twice in one frame, delayed several frames on the wire — with game code replacing prompts on
//! the server, and clients disconnecting and coming back. After every step:
//!
//! - at most one charge per prompt, and the product charged is the one that prompt showed;
//! - `PromptProductPurchaseFinished` at most once per prompt (and, once everyone is quiet and has
//!   closed their prompts, exactly once per prompt that closed);
//! - once the network is quiet, each client's prompt is the server's (id, product, state).
//!
//! `PROPTEST_CASES=100 cargo test --all-features --test prompt_model` searches longer.

mod common;
#[path = "common/net_harness.rs"]
mod net_harness;

use std::collections::{HashMap, VecDeque};

use bevy::prelude::*;
use bevy_marketplace::prelude::*;
use bevy_marketplace::{PromptAction, PromptAnswer, PromptId, PurchaseId, RequestId};
use bevy_replicon::bytes::Bytes;
use bevy_replicon::prelude::*;
use bevy_replicon::test_app::TestClientEntity;
use common::*;
use net_harness::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

#[derive(Clone, Debug)]
enum Which {
    /// The prompt the client shows.
    Shown,
    /// The newest prompt id the client saw before the shown one.
    Stale,
    /// An id no prompt has.
    Forged,
}

#[derive(Clone, Debug)]
enum Op {
    Ask {
        client: usize,
        product: ProductId,
    },
    Answer {
        client: usize,
        action: PromptAction,
        which: Which,
        twice: bool,
    },
    /// Client `client`'s messages take `frames` frames to reach the server from now on.
    Lag {
        client: usize,
        frames: u8,
    },
    /// Server-side game code replaces the client's prompt with another product's.
    Replace {
        client: usize,
        product: ProductId,
    },
    /// The client disconnects and comes back on a new connection.
    Reconnect {
        client: usize,
    },
    Frames {
        n: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let client = 0usize..2;
    let product = prop_oneof![Just(GOLD_100), Just(GOLD_1000), Just(FULL_HEAL)];
    let action = prop_oneof![
        3 => Just(PromptAction::Confirm),
        1 => Just(PromptAction::Cancel),
        2 => Just(PromptAction::Close),
        1 => Just(PromptAction::TopUp),
    ];
    let which = prop_oneof![
        4 => Just(Which::Shown),
        1 => Just(Which::Stale),
        1 => Just(Which::Forged),
    ];
    prop_oneof![
        3 => (client.clone(), product.clone()).prop_map(|(client, product)| Op::Ask { client, product }),
        5 => (client.clone(), action, which, proptest::bool::weighted(0.2))
            .prop_map(|(client, action, which, twice)| Op::Answer { client, action, which, twice }),
        1 => (client.clone(), 0u8..4).prop_map(|(client, frames)| Op::Lag { client, frames }),
        1 => (client.clone(), product).prop_map(|(client, product)| Op::Replace { client, product }),
        1 => client.clone().prop_map(|client| Op::Reconnect { client }),
        3 => (1u8..6).prop_map(|n| Op::Frames { n }),
    ]
}

/// Finished messages on the server, by prompt.
#[derive(Resource, Default)]
struct Finished(HashMap<PromptId, u32>);

fn count_finished(
    mut finished: MessageReader<PromptProductPurchaseFinished>,
    mut seen: ResMut<Finished>,
) {
    for f in finished.read() {
        *seen.0.entry(f.prompt).or_default() += 1;
    }
}

/// The model's memory: every prompt the server showed, what it sold, and the wire's delays.
struct World {
    net: Net,
    /// Per prompt: the product and its charge's request id, as the server had it.
    prompts: HashMap<PromptId, (ProductId, RequestId)>,
    /// Per client: the prompt ids it showed, oldest first.
    shown: [Vec<PromptId>; 2],
    lag: [u8; 2],
    /// Messages on their way to the server, per client: (frames left, channel, bytes).
    wire: [VecDeque<(u8, usize, Bytes)>; 2],
}

impl World {
    /// One frame everywhere, each client's messages reaching the server after its lag.
    fn step(&mut self) {
        let net = &mut self.net;
        net.server.update();
        for (i, client) in net.clients.iter_mut().enumerate() {
            let connection = **client.world().resource::<TestClientEntity>();
            let mut client_messages = client.world_mut().resource_mut::<ClientMessages>();
            for (channel, message) in client_messages.drain_sent() {
                self.wire[i].push_back((self.lag[i], channel, message));
            }
            let mut server_messages = net.server.world_mut().resource_mut::<ServerMessages>();
            // In order: a message waits behind the ones sent before it.
            while self.wire[i].front().is_some_and(|(left, _, _)| *left == 0) {
                let (_, channel, message) = self.wire[i].pop_front().unwrap();
                server_messages.insert_received(connection, channel, message);
            }
            for (left, _, _) in self.wire[i].iter_mut() {
                *left = left.saturating_sub(1);
            }
            server_messages.retain_sent(|(to, channel, message)| {
                if *to != connection {
                    return true;
                }
                client_messages.insert_received(*channel, message.clone());
                false
            });
            client.update();
        }
        self.observe();
    }

    /// Records what the server and clients show now.
    fn observe(&mut self) {
        for i in 0..2 {
            if let Some(p) = self.net.server_prompt(i) {
                self.prompts
                    .entry(p.id)
                    .or_insert((p.product_id, p.charge_request_id()));
            }
            if let Some(p) = self.net.client_prompt(i)
                && self.shown[i].last() != Some(&p.id)
            {
                self.shown[i].push(p.id);
            }
        }
    }

    fn quiet(&mut self) {
        self.lag = [0, 0];
        for _ in 0..40 {
            self.step();
        }
    }

    /// The invariants that hold after every step.
    fn check(&self) -> Result<(), String> {
        let audit = self.net.ledger.audit();
        let by_purchase: HashMap<PurchaseId, (PromptId, ProductId)> = self
            .prompts
            .iter()
            .map(|(id, (product, request))| (PurchaseId::of_request(*request), (*id, *product)))
            .collect();
        for receipt in &audit.receipts {
            let Some((prompt, shown)) = by_purchase.get(&receipt.info.purchase_id) else {
                return Err(format!("receipt {} of no prompt", receipt.info.purchase_id));
            };
            if receipt.info.product_id != *shown {
                return Err(format!(
                    "{prompt} showed product {shown} but charged {}",
                    receipt.info.product_id
                ));
            }
        }
        // One receipt per purchase id, so one charge per prompt, by construction of the ledger;
        // check the prompts' Finished.
        let finished = &self.net.server.world().resource::<Finished>().0;
        if let Some((prompt, n)) = finished.iter().find(|(_, n)| **n > 1) {
            return Err(format!("{prompt} finished {n} times"));
        }
        Ok(())
    }

    /// Once quiet, every client shows the server's prompt.
    fn same_prompts(&mut self) -> Result<(), String> {
        for i in 0..2 {
            let server = self
                .net
                .server_prompt(i)
                .map(|p| (p.id, p.product_id, p.state));
            let client = self
                .net
                .client_prompt(i)
                .map(|p| (p.id, p.product_id, p.state));
            if server != client {
                return Err(format!(
                    "client {i} shows {client:?}, the server has {server:?}"
                ));
            }
        }
        Ok(())
    }
}

fn run(ops: &[Op]) -> Result<(), String> {
    let mut net = Net::new();
    net.server
        .init_resource::<Finished>()
        .add_systems(Last, count_finished);
    let mut world = World {
        net,
        prompts: HashMap::new(),
        shown: [Vec::new(), Vec::new()],
        lag: [0, 0],
        wire: [VecDeque::new(), VecDeque::new()],
    };
    for op in ops {
        match op {
            Op::Ask { client, product } => world.net.ask(*client, *product),
            Op::Answer {
                client,
                action,
                which,
                twice,
            } => {
                let shown = &world.shown[*client];
                let prompt = match which {
                    Which::Shown => world.net.client_prompt(*client).map(|p| p.id),
                    Which::Stale => shown.iter().rev().nth(1).copied(),
                    Which::Forged => Some(PromptId(9_999)),
                };
                if let Some(prompt) = prompt {
                    let player = world.net.buyer(*client);
                    for _ in 0..if *twice { 2 } else { 1 } {
                        world
                            .net
                            .client(*client)
                            .world_mut()
                            .write_message(PromptAnswer {
                                player,
                                prompt,
                                action: *action,
                            });
                    }
                }
            }
            Op::Lag { client, frames } => world.lag[*client] = *frames,
            Op::Replace { client, product } => {
                let player = world.net.players[*client];
                if world.net.server.world().get::<OpenPrompt>(player).is_some() {
                    world
                        .net
                        .server
                        .world_mut()
                        .entity_mut(player)
                        .remove::<OpenPrompt>();
                }
                world
                    .net
                    .server
                    .world_mut()
                    .resource_mut::<MarketplaceService>()
                    .prompt_product_purchase(player, *product);
            }
            Op::Reconnect { client } => {
                world.wire[*client].clear();
                world.net.leave(*client);
                world.net.rejoin(*client);
                world.net.run_until("the rejoined session", |net| {
                    net.server
                        .world()
                        .get::<bevy_marketplace::PlayerSession>(net.players[*client])
                        .is_some_and(bevy_marketplace::PlayerSession::is_active)
                });
                world.shown[*client].clear();
            }
            Op::Frames { n } => {
                for _ in 0..*n {
                    world.step();
                }
            }
        }
        world.step();
        world.check()?;
    }
    world.quiet();
    world.check()?;
    world.same_prompts()?;
    // Everyone closes what is open; then every prompt that closed finished exactly once.
    for i in 0..2 {
        for _ in 0..3 {
            if let Some(p) = world.net.client_prompt(i) {
                let action = match p.state {
                    bevy_marketplace::PromptState::AwaitingConfirmation => PromptAction::Cancel,
                    _ => PromptAction::Close,
                };
                world.net.answer(i, action);
            }
            world.quiet();
        }
    }
    world.check()?;
    world.same_prompts()?;
    let finished = &world.net.server.world().resource::<Finished>().0;
    let open: Vec<PromptId> = (0..2)
        .filter_map(|i| world.net.server_prompt(i).map(|p| p.id))
        .collect();
    for prompt in world.prompts.keys() {
        let n = finished.get(prompt).copied().unwrap_or(0);
        if n != 1 && !open.contains(prompt) {
            return Err(format!("{prompt} closed and finished {n} times"));
        }
    }
    Ok(())
}

#[test]
fn every_prompt_takes_one_answer_and_clients_show_the_servers_prompt() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(16);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&proptest::collection::vec(op(), 1..30), |ops| {
        run(&ops).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
