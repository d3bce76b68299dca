//! The money paths hold their promise: a refunded purchase is never granted, whoever refunded it
//! and whenever; one store order credits one user once; the player is told the truth about a
//! charge whose outcome is unknown; no setting hangs the game; no text is changed silently; the
//! ledger's checks read what an entry is, not its words. Each test failed on the code before its
//! fix.

mod common;
#[path = "common/stores.rs"]
mod stores;

use std::time::Duration;

use bevy::prelude::*;
use bevy_marketplace::ledger::{
    AdjustBalance, Clawback, CreditError, CreditRequest, InvalidText, JournalKind, RefundError,
    RefundRequest, ReverseCredit,
};
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    MarketplacePlugin, OpenPrompt, PromptProductPurchase, PromptState, ReceiptState, UserId,
};
use common::*;
use stores::TestStore;

/// The receipt of the only purchase in the ledger.
fn only_receipt(store: &TestStore) -> bevy_marketplace::PurchaseId {
    let audit = store.audit();
    assert_eq!(audit.receipts.len(), 1);
    audit.receipts[0].info.purchase_id.clone()
}

fn refund_outside(store: &TestStore, id: bevy_marketplace::PurchaseId) {
    let refunded = store
        .call_outside(RefundRequest {
            purchase_id: id,
            reason: "support".into(),
            place: None,
        })
        .expect("refunded");
    assert_eq!(refunded.clawback, Clawback::NotNeeded, "it was not granted");
}

/// The ledger holds the receipt refunded, never granted, and the buyer's Gold without it.
fn never_granted(store: &TestStore, game: &GameServer, player: Entity, user: i64) {
    let audit = store.audit();
    assert_eq!(audit.receipts[0].state, ReceiptState::Refunded);
    assert_eq!(
        audit.receipts[0].refund.as_ref().unwrap().clawback,
        Clawback::NotNeeded,
        "never granted"
    );
    assert_eq!(game.gold(player), 0, "the refunded purchase gave nothing");
    let saved = audit.accounts[&UserId(user)].1.0.get("Gold").cloned();
    assert!(
        saved.as_deref().is_none_or(|gold| gold == "(0)"),
        "saved Gold {saved:?}"
    );
    assert_eq!(
        audit.accounts[&UserId(user)].0,
        1000,
        "the currency is back"
    );
    assert!(
        game.app.world().resource::<Collected>().resolved.is_empty(),
        "no ReceiptResolved"
    );
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// A purchase the buyer's handler has not granted yet is refunded from outside the game (the
/// admin tool, another server). The refresh drops it: its handler never runs again.
fn a_pending_purchase_refunded_outside_is_dropped_by_the_refresh(store: &TestStore) {
    let mut game = store.game("a", |p| p);
    let p = game.join(1);
    game.app.insert_resource(HandlerMode::Decline);
    game.buy(p, GOLD_100);
    let id = only_receipt(store);
    refund_outside(store, id.clone());
    // Past the default refresh interval (2 s) while the handler still declines; the first retry
    // (1 s) runs meanwhile and declines.
    for _ in 0..3 {
        game.advance(Duration::from_millis(900));
    }
    let calls = game.log.calls.lock().unwrap().len();
    game.app.insert_resource(HandlerMode::Work);
    for _ in 0..8 {
        game.advance(Duration::from_secs(5));
    }
    assert_eq!(
        game.log.calls.lock().unwrap().len(),
        calls,
        "the handler never runs on it after the refresh"
    );
    never_granted(store, &game, p, 1);
}

/// The same refund lands between the grant in memory and its commit: the ledger refuses the
/// grant, the handler's changes are undone, and the buyer's next save commits without it.
fn a_purchase_refunded_while_its_grant_commits_is_not_granted(store: &TestStore) {
    let mut game = store.game("a", |p| p);
    let p = game.join(1);
    game.app.insert_resource(HandlerMode::Decline);
    game.buy(p, GOLD_100);
    let id = only_receipt(store);
    // The next transaction (the grant's save) waits until the refund is in.
    game.faults.pause();
    game.app.insert_resource(HandlerMode::Work);
    game.app
        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
            Duration::from_millis(1100),
        ));
    game.app
        .update_until("the handler to grant in memory", |w| {
            w.get::<Gold>(p).is_some_and(|g| g.0 == 100)
        });
    game.app
        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
            Duration::from_millis(10),
        ));
    for _ in 0..3 {
        game.app.update();
    }
    refund_outside(store, id);
    game.faults.resume();
    game.app.settle();
    game.advance(Duration::from_secs(3));
    assert_eq!(game.log.granted.lock().unwrap().len(), 1, "it ran once");
    never_granted(store, &game, p, 1);
}

/// A later purchase granted in memory after the refunded one is not lost: it is granted again
/// from the state before the refunded grant, once.
fn work_done_after_a_refused_grant_is_done_again_once(store: &TestStore) {
    let mut game = store.game("a", |p| p);
    let p = game.join(1);
    game.app.insert_resource(HandlerMode::Decline);
    game.buy(p, GOLD_100);
    game.buy(p, GOLD_100);
    let audit = store.audit();
    let first = audit
        .receipts
        .iter()
        .min_by_key(|r| r.purchased_at_ms)
        .unwrap()
        .info
        .purchase_id
        .clone();
    game.faults.pause();
    game.app.insert_resource(HandlerMode::Work);
    game.app
        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
            Duration::from_millis(1100),
        ));
    game.app.update_until("both grants in memory", |w| {
        w.get::<Gold>(p).is_some_and(|g| g.0 == 200)
    });
    game.app
        .insert_resource(bevy::time::TimeUpdateStrategy::ManualDuration(
            Duration::from_millis(10),
        ));
    refund_outside(store, first.clone());
    game.faults.resume();
    game.app.settle();
    game.advance(Duration::from_secs(3));
    let audit = store.audit();
    assert_eq!(
        audit.count(ReceiptState::Granted),
        1,
        "the other one is granted"
    );
    assert_eq!(audit.count(ReceiptState::Refunded), 1);
    assert_eq!(game.gold(p), 100);
    assert_eq!(audit.accounts[&UserId(1)].1.0["Gold"], "(100)");
    assert_eq!(audit.accounts[&UserId(1)].0, 1000 - 80, "one purchase paid");
    let resolved = &game.app.world().resource::<Collected>().resolved;
    assert_eq!(resolved.len(), 1, "resolved once: {resolved:?}");
    assert_ne!(resolved[0].purchase_id, first);
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// Order ids "A\u{FFFD}" and "A\0" are not one order: a NUL is refused with an error that names
/// the order id, and nothing is credited for it.
fn a_nul_in_an_order_id_is_refused_not_changed(store: &TestStore) {
    let credit = |user: i64, order: &str| {
        store.call_outside(CreditRequest {
            user: UserId(user),
            amount: 100,
            source: "web".into(),
            order_id: order.into(),
            starting_balance: 0,
        })
    };
    assert!(credit(1, "A\u{FFFD}").is_ok());
    let refused = credit(2, "A\0");
    assert_eq!(
        refused,
        Err(CreditError::InvalidText(InvalidText {
            field: "order id".into(),
            text: "A\0".into()
        }))
    );
    assert!(refused.unwrap_err().to_string().contains("order id"));
    assert!(matches!(
        store.call_outside(ReverseCredit {
            source: "we\0b".into(),
            order_id: "A".into()
        }),
        Err(CreditError::InvalidText(_))
    ));
    assert!(matches!(
        store.call_outside(RefundRequest {
            purchase_id: bevy_marketplace::PurchaseId("x".into()),
            reason: "bad\0reason".into(),
            place: None
        }),
        Err(RefundError::InvalidText(_))
    ));
    assert!(matches!(
        store.call_outside(AdjustBalance {
            user: UserId(3),
            delta: 5,
            reason: "gift\0".into(),
            starting_balance: 0,
        }),
        bevy_marketplace::ledger::AdjustReply::InvalidText(_)
    ));
    let audit = store.audit();
    assert_eq!(audit.credits.len(), 1);
    assert_eq!(audit.credits[0].order_id, "A\u{FFFD}", "kept as written");
    assert!(!audit.accounts.contains_key(&UserId(2)));
    assert!(!audit.accounts.contains_key(&UserId(3)));
}

/// A reason given to a grant comes back as written, and its words are not read as a kind.
fn a_grant_whose_reason_is_purchase_is_no_purchase(store: &TestStore) {
    store.call_outside(AdjustBalance {
        user: UserId(1),
        delta: 100,
        reason: "purchase".into(),
        starting_balance: 0,
    });
    let audit = store.audit();
    assert_eq!(audit.journal.len(), 1);
    assert_eq!(audit.journal[0].kind, JournalKind::Adjustment);
    assert_eq!(audit.journal[0].reason, "purchase");
    assert_eq!(audit.purchase_debits, 0);
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

on_every_store!(
    a_pending_purchase_refunded_outside_is_dropped_by_the_refresh,
    a_purchase_refunded_while_its_grant_commits_is_not_granted,
    work_done_after_a_refused_grant_is_done_again_once,
    a_nul_in_an_order_id_is_refused_not_changed,
    a_grant_whose_reason_is_purchase_is_no_purchase,
);

/// The charge commits but its answer is lost, and the database then stops answering: the prompt
/// must not say "you have not been charged". It says the outcome is unconfirmed, and once the
/// ledger answers it shows the purchase, and the prompt's one `Finished` says it was bought.
#[test]
fn a_charge_whose_outcome_is_unknown_is_told_as_unknown_then_settled() {
    let mut shop = shop_with(|p| p.with_confirm_policy(bevy_marketplace::ConfirmPolicy::Manual));
    let p = shop.join(1);
    shop.app.world_mut().write_message(PromptProductPurchase {
        player: p,
        product_id: GOLD_100,
    });
    shop.app.settle();
    // The charge commits but its answer is lost; then the database stops answering.
    shop.faults.lose_next_acks(1);
    shop.app
        .world_mut()
        .answer_prompt(p, bevy_marketplace::PromptAction::Confirm);
    shop.app.update();
    shop.faults.disconnect();
    let mut shown = Vec::new();
    shop.app
        .update_until("the prompt to say it is unconfirmed", |w| {
            let state = w.get::<OpenPrompt>(p).map(|p| p.state.clone());
            shown.extend(state.clone());
            state == Some(PromptState::Unconfirmed)
        });
    for state in &shown {
        if let PromptState::Failed(e) = state {
            panic!("the prompt said {e}");
        }
    }
    // The player closes it; the outcome is not known yet, so nothing is told.
    shop.app
        .world_mut()
        .answer_prompt(p, bevy_marketplace::PromptAction::Close);
    for _ in 0..5 {
        shop.app.update();
    }
    assert!(shop.world().get::<OpenPrompt>(p).is_none());
    assert!(shop.collected().finished.is_empty(), "not known yet");
    // The database comes back: the retried charge finds the receipt, which is delivered.
    shop.faults.reconnect();
    for _ in 0..4 {
        shop.advance(Duration::from_secs(4));
    }
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
    assert_eq!(shop.gold(p), 100);
    assert_eq!(shop.balance(p), 1000 - 80, "charged once");
    let finished = &shop.collected().finished;
    assert_eq!(finished.len(), 1, "{finished:?}");
    assert!(finished[0].is_purchased, "the truth once it is known");
}

/// A zero interval is raised to the shortest that works, with a warning, instead of spinning.
#[test]
fn zero_intervals_do_not_hang_the_game() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut shop = shop_with(|p| MarketplacePlugin {
            refresh_interval: Duration::ZERO,
            autosave_interval: Duration::ZERO,
            ..p
        });
        // The ledger is never idle with 10 ms intervals, so frames are run, not settled.
        let p = spawn_buyer(&mut shop.app, 1, 30);
        shop.app.update_until("the session to load", |w| {
            w.get::<bevy_marketplace::PlayerSession>(p)
                .is_some_and(bevy_marketplace::PlayerSession::is_active)
        });
        shop.app.world_mut().write_message(PromptProductPurchase {
            player: p,
            product_id: GOLD_100,
        });
        shop.app.update_until("the purchase", |w| {
            w.get::<Gold>(p).is_some_and(|g| g.0 == 100)
        });
        let _ = tx.send(shop.gold(p));
    });
    let gold = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the game did not get through its frames: a zero interval hung it");
    assert_eq!(gold, 100);
}

/// Two games opening a new ledger file at the same instant both open it (one of them used to
/// fail for good with "database is locked" from switching the file to WAL).
#[test]
fn two_processes_opening_a_new_sqlite_file_at_once_both_open() {
    let mut failures = Vec::new();
    for round in 0..60 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite3");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    bevy_marketplace::ledger::SqliteLedger::open(&path).map(drop)
                })
            })
            .collect();
        for t in threads {
            if let Err(e) = t.join().unwrap() {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Two servers credit one store order at the same instant, for two users: one is credited, the
/// other refused, and the ledger holds one credit.
#[cfg(feature = "postgres")]
#[test]
fn one_store_order_credits_one_user_when_two_servers_race_on_postgres() {
    use bevy_marketplace::ledger::{CreditOutcome, LedgerCall, LedgerStore, PostgresLedger};
    let url = stores::pg::PgCluster::shared().create_database("order_race");
    drop(PostgresLedger::connect(url.as_str()).unwrap());
    for round in 0..20 {
        let order = format!("order-{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let threads: Vec<_> = [1i64, 2]
            .into_iter()
            .map(|user| {
                let (url, barrier, order) = (url.clone(), barrier.clone(), order.clone());
                std::thread::spawn(move || {
                    let mut store = PostgresLedger::connect(url.as_str()).unwrap();
                    let request = CreditRequest {
                        user: UserId(user),
                        amount: 500,
                        source: "steam".into(),
                        order_id: order,
                        starting_balance: 0,
                    };
                    store.begin().unwrap();
                    barrier.wait();
                    let reply = store.apply(&request.into(), 1_000);
                    let committed = reply.is_ok() && store.commit().is_ok();
                    if !committed {
                        store.rollback();
                    }
                    let reply = reply.map(|r| CreditRequest::unwrap(r).unwrap());
                    (user, reply, committed)
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let credited: Vec<_> = results
            .iter()
            .filter(|(_, reply, committed)| {
                *committed
                    && matches!(
                        reply,
                        Ok(Ok(CreditOutcome {
                            already_credited: false,
                            ..
                        }))
                    )
            })
            .collect();
        assert_eq!(credited.len(), 1, "one order credited once: {results:?}");
        let refused = results
            .iter()
            .any(|(_, reply, _)| matches!(reply, Ok(Err(CreditError::OrderMismatch { .. }))));
        assert!(refused, "the other is refused: {results:?}");
    }
    let audit = TestStore::Postgres { url }.audit();
    assert_eq!(audit.credits.len(), 20);
    let total: u64 = audit.accounts.values().map(|(b, _)| *b).sum();
    assert_eq!(
        total,
        20 * 500,
        "each order credited once: {:?}",
        audit.accounts
    );
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// The admin tool refuses an empty sales range instead of printing an empty report, and says
/// when a receipt was refunded as a UTC time.
#[cfg(feature = "cli")]
#[test]
fn the_admin_tool_refuses_an_empty_range_and_prints_times_as_dates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite3");
    let store = TestStore::Sqlite {
        _dir: tempfile::tempdir().unwrap(),
        path: path.clone(),
    };
    let mut game = store.game("a", |p| p);
    let p = game.join(1);
    game.buy(p, GOLD_100);
    drop(game);
    let id = only_receipt(&store);
    let tool = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_marketplace"))
            .arg("--ledger")
            .arg(&path)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = tool(&["sales", "--from", "2026-12-02", "--to", "2026-12-01"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not before --to"), "{err}");
    assert_eq!(tool(&["refund", id.as_str(), "--reason", "support"]).0, 0);
    let (code, err) = tool(&["refund", id.as_str(), "--reason", "again"]);
    assert_eq!(code, 2);
    assert!(err.contains("already refunded at 20"), "a UTC date: {err}");
    assert!(err.contains('Z'), "{err}");
}
