//! Store top-ups: premium currency bought with real money through a store (App Store, Google
//! Play, Steam, a web shop), credited once per `(source, order id)` whatever the retries, and
//! taken back when the store refunds the order.

use serde::{Deserialize, Serialize};

use crate::ids::UserId;

/// Credit premium currency bought through a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditRequest {
    /// Whose wallet.
    pub user: UserId,
    /// How much premium currency (at least 1).
    pub amount: u64,
    /// The store (`"steam"`, `"app_store"`, `"web"`): order ids are unique within it.
    pub source: String,
    /// The store's id of the order: with `source`, the idempotency key.
    pub order_id: String,
    /// Balance given to a user the ledger has never seen (before the credit).
    pub starting_balance: u64,
}

/// A store order as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditRecord {
    /// The store.
    pub source: String,
    /// The store's order id.
    pub order_id: String,
    /// Whose wallet it credited.
    pub user: UserId,
    /// How much.
    pub amount: u64,
    /// When (Unix ms).
    pub credited_at_ms: i64,
    /// The store refunded the order: when, and how much could be taken back.
    pub reversal: Option<CreditReversal>,
}

/// A store's refund or chargeback of a top-up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditReversal {
    /// When (Unix ms).
    pub at_ms: i64,
    /// Taken from the balance (never below zero).
    pub taken: u64,
    /// The part that could not be taken (the player had spent it): added to the account's
    /// shortfall.
    pub shortfall: u64,
}

/// Why a top-up or its reversal was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreditError {
    /// The amount is zero or larger than a balance can hold.
    #[error("a top-up of {amount} is not allowed: it must be between 1 and {max}", max = crate::ledger::MAX_BALANCE)]
    InvalidAmount {
        /// The amount asked.
        amount: u64,
    },
    /// The source or the order id is empty.
    #[error(
        "a top-up needs a store name and an order id (got store {store:?}, order id {order_id:?})"
    )]
    MissingOrder {
        /// The store name given.
        store: String,
        /// The order id given.
        order_id: String,
    },
    /// A text of the request cannot be kept as written.
    #[error(transparent)]
    InvalidText(#[from] super::InvalidText),
    /// The order was credited before, to another user or with another amount.
    #[error(
        "order {order_id} of {store} already credited {amount} to user {user}; a retry must name the same user and amount"
    )]
    OrderMismatch {
        /// The store.
        store: String,
        /// The order.
        order_id: String,
        /// Who it credited.
        user: UserId,
        /// How much.
        amount: u64,
    },
    /// No top-up has this order id.
    #[error("no top-up has order id {order_id} of {store}")]
    UnknownOrder {
        /// The store.
        store: String,
        /// The order.
        order_id: String,
    },
    /// The credit would take the balance above [`MAX_BALANCE`](crate::ledger::MAX_BALANCE).
    #[error("crediting {amount} would take the balance {balance} of user {user} too high")]
    BalanceTooHigh {
        /// The user.
        user: UserId,
        /// The balance now.
        balance: u64,
        /// The amount.
        amount: u64,
    },
}

/// A top-up went through (now, or on an earlier attempt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreditOutcome {
    /// The user's balance now.
    pub balance: u64,
    /// The user's shortfall now (a top-up pays a shortfall first).
    pub shortfall: u64,
    /// An earlier attempt credited this order; nothing changed now.
    pub already_credited: bool,
}

/// A top-up's reversal went through (now, or on an earlier attempt).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReversalOutcome {
    /// The order with its reversal: how much was taken, how much is owed.
    pub record: CreditRecord,
    /// The user's balance now.
    pub balance: u64,
    /// The user's shortfall now.
    pub shortfall: u64,
    /// An earlier attempt reversed this order; nothing changed now.
    pub already_reversed: bool,
}
