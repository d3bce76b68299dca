//! Multiplayer with [bevy_replicon](https://docs.rs/bevy_replicon): clients prompt, the server
//! charges and grants (feature `net`).
//!
//! As on Roblox, a purchase is networked: the prompt shows on the player's client, the charge,
//! the receipt and the handler run only on the server, and a client can never grant itself
//! anything. The server adds [`MarketplacePlugin`](crate::MarketplacePlugin) as in one process,
//! plus [`MarketplaceServerPlugin`]; each client adds [`MarketplaceClientPlugin`] (no ledger, no
//! handlers). Both add bevy_replicon's `RepliconPlugins` and a messaging backend.
//!
//! The game says which client owns which player, on the server, in one line
//! (`commands.entity(player).insert(BuyerClient(client_entity))`), and marks the client's own player entity with [`LocalBuyer`]. Then
//! [`MarketplaceService`](crate::MarketplaceService) on the client prompts, reads product info
//! and pages the catalog (sent by the server on connect and after every reload); the prompt, the
//! premium balance and the outcome messages reach the owning client only. A server and a client
//! in one process, running: [`docs::multiplayer`](crate::docs::multiplayer).
//!
//! A listen server is the server with players of its own: they are players without
//! `BuyerClient`, prompted and answered on the server as in one process (mark the host's with
//! `LocalPlayer` and the egui prompt shows only theirs).
//!
//! The server checks the bytes of every marketplace message a client sends before replicon
//! decodes them. A message over [`MAX_CLIENT_MESSAGE_BYTES`], one that does not decode, or one
//! with bytes after it is dropped and logged; the client is marked [`DistrustedClient`], its
//! later messages are dropped, and the transport is asked to disconnect it.

mod client;
mod protocol;
mod screening;
mod server;

pub use client::{LocalBuyer, MarketplaceClientPlugin};
pub use protocol::{
    MAX_CLIENT_MESSAGE_BYTES, MarketplaceProtocolPlugin, NetBalance, NetCatalog, NetPrompt,
    NetPromptAnswer, NetPromptFinished, NetPromptRefused, NetPromptRequest, NetPromptState,
    NetPurchaseFailed, NetReceiptRejected, NetReceiptResolved, NetTopUpRequested,
};
pub use screening::DistrustedClient;
pub use server::{BuyerClient, MarketplaceServerPlugin, NetLimits};
