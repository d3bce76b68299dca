//! Buying: the purchase prompt (one per player, confirmed by a UI or a headless policy), the charge
//! it sends to the ledger.

mod charge;
mod prompt;

pub(crate) use charge::{Charges, handle_charge_replies, retry_unconfirmed_charges};
pub use prompt::{
    ConfirmPolicy, PromptAction, PromptAnswer, PromptProductPurchaseFinished, PromptState,
    PurchaseError, PurchaseFailed, PurchasePrompt, TopUpOffer, TopUpRequested,
};
pub(crate) use prompt::{answer_prompts, close_prompt_of_leaving_buyer, open_prompts};

use bevy::prelude::*;

use crate::settings::MarketplaceSystems;

/// Buying: charge answers, then new prompts, then the players' answers to them.
pub(crate) struct PurchasePlugin;

impl Plugin for PurchasePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Charges>()
            .add_message::<PromptAnswer>()
            .add_message::<PromptProductPurchaseFinished>()
            .add_message::<PurchaseFailed>()
            .add_message::<TopUpRequested>()
            .add_observer(close_prompt_of_leaving_buyer)
            .add_systems(
                PreUpdate,
                (
                    retry_unconfirmed_charges,
                    handle_charge_replies,
                    open_prompts,
                    answer_prompts,
                )
                    .chain()
                    .in_set(MarketplaceSystems::Prompts),
            );
    }
}
