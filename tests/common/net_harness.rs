//! The in-process network of the net tests: one server app (the ledger, the handlers, the
//! catalog) and clients (no ledger) exchanging the same bytes a transport would carry, through
//! bevy_replicon's test connection.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy::state::app::StatesPlugin;
use bevy_marketplace::ledger::{InMemoryLedger, LedgerBackend};
use bevy_marketplace::net::{
    BuyerClient, LocalBuyer, MarketplaceClientPlugin, MarketplaceServerPlugin,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::{PlayerSession, PromptAction, PromptState, Sessions};
use bevy_replicon::bytes::Bytes;
use bevy_replicon::prelude::*;
use bevy_replicon::test_app::{ServerTestAppExt, TestClientEntity};

use super::*;

/// A server with two connected clients. Client `i` owns the player of user `i + 1`.
pub struct Net {
    pub server: App,
    pub clients: Vec<App>,
    pub ledger: InMemoryLedger,
    pub players: Vec<Entity>,
    /// Payload bytes carried so far: client to server, server to client.
    pub bytes_up: usize,
    pub bytes_down: usize,
    /// Connections the server asked the transport to drop.
    pub disconnects: Vec<Entity>,
}

pub fn server_app(ledger: &InMemoryLedger) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        StatesPlugin,
        RepliconPlugins.set(ServerPlugin::new(PostUpdate)),
        plugin(LedgerBackend::InMemory(ledger.clone())),
        MarketplaceServerPlugin,
    ))
    .init_resource::<HandlerMode>()
    .persist_component::<Gold>();
    add_sample_handlers(&mut app, HandlerLog::default());
    app.finish();
    app
}

pub fn client_app() -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        StatesPlugin,
        RepliconPlugins.set(ServerPlugin::new(PostUpdate)),
        MarketplaceClientPlugin,
    ));
    app.world_mut().spawn(LocalBuyer);
    app.finish();
    app
}

/// Connects `client` and spawns the player of `user` on the server, owned by it.
pub fn join(server: &mut App, client: &mut App, user: i64) -> Entity {
    server.connect_client(client);
    let connection = **client.world().resource::<TestClientEntity>();
    // The one line a game writes: this client owns this player.
    server
        .world_mut()
        .spawn((
            Buyer::new(UserId(user)),
            Health {
                current: 10,
                max: 100,
            },
            Gold(0),
            BuyerClient(connection),
        ))
        .id()
}

impl Net {
    pub fn new() -> Self {
        let ledger = InMemoryLedger::default();
        let mut server = server_app(&ledger);
        let mut clients = vec![client_app(), client_app()];
        let mut players = Vec::new();
        for (i, client) in clients.iter_mut().enumerate() {
            players.push(join(&mut server, client, i as i64 + 1));
        }
        let mut net = Self {
            server,
            clients,
            ledger,
            players,
            bytes_up: 0,
            bytes_down: 0,
            disconnects: Vec::new(),
        };
        net.run_until("both players to load and both catalogs to arrive", |net| {
            net.players.iter().all(|&p| {
                net.server
                    .world()
                    .get::<PlayerSession>(p)
                    .is_some_and(PlayerSession::is_active)
            }) && net.clients.iter().all(|c| {
                !c.world()
                    .resource::<MarketplaceService>()
                    .catalog()
                    .is_empty()
            })
        });
        net
    }

    /// One frame everywhere, with the bytes exchanged both ways (as replicon's test exchange
    /// does, counting them).
    pub fn step(&mut self) {
        self.step_tampering(|_, message| message);
    }

    /// One frame, with each client's outgoing bytes passed through `tamper(client, bytes)`: what
    /// a hacked client can put on the wire.
    pub fn step_tampering(&mut self, mut tamper: impl FnMut(usize, Bytes) -> Bytes) {
        self.server.update();
        self.disconnects.extend(
            self.server
                .world_mut()
                .resource_mut::<Messages<DisconnectRequest>>()
                .drain()
                .map(|request| request.client),
        );
        for (i, client) in self.clients.iter_mut().enumerate() {
            let connection = **client.world().resource::<TestClientEntity>();
            let mut client_messages = client.world_mut().resource_mut::<ClientMessages>();
            let mut server_messages = self.server.world_mut().resource_mut::<ServerMessages>();
            for (channel, message) in client_messages.drain_sent() {
                let message = tamper(i, message);
                self.bytes_up += message.len();
                server_messages.insert_received(connection, channel, message);
            }
            let bytes_down = &mut self.bytes_down;
            server_messages.retain_sent(|(to, channel, message)| {
                if *to != connection {
                    return true;
                }
                *bytes_down += message.len();
                client_messages.insert_received(*channel, message.clone());
                false
            });
            client.update();
        }
    }

    pub fn run_until(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            self.step();
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    /// A few frames, for what should not happen.
    pub fn idle(&mut self) {
        for _ in 0..30 {
            self.step();
            std::thread::sleep(Duration::from_micros(300));
        }
    }

    /// Client `i` disconnects and the game despawns its player, as for anyone leaving; returns
    /// once the player's final save is done.
    pub fn leave(&mut self, i: usize) {
        let mut client = self.clients.remove(i);
        self.server.disconnect_client(&mut client);
        let player = self.players.remove(i);
        self.server.world_mut().despawn(player);
        self.run_until("the final save", |net| {
            net.server.world().resource::<Sessions>().departing() == 0
        });
    }

    /// Client `i` (user `i + 1`) comes back on a new connection; returns its new player.
    pub fn rejoin(&mut self, i: usize) -> Entity {
        let mut back = client_app();
        let player = join(&mut self.server, &mut back, i as i64 + 1);
        self.clients.insert(i, back);
        self.players.insert(i, player);
        player
    }

    pub fn client(&mut self, i: usize) -> &mut App {
        &mut self.clients[i]
    }

    pub fn buyer(&mut self, i: usize) -> Entity {
        self.clients[i]
            .world_mut()
            .query_filtered::<Entity, With<LocalBuyer>>()
            .single(self.clients[i].world())
            .unwrap()
    }

    pub fn client_prompt(&mut self, i: usize) -> Option<OpenPrompt> {
        let buyer = self.buyer(i);
        self.clients[i].world().get::<OpenPrompt>(buyer).cloned()
    }

    pub fn client_balance(&mut self, i: usize) -> u64 {
        let buyer = self.buyer(i);
        self.clients[i]
            .world()
            .get::<PremiumBalance>(buyer)
            .unwrap()
            .0
    }

    pub fn server_prompt(&self, i: usize) -> Option<OpenPrompt> {
        self.server
            .world()
            .get::<OpenPrompt>(self.players[i])
            .cloned()
    }

    /// The client asks for a prompt the way a game does: through its `MarketplaceService`.
    pub fn ask(&mut self, i: usize, product: ProductId) {
        let buyer = self.buyer(i);
        self.client(i)
            .world_mut()
            .resource_mut::<MarketplaceService>()
            .prompt_product_purchase(buyer, product);
    }

    /// The client asks for a prompt and waits until it shows, awaiting the player's answer.
    pub fn open_prompt(&mut self, i: usize, product: ProductId) {
        self.ask(i, product);
        self.run_until("the prompt on the client", |net| {
            net.client_prompt(i)
                .is_some_and(|p| p.state == PromptState::AwaitingConfirmation)
        });
    }

    pub fn answer(&mut self, i: usize, action: PromptAction) {
        let player = self.buyer(i);
        self.client(i).world_mut().answer_prompt(player, action);
    }

    pub fn drain<M: Message>(&mut self, i: usize) -> Vec<M> {
        self.client(i)
            .world_mut()
            .resource_mut::<Messages<M>>()
            .drain()
            .collect()
    }
}
