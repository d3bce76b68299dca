//! The sales a transaction adds to the hourly totals, kept until it commits.

use rusqlite::{Connection, params};

use crate::ledger::reports::SalesDelta;

/// Additions to the sales totals not yet written: a transaction adds each purchase's, refund's
/// and rejection's here and writes them when it commits, one row per hour and product, instead
/// of one upsert of the same row per purchase. A read of the totals inside the transaction
/// writes them first.
#[derive(Default)]
pub(super) struct PendingSales(Vec<SalesDelta>);

impl PendingSales {
    pub(super) fn add(&mut self, sale: &SalesDelta) {
        // A batch rarely spans more than a few hours and products.
        match self
            .0
            .iter_mut()
            .find(|p| p.hour_ms == sale.hour_ms && p.product_id == sale.product_id)
        {
            Some(pending) => pending.add(sale),
            None => self.0.push(*sale),
        }
    }

    /// Forgets them (the transaction rolled back, or a new one begins).
    pub(super) fn clear(&mut self) {
        self.0.clear();
    }

    /// Adds them to the totals, inside the open transaction.
    pub(super) fn write(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let mut upsert = conn.prepare_cached(
            "INSERT INTO sales_hours (hour_ms, product_id, units, currency, refunded_units,
                                      refunded_currency, test_units, rejected_units,
                                      rejected_currency)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (hour_ms, product_id, shard) DO UPDATE SET
                units = units + excluded.units,
                currency = currency + excluded.currency,
                refunded_units = refunded_units + excluded.refunded_units,
                refunded_currency = refunded_currency + excluded.refunded_currency,
                test_units = test_units + excluded.test_units,
                rejected_units = rejected_units + excluded.rejected_units,
                rejected_currency = rejected_currency + excluded.rejected_currency",
        )?;
        // Each one goes from the list once written: one that failed is not written twice.
        while let Some(sale) = self.0.last() {
            upsert.execute(params![
                sale.hour_ms,
                sale.product_id.0,
                sale.units as i64,
                sale.currency as i64,
                sale.refunded_units as i64,
                sale.refunded_currency as i64,
                sale.test_units as i64,
                sale.rejected_units as i64,
                sale.rejected_currency as i64,
            ])?;
            self.0.pop();
        }
        Ok(())
    }
}
