//! Identifier newtypes: products, users, purchases, requests, places, servers.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The id of a developer product, as written in the catalog (Roblox `ProductId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(pub i64);

/// A player's account id (Roblox `UserId`). Receipts and balances belong to a `UserId`, not to an
/// entity, so they outlive the player's session on this server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(pub i64);

/// The place (game server build) a purchase was made in (Roblox `PlaceIdWherePurchased`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlaceId(pub i64);

/// The unique id of one purchase: stable across redeliveries, restarts and servers. It is the
/// idempotency key of a grant.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PurchaseId(pub String);

/// The idempotency key of one charge attempt. A retried charge with the same request id returns
/// the receipt of the first attempt instead of charging again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    /// A fresh request id: a UUIDv7, unique and ordered by creation time, so the ledger's index
    /// of request ids grows at one end instead of being rewritten all over by random keys.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl PurchaseId {
    /// A fresh purchase id: a UUIDv7 in simple form (32 hex digits), unique and ordered by
    /// creation time (which keeps the ledger's receipt index append-only).
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// The purchase id of the receipt that the charge `request` makes: each charge request makes
    /// at most one receipt, so its id is the request's (in simple form), and every store names
    /// the receipt of a request alike.
    pub fn of_request(request: RequestId) -> Self {
        Self(request.0.simple().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PurchaseId {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! display_inner {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}
display_inner!(ProductId, UserId, PlaceId, PurchaseId, RequestId);

/// One purchase prompt: every prompt gets a new one (from the server, in a networked game), and
/// every answer names the prompt it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PromptId(pub u64);

impl fmt::Display for PromptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "prompt {}", self.0)
    }
}

/// Identifies one game server process to the ledger (session leases name their owner with it).
/// Any text without a NUL character (which PostgreSQL cannot keep):
///
/// ```
/// use bevy_marketplace::ledger::ServerId;
/// assert_eq!(ServerId::new("eu-1").unwrap().as_str(), "eu-1");
/// assert!(ServerId::new("eu\0").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServerId(Arc<str>);

impl ServerId {
    /// A server id, unless `id` holds a NUL character.
    pub fn new(id: impl Into<Arc<str>>) -> Result<Self, crate::text::InvalidText> {
        let id = id.into();
        crate::text::keepable("server id", &id)?;
        Ok(Self(id))
    }

    /// A fresh random server id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string().into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
