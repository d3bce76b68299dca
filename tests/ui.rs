//! The egui purchase prompt and product icons, without a window.

mod common;

use std::io::Cursor;
use std::path::Path;

use bevy::asset::io::memory::Dir;
use bevy::prelude::*;
use bevy_egui::egui;
use bevy_marketplace::icon::{ICON_SIZE, IconError, decode_icon};
use bevy_marketplace::prelude::*;
use bevy_marketplace::ui::{PromptView, prompt_modal};
use bevy_marketplace::{CatalogStatus, PromptAction, PromptState, PurchaseError, ReceiptInfo};
use image::{ImageFormat, Rgba, RgbaImage};

fn view(state: PromptState) -> PromptView {
    PromptView {
        name: "Full Heal".into(),
        description: Some("Restores your health to full.".into()),
        icon: None,
        price: 50,
        balance: 1000,
        balance_before: 1000,
        state,
        test_purchase: false,
        currency: PremiumCurrency::new("Robux", "R$"),
        top_up: None,
    }
}

fn collect_text(shape: &egui::epaint::Shape, out: &mut String) {
    match shape {
        egui::epaint::Shape::Text(text) => {
            out.push_str(text.galley.text());
            out.push('\n');
        }
        egui::epaint::Shape::Vec(shapes) => shapes.iter().for_each(|s| collect_text(s, out)),
        _ => {}
    }
}

/// Runs two frames (egui lays out modals on the first) with `keys` pressed on the second;
/// returns the action and the text drawn.
fn run(view: &PromptView, keys: &[egui::Key]) -> (Option<PromptAction>, String) {
    let ctx = egui::Context::default();
    let mut action = None;
    let mut text = String::new();
    for frame in 0..2 {
        let mut input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1280.0, 720.0),
            )),
            ..Default::default()
        };
        if frame == 1 {
            for key in keys {
                input.events.push(egui::Event::Key {
                    key: *key,
                    physical_key: None,
                    pressed: true,
                    repeat: false,
                    modifiers: Default::default(),
                });
            }
        }
        let mut output = ctx.run_ui(input, |ui| {
            action = prompt_modal(ui.ctx(), view).or(action);
        });
        text.clear();
        for clipped in &output.shapes {
            collect_text(&clipped.shape, &mut text);
        }
        output.textures_delta.clear();
    }
    (action, text)
}

#[test]
fn the_prompt_shows_product_price_and_balances() {
    let (action, text) = run(&view(PromptState::AwaitingConfirmation), &[]);
    assert_eq!(action, None);
    for expected in [
        "Full Heal",
        "Restores your health to full.",
        "R$ 50",
        "R$ 1000",
        "R$ 950",
        "Buy",
        "Cancel",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("TEST PURCHASE"));
}

#[test]
fn enter_buys_and_escape_cancels() {
    let prompt = view(PromptState::AwaitingConfirmation);
    assert_eq!(
        run(&prompt, &[egui::Key::Enter]).0,
        Some(PromptAction::Confirm)
    );
    assert_eq!(
        run(&prompt, &[egui::Key::Escape]).0,
        Some(PromptAction::Cancel)
    );
}

#[test]
fn errors_are_shown_in_plain_words_and_ok_closes() {
    let failed = view(PromptState::Failed(PurchaseError::NotEnoughFunds {
        balance: 20,
        price: 50,
        missing: 30,
    }));
    let (action, text) = run(&failed, &[]);
    assert_eq!(action, None);
    assert!(
        text.contains("You need 30 more to buy this item."),
        "{text}"
    );
    assert!(!text.contains("Buy"), "no Buy button on an error: {text}");
    assert_eq!(
        run(&failed, &[egui::Key::Enter]).0,
        Some(PromptAction::Close)
    );
    let (_, text) = run(&view(PromptState::Failed(PurchaseError::NotForSale)), &[]);
    assert!(text.contains("not currently for sale"), "{text}");
    let (_, text) = run(
        &view(PromptState::Failed(PurchaseError::Refunded {
            reason: "You were revived before it arrived".into(),
        })),
        &[],
    );
    assert!(
        text.contains("Refunded: You were revived before it arrived"),
        "{text}"
    );
    assert!(text.contains("Your currency is back."), "{text}");
}

#[test]
fn success_and_test_purchases_are_labelled() {
    let receipt = ReceiptInfo {
        purchase_id: bevy_marketplace::PurchaseId::new(),
        player_id: UserId(1),
        product_id: ProductId(123123),
        place_id_where_purchased: Default::default(),
        currency_spent: 0,
        currency_type: Default::default(),
        product_purchase_channel: Default::default(),
        is_test_purchase: true,
    };
    let mut done = view(PromptState::Purchased(receipt));
    done.test_purchase = true;
    let (_, text) = run(&done, &[]);
    assert!(text.contains("Purchase successful"), "{text}");
    assert!(text.contains("TEST PURCHASE"), "{text}");
    assert!(text.contains("will not be charged"), "{text}");
    assert_eq!(
        run(&done, &[egui::Key::Escape]).0,
        Some(PromptAction::Close)
    );
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_pixel(width, height, Rgba([200, 40, 60, 255]));
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, ImageFormat::Png).unwrap();
    bytes.into_inner()
}

#[test]
fn icons_are_cropped_to_a_circle() {
    let icon = decode_icon(&png(ICON_SIZE, ICON_SIZE)).unwrap();
    assert_eq!(icon.dimensions(), (512, 512));
    assert_eq!(icon.get_pixel(0, 0).0[3], 0, "corners are transparent");
    assert_eq!(icon.get_pixel(511, 511).0[3], 0);
    assert_eq!(icon.get_pixel(30, 30).0[3], 0, "outside the circle");
    assert_eq!(
        icon.get_pixel(256, 256).0,
        [200, 40, 60, 255],
        "the centre is untouched"
    );
    assert_eq!(icon.get_pixel(256, 2).0[3], 255, "inside near the top edge");
}

#[test]
fn icons_of_the_wrong_size_or_format_are_refused() {
    assert_eq!(
        decode_icon(&png(256, 256)),
        Err(IconError::Size {
            width: 256,
            height: 256
        })
    );
    let mut gif = Cursor::new(Vec::new());
    RgbaImage::new(4, 4)
        .write_to(&mut gif, ImageFormat::Gif)
        .ok();
    let gif = if gif.get_ref().is_empty() {
        b"GIF89a....".to_vec()
    } else {
        gif.into_inner()
    };
    assert!(matches!(decode_icon(&gif), Err(IconError::Format(_))));
    assert!(matches!(
        decode_icon(b"not an image at all"),
        Err(IconError::Format(_))
    ));
}

#[test]
fn the_shipped_icons_are_valid() {
    for name in ["full_heal", "gold_pouch", "gold_chest", "arrows"] {
        let bytes = std::fs::read(format!("assets/icons/{name}.png")).unwrap();
        decode_icon(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn a_catalog_with_a_bad_icon_is_a_clear_catalog_error() {
    let dir = Dir::default();
    dir.insert_asset_text(
        Path::new("products.ron"),
        "(products: [\n  (id: 1, name: \"Potion\", price: 5, icon: \"icons/potion.png\"),\n  (id: 2, name: \"Gold\", price: 5, icon: \"icons/small.png\"),\n])",
    );
    let icons = dir.get_or_insert_dir(Path::new("icons"));
    icons.insert_asset(Path::new("potion.png"), png(512, 512));
    icons.insert_asset(Path::new("small.png"), png(100, 80));
    let mut app = common::asset_app(&dir);
    for _ in 0..2000 {
        app.update();
        if app.world().resource::<CatalogStatus>().last_error.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let error = app
        .world()
        .resource::<CatalogStatus>()
        .last_error
        .clone()
        .expect("the catalog is refused");
    assert!(
        error.contains("products.ron:3:4: product 2 (\"Gold\"): icon \"icons/small.png\" is 100×80; product icons must be 512×512"),
        "{error}"
    );
    assert!(
        app.world()
            .resource::<MarketplaceService>()
            .catalog()
            .is_empty()
    );
}

// ------------------------------------------------------------------ debug panel reports

use bevy_marketplace::ledger::{
    Clawback, HistoryEntry, RefundRecord, SalesBucket, SalesQuery, SalesRow,
};
use bevy_marketplace::ui::{history_table, sales_chart};
use bevy_marketplace::{PurchaseId, ReceiptState, UserId};

/// Where each text was drawn (its top-left corner).
fn texts_at(shape: &egui::epaint::Shape, out: &mut Vec<(String, egui::Pos2)>) {
    match shape {
        egui::epaint::Shape::Text(text) => out.push((text.galley.text().to_owned(), text.pos)),
        egui::epaint::Shape::Vec(shapes) => shapes.iter().for_each(|s| texts_at(s, out)),
        _ => {}
    }
}

fn entry(id: &str, product: i64, name: &str, paid: u64, refund: Option<Clawback>) -> HistoryEntry {
    HistoryEntry {
        receipt: ReceiptInfo {
            purchase_id: PurchaseId(id.into()),
            player_id: UserId(1),
            product_id: ProductId(product),
            place_id_where_purchased: bevy_marketplace::PlaceId(0),
            currency_spent: paid,
            currency_type: Default::default(),
            product_purchase_channel: Default::default(),
            is_test_purchase: false,
        },
        state: if refund.is_some() {
            ReceiptState::Refunded
        } else {
            ReceiptState::Granted
        },
        product_name: name.into(),
        purchased_at_ms: 1_795_000_000_000,
        granted_at_ms: Some(1_795_000_000_100),
        refund: refund.map(|clawback| RefundRecord {
            at_ms: 1_795_000_001_000,
            reason: "test".into(),
            clawback,
        }),
    }
}

/// Draws the history table for four frames, clicking at `click` (pressed on the second frame,
/// released on the third); returns what it reported clicked and the texts drawn.
fn history_frames(
    entries: &[HistoryEntry],
    allowed: bool,
    click: Option<egui::Pos2>,
) -> (Option<PurchaseId>, Vec<(String, egui::Pos2)>) {
    let ctx = egui::Context::default();
    let currency = PremiumCurrency::new("Robux", "R$");
    let (mut clicked, mut texts) = (None, Vec::new());
    for frame in 0..4 {
        let mut input = egui::RawInput {
            screen_rect: Some(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(1280.0, 720.0),
            )),
            ..Default::default()
        };
        if let Some(at) = click {
            input.events.push(egui::Event::PointerMoved(at));
            if frame == 1 || frame == 2 {
                input.events.push(egui::Event::PointerButton {
                    pos: at,
                    button: egui::PointerButton::Primary,
                    pressed: frame == 1,
                    modifiers: Default::default(),
                });
            }
        }
        let mut output = ctx.run_ui(input, |ui| {
            clicked = history_table(ui, entries, &currency, allowed).or(clicked.clone());
        });
        texts.clear();
        for clipped in &output.shapes {
            texts_at(&clipped.shape, &mut texts);
        }
        output.textures_delta.clear();
    }
    (clicked, texts)
}

#[test]
fn the_history_table_lists_purchases_and_its_refund_button_names_the_row() {
    let entries = [
        entry(
            "aaaa0001",
            456456,
            "Pouch of Gold",
            80,
            Some(Clawback::Done),
        ),
        entry("aaaa0002", 111222, "Arrow Bundle", 15, None),
        entry("aaaa0003", 123123, "Full Heal", 50, None),
    ];
    let (clicked, texts) = history_frames(&entries, true, None);
    let all: Vec<&str> = texts.iter().map(|(t, _)| t.as_str()).collect();
    for expected in ["Pouch of Gold", "refunded, taken back", "R$ 15", "granted"] {
        assert!(all.contains(&expected), "{expected:?} not in {all:?}");
    }
    assert_eq!(clicked, None);
    // No Refund button on a refunded row: the buttons are for the other two.
    let buttons: Vec<egui::Pos2> = texts
        .iter()
        .filter(|(t, _)| t == "Refund")
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(buttons.len(), 2);

    // Clicking the second button refunds the third row (Full Heal).
    let at = buttons[1] + egui::vec2(4.0, 4.0);
    let (clicked, _) = history_frames(&entries, true, Some(at));
    assert_eq!(clicked, Some(PurchaseId("aaaa0003".into())));
    // Without cheats the button is there but does nothing.
    let (clicked, _) = history_frames(&entries, false, Some(at));
    assert_eq!(clicked, None);
}

#[test]
fn the_sales_chart_sums_what_it_draws() {
    let day = SalesBucket::Day.millis();
    let rows = [
        SalesRow {
            bucket_start_ms: 20_000 * day,
            product_id: ProductId(456456),
            units: 3,
            currency: 240,
            refunded_units: 1,
            refunded_currency: 80,
            test_units: 2,
            rejected_units: 0,
            rejected_currency: 0,
        },
        SalesRow {
            bucket_start_ms: 20_001 * day,
            product_id: ProductId(111222),
            units: 1,
            currency: 15,
            refunded_units: 0,
            refunded_currency: 0,
            test_units: 0,
            rejected_units: 0,
            rejected_currency: 0,
        },
    ];
    let query = SalesQuery {
        from_ms: 19_995 * day,
        to_ms: 20_002 * day,
        bucket: SalesBucket::Day,
    };
    let text = sales_chart_texts(&rows, &query);
    assert!(
        text.contains("4 sold for R$ 255, R$ 80 refunded, net R$ 175; 2 test purchase(s)"),
        "{text}"
    );
    assert!(
        text.contains("Pouch of Gold"),
        "the legend names the product: {text}"
    );
    assert!(
        text.contains("product 111222"),
        "an unknown product by id: {text}"
    );
}

/// The texts `sales_chart` draws for `rows`, after two frames (the plot lays out on the first).
fn sales_chart_texts(rows: &[SalesRow], query: &SalesQuery) -> String {
    let names = std::collections::BTreeMap::from([(ProductId(456456), "Pouch of Gold".into())]);
    let ctx = egui::Context::default();
    let mut text = String::new();
    for _ in 0..2 {
        let mut output = ctx.run_ui(egui::RawInput::default(), |ui| {
            sales_chart(
                ui,
                query,
                rows,
                &names,
                &PremiumCurrency::new("Robux", "R$"),
            );
        });
        text.clear();
        for clipped in &output.shapes {
            collect_text(&clipped.shape, &mut text);
        }
        output.textures_delta.clear();
    }
    text
}

#[test]
fn a_week_of_test_purchases_only_draws_no_bars_and_no_negative_units() {
    let day = SalesBucket::Day.millis();
    let rows = [SalesRow {
        bucket_start_ms: 20_000 * day,
        product_id: ProductId(456456),
        units: 0,
        currency: 0,
        refunded_units: 0,
        refunded_currency: 0,
        test_units: 3,
        rejected_units: 0,
        rejected_currency: 0,
    }];
    let query = SalesQuery {
        from_ms: 19_995 * day,
        to_ms: 20_002 * day,
        bucket: SalesBucket::Day,
    };
    let text = sales_chart_texts(&rows, &query);
    assert!(
        text.contains("0 sold for R$ 0, R$ 0 refunded, net R$ 0; 3 test purchase(s)"),
        "{text}"
    );
    assert!(
        !text.contains("Pouch of Gold"),
        "no legend entry for a product sold only in tests: {text}"
    );
    assert!(
        !text.contains("-1") && !text.contains("\u{2212}1"),
        "no negative units on the axis: {text}"
    );
}

#[test]
fn the_games_top_up_button_shows_only_when_the_player_is_short_of_funds() {
    let short = PromptState::Failed(PurchaseError::NotEnoughFunds {
        balance: 20,
        price: 50,
        missing: 30,
    });
    let offered = PromptView {
        top_up: Some("Get more Robux".into()),
        ..view(short.clone())
    };
    let (_, text) = run(&offered, &[]);
    assert!(text.contains("Get more Robux"), "{text}");
    assert!(text.contains("You need 30 more"), "{text}");
    let (_, text) = run(&view(short), &[]);
    assert!(!text.contains("Get more"), "no offer, no button: {text}");
    let other = PromptView {
        top_up: Some("Get more Robux".into()),
        ..view(PromptState::Failed(PurchaseError::NotForSale))
    };
    let (_, text) = run(&other, &[]);
    assert!(!text.contains("Get more"), "{text}");
}

/// An app with the egui prompt plugin and a catalog in code, but no `EguiPlugin`.
fn app_without_egui() -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        MarketplacePlugin::default()
            .with_catalog(common::catalog())
            .with_ledger(bevy_marketplace::ledger::LedgerBackend::in_memory()),
        MarketplaceUiPlugin,
    ));
    app
}

#[test]
fn without_egui_plugin_the_prompt_plugin_says_what_to_add() {
    let mut app = app_without_egui();
    let ((), log) = common::logged(|| app.finish());
    assert!(
        log.contains("WARN") && log.contains("EguiPlugin is not added"),
        "{log}"
    );
}

/// A prompt that stays open with no egui context (no camera) to draw it is reported once; with
/// a context there is nothing to report.
#[test]
fn a_prompt_with_no_camera_to_draw_it_is_reported() {
    for with_camera in [false, true] {
        let mut app = app_without_egui();
        if with_camera {
            // What bevy_egui puts on the first camera.
            app.world_mut().spawn(bevy_egui::PrimaryEguiContext);
        }
        let player = app.world_mut().spawn(Buyer::new(UserId(1))).id();
        let ((), log) = common::logged(|| {
            app.finish(); // as App::run does: prompts wait for the player's answer
            app.update();
            app.world_mut().write_message(PromptProductPurchase {
                player,
                product_id: ProductId(456456),
            });
            for _ in 0..100 {
                app.update();
            }
        });
        assert!(
            app.world()
                .get::<bevy_marketplace::OpenPrompt>(player)
                .is_some()
        );
        let reported = log.matches("no egui context to draw it").count();
        assert_eq!(reported, usize::from(!with_camera), "{log}");
    }
}
