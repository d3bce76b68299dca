//! Buying: the purchase prompt (one per player, confirmed by a UI or a headless policy), the charge
//! it sends to the ledger.

mod charge;
mod prompt;

pub(crate) use charge::handle_charge_replies;
pub use prompt::{
    ConfirmPolicy, PromptAction, PromptAnswer, PromptProductPurchaseFinished, PromptState,
    PurchaseError, PurchaseFailed, PurchasePrompt, TopUpOffer, TopUpRequested,
};
pub(crate) use prompt::{answer_prompts, close_prompt_of_leaving_buyer, open_prompts};
