//! The three ledger stores decide alike. Random sequences of requests from several servers and
//! players — opening sessions, charging (with the lease, with a lease lost, from outside any
//! server, retried), saving with grants, releasing, lease expiry on a controlled clock, top-ups
//! including absurd amounts — are applied to the in-memory store (the reference model) and to
//! SQLite and PostgreSQL, each both one request per transaction and a batch per transaction (the
//! way the storage worker groups them). The change feed (which players changed since a point) is
//! asked among them. Every answer and the final ledger — balances, receipts and
//! their states, the journal, persisted components, lease owners and tokens — must be identical.
//!
//! `PROPTEST_CASES=1000 cargo test --all-features --test differential` runs longer searches.

#[path = "common/pg.rs"]
mod pg;

use bevy_marketplace::ledger::{
    AdjustBalance, AdjustReply, Audit, ChargeReply, HistoryRequest, OpenSession, OpenSessionReply,
    OpenedSession, PlayerReading, ReadChanges, ReadPlayer, ReleaseSession, ReverseCredit,
    SaveReply,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use bevy_marketplace::ledger::{
    ChargeRequest, Clawback, CreditRequest, HistoryCursor, HistoryFilter, InMemoryLedger,
    LeaseClock, LeaseFence, LedgerAudit, LedgerReply, LedgerRequest, LedgerStore, PlayerSnapshot,
    PostgresLedger, PostgresOptions, RefundRequest, SalesBucket, SalesQuery, SaveRequest, ServerId,
    SqliteLedger,
};
use bevy_marketplace::{
    PlaceId, ProductId, ProductPurchaseChannel, PurchaseId, ReceiptState, RequestId, UserId,
};
use pg::PgCluster;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const USERS: u8 = 3;
const SERVERS: u8 = 3;

/// One step of a story, before it names real tokens and receipts.
#[derive(Clone, Debug)]
enum Op {
    Open {
        user: u8,
        server: u8,
        long_lease: bool,
    },
    Charge {
        user: u8,
        /// `None`: bought outside any game server.
        server: Option<u8>,
        /// Show the lease before the newest this server got (a stale holder).
        stale: bool,
        price: u64,
        /// Retry the charge made this many charges ago (same request id).
        retry: Option<u8>,
    },
    Save {
        user: u8,
        server: u8,
        stale: bool,
        gold: u8,
        /// Receipts (indices into those made so far, from the newest) to grant.
        grant: Vec<u8>,
        /// Refunds (indices as `grant`) whose clawback to settle: done when even, kept when odd.
        settle: Vec<u8>,
        /// Receipts (indices as `grant`) their handler rejected; a reason with a NUL when 3 mod 4.
        reject: Vec<u8>,
        release: bool,
    },
    /// Refund a receipt (index from the newest), maybe asking from another place, or an unknown id.
    Refund {
        back: u8,
        other_place: bool,
        unknown: bool,
    },
    /// A store top-up; a few sources and order ids, so retries and mismatches happen.
    Credit {
        user: u8,
        amount: u64,
        source: u8,
        order: u8,
    },
    /// The store reversed a top-up.
    Reverse {
        source: u8,
        order: u8,
    },
    Release {
        user: u8,
        server: u8,
        /// `Some(true)`: the current token, `Some(false)`: a stale one, `None`: any.
        token: Option<bool>,
    },
    Adjust {
        user: u8,
        delta: i64,
        /// A reason with a NUL character in it (PostgreSQL refuses those in text).
        nul_in_reason: bool,
    },
    Pending {
        user: u8,
    },
    /// A page of a player's purchase history, maybe filtered.
    History {
        user: u8,
        product: Option<bool>,
        state: Option<u8>,
        since_now: bool,
        page: u8,
        /// Start after a cursor: which receipt made so far, at the present time or 700 ms before.
        after: Option<(u8, bool)>,
    },
    /// Sales per day or hour: of all time, or from and to points back from now (SQL stores read
    /// whole hours from their totals and the parts of an hour at the edges from receipts).
    Sales {
        hourly: bool,
        window: Option<(u8, u8)>,
    },
    /// The change feed: where it is, or what changed after a point of it.
    Changes {
        since: Option<u8>,
    },
    /// Ends the batch and moves the clock.
    Advance {
        ms: i64,
    },
}

/// How far back from now a sales window's ends may lie (ms).
const BACK: [i64; 5] = [3, 61_000, 3_700_000, 7_200_000, 86_400_000];

fn op() -> impl Strategy<Value = Op> {
    let user = 0..USERS;
    let server = 0..SERVERS;
    let price = prop_oneof![Just(0u64), Just(10), Just(300), Just(5000), Just(u64::MAX)];
    let delta = prop_oneof![
        Just(100i64),
        Just(-100),
        Just(-5000),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(i64::MAX / 2 + 1),
    ];
    prop_oneof![
        3 => (user.clone(), server.clone(), any::<bool>()).prop_map(|(user, server, long_lease)| {
            Op::Open { user, server, long_lease }
        }),
        5 => (
            user.clone(),
            proptest::option::weighted(0.8, server.clone()),
            proptest::bool::weighted(0.15),
            price,
            proptest::option::weighted(0.2, 0u8..4),
        )
            .prop_map(|(user, server, stale, price, retry)| Op::Charge {
                user,
                server,
                stale,
                price,
                retry,
            }),
        4 => (
            user.clone(),
            server.clone(),
            proptest::bool::weighted(0.15),
            any::<u8>(),
            proptest::collection::vec(0u8..5, 0..3),
            proptest::collection::vec(0u8..5, 0..2),
            proptest::collection::vec(0u8..5, 0..2),
            proptest::bool::weighted(0.25),
        )
            .prop_map(|(user, server, stale, gold, grant, settle, reject, release)| Op::Save {
                user,
                server,
                stale,
                gold,
                grant,
                settle,
                reject,
                release,
            }),
        2 => (0u8..6, proptest::bool::weighted(0.1), proptest::bool::weighted(0.1)).prop_map(
            |(back, other_place, unknown)| Op::Refund { back, other_place, unknown }
        ),
        2 => (
            user.clone(),
            prop_oneof![Just(0u64), Just(100), Just(2500), Just(u64::MAX)],
            0u8..2,
            0u8..3,
        )
            .prop_map(|(user, amount, source, order)| Op::Credit { user, amount, source, order }),
        1 => (0u8..2, 0u8..3).prop_map(|(source, order)| Op::Reverse { source, order }),
        1 => (user.clone(), server.clone(), proptest::option::of(any::<bool>()))
            .prop_map(|(user, server, token)| Op::Release { user, server, token }),
        2 => (user.clone(), delta, proptest::bool::weighted(0.1)).prop_map(
            |(user, delta, nul_in_reason)| Op::Adjust {
                user,
                delta,
                nul_in_reason
            }
        ),
        1 => user.clone().prop_map(|user| Op::Pending { user }),
        1 => (
            user,
            proptest::option::of(any::<bool>()),
            proptest::option::of(0u8..4),
            proptest::bool::weighted(0.2),
            0u8..2,
            proptest::option::of((any::<u8>(), any::<bool>())),
        )
            .prop_map(|(user, product, state, since_now, page, after)| Op::History {
                user,
                product,
                state,
                since_now,
                page,
                after,
            }),
        1 => (any::<bool>(), proptest::option::of((0u8..5, 0u8..5)))
            .prop_map(|(hourly, window)| Op::Sales { hourly, window }),
        2 => proptest::option::weighted(0.8, 0u8..12).prop_map(|since| Op::Changes { since }),
        // Half an hour now and then, so that purchases and refunds fall in several hours.
        2 => prop_oneof![Just(0i64), Just(700), Just(70_000), Just(1_800_000)]
            .prop_map(|ms| Op::Advance { ms }),
    ]
}

/// A story made concrete: batches of requests, each with the time it is applied at.
#[derive(Debug, Default)]
struct Story {
    batches: Vec<(i64, Vec<LedgerRequest>)>,
    /// The model's answers, in order.
    replies: Vec<LedgerReply>,
    /// The model's ledger at the end.
    audit: LedgerAudit,
}

fn server_id(server: u8) -> ServerId {
    ServerId::new(format!("s{server}")).unwrap()
}

/// Turns ops into requests, naming tokens and receipts as the reference model handed them out,
/// and records the model's answers (one request per transaction).
fn concretize(ops: &[Op]) -> Story {
    let mut model = InMemoryLedger::default();
    let mut story = Story::default();
    let mut now = 1_000_000i64;
    let mut batch: Vec<LedgerRequest> = Vec::new();
    // Tokens each server was given, per user (newest last).
    let mut tokens: HashMap<(u8, u8), Vec<i64>> = HashMap::new();
    let mut receipts: Vec<PurchaseId> = Vec::new();
    let mut charges: Vec<(RequestId, UserId)> = Vec::new();
    let mut next_request = 0u128;
    let fence = |tokens: &HashMap<(u8, u8), Vec<i64>>, user: u8, server: u8, stale: bool| {
        let given = tokens.get(&(user, server)).map_or(&[][..], Vec::as_slice);
        let token = if stale {
            given.iter().rev().nth(1).copied().unwrap_or(0)
        } else {
            given.last().copied().unwrap_or(0)
        };
        LeaseFence {
            server: server_id(server),
            token,
        }
    };
    for op in ops {
        let request = match op {
            Op::Advance { ms } => {
                if !batch.is_empty() {
                    story.batches.push((now, std::mem::take(&mut batch)));
                }
                now += ms;
                continue;
            }
            Op::Open {
                user,
                server,
                long_lease,
            } => LedgerRequest::OpenSession(OpenSession {
                user: UserId(i64::from(*user)),
                server: server_id(*server),
                lease_ms: if *long_lease { 60_000 } else { 1_000 },
                starting_balance: 1000,
            }),
            Op::Charge {
                user,
                server,
                stale,
                price,
                retry,
            } => {
                let retried = retry.and_then(|back| charges.iter().rev().nth(back.into()));
                // A retry may even name another buyer: the first receipt still stands.
                let (request_id, buyer) = match retried {
                    Some(&(id, _)) => (id, UserId(i64::from(*user))),
                    None => {
                        next_request += 1;
                        (
                            RequestId(uuid::Uuid::from_u128(next_request)),
                            UserId(i64::from(*user)),
                        )
                    }
                };
                if retried.is_none() {
                    charges.push((request_id, buyer));
                }
                LedgerRequest::Charge(ChargeRequest {
                    request_id,
                    user: buyer,
                    // Two products, so history filters and sales rows have something to tell apart.
                    product_id: ProductId(if *price == 10 { 111 } else { 456456 }),
                    product_name: if *price == 10 { "Gold pack" } else { "Potion" }.into(),
                    price: *price,
                    test_purchase: *price == 0,
                    place_id: PlaceId(1),
                    channel: if server.is_some() {
                        ProductPurchaseChannel::InExperience
                    } else {
                        ProductPurchaseChannel::ExperienceDetailsPage
                    },
                    starting_balance: 1000,
                    fence: server.map(|s| fence(&tokens, buyer.0 as u8, s, *stale)),
                })
            }
            Op::Save {
                user,
                server,
                stale,
                gold,
                grant,
                settle,
                reject,
                release,
            } => LedgerRequest::Save(SaveRequest {
                user: UserId(i64::from(*user)),
                fence: fence(&tokens, *user, *server, *stale),
                state: PlayerSnapshot(BTreeMap::from([
                    ("Gold".to_owned(), format!("({gold})")),
                    (format!("Seen{}", gold % 3), "()".to_owned()),
                ])),
                granted: grant
                    .iter()
                    .filter_map(|back| receipts.iter().rev().nth((*back).into()).cloned())
                    .collect(),
                settled: settle
                    .iter()
                    .filter_map(|back| {
                        let id = receipts.iter().rev().nth((*back).into())?.clone();
                        let outcome = if back % 2 == 0 {
                            Clawback::Done
                        } else {
                            Clawback::Kept
                        };
                        Some((id, outcome))
                    })
                    .collect(),
                rejected: reject
                    .iter()
                    .filter_map(|back| {
                        let id = receipts.iter().rev().nth((*back).into())?.clone();
                        let reason = if back % 4 == 3 {
                            "sold\0out"
                        } else {
                            "sold out"
                        };
                        Some((id, reason.to_owned()))
                    })
                    .collect(),
                release: *release,
                lease_ms: 60_000,
            }),
            Op::Release {
                user,
                server,
                token,
            } => LedgerRequest::ReleaseSession(ReleaseSession {
                user: UserId(i64::from(*user)),
                server: server_id(*server),
                token: token.map(|current| fence(&tokens, *user, *server, !current).token),
            }),
            Op::Adjust {
                user,
                delta,
                nul_in_reason,
            } => LedgerRequest::AdjustBalance(AdjustBalance {
                user: UserId(i64::from(*user)),
                delta: *delta,
                reason: if *nul_in_reason {
                    "gift\0card".into()
                } else {
                    "top-up".into()
                },
                starting_balance: 1000,
            }),
            Op::Refund {
                back,
                other_place,
                unknown,
            } => LedgerRequest::Refund(RefundRequest {
                purchase_id: match receipts.iter().rev().nth((*back).into()) {
                    Some(id) if !unknown => id.clone(),
                    _ => PurchaseId("no-such-receipt".into()),
                },
                reason: "chargeback".into(),
                place: Some(PlaceId(if *other_place { 2 } else { 1 })),
            }),
            Op::Credit {
                user,
                amount,
                source,
                order,
            } => LedgerRequest::Credit(CreditRequest {
                user: UserId(i64::from(*user)),
                amount: *amount,
                source: ["steam", "web\0shop"][usize::from(*source)].to_owned(),
                order_id: format!("order-{order}"),
                starting_balance: 1000,
            }),
            Op::Reverse { source, order } => LedgerRequest::ReverseCredit(ReverseCredit {
                source: ["steam", "web\0shop"][usize::from(*source)].to_owned(),
                order_id: format!("order-{order}"),
            }),
            Op::Pending { user } => LedgerRequest::ReadPlayer(ReadPlayer {
                user: UserId(i64::from(*user)),
            }),
            Op::History {
                user,
                product,
                state,
                since_now,
                page,
                after,
            } => LedgerRequest::History(HistoryRequest {
                user: UserId(i64::from(*user)),
                filter: HistoryFilter {
                    product: product.map(|p| ProductId(if p { 111 } else { 456456 })),
                    state: state.map(|s| {
                        [
                            ReceiptState::Pending,
                            ReceiptState::Granted,
                            ReceiptState::Refunded,
                            ReceiptState::Rejected,
                        ][usize::from(s)]
                    }),
                    from_ms: since_now.then_some(now),
                    to_ms: None,
                },
                page: u32::from(*page),
                after: after.map(|(pick, earlier)| HistoryCursor {
                    purchased_at_ms: if earlier { now - 700 } else { now },
                    purchase_id: if receipts.is_empty() {
                        PurchaseId(String::new())
                    } else {
                        receipts[usize::from(pick) % receipts.len()].clone()
                    },
                }),
            }),
            Op::Changes { since } => LedgerRequest::ReadChanges(ReadChanges {
                since: since.map(i64::from),
            }),
            Op::Sales { hourly, window } => LedgerRequest::Sales(SalesQuery {
                // Points back from now: a few ms, a minute, an hour and a bit, two hours, a day.
                from_ms: window.map_or(0, |(a, _)| now - BACK[usize::from(a)]),
                to_ms: window.map_or(i64::MAX, |(_, b)| now + 1 - BACK[usize::from(b)]),
                bucket: if *hourly {
                    SalesBucket::Hour
                } else {
                    SalesBucket::Day
                },
            }),
        };
        model.begin().unwrap();
        let reply = model.apply(&request, now).unwrap();
        model.commit().unwrap();
        match (&request, &reply) {
            (
                LedgerRequest::OpenSession(OpenSession { user, server, .. }),
                LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession {
                    lease_token,
                    ..
                })),
            ) => {
                let server: u8 = server.as_str()[1..].parse().unwrap();
                tokens
                    .entry((user.0 as u8, server))
                    .or_default()
                    .push(*lease_token);
            }
            (
                _,
                LedgerReply::Charge(ChargeReply::Charged {
                    receipt,
                    replayed: false,
                    ..
                }),
            ) => receipts.push(receipt.purchase_id.clone()),
            _ => {}
        }
        story.replies.push(reply);
        batch.push(request);
    }
    if !batch.is_empty() {
        story.batches.push((now, batch));
    }
    story.audit = model.audit();
    story
}

/// How a store gets the story: a transaction per request, or per batch through its batch path.
#[derive(Clone, Copy, Debug)]
enum Grouping {
    OneByOne,
    Batched,
}

fn run(store: &mut dyn LedgerStore, story: &Story, grouping: Grouping) -> Vec<LedgerReply> {
    let mut replies = Vec::new();
    for (now, batch) in &story.batches {
        match grouping {
            Grouping::OneByOne => {
                for request in batch {
                    store.begin().unwrap();
                    replies.push(store.apply(request, *now).unwrap());
                    store.commit().unwrap();
                }
            }
            Grouping::Batched => {
                store.begin().unwrap();
                match store.apply_batch(batch, *now) {
                    Some(result) => replies.extend(result.unwrap()),
                    None => {
                        for request in batch {
                            replies.push(store.apply(request, *now).unwrap());
                        }
                    }
                }
                store.commit().unwrap();
            }
        }
    }
    replies
}

/// An audit in a store-independent order.
fn normalized(mut audit: LedgerAudit) -> LedgerAudit {
    audit
        .receipts
        .sort_by(|a, b| a.info.purchase_id.cmp(&b.info.purchase_id));
    audit
}

/// Fresh stores for each case, reused across cases (emptied, not re-created).
struct Stores {
    dir: tempfile::TempDir,
    pg_urls: [String; 2],
    case: u32,
}

impl Stores {
    fn new() -> Self {
        let cluster = PgCluster::shared();
        Self {
            dir: tempfile::tempdir().unwrap(),
            pg_urls: [
                cluster.create_database("diff_one"),
                cluster.create_database("diff_batch"),
            ],
            case: 0,
        }
    }

    fn sqlite(&mut self) -> SqliteLedger {
        self.case += 1;
        SqliteLedger::open(&self.dir.path().join(format!("case{}.sqlite3", self.case))).unwrap()
    }

    fn postgres(&self, which: usize) -> PostgresLedger {
        let url = &self.pg_urls[which];
        let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
        let mut store = PostgresLedger::connect(
            PostgresOptions::new(url.clone()).with_clock(LeaseClock::GameServer),
        )
        .unwrap();
        client
            .batch_execute(
                "TRUNCATE accounts, player_components, receipts, balance_journal, credits, changes, sales_hours RESTART IDENTITY",
            )
            .unwrap();
        assert!(store.audit().unwrap().accounts.is_empty());
        store
    }
}

/// Applies the story to every store both ways; the first difference from the model, if any.
fn differences(stores: &mut Stores, ops: &[Op]) -> Result<(), String> {
    let story = concretize(ops);
    let expected = normalized(story.audit.clone());
    let mut subjects: Vec<(String, Box<dyn LedgerStore>, Grouping)> = vec![
        (
            "memory, batched".into(),
            Box::new(InMemoryLedger::default()),
            Grouping::Batched,
        ),
        (
            "sqlite, one by one".into(),
            Box::new(stores.sqlite()),
            Grouping::OneByOne,
        ),
        (
            "sqlite, batched".into(),
            Box::new(stores.sqlite()),
            Grouping::Batched,
        ),
        (
            "postgres, one by one".into(),
            Box::new(stores.postgres(0)),
            Grouping::OneByOne,
        ),
        (
            "postgres, batched".into(),
            Box::new(stores.postgres(1)),
            Grouping::Batched,
        ),
    ];
    for (name, store, grouping) in &mut subjects {
        let replies = run(store.as_mut(), &story, *grouping);
        for (i, (got, want)) in replies.iter().zip(&story.replies).enumerate() {
            if got != want {
                return Err(format!(
                    "{name}: answer {i} differs\n  request: {:?}\n  store:   {got:?}\n  model:   {want:?}",
                    story.batches.iter().flat_map(|(_, b)| b).nth(i).unwrap()
                ));
            }
        }
        let audit_request = store.as_mut();
        audit_request.begin().unwrap();
        let LedgerReply::Audit(audit) = audit_request
            .apply(&LedgerRequest::Audit(Audit), 0)
            .unwrap()
        else {
            unreachable!()
        };
        audit_request.commit().unwrap();
        let audit = normalized(audit);
        let report = audit.check();
        if !report.is_sound() {
            return Err(format!(
                "{name}: the ledger does not add up: {:?}",
                report.problems
            ));
        }
        if audit != expected {
            return Err(format!(
                "{name}: the final ledger differs\n  store: {audit:#?}\n  model: {expected:#?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn every_store_answers_and_ends_like_the_model_batched_or_not() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let stores = RefCell::new(Stores::new());
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        differences(&mut stores.borrow_mut(), &ops).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

// ------------------------------------------------------------ named stories

/// Checks that every store answers and ends like the model; returns the model's answers and
/// final ledger for the test to judge.
fn check(ops: &[Op]) -> (Vec<LedgerReply>, LedgerAudit) {
    let mut stores = Stores::new();
    if let Err(difference) = differences(&mut stores, ops) {
        panic!("{difference}");
    }
    let story = concretize(ops);
    (story.replies, story.audit)
}

fn opened_and_charged(price: u64) -> Vec<Op> {
    vec![
        Op::Open {
            user: 0,
            server: 0,
            long_lease: true,
        },
        Op::Charge {
            user: 0,
            server: Some(0),
            stale: false,
            price,
            retry: None,
        },
    ]
}

fn rejecting_save(grant: Vec<u8>) -> Op {
    rejecting_save_as(false, grant)
}

fn rejecting_save_as(stale: bool, grant: Vec<u8>) -> Op {
    Op::Save {
        user: 0,
        server: 0,
        stale,
        gold: 5,
        grant,
        settle: vec![],
        reject: vec![0],
        release: false,
    }
}

/// A rejection, its save sent again (its answer lost) and an admin's refund, in one batch (one
/// PostgreSQL transaction reading its rows up front): the currency goes back once.
#[test]
fn a_rejection_gives_back_once_when_retried_or_refunded_in_one_batch() {
    let mut ops = opened_and_charged(300);
    ops.extend([
        rejecting_save(vec![]),
        rejecting_save(vec![]),
        Op::Refund {
            back: 0,
            other_place: false,
            unknown: false,
        },
        Op::Pending { user: 0 },
    ]);
    let (replies, audit) = check(&ops);
    for reply in &replies[2..4] {
        assert!(
            matches!(reply, LedgerReply::Save(SaveReply::Saved { rejected, balance: 1000, .. }) if rejected.len() == 1),
            "{reply:?}"
        );
    }
    assert!(
        matches!(&replies[4], LedgerReply::Refund(Err(_))),
        "{:?}",
        replies[4]
    );
    assert!(
        matches!(&replies[5], LedgerReply::ReadPlayer(PlayerReading { pending, .. }) if pending.is_empty()),
        "a rejected receipt is never delivered again"
    );
    assert_eq!(audit.accounts[&UserId(0)].0, 1000);
    assert_eq!(audit.receipts[0].state, ReceiptState::Rejected);
    let report = audit.check();
    assert!(report.is_sound(), "{:?}", report.problems);
}

/// A refund that commits before the rejection: the rejection gives nothing back again.
#[test]
fn a_refund_before_the_rejection_wins() {
    let mut ops = opened_and_charged(300);
    ops.extend([
        Op::Refund {
            back: 0,
            other_place: false,
            unknown: false,
        },
        rejecting_save(vec![]),
    ]);
    let (replies, audit) = check(&ops);
    assert!(
        matches!(&replies[3], LedgerReply::Save(SaveReply::Saved { rejected, balance: 1000, .. }) if rejected.is_empty()),
        "{:?}",
        replies[3]
    );
    assert_eq!(audit.receipts[0].state, ReceiptState::Refunded);
    assert_eq!(audit.accounts[&UserId(0)].0, 1000);
}

/// One save that both grants and rejects a receipt grants it; a stale server's rejection writes
/// nothing.
#[test]
fn a_grant_wins_over_a_rejection_and_a_stale_server_cannot_reject() {
    let mut ops = opened_and_charged(300);
    ops.push(rejecting_save_as(true, vec![]));
    ops.push(rejecting_save(vec![0]));
    let (replies, audit) = check(&ops);
    assert!(
        matches!(&replies[2], LedgerReply::Save(SaveReply::LeaseLost { .. })),
        "{:?}",
        replies[2]
    );
    assert!(
        matches!(&replies[3], LedgerReply::Save(SaveReply::Saved { newly_granted, rejected, balance: 700, .. }) if newly_granted.len() == 1 && rejected.is_empty()),
        "{:?}",
        replies[3]
    );
    assert_eq!(audit.receipts[0].state, ReceiptState::Granted);
}

/// A save that grants a receipt and a re-read of pending receipts in one batch: the re-read must
/// not list the receipt again (the plugin would run its handler a second time).
#[test]
fn a_grant_and_a_reread_in_one_batch() {
    let (replies, _) = check(&[
        Op::Open {
            user: 0,
            server: 0,
            long_lease: true,
        },
        Op::Charge {
            user: 0,
            server: Some(0),
            stale: false,
            price: 10,
            retry: None,
        },
        Op::Advance { ms: 0 },
        Op::Save {
            user: 0,
            server: 0,
            stale: false,
            gold: 100,
            grant: vec![0],
            settle: vec![],
            reject: vec![],
            release: false,
        },
        Op::Pending { user: 0 },
    ]);
    assert!(
        matches!(&replies[2], LedgerReply::Save(SaveReply::Saved { newly_granted, .. }) if newly_granted.len() == 1)
    );
    assert!(
        matches!(&replies[3], LedgerReply::ReadPlayer(PlayerReading { pending, .. }) if pending.is_empty()),
        "the granted receipt is not pending"
    );
}

/// A final save and a release of the same player in one batch: the save lands first.
#[test]
fn a_final_save_and_a_release_in_one_batch() {
    let (replies, audit) = check(&[
        Op::Open {
            user: 1,
            server: 0,
            long_lease: true,
        },
        Op::Advance { ms: 0 },
        Op::Save {
            user: 1,
            server: 0,
            stale: false,
            gold: 7,
            grant: vec![],
            settle: vec![],
            reject: vec![],
            release: true,
        },
        Op::Release {
            user: 1,
            server: 0,
            token: None,
        },
    ]);
    assert_eq!(
        replies[1],
        LedgerReply::Save(SaveReply::Saved {
            newly_granted: vec![],
            newly_settled: vec![],
            rejected: vec![],
            balance: 1000,
        }),
        "the final save lands, not LeaseLost"
    );
    assert_eq!(audit.accounts[&UserId(1)].1.0["Gold"], "(7)");
}

/// A save carries every persisted component the player has: one the player no longer has is
/// gone from the ledger, the others are written over, on every store, in one batch or apart.
#[test]
fn a_save_drops_the_components_the_player_no_longer_has() {
    let save = |gold| Op::Save {
        user: 1,
        server: 0,
        stale: false,
        gold,
        grant: vec![],
        settle: vec![],
        reject: vec![],
        release: false,
    };
    // Each save carries `Gold` and `Seen{gold % 3}`: the second save's `Seen2` replaces `Seen1`.
    let (_, audit) = check(&[
        Op::Open {
            user: 1,
            server: 0,
            long_lease: true,
        },
        Op::Advance { ms: 0 },
        save(7),
        save(7),
        Op::Advance { ms: 0 },
        save(8),
    ]);
    let names: Vec<&str> = audit.accounts[&UserId(1)]
        .1
        .0
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["Gold", "Seen2"], "Seen1 is gone");
    assert_eq!(audit.accounts[&UserId(1)].1.0["Gold"], "(8)");
}

/// A top-up past the largest balance, and one whose reason holds a NUL character, in a batch with
/// other players' charges and saves: each is refused alone, and the others commit.
#[test]
fn an_absurd_top_up_fails_alone() {
    let (replies, audit) = check(&[
        Op::Open {
            user: 0,
            server: 0,
            long_lease: true,
        },
        Op::Open {
            user: 1,
            server: 0,
            long_lease: true,
        },
        Op::Advance { ms: 0 },
        Op::Charge {
            user: 0,
            server: Some(0),
            stale: false,
            price: 10,
            retry: None,
        },
        Op::Adjust {
            user: 1,
            delta: i64::MAX,
            nul_in_reason: false,
        },
        Op::Adjust {
            user: 1,
            delta: 5,
            nul_in_reason: true,
        },
        Op::Save {
            user: 0,
            server: 0,
            stale: false,
            gold: 1,
            grant: vec![],
            settle: vec![],
            reject: vec![],
            release: false,
        },
    ]);
    assert!(matches!(
        replies[2],
        LedgerReply::Charge(ChargeReply::Charged { .. })
    ));
    assert_eq!(
        replies[3],
        LedgerReply::AdjustBalance(AdjustReply::TooHigh { balance: 1000 })
    );
    assert!(
        matches!(
            &replies[4],
            LedgerReply::AdjustBalance(AdjustReply::InvalidText(invalid)) if invalid.text == "gift\0card"
        ),
        "a reason no store can keep as written is refused, not changed: {:?}",
        replies[4]
    );
    assert!(matches!(
        replies[5],
        LedgerReply::Save(SaveReply::Saved { .. })
    ));
    assert_eq!(audit.accounts[&UserId(0)].0, 990, "the others committed");
    assert_eq!(
        audit.accounts[&UserId(1)].0,
        1000,
        "the absurd top-up and the refused one changed nothing"
    );
}

/// A retried charge from outside any server, first seen as a replay for a user who has no
/// account: no account appears.
#[test]
fn a_retry_under_another_buyer_makes_no_account() {
    let (_, audit) = check(&[
        Op::Charge {
            user: 0,
            server: None,
            stale: false,
            price: 10,
            retry: None,
        },
        Op::Advance { ms: 0 },
        Op::Charge {
            user: 2,
            server: None,
            stale: false,
            price: 10,
            retry: Some(0),
        },
    ]);
    assert!(!audit.accounts.contains_key(&UserId(2)));
}

/// A server whose lease ran out and was taken by another cannot charge the player or save them.
#[test]
fn a_server_that_lost_the_lease_takes_no_money() {
    let (replies, audit) = check(&[
        Op::Open {
            user: 0,
            server: 0,
            long_lease: false,
        },
        Op::Advance { ms: 2000 },
        Op::Open {
            user: 0,
            server: 1,
            long_lease: true,
        },
        Op::Advance { ms: 0 },
        Op::Charge {
            user: 0,
            server: Some(0),
            stale: false,
            price: 300,
            retry: None,
        },
        Op::Save {
            user: 0,
            server: 0,
            stale: false,
            gold: 9,
            grant: vec![],
            settle: vec![],
            reject: vec![],
            release: false,
        },
    ]);
    let owner = Some("s1".into());
    let lost = LedgerReply::Charge(ChargeReply::LeaseLost {
        owner: owner.clone(),
    });
    assert_eq!(replies[2], lost, "no charge without the lease");
    assert_eq!(
        replies[3],
        LedgerReply::Save(SaveReply::LeaseLost { owner }),
        "no save without the lease"
    );
    assert_eq!(audit.accounts[&UserId(0)].0, 1000, "no money taken");
    assert!(audit.receipts.is_empty());
    assert!(
        audit
            .journal
            .iter()
            .all(|e| e.kind == bevy_marketplace::ledger::JournalKind::StartingBalance),
        "no debit: {:?}",
        audit.journal
    );
}

/// A process restarted under the same server id takes the lease anew; the old process, still
/// running with the old token, can neither charge nor save.
#[test]
fn a_stale_process_with_the_same_server_id_cannot_write() {
    let (replies, audit) = check(&[
        Op::Open {
            user: 0,
            server: 0,
            long_lease: true,
        },
        Op::Open {
            user: 0,
            server: 0,
            long_lease: true,
        },
        Op::Advance { ms: 0 },
        Op::Charge {
            user: 0,
            server: Some(0),
            stale: true,
            price: 300,
            retry: None,
        },
        Op::Save {
            user: 0,
            server: 0,
            stale: true,
            gold: 9,
            grant: vec![],
            settle: vec![],
            reject: vec![],
            release: true,
        },
        Op::Charge {
            user: 0,
            server: Some(0),
            stale: false,
            price: 300,
            retry: None,
        },
    ]);
    assert!(matches!(
        &replies[1],
        LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession {
            lease_token: 2,
            ..
        }))
    ));
    let owner = Some("s0".into());
    let lost = LedgerReply::Charge(ChargeReply::LeaseLost {
        owner: owner.clone(),
    });
    assert_eq!(replies[2], lost);
    assert_eq!(
        replies[3],
        LedgerReply::Save(SaveReply::LeaseLost { owner })
    );
    assert!(matches!(
        replies[4],
        LedgerReply::Charge(ChargeReply::Charged { balance: 700, .. })
    ));
    assert_eq!(
        audit.leases[&UserId(0)].owner.as_deref(),
        Some("s0"),
        "not released"
    );
    assert_eq!(audit.accounts[&UserId(0)].1, PlayerSnapshot::default());
}

/// Found by the search: two receipts made at the same moment (a retried request id made the second
/// one's id sort first) are listed oldest first by time and then id in every store, so a player
/// sees their pending receipts in the same order wherever they load.
#[test]
fn receipts_made_at_the_same_moment_are_listed_in_one_order_everywhere() {
    let charge = |user, server, retry| Op::Charge {
        user,
        server,
        stale: false,
        price: 0,
        retry,
    };
    let (replies, _) = check(&[
        Op::Open {
            user: 1,
            server: 1,
            long_lease: false,
        },
        charge(2, Some(0), None),
        charge(0, None, None),
        charge(1, None, None),
        charge(0, None, None),
        charge(1, None, Some(3)),
        Op::Save {
            user: 1,
            server: 1,
            stale: false,
            gold: 0,
            grant: vec![],
            settle: vec![],
            reject: vec![],
            release: true,
        },
        Op::Open {
            user: 1,
            server: 0,
            long_lease: false,
        },
    ]);
    let LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession { pending, .. })) =
        &replies[7]
    else {
        panic!("{:?}", replies[7]);
    };
    let ids: Vec<&str> = pending.iter().map(|r| r.purchase_id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids, sorted);
}
