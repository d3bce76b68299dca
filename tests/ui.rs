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
