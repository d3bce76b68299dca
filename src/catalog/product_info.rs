//! Product metadata as the service returns it (`ProductInfo`), listed page by page (`Pages`).

use std::sync::Arc;
use std::time::SystemTime;

use crate::catalog::ProductDefinition;
use crate::ids::ProductId;

/// Metadata of one product (Roblox `GetProductInfo(id, InfoType.Product)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductInfo {
    /// The product id.
    pub product_id: ProductId,
    /// Display name.
    pub name: String,
    /// Description; `None` when blank, like Roblox's `nil`.
    pub description: Option<String>,
    /// Price in premium currency.
    pub price: u64,
    /// Asset path of the icon, if any.
    pub icon: Option<String>,
    /// Whether it can be bought now.
    pub is_for_sale: bool,
    /// Shop category, if any.
    pub category: Option<String>,
    /// When this server first saw the product.
    pub created: SystemTime,
    /// When this server last saw its definition change.
    pub updated: SystemTime,
}

impl ProductInfo {
    pub(crate) fn from_definition(
        def: &ProductDefinition,
        created: SystemTime,
        updated: SystemTime,
    ) -> Self {
        let description = def.description.trim();
        Self {
            product_id: def.id,
            name: def.name.clone(),
            description: (!description.is_empty()).then(|| def.description.clone()),
            price: def.price as u64,
            icon: def.icon.clone(),
            is_for_sale: def.for_sale,
            category: def.category.clone(),
            created,
            updated,
        }
    }

    /// The definition this product was made from (for sending the catalog to clients).
    #[cfg(feature = "net")]
    pub(crate) fn definition(&self) -> ProductDefinition {
        ProductDefinition {
            id: self.product_id,
            name: self.name.clone(),
            description: self.description.clone().unwrap_or_default(),
            price: self.price as i64,
            icon: self.icon.clone(),
            for_sale: self.is_for_sale,
            category: self.category.clone(),
        }
    }

    /// `created` as an ISO-8601 / RFC 3339 string, as Roblox returns it.
    pub fn created_iso8601(&self) -> String {
        humantime::format_rfc3339_seconds(self.created).to_string()
    }

    /// `updated` as an ISO-8601 / RFC 3339 string.
    pub fn updated_iso8601(&self) -> String {
        humantime::format_rfc3339_seconds(self.updated).to_string()
    }

    pub(crate) fn same_definition(&self, other: &Self) -> bool {
        self.product_id == other.product_id
            && self.name == other.name
            && self.description == other.description
            && self.price == other.price
            && self.icon == other.icon
            && self.is_for_sale == other.is_for_sale
            && self.category == other.category
    }
}

/// Products per page of [`Pages`], as on Roblox.
pub const PAGE_SIZE: usize = 50;

/// Advancing a [`Pages`] that is already on its last page.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot advance past the last page (page {page} of {pages})")]
pub struct PagesFinished {
    /// The current page, from 1.
    pub page: usize,
    /// How many pages there are.
    pub pages: usize,
}

/// A paged listing (Roblox `Pages`/`StandardPages`): read [`Pages::current_page`], stop when
/// [`Pages::is_finished`], otherwise [`Pages::advance_to_next_page`].
///
/// It is a snapshot: a catalog reload does not change pages already handed out.
#[derive(Clone, Debug)]
pub struct Pages<T> {
    items: Arc<[T]>,
    page_size: usize,
    page: usize,
}

impl<T> Pages<T> {
    /// Pages over `items`, `page_size` a page (at least 1).
    pub fn new(items: Arc<[T]>, page_size: usize) -> Self {
        Self {
            items,
            page_size: page_size.max(1),
            page: 0,
        }
    }

    /// The items of the current page (Roblox `GetCurrentPage`).
    pub fn current_page(&self) -> &[T] {
        let start = (self.page * self.page_size).min(self.items.len());
        let end = (start + self.page_size).min(self.items.len());
        &self.items[start..end]
    }

    /// `true` if the current page is the last one (a single-page listing is finished at once).
    pub fn is_finished(&self) -> bool {
        self.page + 1 >= self.page_count()
    }

    /// Moves to the next page; an error if already on the last page.
    pub fn advance_to_next_page(&mut self) -> Result<(), PagesFinished> {
        if self.is_finished() {
            return Err(PagesFinished {
                page: self.page + 1,
                pages: self.page_count(),
            });
        }
        self.page += 1;
        Ok(())
    }

    /// The current page number, from 1.
    pub fn page_number(&self) -> usize {
        self.page + 1
    }

    /// How many pages there are (at least 1, even when empty).
    pub fn page_count(&self) -> usize {
        self.items.len().div_ceil(self.page_size).max(1)
    }

    /// Every item across all pages.
    pub fn all(&self) -> &[T] {
        &self.items
    }
}
