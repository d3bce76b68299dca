//! Whether a ledger adds up: the checks `marketplace check` runs and the tests rely on.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::reports::hourly_sales;
use super::{JournalKind, LedgerAudit, MAX_BALANCE};
use crate::ids::{PurchaseId, UserId};
use crate::receipt::ReceiptState;

/// What [`LedgerAudit::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Accounts checked.
    pub accounts: usize,
    /// Receipts checked.
    pub receipts: usize,
    /// Journal entries checked.
    pub journal_entries: usize,
    /// Every violation, each naming what and where.
    pub problems: Vec<String>,
}

impl IntegrityReport {
    /// No violation.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

impl LedgerAudit {
    /// Checks that the ledger adds up:
    /// - every balance is the sum of its journal (the starting balance is its first entry) and
    ///   within `0..=MAX_BALANCE`;
    /// - every journal entry moves the balance the way its kind does (a purchase debits, a
    ///   refund credits), and only purchases and refunds name a receipt;
    /// - every purchase debit names a receipt of the same user for the same amount, and every
    ///   receipt that cost something has exactly one debit;
    /// - every refunded or rejected receipt has its refund record, and exactly one refund credit
    ///   when it cost something; no other receipt has either; a rejected receipt was never
    ///   granted (nothing to claw back, no grant time);
    /// - every receipt's buyer has an account;
    /// - the sales totals per product per hour are what the receipts add up to.
    pub fn check(&self) -> IntegrityReport {
        let mut problems = Vec::new();
        let mut journaled: BTreeMap<UserId, i128> = BTreeMap::new();
        let mut debits: HashMap<&PurchaseId, Vec<(UserId, i64)>> = HashMap::new();
        let mut refunds: HashMap<&PurchaseId, Vec<(UserId, i64)>> = HashMap::new();
        for entry in &self.journal {
            *journaled.entry(entry.user).or_default() += i128::from(entry.delta);
            let (user, delta, kind) = (entry.user, entry.delta, entry.kind);
            let sign_ok = match kind {
                JournalKind::StartingBalance | JournalKind::Refund | JournalKind::TopUp => {
                    delta > 0
                }
                JournalKind::Purchase
                | JournalKind::TopUpReversal
                | JournalKind::ShortfallRepaid => delta < 0,
                JournalKind::Adjustment => delta != 0,
            };
            if !sign_ok {
                problems.push(format!(
                    "journal: a {} entry of user {user} changes the balance by {delta}",
                    kind.as_str()
                ));
            }
            match (&entry.purchase_id, kind) {
                (Some(id), JournalKind::Purchase) => {
                    debits.entry(id).or_default().push((user, delta))
                }
                (Some(id), JournalKind::Refund) => {
                    refunds.entry(id).or_default().push((user, delta))
                }
                (None, JournalKind::Purchase | JournalKind::Refund) => problems.push(format!(
                    "journal: a {} entry of user {user} ({delta}) names no receipt",
                    kind.as_str()
                )),
                (Some(id), _) => problems.push(format!(
                    "journal: a {} entry of user {user} ({delta}) names receipt {id}",
                    kind.as_str()
                )),
                (None, _) => {}
            }
        }
        for (user, (balance, _)) in &self.accounts {
            let sum = journaled.get(user).copied().unwrap_or(0);
            if i128::from(*balance) != sum {
                problems.push(format!(
                    "account {user}: balance {balance} but its journal sums to {sum}"
                ));
            }
            if *balance > MAX_BALANCE {
                problems.push(format!(
                    "account {user}: balance {balance} is above the largest, {MAX_BALANCE}"
                ));
            }
        }
        for user in journaled.keys() {
            if !self.accounts.contains_key(user) {
                problems.push(format!(
                    "journal: entries for user {user}, who has no account"
                ));
            }
        }
        for receipt in &self.receipts {
            let info = &receipt.info;
            if !self.accounts.contains_key(&info.player_id) {
                problems.push(format!(
                    "receipt {}: its buyer, user {}, has no account",
                    info.purchase_id, info.player_id
                ));
            }
            let found = debits.remove(&info.purchase_id).unwrap_or_default();
            let expected = (info.currency_spent > 0).then(|| {
                (
                    info.player_id,
                    -(info.currency_spent.min(MAX_BALANCE) as i64),
                )
            });
            match (expected, found.as_slice()) {
                (None, []) => {}
                (Some(want), [got]) if *got == want => {}
                (None, found) => problems.push(format!(
                    "receipt {}: free, but debited {} time(s)",
                    info.purchase_id,
                    found.len()
                )),
                (Some((user, delta)), found) => problems.push(format!(
                    "receipt {}: should be debited once by {delta} from user {user}, found {found:?}",
                    info.purchase_id
                )),
            }
            let refunded = matches!(
                receipt.state,
                ReceiptState::Refunded | ReceiptState::Rejected
            );
            if receipt.state == ReceiptState::Rejected
                && (receipt.granted_at_ms.is_some()
                    || receipt
                        .refund
                        .as_ref()
                        .is_some_and(|r| r.clawback != super::Clawback::NotNeeded))
            {
                problems.push(format!(
                    "receipt {}: rejected, but granted before it ({:?})",
                    info.purchase_id, receipt.refund
                ));
            }
            if refunded != receipt.refund.is_some() {
                problems.push(format!(
                    "receipt {}: state {} but {} refund record",
                    info.purchase_id,
                    receipt.state.as_str(),
                    if refunded { "no" } else { "a" }
                ));
            }
            let found = refunds.remove(&info.purchase_id).unwrap_or_default();
            let expected = (refunded && info.currency_spent > 0)
                .then(|| (info.player_id, info.currency_spent.min(MAX_BALANCE) as i64));
            match (expected, found.as_slice()) {
                (None, []) => {}
                (Some(want), [got]) if *got == want => {}
                (expected, found) => problems.push(format!(
                    "receipt {}: should be refunded {expected:?}, found refund credit(s) {found:?}",
                    info.purchase_id
                )),
            }
        }
        for (id, found) in refunds {
            problems.push(format!(
                "journal: refund credit(s) {found:?} for receipt {id}, which does not exist"
            ));
        }
        for (id, found) in debits {
            problems.push(format!(
                "journal: purchase debit(s) {found:?} for receipt {id}, which does not exist"
            ));
        }
        let totals = hourly_sales(&self.receipts);
        if totals != self.sales_hours {
            let kept: std::collections::BTreeMap<_, _> = self
                .sales_hours
                .iter()
                .map(|r| ((r.bucket_start_ms, r.product_id), r))
                .collect();
            let added: std::collections::BTreeMap<_, _> = totals
                .iter()
                .map(|r| ((r.bucket_start_ms, r.product_id), r))
                .collect();
            for key in kept.keys().chain(added.keys()).collect::<BTreeSet<_>>() {
                let (kept, added) = (kept.get(key), added.get(key));
                if kept != added {
                    problems.push(format!(
                        "sales totals of product {} in the hour from {} ms: kept {kept:?}, the receipts add up to {added:?}",
                        key.1, key.0
                    ));
                }
            }
        }
        IntegrityReport {
            accounts: self.accounts.len(),
            receipts: self.receipts.len(),
            journal_entries: self.journal.len(),
            problems,
        }
    }
}
