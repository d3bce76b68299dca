//! What the ledger tells the people who run the game about sales: per product and per day or
//! hour, and the hourly totals the SQL stores keep as purchases commit. Every store answers the
//! same questions; the in-memory store computes the answers here, the SQL stores in SQL, and a
//! test holds them equal. (A player's purchase history is in `history`.)

use serde::{Deserialize, Serialize};

use crate::ids::ProductId;
use crate::receipt::{ReceiptInfo, ReceiptState};

/// How finely sales are counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SalesBucket {
    /// Per UTC day.
    #[default]
    Day,
    /// Per UTC hour.
    Hour,
}

impl SalesBucket {
    /// The bucket's length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Self::Day => 86_400_000,
            Self::Hour => 3_600_000,
        }
    }

    /// The start of the bucket holding `at_ms`.
    pub fn start_of(self, at_ms: i64) -> i64 {
        at_ms.div_euclid(self.millis()) * self.millis()
    }
}

/// Which sales to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesQuery {
    /// Purchases at or after this time (Unix ms).
    pub from_ms: i64,
    /// Purchases before this time (Unix ms).
    pub to_ms: i64,
    /// Per day or per hour.
    pub bucket: SalesBucket,
}

/// Sales of one product in one day or hour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesRow {
    /// Start of the day or hour (Unix ms, UTC).
    pub bucket_start_ms: i64,
    /// The product.
    pub product_id: ProductId,
    /// Purchases (test purchases not counted).
    pub units: u64,
    /// Premium currency taken by them.
    pub currency: u64,
    /// Of those, refunded since.
    pub refunded_units: u64,
    /// Premium currency given back by those refunds.
    pub refunded_currency: u64,
    /// Test purchases, counted apart (they cost nothing).
    pub test_units: u64,
    /// Of the purchases, rejected by their handler and refunded at once (apart from
    /// `refunded_units`: the game turned them down, nobody asked for the money back).
    pub rejected_units: u64,
    /// Premium currency given back by those rejections.
    pub rejected_currency: u64,
}

impl SalesRow {
    /// Currency taken minus currency refunded or given back by rejections.
    pub fn net(&self) -> i64 {
        self.currency as i64 - self.refunded_currency as i64 - self.rejected_currency as i64
    }
}

/// The header of [`sales_csv`] (its columns are the fields of [`SalesRow`]).
pub const SALES_CSV_HEADER: &str = "bucket_start_utc,product_id,units,currency,refunded_units,refunded_currency,net,test_units,rejected_units,rejected_currency";

/// Sales as CSV: [`SALES_CSV_HEADER`], then a row per product per bucket, the bucket's start
/// written as an RFC 3339 UTC time.
pub fn sales_csv(rows: &[SalesRow]) -> String {
    let mut csv = String::from(SALES_CSV_HEADER);
    csv.push('\n');
    for row in rows {
        let start = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(row.bucket_start_ms.max(0) as u64);
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            humantime::format_rfc3339_seconds(start),
            row.product_id.0,
            row.units,
            row.currency,
            row.refunded_units,
            row.refunded_currency,
            row.net(),
            row.test_units,
            row.rejected_units,
            row.rejected_currency
        ));
    }
    csv
}

/// Sales from a list of purchases (the in-memory store's way; the SQL stores group in SQL):
/// `(receipt, state, purchased_at_ms)`, in any order. Rows by bucket, then product.
pub(crate) fn sales_of<'a>(
    purchases: impl Iterator<Item = (&'a ReceiptInfo, ReceiptState, i64)>,
    query: &SalesQuery,
) -> Vec<SalesRow> {
    let mut rows: std::collections::BTreeMap<(i64, ProductId), SalesRow> = Default::default();
    for (receipt, state, at) in purchases {
        if at < query.from_ms || at >= query.to_ms {
            continue;
        }
        let bucket = query.bucket.start_of(at);
        let row = rows
            .entry((bucket, receipt.product_id))
            .or_insert_with(|| SalesRow {
                bucket_start_ms: bucket,
                product_id: receipt.product_id,
                units: 0,
                currency: 0,
                refunded_units: 0,
                refunded_currency: 0,
                test_units: 0,
                rejected_units: 0,
                rejected_currency: 0,
            });
        if receipt.is_test_purchase {
            row.test_units += 1;
            continue;
        }
        row.units += 1;
        row.currency += receipt.currency_spent;
        match state {
            ReceiptState::Refunded => {
                row.refunded_units += 1;
                row.refunded_currency += receipt.currency_spent;
            }
            ReceiptState::Rejected => {
                row.rejected_units += 1;
                row.rejected_currency += receipt.currency_spent;
            }
            ReceiptState::Pending | ReceiptState::Granted => {}
        }
    }
    rows.into_values().collect()
}

/// Sales per product per hour of `receipts`, in order: what the totals a store keeps must be.
pub(crate) fn hourly_sales(receipts: &[super::StoredReceipt]) -> Vec<SalesRow> {
    sales_of(
        receipts
            .iter()
            .map(|r| (&r.info, r.state, r.purchased_at_ms)),
        &SalesQuery {
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            bucket: SalesBucket::Hour,
        },
    )
}

/// What one purchase or refund adds to the sales totals of the hour the purchase was made in
/// (SQL stores keep them as purchases and refunds commit, so a report reads totals, not
/// receipts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SalesDelta {
    /// The start of the purchase's hour (Unix ms, UTC).
    pub(crate) hour_ms: i64,
    pub(crate) product_id: ProductId,
    pub(crate) units: u64,
    pub(crate) currency: u64,
    pub(crate) refunded_units: u64,
    pub(crate) refunded_currency: u64,
    pub(crate) test_units: u64,
    pub(crate) rejected_units: u64,
    pub(crate) rejected_currency: u64,
}

impl SalesDelta {
    /// Nothing yet, for the hour starting at `hour_ms`.
    pub(crate) fn none(hour_ms: i64, product_id: ProductId) -> Self {
        Self {
            hour_ms,
            product_id,
            units: 0,
            currency: 0,
            refunded_units: 0,
            refunded_currency: 0,
            test_units: 0,
            rejected_units: 0,
            rejected_currency: 0,
        }
    }

    /// A purchase made at `at_ms`.
    pub(crate) fn purchase(receipt: &ReceiptInfo, at_ms: i64) -> Self {
        let mut delta = Self::none(SalesBucket::Hour.start_of(at_ms), receipt.product_id);
        if receipt.is_test_purchase {
            delta.test_units = 1;
        } else {
            delta.units = 1;
            delta.currency = receipt.currency_spent;
        }
        delta
    }

    /// The refund of a purchase made at `purchased_at_ms`; `None` for a test purchase (its
    /// refunds are not counted).
    pub(crate) fn refund(receipt: &ReceiptInfo, purchased_at_ms: i64) -> Option<Self> {
        (!receipt.is_test_purchase).then(|| Self {
            refunded_units: 1,
            refunded_currency: receipt.currency_spent,
            ..Self::none(
                SalesBucket::Hour.start_of(purchased_at_ms),
                receipt.product_id,
            )
        })
    }

    /// The rejection of a purchase made at `purchased_at_ms`; `None` for a test purchase.
    pub(crate) fn rejection(receipt: &ReceiptInfo, purchased_at_ms: i64) -> Option<Self> {
        (!receipt.is_test_purchase).then(|| Self {
            rejected_units: 1,
            rejected_currency: receipt.currency_spent,
            ..Self::none(
                SalesBucket::Hour.start_of(purchased_at_ms),
                receipt.product_id,
            )
        })
    }

    /// Adds `other`'s counts (same hour and product) to these (PostgreSQL sums a batch's).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn add(&mut self, other: &Self) {
        // Saturating: no panic on absurd sums (each balance is at most `MAX_BALANCE`).
        self.units = self.units.saturating_add(other.units);
        self.currency = self.currency.saturating_add(other.currency);
        self.refunded_units = self.refunded_units.saturating_add(other.refunded_units);
        self.refunded_currency = self
            .refunded_currency
            .saturating_add(other.refunded_currency);
        self.test_units = self.test_units.saturating_add(other.test_units);
        self.rejected_units = self.rejected_units.saturating_add(other.rejected_units);
        self.rejected_currency = self
            .rejected_currency
            .saturating_add(other.rejected_currency);
    }
}

/// How a store answers a sales query from hourly totals: the whole hours in it from the totals,
/// and the parts of an hour at its edges (at most two) from the receipts.
// Only the SQL stores keep totals; the in-memory store adds up receipts.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SalesSpans {
    /// Whole hours `[start, end)`, if any.
    pub(crate) hours: Option<(i64, i64)>,
    /// Ranges `[from, to)` shorter than an hour, read from the receipts.
    pub(crate) edges: Vec<(i64, i64)>,
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl SalesQuery {
    /// Splits the query into whole hours and edges.
    pub(crate) fn spans(&self) -> SalesSpans {
        let hour = SalesBucket::Hour.millis();
        let (from, to) = (self.from_ms, self.to_ms);
        if from >= to {
            return SalesSpans {
                hours: None,
                edges: Vec::new(),
            };
        }
        // The first hour starting at or after `from`, the last hour start at or before `to`.
        let first_hour = from.div_euclid(hour) + i64::from(from.rem_euclid(hour) != 0);
        let first = first_hour.checked_mul(hour);
        let last = to.div_euclid(hour).checked_mul(hour);
        match (first, last) {
            (Some(first), Some(last)) if first < last => SalesSpans {
                hours: Some((first, last)),
                edges: [(from, first), (last, to)]
                    .into_iter()
                    .filter(|(a, b)| a < b)
                    .collect(),
            },
            _ => SalesSpans {
                hours: None,
                edges: vec![(from, to)],
            },
        }
    }
}

/// Rows gathered from several reads (totals and edges), summed by bucket and product, in order.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
#[derive(Default)]
pub(crate) struct SalesRows(std::collections::BTreeMap<(i64, ProductId), SalesRow>);

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
impl SalesRows {
    /// Adds `row` to the row of its bucket and product.
    pub(crate) fn add(&mut self, row: SalesRow) {
        match self.0.entry((row.bucket_start_ms, row.product_id)) {
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(row);
            }
            std::collections::btree_map::Entry::Occupied(mut slot) => {
                let sum = slot.get_mut();
                sum.units += row.units;
                sum.currency += row.currency;
                sum.refunded_units += row.refunded_units;
                sum.refunded_currency += row.refunded_currency;
                sum.test_units += row.test_units;
                sum.rejected_units += row.rejected_units;
                sum.rejected_currency += row.rejected_currency;
            }
        }
    }

    pub(crate) fn into_rows(self) -> Vec<SalesRow> {
        self.0.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    fn spans(from_ms: i64, to_ms: i64) -> SalesSpans {
        SalesQuery {
            from_ms,
            to_ms,
            bucket: SalesBucket::Day,
        }
        .spans()
    }

    #[test]
    fn a_query_splits_into_whole_hours_and_its_edges() {
        assert_eq!(
            spans(0, i64::MAX),
            SalesSpans {
                hours: Some((0, i64::MAX.div_euclid(H) * H)),
                edges: vec![(i64::MAX.div_euclid(H) * H, i64::MAX)],
            }
        );
        assert_eq!(
            spans(H + 5, 3 * H + 7),
            SalesSpans {
                hours: Some((2 * H, 3 * H)),
                edges: vec![(H + 5, 2 * H), (3 * H, 3 * H + 7)],
            }
        );
        assert_eq!(
            spans(H, 3 * H),
            SalesSpans {
                hours: Some((H, 3 * H)),
                edges: vec![],
            }
        );
        // Within one hour, or across one boundary with no whole hour: receipts only.
        assert_eq!(spans(H + 5, H + 9).edges, vec![(H + 5, H + 9)]);
        assert_eq!(spans(H + 5, 2 * H + 9).edges, vec![(H + 5, 2 * H + 9)]);
        assert_eq!(
            spans(i64::MIN, i64::MAX).hours,
            Some(((i64::MIN.div_euclid(H) + 1) * H, i64::MAX.div_euclid(H) * H))
        );
        assert_eq!(
            spans(5, 5),
            SalesSpans {
                hours: None,
                edges: vec![]
            }
        );
        assert_eq!(
            spans(i64::MAX - 3, i64::MAX).edges,
            vec![(i64::MAX - 3, i64::MAX)]
        );
    }
}
