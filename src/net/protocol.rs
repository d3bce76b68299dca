//! What a client and the server say to each other, registered in one order on both sides.

use bevy::prelude::*;
use bevy_replicon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::catalog::ProductDefinition;
use crate::ids::{ProductId, PromptId};
use crate::purchase::{PromptAction, PromptRefusal, PromptState, PurchaseError};
use crate::receipt::ReceiptInfo;

/// Client → server: "show me the purchase prompt of this product". It names no player: the
/// server prompts the player the sending client owns.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPromptRequest {
    /// The product.
    pub product_id: ProductId,
}

/// Client → server: the player's answer to their own prompt, naming it. An answer to a prompt
/// that is not the open one is refused ([`NetPromptRefused`]) and changes nothing.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPromptAnswer {
    /// The prompt answered.
    pub prompt: PromptId,
    /// The button.
    pub action: PromptAction,
}

/// Server → clients: the products for sale and the premium currency (on connect, and after
/// every catalog reload).
#[derive(Message, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCatalog {
    /// Every product, in catalog order.
    pub products: Vec<ProductDefinition>,
    /// The premium currency's name and symbol.
    pub currency: crate::currency::PremiumCurrency,
}

/// The owning client's view of its open prompt: all of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPrompt {
    /// The prompt (answers name it).
    pub id: PromptId,
    /// The product.
    pub product_id: ProductId,
    /// The price the server charges.
    pub price: u64,
    /// The balance when the prompt opened.
    pub balance_before: u64,
    /// A test purchase.
    pub test_purchase: bool,
    /// Where the prompt is.
    pub state: PromptState,
}

/// Server → owning client: its whole prompt, as the server has it — sent on every change (open,
/// moved on, closed: `None`), on connect, and when the client asks while one is open. The client
/// shows exactly this.
#[derive(Message, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPromptState {
    /// The open prompt, if any.
    pub prompt: Option<NetPrompt>,
}

/// Server → owning client: a prompt of its closed, and how
/// ([`PromptProductPurchaseFinished`](crate::PromptProductPurchaseFinished)).
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPromptFinished {
    /// The prompt.
    pub prompt: PromptId,
    /// The product.
    pub product_id: ProductId,
    /// `true` if the purchase went through.
    pub is_purchased: bool,
}

/// Server → owning client: a prompt closed on an error.
#[derive(Message, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPurchaseFailed {
    /// The prompt.
    pub prompt: PromptId,
    /// The product.
    pub product_id: ProductId,
    /// Why.
    pub error: PurchaseError,
}

/// Server → owning client: its request or answer was refused, and why; nothing changed.
#[derive(Message, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPromptRefused {
    /// The prompt an answer named.
    pub prompt: Option<PromptId>,
    /// The product a request asked for.
    pub product_id: Option<ProductId>,
    /// Why.
    pub reason: PromptRefusal,
}

/// Server → owning client: its premium balance.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetBalance {
    /// The balance.
    pub balance: u64,
}

/// Server → owning client: one of its receipts was granted and committed.
#[derive(Message, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetReceiptResolved {
    /// The receipt.
    pub receipt: ReceiptInfo,
}

/// Server → owning client: one of its receipts was rejected by its handler and refunded.
#[derive(Message, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetReceiptRejected {
    /// The receipt.
    pub receipt: ReceiptInfo,
    /// The handler's reason.
    pub reason: String,
}

/// Server → owning client: the player asked for more currency from a prompt they could not
/// afford; the client opens the game's top-up flow.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetTopUpRequested {
    /// The prompt "get more" was pressed on.
    pub prompt: PromptId,
    /// The product they wanted.
    pub product_id: ProductId,
    /// How much more they need.
    pub missing: u64,
}

/// The most bytes a client's marketplace message can take on the wire. Every one is a few bytes
/// (a product id, a button); a bigger one is not from a well-behaved client, and the server drops
/// it and stops trusting the connection.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64;

/// The replicon channels of the client messages, so the server can screen their bytes before
/// replicon decodes them.
#[derive(Resource, Clone, Copy, Debug)]
pub(crate) struct ClientChannels {
    pub(crate) prompt_request: usize,
    pub(crate) prompt_answer: usize,
}

/// Registers the marketplace's network messages, in one order on the server and every client
/// (added by [`MarketplaceServerPlugin`](super::MarketplaceServerPlugin) and
/// [`MarketplaceClientPlugin`](super::MarketplaceClientPlugin); needs `RepliconPlugins` first).
pub struct MarketplaceProtocolPlugin;

impl Plugin for MarketplaceProtocolPlugin {
    fn build(&self, app: &mut App) {
        // Replicon gives each message the next client channel.
        let next = app
            .world()
            .resource::<RepliconChannels>()
            .client_channels()
            .len();
        app.insert_resource(ClientChannels {
            prompt_request: next,
            prompt_answer: next + 1,
        });
        app.add_client_message::<NetPromptRequest>(Channel::Ordered)
            .add_client_message::<NetPromptAnswer>(Channel::Ordered)
            .add_server_message::<NetCatalog>(Channel::Ordered)
            .add_server_message::<NetPromptState>(Channel::Ordered)
            .add_server_message::<NetPromptFinished>(Channel::Ordered)
            .add_server_message::<NetPurchaseFailed>(Channel::Ordered)
            .add_server_message::<NetPromptRefused>(Channel::Ordered)
            .add_server_message::<NetBalance>(Channel::Ordered)
            .add_server_message::<NetReceiptResolved>(Channel::Ordered)
            .add_server_message::<NetReceiptRejected>(Channel::Ordered)
            .add_server_message::<NetTopUpRequested>(Channel::Ordered);
        let channels = app.world().resource::<RepliconChannels>().client_channels();
        debug_assert_eq!(
            channels.len(),
            next + 2,
            "one client channel per client message"
        );
    }
}
