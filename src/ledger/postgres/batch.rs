//! The PostgreSQL batch path: a whole group commit's charges or saves in set statements (a few
//! round trips a batch instead of a few a request), rows locked in one global order.

use std::collections::{HashMap, HashSet};

use super::PostgresLedger;
use super::sql::*;
use crate::ids::UserId;
use crate::ledger::{LedgerReply, LedgerRequest};
use crate::receipt::{CurrencyType, ReceiptInfo};

impl PostgresLedger {
    /// The batch path: requests other than charges and saves one by one in lock order, then the
    /// saves of players with one save in the batch in two round trips, then the charges of
    /// users with one charge in one round trip; what is left (repeats, refusals) one by one.
    /// A user's charges and saves do not depend on each other within one batch (a save only
    /// grants receipts whose charge was answered earlier), so grouping them keeps the effect of
    /// applying the batch in order.
    pub(super) fn apply_batch_inner(
        &mut self,
        batch: &[LedgerRequest],
        now_ms: i64,
    ) -> Result<Vec<LedgerReply>, postgres::Error> {
        let mut replies: Vec<Option<LedgerReply>> = vec![None; batch.len()];
        let mut saves_of: HashMap<UserId, usize> = HashMap::new();
        let mut charges_of: HashMap<UserId, usize> = HashMap::new();
        for request in batch {
            match request {
                LedgerRequest::Save(save) => *saves_of.entry(save.user).or_default() += 1,
                LedgerRequest::Charge(charge) => *charges_of.entry(charge.user).or_default() += 1,
                _ => {}
            }
        }
        // Every account row the batch touches is locked first, in user order, by one statement:
        // the passes below touch users out of order, and two servers locking in different orders
        // would deadlock (PostgreSQL breaks that after `deadlock_timeout`, a second each time).
        let mut users: Vec<i64> = batch.iter().filter_map(|r| r.user()).map(|u| u.0).collect();
        users.sort_unstable();
        users.dedup();
        let stmt = self.stmt(LOCK_ALL)?;
        self.client.execute(&stmt, &[&users])?;
        let mut one_by_one = Vec::new();
        let mut saves = Vec::new();
        let mut charges = Vec::new();
        for i in lock_order(batch) {
            match &batch[i] {
                LedgerRequest::Save(save) if saves_of[&save.user] == 1 => saves.push(i),
                LedgerRequest::Charge(charge) if charges_of[&charge.user] == 1 => charges.push(i),
                LedgerRequest::Save(_) | LedgerRequest::Charge(_) => one_by_one.push(i),
                _ => replies[i] = Some(self.apply_inner(&batch[i], now_ms)?),
            }
        }
        self.save_many(batch, &saves, now_ms, &mut replies)?;
        self.charge_many(batch, &charges, now_ms, &mut replies)?;
        for i in one_by_one {
            replies[i] = Some(self.apply_inner(&batch[i], now_ms)?);
        }
        // Charges the set statement did not make (replays, refusals) take the one-by-one path.
        for i in charges {
            if replies[i].is_none() {
                replies[i] = Some(self.apply_inner(&batch[i], now_ms)?);
            }
        }
        Ok(replies
            .into_iter()
            .map(|reply| reply.expect("every request of the batch was applied"))
            .collect())
    }

    fn save_many(
        &mut self,
        batch: &[LedgerRequest],
        saves: &[usize],
        now_ms: i64,
        replies: &mut [Option<LedgerReply>],
    ) -> Result<(), postgres::Error> {
        if saves.is_empty() {
            return Ok(());
        }
        let save_at = |i: usize| match &batch[i] {
            LedgerRequest::Save(save) => save,
            _ => unreachable!("only saves are listed"),
        };
        let users: Vec<i64> = saves.iter().map(|&i| save_at(i).user.0).collect();
        let stmt = self.stmt(LOCK_MANY)?;
        let owners: HashMap<i64, Option<String>> = self
            .client
            .query(&stmt, &[&users])?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()?;
        let (mut held, mut release, mut expires, mut name_lists) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut state_users, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
        let (mut grant_users, mut grant_ids) = (Vec::new(), Vec::new());
        for &i in saves {
            let save = save_at(i);
            let owner = owners.get(&save.user.0).cloned().flatten();
            if owner.as_deref() != Some(&*save.server.0) {
                replies[i] = Some(LedgerReply::LeaseLost { owner });
                continue;
            }
            held.push(save.user.0);
            release.push(save.release);
            expires.push(now_ms + save.lease_ms);
            name_lists.push(array_literal(save.state.0.keys()));
            for (name, value) in &save.state.0 {
                state_users.push(save.user.0);
                names.push(name.as_str());
                values.push(value.as_str());
            }
            for id in &save.granted {
                grant_users.push(save.user.0);
                grant_ids.push(id.0.as_str());
            }
        }
        if held.is_empty() {
            return Ok(());
        }
        let stmt = self.stmt(SAVE_MANY)?;
        let granted: HashSet<String> = self
            .client
            .query(
                &stmt,
                &[
                    &held,
                    &release,
                    &expires,
                    &name_lists,
                    &state_users,
                    &names,
                    &values,
                    &now_ms,
                    &grant_users,
                    &grant_ids,
                ],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        for &i in saves {
            if replies[i].is_none() {
                let newly_granted = save_at(i)
                    .granted
                    .iter()
                    .filter(|id| granted.contains(&id.0))
                    .cloned()
                    .collect();
                replies[i] = Some(LedgerReply::Saved { newly_granted });
            }
        }
        Ok(())
    }

    fn charge_many(
        &mut self,
        batch: &[LedgerRequest],
        charges: &[usize],
        now_ms: i64,
        replies: &mut [Option<LedgerReply>],
    ) -> Result<(), postgres::Error> {
        if charges.is_empty() {
            return Ok(());
        }
        let receipts: Vec<(usize, ReceiptInfo, String)> = charges
            .iter()
            .map(|&i| {
                let LedgerRequest::Charge(charge) = &batch[i] else {
                    unreachable!("only charges are listed")
                };
                let receipt = charge.new_receipt();
                (i, receipt, charge.request_id.0.to_string())
            })
            .collect();
        let purchase_ids: Vec<&str> = receipts
            .iter()
            .map(|(_, r, _)| r.purchase_id.as_str())
            .collect();
        let users: Vec<i64> = receipts.iter().map(|(_, r, _)| r.player_id.0).collect();
        let prices: Vec<i64> = receipts
            .iter()
            .map(|(_, r, _)| r.currency_spent as i64)
            .collect();
        let request_ids: Vec<&str> = receipts.iter().map(|(_, _, id)| id.as_str()).collect();
        let products: Vec<i64> = receipts.iter().map(|(_, r, _)| r.product_id.0).collect();
        let places: Vec<i64> = receipts
            .iter()
            .map(|(_, r, _)| r.place_id_where_purchased.0)
            .collect();
        let channels: Vec<i64> = receipts
            .iter()
            .map(|(_, r, _)| i64::from(r.product_purchase_channel.code()))
            .collect();
        let tests: Vec<bool> = receipts
            .iter()
            .map(|(_, r, _)| r.is_test_purchase)
            .collect();
        let currency = CurrencyType::Premium as i64;
        let stmt = self.stmt(CHARGE_MANY)?;
        let charged: HashMap<i64, i64> = self
            .client
            .query(
                &stmt,
                &[
                    &purchase_ids,
                    &users,
                    &prices,
                    &request_ids,
                    &products,
                    &places,
                    &channels,
                    &tests,
                    &now_ms,
                    &currency,
                ],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, postgres::Error>>()?;
        for (i, receipt, _) in receipts {
            if let Some(&balance) = charged.get(&receipt.player_id.0) {
                replies[i] = Some(LedgerReply::Charged {
                    receipt,
                    balance: balance as u64,
                    replayed: false,
                });
            }
        }
        Ok(())
    }
}

/// The order to apply a batch in: by user within each stretch between audits, so that every
/// server locks account rows in the same order and concurrent batches do not deadlock. The
/// requests of one user keep their order.
pub(super) fn lock_order(batch: &[LedgerRequest]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batch.len()).collect();
    let mut start = 0;
    for end in 0..=batch.len() {
        if end == batch.len() || matches!(batch[end], LedgerRequest::Audit) {
            order[start..end].sort_by_key(|&i| batch[i].user().map(|u| u.0));
            start = end + 1;
        }
    }
    order
}
