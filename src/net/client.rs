//! The client side: prompts asked through the service or by message go to the server; the
//! server's answers become the same components and messages a game sees in one process.

use bevy::prelude::*;
use bevy_replicon::prelude::*;

use super::protocol::*;
use crate::catalog::Catalog;
use crate::currency::PremiumBalance;
use crate::ids::{RequestId, UserId};
use crate::players::Buyer;
use crate::players::{ReceiptRejected, ReceiptResolved};
use crate::purchase::{
    OpenPrompt, PromptAnswer, PromptProductPurchaseFinished, PromptRefused, PurchaseFailed,
    TopUpRequested,
};
use crate::service::{MarketplaceService, PromptProductPurchase};

/// On a client: the entity that shows this client's player — its open prompt
/// ([`OpenPrompt`]) and premium balance ([`PremiumBalance`]) as the server reports them.
#[derive(Component, Clone, Copy, Debug, Default)]
#[require(PremiumBalance)]
pub struct LocalBuyer;

/// The client half of networked purchases: no ledger, no handlers. Add it with replicon's
/// client instead of `MarketplacePlugin`. [`MarketplaceService`] prompts (for this client's own
/// player, whatever entity is named), reads product info and pages the catalog the server sent;
/// the egui prompt (`MarketplaceUiPlugin`) works as in one process on the [`LocalBuyer`] entity.
/// What only the server can do (grants, refunds, history) is refused with a warning.
pub struct MarketplaceClientPlugin;

impl Plugin for MarketplaceClientPlugin {
    fn build(&self, app: &mut App) {
        app.add_plugins(MarketplaceProtocolPlugin)
            .init_resource::<MarketplaceService>()
            .add_message::<PromptProductPurchase>()
            .add_message::<PromptAnswer>()
            .add_message::<PromptProductPurchaseFinished>()
            .add_message::<PurchaseFailed>()
            .add_message::<PromptRefused>()
            .add_message::<ReceiptResolved>()
            .add_message::<ReceiptRejected>()
            .add_message::<TopUpRequested>()
            .add_systems(
                PreUpdate,
                apply_server_messages
                    .after(ClientSystems::Receive)
                    .run_if(in_state(ClientState::Connected)),
            )
            .add_systems(
                PostUpdate,
                send_requests
                    .before(ClientSystems::Send)
                    .run_if(in_state(ClientState::Connected)),
            )
            .add_systems(OnExit(ClientState::Connected), forget_prompt_on_disconnect);
    }
}

/// The server's messages, as the game sees them in one process.
#[derive(bevy::ecs::system::SystemParam)]
struct ServerNews<'w, 's> {
    catalogs: MessageReader<'w, 's, NetCatalog>,
    prompts: MessageReader<'w, 's, NetPromptState>,
    finished: MessageReader<'w, 's, NetPromptFinished>,
    failures: MessageReader<'w, 's, NetPurchaseFailed>,
    refusals: MessageReader<'w, 's, NetPromptRefused>,
    balances: MessageReader<'w, 's, NetBalance>,
    receipts: MessageReader<'w, 's, NetReceiptResolved>,
    rejections: MessageReader<'w, 's, NetReceiptRejected>,
    top_ups: MessageReader<'w, 's, NetTopUpRequested>,
}

/// The game's own messages, written from the server's.
#[derive(bevy::ecs::system::SystemParam)]
struct LocalNews<'w> {
    finished: MessageWriter<'w, PromptProductPurchaseFinished>,
    failed: MessageWriter<'w, PurchaseFailed>,
    refused: MessageWriter<'w, PromptRefused>,
    resolved: MessageWriter<'w, ReceiptResolved>,
    rejected: MessageWriter<'w, ReceiptRejected>,
    top_ups: MessageWriter<'w, TopUpRequested>,
}

fn apply_server_messages(
    mut news: ServerNews,
    mut local: LocalNews,
    mut service: ResMut<MarketplaceService>,
    mut buyer: Query<(Entity, &mut PremiumBalance, Option<&Buyer>), With<LocalBuyer>>,
    mut commands: Commands,
) {
    for catalog in news.catalogs.read() {
        match Catalog::from_products(catalog.products.clone()) {
            Ok(valid) => {
                service.set_catalog(&valid);
                service.currency = catalog.currency.clone();
            }
            Err(e) => tracing::error!("the server sent a catalog this client refuses: {e}"),
        }
    }
    let buyer = buyer.single_mut().ok();
    let user = buyer
        .as_ref()
        .and_then(|(_, _, player)| player.map(|p| p.user_id))
        .unwrap_or(UserId(0));
    let (entity, mut balance) = match buyer {
        Some((entity, balance, _)) => (Some(entity), Some(balance)),
        None => (None, None),
    };
    // The prompt is the server's: the last state it sent this frame is the one shown.
    if let Some(state) = news.prompts.read().last() {
        match (entity, &state.prompt) {
            (None, _) => tracing::warn!("a prompt arrived but no entity has LocalBuyer"),
            (Some(entity), Some(prompt)) => {
                commands.entity(entity).insert(OpenPrompt {
                    id: prompt.id,
                    product_id: prompt.product_id,
                    product: service.get_product_info(prompt.product_id).ok(),
                    balance_before: prompt.balance_before,
                    price: prompt.price,
                    test_purchase: prompt.test_purchase,
                    state: prompt.state.clone(),
                    request_id: RequestId::new(),
                    fence: None,
                    told: true,
                });
            }
            (Some(entity), None) => {
                commands.entity(entity).remove::<OpenPrompt>();
            }
        }
    }
    let player = entity.unwrap_or(Entity::PLACEHOLDER);
    for f in news.finished.read() {
        local.finished.write(PromptProductPurchaseFinished {
            player,
            prompt: f.prompt,
            user_id: user,
            product_id: f.product_id,
            is_purchased: f.is_purchased,
        });
    }
    for failure in news.failures.read() {
        local.failed.write(PurchaseFailed {
            player,
            prompt: failure.prompt,
            user_id: user,
            product_id: failure.product_id,
            error: failure.error.clone(),
        });
    }
    for refusal in news.refusals.read() {
        local.refused.write(PromptRefused {
            player,
            prompt: refusal.prompt,
            product_id: refusal.product_id,
            reason: refusal.reason.clone(),
        });
    }
    for update in news.balances.read() {
        if let Some(balance) = balance.as_mut() {
            balance.0 = update.balance;
        }
    }
    for receipt in news.receipts.read() {
        local.resolved.write(ReceiptResolved {
            receipt: receipt.receipt.clone(),
        });
    }
    for rejection in news.rejections.read() {
        local.rejected.write(ReceiptRejected {
            receipt: rejection.receipt.clone(),
            reason: rejection.reason.clone(),
        });
    }
    for top_up in news.top_ups.read() {
        if let Some(player) = entity {
            local.top_ups.write(TopUpRequested {
                player,
                prompt: top_up.prompt,
                user_id: user,
                product_id: top_up.product_id,
                missing: top_up.missing,
            });
        }
    }
}

/// A connection that ended takes its prompt with it: the next one is told its own.
fn forget_prompt_on_disconnect(
    buyers: Query<Entity, (With<LocalBuyer>, With<OpenPrompt>)>,
    mut commands: Commands,
) {
    for buyer in &buyers {
        commands.entity(buyer).remove::<OpenPrompt>();
    }
}

fn send_requests(
    mut service: ResMut<MarketplaceService>,
    mut prompts: MessageReader<PromptProductPurchase>,
    mut answers: MessageReader<PromptAnswer>,
    mut requests: MessageWriter<NetPromptRequest>,
    mut net_answers: MessageWriter<NetPromptAnswer>,
) {
    let queued = std::mem::take(&mut service.queued_prompts);
    for prompt in queued.iter().chain(prompts.read()) {
        requests.write(NetPromptRequest {
            product_id: prompt.product_id,
        });
    }
    for answer in answers.read() {
        net_answers.write(NetPromptAnswer {
            prompt: answer.prompt,
            action: answer.action,
        });
    }
    if !service.requests.is_empty() {
        service.requests.clear();
        tracing::warn!(
            "on a client, MarketplaceService only prompts and reads the catalog: grants, refunds, top-ups and reports are the server's"
        );
    }
}
