//! Buying: the purchase prompt (one per player, confirmed by a UI or a headless policy), the charge
//! it sends to the ledger.

mod charge;
mod messages;
mod prompt;

pub(crate) use charge::{Charges, handle_charge_replies, retry_unconfirmed_charges};
pub use messages::{
    PromptAction, PromptAnswer, PromptProductPurchaseFinished, PromptRefusal, PromptRefused,
    PurchaseError, PurchaseFailed, TopUpOffer, TopUpRequested,
};
pub use prompt::{ConfirmPolicy, OpenPrompt, PromptState};
pub(crate) use prompt::{
    NextPromptId, answer_prompts, close_prompt_taken_away, open_prompts, show_rejections,
};

use bevy::prelude::*;

use crate::settings::MarketplaceSystems;

/// Buying: charge answers, then new prompts, then the players' answers to them.
pub(crate) struct PurchasePlugin;

impl Plugin for PurchasePlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<Charges>()
            .init_resource::<NextPromptId>()
            .add_message::<PromptAnswer>()
            .add_message::<PromptRefused>()
            .add_message::<PromptProductPurchaseFinished>()
            .add_message::<PurchaseFailed>()
            .add_message::<TopUpRequested>()
            .add_observer(close_prompt_taken_away)
            .add_systems(
                PreUpdate,
                // Answers before new prompts: "OK" and a new "Buy" in one frame close the old
                // prompt and open the new one.
                (
                    retry_unconfirmed_charges,
                    handle_charge_replies,
                    show_rejections,
                    answer_prompts,
                    open_prompts,
                )
                    .chain()
                    .in_set(MarketplaceSystems::Prompts),
            );
    }
}
