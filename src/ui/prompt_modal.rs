//! The purchase prompt as an egui modal.

use bevy_egui::egui::{self, Align, Color32, Key, Layout, RichText, Vec2};

use crate::currency::PremiumCurrency;
use crate::purchase::{OpenPrompt, PromptAction, PromptState};
use crate::service::MarketplaceService;

use super::ProductIcons;

/// What the prompt shows: everything needed to draw it, without the ECS (so it can be tested
/// with a bare `egui::Context`).
#[derive(Clone, Debug)]
pub struct PromptView {
    /// Product name (or a placeholder for an unknown product).
    pub name: String,
    /// Product description.
    pub description: Option<String>,
    /// Icon texture, if loaded.
    pub icon: Option<egui::TextureId>,
    /// Price shown.
    pub price: u64,
    /// Balance now.
    pub balance: u64,
    /// Balance before the purchase (when the prompt opened).
    pub balance_before: u64,
    /// Where the prompt is.
    pub state: PromptState,
    /// Test purchase badge.
    pub test_purchase: bool,
    /// Currency for amounts.
    pub currency: PremiumCurrency,
    /// The game's top-up button ([`TopUpOffer`](crate::TopUpOffer)), shown when the player cannot
    /// afford the product.
    pub top_up: Option<String>,
}

impl PromptView {
    /// The view of an open prompt.
    pub fn new(
        prompt: &OpenPrompt,
        balance: u64,
        service: &MarketplaceService,
        icons: &ProductIcons,
    ) -> Self {
        let product = prompt.product.as_ref();
        Self {
            name: product.map_or_else(
                || format!("Product {}", prompt.product_id),
                |p| p.name.clone(),
            ),
            description: product.and_then(|p| p.description.clone()),
            icon: product
                .and_then(|p| p.icon.as_deref())
                .and_then(|path| icons.texture(path)),
            price: prompt.price,
            balance,
            balance_before: prompt.balance_before,
            state: prompt.state.clone(),
            test_purchase: prompt.test_purchase,
            currency: service.currency().clone(),
            top_up: None,
        }
    }
}

const GOLD: Color32 = Color32::from_rgb(250, 200, 60);
const GOOD: Color32 = Color32::from_rgb(110, 210, 120);
const BAD: Color32 = Color32::from_rgb(240, 110, 100);

/// Draws the prompt modal; returns the button the player pressed this frame, if any.
/// Enter presses the main button (Buy, or OK once done); Escape cancels (or closes once done).
pub fn prompt_modal(ctx: &egui::Context, view: &PromptView) -> Option<PromptAction> {
    let mut action = None;
    let (enter, escape) = ctx.input(|i| (i.key_pressed(Key::Enter), i.key_pressed(Key::Escape)));
    egui::Modal::new(egui::Id::new("bevy_marketplace_purchase_prompt")).show(ctx, |ui| {
        ui.set_width(380.0);
        ui.horizontal(|ui| {
            let size = Vec2::splat(96.0);
            match view.icon {
                Some(texture) => {
                    ui.add(egui::Image::new((texture, size)));
                }
                None => {
                    let (rect, _) = ui.allocate_exact_size(size, egui::Sense::hover());
                    ui.painter()
                        .circle_filled(rect.center(), 46.0, Color32::from_gray(70));
                    ui.painter().text(
                        rect.center(),
                        egui::Align2::CENTER_CENTER,
                        "?",
                        egui::FontId::proportional(40.0),
                        Color32::from_gray(200),
                    );
                }
            }
            ui.vertical(|ui| {
                ui.label(RichText::new(&view.name).heading().strong());
                if let Some(description) = &view.description {
                    ui.label(description);
                }
                if view.test_purchase {
                    ui.label(
                        RichText::new(" TEST PURCHASE ")
                            .small()
                            .strong()
                            .color(Color32::BLACK)
                            .background_color(Color32::from_rgb(120, 190, 255)),
                    );
                }
            });
        });
        ui.separator();
        egui::Grid::new("prompt_amounts")
            .num_columns(2)
            .spacing([24.0, 6.0])
            .show(ui, |ui| {
                ui.label("Price");
                ui.label(
                    RichText::new(view.currency.format(view.price))
                        .color(GOLD)
                        .strong(),
                );
                ui.end_row();
                // Once bought, the line below shows the new balance; this one is the old.
                ui.label(if matches!(view.state, PromptState::Purchased(_)) {
                    "Balance before"
                } else {
                    "Your balance"
                });
                ui.label(view.currency.format(view.balance_before));
                ui.end_row();
                if matches!(
                    view.state,
                    PromptState::AwaitingConfirmation | PromptState::Purchasing
                ) {
                    ui.label("After purchase");
                    match view.balance_before.checked_sub(view.price) {
                        Some(after) => ui.label(view.currency.format(after)),
                        None => ui.label(RichText::new("not enough").color(BAD)),
                    };
                    ui.end_row();
                }
            });
        if view.test_purchase {
            ui.label(
                RichText::new("This is a test purchase; your account will not be charged.")
                    .italics(),
            );
        }
        ui.add_space(8.0);
        match &view.state {
            PromptState::AwaitingConfirmation => {
                ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                    let buy = ui.add(
                        egui::Button::new(RichText::new("  Buy  ").strong())
                            .fill(Color32::from_rgb(40, 120, 60)),
                    );
                    let cancel = ui.button("Cancel");
                    if buy.clicked() || enter {
                        action = Some(PromptAction::Confirm);
                    } else if cancel.clicked() || escape {
                        action = Some(PromptAction::Cancel);
                    }
                });
            }
            PromptState::Purchasing => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Purchasing…");
                });
            }
            PromptState::Unconfirmed => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(RichText::new("We could not confirm your purchase yet.").strong());
                });
                ui.label(
                    "If it went through, it will be delivered; you will never be charged twice. \
                     You can close this and keep playing.",
                );
                ui.with_layout(Layout::right_to_left(Align::Center), |ui| {
                    if ui.button("  OK  ").clicked() || enter || escape {
                        action = Some(PromptAction::Close);
                    }
                });
            }
            PromptState::Purchased(_) | PromptState::Failed(_) => {
                if let PromptState::Failed(error) = &view.state {
                    ui.label(RichText::new(format!("⚠ {error}")).color(BAD).strong());
                    if let crate::PurchaseError::Refunded { .. } = error {
                        ui.label(format!(
                            "Your currency is back. Your balance: {}",
                            view.currency.format(view.balance)
                        ));
                    }
                } else {
                    ui.label(RichText::new("✔ Purchase successful!").color(GOOD).strong());
                    ui.label(format!(
                        "Your balance: {}",
                        view.currency.format(view.balance)
                    ));
                }
                let short_of_funds = matches!(
                    view.state,
                    PromptState::Failed(crate::PurchaseError::NotEnoughFunds { .. })
                );
                let offer = view.top_up.as_deref().filter(|_| short_of_funds);
                let (ok, top_up) = ui
                    .with_layout(Layout::right_to_left(Align::Center), |ui| {
                        let ok = ui.button("  OK  ");
                        let top_up = offer.map(|label| {
                            ui.add(
                                egui::Button::new(RichText::new(label).strong())
                                    .fill(Color32::from_rgb(40, 90, 150)),
                            )
                        });
                        (ok, top_up)
                    })
                    .inner;
                if top_up.is_some_and(|b| b.clicked()) {
                    action = Some(PromptAction::TopUp);
                } else if ok.clicked() || enter || escape {
                    action = Some(PromptAction::Close);
                }
            }
        }
    });
    action
}
