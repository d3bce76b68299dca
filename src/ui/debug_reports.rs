//! The debug panel's ledger reports: the selected player's purchase history (with a Refund
//! button, gated like the other cheats) and a chart of sales per day or hour per product.

use std::collections::BTreeMap;

use bevy::prelude::*;
use bevy_egui::{EguiContexts, egui};
use egui_plot::{Bar, BarChart, Corner, GridMark, Legend, Plot};

use crate::currency::PremiumCurrency;
use crate::ids::{ProductId, PurchaseId, UserId};
use crate::ledger::{
    Clawback, HistoryEntry, HistoryFilter, HistoryPage, SalesBucket, SalesQuery, SalesRow,
};
use crate::players::{Buyer, ReceiptRefunded, ReceiptResolved};
use crate::receipt::ReceiptState;
use crate::service::{MarketplaceService, PurchaseHistoryReady, RefundFinished, SalesReportReady};

use super::debug_panel::DebugPanel;

/// What the report windows last asked the ledger and what it answered.
#[derive(Default, Debug)]
pub(super) struct Reports {
    /// `(user, page)` of the history asked for; `None` asks again.
    history_asked: Option<(UserId, u32)>,
    history: Option<(UserId, u32, Result<HistoryPage, String>)>,
    page: u32,
    sales_asked: Option<SalesBucket>,
    sales: Option<(SalesQuery, Result<Vec<SalesRow>, String>)>,
    /// The last refund's answer, shown under the history.
    refund_note: Option<(String, bool)>,
}

/// Keeps the ledger's answers to the windows' questions, and asks again when purchases, grants or
/// refunds change what they show.
pub(super) fn record_reports(
    mut panel: ResMut<DebugPanel>,
    mut history: MessageReader<PurchaseHistoryReady>,
    mut sales: MessageReader<SalesReportReady>,
    mut refunds: MessageReader<RefundFinished>,
    mut resolved: MessageReader<ReceiptResolved>,
    mut refunded: MessageReader<ReceiptRefunded>,
) {
    let changed = !resolved.is_empty() || !refunded.is_empty() || !refunds.is_empty();
    resolved.clear();
    refunded.clear();
    let reports = &mut panel.reports;
    for answer in history.read() {
        if reports.history_asked == Some((answer.user_id, answer.page))
            && answer.filter == HistoryFilter::default()
        {
            reports.history = Some((answer.user_id, answer.page, answer.result.clone()));
        }
    }
    for answer in sales.read() {
        if reports.sales_asked == Some(answer.query.bucket) {
            reports.sales = Some((answer.query, answer.result.clone()));
        }
    }
    for answer in refunds.read() {
        reports.refund_note = Some(match &answer.result {
            Ok(outcome) => (
                format!(
                    "refunded {}: {} back to user {}; {}",
                    short(&answer.purchase_id),
                    outcome.receipt.currency_spent,
                    outcome.receipt.player_id,
                    match outcome.clawback {
                        Clawback::Pending => "its refund handler takes the effect back",
                        _ => "it was never granted",
                    }
                ),
                true,
            ),
            Err(e) => (
                format!("refund of {} failed: {e}", short(&answer.purchase_id)),
                false,
            ),
        });
    }
    if changed {
        reports.history_asked = None;
        reports.sales_asked = None;
    }
}

/// The last 8 characters of a purchase id: purchase ids start with their time, so the end tells
/// them apart.
pub(super) fn short(id: &PurchaseId) -> &str {
    &id.0[id.0.len().saturating_sub(8)..]
}

fn time_of(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

/// Draws the History and Sales windows the panel opened.
pub(super) fn draw_reports(
    mut contexts: EguiContexts,
    mut panel: ResMut<DebugPanel>,
    mut service: ResMut<MarketplaceService>,
    players: Query<&Buyer>,
) -> Result {
    if !panel.open || !(panel.show_history || panel.show_sales) {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let panel = &mut *panel;
    let user = panel
        .selected()
        .and_then(|e| players.get(e).ok())
        .map(|p| p.user_id);
    if panel.show_history {
        let mut open = true;
        egui::Window::new("Purchase history")
            .open(&mut open)
            .default_width(560.0)
            .default_pos([560.0, 60.0])
            .show(ctx, |ui| match user {
                None => {
                    ui.label("No player selected.");
                }
                Some(user) => {
                    if let Some(id) = history_window(ui, &mut panel.reports, user, &mut service) {
                        service.refund(id, "debug panel");
                    }
                }
            });
        panel.show_history = open;
    }
    if panel.show_sales {
        let mut open = true;
        let currency = service.currency().clone();
        egui::Window::new("Sales")
            .open(&mut open)
            .default_width(560.0)
            .default_pos([560.0, 360.0])
            .show(ctx, |ui| {
                ui.horizontal(|ui| {
                    ui.selectable_value(&mut panel.sales_hourly, false, "per day, last 7 days");
                    ui.selectable_value(&mut panel.sales_hourly, true, "per hour, last 24 hours");
                });
                let bucket = if panel.sales_hourly {
                    SalesBucket::Hour
                } else {
                    SalesBucket::Day
                };
                if panel.reports.sales_asked != Some(bucket) {
                    let now = crate::ledger::now_ms();
                    let span = if panel.sales_hourly { 24 } else { 7 } * bucket.millis();
                    service.request_sales_report(SalesQuery {
                        from_ms: bucket.start_of(now - span + bucket.millis()),
                        to_ms: now + 1,
                        bucket,
                    });
                    panel.reports.sales_asked = Some(bucket);
                }
                match &panel.reports.sales {
                    None => {
                        ui.label("Asking the ledger…");
                    }
                    Some((_, Err(e))) => {
                        ui.colored_label(egui::Color32::from_rgb(230, 80, 80), e);
                    }
                    Some((query, Ok(rows))) => {
                        let names: BTreeMap<ProductId, String> = service
                            .catalog()
                            .products()
                            .iter()
                            .map(|p| (p.product_id, p.name.clone()))
                            .collect();
                        sales_chart(ui, query, rows, &names, &currency);
                    }
                }
            });
        panel.show_sales = open;
    }
    Ok(())
}

/// The selected player's history, a page at a time; returns the purchase whose Refund button was
/// clicked.
fn history_window(
    ui: &mut egui::Ui,
    reports: &mut Reports,
    user: UserId,
    service: &mut MarketplaceService,
) -> Option<PurchaseId> {
    if reports.history_asked.is_some_and(|(u, _)| u != user) {
        reports.page = 0;
    }
    let asked = (user, reports.page);
    if reports.history_asked != Some((user, reports.page)) {
        service.request_purchase_history(user, HistoryFilter::default(), reports.page);
        reports.history_asked = Some((user, reports.page));
    }
    let cheats = service.debug_grants_allowed();
    let currency = service.currency().clone();
    ui.label(format!("User {user}, newest first"));
    let mut refund = None;
    match &reports.history {
        Some((u, page, Ok(history))) if (*u, *page) == asked => {
            refund = history_table(ui, &history.entries, &currency, cheats);
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(reports.page > 0, egui::Button::new("◀ newer"))
                    .clicked()
                {
                    reports.page -= 1;
                }
                ui.label(format!("page {}", reports.page + 1));
                if ui
                    .add_enabled(!history.is_finished, egui::Button::new("older ▶"))
                    .clicked()
                {
                    reports.page += 1;
                }
            });
        }
        Some((_, _, Err(e))) => {
            ui.colored_label(egui::Color32::from_rgb(230, 80, 80), e);
        }
        _ => {
            ui.label("Asking the ledger…");
        }
    }
    if !cheats {
        ui.label("Refund is off: enable test_purchases or allow_debug_grants.");
    }
    if let Some((note, ok)) = &reports.refund_note {
        let color = if *ok {
            egui::Color32::from_rgb(120, 210, 130)
        } else {
            egui::Color32::from_rgb(230, 80, 80)
        };
        ui.colored_label(color, note);
    }
    refund
}

/// A page of history as a table, each purchase not yet refunded with a Refund button (enabled
/// when `refunds_allowed`); returns the purchase whose button was clicked.
pub fn history_table(
    ui: &mut egui::Ui,
    entries: &[HistoryEntry],
    currency: &PremiumCurrency,
    refunds_allowed: bool,
) -> Option<PurchaseId> {
    let mut clicked = None;
    egui::ScrollArea::vertical()
        .max_height(260.0)
        .show(ui, |ui| {
            egui::Grid::new("debug_history")
                .striped(true)
                .show(ui, |ui| {
                    for h in ["bought (UTC)", "purchase", "product", "paid", "state", ""] {
                        ui.strong(h);
                    }
                    ui.end_row();
                    for entry in entries {
                        ui.label(time_of(entry.purchased_at_ms));
                        ui.monospace(short(&entry.receipt.purchase_id));
                        ui.label(&entry.product_name);
                        ui.label(if entry.receipt.is_test_purchase {
                            "test".to_owned()
                        } else {
                            currency.format(entry.receipt.currency_spent)
                        });
                        ui.label(match (&entry.state, &entry.refund) {
                            (ReceiptState::Refunded, Some(refund)) => match refund.clawback {
                                Clawback::NotNeeded => "refunded before its grant",
                                Clawback::Pending => "refunded, taking back",
                                Clawback::Done => "refunded, taken back",
                                Clawback::Kept => "refunded, effect kept",
                            }
                            .to_owned(),
                            (ReceiptState::Rejected, Some(refund)) => {
                                format!("rejected: {}", refund.reason)
                            }
                            (state, _) => state.as_str().to_owned(),
                        });
                        if !matches!(entry.state, ReceiptState::Refunded | ReceiptState::Rejected)
                            && ui
                                .add_enabled(refunds_allowed, egui::Button::new("Refund"))
                                .clicked()
                        {
                            clicked = Some(entry.receipt.purchase_id.clone());
                        }
                        ui.end_row();
                    }
                });
        });
    clicked
}

/// Units sold per day or hour, one stacked bar per bucket, a colour per product, with the totals
/// under it.
pub fn sales_chart(
    ui: &mut egui::Ui,
    query: &SalesQuery,
    rows: &[SalesRow],
    names: &BTreeMap<ProductId, String>,
    currency: &PremiumCurrency,
) {
    let bucket_ms = query.bucket.millis() as f64;
    let mut by_product: BTreeMap<ProductId, Vec<Bar>> = BTreeMap::new();
    // Test purchases are counted in the totals only: a product sold only in tests gets no bar
    // and no legend entry.
    for row in rows.iter().filter(|r| r.units > 0) {
        by_product
            .entry(row.product_id)
            .or_default()
            .push(Bar::new(row.bucket_start_ms as f64 / bucket_ms, row.units as f64).width(0.7));
    }
    let mut charts: Vec<BarChart> = Vec::new();
    for (i, (product, bars)) in by_product.into_iter().enumerate() {
        let name = names
            .get(&product)
            .cloned()
            .unwrap_or_else(|| format!("product {product}"));
        let chart = BarChart::new(name, bars).color(PALETTE[i % PALETTE.len()]);
        let below: Vec<&BarChart> = charts.iter().collect();
        let chart = chart.stack_on(&below);
        charts.push(chart);
    }
    let hourly = query.bucket == SalesBucket::Hour;
    // The whole range asked for, a grid line per bucket, so quiet days show as quiet.
    let first = (query.from_ms as f64 / bucket_ms).floor();
    let last = ((query.to_ms - 1) as f64 / bucket_ms).floor();
    Plot::new("debug_sales_chart")
        .height(220.0)
        .default_x_bounds(first - 0.6, last + 0.6)
        .x_grid_spacer(|input| {
            let (from, to) = input.bounds;
            (from.ceil() as i64..=to.floor() as i64)
                .map(|v| GridMark {
                    value: v as f64,
                    step_size: 1.0,
                })
                .collect()
        })
        .legend(Legend::default().position(Corner::LeftTop))
        // Units start at 0 and the axis shows at least one, so an empty week is not drawn
        // around a negative axis.
        .include_y(0.0)
        .include_y(1.0)
        .allow_drag(false)
        .allow_zoom(false)
        .allow_scroll(false)
        .y_axis_label("units")
        .x_axis_formatter(move |mark, _| {
            let ms = (mark.value * bucket_ms) as i64;
            let text = time_of(ms);
            if hourly {
                text[11..16].to_owned()
            } else {
                text[5..10].to_owned()
            }
        })
        .show(ui, |plot| {
            for chart in charts {
                plot.bar_chart(chart);
            }
        });
    let units: u64 = rows.iter().map(|r| r.units).sum();
    let taken: u64 = rows.iter().map(|r| r.currency).sum();
    let refunded: u64 = rows.iter().map(|r| r.refunded_currency).sum();
    let rejected: u64 = rows.iter().map(|r| r.rejected_currency).sum();
    let rejects: u64 = rows.iter().map(|r| r.rejected_units).sum();
    let tests: u64 = rows.iter().map(|r| r.test_units).sum();
    let rejections = if rejects > 0 {
        format!(", {rejects} rejected ({} back)", currency.format(rejected))
    } else {
        String::new()
    };
    ui.label(format!(
        "{units} sold for {}, {} refunded{rejections}, net {}; {tests} test purchase(s)",
        currency.format(taken),
        currency.format(refunded),
        currency.format(taken.saturating_sub(refunded).saturating_sub(rejected)),
    ));
}

/// Bar colours, one per product.
const PALETTE: [egui::Color32; 6] = [
    egui::Color32::from_rgb(90, 170, 250),
    egui::Color32::from_rgb(250, 170, 70),
    egui::Color32::from_rgb(120, 210, 130),
    egui::Color32::from_rgb(230, 110, 150),
    egui::Color32::from_rgb(180, 140, 240),
    egui::Color32::from_rgb(220, 220, 110),
];
