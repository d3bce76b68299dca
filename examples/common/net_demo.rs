//! What both networked examples share: the UDP transport (renet with netcode, on loopback),
//! players leaving with their clients, and the server's log of grants.
//!
//! The demo trusts the user id a client connects with (netcode's unsecure mode); a real game
//! authenticates its players before it says which client owns which player.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bevy::prelude::*;
use bevy_marketplace::net::BuyerClient;
use bevy_marketplace::prelude::*;
use bevy_replicon::prelude::*;
use bevy_replicon_renet::netcode::{
    ClientAuthentication, NetcodeClientTransport, NetcodeServerTransport, ServerAuthentication,
    ServerConfig,
};
use bevy_replicon_renet::renet::ConnectionConfig;
use bevy_replicon_renet::{RenetChannelsExt, RenetClient, RenetServer};

/// Told apart from other games on the same port.
const PROTOCOL_ID: u64 = 0x424D_4B54_4E45_5401;

fn connection_config(channels: &RepliconChannels) -> ConnectionConfig {
    ConnectionConfig {
        server_channels_config: channels.server_configs(),
        client_channels_config: channels.client_configs(),
        ..Default::default()
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Listens on `port` of loopback.
pub fn start_server(commands: &mut Commands, channels: &RepliconChannels, port: u16) {
    let public = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    let socket = UdpSocket::bind(public).expect("bind the server's UDP port on loopback");
    let transport = NetcodeServerTransport::new(
        ServerConfig {
            current_time: now(),
            max_clients: 16,
            protocol_id: PROTOCOL_ID,
            authentication: ServerAuthentication::Unsecure,
            public_addresses: vec![public],
        },
        socket,
    )
    .expect("start the netcode server");
    commands.insert_resource(RenetServer::new(connection_config(channels)));
    commands.insert_resource(transport);
    println!("SERVER listening on {public}");
}

/// Connects to `server` as `user`.
pub fn start_client(
    commands: &mut Commands,
    channels: &RepliconChannels,
    server: SocketAddr,
    user: u64,
) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a client UDP port");
    let transport = NetcodeClientTransport::new(
        now(),
        ClientAuthentication::Unsecure {
            protocol_id: PROTOCOL_ID,
            // The demo's player is the user id it connects with.
            client_id: user,
            server_addr: server,
            user_data: None,
        },
        socket,
    )
    .expect("start the netcode client");
    commands.insert_resource(RenetClient::new(connection_config(channels)));
    commands.insert_resource(transport);
}

/// A client left: so does its player (saved as anyone leaving).
pub fn despawn_player_of_client(
    remove: On<Remove, ConnectedClient>,
    players: Query<(Entity, &Buyer, &BuyerClient)>,
    mut commands: Commands,
) {
    for (entity, player, owner) in &players {
        if owner.0 == remove.entity {
            println!("SERVER player {} left", player.user_id);
            commands.entity(entity).despawn();
        }
    }
}

/// Prints each grant the server commits (CI counts these lines).
pub fn report_grants(mut resolved: MessageReader<ReceiptResolved>) {
    for r in resolved.read() {
        println!(
            "SERVER GRANTED {} user {} product {} paid {}",
            r.receipt.purchase_id,
            r.receipt.player_id,
            r.receipt.product_id,
            r.receipt.currency_spent
        );
    }
}
