//! The product catalog as written in RON: definitions, validation, errors with positions.

use std::fmt;

use bevy::asset::Asset;
use bevy::platform::collections::HashMap;
use bevy::reflect::TypePath;
use serde::{Deserialize, Serialize};

mod asset;
mod index;
mod parallel_parse;
mod positions;
mod product_info;

pub(crate) use asset::CatalogLoader;
pub use asset::CatalogStatus;
pub(crate) use asset::start_catalog_load;
pub use index::CatalogIndex;
pub use product_info::{PAGE_SIZE, Pages, PagesFinished, ProductInfo};

use crate::ids::ProductId;
use positions::product_positions;

/// The lowest price a product may have.
pub const MIN_PRICE: i64 = 1;
/// The highest price a product may have.
pub const MAX_PRICE: i64 = 1_000_000_000;

/// One product as written in the catalog file.
///
/// ```ron
/// (id: 123123, name: "Full Heal", description: "Restores all health.", price: 50,
///  icon: "icons/potion.png", for_sale: true, category: "Potions")
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductDefinition {
    /// Unique product id.
    pub id: ProductId,
    /// Unique, non-empty display name.
    pub name: String,
    /// Shown in shops and prompts; may be empty.
    #[serde(default)]
    pub description: String,
    /// Price in premium currency, 1 to 1,000,000,000.
    pub price: i64,
    /// Asset path of a 512×512 icon.
    #[serde(default)]
    pub icon: Option<String>,
    /// Products not for sale stay in the catalog (receipts still resolve) but cannot be bought.
    #[serde(default = "yes")]
    pub for_sale: bool,
    /// Groups products in shops.
    #[serde(default)]
    pub category: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    products: Vec<ProductDefinition>,
}

/// A line and column in a catalog file, both starting at 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilePosition {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

impl fmt::Display for FilePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Why a catalog was rejected. Every variant names the file, the position and the product.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Not valid RON, or not the catalog's shape.
    #[error("{file}:{position}: catalog is not valid: {message}")]
    Parse {
        /// The catalog file.
        file: String,
        /// Where the parser stopped.
        position: FilePosition,
        /// The parser's message.
        message: String,
    },
    /// Two products share an id.
    #[error(
        "{file}:{position}: product {id} ({name:?}) reuses the id of the product at {first}; ids must be unique"
    )]
    DuplicateId {
        /// The catalog file.
        file: String,
        /// The second product with the id.
        position: FilePosition,
        /// The first product with the id.
        first: FilePosition,
        /// The id.
        id: ProductId,
        /// The second product's name.
        name: String,
    },
    /// Two products share a name.
    #[error(
        "{file}:{position}: product {id} is named {name:?} like the product at {first}; names must be unique"
    )]
    DuplicateName {
        /// The catalog file.
        file: String,
        /// The second product with the name.
        position: FilePosition,
        /// The first product with the name.
        first: FilePosition,
        /// The second product's id.
        id: ProductId,
        /// The name.
        name: String,
    },
    /// A price outside 1..=1,000,000,000.
    #[error(
        "{file}:{position}: product {id} ({name:?}) has price {price}; prices must be between 1 and 1000000000"
    )]
    PriceOutOfRange {
        /// The catalog file.
        file: String,
        /// The product.
        position: FilePosition,
        /// The product id.
        id: ProductId,
        /// The product name.
        name: String,
        /// The rejected price.
        price: i64,
    },
    /// The icon is missing, not 512×512, or not PNG/JPEG/BMP (checked with the `icons` feature).
    #[error("{file}:{position}: product {id} ({name:?}): icon {icon:?} {reason}")]
    Icon {
        /// The catalog file.
        file: String,
        /// The product.
        position: FilePosition,
        /// The product id.
        id: ProductId,
        /// The product name.
        name: String,
        /// The icon path.
        icon: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A name with a NUL character, which the ledger cannot keep with the product's receipts.
    #[error("{file}:{position}: product {id} has a name with a NUL character ({name:?})")]
    NulInName {
        /// The catalog file.
        file: String,
        /// The product.
        position: FilePosition,
        /// The product id.
        id: ProductId,
        /// The name.
        name: String,
    },
    /// A blank name.
    #[error("{file}:{position}: product {id} has an empty name")]
    EmptyName {
        /// The catalog file.
        file: String,
        /// The product.
        position: FilePosition,
        /// The product id.
        id: ProductId,
    },
}

/// A validated catalog: the products of one `products.ron`, in file order.
///
/// Load it as a Bevy asset (the plugin does, from [`MarketplacePlugin::catalog`](crate::MarketplacePlugin::catalog))
/// or build it in code with [`Catalog::from_ron_str`] / [`Catalog::from_products`].
#[derive(Asset, TypePath, Clone, Debug, Default, PartialEq)]
pub struct Catalog {
    products: Vec<ProductDefinition>,
    file: String,
    positions: Vec<FilePosition>,
}

impl Catalog {
    /// Parses and validates catalog text. `file` names the source in error messages.
    pub fn from_ron_str(text: &str, file: &str) -> Result<Self, CatalogError> {
        let options = ron::Options::default()
            .with_default_extension(ron::extensions::Extensions::IMPLICIT_SOME);
        let products = match parallel_parse::parse_products(text, &options) {
            Some(products) => products,
            None => {
                let parsed: CatalogFile =
                    options.from_str(text).map_err(|e| CatalogError::Parse {
                        file: file.to_owned(),
                        position: FilePosition {
                            line: e.span.start.line,
                            col: e.span.start.col,
                        },
                        message: e.code.to_string(),
                    })?;
                parsed.products
            }
        };
        let positions = product_positions(text, products.len());
        validate(&products, file, &positions)?;
        Ok(Self {
            products,
            file: file.to_owned(),
            positions,
        })
    }

    /// Validates products built in code. Positions in errors are the entries' indexes (line = index + 1).
    pub fn from_products(products: Vec<ProductDefinition>) -> Result<Self, CatalogError> {
        let positions: Vec<FilePosition> = (0..products.len())
            .map(|i| FilePosition {
                line: i + 1,
                col: 1,
            })
            .collect();
        validate(&products, "<code>", &positions)?;
        Ok(Self {
            products,
            file: "<code>".into(),
            positions,
        })
    }

    /// An [`CatalogError::Icon`] for the product at `index`, naming file and position.
    pub fn icon_error(&self, index: usize, reason: impl std::fmt::Display) -> CatalogError {
        let product = &self.products[index];
        CatalogError::Icon {
            file: self.file.clone(),
            position: self.positions.get(index).copied().unwrap_or_default(),
            id: product.id,
            name: product.name.clone(),
            icon: product.icon.clone().unwrap_or_default(),
            reason: reason.to_string(),
        }
    }

    /// The products, in file order.
    pub fn products(&self) -> &[ProductDefinition] {
        &self.products
    }
}

fn validate(
    products: &[ProductDefinition],
    file: &str,
    positions: &[FilePosition],
) -> Result<(), CatalogError> {
    let at = |i: usize| positions.get(i).copied().unwrap_or_default();
    let mut ids: HashMap<ProductId, usize> = HashMap::with_capacity(products.len());
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(products.len());
    for (i, p) in products.iter().enumerate() {
        if p.name.trim().is_empty() {
            return Err(CatalogError::EmptyName {
                file: file.to_owned(),
                position: at(i),
                id: p.id,
            });
        }
        if p.name.contains('\0') {
            return Err(CatalogError::NulInName {
                file: file.to_owned(),
                position: at(i),
                id: p.id,
                name: p.name.clone(),
            });
        }
        if !(MIN_PRICE..=MAX_PRICE).contains(&p.price) {
            return Err(CatalogError::PriceOutOfRange {
                file: file.to_owned(),
                position: at(i),
                id: p.id,
                name: p.name.clone(),
                price: p.price,
            });
        }
        if let Some(&first) = ids.get(&p.id) {
            return Err(CatalogError::DuplicateId {
                file: file.to_owned(),
                position: at(i),
                first: at(first),
                id: p.id,
                name: p.name.clone(),
            });
        }
        ids.insert(p.id, i);
        if let Some(&first) = names.get(p.name.as_str()) {
            return Err(CatalogError::DuplicateName {
                file: file.to_owned(),
                position: at(i),
                first: at(first),
                id: p.id,
                name: p.name.clone(),
            });
        }
        names.insert(&p.name, i);
    }
    Ok(())
}
