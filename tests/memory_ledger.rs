//! The in-memory ledger's transactions: rolled back whole, invisible until committed, one at a
//! time across clones.

use bevy_marketplace::ledger::{
    AdjustBalance, ChargeReply, OpenSession, OpenSessionReply, OpenedSession, SaveReply,
};
use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use bevy_marketplace::ledger::{
    ChargeRequest, InMemoryLedger, LeaseFence, LedgerReply, LedgerRequest, LedgerStore,
    PlayerSnapshot, SaveRequest, ServerId,
};
use bevy_marketplace::{
    PlaceId, ProductId, ProductPurchaseChannel, PurchaseId, ReceiptState, RequestId, UserId,
};

fn open(user: i64) -> LedgerRequest {
    LedgerRequest::OpenSession(OpenSession {
        user: UserId(user),
        server: ServerId::new("a").unwrap(),
        lease_ms: 60_000,
        starting_balance: 1000,
    })
}

/// Server "a"'s first lease on a user (tokens count leases taken, from 1).
fn first_lease() -> LeaseFence {
    LeaseFence {
        server: ServerId::new("a").unwrap(),
        token: 1,
    }
}

fn charge(user: i64, price: u64) -> LedgerRequest {
    LedgerRequest::Charge(ChargeRequest {
        request_id: RequestId::new(),
        user: UserId(user),
        product_id: ProductId(456456),
        product_name: "test product".into(),
        price,
        test_purchase: false,
        place_id: PlaceId(0),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 1000,
        fence: Some(first_lease()),
    })
}

fn save(user: i64, gold: u64, granted: Vec<PurchaseId>, release: bool) -> LedgerRequest {
    LedgerRequest::Save(SaveRequest {
        user: UserId(user),
        fence: first_lease(),
        state: PlayerSnapshot(BTreeMap::from([("Gold".into(), format!("({gold})"))])),
        granted,
        settled: vec![],
        rejected: vec![],
        release,
        lease_ms: 60_000,
    })
}

fn apply(store: &mut InMemoryLedger, requests: &[LedgerRequest]) -> Vec<LedgerReply> {
    store.begin().unwrap();
    let replies = requests
        .iter()
        .map(|r| store.apply(r, 1).unwrap())
        .collect();
    store.commit().unwrap();
    replies
}

fn receipt_of(reply: &LedgerReply) -> PurchaseId {
    match reply {
        LedgerReply::Charge(ChargeReply::Charged { receipt, .. }) => receipt.purchase_id.clone(),
        other => panic!("not charged: {other:?}"),
    }
}

/// Users 1 and 2 with a granted and a pending receipt, Gold saved, user 1's lease held.
fn ledger_with_history() -> InMemoryLedger {
    let mut store = InMemoryLedger::default();
    let replies = apply(
        &mut store,
        &[open(1), open(2), charge(1, 100), charge(1, 50)],
    );
    let granted = receipt_of(&replies[2]);
    apply(&mut store, &[save(1, 100, vec![granted], false)]);
    store
}

#[test]
fn a_rolled_back_transaction_leaves_no_trace() {
    let mut store = ledger_with_history();
    let before = store.audit();
    let pending_before = store.audit().count(ReceiptState::Pending);
    store.begin().unwrap();
    let pending = before
        .receipts
        .iter()
        .find(|r| r.state == ReceiptState::Pending)
        .unwrap()
        .info
        .purchase_id
        .clone();
    for request in [
        open(3),
        charge(1, 200),
        charge(2, 999),
        save(1, 900, vec![pending], true),
        LedgerRequest::AdjustBalance(AdjustBalance {
            user: UserId(2),
            delta: -1000,
            reason: "refund".into(),
            starting_balance: 1000,
        }),
    ] {
        store.apply(&request, 2).unwrap();
    }
    store.rollback();
    assert_eq!(
        store.audit(),
        before,
        "balances, receipts, states, Gold, debits"
    );
    assert_eq!(store.audit().count(ReceiptState::Pending), pending_before);
    // The lease and the pending list came back too: user 1 opens with the pending receipt, and
    // another server is still refused.
    store.begin().unwrap();
    let LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { pending, .. })) =
        store.apply(&open(1), 3).unwrap()
    else {
        panic!("our own lease");
    };
    assert_eq!(pending.len(), 1);
    let other = LedgerRequest::OpenSession(OpenSession {
        user: UserId(1),
        server: ServerId::new("b").unwrap(),
        lease_ms: 60_000,
        starting_balance: 0,
    });
    assert!(matches!(
        store.apply(&other, 3).unwrap(),
        LedgerReply::OpenSession(OpenSessionReply::Busy { .. })
    ));
    store.commit().unwrap();
}

#[test]
fn audits_see_only_committed_transactions_and_a_dropped_one_is_rolled_back() {
    let mut writer = ledger_with_history();
    let reader = writer.clone();
    let before = reader.audit();
    writer.begin().unwrap();
    writer.apply(&charge(2, 300), 2).unwrap();
    let (tx, rx) = mpsc::channel();
    let auditing = std::thread::spawn(move || tx.send(reader.audit()).unwrap());
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "an audit waits for the open transaction"
    );
    writer.commit().unwrap();
    let after = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    auditing.join().unwrap();
    assert_eq!(after.receipts.len(), before.receipts.len() + 1);
    assert_eq!(after.purchase_debits, before.purchase_debits + 300);

    // A store dropped inside a transaction (its worker thread died) leaves nothing behind.
    let reader = writer.clone();
    writer.begin().unwrap();
    writer.apply(&charge(2, 100), 3).unwrap();
    drop(writer);
    assert_eq!(reader.audit(), after);
}

#[test]
fn a_save_for_a_user_the_ledger_never_saw_makes_no_account() {
    let mut store = InMemoryLedger::default();
    assert_eq!(
        apply(&mut store, &[save(5, 10, vec![], false)]),
        vec![LedgerReply::Save(SaveReply::LeaseLost { owner: None })]
    );
    assert!(store.audit().accounts.is_empty());
    let [LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { balance, .. }))] =
        &apply(&mut store, &[open(5)])[..]
    else {
        panic!("the session opens");
    };
    assert_eq!(*balance, 1000, "the first join gets the starting balance");
}
