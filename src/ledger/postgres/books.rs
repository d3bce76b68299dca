//! A batch's rows, read up front and written back at the end: the PostgreSQL ledger applies the
//! ledger rules to this cache, so a batch of any size costs a few round trips and decides exactly
//! as its requests would one at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tokio_postgres::types::ToSql;

use super::conn::{Conn, PgError};
use super::sql::*;
use crate::ids::{PurchaseId, RequestId, UserId};
use crate::ledger::reports::SalesDelta;
use crate::ledger::rules::{AccountRow, Books, ReceiptStatus, may_create_account, texts_keepable};
use crate::ledger::{
    Clawback, CreditRecord, HistoryCursor, HistoryFilter, HistoryPage, JournalEntry, LedgerAudit,
    LedgerRequest, OpenSession, PlayerSnapshot, ReadPlayer, RefundRecord, SalesQuery, SalesRow,
};
use crate::receipt::{CurrencyType, ReceiptInfo, ReceiptState};

/// A receipt the batch read or made.
struct CachedReceipt {
    row: ReceiptRow,
    /// Made by this batch (inserted at the end, in its final state).
    new: bool,
    /// An older receipt whose state this batch changed.
    changed: bool,
}

/// The rows of one batch (a stretch of requests without an audit).
#[derive(Default)]
pub(super) struct CachedBooks {
    accounts: HashMap<UserId, AccountRow>,
    /// Users read and found to have no account (none of their requests may create one).
    no_account: HashSet<UserId>,
    /// Rows inserted (and so locked) for accounts the batch may create, not made yet: the rules
    /// see no account until they make one; rows still here at the end are deleted.
    reserved: HashSet<UserId>,
    receipts: HashMap<PurchaseId, CachedReceipt>,
    by_request: HashMap<RequestId, PurchaseId>,
    /// Request ids and purchase ids looked up (found or not).
    requests_read: HashSet<RequestId>,
    ids_read: HashSet<PurchaseId>,
    /// Users whose pending receipts were all read.
    pending_read: HashSet<UserId>,
    states: HashMap<UserId, PlayerSnapshot>,
    accounts_changed: BTreeSet<UserId>,
    states_changed: BTreeSet<UserId>,
    journal: Vec<JournalEntry>,
    /// Players added to the change feed, in order.
    changes: Vec<UserId>,
    /// What the batch adds to the sales totals, by hour and product (in the order rows are
    /// locked).
    sales: BTreeMap<(i64, i64), SalesDelta>,
    /// Store orders read or made, and whether to write them back.
    credits: HashMap<(String, String), (CreditRecord, bool)>,
    /// Store orders looked up (found or not).
    credits_read: HashSet<(String, String)>,
}

/// A read the cache was not filled for: a bug in [`CachedBooks::read`], reported as a failed
/// transaction rather than a wrong answer.
fn unread(what: String) -> PgError {
    PgError::Corrupt(format!("the batch did not read {what} before deciding"))
}

fn account_from_row(row: &tokio_postgres::Row) -> Result<(UserId, AccountRow), PgError> {
    let balance: i64 = row.try_get(1)?;
    let user = UserId(row.try_get(0)?);
    Ok((
        user,
        AccountRow {
            balance: u64::try_from(balance)
                .map_err(|_| PgError::Corrupt(format!("account {user}: balance {balance}")))?,
            lease_owner: row.try_get(2)?,
            lease_expires_ms: row.try_get(3)?,
            lease_token: row.try_get(4)?,
            shortfall: u64::try_from(row.try_get::<_, i64>(5)?)
                .map_err(|_| PgError::Corrupt(format!("account {user}: negative shortfall")))?,
        },
    ))
}

/// A store order's key as the rules look it up.
fn credit_key(source: &str, order_id: &str) -> (String, String) {
    (source.to_owned(), order_id.to_owned())
}

impl CachedBooks {
    /// Reads (and locks) every row `batch` needs, in one round trip: existing accounts locked in
    /// user order, then rows for the accounts the batch may make inserted (or locked) in user
    /// order, the receipts its charges and grants name, the pending receipts and components of the
    /// players it loads. With `begin`, the transaction starts in the same round trip. Returns the
    /// rows and the database's time (Unix ms) at the start of the transaction.
    pub(super) fn read(
        conn: &mut Conn,
        batch: &[LedgerRequest],
        now_ms: i64,
        begin: bool,
    ) -> Result<(Self, i64), PgError> {
        let mut books = Self::default();
        // Refunds and reversals name a receipt or an order: read whose they are first, so their
        // accounts are locked in order with the others.
        let (mut refunded, mut orders) = (Vec::new(), (Vec::<String>::new(), Vec::<String>::new()));
        // A request whose text no store keeps is refused by the rules before they read; its text
        // must not reach the database either (PostgreSQL refuses NUL, failing the whole batch).
        for request in batch.iter().filter(|r| texts_keepable(r)) {
            match request {
                LedgerRequest::Refund(refund) => refunded.push(refund.purchase_id.as_str()),
                LedgerRequest::ReverseCredit(reverse) => {
                    orders.0.push(reverse.source.clone());
                    orders.1.push(reverse.order_id.clone());
                }
                LedgerRequest::Credit(credit) => {
                    orders.0.push(credit.source.clone());
                    orders.1.push(credit.order_id.clone());
                }
                _ => {}
            }
        }
        let mut owners = Vec::new();
        let mut begin = begin;
        let mut orders_locked = false;
        if !refunded.is_empty()
            || batch
                .iter()
                .any(|r| matches!(r, LedgerRequest::ReverseCredit(_)))
        {
            let mut queries: Vec<(&'static str, &[&(dyn ToSql + Sync)])> = Vec::with_capacity(4);
            if begin {
                queries.push((BEGIN, &[]));
            }
            let (by_receipt, by_order): (&[&(dyn ToSql + Sync)], &[&(dyn ToSql + Sync)]) =
                (&[&refunded], &[&orders.0, &orders.1]);
            // The orders are locked before their owners are read: a credit of one committing
            // meanwhile is then seen, and its owner's account locked with the others.
            queries.push((LOCK_ORDERS, by_order));
            queries.push((USERS_OF_RECEIPTS, by_receipt));
            queries.push((USERS_OF_CREDITS, by_order));
            orders_locked = true;
            for rows in conn
                .pipeline(&queries)?
                .into_iter()
                .skip(usize::from(begin) + 1)
            {
                for row in rows {
                    owners.push(row.try_get::<_, i64>(0)?);
                }
            }
            begin = false;
        }
        let mut users: Vec<i64> = batch
            .iter()
            .filter_map(|r| r.user())
            .map(|u| u.0)
            .chain(owners)
            .collect();
        users.sort_unstable();
        users.dedup();
        let mut creating: Vec<i64> = batch
            .iter()
            .filter_map(may_create_account)
            .map(|user| user.0)
            .collect();
        creating.sort_unstable();
        creating.dedup();
        let (mut request_ids, mut grant_ids, mut loading) = (Vec::new(), Vec::new(), Vec::new());
        for request in batch.iter().filter(|r| texts_keepable(r)) {
            match request {
                LedgerRequest::Charge(charge) => {
                    books.requests_read.insert(charge.request_id);
                    request_ids.push(charge.request_id.0.to_string());
                }
                LedgerRequest::Save(save) => {
                    for id in save
                        .granted
                        .iter()
                        .chain(save.settled.iter().map(|(id, _)| id))
                        .chain(save.rejected.iter().map(|(id, _)| id))
                    {
                        books.ids_read.insert(id.clone());
                        grant_ids.push(id.0.as_str());
                    }
                }
                LedgerRequest::Refund(refund) => {
                    books.ids_read.insert(refund.purchase_id.clone());
                    grant_ids.push(refund.purchase_id.as_str());
                }
                LedgerRequest::OpenSession(OpenSession { user, .. })
                | LedgerRequest::ReadPlayer(ReadPlayer { user }) => {
                    books.pending_read.insert(*user);
                    loading.push(user.0);
                }
                _ => {}
            }
        }
        for (source, order_id) in orders.0.iter().zip(&orders.1) {
            books.credits_read.insert(credit_key(source, order_id));
        }
        let mut queries: Vec<(&'static str, &[&(dyn ToSql + Sync)])> = Vec::with_capacity(9);
        if begin {
            queries.push((BEGIN, &[]));
        }
        let reads: [(&'static str, &[&(dyn ToSql + Sync)]); 9] = [
            (DATABASE_NOW, &[]),
            // Store orders before accounts, in key order, like every server: two servers crediting
            // one order take turns, and the second reads the first's order below. (Locked in the
            // first round trip already when the batch reads the owners of orders.)
            (
                if orders_locked {
                    NO_ORDERS
                } else {
                    LOCK_ORDERS
                },
                &[&orders.0, &orders.1],
            ),
            (LOCK_ACCOUNTS, &[&users]),
            (RESERVE_ACCOUNTS, &[&creating, &now_ms]),
            (RECEIPTS_BY_REQUEST, &[&request_ids]),
            (RECEIPTS_BY_ID, &[&grant_ids]),
            (PENDING_OF, &[&loading]),
            (STATES_OF, &[&loading]),
            (CREDITS_BY_KEY, &[&orders.0, &orders.1]),
        ];
        queries.extend(reads);
        let mut results = conn
            .pipeline(&queries)?
            .into_iter()
            .skip(usize::from(begin));
        let mut next = || results.next().unwrap_or_default();
        let database_now: i64 = next()
            .first()
            .ok_or_else(|| PgError::Corrupt("the database gave no time".into()))?
            .try_get(0)?;
        next(); // the order locks
        for row in next() {
            let (user, account) = account_from_row(&row)?;
            books.accounts.insert(user, account);
        }
        for row in next() {
            let (user, account) = account_from_row(&row)?;
            if row.try_get::<_, bool>(6)? {
                books.reserved.insert(user);
            } else {
                // It existed: locked above, or made by another server since.
                books.accounts.insert(user, account);
            }
        }
        for &user in &users {
            let user = UserId(user);
            if !books.accounts.contains_key(&user) && !books.reserved.contains(&user) {
                books.no_account.insert(user);
            }
        }
        books.cache_receipts(&next())?;
        books.cache_receipts(&next())?;
        books.cache_receipts(&next())?;
        for &user in &loading {
            books.states.entry(UserId(user)).or_default();
        }
        for row in next() {
            let user = UserId(row.try_get(0)?);
            books
                .states
                .entry(user)
                .or_default()
                .0
                .insert(row.try_get(1)?, row.try_get(2)?);
        }
        for row in next() {
            let credit = credit_from_row(&row)?;
            let key = credit_key(&credit.source, &credit.order_id);
            books.credits.insert(key, (credit, false));
        }
        Ok((books, database_now))
    }

    /// The user's cached receipts that pass `admit`, oldest first.
    fn listed(&self, user: UserId, admit: impl Fn(&ReceiptRow) -> bool) -> Vec<ReceiptInfo> {
        let mut listed: Vec<&ReceiptRow> = self
            .receipts
            .values()
            .map(|r| &r.row)
            .filter(|r| r.info.player_id == user && admit(r))
            .collect();
        listed.sort_by(|a, b| {
            (a.created_ms, &a.info.purchase_id).cmp(&(b.created_ms, &b.info.purchase_id))
        });
        listed.into_iter().map(|r| r.info.clone()).collect()
    }

    fn change_receipt(
        &mut self,
        id: &PurchaseId,
        change: impl FnOnce(&mut ReceiptRow),
    ) -> Result<(), PgError> {
        let receipt = self
            .receipts
            .get_mut(id)
            .ok_or_else(|| unread(format!("receipt {id}")))?;
        change(&mut receipt.row);
        receipt.changed = !receipt.new;
        Ok(())
    }

    fn cache_receipts(&mut self, rows: &[tokio_postgres::Row]) -> Result<(), PgError> {
        for row in rows {
            let row = receipt_from_row(row)?;
            self.by_request
                .insert(row.request_id, row.info.purchase_id.clone());
            self.receipts
                .entry(row.info.purchase_id.clone())
                .or_insert(CachedReceipt {
                    row,
                    new: false,
                    changed: false,
                });
        }
        Ok(())
    }

    /// Writes back everything the batch changed, in one statement; with `commit`, commits in the
    /// same round trip.
    pub(super) fn write(self, conn: &mut Conn, now_ms: i64, commit: bool) -> Result<(), PgError> {
        let Self {
            accounts,
            receipts,
            states,
            accounts_changed,
            states_changed,
            journal,
            reserved,
            credits,
            changes,
            sales,
            ..
        } = self;
        let credits: Vec<&CreditRecord> = credits
            .values()
            .filter(|(_, changed)| *changed)
            .map(|(credit, _)| credit)
            .collect();
        if accounts_changed.is_empty()
            && states_changed.is_empty()
            && journal.is_empty()
            && reserved.is_empty()
            && credits.is_empty()
            && changes.is_empty()
            && sales.is_empty()
            && !receipts.values().any(|r| r.new || r.changed)
        {
            if commit {
                conn.pipeline(&[(COMMIT, &[])])?;
            }
            return Ok(());
        }
        let (mut a_users, mut a_balances, mut a_owners, mut a_expires, mut a_tokens) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut a_shortfalls = Vec::new();
        for user in &accounts_changed {
            let account = &accounts[user];
            a_users.push(user.0);
            a_balances.push(account.balance as i64);
            a_owners.push(account.lease_owner.as_deref());
            a_expires.push(account.lease_expires_ms);
            a_tokens.push(account.lease_token);
            a_shortfalls.push(account.shortfall as i64);
        }
        let mut made: Vec<&CachedReceipt> = receipts.values().filter(|r| r.new).collect();
        made.sort_by_key(|r| (r.row.created_ms, &r.row.info.purchase_id));
        let request_texts: Vec<String> = made
            .iter()
            .map(|r| r.row.request_id.0.to_string())
            .collect();
        let n_ids: Vec<&str> = made
            .iter()
            .map(|r| r.row.info.purchase_id.as_str())
            .collect();
        let n_users: Vec<i64> = made.iter().map(|r| r.row.info.player_id.0).collect();
        let n_products: Vec<i64> = made.iter().map(|r| r.row.info.product_id.0).collect();
        let n_places: Vec<i64> = made
            .iter()
            .map(|r| r.row.info.place_id_where_purchased.0)
            .collect();
        let n_spent: Vec<i64> = made
            .iter()
            .map(|r| r.row.info.currency_spent as i64)
            .collect();
        let n_channels: Vec<i64> = made
            .iter()
            .map(|r| i64::from(r.row.info.product_purchase_channel.code()))
            .collect();
        let n_tests: Vec<bool> = made.iter().map(|r| r.row.info.is_test_purchase).collect();
        let n_states: Vec<&str> = made.iter().map(|r| r.row.state.as_str()).collect();
        let n_names: Vec<&str> = made.iter().map(|r| r.row.product_name.as_str()).collect();
        let changed: Vec<&CachedReceipt> = receipts.values().filter(|r| r.changed).collect();
        let c_ids: Vec<&str> = changed
            .iter()
            .map(|r| r.row.info.purchase_id.as_str())
            .collect();
        let c_states: Vec<&str> = changed.iter().map(|r| r.row.state.as_str()).collect();
        let (n_granted, n_refunded, n_reasons, n_clawbacks) = refund_columns(&made);
        let (c_granted, c_refunded, c_reasons, c_clawbacks) = refund_columns(&changed);
        let o_sources: Vec<&str> = credits.iter().map(|c| c.source.as_str()).collect();
        let o_orders: Vec<&str> = credits.iter().map(|c| c.order_id.as_str()).collect();
        let o_users: Vec<i64> = credits.iter().map(|c| c.user.0).collect();
        let o_amounts: Vec<i64> = credits.iter().map(|c| c.amount as i64).collect();
        let o_credited: Vec<i64> = credits.iter().map(|c| c.credited_at_ms).collect();
        let o_reversed: Vec<Option<i64>> = credits
            .iter()
            .map(|c| c.reversal.as_ref().map(|r| r.at_ms))
            .collect();
        let o_taken: Vec<Option<i64>> = credits
            .iter()
            .map(|c| c.reversal.as_ref().map(|r| r.taken as i64))
            .collect();
        let o_short: Vec<Option<i64>> = credits
            .iter()
            .map(|c| c.reversal.as_ref().map(|r| r.shortfall as i64))
            .collect();
        let j_users: Vec<i64> = journal.iter().map(|e| e.user.0).collect();
        let j_deltas: Vec<i64> = journal.iter().map(|e| e.delta).collect();
        let j_reasons: Vec<&str> = journal.iter().map(|e| e.reason.as_str()).collect();
        let j_kinds: Vec<&str> = journal.iter().map(|e| e.kind.as_str()).collect();
        let j_purchases: Vec<Option<&str>> = journal
            .iter()
            .map(|e| e.purchase_id.as_ref().map(PurchaseId::as_str))
            .collect();
        let (mut s_users, mut s_names) = (Vec::new(), Vec::new());
        let (mut k_users, mut k_names, mut k_values) = (Vec::new(), Vec::new(), Vec::new());
        for user in &states_changed {
            let state = &states[user];
            s_users.push(user.0);
            s_names.push(array_literal(state.0.keys()));
            for (name, value) in &state.0 {
                k_users.push(user.0);
                k_names.push(name.as_str());
                k_values.push(value.as_str());
            }
        }
        let sales: Vec<&SalesDelta> = sales.values().collect();
        let sales_column =
            |f: fn(&SalesDelta) -> i64| sales.iter().map(|s| f(s)).collect::<Vec<i64>>();
        let (h_hours, h_products) = (
            sales_column(|s| s.hour_ms),
            sales_column(|s| s.product_id.0),
        );
        let (h_units, h_currency) = (
            sales_column(|s| s.units as i64),
            sales_column(|s| s.currency as i64),
        );
        let (h_refunded_units, h_refunded_currency, h_tests) = (
            sales_column(|s| s.refunded_units as i64),
            sales_column(|s| s.refunded_currency as i64),
            sales_column(|s| s.test_units as i64),
        );
        let (h_rejected_units, h_rejected_currency) = (
            sales_column(|s| s.rejected_units as i64),
            sales_column(|s| s.rejected_currency as i64),
        );
        let currency = CurrencyType::Premium as i64;
        let unused: Vec<i64> = reserved.iter().map(|u| u.0).collect();
        let write_back: &[&(dyn ToSql + Sync)] = &[
            &now_ms,
            &a_users,
            &a_balances,
            &a_owners,
            &a_expires,
            &a_tokens,
            &n_ids,
            &request_texts,
            &n_users,
            &n_products,
            &n_places,
            &n_spent,
            &n_channels,
            &n_tests,
            &n_states,
            &currency,
            &c_ids,
            &c_states,
            &j_users,
            &j_deltas,
            &j_reasons,
            &j_purchases,
            &s_users,
            &s_names,
            &k_users,
            &k_names,
            &k_values,
            &unused,
            &n_names,
            &a_shortfalls,
            &n_granted,
            &n_refunded,
            &n_reasons,
            &n_clawbacks,
            &c_granted,
            &c_refunded,
            &c_reasons,
            &c_clawbacks,
            &o_sources,
            &o_orders,
            &o_users,
            &o_amounts,
            &o_credited,
            &o_reversed,
            &o_taken,
            &o_short,
            &j_kinds,
            &(credits.len() as i64),
            &changes.iter().map(|u| u.0).collect::<Vec<i64>>(),
            &crate::ledger::CHANGES_KEPT,
            &h_hours,
            &h_products,
            &h_units,
            &h_currency,
            &h_refunded_units,
            &h_refunded_currency,
            &h_tests,
            &h_rejected_units,
            &h_rejected_currency,
        ];
        let mut statements: Vec<(&'static str, &[&(dyn ToSql + Sync)])> = Vec::with_capacity(3);
        if !changes.is_empty() {
            statements.push((LOCK_CHANGES, &[]));
        }
        statements.push((WRITE_BACK, write_back));
        if commit {
            statements.push((COMMIT, &[]));
        }
        conn.pipeline(&statements)?;
        Ok(())
    }
}

/// The grant time and refund columns of receipts, as write-back arrays.
fn refund_columns(
    receipts: &[&CachedReceipt],
) -> (
    Vec<Option<i64>>,
    Vec<Option<i64>>,
    Vec<Option<String>>,
    Vec<Option<&'static str>>,
) {
    let refund = |r: &&CachedReceipt| r.row.refund.clone();
    (
        receipts.iter().map(|r| r.row.granted_at_ms).collect(),
        receipts
            .iter()
            .map(|r| refund(r).map(|f| f.at_ms))
            .collect(),
        receipts
            .iter()
            .map(|r| refund(r).map(|f| f.reason))
            .collect(),
        receipts
            .iter()
            .map(|r| refund(r).map(|f| f.clawback.as_str()))
            .collect(),
    )
}

impl Books for CachedBooks {
    type Error = PgError;

    fn account(&mut self, user: UserId) -> Result<Option<AccountRow>, PgError> {
        match self.accounts.get(&user) {
            Some(account) => Ok(Some(account.clone())),
            None if self.no_account.contains(&user) || self.reserved.contains(&user) => Ok(None),
            None => Err(unread(format!("the account of user {user}"))),
        }
    }

    fn put_account(
        &mut self,
        user: UserId,
        account: &AccountRow,
        created: bool,
        _now_ms: i64,
    ) -> Result<(), PgError> {
        // The row of an account the batch makes was reserved when it was read.
        if created && !self.reserved.remove(&user) {
            return Err(unread(format!("the new account of user {user}")));
        }
        self.accounts.insert(user, account.clone());
        self.accounts_changed.insert(user);
        Ok(())
    }

    fn receipt_by_request(&mut self, request: RequestId) -> Result<Option<ReceiptInfo>, PgError> {
        if let Some(id) = self.by_request.get(&request) {
            return Ok(Some(self.receipts[id].row.info.clone()));
        }
        if self.requests_read.contains(&request) {
            Ok(None)
        } else {
            Err(unread(format!("charge request {}", request.0)))
        }
    }

    fn receipt(&mut self, id: &PurchaseId) -> Result<Option<ReceiptStatus>, PgError> {
        if let Some(receipt) = self.receipts.get(id) {
            return Ok(Some(ReceiptStatus {
                info: receipt.row.info.clone(),
                state: receipt.row.state,
                refund: receipt.row.refund.clone(),
                purchased_at_ms: receipt.row.created_ms,
            }));
        }
        if self.ids_read.contains(id) {
            Ok(None)
        } else {
            Err(unread(format!("receipt {id}")))
        }
    }

    fn insert_receipt(
        &mut self,
        receipt: &ReceiptInfo,
        request: RequestId,
        product_name: &str,
        now_ms: i64,
    ) -> Result<(), PgError> {
        self.by_request.insert(request, receipt.purchase_id.clone());
        self.receipts.insert(
            receipt.purchase_id.clone(),
            CachedReceipt {
                row: ReceiptRow {
                    info: receipt.clone(),
                    state: ReceiptState::Pending,
                    request_id: request,
                    created_ms: now_ms,
                    product_name: product_name.to_owned(),
                    granted_at_ms: None,
                    refund: None,
                },
                new: true,
                changed: false,
            },
        );
        Ok(())
    }

    fn grant_receipt(&mut self, id: &PurchaseId, now_ms: i64) -> Result<(), PgError> {
        self.change_receipt(id, |row| {
            row.state = ReceiptState::Granted;
            row.granted_at_ms = Some(now_ms);
        })
    }

    fn put_refund(
        &mut self,
        id: &PurchaseId,
        state: ReceiptState,
        refund: &RefundRecord,
    ) -> Result<(), PgError> {
        self.change_receipt(id, |row| {
            row.state = state;
            row.refund = Some(refund.clone());
        })
    }

    fn clawbacks(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, PgError> {
        if !self.pending_read.contains(&user) {
            return Err(unread(format!("the refunds of user {user}")));
        }
        Ok(self.listed(user, |row| {
            row.refund
                .as_ref()
                .is_some_and(|r| r.clawback == Clawback::Pending)
        }))
    }

    fn credit(&mut self, source: &str, order_id: &str) -> Result<Option<CreditRecord>, PgError> {
        let key = credit_key(source, order_id);
        if let Some((credit, _)) = self.credits.get(&key) {
            return Ok(Some(credit.clone()));
        }
        if self.credits_read.contains(&key) {
            Ok(None)
        } else {
            Err(unread(format!("top-up {source}:{order_id}")))
        }
    }

    fn put_credit(&mut self, credit: &CreditRecord, _created: bool) -> Result<(), PgError> {
        self.credits.insert(
            credit_key(&credit.source, &credit.order_id),
            (credit.clone(), true),
        );
        Ok(())
    }

    fn count_sale(&mut self, sale: &SalesDelta) -> Result<(), PgError> {
        self.sales
            .entry((sale.hour_ms, sale.product_id.0))
            .or_insert(SalesDelta::none(sale.hour_ms, sale.product_id))
            .add(sale);
        Ok(())
    }

    fn note_change(&mut self, user: UserId, _now_ms: i64) -> Result<(), PgError> {
        self.changes.push(user);
        Ok(())
    }

    fn changes(&mut self, _since: Option<i64>) -> Result<crate::ledger::ChangeFeed, PgError> {
        Err(unread("the change feed".into()))
    }

    fn journal(&mut self, entry: JournalEntry, _now_ms: i64) -> Result<(), PgError> {
        self.journal.push(entry);
        Ok(())
    }

    fn state(&mut self, user: UserId) -> Result<PlayerSnapshot, PgError> {
        self.states
            .get(&user)
            .cloned()
            .ok_or_else(|| unread(format!("the components of user {user}")))
    }

    fn put_state(&mut self, user: UserId, state: &PlayerSnapshot) -> Result<(), PgError> {
        self.states.insert(user, state.clone());
        self.states_changed.insert(user);
        Ok(())
    }

    fn pending(&mut self, user: UserId) -> Result<Vec<ReceiptInfo>, PgError> {
        if !self.pending_read.contains(&user) {
            return Err(unread(format!("the pending receipts of user {user}")));
        }
        Ok(self.listed(user, |row| row.state == ReceiptState::Pending))
    }

    fn audit(&mut self) -> Result<LedgerAudit, PgError> {
        Err(unread("the whole ledger".into()))
    }

    fn history(
        &mut self,
        user: UserId,
        _filter: &HistoryFilter,
        _page: u32,
        _after: Option<&HistoryCursor>,
    ) -> Result<HistoryPage, PgError> {
        Err(unread(format!("the history of user {user}")))
    }

    fn sales(&mut self, _query: &SalesQuery) -> Result<Vec<SalesRow>, PgError> {
        Err(unread("the sales".into()))
    }
}
