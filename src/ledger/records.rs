//! What the ledger keeps, as tools and audits read it: receipts with their state, leases, the
//! balance journal, a player's persisted components, the whole ledger at once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{CreditRecord, HistoryEntry, RefundRecord, SalesRow, ServerId};
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::receipt::{ReceiptInfo, ReceiptState};

/// A player's persisted components: registered name → RON text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerSnapshot(pub BTreeMap<String, String>);

/// Proof that a server holds a player's session lease: the server's id and the lease's token.
///
/// Every time a session lease is taken its token grows, so a server that lost the lease — or a
/// stale process that shares its id — cannot write with the token it was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseFence {
    /// The lease holder.
    pub server: ServerId,
    /// The token [`OpenedSession::lease_token`](super::OpenedSession::lease_token) gave it.
    pub token: i64,
}

/// A receipt with its ledger state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// The receipt.
    pub info: ReceiptInfo,
    /// Its state.
    pub state: ReceiptState,
    /// The charge request that created it.
    pub request_id: RequestId,
    /// The product's name when it was bought.
    pub product_name: String,
    /// When it was bought (Unix ms).
    pub purchased_at_ms: i64,
    /// When it was granted (Unix ms), if it was.
    pub granted_at_ms: Option<i64>,
    /// How it was refunded, if it was.
    pub refund: Option<RefundRecord>,
}

impl StoredReceipt {
    /// The receipt as a purchase-history entry.
    pub fn history_entry(&self) -> HistoryEntry {
        HistoryEntry {
            receipt: self.info.clone(),
            state: self.state,
            product_name: self.product_name.clone(),
            purchased_at_ms: self.purchased_at_ms,
            granted_at_ms: self.granted_at_ms,
            refund: self.refund.clone(),
        }
    }
}

/// A user's session lease as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The holder, if any.
    pub owner: Option<String>,
    /// When the lease ends (Unix ms), if held.
    pub expires_at_ms: Option<i64>,
    /// The token of the newest lease taken (0: never taken).
    pub token: i64,
}

/// What a balance change was, as the journal records it: the ledger's checks and reports read
/// this, never the free text of a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JournalKind {
    /// A new account's starting balance.
    StartingBalance,
    /// A purchase's debit (names its receipt).
    Purchase,
    /// A refund's credit (names its receipt).
    Refund,
    /// A store top-up's credit.
    TopUp,
    /// What a store's reversal of a top-up took back.
    TopUpReversal,
    /// A top-up's part that paid the account's shortfall.
    ShortfallRepaid,
    /// Currency granted or taken outside a purchase
    /// ([`MarketplaceService::grant_premium_currency`](crate::MarketplaceService::grant_premium_currency),
    /// a support grant).
    Adjustment,
}

impl JournalKind {
    /// Every kind, in the order above.
    pub const ALL: [Self; 7] = [
        Self::StartingBalance,
        Self::Purchase,
        Self::Refund,
        Self::TopUp,
        Self::TopUpReversal,
        Self::ShortfallRepaid,
        Self::Adjustment,
    ];

    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StartingBalance => "starting_balance",
            Self::Purchase => "purchase",
            Self::Refund => "refund",
            Self::TopUp => "top_up",
            Self::TopUpReversal => "top_up_reversal",
            Self::ShortfallRepaid => "shortfall_repaid",
            Self::Adjustment => "adjustment",
        }
    }

    /// The kind for a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == s)
    }
}

/// One change of a balance, as the journal keeps it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalEntry {
    /// Whose balance.
    pub user: UserId,
    /// Signed change.
    pub delta: i64,
    /// What the change was.
    pub kind: JournalKind,
    /// Why, in words: the reason given to an adjustment or a refund, the store order of a
    /// top-up. Free text, kept as written.
    pub reason: String,
    /// The receipt of a purchase or a refund.
    pub purchase_id: Option<PurchaseId>,
}

/// A full read of the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerAudit {
    /// Every receipt.
    pub receipts: Vec<StoredReceipt>,
    /// Every account: balance and persisted state.
    pub accounts: BTreeMap<UserId, (u64, PlayerSnapshot)>,
    /// Every account's session lease.
    pub leases: BTreeMap<UserId, LeaseRecord>,
    /// Every balance change, in the order made.
    pub journal: Vec<JournalEntry>,
    /// Accounts owing currency from reversed top-ups (only those owing).
    pub shortfalls: BTreeMap<UserId, u64>,
    /// Every store top-up, by source and order id.
    pub credits: Vec<CreditRecord>,
    /// Sum of all purchase debits.
    pub purchase_debits: u64,
    /// The sales totals the store keeps, per product per hour, in order (the in-memory store
    /// keeps none and gives what its receipts add up to).
    pub sales_hours: Vec<SalesRow>,
}

impl LedgerAudit {
    /// Receipts in a state.
    pub fn count(&self, state: ReceiptState) -> usize {
        self.receipts.iter().filter(|r| r.state == state).count()
    }

    /// Σ `currency_spent` over all receipts.
    pub fn receipt_total(&self) -> u64 {
        self.receipts.iter().map(|r| r.info.currency_spent).sum()
    }
}

/// Σ of purchase debits in a journal.
pub(crate) fn purchase_debits(journal: &[JournalEntry]) -> u64 {
    journal
        .iter()
        .filter(|e| e.kind == JournalKind::Purchase)
        .map(|e| e.delta.unsigned_abs())
        .sum()
}

/// A time in Unix milliseconds as a UTC date and time (`2026-12-02T17:25:35.123Z`).
pub(crate) fn utc(ms: i64) -> String {
    let time = if ms >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(time).to_string()
}
