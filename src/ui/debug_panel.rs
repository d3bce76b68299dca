//! The in-engine debug shop panel (F1): catalog, players with balances, pending or granted
//! receipts, live counters, buttons to simulate a purchase, grant premium currency or force a
//! retry.

use std::collections::VecDeque;

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

use crate::currency::PremiumBalance;
use crate::ids::ProductId;
use crate::ledger::LedgerStatus;
use crate::link::Ledger;
use crate::players::ReceiptResolved;
use crate::players::{Buyer, PlayerSession};
use crate::receipts::ReceiptDeliveryFailed;
use crate::service::MarketplaceService;
use crate::settings::MarketplaceStats;

use super::MarketplaceUiSystems;
use super::debug_reports::{Reports, draw_reports, record_reports};

/// How many recent receipts the panel keeps.
const RECENT: usize = 50;

/// Adds the debug shop panel, toggled with F1.
#[derive(Default)]
pub struct MarketplaceDebugPanelPlugin;

impl Plugin for MarketplaceDebugPanelPlugin {
    fn build(&self, app: &mut App) {
        app.init_resource::<DebugPanel>()
            .init_resource::<RecentReceipts>()
            .add_systems(PostUpdate, (record_receipts, record_reports))
            .add_systems(
                EguiPrimaryContextPass,
                (draw_debug_panel, draw_reports)
                    .chain()
                    .before(MarketplaceUiSystems::Prompt),
            );
    }
}

/// The panel's state.
#[derive(Resource, Default, Debug)]
pub struct DebugPanel {
    /// Shown or hidden (F1).
    pub open: bool,
    /// The selected player's purchase history window (with Refund buttons).
    pub show_history: bool,
    /// The sales chart window.
    pub show_sales: bool,
    /// Sales per hour over the last day instead of per day over the last week.
    pub sales_hourly: bool,
    selected_player: Option<Entity>,
    selected_product: Option<ProductId>,
    pub(super) reports: Reports,
}

impl DebugPanel {
    /// The player selected in the panel.
    pub fn selected(&self) -> Option<Entity> {
        self.selected_player
    }
}

/// Recently resolved and failed receipts, newest first.
#[derive(Resource, Default, Debug)]
pub struct RecentReceipts {
    /// `(summary, ok)`.
    pub entries: VecDeque<(String, bool)>,
}

fn record_receipts(
    mut resolved: MessageReader<ReceiptResolved>,
    mut failed: MessageReader<ReceiptDeliveryFailed>,
    mut refunded: MessageReader<crate::players::ReceiptRefunded>,
    mut recent: ResMut<RecentReceipts>,
) {
    for r in refunded.read() {
        recent.entries.push_front((
            format!(
                "refunded {}  user {}  product {}  effect {}",
                super::debug_reports::short(&r.receipt.purchase_id),
                r.receipt.player_id,
                r.receipt.product_id,
                match r.clawback {
                    crate::ledger::Clawback::Done => "taken back",
                    _ => "kept (no refund handler)",
                }
            ),
            true,
        ));
    }
    for r in resolved.read() {
        let r = &r.receipt;
        recent.entries.push_front((
            format!(
                "granted  {}  user {}  product {}  paid {}{}",
                super::debug_reports::short(&r.purchase_id),
                r.player_id,
                r.product_id,
                r.currency_spent,
                if r.is_test_purchase { "  (test)" } else { "" }
            ),
            true,
        ));
    }
    for f in failed.read() {
        recent.entries.push_front((
            format!(
                "not yet  {}  user {}  product {}  attempt {}: {:?}",
                super::debug_reports::short(&f.receipt.purchase_id),
                f.receipt.player_id,
                f.receipt.product_id,
                f.attempts,
                f.reason
            ),
            false,
        ));
    }
    recent.entries.truncate(RECENT);
}

fn draw_debug_panel(
    mut contexts: EguiContexts,
    mut panel: ResMut<DebugPanel>,
    mut service: ResMut<MarketplaceService>,
    players: Query<(Entity, &Buyer, &PlayerSession, &PremiumBalance)>,
    stats: Res<MarketplaceStats>,
    ledger: Res<Ledger>,
    recent: Res<RecentReceipts>,
) -> Result {
    let ctx = contexts.ctx_mut()?;
    if ctx.input(|i| i.key_pressed(egui::Key::F1)) {
        panel.open = !panel.open;
    }
    if !panel.open {
        return Ok(());
    }
    if panel.selected_player.is_none_or(|e| !players.contains(e)) {
        panel.selected_player = players.iter().next().map(|p| p.0);
    }
    let mut open = true;
    let currency = service.currency().clone();
    egui::Window::new("Marketplace debug (F1)")
        .open(&mut open)
        .default_width(520.0)
        .default_pos([16.0, 60.0])
        .show(ctx, |ui| {
            let pending: usize = players.iter().map(|p| p.2.pending_receipts().len()).sum();
            let uncommitted: usize = players.iter().map(|p| p.2.uncommitted_grants().len()).sum();
            ui.horizontal_wrapped(|ui| {
                ui.label(format!("pending {pending}"));
                ui.label(format!("committing {uncommitted}"));
                ui.label(format!("granted {}", stats.granted));
                ui.label(format!("charges {}", stats.charges));
                ui.label(format!("failures {}", stats.delivery_failures));
                ui.label(format!("panics {}", stats.handler_panics));
                ui.label(format!("save failures {}", stats.save_failures));
            });
            ui.label(match ledger.status() {
                LedgerStatus::Opening => "ledger: opening".to_owned(),
                LedgerStatus::Ready(at) => format!(
                    "ledger: {at} — {} transactions, {} in flight",
                    ledger.transactions(),
                    ledger.in_flight()
                ),
                LedgerStatus::Restarting(why) => format!("ledger RESTARTING: {why}"),
                LedgerStatus::Failed(e) => format!("ledger FAILED: {e}"),
                LedgerStatus::Unavailable(e) => format!("ledger UNAVAILABLE: {e}"),
            });
            ui.separator();

            egui::CollapsingHeader::new("Players")
                .default_open(true)
                .show(ui, |ui| {
                    egui::Grid::new("debug_players")
                        .striped(true)
                        .show(ui, |ui| {
                            for h in ["", "user", "balance", "session", "pending", "committing"] {
                                ui.strong(h);
                            }
                            ui.end_row();
                            for (entity, player, session, balance) in &players {
                                ui.radio_value(&mut panel.selected_player, Some(entity), "");
                                ui.label(player.user_id.to_string());
                                ui.label(currency.format(balance.0));
                                ui.label(format!("{:?}", session.phase()));
                                ui.label(session.pending_receipts().len().to_string());
                                ui.label(session.uncommitted_grants().len().to_string());
                                ui.end_row();
                            }
                        });
                    let selected = panel
                        .selected_player
                        .and_then(|e| players.get(e).ok())
                        .map(|(e, p, ..)| (e, p.user_id));
                    let cheats = service.debug_grants_allowed();
                    if !cheats {
                        ui.label(
                            "Grant and simulate are off: enable test_purchases or allow_debug_grants.",
                        );
                    }
                    ui.horizontal(|ui| {
                        ui.add_enabled_ui(selected.is_some(), |ui| {
                            if ui
                                .add_enabled(
                                    cheats,
                                    egui::Button::new(format!("Grant {}", currency.format(100))),
                                )
                                .clicked()
                                && let Some((_, user)) = selected
                            {
                                service.grant_premium_currency(user, 100, "debug panel");
                            }
                            if ui.button("Retry pending now").clicked()
                                && let Some((entity, _)) = selected
                            {
                                service.retry_pending(entity);
                            }
                        });
                        ui.toggle_value(&mut panel.show_history, "History");
                        ui.toggle_value(&mut panel.show_sales, "Sales");
                    });
                    ui.horizontal(|ui| {
                        let name = panel
                            .selected_product
                            .and_then(|id| service.catalog().get(id))
                            .map_or("choose a product".to_owned(), |p| p.name.clone());
                        egui::ComboBox::from_id_salt("debug_product")
                            .selected_text(name)
                            .show_ui(ui, |ui| {
                                for p in service.catalog().products().iter() {
                                    ui.selectable_value(
                                        &mut panel.selected_product,
                                        Some(p.product_id),
                                        &p.name,
                                    );
                                }
                            });
                        let ready =
                            cheats && selected.is_some() && panel.selected_product.is_some();
                        if ui
                            .add_enabled(ready, egui::Button::new("Simulate purchase"))
                            .clicked()
                            && let (Some((_, user)), Some(product)) =
                                (selected, panel.selected_product)
                            && let Err(e) = service.simulate_purchase(user, product)
                        {
                            tracing::warn!("debug panel: {e}");
                        }
                    });
                    if let Some((entity, _)) = selected
                        && let Ok((_, _, session, _)) = players.get(entity)
                    {
                        if let Some(error) = session.last_save_error() {
                            ui.colored_label(
                                egui::Color32::from_rgb(230, 80, 80),
                                format!("last save FAILED: {error}"),
                            );
                        }
                        for p in session.pending_receipts() {
                            ui.label(format!(
                                "pending {}  product {}  attempts {}",
                                super::debug_reports::short(&p.info.purchase_id),
                                p.info.product_id,
                                p.attempts
                            ));
                        }
                    }
                });

            egui::CollapsingHeader::new("Catalog").show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .max_height(180.0)
                    .show(ui, |ui| {
                        egui::Grid::new("debug_catalog")
                            .striped(true)
                            .show(ui, |ui| {
                                for h in ["id", "name", "price", "for sale"] {
                                    ui.strong(h);
                                }
                                ui.end_row();
                                for p in service.catalog().products().iter() {
                                    ui.label(p.product_id.to_string());
                                    ui.label(&p.name);
                                    ui.label(currency.format(p.price));
                                    ui.label(if p.is_for_sale { "yes" } else { "no" });
                                    ui.end_row();
                                }
                            });
                    });
            });

            egui::CollapsingHeader::new("Recent receipts")
                .default_open(true)
                .show(ui, |ui| {
                    egui::ScrollArea::vertical()
                        .max_height(160.0)
                        .show(ui, |ui| {
                            for (line, ok) in &recent.entries {
                                let color = if *ok {
                                    egui::Color32::from_rgb(120, 210, 130)
                                } else {
                                    egui::Color32::from_rgb(230, 170, 90)
                                };
                                ui.label(egui::RichText::new(line).monospace().color(color));
                            }
                        });
                });
        });
    panel.open = open;
    Ok(())
}
