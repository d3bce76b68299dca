//! The catalog: RON parsing, validation errors that name product and position, lookups, pages,
//! and loading / hot reloading as a Bevy asset.

mod common;

use std::path::Path;
use std::sync::Arc;

use bevy::asset::io::memory::Dir;
use bevy::prelude::*;
use bevy_marketplace::ledger::LedgerBackend;
use bevy_marketplace::prelude::*;
use bevy_marketplace::{
    CatalogError, CatalogStatus, FilePosition, MarketplaceError, PAGE_SIZE, Pages,
    ProductDefinition,
};

fn product(id: i64, name: &str, price: i64) -> String {
    format!("(id: {id}, name: {name:?}, price: {price}),\n")
}

fn catalog_text(products: &[String]) -> String {
    format!("(\n  products: [\n{}  ],\n)\n", products.concat())
}

#[test]
fn the_shipped_catalog_parses_with_defaults() {
    let catalog = common::catalog();
    assert_eq!(catalog.products().len(), 5);
    let heal = &catalog.products()[0];
    assert_eq!(heal.id, ProductId(123123));
    assert_eq!(heal.name, "Full Heal");
    assert_eq!(heal.price, 50);
    assert_eq!(heal.icon.as_deref(), Some("icons/full_heal.png"));
    assert_eq!(
        heal.category.as_deref(),
        Some("Potions"),
        "implicit Some works"
    );
    assert!(heal.for_sale, "for_sale defaults to true");
    assert!(!catalog.products()[4].for_sale);
}

#[test]
fn duplicate_ids_name_both_products_and_positions() {
    let text = catalog_text(&[product(1, "A", 5), product(2, "B", 5), product(1, "C", 5)]);
    let err = Catalog::from_ron_str(&text, "shop.ron").unwrap_err();
    assert_eq!(
        err,
        CatalogError::DuplicateId {
            file: "shop.ron".into(),
            position: FilePosition { line: 5, col: 2 },
            first: FilePosition { line: 3, col: 2 },
            id: ProductId(1),
            name: "C".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "shop.ron:5:2: product 1 (\"C\") reuses the id of the product at 3:2; ids must be unique"
    );
}

#[test]
fn duplicate_names_are_rejected() {
    let text = catalog_text(&[product(1, "Potion", 5), product(2, "Potion", 5)]);
    let err = Catalog::from_ron_str(&text, "shop.ron").unwrap_err();
    assert!(
        matches!(&err, CatalogError::DuplicateName { id: ProductId(2), name, position, .. }
            if name == "Potion" && position.line == 4),
        "{err}"
    );
}

/// A name the ledger could not keep with the product's receipts is refused where it is written.
#[test]
fn a_name_with_a_nul_character_is_rejected() {
    let text = catalog_text(&[product(1, "Potion", 5), product(2, "Eli\0xir", 5)]);
    let err = Catalog::from_ron_str(&text, "shop.ron").unwrap_err();
    assert!(
        matches!(&err, CatalogError::NulInName { id: ProductId(2), position, .. } if position.line == 4),
        "{err}"
    );
    assert!(err.to_string().starts_with("shop.ron:4:"), "{err}");
}

#[test]
fn prices_must_be_between_1_and_a_billion() {
    for ok in [1, 1_000_000_000] {
        Catalog::from_ron_str(&catalog_text(&[product(1, "A", ok)]), "p.ron").unwrap();
    }
    for bad in [0, -5, 1_000_000_001] {
        let err =
            Catalog::from_ron_str(&catalog_text(&[product(7, "A", bad)]), "p.ron").unwrap_err();
        assert!(
            matches!(err, CatalogError::PriceOutOfRange { price, id: ProductId(7), .. } if price == bad),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("p.ron:3:2: product 7 (\"A\") has price")
        );
    }
}

#[test]
fn empty_names_are_rejected() {
    let err = Catalog::from_ron_str(&catalog_text(&[product(3, "  ", 5)]), "p.ron").unwrap_err();
    assert_eq!(err.to_string(), "p.ron:3:2: product 3 has an empty name");
}

#[test]
fn syntax_errors_give_the_file_position() {
    let err = Catalog::from_ron_str(
        "(\n  products: [\n    (id: 1, name: \"A\" price: 5),\n  ],\n)",
        "p.ron",
    )
    .unwrap_err();
    let CatalogError::Parse { position, file, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(file, "p.ron");
    assert_eq!(position.line, 3, "{err}");
    let err = Catalog::from_ron_str(
        "(products: [(id: 1, name: \"A\", price: 5, colour: 3)])",
        "p.ron",
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("colour"),
        "unknown fields are named: {err}"
    );
}

#[test]
fn positions_ignore_ids_inside_strings_and_comments() {
    let text = "(\n // id: 9\n products: [\n  (name: \"id: 4\", id: 1, price: 5),\n  (id: 1, name: \"B\", price: 5),\n ],\n)";
    let err = Catalog::from_ron_str(text, "p.ron").unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::DuplicateId {
                position: FilePosition { line: 5, col: 4 },
                first: FilePosition { line: 4, col: 19 },
                ..
            }
        ),
        "{err}"
    );
}

/// Raw strings (quotes inside, no escapes), escapes, nested block comments and non-ASCII text in
/// front of a product: none of them may shift the positions of the products after them.
const TRICKY: &str = r###"(
  products: [
    (id: 1, name: "Pizza", description: r#"A 12" pizza (with "extra" cheese) // id: 5"#, price: 5),
    (id: 2, name: "Quote", description: "say \"id: 6\" \\", price: 5), /* a /* nested */ id: 7 " */
    (id: 3, name: "Path", description: r"C:\temp\", price: 5), // id: 8 "
    (id: 4, name: "Hashes", description: r##"ends in "# id: 9"##, price: 5),
    (name: "Crème brûlée", id: 2, price: 5),
  ],
)
"###;

#[test]
fn positions_stay_right_after_raw_strings_and_nested_comments() {
    let err = Catalog::from_ron_str(TRICKY, "shop.ron").unwrap_err();
    assert_eq!(
        err,
        CatalogError::DuplicateId {
            file: "shop.ron".into(),
            position: FilePosition { line: 7, col: 28 },
            first: FilePosition { line: 4, col: 6 },
            id: ProductId(2),
            name: "Crème brûlée".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "shop.ron:7:28: product 2 (\"Crème brûlée\") reuses the id of the product at 4:6; ids must be unique"
    );
    let text = TRICKY.replace(
        r#"(name: "Crème brûlée", id: 2, price: 5)"#,
        r#"(id: 5, name: "Free", price: 0)"#,
    );
    let err = Catalog::from_ron_str(&text, "shop.ron").unwrap_err();
    assert_eq!(
        err.to_string(),
        "shop.ron:7:6: product 5 (\"Free\") has price 0; prices must be between 1 and 1000000000"
    );
    let text = TRICKY.replace("id: 2, price: 5", "id: 6, price: 5");
    let catalog = Catalog::from_ron_str(&text, "shop.ron").unwrap();
    assert_eq!(
        catalog.products()[0].description,
        r#"A 12" pizza (with "extra" cheese) // id: 5"#
    );
    assert_eq!(catalog.products()[2].description, r"C:\temp\");
}

/// A catalog large enough to be parsed on several threads, with every optional field used.
fn large_definitions(n: usize) -> Vec<ProductDefinition> {
    (0..n)
        .map(|i| ProductDefinition {
            id: ProductId(i as i64 + 1),
            name: format!("Item \"{i}\" (rare) ]"),
            description: if i % 3 == 0 {
                String::new()
            } else {
                format!("/* not a comment {i} */")
            },
            price: 1 + (i as i64 % 999),
            icon: (i % 2 == 0).then(|| format!("icons/{i}.png")),
            for_sale: i % 7 != 0,
            category: (i % 5 == 0).then(|| "Potions".to_owned()),
        })
        .collect()
}

fn large_text(products: &[ProductDefinition]) -> String {
    let mut text = String::from("// generated\n(\n  products: [\n");
    for (i, p) in products.iter().enumerate() {
        text += &format!(
            "    (id: {}, name: {:?}, description: {:?}, price: {}, for_sale: {}{}{}), /* {i} ( */\n",
            p.id.0,
            p.name,
            p.description,
            p.price,
            p.for_sale,
            p.icon
                .as_ref()
                .map(|icon| format!(", icon: {icon:?}"))
                .unwrap_or_default(),
            p.category
                .as_ref()
                .map(|c| format!(", category: {c:?}"))
                .unwrap_or_default(),
        );
    }
    text + "  ],\n)\n"
}

#[test]
fn a_large_catalog_parses_to_exactly_its_products() {
    let expected = large_definitions(30_000);
    let catalog = Catalog::from_ron_str(&large_text(&expected), "big.ron").unwrap();
    assert_eq!(catalog.products(), &expected[..]);
}

#[test]
fn errors_deep_in_a_large_catalog_name_their_line() {
    let mut products = large_definitions(30_000);
    products[25_000].id = ProductId(3);
    let err = Catalog::from_ron_str(&large_text(&products), "big.ron").unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::DuplicateId {
                position: FilePosition { line: 25_004, .. },
                first: FilePosition { line: 6, .. },
                ..
            }
        ),
        "{err}"
    );
    let mut text = large_text(&large_definitions(30_000));
    let line = text.lines().nth(20_003).unwrap().to_owned();
    text = text.replacen(&line, &line.replace("price:", "cost:"), 1);
    let err = Catalog::from_ron_str(&text, "big.ron").unwrap_err();
    let CatalogError::Parse { position, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(position.line, 20_004, "{err}");
    assert!(err.to_string().contains("cost"), "{err}");
    // A top-level field the catalog does not have is refused even when every entry is fine.
    let text =
        large_text(&large_definitions(30_000)).replacen("  ],\n)", "  ],\n  extra: 1,\n)", 1);
    let err = Catalog::from_ron_str(&text, "big.ron").unwrap_err();
    assert!(err.to_string().contains("extra"), "{err}");
}

#[test]
fn a_raw_string_in_a_large_catalog_keeps_products_and_positions() {
    // Brackets and quotes inside a raw string must not end the entry early.
    let raw = r#"A 12" pizza (large) ) ] "(""#;
    let mut products = large_definitions(30_000);
    products[10].description = raw.to_owned();
    let with_raw = |products: &[ProductDefinition]| {
        let text = large_text(products);
        let quoted = format!("description: {raw:?}");
        assert!(text.contains(&quoted));
        text.replacen(&quoted, &format!("description: r##\"{raw}\"##"), 1)
    };
    let catalog = Catalog::from_ron_str(&with_raw(&products), "big.ron").unwrap();
    assert_eq!(catalog.products(), &products[..]);
    products[25_000].id = ProductId(3);
    let err = Catalog::from_ron_str(&with_raw(&products), "big.ron").unwrap_err();
    assert!(
        matches!(
            err,
            CatalogError::DuplicateId {
                position: FilePosition {
                    line: 25_004,
                    col: 6
                },
                first: FilePosition { line: 6, col: 6 },
                id: ProductId(3),
                ..
            }
        ),
        "{err}"
    );
}

fn service_with(catalog: Catalog) -> App {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        MarketplacePlugin::default()
            .with_catalog(catalog)
            .with_ledger(LedgerBackend::in_memory()),
    ));
    app
}

#[test]
fn product_info_has_the_catalog_fields_and_unknown_ids_are_errors() {
    let app = service_with(common::catalog());
    let service = app.world().resource::<MarketplaceService>();
    let info = service.get_product_info(ProductId(456456)).unwrap();
    assert_eq!(info.name, "Pouch of Gold");
    assert_eq!(
        info.description.as_deref(),
        Some("Adds 100 Gold to your purse.")
    );
    assert_eq!(info.price, 80);
    assert!(info.is_for_sale);
    assert!(info.created_iso8601().ends_with('Z'));
    assert_eq!(info.created, info.updated);
    assert_eq!(
        service.get_product_info(ProductId(5)),
        Err(MarketplaceError::UnknownProduct(ProductId(5)))
    );
}

#[test]
fn blank_descriptions_are_none() {
    let catalog = Catalog::from_products(vec![ProductDefinition {
        id: ProductId(1),
        name: "A".into(),
        description: "   ".into(),
        price: 3,
        icon: None,
        for_sale: true,
        category: None,
    }])
    .unwrap();
    let app = service_with(catalog);
    let info = app
        .world()
        .resource::<MarketplaceService>()
        .get_product_info(ProductId(1))
        .unwrap();
    assert_eq!(info.description, None);
}

fn many(n: usize) -> Catalog {
    Catalog::from_products(
        (0..n)
            .map(|i| ProductDefinition {
                id: ProductId(i as i64 + 1),
                name: format!("Product {i}"),
                description: String::new(),
                price: 10,
                icon: None,
                for_sale: true,
                category: None,
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn developer_products_come_50_a_page_until_finished() {
    let app = service_with(many(120));
    let mut pages = app
        .world()
        .resource::<MarketplaceService>()
        .get_developer_products();
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    loop {
        sizes.push(pages.current_page().len());
        seen.extend(pages.current_page().iter().map(|p| p.product_id.0));
        if pages.is_finished() {
            break;
        }
        pages.advance_to_next_page().unwrap();
    }
    assert_eq!(sizes, vec![50, 50, 20]);
    assert_eq!(
        seen,
        (1..=120).collect::<Vec<_>>(),
        "every product once, in catalog order"
    );
    let err = pages.advance_to_next_page().unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot advance past the last page (page 3 of 3)"
    );
}

#[test]
fn a_single_page_is_finished_at_once() {
    let pages = Pages::new(Arc::from(vec![1, 2, 3]), PAGE_SIZE);
    assert!(pages.is_finished());
    let mut empty = Pages::<u8>::new(Arc::from(Vec::new()), PAGE_SIZE);
    assert!(empty.is_finished());
    assert!(empty.current_page().is_empty());
    assert!(empty.advance_to_next_page().is_err());
    let mut exact = Pages::new(Arc::from((0..100).collect::<Vec<_>>()), PAGE_SIZE);
    assert!(!exact.is_finished());
    exact.advance_to_next_page().unwrap();
    assert!(exact.is_finished(), "100 items are exactly two pages");
}

#[test]
fn a_large_catalog_indexes_every_product() {
    let app = service_with(many(100_000));
    let service = app.world().resource::<MarketplaceService>();
    assert_eq!(service.catalog().len(), 100_000);
    assert_eq!(
        service.get_product_info(ProductId(99_999)).unwrap().name,
        "Product 99998"
    );
    assert_eq!(service.get_developer_products().page_count(), 2000);
}

fn update_until(app: &mut App, what: &str, done: impl Fn(&World) -> bool) {
    for _ in 0..2000 {
        app.update();
        if done(app.world()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    panic!(
        "timed out waiting for {what}; catalog error: {:?}",
        app.world().resource::<CatalogStatus>().last_error
    );
}

/// An in-memory asset folder holding the shipped catalog and the icons it names (checked on load
/// with the `icons` feature).
fn shipped_catalog_dir() -> Dir {
    let dir = Dir::default();
    dir.insert_asset_text(
        Path::new("products.ron"),
        include_str!("../assets/products.ron"),
    );
    let icons = dir.get_or_insert_dir(Path::new("icons"));
    for icon in std::fs::read_dir("assets/icons").unwrap() {
        let icon = icon.unwrap();
        icons.insert_asset(
            Path::new(&icon.file_name()),
            std::fs::read(icon.path()).unwrap(),
        );
    }
    dir
}

#[test]
fn the_catalog_loads_as_an_asset_and_a_bad_reload_keeps_the_last_good_one() {
    let dir = shipped_catalog_dir();
    let mut app = common::asset_app(&dir);
    update_until(&mut app, "the catalog to load", |w| {
        w.resource::<MarketplaceService>().catalog().len() == 5
    });
    let created = app
        .world()
        .resource::<MarketplaceService>()
        .get_product_info(ProductId(123123))
        .unwrap()
        .created;

    // A broken edit: duplicate id. The old catalog stays, the error names file and product.
    let broken = include_str!("../assets/products.ron").replace("id: 456456", "id: 123123");
    dir.insert_asset_text(Path::new("products.ron"), &broken);
    app.world().resource::<AssetServer>().reload("products.ron");
    update_until(&mut app, "the reload to fail", |w| {
        w.resource::<CatalogStatus>().last_error.is_some()
    });
    let error = app
        .world()
        .resource::<CatalogStatus>()
        .last_error
        .clone()
        .unwrap();
    assert!(
        error.contains("products.ron")
            && error.contains("product 123123")
            && error.contains("products.ron:13:13:"),
        "{error}"
    );
    let service = app.world().resource::<MarketplaceService>();
    assert_eq!(service.catalog().len(), 5);
    assert_eq!(
        service.get_product_info(ProductId(456456)).unwrap().price,
        80,
        "last good catalog"
    );

    // A good edit is picked up; unchanged products keep their timestamps.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let repriced = include_str!("../assets/products.ron").replace("price: 80", "price: 90");
    dir.insert_asset_text(Path::new("products.ron"), &repriced);
    app.world().resource::<AssetServer>().reload("products.ron");
    update_until(&mut app, "the new price", |w| {
        w.resource::<MarketplaceService>()
            .get_product_info(ProductId(456456))
            .is_ok_and(|p| p.price == 90)
    });
    let service = app.world().resource::<MarketplaceService>();
    let gold = service.get_product_info(ProductId(456456)).unwrap();
    assert!(
        gold.updated > gold.created,
        "a changed product gets a new updated time"
    );
    let heal = service.get_product_info(ProductId(123123)).unwrap();
    assert_eq!(
        (heal.created, heal.updated),
        (created, created),
        "unchanged products keep theirs"
    );
    assert!(app.world().resource::<CatalogStatus>().last_error.is_none());
}

/// Plugin order does not matter: with `AssetPlugin` added after `MarketplacePlugin`, the catalog
/// still loads once the app is finished (as `App::run` does).
#[test]
fn the_catalog_asset_loads_whichever_plugin_comes_first() {
    let dir = shipped_catalog_dir();
    let mut app = common::asset_app_in_order(&dir, true);
    app.finish();
    app.cleanup();
    update_until(&mut app, "the catalog to load", |w| {
        w.resource::<MarketplaceService>().catalog().len() == 5
    });
    assert!(app.world().resource::<CatalogStatus>().last_error.is_none());
}

/// A prompt made before the catalog has loaded says so (`CatalogNotLoaded`), not that the product
/// does not exist; once it has loaded, a product it lacks is `UnknownProduct`.
#[test]
fn a_prompt_before_the_catalog_loads_says_the_shop_has_not_loaded() {
    let dir = shipped_catalog_dir();
    let mut app = common::asset_app(&dir);
    let player = app.world_mut().spawn(Buyer::new(UserId(1))).id();
    let prompt_state = |app: &mut App, product: i64| {
        app.world_mut().write_message(PromptProductPurchase {
            player,
            product_id: ProductId(product),
        });
        app.update();
        app.world()
            .get::<bevy_marketplace::OpenPrompt>(player)
            .map(|p| p.state.clone())
    };
    assert!(
        !app.world()
            .resource::<MarketplaceService>()
            .catalog_loaded()
    );
    assert_eq!(
        prompt_state(&mut app, 456456),
        Some(bevy_marketplace::PromptState::Failed(
            bevy_marketplace::PurchaseError::CatalogNotLoaded
        ))
    );
    update_until(&mut app, "the catalog to load", |w| {
        w.resource::<MarketplaceService>().catalog_loaded()
    });
    app.world_mut()
        .entity_mut(player)
        .remove::<bevy_marketplace::OpenPrompt>();
    assert_eq!(
        prompt_state(&mut app, 999),
        Some(bevy_marketplace::PromptState::Failed(
            bevy_marketplace::PurchaseError::UnknownProduct
        ))
    );
}

#[test]
fn without_asset_plugin_the_error_says_what_to_do() {
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins,
        MarketplacePlugin::default().with_ledger(LedgerBackend::in_memory()),
    ));
    app.update();
    let error = app
        .world()
        .resource::<CatalogStatus>()
        .last_error
        .clone()
        .unwrap();
    assert!(error.contains("AssetPlugin is not added"), "{error}");
}
