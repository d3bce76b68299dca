//! The purchase prompt: one open prompt per player, confirmed by a UI or a headless policy.

use std::collections::{HashMap, HashSet, VecDeque};

use bevy::prelude::*;

use super::charge::Charges;
use super::messages::{
    PromptAction, PromptAnswer, PromptProductPurchaseFinished, PromptRefusal, PromptRefused,
    PurchaseError, PurchaseFailed, TopUpRequested,
};
use crate::catalog::ProductInfo;
use crate::currency::PremiumBalance;
use crate::ids::{ProductId, PromptId, PurchaseId, RequestId, UserId};
use crate::ledger::{ChargeRequest, LeaseFence, LedgerStatus};
use crate::link::Ledger;
use crate::players::{
    Buyer, DeliveryQueue, PlayerSession, ReceiptRejected, SessionPhase, Sessions,
};
use crate::receipt::{ProductPurchaseChannel, ReceiptInfo};
use crate::service::MarketplaceService;
use crate::service::PromptProductPurchase;
use crate::settings::MarketplaceSettings;

/// Where an open prompt is.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PromptState {
    /// Showing the product and price; waiting for Buy or Cancel.
    AwaitingConfirmation,
    /// Charging.
    Purchasing,
    /// Charged; the receipt is on its way to the handler. Waiting for OK.
    Purchased(ReceiptInfo),
    /// The ledger could not say whether the charge went through (the database stopped answering
    /// after it was sent). It is asked again, with the same request id, until it answers: if the
    /// charge went through, the purchase is delivered, and it is never charged twice. The prompt
    /// moves on to `Purchased` or `Failed` when the answer comes; closed before (OK), its
    /// [`PromptProductPurchaseFinished`] tells the outcome once it is known.
    Unconfirmed,
    /// Failed; waiting for OK.
    Failed(PurchaseError),
}

/// The open prompt of a player, on the player's entity. A purchase UI draws it and answers
/// with [`PromptAnswer`].
#[derive(Component, Clone, Debug)]
pub struct OpenPrompt {
    /// This prompt (answers name it).
    pub id: PromptId,
    /// The product asked for.
    pub product_id: ProductId,
    /// Its metadata, if it exists.
    pub product: Option<ProductInfo>,
    /// Balance when the prompt opened.
    pub balance_before: u64,
    /// The price shown (0 for test purchases).
    pub price: u64,
    /// A test purchase: free, flagged on the receipt.
    pub test_purchase: bool,
    /// Where the prompt is.
    pub state: PromptState,
    pub(crate) request_id: RequestId,
    /// The buyer's session lease when the prompt opened: the charge must show it.
    pub(crate) fence: Option<LeaseFence>,
    /// Its closing was told already (by the answer that closed it).
    pub(crate) told: bool,
}

impl OpenPrompt {
    /// The idempotency key of this prompt's charge: its receipt's purchase id is
    /// [`PurchaseId::of_request`](crate::PurchaseId::of_request) of it.
    pub fn charge_request_id(&self) -> RequestId {
        self.request_id
    }

    /// Balance after the purchase, if affordable.
    pub fn balance_after(&self) -> Option<u64> {
        self.balance_before.checked_sub(self.price)
    }
}

/// Who answers prompts when no UI does. `MarketplaceUiPlugin` sets `Manual` (its buttons answer).
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
///
/// let mut app = App::new();
/// app.add_plugins((MinimalPlugins, MarketplacePlugin::default().with_ledger(LedgerBackend::in_memory())))
///     // A headless test where every prompt is cancelled: nothing is ever charged.
///     .insert_resource(ConfirmPolicy::AutoCancel);
/// ```
#[derive(Resource, Clone, Debug, Default, PartialEq, Eq)]
pub enum ConfirmPolicy {
    /// Buy everything, then close. The default without a UI.
    #[default]
    AutoConfirm,
    /// Cancel everything.
    AutoCancel,
    /// Answer prompts in order from the list (`true` = buy); when it runs out, prompts wait.
    Scripted(VecDeque<bool>),
    /// Only [`PromptAnswer`] messages answer (a purchase UI).
    Manual,
}

pub(crate) fn charge_request(
    prompt: &OpenPrompt,
    user: UserId,
    settings: &MarketplaceSettings,
) -> ChargeRequest {
    ChargeRequest {
        request_id: prompt.request_id,
        user,
        product_id: prompt.product_id,
        product_name: prompt
            .product
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        price: prompt.price,
        test_purchase: prompt.test_purchase,
        place_id: settings.place_id,
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: settings.starting_balance,
        fence: prompt.fence.clone(),
    }
}

/// The next prompt's id.
#[derive(Resource, Default)]
pub(crate) struct NextPromptId(u64);

impl NextPromptId {
    fn take(&mut self) -> PromptId {
        self.0 += 1;
        PromptId(self.0)
    }
}

/// Where the prompt systems tell the game what happened to a prompt.
#[derive(bevy::ecs::system::SystemParam)]
pub(crate) struct PromptNews<'w> {
    finished: MessageWriter<'w, PromptProductPurchaseFinished>,
    failed: MessageWriter<'w, PurchaseFailed>,
    top_ups: MessageWriter<'w, TopUpRequested>,
    refused: MessageWriter<'w, PromptRefused>,
}

/// Opens prompts for new requests (messages and [`MarketplaceService::prompt_product_purchase`]).
/// A request for a player who has a prompt open is refused with [`PromptRefusal::AlreadyOpen`].
pub(crate) fn open_prompts(
    mut requests: MessageReader<PromptProductPurchase>,
    mut service: ResMut<MarketplaceService>,
    players: Query<(
        &Buyer,
        Option<&PlayerSession>,
        &PremiumBalance,
        Option<&OpenPrompt>,
    )>,
    settings: Res<MarketplaceSettings>,
    ledger: Res<Ledger>,
    mut ids: ResMut<NextPromptId>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut refused: MessageWriter<PromptRefused>,
    mut commands: Commands,
) {
    let queued = std::mem::take(&mut service.queued_prompts);
    let mut opened: HashMap<Entity, PromptId> = HashMap::new();
    for request in requests.read().copied().chain(queued) {
        let refuse = |reason| PromptRefused {
            player: request.player,
            prompt: None,
            product_id: Some(request.product_id),
            reason,
        };
        let Ok((player, session, balance, open)) = players.get(request.player) else {
            tracing::warn!(
                "PromptProductPurchase for {} refused: it is not a Buyer",
                request.player
            );
            refused.write(refuse(PromptRefusal::NotAPlayer));
            continue;
        };
        if let Some(id) = open
            .map(|p| p.id)
            .or_else(|| opened.get(&request.player).copied())
        {
            tracing::debug!(
                "PromptProductPurchase for user {} refused: {id} is open",
                player.user_id
            );
            refused.write(refuse(PromptRefusal::AlreadyOpen(id)));
            continue;
        }
        let product = service.get_product_info(request.product_id).ok();
        let price = match &product {
            Some(_) if settings.test_purchases => 0,
            Some(p) => p.price,
            None => 0,
        };
        let not_ready = match session.map(|s| &s.phase) {
            // The database is not answering: say so now rather than after the charge times out.
            _ if let LedgerStatus::Unavailable(e) = ledger.status() => {
                Some(PurchaseError::Unavailable(e.to_string()))
            }
            Some(SessionPhase::Active) => None,
            Some(SessionPhase::Failed(why)) => Some(PurchaseError::Unavailable(why.clone())),
            Some(SessionPhase::Loading) | None => Some(match ledger.status() {
                LedgerStatus::Failed(e) => PurchaseError::Unavailable(e.to_string()),
                _ => PurchaseError::ProfileNotReady,
            }),
        };
        let failure = match &product {
            None if !service.catalog_loaded() => Some(PurchaseError::CatalogNotLoaded),
            None => Some(PurchaseError::UnknownProduct),
            Some(_) if not_ready.is_some() => not_ready,
            Some(p) if !p.is_for_sale => Some(PurchaseError::NotForSale),
            Some(_) if balance.0 < price => Some(PurchaseError::NotEnoughFunds {
                balance: balance.0,
                price,
                missing: price - balance.0,
            }),
            Some(_) => None,
        };
        if failure.is_none() {
            // Roblox delivers pending receipts when a purchase prompt appears.
            deliveries.now.push(request.player);
        }
        let id = ids.take();
        opened.insert(request.player, id);
        commands.entity(request.player).insert(OpenPrompt {
            id,
            product_id: request.product_id,
            product,
            balance_before: balance.0,
            price,
            test_purchase: settings.test_purchases,
            state: failure.map_or(PromptState::AwaitingConfirmation, PromptState::Failed),
            request_id: RequestId::new(),
            fence: session.and_then(|s| s.fence(&settings.server_id)),
            told: false,
        });
    }
}

/// The [`ConfirmPolicy`]'s answer to a prompt where it is, if it has one.
fn policy_answer(policy: &mut ConfirmPolicy, state: &PromptState) -> Option<PromptAction> {
    match (state, policy) {
        (PromptState::AwaitingConfirmation, ConfirmPolicy::AutoConfirm) => {
            Some(PromptAction::Confirm)
        }
        (PromptState::AwaitingConfirmation, ConfirmPolicy::AutoCancel) => {
            Some(PromptAction::Cancel)
        }
        (PromptState::AwaitingConfirmation, ConfirmPolicy::Scripted(script)) => {
            script.pop_front().map(|buy| {
                if buy {
                    PromptAction::Confirm
                } else {
                    PromptAction::Cancel
                }
            })
        }
        (PromptState::Purchased(_) | PromptState::Failed(_), _) => Some(PromptAction::Close),
        _ => None,
    }
}

/// What an answer does to a prompt where it is.
enum Effect {
    /// Charge (or fail at once: the price moved, the product left the catalog).
    Confirm,
    /// Close it, purchased or not.
    Close { is_purchased: bool },
    /// Close it and ask the game for a top-up.
    TopUp { missing: u64 },
    /// Close it; its outcome is told when the ledger says it.
    CloseUnconfirmed,
}

fn effect(action: PromptAction, state: &PromptState) -> Option<Effect> {
    Some(match (action, state) {
        (PromptAction::Confirm, PromptState::AwaitingConfirmation) => Effect::Confirm,
        (PromptAction::Cancel, PromptState::AwaitingConfirmation) => Effect::Close {
            is_purchased: false,
        },
        (
            PromptAction::TopUp,
            PromptState::Failed(PurchaseError::NotEnoughFunds { missing, .. }),
        ) => Effect::TopUp { missing: *missing },
        // A second Buy (a double click) answers a prompt that moved on: it is refused rather than
        // taken as the OK that closes the result before the player saw it.
        (PromptAction::Close | PromptAction::Cancel, PromptState::Failed(_)) => Effect::Close {
            is_purchased: false,
        },
        (PromptAction::Close, PromptState::Purchased(_)) => Effect::Close { is_purchased: true },
        (PromptAction::Close | PromptAction::Cancel, PromptState::Unconfirmed) => {
            Effect::CloseUnconfirmed
        }
        _ => return None,
    })
}

/// Applies answers from the UI, or from the [`ConfirmPolicy`], each to the prompt it names. A
/// prompt takes one answer: the first that applies moves it on or closes it at once, and any other
/// answer to it in the same frame is refused.
pub(crate) fn answer_prompts(
    mut answers: MessageReader<PromptAnswer>,
    mut policy: ResMut<ConfirmPolicy>,
    mut prompts: Query<(Entity, &Buyer, &mut OpenPrompt)>,
    service: Res<MarketplaceService>,
    settings: Res<MarketplaceSettings>,
    mut ledger: ResMut<Ledger>,
    mut charges: ResMut<Charges>,
    mut news: PromptNews,
    mut commands: Commands,
) {
    let mut explicit: Vec<PromptAnswer> = answers.read().copied().collect();
    if *policy != ConfirmPolicy::Manual {
        for (entity, _, prompt) in &prompts {
            if explicit.iter().any(|a| a.player == entity) {
                continue;
            }
            if let Some(action) = policy_answer(&mut policy, &prompt.state) {
                explicit.push(PromptAnswer {
                    player: entity,
                    prompt: prompt.id,
                    action,
                });
            }
        }
    }
    // Prompts answered in this frame: later answers to them are refused.
    let mut answered: HashSet<PromptId> = HashSet::new();
    for answer in explicit {
        let refuse = |reason| PromptRefused {
            player: answer.player,
            prompt: Some(answer.prompt),
            product_id: None,
            reason,
        };
        let Ok((entity, player, mut prompt)) = prompts.get_mut(answer.player) else {
            news.refused.write(refuse(PromptRefusal::NotOpen));
            continue;
        };
        if prompt.id != answer.prompt {
            news.refused.write(refuse(PromptRefusal::NotOpen));
            continue;
        }
        if answered.contains(&prompt.id) {
            news.refused.write(refuse(PromptRefusal::AlreadyAnswered));
            continue;
        }
        let Some(effect) = effect(answer.action, &prompt.state) else {
            news.refused.write(refuse(PromptRefusal::NotNow {
                action: answer.action,
            }));
            continue;
        };
        answered.insert(prompt.id);
        let is_purchased = match effect {
            Effect::Confirm => {
                // Roblox sends the expected price; a price that moved since the prompt opened fails.
                let now = service.get_product_info(prompt.product_id).ok();
                prompt.state = match now {
                    Some(p) if !p.is_for_sale => PromptState::Failed(PurchaseError::NotForSale),
                    Some(p) if !prompt.test_purchase && p.price != prompt.price => {
                        PromptState::Failed(PurchaseError::PriceChanged {
                            shown: prompt.price,
                            now: p.price,
                        })
                    }
                    Some(_) => {
                        let request = charge_request(&prompt, player.user_id, &settings);
                        charges.send(request, (entity, prompt.id), &mut ledger);
                        PromptState::Purchasing
                    }
                    None => PromptState::Failed(PurchaseError::UnknownProduct),
                };
                continue;
            }
            Effect::CloseUnconfirmed => {
                // Told when the ledger answers (the observer below marks the charge).
                commands.entity(entity).remove::<OpenPrompt>();
                continue;
            }
            Effect::TopUp { missing } => {
                news.top_ups.write(TopUpRequested {
                    player: entity,
                    prompt: prompt.id,
                    user_id: player.user_id,
                    product_id: prompt.product_id,
                    missing,
                });
                false
            }
            Effect::Close { is_purchased } => is_purchased,
        };
        prompt.told = true;
        commands.entity(entity).remove::<OpenPrompt>();
        if let PromptState::Failed(error) = &prompt.state {
            news.failed.write(PurchaseFailed {
                player: entity,
                prompt: prompt.id,
                user_id: player.user_id,
                product_id: prompt.product_id,
                error: error.clone(),
            });
        }
        news.finished.write(PromptProductPurchaseFinished {
            player: entity,
            prompt: prompt.id,
            user_id: player.user_id,
            product_id: prompt.product_id,
            is_purchased,
        });
    }
}

/// A prompt that goes without an answer closing it — its buyer left, game code removed or
/// replaced it — closes all the same: `PromptProductPurchaseFinished` says whether it was
/// purchased; one whose charge is on its way is told when the ledger answers.
pub(crate) fn close_prompt_taken_away(
    discard: On<Discard, OpenPrompt>,
    prompts: Query<(&OpenPrompt, Option<&Buyer>)>,
    mut charges: ResMut<Charges>,
    mut finished: MessageWriter<PromptProductPurchaseFinished>,
) {
    let Ok((prompt, player)) = prompts.get(discard.entity) else {
        return;
    };
    if prompt.told {
        return;
    }
    if matches!(
        prompt.state,
        PromptState::Purchasing | PromptState::Unconfirmed
    ) {
        charges.prompt_closed(prompt.request_id);
        return;
    }
    finished.write(PromptProductPurchaseFinished {
        player: discard.entity,
        prompt: prompt.id,
        user_id: player.map_or(UserId(0), |p| p.user_id),
        product_id: prompt.product_id,
        is_purchased: matches!(prompt.state, PromptState::Purchased(_)),
    });
}

/// A purchase its handler rejected, refund committed: the buyer's prompt for it, still open, says
/// so ([`PurchaseError::Refunded`]) instead of "purchased". A prompt closed already told
/// `is_purchased: true`; [`ReceiptRejected`] is the game's signal then.
pub(crate) fn show_rejections(
    mut rejections: MessageReader<ReceiptRejected>,
    sessions: Res<Sessions>,
    mut prompts: Query<&mut OpenPrompt>,
) {
    for ReceiptRejected { receipt, reason } in rejections.read() {
        let Some(mut prompt) = sessions
            .by_user
            .get(&receipt.player_id)
            .and_then(|entity| prompts.get_mut(*entity).ok())
        else {
            continue;
        };
        if PurchaseId::of_request(prompt.request_id) == receipt.purchase_id
            && matches!(
                prompt.state,
                PromptState::Purchasing | PromptState::Purchased(_) | PromptState::Unconfirmed
            )
        {
            prompt.state = PromptState::Failed(PurchaseError::Refunded {
                reason: reason.clone(),
            });
        }
    }
}
