//! A player's purchase history, as every store answers it: pages newest first, filtered by
//! product, state or time, from a page number or a cursor.

use serde::{Deserialize, Serialize};

use crate::ids::{ProductId, PurchaseId};
use crate::receipt::{ReceiptInfo, ReceiptState};

/// Entries in one page of purchase history (as `GetDeveloperProductsAsync` pages the catalog).
pub const HISTORY_PAGE_SIZE: usize = 50;

/// Which purchases of a player a history lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryFilter {
    /// Only this product.
    pub product: Option<ProductId>,
    /// Only receipts in this state.
    pub state: Option<ReceiptState>,
    /// Bought at or after this time (Unix ms).
    pub from_ms: Option<i64>,
    /// Bought before this time (Unix ms).
    pub to_ms: Option<i64>,
}

impl HistoryFilter {
    /// Whether a purchase passes the filter.
    pub(crate) fn admits(&self, entry: &HistoryEntry) -> bool {
        self.product.is_none_or(|p| entry.receipt.product_id == p)
            && self.state.is_none_or(|s| entry.state == s)
            && self.from_ms.is_none_or(|t| entry.purchased_at_ms >= t)
            && self.to_ms.is_none_or(|t| entry.purchased_at_ms < t)
    }
}

/// One purchase in a player's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The receipt, as delivered to handlers.
    pub receipt: ReceiptInfo,
    /// Pending, granted or refunded.
    pub state: ReceiptState,
    /// The product's name when it was bought.
    pub product_name: String,
    /// When it was bought (Unix ms).
    pub purchased_at_ms: i64,
    /// When it was granted (Unix ms), if it was.
    pub granted_at_ms: Option<i64>,
    /// When and why it was refunded, and what became of its effect, if it was.
    pub refund: Option<super::RefundRecord>,
}

/// Where a page of history starts: right after this purchase (the last of the page before), in
/// newest-first order. A page asked from a cursor costs what the first page costs, however deep
/// it is; a page asked by number skips the pages before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryCursor {
    /// When the purchase was made (Unix ms).
    pub purchased_at_ms: i64,
    /// The purchase: it breaks ties between purchases made in the same millisecond.
    pub purchase_id: PurchaseId,
}

impl HistoryCursor {
    /// The cursor just past `entry`.
    pub fn after(entry: &HistoryEntry) -> Self {
        Self {
            purchased_at_ms: entry.purchased_at_ms,
            purchase_id: entry.receipt.purchase_id.clone(),
        }
    }

    /// Whether `entry` comes after the cursor, newest first (it is older, or as old with a
    /// smaller purchase id, as the SQL stores order them).
    pub(crate) fn precedes(&self, entry: &HistoryEntry) -> bool {
        (entry.purchased_at_ms, &entry.receipt.purchase_id)
            < (self.purchased_at_ms, &self.purchase_id)
    }
}

/// A page of a player's purchase history, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    /// Up to [`HISTORY_PAGE_SIZE`] purchases.
    pub entries: Vec<HistoryEntry>,
    /// No purchases after this page.
    pub is_finished: bool,
}

impl HistoryPage {
    /// Where the next page starts, unless this was the last.
    pub fn next_cursor(&self) -> Option<HistoryCursor> {
        match self.entries.last() {
            Some(last) if !self.is_finished => Some(HistoryCursor::after(last)),
            _ => None,
        }
    }

    /// How many purchases (after the cursor, if any) come before the page: none from a cursor,
    /// `page` pages without.
    pub(crate) fn skipped(page: u32, after: Option<&HistoryCursor>) -> usize {
        match after {
            Some(_) => 0,
            None => page as usize * HISTORY_PAGE_SIZE,
        }
    }

    /// The page of `entries` (already filtered and newest first) that starts after `after`, or
    /// without a cursor page `page` (from 0).
    pub(crate) fn of(
        entries: impl Iterator<Item = HistoryEntry>,
        page: u32,
        after: Option<&HistoryCursor>,
    ) -> Self {
        let mut entries: Vec<HistoryEntry> = entries
            .filter(|e| after.is_none_or(|cursor| cursor.precedes(e)))
            .skip(Self::skipped(page, after))
            .take(HISTORY_PAGE_SIZE + 1)
            .collect();
        let is_finished = entries.len() <= HISTORY_PAGE_SIZE;
        entries.truncate(HISTORY_PAGE_SIZE);
        Self {
            entries,
            is_finished,
        }
    }
}
