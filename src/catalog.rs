//! The product catalog: parsed from RON, validated, indexed for O(1) lookups.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use bevy::asset::Asset;
use bevy::platform::collections::HashMap;
use bevy::reflect::TypePath;
use serde::{Deserialize, Serialize};

mod parallel_parse;

use crate::ids::ProductId;
use crate::product_info::ProductInfo;

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

/// Finds where each product entry starts: the position of each `id` field name outside strings
/// and comments. Falls back to no positions if the count does not match the parsed products.
///
/// It must skip every literal the RON parser skips, as the parser does: one string read wrong
/// (a raw string's `"`, a nested comment's `*/`) shifts every later match and costs all positions.
fn product_positions(text: &str, expected: usize) -> Vec<FilePosition> {
    let bytes = text.as_bytes();
    let mut found = Vec::with_capacity(expected);
    let mut here = FilePosition { line: 1, col: 1 };
    let mut i = 0;
    while i < bytes.len() {
        let end = match bytes[i] {
            // Strings, and char literals (`'"'`, `'\''`); a `b` prefix is a word of its own.
            quote @ (b'"' | b'\'') => quoted_end(bytes, i + 1, quote),
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i + bytes[i..].iter().take_while(|&&b| b != b'\n').count()
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => block_comment_end(bytes, i),
            b if is_ident(b) => {
                let word = i + bytes[i..].iter().take_while(|&&b| is_ident(b)).count();
                match &bytes[i..word] {
                    // `r"…"`, `r#"…"#`, `br##"…"##`; `r#id` is a raw identifier, not a string.
                    b"r" | b"br" => raw_string_end(bytes, word).unwrap_or(word),
                    b"id" => {
                        if text[word..].trim_start().starts_with(':') {
                            found.push(here);
                        }
                        word
                    }
                    _ => word,
                }
            }
            _ => i + 1,
        };
        let end = end.min(bytes.len());
        for &b in &bytes[i..end] {
            if b == b'\n' {
                here.line += 1;
                here.col = 1;
            } else if b & 0xC0 != 0x80 {
                // Columns count characters, as the parser's do (UTF-8 continuation bytes don't).
                here.col += 1;
            }
        }
        i = end;
    }
    if found.len() == expected {
        found
    } else {
        Vec::new()
    }
}

/// The end of a string or char literal whose body starts at `i`, honouring `\` escapes.
fn quoted_end(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    while let Some(&b) = bytes.get(i) {
        match b {
            b'\\' => i += 2,
            _ if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The end of a raw string whose `#`s or `"` start at `i`: it has no escapes and ends at the
/// first `"` followed by as many `#`s as it opened with. `None` if no `"` follows the `#`s.
fn raw_string_end(bytes: &[u8], i: usize) -> Option<usize> {
    let hashes = bytes[i..].iter().take_while(|&&b| b == b'#').count();
    let body = i + hashes;
    if bytes.get(body) != Some(&b'"') {
        return None;
    }
    let mut at = body + 1;
    while at < bytes.len() {
        if bytes[at] == b'"' && bytes[at + 1..].starts_with(&bytes[i..body]) {
            return Some(at + 1 + hashes);
        }
        at += 1;
    }
    Some(at)
}

/// The end of the block comment starting at `i`; RON block comments nest.
fn block_comment_end(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return i;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The live catalog as the service sees it: products in file order and an id index.
///
/// Shared behind an [`Arc`] so pages and lookups never copy the catalog.
#[derive(Debug, Default)]
pub struct CatalogIndex {
    products: Arc<[ProductInfo]>,
    by_id: HashMap<ProductId, usize>,
    generation: u64,
}

impl CatalogIndex {
    /// Builds the index, keeping `created` times of products that already existed in `previous`
    /// and bumping `updated` only for products whose definition changed.
    pub fn build(catalog: &Catalog, previous: Option<&CatalogIndex>, now: SystemTime) -> Self {
        let info = |def: &ProductDefinition| {
            let fresh = ProductInfo::from_definition(def, now, now);
            match previous.and_then(|p| p.get(def.id)) {
                Some(old) if old.same_definition(&fresh) => old.clone(),
                Some(old) => ProductInfo {
                    created: old.created,
                    ..fresh
                },
                None => fresh,
            }
        };
        let definitions = &catalog.products;
        // Copying 100,000 products' strings is worth a second thread.
        let products: Vec<ProductInfo> = if definitions.len() >= 16_384
            && std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
        {
            let (first, second) = definitions.split_at(definitions.len() / 2);
            std::thread::scope(|scope| {
                let helper = scope.spawn(|| second.iter().map(info).collect::<Vec<_>>());
                let mut products: Vec<ProductInfo> = Vec::with_capacity(definitions.len());
                products.extend(first.iter().map(info));
                match helper.join() {
                    Ok(rest) => products.extend(rest),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
                products
            })
        } else {
            definitions.iter().map(info).collect()
        };
        let by_id: HashMap<ProductId, usize> = definitions
            .iter()
            .enumerate()
            .map(|(i, def)| (def.id, i))
            .collect();
        Self {
            products: products.into(),
            by_id,
            generation: previous.map_or(1, |p| p.generation + 1),
        }
    }

    /// A product by id, O(1).
    pub fn get(&self, id: ProductId) -> Option<&ProductInfo> {
        self.by_id.get(&id).map(|&i| &self.products[i])
    }

    /// All products in file order.
    pub fn products(&self) -> &Arc<[ProductInfo]> {
        &self.products
    }

    /// How many times a catalog was installed (0 = none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of products.
    pub fn len(&self) -> usize {
        self.products.len()
    }

    /// `true` if there are no products.
    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }
}
