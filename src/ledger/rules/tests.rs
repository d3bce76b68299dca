//! The rules' decisions, one at a time, over the in-memory store (the reference every store is
//! held to).

use crate::ids::{PlaceId, ProductId, PurchaseId, RequestId, ServerId, UserId};
use crate::ledger::{ChargeReply, ChargeRequest};
use crate::ledger::{
    Clawback, CreditError, CreditRequest, InMemoryLedger, LeaseFence, LedgerCall, LedgerStore,
    OpenSession, OpenSessionReply, PlayerSnapshot, RefundRequest, SaveReply, SaveRequest, call,
};
use crate::receipt::ProductPurchaseChannel;

fn ask<C: LedgerCall>(store: &mut InMemoryLedger, request: C) -> C::Reply {
    call(store as &mut dyn LedgerStore, request).unwrap()
}

/// User 1's session on server "a": its fence.
fn opened(store: &mut InMemoryLedger) -> LeaseFence {
    let server = ServerId::new("a").unwrap();
    let OpenSessionReply::Opened(opened) = ask(
        store,
        OpenSession {
            user: UserId(1),
            server: server.clone(),
            lease_ms: 60_000,
            starting_balance: 1000,
        },
    ) else {
        panic!("a new user's session opens");
    };
    LeaseFence {
        server,
        token: opened.lease_token,
    }
}

fn charge(request_id: RequestId, fence: &LeaseFence) -> ChargeRequest {
    ChargeRequest {
        request_id,
        user: UserId(1),
        product_id: ProductId(7),
        product_name: "Gold".into(),
        price: 80,
        test_purchase: false,
        place_id: PlaceId(0),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 1000,
        fence: Some(fence.clone()),
    }
}

fn save(fence: &LeaseFence, granted: Vec<PurchaseId>) -> SaveRequest {
    SaveRequest {
        user: UserId(1),
        fence: fence.clone(),
        state: PlayerSnapshot::default(),
        granted,
        settled: vec![],
        rejected: vec![],
        release: false,
        lease_ms: 60_000,
    }
}

#[test]
fn a_save_granting_a_receipt_refunded_before_its_grant_writes_nothing() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let request = RequestId::new();
    let ChargeReply::Charged { receipt, .. } = ask(&mut store, charge(request, &fence)) else {
        panic!("charged");
    };
    let refund = RefundRequest {
        purchase_id: receipt.purchase_id.clone(),
        reason: "support".into(),
        place: None,
    };
    let refunded = ask(&mut store, refund).unwrap();
    assert_eq!(refunded.clawback, Clawback::NotNeeded);
    let before = store.audit();
    assert_eq!(
        ask(&mut store, save(&fence, vec![receipt.purchase_id.clone()])),
        SaveReply::GrantsRefunded {
            refunded: vec![receipt.purchase_id.clone()]
        }
    );
    assert_eq!(store.audit(), before, "nothing written");
    // A replay of its charge says it does not wait for a grant any more.
    let ChargeReply::Charged {
        replayed, pending, ..
    } = ask(&mut store, charge(request, &fence))
    else {
        panic!("replayed");
    };
    assert!(replayed && !pending);
}

#[test]
fn a_retried_save_of_a_grant_refunded_since_is_taken_as_granted() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let ChargeReply::Charged { receipt, .. } = ask(&mut store, charge(RequestId::new(), &fence))
    else {
        panic!("charged");
    };
    let grant = save(&fence, vec![receipt.purchase_id.clone()]);
    assert!(matches!(
        ask(&mut store, grant.clone()),
        SaveReply::Saved { .. }
    ));
    let refund = RefundRequest {
        purchase_id: receipt.purchase_id.clone(),
        reason: "support".into(),
        place: None,
    };
    assert_eq!(ask(&mut store, refund).unwrap().clawback, Clawback::Pending);
    // The first save's answer was lost and it is sent again: the grant did commit.
    assert_eq!(
        ask(&mut store, grant),
        SaveReply::Saved {
            newly_granted: vec![],
            newly_settled: vec![],
            rejected: vec![],
            balance: 1000,
        }
    );
}

fn charged(store: &mut InMemoryLedger, fence: &LeaseFence) -> PurchaseId {
    let ChargeReply::Charged { receipt, .. } = ask(store, charge(RequestId::new(), fence)) else {
        panic!("charged");
    };
    receipt.purchase_id
}

fn rejecting(fence: &LeaseFence, granted: Vec<PurchaseId>, rejected: &PurchaseId) -> SaveRequest {
    SaveRequest {
        rejected: vec![(rejected.clone(), "the wave ended".into())],
        ..save(fence, granted)
    }
}

fn audit_is_sound(store: &mut InMemoryLedger) {
    let report = crate::ledger::read(store as &mut dyn LedgerStore, crate::ledger::Audit)
        .unwrap()
        .check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

#[test]
fn a_rejected_receipt_is_refunded_once_however_often_its_save_is_sent() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let id = charged(&mut store, &fence);
    let reject = rejecting(&fence, vec![], &id);
    let rejected_once = SaveReply::Saved {
        newly_granted: vec![],
        newly_settled: vec![],
        rejected: vec![id.clone()],
        balance: 1000,
    };
    assert_eq!(ask(&mut store, reject.clone()), rejected_once);
    // The answer was lost and the save is sent again: listed again, nothing given back twice.
    assert_eq!(ask(&mut store, reject), rejected_once);
    // Never granted, never refunded again.
    assert!(matches!(
        ask(&mut store, save(&fence, vec![id.clone()])),
        SaveReply::GrantsRefunded { refunded } if refunded == vec![id.clone()]
    ));
    let refund = RefundRequest {
        purchase_id: id.clone(),
        reason: "support".into(),
        place: None,
    };
    assert!(matches!(
        ask(&mut store, refund),
        Err(crate::ledger::RefundError::AlreadyRefunded { .. })
    ));
    audit_is_sound(&mut store);
}

#[test]
fn a_receipt_refunded_before_its_rejection_commits_is_given_back_once() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let id = charged(&mut store, &fence);
    let refund = RefundRequest {
        purchase_id: id.clone(),
        reason: "support".into(),
        place: None,
    };
    assert_eq!(ask(&mut store, refund).unwrap().balance, 1000);
    assert!(matches!(
        ask(&mut store, rejecting(&fence, vec![], &id)),
        SaveReply::Saved { rejected, balance: 1000, .. } if rejected.is_empty()
    ));
    audit_is_sound(&mut store);
}

#[test]
fn a_receipt_granted_and_rejected_by_one_save_is_granted() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let id = charged(&mut store, &fence);
    assert!(matches!(
        ask(&mut store, rejecting(&fence, vec![id.clone()], &id)),
        SaveReply::Saved { newly_granted, rejected, balance: 920, .. }
            if newly_granted == vec![id.clone()] && rejected.is_empty()
    ));
    audit_is_sound(&mut store);
}

#[test]
fn a_stale_server_cannot_reject() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let id = charged(&mut store, &fence);
    let stale = LeaseFence {
        token: fence.token + 1,
        ..fence.clone()
    };
    assert!(matches!(
        ask(&mut store, rejecting(&stale, vec![], &id)),
        SaveReply::LeaseLost { .. }
    ));
    // Still pending: granted by the lease holder.
    assert!(matches!(
        ask(&mut store, save(&fence, vec![id.clone()])),
        SaveReply::Saved { newly_granted, .. } if newly_granted == vec![id]
    ));
    audit_is_sound(&mut store);
}

#[test]
fn one_store_order_credits_one_user_with_one_amount() {
    let mut store = InMemoryLedger::default();
    let credit = |user: i64, amount: u64| CreditRequest {
        user: UserId(user),
        amount,
        source: "steam".into(),
        order_id: "o1".into(),
        starting_balance: 0,
    };
    assert!(!ask(&mut store, credit(1, 100)).unwrap().already_credited);
    assert!(ask(&mut store, credit(1, 100)).unwrap().already_credited);
    for other in [credit(2, 100), credit(1, 200)] {
        assert!(matches!(
            ask(&mut store, other),
            Err(CreditError::OrderMismatch { .. })
        ));
    }
    assert_eq!(store.audit().accounts[&UserId(1)].0, 100);
}

#[test]
fn a_save_with_a_nul_in_a_component_value_is_refused_naming_the_component() {
    let mut store = InMemoryLedger::default();
    let fence = opened(&mut store);
    let mut request = save(&fence, vec![]);
    request.state = PlayerSnapshot(
        [("Gold", "(100)"), ("Name", "Ann\0")]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .into(),
    );
    let before = store.audit();
    let SaveReply::InvalidText(invalid) = ask(&mut store, request) else {
        panic!("a NUL in a value is refused");
    };
    assert_eq!(invalid.field, "value of component \"Name\"");
    assert_eq!(invalid.text, "Ann\0");
    assert_eq!(store.audit(), before, "nothing written");
}
