//! The purchase prompt: one open prompt per player, confirmed by a UI or a headless policy.

use std::collections::{HashSet, VecDeque};

use bevy::prelude::*;

use super::charge::Charges;
use crate::catalog::ProductInfo;
use crate::currency::PremiumBalance;
use crate::ids::{ProductId, RequestId, UserId};
use crate::ledger::{ChargeRequest, LeaseFence, LedgerStatus};
use crate::link::Ledger;
use crate::players::{DeliveryQueue, Player, PlayerSession, SessionPhase};
use crate::receipt::{ProductPurchaseChannel, ReceiptInfo};
use crate::service::MarketplaceService;
use crate::service::PromptProductPurchase;
use crate::settings::MarketplaceSettings;

/// The prompt closed. Fires exactly once per opened prompt. `is_purchased` is `true` only when the
/// player closed it after a successful purchase.
///
/// **Never grant from this.** It says what the buyer saw, not what was committed; grants happen
/// in product handlers, and [`ReceiptResolved`](crate::ReceiptResolved) reports them.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptProductPurchaseFinished {
    /// The buyer's user id.
    pub user_id: UserId,
    /// The product.
    pub product_id: ProductId,
    /// `true` if the purchase went through before the prompt closed.
    pub is_purchased: bool,
}

/// A prompt closed without a purchase because of an error (not a cancel): what the prompt
/// showed, for logs and UIs that were not watching the prompt.
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct PurchaseFailed {
    /// The buyer's user id.
    pub user_id: UserId,
    /// The product.
    pub product_id: ProductId,
    /// Why.
    pub error: PurchaseError,
}

/// What the player did with their prompt: sent by the purchase UI or a test.
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PromptAnswer {
    /// The player whose prompt it is.
    pub player: Entity,
    /// The action.
    pub action: PromptAction,
}

/// A button on the prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PromptAction {
    /// "Buy": charge the player.
    Confirm,
    /// "Cancel": close without buying (only before buying).
    Cancel,
    /// "OK": close a prompt that shows its result.
    Close,
    /// "Get more": on a prompt that failed for want of funds, close it and ask the game to open
    /// its own top-up flow ([`TopUpRequested`]).
    TopUp,
}

/// The game's top-up flow, offered where a prompt says "You need N more": with this resource,
/// the egui prompt shows a button with `label`, and pressing it (or any UI's
/// [`PromptAction::TopUp`]) closes the prompt and sends [`TopUpRequested`]. Without it the prompt
/// stays as it is. What the flow is — a store page, an in-game shop — is the game's.
#[derive(Resource, Clone, Debug, PartialEq, Eq)]
pub struct TopUpOffer {
    /// The button's text, e.g. "Get more Robux".
    pub label: String,
}

impl TopUpOffer {
    /// An offer with this button text.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }
}

/// A player who could not afford a product asked for more premium currency: open your top-up
/// flow (and credit what they buy with
/// [`MarketplaceService::credit_premium_currency`](crate::MarketplaceService::credit_premium_currency)).
#[derive(Message, Clone, Copy, Debug, PartialEq, Eq)]
pub struct TopUpRequested {
    /// The player.
    pub player: Entity,
    /// Their user id.
    pub user_id: UserId,
    /// The product they wanted.
    pub product_id: ProductId,
    /// How much more they need for it.
    pub missing: u64,
}

/// Why a purchase could not be made. Nothing was charged unless the variant says so.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum PurchaseError {
    /// The product id is not in the catalog.
    #[error("This item is not available.")]
    UnknownProduct,
    /// The product is not for sale.
    #[error("This item is not currently for sale.")]
    NotForSale,
    /// The balance is below the price.
    #[error("You need {missing} more to buy this item.")]
    NotEnoughFunds {
        /// Balance at the time.
        balance: u64,
        /// Price.
        price: u64,
        /// Price minus balance.
        missing: u64,
    },
    /// The price changed after the prompt opened.
    #[error("The price of this item changed from {shown} to {now}. Please try again.")]
    PriceChanged {
        /// Price on the prompt.
        shown: u64,
        /// Price now.
        now: u64,
    },
    /// The player's data is still loading.
    #[error("Your account is still loading. Please try again in a moment.")]
    ProfileNotReady,
    /// Purchases cannot be made for this player now: the ledger cannot be opened, their data did
    /// not load, or another server holds their session. The string says which.
    #[error("Purchases are unavailable right now ({0}). You have not been charged.")]
    Unavailable(String),
    /// The ledger could not charge; the player was not charged.
    #[error("Purchase failed: {0}. You have not been charged.")]
    PurchaseFailed(String),
    /// Too many prompts asked in a short time (a networked client over its rate limit).
    #[error("Too many purchase requests. Please wait a moment.")]
    TooManyRequests,
}

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
pub struct PurchasePrompt {
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
}

impl PurchasePrompt {
    /// Balance after the purchase, if affordable.
    pub fn balance_after(&self) -> Option<u64> {
        self.balance_before.checked_sub(self.price)
    }
}

/// Who answers prompts when no UI does.
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
    prompt: &PurchasePrompt,
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

/// Opens prompts for new requests (messages and [`MarketplaceService::prompt_product_purchase`]).
pub(crate) fn open_prompts(
    mut requests: MessageReader<PromptProductPurchase>,
    mut service: ResMut<MarketplaceService>,
    players: Query<(
        &Player,
        Option<&PlayerSession>,
        &PremiumBalance,
        Has<PurchasePrompt>,
    )>,
    settings: Res<MarketplaceSettings>,
    ledger: Res<Ledger>,
    mut deliveries: ResMut<DeliveryQueue>,
    mut commands: Commands,
) {
    let queued = std::mem::take(&mut service.queued_prompts);
    let mut opened = HashSet::new();
    for request in requests.read().copied().chain(queued) {
        let Ok((player, session, balance, has_prompt)) = players.get(request.player) else {
            tracing::warn!(
                "PromptProductPurchase for {} ignored: it is not a Player",
                request.player
            );
            continue;
        };
        if has_prompt || !opened.insert(request.player) {
            tracing::debug!(
                "PromptProductPurchase for user {} ignored: a prompt is already open",
                player.user_id
            );
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
        commands.entity(request.player).insert(PurchasePrompt {
            product_id: request.product_id,
            product,
            balance_before: balance.0,
            price,
            test_purchase: settings.test_purchases,
            state: failure.map_or(PromptState::AwaitingConfirmation, PromptState::Failed),
            request_id: RequestId::new(),
            fence: session.and_then(|s| s.fence(&settings.server_id)),
        });
    }
}

/// Applies answers from the UI, or from the [`ConfirmPolicy`], and closes finished prompts.
pub(crate) fn answer_prompts(
    mut answers: MessageReader<PromptAnswer>,
    mut policy: ResMut<ConfirmPolicy>,
    mut prompts: Query<(Entity, &Player, &mut PurchasePrompt)>,
    service: Res<MarketplaceService>,
    settings: Res<MarketplaceSettings>,
    mut ledger: ResMut<Ledger>,
    mut charges: ResMut<Charges>,
    mut finished: MessageWriter<PromptProductPurchaseFinished>,
    mut failed: MessageWriter<PurchaseFailed>,
    mut top_ups: MessageWriter<TopUpRequested>,
    mut commands: Commands,
) {
    let mut explicit: Vec<PromptAnswer> = answers.read().copied().collect();
    if *policy != ConfirmPolicy::Manual {
        for (entity, _, prompt) in &prompts {
            if explicit.iter().any(|a| a.player == entity) {
                continue;
            }
            let action = match (&prompt.state, &mut *policy) {
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
                (PromptState::Purchased(_) | PromptState::Failed(_), _) => {
                    Some(PromptAction::Close)
                }
                _ => None,
            };
            if let Some(action) = action {
                explicit.push(PromptAnswer {
                    player: entity,
                    action,
                });
            }
        }
    }
    for answer in explicit {
        let Ok((entity, player, mut prompt)) = prompts.get_mut(answer.player) else {
            continue;
        };
        let close = match (answer.action, &prompt.state) {
            (PromptAction::Confirm, PromptState::AwaitingConfirmation) => {
                // Roblox sends the expected price; a price that moved since the prompt opened fails.
                let now = service.get_product_info(prompt.product_id).ok();
                match now {
                    Some(p) if !p.is_for_sale => {
                        prompt.state = PromptState::Failed(PurchaseError::NotForSale);
                    }
                    Some(p) if !prompt.test_purchase && p.price != prompt.price => {
                        prompt.state = PromptState::Failed(PurchaseError::PriceChanged {
                            shown: prompt.price,
                            now: p.price,
                        });
                    }
                    Some(_) => {
                        prompt.state = PromptState::Purchasing;
                        charges.send(
                            charge_request(&prompt, player.user_id, &settings),
                            &mut ledger,
                        );
                    }
                    None => prompt.state = PromptState::Failed(PurchaseError::UnknownProduct),
                }
                None
            }
            (PromptAction::Cancel, PromptState::AwaitingConfirmation) => Some(false),
            (
                PromptAction::TopUp,
                PromptState::Failed(PurchaseError::NotEnoughFunds { missing, .. }),
            ) => {
                top_ups.write(TopUpRequested {
                    player: entity,
                    user_id: player.user_id,
                    product_id: prompt.product_id,
                    missing: *missing,
                });
                Some(false)
            }
            (
                PromptAction::Close | PromptAction::Cancel | PromptAction::Confirm,
                PromptState::Failed(_),
            ) => Some(false),
            (PromptAction::Close | PromptAction::Confirm, PromptState::Purchased(_)) => Some(true),
            // The outcome is not known yet: the prompt closes, and the outcome is told when it is.
            (
                PromptAction::Close | PromptAction::Confirm | PromptAction::Cancel,
                PromptState::Unconfirmed,
            ) => {
                charges.prompt_closed(prompt.request_id);
                commands.entity(entity).remove::<PurchasePrompt>();
                None
            }
            _ => None,
        };
        if let Some(is_purchased) = close {
            commands.entity(entity).remove::<PurchasePrompt>();
            if let PromptState::Failed(error) = &prompt.state {
                failed.write(PurchaseFailed {
                    user_id: player.user_id,
                    product_id: prompt.product_id,
                    error: error.clone(),
                });
            }
            finished.write(PromptProductPurchaseFinished {
                user_id: player.user_id,
                product_id: prompt.product_id,
                is_purchased,
            });
        }
    }
}

/// A buyer who leaves with a prompt open: the prompt closes. If it showed "Purchased", the
/// purchase went through, whether or not they pressed OK.
pub(crate) fn close_prompt_of_leaving_buyer(
    remove: On<Remove, Player>,
    buyers: Query<(&Player, &PurchasePrompt)>,
    mut charges: ResMut<Charges>,
    mut finished: MessageWriter<PromptProductPurchaseFinished>,
) {
    if let Ok((player, prompt)) = buyers.get(remove.entity) {
        if matches!(
            prompt.state,
            PromptState::Purchasing | PromptState::Unconfirmed
        ) {
            // The charge is on its way: the outcome is told when the ledger answers.
            charges.prompt_closed(prompt.request_id);
            return;
        }
        finished.write(PromptProductPurchaseFinished {
            user_id: player.user_id,
            product_id: prompt.product_id,
            is_purchased: matches!(prompt.state, PromptState::Purchased(_)),
        });
    }
}
