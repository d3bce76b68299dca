//! Exactly once on the game side: transactional handlers, no panics from time or input, nothing
//! stranded, cheats off by default. Each test failed on the code before its fix.

mod common;

use bevy_marketplace::ledger::{OpenSession, OpenSessionReply, OpenedSession, SaveReply};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bevy::prelude::*;
use bevy_marketplace::ledger::{
    InMemoryLedger, LeaseFence, LedgerBackend, LedgerError, LedgerReply, LedgerRequest,
    LedgerStatus, LedgerStore, PlayerSnapshot, SaveRequest, ServerId,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    MarketplaceError, MarketplaceStats, PlayerSaveFailed, PlayerSession, PromptAction, PromptState,
    PurchaseError, ReceiptState, RetryPolicy, SessionPhase, Sessions,
};
use common::*;
use serde::{Deserialize, Serialize};

/// What the greedy handler of `GOLD_1000` does after adding 1000 Gold.
#[derive(Resource, Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Grant,
    Decline,
    Fail,
    Panic,
    DespawnThenDecline,
    DespawnThenGrant,
}

/// A shop whose `GOLD_1000` handler changes Gold first and decides afterwards: the shape of
/// handler the contract must make safe.
fn greedy_shop(verdict: Verdict) -> TestShop {
    let mut shop = shop();
    shop.app.insert_resource(verdict);
    shop.app
        .add_product_handler(GOLD_1000, |_receipt, mut player| {
            if let Some(mut gold) = player.get_mut::<Gold>() {
                gold.0 += 1000;
            }
            match player.world_scope(|w| *w.resource::<Verdict>()) {
                Verdict::Grant => Ok(true),
                Verdict::Decline => Ok(false),
                Verdict::Fail => Err("out of gold bars".into()),
                Verdict::Panic => panic!("bug after changing gold"),
                Verdict::DespawnThenDecline => {
                    player.despawn();
                    Ok(false)
                }
                Verdict::DespawnThenGrant => {
                    player.despawn();
                    Ok::<_, BevyError>(true)
                }
            }
        });
    shop
}

/// The Gold the ledger holds for `user`.
fn stored_gold(ledger: &InMemoryLedger, user: i64) -> Option<u64> {
    let audit = ledger.audit();
    let (_, state) = audit.accounts.get(&UserId(user))?;
    state
        .0
        .get("Gold")
        .map(|text| ron::from_str::<Gold>(text).unwrap().0)
}

#[test]
fn a_handler_that_changes_gold_and_does_not_grant_leaves_no_trace() {
    for verdict in [Verdict::Decline, Verdict::Fail, Verdict::Panic] {
        let mut shop = greedy_shop(verdict);
        let player = shop.join(1);
        shop.buy(player, GOLD_1000);
        assert_eq!(shop.gold(player), 0, "{verdict:?}: the change was undone");
        // An autosave and another receipt's grant commit the player's state: neither may carry
        // the undecided handler's change.
        shop.advance(Duration::from_secs(31));
        assert_eq!(stored_gold(&shop.ledger, 1), Some(0), "{verdict:?}");
        shop.app.insert_resource(HandlerMode::Work);
        shop.buy(player, GOLD_100);
        assert_eq!(stored_gold(&shop.ledger, 1), Some(100), "{verdict:?}");
        // Now the greedy handler grants on its retry: one purchase, +1000 once.
        shop.app.insert_resource(Verdict::Grant);
        shop.advance(Duration::from_secs(61));
        assert_eq!(shop.gold(player), 1100, "{verdict:?}");
        assert_eq!(shop.receipts_in(ReceiptState::Pending), 0, "{verdict:?}");
        shop.app.world_mut().despawn(player);
        shop.app.settle();
        assert_eq!(stored_gold(&shop.ledger, 1), Some(1100), "{verdict:?}");
        let back = shop.join(1);
        assert_eq!(shop.gold(back), 1100, "{verdict:?}: nothing applied twice");
    }
}

#[test]
fn a_handler_that_despawns_its_buyer_leaves_no_trace_and_is_delivered_on_rejoin() {
    for verdict in [Verdict::DespawnThenDecline, Verdict::DespawnThenGrant] {
        let mut shop = greedy_shop(verdict);
        let player = shop.join(2);
        shop.buy(player, GOLD_1000);
        assert!(shop.world().get_entity(player).is_err(), "despawned");
        assert_eq!(
            stored_gold(&shop.ledger, 2),
            Some(0),
            "{verdict:?}: the final save is the state before the handler"
        );
        assert_eq!(shop.receipts_in(ReceiptState::Pending), 1, "{verdict:?}");
        shop.app.insert_resource(Verdict::Grant);
        let back = shop.join(2);
        assert_eq!(
            shop.gold(back),
            1000,
            "{verdict:?}: granted once, on rejoin"
        );
        assert_eq!(shop.receipts_in(ReceiptState::Granted), 1, "{verdict:?}");
    }
}

#[test]
fn retry_delays_never_panic_and_stay_capped() {
    let policy = RetryPolicy::default();
    for failures in [0, 1, 7, 64, 65, 66, 1000, u32::MAX] {
        assert!(
            policy.delay(failures) <= Duration::from_secs(60),
            "{failures}"
        );
    }
    assert_eq!(policy.delay(65), Duration::from_secs(60));
    let odd = [
        RetryPolicy {
            max: Duration::MAX,
            ..policy
        },
        RetryPolicy {
            multiplier: f64::NAN,
            ..policy
        },
        RetryPolicy {
            multiplier: -3.0,
            ..policy
        },
        RetryPolicy {
            multiplier: f64::INFINITY,
            ..policy
        },
        RetryPolicy {
            initial: Duration::MAX,
            max: Duration::from_secs(5),
            ..policy
        },
    ];
    for policy in odd {
        for failures in [1, 2, 65, 5000, u32::MAX] {
            let _ = policy.delay(failures);
        }
    }
    assert_eq!(odd[0].delay(200), Duration::MAX);
    assert_eq!(odd[4].delay(3), Duration::from_secs(5));
}

#[test]
fn a_never_granting_receipt_survives_prompt_churn() {
    // Every prompt that opens delivers pending receipts: each one is a failed attempt.
    let (mut shop, player) = bought_with(HandlerMode::Decline, 3, GOLD_100);
    shop.app.insert_resource(ConfirmPolicy::AutoCancel);
    for _ in 0..100 {
        shop.buy(player, FULL_HEAL);
    }
    let session = shop.world().get::<PlayerSession>(player).unwrap();
    assert!(session.pending_receipts()[0].attempts > 65);
    shop.set_mode(HandlerMode::Work);
    shop.advance(Duration::from_secs(61));
    assert_eq!(shop.gold(player), 100);
}

#[test]
fn huge_intervals_and_leases_do_not_panic() {
    let mut shop = shop_with(|p| MarketplacePlugin {
        autosave_interval: Duration::MAX,
        lease_duration: Duration::MAX,
        frame_budget: Duration::MAX,
        retry: RetryPolicy {
            max: Duration::MAX,
            ..RetryPolicy::default()
        },
        ..p
    });
    let player = shop.join(4);
    shop.buy(player, GOLD_100);
    shop.advance(Duration::from_secs(3600));
    assert_eq!(shop.gold(player), 100);
    assert_eq!(stored_gold(&shop.ledger, 4), Some(100));
}

#[test]
fn leaving_while_loading_does_not_release_the_lease_under_a_pending_final_save() {
    let mut shop = shop();
    let player = shop.join(5);
    shop.buy(player, GOLD_100);
    shop.app.world_mut().get_mut::<Gold>(player).unwrap().0 = 555; // progress since the last save
    shop.faults.fail_next_commits(1);
    shop.app.world_mut().despawn(player);
    shop.app.settle(); // the final save failed; it is retried in 1 s
    assert_eq!(shop.app.world().resource::<Sessions>().departing(), 1);
    // Back while that save waits, and gone again before loading.
    let again = shop
        .app
        .world_mut()
        .spawn((Buyer::new(UserId(5)), Gold(0)))
        .id();
    shop.app.update();
    shop.app.world_mut().despawn(again);
    shop.app.settle();
    shop.advance(Duration::from_secs(2)); // the retry lands
    assert_eq!(shop.app.world().resource::<Sessions>().departing(), 0);
    assert_eq!(
        stored_gold(&shop.ledger, 5),
        Some(555),
        "the final save landed"
    );
    assert_eq!(
        shop.app.world().resource::<MarketplaceStats>().lease_losses,
        0
    );
    let back = shop.join(5);
    assert_eq!(shop.gold(back), 555);
}

/// A persisted component that cannot be serialised while cursed.
#[derive(Component, Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
struct Cursed(bool);

impl Serialize for Cursed {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 {
            Err(serde::ser::Error::custom(
                "the curse cannot be written down",
            ))
        } else {
            s.serialize_newtype_struct("Cursed", &self.0)
        }
    }
}

#[derive(Resource, Default)]
struct SaveFailures(Vec<PlayerSaveFailed>);

/// A shop whose `GOLD_1000` is cursed gold: granting it also curses the buyer, so the save that
/// should commit the grant cannot be made until the curse is lifted.
fn cursed_shop() -> TestShop {
    let mut shop = shop();
    shop.app
        .persist_component::<Cursed>()
        .init_resource::<SaveFailures>()
        .add_product_handler(GOLD_1000, |_receipt, mut player| {
            let Some(mut gold) = player.get_mut::<Gold>() else {
                return false;
            };
            gold.0 += 1000;
            player.insert(Cursed(true));
            true
        })
        .add_systems(
            Last,
            |mut seen: MessageReader<PlayerSaveFailed>, mut out: ResMut<SaveFailures>| {
                out.0.extend(seen.read().cloned());
            },
        );
    shop
}

/// `user` joins the cursed shop and buys cursed gold: granted in memory, not savable.
fn cursed_grant(user: i64) -> (TestShop, Entity) {
    let mut shop = cursed_shop();
    let player = shop.join(user);
    shop.buy(player, GOLD_1000);
    assert_eq!(shop.gold(player), 1000, "granted in memory");
    (shop, player)
}

#[test]
fn a_grant_that_cannot_be_saved_is_reported_and_retried() {
    let (mut shop, player) = cursed_grant(6);
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 1, "not committed");
    let failures = &shop.world().resource::<SaveFailures>().0;
    assert!(
        failures.iter().any(|f| f.user_id == UserId(6)
            && f.reason.contains("curse")
            && f.uncommitted_grants == 1),
        "{failures:?}"
    );
    let session = shop.world().get::<PlayerSession>(player).unwrap();
    assert!(session.last_save_error().unwrap().contains("curse"));
    assert_eq!(session.uncommitted_grants().len(), 1);
    // Still cursed: the retries keep failing, the grant keeps waiting, nothing is lost.
    shop.advance(Duration::from_secs(5));
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 1);
    shop.app
        .world_mut()
        .entity_mut(player)
        .insert(Cursed(false));
    shop.advance(Duration::from_secs(10)); // the next save retry
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
    assert_eq!(stored_gold(&shop.ledger, 6), Some(1000));
    assert_eq!(shop.collected().resolved.len(), 1);
    let session = shop.world().get::<PlayerSession>(player).unwrap();
    assert_eq!(session.last_save_error(), None);
}

#[test]
fn a_grant_that_cannot_be_saved_when_its_buyer_leaves_is_delivered_again_next_visit() {
    let (mut shop, player) = cursed_grant(7);
    shop.app.world_mut().despawn(player);
    shop.app.settle();
    assert_eq!(shop.receipts_in(ReceiptState::Pending), 1);
    let back = shop.join(7);
    assert_eq!(
        shop.gold(back),
        1000,
        "delivered again: its effect was never committed"
    );
    shop.app.world_mut().entity_mut(back).insert(Cursed(false));
    shop.advance(Duration::from_secs(2));
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
    assert_eq!(stored_gold(&shop.ledger, 7), Some(1000));
}

#[test]
fn a_buyer_whose_state_cannot_be_read_waits_and_the_handler_does_not_run() {
    let mut shop = cursed_shop();
    let player = shop.join(13);
    shop.app.world_mut().entity_mut(player).insert(Cursed(true));
    shop.buy(player, GOLD_100);
    assert_eq!(shop.gold(player), 0);
    assert!(matches!(
        &shop.collected().failed[0].reason,
        bevy_marketplace::DeliveryFailure::StateUnreadable(e) if e.contains("curse")
    ));
    shop.app
        .world_mut()
        .entity_mut(player)
        .insert(Cursed(false));
    shop.advance(Duration::from_secs(2));
    assert_eq!(shop.gold(player), 100);
    assert_eq!(shop.receipts_in(ReceiptState::Granted), 1);
}

/// An in-memory store that panics inside its next transaction when told to.
struct PanickyStore {
    inner: InMemoryLedger,
    panic_next: Arc<AtomicBool>,
}

impl LedgerStore for PanickyStore {
    fn location(&self) -> String {
        "panicky".into()
    }
    fn begin(&mut self) -> Result<(), LedgerError> {
        self.inner.begin()
    }
    fn apply(&mut self, request: &LedgerRequest, now_ms: i64) -> Result<LedgerReply, LedgerError> {
        let reply = self.inner.apply(request, now_ms);
        if self.panic_next.swap(false, Ordering::SeqCst) {
            panic!("a bug in the store");
        }
        reply
    }
    fn commit(&mut self) -> Result<(), LedgerError> {
        self.inner.commit()
    }
    fn rollback(&mut self) {
        self.inner.rollback()
    }
}

#[test]
fn a_store_that_panics_fails_its_transaction_and_is_reopened() {
    let ledger = InMemoryLedger::default();
    let panic_next = Arc::new(AtomicBool::new(false));
    let opened = Arc::new(AtomicUsize::new(0));
    let (store, flag, count) = (ledger.clone(), panic_next.clone(), opened.clone());
    let backend = LedgerBackend::custom(move || {
        count.fetch_add(1, Ordering::SeqCst);
        Ok(PanickyStore {
            inner: store.clone(),
            panic_next: flag.clone(),
        })
    });
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(backend)))
        .persist_component::<Gold>();
    add_sample_handlers(&mut app, HandlerLog::default());
    app.init_resource::<HandlerMode>();
    app.settle();
    // The join's transaction panics: the session must not stay loading.
    panic_next.store(true, Ordering::SeqCst);
    let player = app.world_mut().spawn((Buyer::new(UserId(8)), Gold(0))).id();
    app.update_until("the store is reopened", |w| {
        matches!(
            w.resource::<bevy_marketplace::Ledger>().status(),
            LedgerStatus::Restarting(_)
        ) || opened.load(Ordering::SeqCst) == 2
    });
    app.update_until("the player is loaded after the restart", |w| {
        w.get::<PlayerSession>(player)
            .is_some_and(|s| s.is_active())
    });
    assert_eq!(opened.load(Ordering::SeqCst), 2, "opened again once");
    assert!(matches!(
        app.world().resource::<bevy_marketplace::Ledger>().status(),
        LedgerStatus::Ready(_)
    ));
    // A purchase whose charge hits the next panic is retried and goes through, once.
    panic_next.store(true, Ordering::SeqCst);
    buy(&mut app, player, GOLD_100);
    app.settle();
    assert_eq!(app.world().get::<Gold>(player).unwrap().0, 100);
    assert_eq!(ledger.audit().count(ReceiptState::Granted), 1);
    assert_eq!(ledger.audit().receipts.len(), 1);
}

#[test]
fn simulated_purchases_are_off_unless_allowed() {
    let mut shop = shop();
    shop.join(9);
    let mut service = shop.app.world_mut().resource_mut::<MarketplaceService>();
    assert_eq!(
        service.simulate_purchase(UserId(9), GOLD_100),
        Err(MarketplaceError::DebugGrantsDisabled)
    );
    shop.app.settle();
    assert_eq!(shop.ledger.audit().receipts.len(), 0, "nothing free");

    for allowed in [
        shop_with(|p| MarketplacePlugin {
            test_purchases: true,
            ..p
        }),
        shop_with(|p| MarketplacePlugin {
            allow_debug_grants: true,
            ..p
        }),
    ] {
        let mut shop = allowed;
        let player = shop.join(9);
        let mut service = shop.app.world_mut().resource_mut::<MarketplaceService>();
        assert_eq!(
            service.simulate_purchase(UserId(9), ProductId(1)),
            Err(MarketplaceError::UnknownProduct(ProductId(1)))
        );
        service.simulate_purchase(UserId(9), GOLD_100).unwrap();
        shop.app.settle();
        assert_eq!(shop.gold(player), 100);
    }
}

#[test]
fn a_ledger_that_cannot_open_says_so_in_the_prompt() {
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(unopenable_ledger())))
        .insert_resource(ConfirmPolicy::Manual);
    let player = app.world_mut().spawn(Buyer::new(UserId(10))).id();
    app.settle();
    app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: GOLD_100,
    });
    app.update();
    let prompt = app.world().get::<OpenPrompt>(player).unwrap();
    assert!(
        matches!(&prompt.state, PromptState::Failed(PurchaseError::Unavailable(m)) if m.contains("disk on fire")),
        "{:?}",
        prompt.state
    );
    let PromptState::Failed(error) = &prompt.state else {
        unreachable!()
    };
    assert!(error.to_string().contains("unavailable"), "{error}");
}

#[test]
fn leaving_while_the_prompt_shows_purchased_reports_the_purchase() {
    let mut shop = shop_with(|p| p.with_confirm_policy(ConfirmPolicy::Manual));
    let player = shop.join(11);
    shop.app.world_mut().write_message(PromptProductPurchase {
        player,
        product_id: GOLD_100,
    });
    shop.app.update();
    shop.app
        .world_mut()
        .answer_prompt(player, PromptAction::Confirm);
    shop.app.update_until("the prompt shows Purchased", |w| {
        w.get::<OpenPrompt>(player)
            .is_some_and(|p| matches!(p.state, PromptState::Purchased(_)))
    });
    shop.app.world_mut().despawn(player);
    shop.app.settle();
    let finished = &shop.collected().finished;
    assert_eq!(finished.len(), 1);
    assert!(finished[0].is_purchased, "{finished:?}");
}

/// A player whose saved data cannot be loaded (here: Gold that is not RON) gets a failed session:
/// this server will never write for them, so it gives their lease back at once instead of keeping
/// every other server from trying until they leave.
#[test]
fn a_session_that_fails_to_load_gives_its_lease_back() {
    let mut shop = shop();
    // A tool wrote a Gold this game cannot read.
    let mut tool = shop.ledger.clone();
    tool.begin().unwrap();
    let LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { lease_token, .. })) =
        tool.apply(
            &LedgerRequest::OpenSession(OpenSession {
                user: UserId(4),
                server: ServerId::new("tool").unwrap(),
                lease_ms: 60_000,
                starting_balance: 1000,
            }),
            0,
        )
        .unwrap()
    else {
        panic!("the tool opens the player");
    };
    let save = LedgerRequest::Save(SaveRequest {
        user: UserId(4),
        fence: LeaseFence {
            server: ServerId::new("tool").unwrap(),
            token: lease_token,
        },
        state: PlayerSnapshot([("Gold".to_owned(), "not RON at all (".to_owned())].into()),
        granted: vec![],
        settled: vec![],
        rejected: vec![],
        release: true,
        lease_ms: 60_000,
    });
    assert!(matches!(
        tool.apply(&save, 0).unwrap(),
        LedgerReply::Save(SaveReply::Saved { .. })
    ));
    tool.commit().unwrap();

    let player = spawn_buyer(&mut shop.app, 4, 100);
    shop.app.update_until("the session to fail", |w| {
        matches!(
            w.get::<PlayerSession>(player).map(PlayerSession::phase),
            Some(SessionPhase::Failed(_))
        )
    });
    shop.app.settle();
    assert!(
        shop.app.world().get_entity(player).is_ok(),
        "the player is still here"
    );
    assert_eq!(
        shop.ledger.audit().leases[&UserId(4)].owner,
        None,
        "the lease is given back while they stay"
    );
    assert_eq!(
        shop.ledger.audit().accounts[&UserId(4)].1.0["Gold"],
        "not RON at all (",
        "and their data is left as it was"
    );
}
