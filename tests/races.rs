//! Several connections race on one ledger, and the result must be one the model could have
//! produced applying the same requests one at a time in some order (linearizability).
//!
//! Each case sets a ledger up serially (sessions, purchases, a grant, a top-up), then runs three
//! connections at once, each applying its own short list of requests, one transaction each:
//! top-ups of the same store orders for different users and amounts, their reversals, refunds of
//! the same pending and granted receipts, saves that grant a receipt another connection refunds,
//! retried charges, session takeovers. A request that fails (a deadlock, a serialization failure)
//! must have changed nothing. The checker then searches for an order of the successful requests,
//! keeping each connection's own order, in which the in-memory model (the reference) gives every
//! answer the stores gave and ends with the same ledger; the final ledger must pass `check()`.
//!
//! Runs on PostgreSQL (row locks, advisory locks, read committed) and SQLite (two connections to
//! one file). `PROPTEST_CASES=200 cargo test --all-features --test races` searches longer.

#[path = "common/pg.rs"]
mod pg;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};

use bevy_marketplace::ledger::{
    Audit, ChargeRequest, Clawback, CreditRequest, InMemoryLedger, LeaseClock, LeaseFence,
    LedgerAudit, LedgerReply, LedgerRequest, LedgerStore, OpenSession, OpenSessionReply,
    OpenedSession, PlayerSnapshot, PostgresLedger, PostgresOptions, RefundRequest, ReverseCredit,
    SaveRequest, ServerId, SqliteLedger,
};
use bevy_marketplace::{PlaceId, ProductId, ProductPurchaseChannel, RequestId, UserId};
use pg::PgCluster;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// The one time every request is applied at: leases do not expire during a case.
const NOW: i64 = 5_000_000;

/// A racing request, before it names the receipts and tokens the setup made.
#[derive(Clone, Debug)]
enum Op {
    /// Credit store order `order` to `user` (users and amounts differ, so two credits of one
    /// order by two connections collide).
    Credit { user: u8, order: u8, amount: u64 },
    /// Reverse store order `order`.
    Reverse { order: u8 },
    /// Refund setup receipt `receipt` (0 and 1 pending, 2 granted).
    Refund { receipt: u8 },
    /// Server `server` saves user 1, granting setup receipt `receipt` under the lease it holds.
    Grant { server: u8, receipt: u8 },
    /// Server `server` saves user 1, settling the clawback of setup receipt 2.
    Settle { server: u8 },
    /// Charge user 2 with charge request `request` (the same id on two connections is a retry).
    Charge { request: u8, price: u64 },
    /// Server `server` takes user 1's session (the other server's lease is then stale).
    Open { server: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..4, 0u8..2, prop_oneof![Just(100u64), Just(250)])
            .prop_map(|(user, order, amount)| Op::Credit { user, order, amount }),
        1 => (0u8..2).prop_map(|order| Op::Reverse { order }),
        2 => (0u8..3).prop_map(|receipt| Op::Refund { receipt }),
        2 => (0u8..2, 0u8..2).prop_map(|(server, receipt)| Op::Grant { server, receipt }),
        1 => (0u8..2).prop_map(|server| Op::Settle { server }),
        2 => (0u8..3, prop_oneof![Just(50u64), Just(900)])
            .prop_map(|(request, price)| Op::Charge { request, price }),
        1 => (0u8..2).prop_map(|server| Op::Open { server }),
    ]
}

fn server(n: u8) -> ServerId {
    ServerId::new(format!("s{n}")).unwrap()
}

fn charge(
    request_id: RequestId,
    user: i64,
    price: u64,
    fence: Option<LeaseFence>,
) -> ChargeRequest {
    ChargeRequest {
        request_id,
        user: UserId(user),
        product_id: ProductId(456456),
        product_name: "Gold".into(),
        price,
        test_purchase: false,
        place_id: PlaceId(1),
        channel: ProductPurchaseChannel::InExperience,
        starting_balance: 1000,
        fence,
    }
}

fn open(user: i64, server_n: u8) -> LedgerRequest {
    OpenSession {
        user: UserId(user),
        server: server(server_n),
        lease_ms: 600_000,
        starting_balance: 1000,
    }
    .into()
}

/// The setup every case starts from, and what its requests name.
struct Setup {
    requests: Vec<LedgerRequest>,
    receipts: Vec<bevy_marketplace::PurchaseId>,
}

/// Server 0 holds user 1 (token 1), who bought three receipts; the third is granted.
fn setup() -> Setup {
    let fence = LeaseFence {
        server: server(0),
        token: 1,
    };
    let charges: Vec<ChargeRequest> = (1..=3u128)
        .map(|n| {
            charge(
                RequestId(uuid::Uuid::from_u128(n)),
                1,
                80,
                Some(fence.clone()),
            )
        })
        .collect();
    let receipts: Vec<_> = charges
        .iter()
        .map(|c| c.new_receipt().purchase_id)
        .collect();
    let mut requests = vec![open(1, 0), open(2, 0)];
    requests.extend(charges.into_iter().map(LedgerRequest::from));
    requests.push(
        SaveRequest {
            user: UserId(1),
            fence,
            state: gold(100),
            granted: vec![receipts[2].clone()],
            settled: vec![],
            rejected: vec![],
            release: false,
            lease_ms: 600_000,
        }
        .into(),
    );
    Setup { requests, receipts }
}

fn gold(gold: u64) -> PlayerSnapshot {
    PlayerSnapshot(BTreeMap::from([("Gold".to_owned(), format!("({gold})"))]))
}

/// The request an op makes, given the lease tokens the model handed out so far.
fn request(op: &Op, setup: &Setup, tokens: &[i64; 2]) -> LedgerRequest {
    let save = |server_n: u8, granted: Vec<_>, settled: Vec<_>, gold_now: u64| {
        LedgerRequest::from(SaveRequest {
            user: UserId(1),
            fence: LeaseFence {
                server: server(server_n),
                token: tokens[usize::from(server_n)],
            },
            state: gold(gold_now),
            granted,
            settled,
            rejected: vec![],
            release: false,
            lease_ms: 600_000,
        })
    };
    match op {
        Op::Credit {
            user,
            order,
            amount,
        } => CreditRequest {
            user: UserId(i64::from(*user)),
            amount: *amount,
            source: "steam".into(),
            order_id: format!("o{order}"),
            starting_balance: 1000,
        }
        .into(),
        Op::Reverse { order } => ReverseCredit {
            source: "steam".into(),
            order_id: format!("o{order}"),
        }
        .into(),
        Op::Refund { receipt } => RefundRequest {
            purchase_id: setup.receipts[usize::from(*receipt)].clone(),
            reason: "chargeback".into(),
            place: None,
        }
        .into(),
        Op::Grant { server, receipt } => save(
            *server,
            vec![setup.receipts[usize::from(*receipt)].clone()],
            vec![],
            200,
        ),
        Op::Settle { server } => save(
            *server,
            vec![],
            vec![(setup.receipts[2].clone(), Clawback::Done)],
            0,
        ),
        Op::Charge { request, price } => charge(
            RequestId(uuid::Uuid::from_u128(100 + u128::from(*request))),
            2,
            *price,
            None,
        )
        .into(),
        Op::Open { server } => open(1, *server),
    }
}

/// Applies `request` in a transaction of its own; `None` if the store failed it (then it must
/// have changed nothing).
fn apply(store: &mut dyn LedgerStore, request: &LedgerRequest) -> Option<LedgerReply> {
    if store.begin().is_err() {
        store.rollback();
        return None;
    }
    match store.apply(request, NOW) {
        Ok(reply) => match store.commit() {
            Ok(()) => Some(reply),
            Err(_) => {
                store.rollback();
                None
            }
        },
        Err(_) => {
            store.rollback();
            None
        }
    }
}

fn audit(store: &mut dyn LedgerStore) -> LedgerAudit {
    store.begin().unwrap();
    let LedgerReply::Audit(mut audit) = store.apply(&Audit.into(), NOW).unwrap() else {
        panic!("an audit answers with an audit");
    };
    store.rollback();
    audit
        .receipts
        .sort_by(|a, b| a.info.purchase_id.cmp(&b.info.purchase_id));
    // Journal ids are handed out as rows are written, not as transactions commit, so concurrent
    // transactions' entries may interleave in any order: compare them as a set.
    audit.journal.sort();
    audit
}

/// The tokens a session opening handed out, by server, as the model sees them.
fn note_token(request: &LedgerRequest, reply: &LedgerReply, tokens: &mut [i64; 2]) {
    if let (
        LedgerRequest::OpenSession(open),
        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { lease_token, .. })),
    ) = (request, reply)
        && open.user == UserId(1)
    {
        let n: usize = open.server.as_str()[1..].parse().unwrap();
        tokens[n] = *lease_token;
    }
}

/// What one connection did: its requests in order, with the answers the store gave.
type Run = Vec<(Op, LedgerRequest, Option<LedgerReply>)>;

/// Searches for an order of the runs' successful requests (each run's own order kept) in which
/// the model answers as the store did and ends with `end`. Requests name tokens as the store
/// handed them out, which is fixed by the answers, so the model replays them as they were sent.
fn linearizable(setup: &Setup, runs: &[Run], end: &LedgerAudit) -> Result<(), String> {
    let steps: Vec<Vec<(&LedgerRequest, &LedgerReply)>> = runs
        .iter()
        .map(|run| {
            run.iter()
                .filter_map(|(_, request, reply)| reply.as_ref().map(|r| (request, r)))
                .collect()
        })
        .collect();
    let mut at = vec![0usize; steps.len()];
    let mut order: Vec<(&LedgerRequest, &LedgerReply)> = Vec::new();
    let total: usize = steps.iter().map(Vec::len).sum();
    let mut tried = 0u64;
    if search(setup, &steps, &mut at, &mut order, total, end, &mut tried) {
        Ok(())
    } else {
        Err(format!(
            "no serial order of the {total} successful requests gives the stores' answers and ledger ({tried} prefixes tried)\n  runs: {runs:#?}\n  store's ledger: {end:#?}"
        ))
    }
}

/// A fresh model with the setup and `prefix` applied; `false` if an answer differs.
fn replay(setup: &Setup, prefix: &[(&LedgerRequest, &LedgerReply)]) -> Option<InMemoryLedger> {
    let mut model = InMemoryLedger::default();
    for request in &setup.requests {
        apply(&mut model, request)?;
    }
    for (request, reply) in prefix {
        if apply(&mut model, request).as_ref() != Some(*reply) {
            return None;
        }
    }
    Some(model)
}

fn search<'a>(
    setup: &Setup,
    steps: &[Vec<(&'a LedgerRequest, &'a LedgerReply)>],
    at: &mut Vec<usize>,
    order: &mut Vec<(&'a LedgerRequest, &'a LedgerReply)>,
    total: usize,
    end: &LedgerAudit,
    tried: &mut u64,
) -> bool {
    *tried += 1;
    let Some(mut model) = replay(setup, order) else {
        return false;
    };
    if order.len() == total {
        return audit(&mut model) == *end;
    }
    for run in 0..steps.len() {
        let Some(&next) = steps[run].get(at[run]) else {
            continue;
        };
        order.push(next);
        at[run] += 1;
        if search(setup, steps, at, order, total, end, tried) {
            return true;
        }
        at[run] -= 1;
        order.pop();
    }
    false
}

/// Where a case races.
trait RaceStore {
    fn name(&self) -> &'static str;
    /// A fresh, empty ledger: a connection to it.
    fn fresh(&mut self) -> Box<dyn Fn() -> Box<dyn LedgerStore> + Send + Sync>;
}

struct Postgres {
    url: String,
}

impl RaceStore for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn fresh(&mut self) -> Box<dyn Fn() -> Box<dyn LedgerStore> + Send + Sync> {
        let url = self.url.clone();
        let connect = move || -> Box<dyn LedgerStore> {
            Box::new(
                PostgresLedger::connect(
                    PostgresOptions::new(url.clone()).with_clock(LeaseClock::GameServer),
                )
                .unwrap(),
            )
        };
        drop(connect());
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls).unwrap();
        client
            .batch_execute(
                "TRUNCATE accounts, player_components, receipts, balance_journal, credits, changes, sales_hours RESTART IDENTITY",
            )
            .unwrap();
        Box::new(connect)
    }
}

struct Sqlite {
    dir: tempfile::TempDir,
    case: u32,
}

impl RaceStore for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn fresh(&mut self) -> Box<dyn Fn() -> Box<dyn LedgerStore> + Send + Sync> {
        self.case += 1;
        let path = self.dir.path().join(format!("race{}.sqlite3", self.case));
        Box::new(move || Box::new(SqliteLedger::open(&path).unwrap()))
    }
}

/// Runs one case: the setup serially, then the three lists at once.
fn race(store: &mut dyn RaceStore, lists: &[Vec<Op>]) -> Result<(), String> {
    let setup = setup();
    let connect: Arc<dyn Fn() -> Box<dyn LedgerStore> + Send + Sync> = store.fresh().into();
    let mut first = connect();
    let mut tokens = [0i64; 2];
    for request in &setup.requests {
        let reply = apply(first.as_mut(), request).ok_or("the setup failed")?;
        note_token(request, &reply, &mut tokens);
    }
    // A server's token is the newest it was handed before the race; a takeover during the race
    // makes the other's stale, as it would be for a real server.
    tokens[1] = tokens[0];
    let barrier = Arc::new(Barrier::new(lists.len()));
    let threads: Vec<_> = lists
        .iter()
        .cloned()
        .map(|ops| {
            let (connect, barrier) = (connect.clone(), barrier.clone());
            let setup_receipts = setup.receipts.clone();
            std::thread::spawn(move || {
                let setup = Setup {
                    requests: Vec::new(),
                    receipts: setup_receipts,
                };
                let mut store = connect();
                barrier.wait();
                ops.into_iter()
                    .map(|op| {
                        let request = request(&op, &setup, &tokens);
                        let reply = apply(store.as_mut(), &request);
                        (op, request, reply)
                    })
                    .collect::<Run>()
            })
        })
        .collect();
    let runs: Vec<Run> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let end = audit(first.as_mut());
    let report = end.check();
    if !report.is_sound() {
        return Err(format!(
            "{}: the ledger does not add up after the race: {:?}\n  runs: {runs:#?}",
            store.name(),
            report.problems
        ));
    }
    linearizable(&setup, &runs, &end).map_err(|e| format!("{}: {e}", store.name()))
}

#[test]
fn racing_connections_end_as_some_serial_order_of_their_requests() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let stores: std::cell::RefCell<Vec<Box<dyn RaceStore>>> = std::cell::RefCell::new(vec![
        Box::new(Postgres {
            url: PgCluster::shared().create_database("races"),
        }),
        Box::new(Sqlite {
            dir: tempfile::tempdir().unwrap(),
            case: 0,
        }),
    ]);
    let lists = proptest::collection::vec(proptest::collection::vec(op(), 1..5), 3);
    let result = runner.run(&lists, |lists| {
        for store in stores.borrow_mut().iter_mut() {
            race(store.as_mut(), &lists).map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

/// The race the issue found: two servers credit one store order at the same instant for two
/// users, many times over; each time one user is credited and the other refused.
#[test]
fn two_credits_of_one_order_for_two_users_race_many_times() {
    let mut store = Postgres {
        url: PgCluster::shared().create_database("order_races"),
    };
    for _ in 0..10 {
        let lists = vec![
            vec![Op::Credit {
                user: 1,
                order: 0,
                amount: 100,
            }],
            vec![Op::Credit {
                user: 2,
                order: 0,
                amount: 100,
            }],
            vec![Op::Credit {
                user: 3,
                order: 0,
                amount: 250,
            }],
        ];
        if let Err(e) = race(&mut store, &lists) {
            panic!("{e}");
        }
    }
}
