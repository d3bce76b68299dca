//! `CatalogIndex`: the live catalog, products in file order with an O(1) index by id.

use std::sync::Arc;
use std::time::SystemTime;

use bevy::platform::collections::HashMap;

use super::product_info::ProductInfo;
use super::{Catalog, ProductDefinition};
use crate::ids::ProductId;

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
