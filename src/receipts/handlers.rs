//! Product handlers: the game's code that grants a purchase.

use std::collections::HashMap;
use std::sync::Arc;

use bevy::prelude::*;

use crate::ids::ProductId;
use crate::receipt::{ProductPurchaseDecision, ReceiptInfo};

/// What a handler may return: a [`ProductPurchaseDecision`], a `bool` (`true` = granted, as in
/// Roblox's guide), or a `Result` of either (an `Err` means [`ProductPurchaseDecision::NotProcessedYet`]).
pub trait IntoPurchaseDecision {
    /// The decision, or the error that prevented one.
    fn into_decision(self) -> Result<ProductPurchaseDecision, BevyError>;
}

impl IntoPurchaseDecision for ProductPurchaseDecision {
    fn into_decision(self) -> Result<ProductPurchaseDecision, BevyError> {
        Ok(self)
    }
}

impl IntoPurchaseDecision for bool {
    fn into_decision(self) -> Result<ProductPurchaseDecision, BevyError> {
        Ok(if self {
            ProductPurchaseDecision::PurchaseGranted
        } else {
            ProductPurchaseDecision::NotProcessedYet
        })
    }
}

impl<T: IntoPurchaseDecision, E: Into<BevyError>> IntoPurchaseDecision for Result<T, E> {
    fn into_decision(self) -> Result<ProductPurchaseDecision, BevyError> {
        self.map_err(Into::into)?.into_decision()
    }
}

/// A registered handler: gets the receipt and the buyer's entity (with access to its components
/// and, through [`EntityWorldMut::world_scope`], to the world).
pub type ReceiptHandler = Arc<
    dyn for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> Result<ProductPurchaseDecision, BevyError>
        + Send
        + Sync,
>;

/// Binding a handler where one is already bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// A handler for this product exists.
    #[error("a receipt handler for product {0} is already bound; unbind it first")]
    ProductAlreadyBound(ProductId),
    /// A catch-all handler exists.
    #[error("a catch-all receipt handler is already bound; unbind it first")]
    CatchAllAlreadyBound,
}

/// Handlers by product, plus an optional catch-all for receipts no product handler claims
/// (Roblox's `BindReceiptHandler` with and without a filter).
#[derive(Resource, Default, Clone)]
pub struct ReceiptHandlers {
    by_product: HashMap<ProductId, ReceiptHandler>,
    catch_all: Option<ReceiptHandler>,
}

impl ReceiptHandlers {
    /// Binds `handler` to `product`.
    pub fn bind(
        &mut self,
        product: ProductId,
        handler: ReceiptHandler,
    ) -> Result<(), HandlerError> {
        if self.by_product.contains_key(&product) {
            return Err(HandlerError::ProductAlreadyBound(product));
        }
        self.by_product.insert(product, handler);
        Ok(())
    }

    /// Binds the catch-all handler.
    pub fn bind_catch_all(&mut self, handler: ReceiptHandler) -> Result<(), HandlerError> {
        if self.catch_all.is_some() {
            return Err(HandlerError::CatchAllAlreadyBound);
        }
        self.catch_all = Some(handler);
        Ok(())
    }

    /// Unbinds the handler of `product`; `true` if there was one.
    pub fn unbind(&mut self, product: ProductId) -> bool {
        self.by_product.remove(&product).is_some()
    }

    /// Unbinds the catch-all; `true` if there was one.
    pub fn unbind_catch_all(&mut self) -> bool {
        self.catch_all.take().is_some()
    }

    /// The handler that receives receipts of `product`: its own, else the catch-all.
    pub fn route(&self, product: ProductId) -> Option<ReceiptHandler> {
        self.by_product
            .get(&product)
            .or(self.catch_all.as_ref())
            .cloned()
    }

    /// `true` if `product` has a handler of its own.
    pub fn has_product_handler(&self, product: ProductId) -> bool {
        self.by_product.contains_key(&product)
    }
}

/// Wraps a closure into a [`ReceiptHandler`].
pub fn receipt_handler<F, O>(handler: F) -> ReceiptHandler
where
    F: for<'w> Fn(&ReceiptInfo, EntityWorldMut<'w>) -> O + Send + Sync + 'static,
    O: IntoPurchaseDecision,
{
    Arc::new(move |receipt, player| handler(receipt, player).into_decision())
}
