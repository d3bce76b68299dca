//! The PostgreSQL ledger: the durable-ledger behaviour of the SQLite tests on a shared database,
//! session leases between servers, and a race of real server processes hopping players between
//! them while buying, with one server frozen (SIGSTOP) past its lease.
//!
//! Every test starts from a throwaway cluster (`initdb` + `pg_ctl` in a temp dir, on a free
//! loopback port) shared by this test process, with a database of its own.

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/race.rs"]
mod race;

use bevy_marketplace::ledger::{
    ChargeReply, OpenSession, OpenSessionReply, OpenedSession, ReleaseSession, SaveReply,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_marketplace::Ledger;
use bevy_marketplace::ledger::{
    ChargeRequest, LeaseClock, LeaseFence, LedgerBackend, LedgerError, LedgerReply, LedgerRequest,
    LedgerStatus, LedgerStore, PG_SCHEMA_VERSION, PlayerSnapshot, PostgresLedger, PostgresOptions,
    SaveRequest, ServerId,
};
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::MarketplaceTestExt;
use bevy_marketplace::{
    MarketplaceStats, PlaceId, PlayerSession, ProductPurchaseChannel, PurchaseId, ReceiptState,
    RequestId, RetryPolicy, SessionPhase, Sessions,
};
use common::*;
use pg::PgCluster;
use race::{Observed, START_BALANCE, Server, await_all_granted, quit_all, signal, spawn_server};

// ---------------------------------------------------------------- helpers

fn pg_shop(url: &str, server: &str, lease: Duration) -> GameServer {
    let url = url.to_owned();
    GameServer::new(
        move || PostgresLedger::connect(&url),
        server,
        |p| MarketplacePlugin {
            lease_duration: lease,
            retry: RetryPolicy {
                initial: Duration::from_millis(20),
                multiplier: 2.0,
                max: Duration::from_millis(100),
            },
            ..p
        },
    )
}

fn audit(url: &str) -> bevy_marketplace::ledger::LedgerAudit {
    connect(url).audit().unwrap()
}

fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// A store whose leases expire by the time the test gives it (not the database's clock).
fn connect(url: &str) -> PostgresLedger {
    PostgresLedger::connect(PostgresOptions::new(url).with_clock(LeaseClock::GameServer)).unwrap()
}

/// A server's first lease on a player (tokens count the leases taken, from 1).
fn first_lease(server: &str) -> LeaseFence {
    LeaseFence {
        server: ServerId::new(server).unwrap(),
        token: 1,
    }
}

/// Applies requests in one transaction at a chosen time, as the worker would.
fn apply_at(store: &mut PostgresLedger, now_ms: i64, request: LedgerRequest) -> LedgerReply {
    store.begin().unwrap();
    let reply = store.apply(&request, now_ms).unwrap();
    store.commit().unwrap();
    reply
}

fn open(user: i64, server: &str, lease_ms: i64) -> LedgerRequest {
    LedgerRequest::OpenSession(OpenSession {
        user: UserId(user),
        server: ServerId::new(server).unwrap(),
        lease_ms,
        starting_balance: 1000,
    })
}

fn gold_state(gold: u64) -> PlayerSnapshot {
    PlayerSnapshot(BTreeMap::from([("Gold".to_owned(), format!("({gold})"))]))
}

fn charge(user: i64, request_id: RequestId, price: u64) -> LedgerRequest {
    LedgerRequest::Charge(ChargeRequest {
        request_id,
        user: UserId(user),
        product_id: GOLD_100,
        product_name: "test product".into(),
        price,
        test_purchase: false,
        place_id: PlaceId(0),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 1000,
        fence: None,
    })
}

/// A charge by the game server holding the player's lease.
fn fenced_charge(user: i64, request_id: RequestId, price: u64, fence: LeaseFence) -> LedgerRequest {
    let LedgerRequest::Charge(charge) = charge(user, request_id, price) else {
        unreachable!()
    };
    LedgerRequest::Charge(ChargeRequest {
        fence: Some(fence),
        ..charge
    })
}

// ---------------------------------------------------------------- behaviour

#[test]
fn purchases_and_persisted_gold_survive_a_restart() {
    let url = PgCluster::shared().create_database("restart");
    // The same server id takes its own player back at once: no waiting out the lease.
    gold_survives_a_restart(
        || pg_shop(&url, "a", Duration::from_secs(300)),
        || audit(&url),
    );
    let version: i64 = sql(&url)
        .query_one("SELECT schema_version FROM bevy_marketplace_meta", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, PG_SCHEMA_VERSION);
}

#[test]
fn a_top_up_before_the_first_join_adds_to_the_starting_balance() {
    let url = PgCluster::shared().create_database("top_up_first");
    let mut shop = pg_shop(&url, "a", Duration::from_secs(300));
    let p = shop.top_up_then_join(3, 250);
    shop.buy(p, GOLD_100);
    let journal: i64 = sql(&url)
        .query_one(
            "SELECT sum(delta)::bigint FROM balance_journal WHERE user_id = 3",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(
        journal,
        1000 + 250 - 80,
        "the balance is the sum of its journal"
    );
    assert_eq!(
        audit(&url).accounts[&UserId(3)].0,
        1000 + 250 - 80,
        "the balance is the starting balance plus the journal"
    );
}

#[test]
fn the_backend_opens_from_a_url_and_hides_passwords() {
    let cluster = PgCluster::shared();
    let url = cluster.create_database("backend");
    let mut app = App::new();
    app.add_plugins((MinimalPlugins, plugin(LedgerBackend::postgres(&url))));
    app.update_until("the ledger to open", |w| {
        *w.resource::<Ledger>().status() != LedgerStatus::Opening
    });
    let status = app.world().resource::<Ledger>().status().clone();
    assert!(
        matches!(&status, LedgerStatus::Ready(l) if l.contains("postgres:")),
        "{status:?}"
    );
    let shown = format!(
        "{:?}",
        LedgerBackend::postgres("host=h user=u password=hunter2 dbname=d")
    );
    assert!(!shown.contains("hunter2"), "{shown}");
    let shown = format!("{:?}", LedgerBackend::postgres("postgres://u:hunter2@h/d"));
    assert!(!shown.contains("hunter2"), "{shown}");
}

#[test]
fn a_charge_retried_with_the_same_request_id_charges_once() {
    let url = PgCluster::shared().create_database("idempotent");
    let mut store = connect(&url);
    apply_at(&mut store, 1, open(2, "a", 1000));
    let id = RequestId::new();
    let LedgerReply::Charge(ChargeReply::Charged {
        receipt: first,
        balance,
        replayed: false,
        ..
    }) = apply_at(&mut store, 2, charge(2, id, 100))
    else {
        panic!("the first charge charges");
    };
    assert_eq!(balance, 900);
    let LedgerReply::Charge(ChargeReply::Charged {
        receipt: again,
        balance,
        replayed: true,
        ..
    }) = apply_at(&mut store, 3, charge(2, id, 100))
    else {
        panic!("the retry is a replay");
    };
    assert_eq!(again, first, "the first receipt comes back");
    assert_eq!(balance, 900, "nothing debited twice");
    assert_eq!(
        apply_at(&mut store, 4, charge(2, RequestId::new(), 5000)),
        LedgerReply::Charge(ChargeReply::InsufficientFunds {
            balance: 900,
            price: 5000
        })
    );
    // A charge creates the account of a user the ledger never saw with the starting balance.
    assert_eq!(
        apply_at(&mut store, 5, charge(77, RequestId::new(), 5000)),
        LedgerReply::Charge(ChargeReply::InsufficientFunds {
            balance: 1000,
            price: 5000
        })
    );
    let audit = store.audit().unwrap();
    assert_eq!(audit.receipts.len(), 1);
    assert_eq!(audit.purchase_debits, 100);
    // A failed batch leaves nothing behind.
    store.begin().unwrap();
    store.apply(&charge(2, RequestId::new(), 100), 6).unwrap();
    store.rollback();
    assert_eq!(store.audit().unwrap().receipts.len(), 1);
    assert_eq!(store.audit().unwrap().accounts[&UserId(2)].0, 900);
}

fn save(
    user: i64,
    server: &str,
    state: PlayerSnapshot,
    granted: Vec<PurchaseId>,
    release: bool,
) -> LedgerRequest {
    LedgerRequest::Save(SaveRequest {
        user: UserId(user),
        fence: first_lease(server),
        state,
        granted,
        settled: vec![],
        rejected: vec![],
        release,
        lease_ms: 60_000,
    })
}

/// A reply with its random parts (purchase ids) blanked, to compare two databases.
fn comparable(reply: &LedgerReply) -> String {
    match reply {
        LedgerReply::Charge(ChargeReply::Charged {
            receipt,
            balance,
            replayed,
            ..
        }) => format!(
            "charged user {} product {} price {} balance {balance} replayed {replayed}",
            receipt.player_id, receipt.product_id, receipt.currency_spent
        ),
        LedgerReply::Save(SaveReply::Saved { newly_granted, .. }) => {
            format!("saved, {} granted", newly_granted.len())
        }
        other => format!("{other:?}"),
    }
}

/// Runs the same story on a fresh database, its last batch either through the store's batch path
/// or one request at a time (in the store's lock order, as the worker would).
fn batch_story(url: &str, batched: bool) -> (Vec<String>, bevy_marketplace::ledger::LedgerAudit) {
    let mut store = connect(url);
    for user in 1..=4 {
        apply_at(&mut store, 1, open(user, "a", 60_000));
    }
    apply_at(&mut store, 1, open(5, "b", 60_000));
    let replayed_request = RequestId::new();
    let LedgerReply::Charge(ChargeReply::Charged {
        receipt: earlier, ..
    }) = apply_at(&mut store, 2, charge(1, RequestId::new(), 10))
    else {
        panic!("charged");
    };
    apply_at(&mut store, 2, charge(4, replayed_request, 10));
    apply_at(&mut store, 2, save(4, "a", gold_state(1), vec![], false));
    let batch = vec![
        charge(3, RequestId::new(), 100),
        save(
            1,
            "a",
            gold_state(5),
            vec![earlier.purchase_id.clone()],
            false,
        ),
        charge(2, RequestId::new(), 5000),
        charge(1, RequestId::new(), 100),
        charge(3, RequestId::new(), 950),
        charge(77, RequestId::new(), 1),
        charge(4, replayed_request, 10),
        save(5, "a", gold_state(9), vec![], false),
        save(4, "a", PlayerSnapshot::default(), vec![], true),
        save(2, "a", gold_state(7), vec![], false),
        save(2, "a", gold_state(8), vec![], false),
    ];
    store.begin().unwrap();
    let replies = if batched {
        store
            .apply_batch(&batch, 3)
            .expect("the batch path takes it")
            .unwrap()
    } else {
        batch
            .iter()
            .map(|request| store.apply(request, 3).unwrap())
            .collect()
    };
    store.commit().unwrap();
    (
        replies.iter().map(comparable).collect(),
        store.audit().unwrap(),
    )
}

#[test]
fn a_batch_of_charges_and_saves_does_what_the_same_requests_do_one_by_one() {
    let one_by_one = batch_story(&PgCluster::shared().create_database("one_by_one"), false);
    let batched = batch_story(&PgCluster::shared().create_database("batched"), true);
    assert_eq!(batched.0, one_by_one.0, "the same answers");
    assert_eq!(batched.0[1], "saved, 1 granted");
    assert_eq!(
        batched.0[4], "Charge(InsufficientFunds { balance: 900, price: 950 })",
        "a second charge of one player in a batch sees the first"
    );
    assert!(batched.0[6].contains("replayed true"), "{:?}", batched.0);
    assert_eq!(batched.0[7], "Save(LeaseLost { owner: Some(\"b\") })");
    assert!(
        batched.0[5].ends_with("price 1 balance 999 replayed false"),
        "a charge of a user the ledger never saw starts from the starting balance: {:?}",
        batched.0
    );
    let state = |audit: &bevy_marketplace::ledger::LedgerAudit| {
        let mut receipts: Vec<String> = audit
            .receipts
            .iter()
            .map(|r| {
                format!(
                    "{} {} {:?}",
                    r.info.player_id, r.info.currency_spent, r.state
                )
            })
            .collect();
        receipts.sort();
        (audit.accounts.clone(), receipts, audit.purchase_debits)
    };
    assert_eq!(state(&batched.1), state(&one_by_one.1), "the same ledger");
    let accounts = &batched.1.accounts;
    assert_eq!(accounts[&UserId(1)].1, gold_state(5));
    assert_eq!(
        accounts[&UserId(2)].1,
        gold_state(8),
        "the later save of a player wins"
    );
    assert!(
        accounts[&UserId(4)].1.0.is_empty(),
        "a component no longer saved is removed"
    );
    assert_eq!(
        accounts[&UserId(5)].1,
        PlayerSnapshot::default(),
        "a lost lease writes nothing"
    );
}

#[test]
fn two_servers_batching_each_others_players_do_not_deadlock() {
    // Server A holds player 1 and B holds player 2. In each round both commit a batch at the
    // same moment: A saves and charges its player while trying to open B's, and B the other way
    // round. Grouping a batch's requests must not lock the two accounts in opposite orders,
    // or PostgreSQL kills one batch as a deadlock.
    let url = PgCluster::shared().create_database("lock_order");
    let mut a = connect(&url);
    let mut b = connect(&url);
    apply_at(&mut a, 1, open(1, "a", 3_600_000));
    apply_at(&mut b, 1, open(2, "b", 3_600_000));
    let batch = |own: i64, other: i64, server: &str| {
        vec![
            open(other, server, 3_600_000),
            save(own, server, gold_state(1), vec![], false),
            charge(own, RequestId::new(), 1),
        ]
    };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let run = |mut store: PostgresLedger, own: i64, other: i64, server: &'static str| {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            for round in 0..20 {
                let batch = batch(own, other, server);
                barrier.wait();
                store.begin().unwrap();
                let replies = store
                    .apply_batch(&batch, 2)
                    .expect("the batch path takes it")
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                store.commit().unwrap();
                assert!(matches!(
                    replies[0],
                    LedgerReply::OpenSession(OpenSessionReply::Busy { .. })
                ));
            }
        })
    };
    let (ta, tb) = (run(a, 1, 2, "a"), run(b, 2, 1, "b"));
    ta.join().unwrap();
    tb.join().unwrap();
}

#[test]
fn a_failing_grant_commit_leaves_the_receipt_pending_and_never_reruns_the_handler() {
    let url = PgCluster::shared().create_database("failing");
    let mut shop = pg_shop(&url, "a", Duration::from_secs(300));
    a_failing_grant_commit_is_retried_without_rerunning_the_handler(&mut shop, || audit(&url));
}

#[test]
fn a_newer_schema_and_another_programs_database_are_refused_and_untouched() {
    let cluster = PgCluster::shared();
    let url = cluster.create_database("newer");
    drop(connect(&url));
    sql(&url)
        .execute(
            "UPDATE bevy_marketplace_meta SET schema_version = $1",
            &[&(PG_SCHEMA_VERSION + 1)],
        )
        .unwrap();
    let error = PostgresLedger::connect(&url).unwrap_err();
    assert!(
        matches!(
            &error,
            LedgerError::NewerSchema { found, supported, .. }
                if *found == PG_SCHEMA_VERSION + 1 && *supported == PG_SCHEMA_VERSION
        ),
        "{error}"
    );
    assert!(error.to_string().contains("refusing to touch it"));

    let url = cluster.create_database("other");
    sql(&url)
        .batch_execute("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('hi');")
        .unwrap();
    let error = PostgresLedger::connect(&url).unwrap_err();
    assert!(
        matches!(&error, LedgerError::NotALedger { reason, .. } if reason.contains("another program")),
        "{error}"
    );
    let tables: i64 = sql(&url)
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "nothing was created");

    let error = PostgresLedger::connect(cluster.url("no_such_database")).unwrap_err();
    assert!(matches!(error, LedgerError::Open { .. }), "{error}");
}

#[test]
fn servers_connecting_to_a_new_database_at_once_migrate_it_once() {
    let url = PgCluster::shared().create_database("concurrent");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PostgresLedger::connect(&url).map(drop))
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let rows: i64 = sql(&url)
        .query_one("SELECT count(*) FROM bevy_marketplace_meta", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

#[test]
fn the_lease_is_a_compare_and_set_between_servers() {
    let url = PgCluster::shared().create_database("lease");
    let mut a = connect(&url);
    let mut b = connect(&url);
    assert!(matches!(
        apply_at(&mut a, 1_000, open(5, "a", 1_000)),
        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { .. }))
    ));
    assert_eq!(
        apply_at(&mut b, 1_500, open(5, "b", 1_000)),
        LedgerReply::OpenSession(OpenSessionReply::Busy {
            owner: "a".into(),
            expires_at_ms: 2_000
        }),
        "A's lease is live"
    );
    // A renews by saving.
    let save = |server: &str, gold: u64, granted: Vec<PurchaseId>, release: bool| {
        LedgerRequest::Save(SaveRequest {
            user: UserId(5),
            // A took the first lease, B the second.
            fence: LeaseFence {
                server: ServerId::new(server).unwrap(),
                token: if server == "a" { 1 } else { 2 },
            },
            state: gold_state(gold),
            granted,
            settled: vec![],
            rejected: vec![],
            release,
            lease_ms: 1_000,
        })
    };
    assert!(matches!(
        apply_at(&mut a, 1_900, save("a", 10, vec![], false)),
        LedgerReply::Save(SaveReply::Saved { newly_granted, newly_settled, .. })
            if newly_granted.is_empty() && newly_settled.is_empty()
    ));
    assert!(matches!(
        apply_at(&mut b, 2_500, open(5, "b", 1_000)),
        LedgerReply::OpenSession(OpenSessionReply::Busy {
            expires_at_ms: 2_900,
            ..
        })
    ));
    // A stalls; its lease runs out and B takes over.
    let LedgerReply::Charge(ChargeReply::Charged { receipt, .. }) = apply_at(
        &mut a,
        2_950,
        fenced_charge(5, RequestId::new(), 100, first_lease("a")),
    ) else {
        panic!("charged");
    };
    let LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession {
        state, pending, ..
    })) = apply_at(&mut b, 3_000, open(5, "b", 1_000))
    else {
        panic!("B takes the expired lease");
    };
    assert_eq!(state, gold_state(10));
    assert_eq!(pending, vec![receipt.clone()], "B gets the pending receipt");
    // A wakes up and tries to commit its grant: refused, nothing written.
    assert_eq!(
        apply_at(
            &mut a,
            3_100,
            save("a", 110, vec![receipt.purchase_id.clone()], false)
        ),
        LedgerReply::Save(SaveReply::LeaseLost {
            owner: Some("b".into())
        })
    );
    assert_eq!(
        apply_at(
            &mut a,
            3_100,
            LedgerRequest::ReleaseSession(ReleaseSession {
                user: UserId(5),
                server: ServerId::new("a").unwrap(),
                token: Some(1),
            })
        ),
        LedgerReply::ReleaseSession(())
    );
    assert!(matches!(
        apply_at(
            &mut b,
            3_200,
            save("b", 110, vec![receipt.purchase_id.clone()], true)
        ),
        LedgerReply::Save(SaveReply::Saved { newly_granted, newly_settled, .. })
            if newly_granted == vec![receipt.purchase_id.clone()] && newly_settled.is_empty()
    ));
    let audit = b.audit().unwrap();
    assert_eq!(audit.accounts[&UserId(5)].1, gold_state(110));
    assert_eq!(audit.count(ReceiptState::Granted), 1);
    // Released: A may open it again at once.
    assert!(matches!(
        apply_at(&mut a, 3_300, open(5, "a", 1_000)),
        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { .. }))
    ));
}

#[test]
fn a_second_server_cannot_open_a_session_the_first_holds_until_release_or_expiry() {
    let url = PgCluster::shared().create_database("second");
    let mut a = pg_shop(&url, "server-a", Duration::from_secs(300));
    let mut b = pg_shop(&url, "server-b", Duration::from_secs(300));
    a_lease_is_handed_over_when_its_holder_lets_go(&mut a, &mut b);
}

#[test]
fn a_server_that_lost_the_lease_writes_nothing_and_drops_its_grants() {
    let url = PgCluster::shared().create_database("stalled");
    let lease = Duration::from_millis(300);
    let mut a = pg_shop(&url, "server-a", lease);
    let mut b = pg_shop(&url, "server-b", lease);
    let pa = a.join(11);
    a.app.insert_resource(HandlerMode::Decline);
    a.buy(pa, GOLD_100);
    assert_eq!(audit(&url).count(ReceiptState::Pending), 1);
    // A stalls (no frames, no autosave); B's player joins and waits out A's lease.
    let started = Instant::now();
    let pb = b.spawn(11);
    b.app
        .update_until("server B to take the expired lease", |w| {
            std::thread::sleep(Duration::from_millis(2));
            w.get::<PlayerSession>(pb)
                .is_some_and(PlayerSession::is_active)
        });
    assert!(
        started.elapsed() >= lease / 2,
        "B waited for A's lease: {:?}",
        started.elapsed()
    );
    b.app.settle();
    assert_eq!(b.gold(pb), 100, "B granted the pending receipt");
    assert_eq!(audit(&url).count(ReceiptState::Granted), 1);
    // A wakes up; its handler now works and grants in memory, but the commit is refused.
    a.app.insert_resource(HandlerMode::Work);
    a.advance(Duration::from_secs(2));
    a.advance(Duration::from_secs(2));
    assert_eq!(
        a.app.world().resource::<MarketplaceStats>().lease_losses,
        1,
        "A's save was refused"
    );
    assert!(
        matches!(a.phase(pa), SessionPhase::Failed(m) if m.contains("lease")),
        "A's session is failed"
    );
    let session = a.app.world().get::<PlayerSession>(pa).unwrap();
    assert!(session.uncommitted_grants().is_empty(), "grants dropped");
    assert!(
        a.app
            .world()
            .resource::<Sessions>()
            .awaiting_commit()
            .next()
            .is_none()
    );
    assert_eq!(a.app.world().resource::<MarketplaceStats>().granted, 0);
    // A leaving writes nothing either.
    a.app.world_mut().entity_mut(pa).despawn();
    a.app.settle();
    let audit = audit(&url);
    assert_eq!(audit.count(ReceiptState::Granted), 1, "granted once, by B");
    assert_eq!(audit.accounts[&UserId(11)].1.0["Gold"], "(100)", "B's data");
    assert_eq!(b.log.granted.lock().unwrap().len(), 1);
    let owner: Option<String> = sql(&url)
        .query_one("SELECT lease_owner FROM accounts WHERE user_id = 11", &[])
        .unwrap()
        .get(0);
    assert_eq!(owner.as_deref(), Some("server-b"));
}

/// The two load tests take turns, so neither measures the other.
static LOAD: Mutex<()> = Mutex::new(());

#[test]
fn ledger_throughput_with_four_servers() {
    let _turn = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    // Four connections, each a server's storage worker: batches of charges, then the saves that
    // grant them (group commit, as the worker does), on disjoint players.
    const SERVERS: i64 = 4;
    const BATCH: i64 = 100;
    let url = PgCluster::shared().create_database("throughput");
    drop(connect(&url));
    let run_for = Duration::from_secs(3);
    let threads: Vec<_> = (0..SERVERS)
        .map(|s| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut store = connect(&url);
                let server = format!("bench-{s}");
                let users: Vec<i64> = (0..BATCH).map(|i| 10_000 + s * BATCH + i).collect();
                let now = bevy_marketplace_now();
                store.begin().unwrap();
                let opens: Vec<LedgerRequest> =
                    users.iter().map(|&u| open(u, &server, 60_000)).collect();
                let fences: Vec<LeaseFence> = store
                    .apply_batch(&opens, now)
                    .unwrap()
                    .unwrap()
                    .into_iter()
                    .map(|reply| match reply {
                        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { lease_token, .. })) => LeaseFence {
                            server: ServerId::new(server.as_str()).unwrap(),
                            token: lease_token,
                        },
                        other => panic!("{other:?}"),
                    })
                    .collect();
                store.commit().unwrap();
                let started = Instant::now();
                let mut granted = 0u64;
                let mut gold = vec![0u64; users.len()];
                while started.elapsed() < run_for {
                    let now = bevy_marketplace_now();
                    store.begin().unwrap();
                    let charges: Vec<LedgerRequest> = users
                        .iter()
                        .zip(&fences)
                        .map(|(&u, fence)| fenced_charge(u, RequestId::new(), 1, fence.clone()))
                        .collect();
                    let receipts: Vec<_> = store
                        .apply_batch(&charges, now)
                        .unwrap()
                        .unwrap()
                        .into_iter()
                        .map(|reply| match reply {
                            LedgerReply::Charge(ChargeReply::Charged { receipt, .. }) => receipt,
                            other => panic!("{other:?}"),
                        })
                        .collect();
                    store.commit().unwrap();
                    store.begin().unwrap();
                    let saves: Vec<LedgerRequest> = receipts
                        .into_iter()
                        .enumerate()
                        .map(|(i, receipt)| {
                            gold[i] += 100;
                            LedgerRequest::Save(SaveRequest {
                                user: UserId(users[i]),
                                fence: fences[i].clone(),
                                state: gold_state(gold[i]),
                                granted: vec![receipt.purchase_id],
                                settled: vec![],
                                rejected: vec![],
                                release: false,
                                lease_ms: 60_000,
                            })
                        })
                        .collect();
                    for reply in store.apply_batch(&saves, now).unwrap().unwrap() {
                        assert!(matches!(reply, LedgerReply::Save(SaveReply::Saved { ref newly_granted, .. }) if newly_granted.len() == 1));
                    }
                    store.commit().unwrap();
                    granted += users.len() as u64;
                }
                (granted, started.elapsed())
            })
        })
        .collect();
    let mut total = 0;
    let mut longest = Duration::ZERO;
    for t in threads {
        let (granted, took) = t.join().unwrap();
        total += granted;
        longest = longest.max(took);
    }
    let rate = total as f64 / longest.as_secs_f64();
    eprintln!(
        "ledger throughput: {SERVERS} connections, batches of {BATCH}: {rate:.0} receipts/s \
         charged and granted ({total} in {:.1} s)",
        longest.as_secs_f64()
    );
    let audit = audit(&url);
    assert_eq!(audit.count(ReceiptState::Granted) as u64, total);
    assert_eq!(audit.count(ReceiptState::Pending), 0);
}

fn bevy_marketplace_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------- the race

/// The race's session lease: short, so a frozen server's players are taken over quickly.
const LEASE_MS: u64 = 300;

#[test]
#[ignore = "a server process of many_servers_race_players_hopping_and_a_frozen_server; run by it"]
fn child_process() {
    race::run_child_from_env();
}

#[test]
fn many_servers_race_players_hopping_and_a_frozen_server() {
    let _turn = LOAD.lock().unwrap_or_else(|e| e.into_inner());
    const SERVERS: usize = 4;
    const PLAYERS: i64 = 60;
    let started = Instant::now();
    let cluster = PgCluster::shared();
    let url = cluster.create_database("race");
    // A server frozen inside a transaction loses its connection (and row locks) quickly.
    let url = format!("{url} options='-c idle_in_transaction_session_timeout=250'");
    let logs = tempfile::tempdir().unwrap();
    let (tx, events) = mpsc::channel();
    // A short lease, so that the frozen server's players are taken over within the test; the
    // nemesis test runs servers with the default settings.
    let settings = [
        ("RACE_LEASE_MS", LEASE_MS.to_string()),
        ("RACE_AUTOSAVE_MS", "100".to_owned()),
        ("RACE_RETRY_MAX_MS", "40".to_owned()),
    ];
    let mut servers: Vec<Server> = (0..SERVERS)
        .map(|i| spawn_server(i, &url, logs.path(), tx.clone(), &settings))
        .collect();
    drop(tx);
    let mut seen = Observed::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.ready.len() < SERVERS {
        assert!(Instant::now() < deadline, "servers did not open the ledger");
        seen.pump(&events, Duration::from_millis(50));
    }
    let mut rng = 0x2545_F491_u64;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };

    // Phase 1: throughput. Players spread over the servers, everyone buying all the time.
    let mut on: HashMap<i64, usize> = HashMap::new();
    for user in 1..=PLAYERS {
        let s = user as usize % SERVERS;
        servers[s].send(&format!("JOIN {user}"));
        on.insert(user, s);
    }
    seen.pump(&events, Duration::from_millis(1500));
    let before = seen.grant_times.len();
    let window = Instant::now();
    seen.pump(&events, Duration::from_secs(4));
    let measured = window.elapsed().as_secs_f64();
    let rate = (seen.grant_times.len() - before) as f64 / measured;
    eprintln!(
        "race: {SERVERS} servers, {PLAYERS} players: {rate:.0} receipts/s granted and committed \
         ({} in {measured:.1} s)",
        seen.grant_times.len() - before
    );

    // Phase 2: players hop between servers at random while buying; one server freezes.
    let frozen = 1usize;
    let phase_end = Instant::now() + Duration::from_secs(7);
    let freeze_at = Instant::now() + Duration::from_secs(2);
    let mut freeze: Option<(Instant, Vec<(i64, i64)>)> = None;
    let mut thawed = false;
    let mut hops = 0;
    while Instant::now() < phase_end {
        if freeze.is_none() && Instant::now() >= freeze_at {
            assert!(signal(servers[frozen].pid, "STOP"), "SIGSTOP a server");
            // Its leases as they stand now: nothing renews them while it is frozen.
            std::thread::sleep(Duration::from_millis(20));
            let leases: Vec<(i64, i64)> = sql(&url)
                .query(
                    "SELECT user_id, lease_expires_ms FROM accounts WHERE lease_owner = $1",
                    &[&format!("server-{frozen}")],
                )
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            // Its players give up on it and join other servers (the overlap is the point).
            for (&user, s) in on.iter_mut() {
                if *s == frozen {
                    servers[frozen].send(&format!("LEAVE {user}"));
                    let to = (frozen + 1 + (next() as usize % (SERVERS - 1))) % SERVERS;
                    servers[to].send(&format!("JOIN {user}"));
                    *s = to;
                }
            }
            freeze = Some((Instant::now(), leases));
        }
        if let Some((at, _)) = &freeze
            && !thawed
            && at.elapsed() > Duration::from_millis(4 * LEASE_MS)
        {
            assert!(signal(servers[frozen].pid, "CONT"), "SIGCONT the server");
            thawed = true;
        }
        let user = (next() % PLAYERS as u64) as i64 + 1;
        let from = on[&user];
        let to = (from + 1 + (next() as usize % (SERVERS - 1))) % SERVERS;
        if (freeze.is_none() || thawed || (from != frozen && to != frozen))
            && next().is_multiple_of(2)
        {
            servers[from].send(&format!("LEAVE {user}"));
            servers[to].send(&format!("JOIN {user}"));
            on.insert(user, to);
            hops += 1;
        }
        seen.pump(&events, Duration::from_millis(15));
    }
    assert!(thawed, "the frozen server was resumed");

    // Lease take-over: from each frozen-held lease's expiry to another server opening it.
    let (frozen_at, leases) = freeze.unwrap();
    let _ = frozen_at;
    let mut takeovers = Vec::new();
    for (user, expires) in &leases {
        if let Some((_, _, ms)) = seen
            .opened
            .iter()
            .find(|(s, u, ms)| *s != frozen && u == user && ms >= expires)
        {
            takeovers.push(ms - expires);
        }
    }
    takeovers.sort();

    // Phase 3: recovery. Nobody buys; every player rejoins once with working handlers.
    for s in servers.iter_mut() {
        s.send("CALM");
    }
    seen.pump(&events, Duration::from_millis(500));
    for (&user, &s) in &on {
        servers[s].send(&format!("LEAVE {user}"));
        servers[s].send(&format!("JOIN {user}"));
    }
    // A charge that landed after its buyer's session opened is picked up on the next join.
    await_all_granted(
        &url,
        &mut seen,
        &events,
        Duration::from_secs(20),
        Duration::from_secs(2),
        |pending| {
            for user in pending {
                let s = on[&user];
                servers[s].send(&format!("LEAVE {user}"));
                servers[s].send(&format!("JOIN {user}"));
            }
        },
    );
    quit_all(
        &mut servers,
        &mut seen,
        &events,
        Duration::from_secs(20),
        logs.path(),
    );

    // The verdict.
    let twice: Vec<_> = seen.granted.iter().filter(|(_, g)| g.2 > 1).collect();
    assert!(twice.is_empty(), "purchases granted twice: {twice:?}");
    let audit = audit(&url);
    assert_eq!(
        audit.count(ReceiptState::Pending),
        0,
        "every purchase granted"
    );
    assert_eq!(audit.count(ReceiptState::Granted), audit.receipts.len());
    let granted_ids: HashSet<&str> = seen.granted.keys().map(String::as_str).collect();
    let stored_ids: HashSet<&str> = audit
        .receipts
        .iter()
        .map(|r| r.info.purchase_id.0.as_str())
        .collect();
    assert_eq!(
        granted_ids, stored_ids,
        "the grants the servers reported are exactly the receipts the ledger holds"
    );
    assert_eq!(audit.purchase_debits, audit.receipt_total());
    let mut expected: BTreeMap<UserId, (u64, u64)> = BTreeMap::new();
    for r in &audit.receipts {
        let gold = match r.info.product_id {
            GOLD_100 => 100,
            GOLD_1000 => 1000,
            other => panic!("unexpected product {other:?}"),
        };
        let e = expected.entry(r.info.player_id).or_default();
        e.0 += gold;
        e.1 += r.info.currency_spent;
    }
    for user in 1..=PLAYERS {
        let (gold, spent) = expected.get(&UserId(user)).copied().unwrap_or_default();
        let (balance, state) = &audit.accounts[&UserId(user)];
        assert_eq!(
            state.0.get("Gold").map(String::as_str),
            Some(format!("({gold})").as_str()),
            "persisted Gold of user {user} is the sum of their grants"
        );
        assert_eq!(*balance, START_BALANCE - spent, "balance of user {user}");
    }
    let losses: u64 = seen
        .stats
        .iter()
        .filter_map(|s| {
            s.split("lease_losses=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    eprintln!(
        "race: {} receipts, {hops} hops, frozen server-{frozen} for {} ms with {} leases; \
         take-over after lease expiry (ms): min {:?} median {:?} max {:?} ({} measured); \
         lease losses {losses}; {:?}; {:.1} s in all",
        audit.receipts.len(),
        4 * LEASE_MS,
        leases.len(),
        takeovers.first(),
        takeovers.get(takeovers.len() / 2),
        takeovers.last(),
        takeovers.len(),
        seen.stats,
        started.elapsed().as_secs_f64()
    );
    assert!(!leases.is_empty(), "the frozen server held leases");
    assert!(
        !takeovers.is_empty(),
        "other servers took the frozen server's players over"
    );
    assert!(audit.receipts.len() > 100, "the servers bought things");
}
