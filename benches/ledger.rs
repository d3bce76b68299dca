//! Ledger commit batches: what one purchase costs the storage worker — a transaction of `n`
//! charges, then a transaction of `n` saves that grant them — on SQLite (WAL, full sync) and in
//! memory. `n = 1` is one transaction per request; larger `n` is group commit.
//!
//! ```sh
//! cargo bench --bench ledger
//! ```

use bevy_marketplace::ledger::{ChargeReply, OpenSession, OpenSessionReply, OpenedSession};
use bevy_marketplace::ledger::{
    ChargeRequest, InMemoryLedger, LeaseFence, LedgerReply, LedgerRequest, LedgerStore,
    PlayerSnapshot, SaveRequest, ServerId, SqliteLedger,
};
use bevy_marketplace::{PlaceId, ProductId, ProductPurchaseChannel, RequestId, UserId};
use divan::counter::ItemsCount;
use divan::{Bencher, black_box};

const BATCHES: [usize; 4] = [1, 16, 256, 4096];

fn main() {
    divan::main();
}

/// `n` players with open sessions on `store`, owned by `server`: their leases.
fn open_players(store: &mut dyn LedgerStore, server: &ServerId, n: usize) -> Vec<LeaseFence> {
    store.begin().unwrap();
    let mut fences = Vec::with_capacity(n);
    for u in 0..n as i64 {
        let reply = store
            .apply(
                &LedgerRequest::OpenSession(OpenSession {
                    user: UserId(u),
                    server: server.clone(),
                    lease_ms: 3_600_000,
                    starting_balance: 1 << 40,
                }),
                0,
            )
            .unwrap();
        let LedgerReply::OpenSession(OpenSessionReply::Opened(OpenedSession {
            lease_token, ..
        })) = reply
        else {
            panic!("session refused: {reply:?}");
        };
        fences.push(LeaseFence {
            server: server.clone(),
            token: lease_token,
        });
    }
    store.commit().unwrap();
    fences
}

/// One purchase per player: a transaction of charges, then one of saves granting them.
fn purchase_round(store: &mut dyn LedgerStore, fences: &[LeaseFence], round: u64) {
    let n = fences.len();
    store.begin().unwrap();
    let mut granted = Vec::with_capacity(n);
    for u in 0..n as i64 {
        let reply = store
            .apply(
                &LedgerRequest::Charge(ChargeRequest {
                    request_id: RequestId::new(),
                    user: UserId(u),
                    product_id: ProductId(456456),
                    product_name: "test product".into(),
                    price: 80,
                    test_purchase: false,
                    place_id: PlaceId(1),
                    channel: ProductPurchaseChannel::InExperience,
                    starting_balance: 1 << 40,
                    fence: Some(fences[u as usize].clone()),
                }),
                0,
            )
            .unwrap();
        let LedgerReply::Charge(ChargeReply::Charged { receipt, .. }) = reply else {
            panic!("charge refused: {reply:?}");
        };
        granted.push(receipt.purchase_id);
    }
    store.commit().unwrap();
    store.begin().unwrap();
    for (u, purchase) in granted.into_iter().enumerate() {
        let state = PlayerSnapshot([("Gold".to_owned(), format!("({})", 100 * round))].into());
        let reply = store
            .apply(
                &LedgerRequest::Save(SaveRequest {
                    user: UserId(u as i64),
                    fence: fences[u].clone(),
                    state,
                    granted: vec![purchase],
                    settled: vec![],
                    rejected: vec![],
                    release: false,
                    lease_ms: 3_600_000,
                }),
                0,
            )
            .unwrap();
        black_box(reply);
    }
    store.commit().unwrap();
}

fn bench_store(bencher: Bencher, mut store: Box<dyn LedgerStore>, n: usize) {
    let server = ServerId::random();
    let fences = open_players(store.as_mut(), &server, n);
    let mut round = 0;
    bencher.counter(ItemsCount::new(n)).bench_local(|| {
        round += 1;
        purchase_round(store.as_mut(), &fences, round);
    });
}

/// Receipts charged and granted on SQLite with `synchronous = FULL`, `n` per transaction.
#[divan::bench(args = BATCHES, sample_count = 20, sample_size = 1)]
fn sqlite_purchases(bencher: Bencher, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteLedger::open(&dir.path().join("bench.sqlite3")).unwrap();
    bench_store(bencher, Box::new(store), n);
}

/// The same on the in-memory ledger: the cost of the bookkeeping without storage.
#[divan::bench(args = BATCHES, sample_count = 20, sample_size = 1)]
fn memory_purchases(bencher: Bencher, n: usize) {
    bench_store(bencher, Box::new(InMemoryLedger::default()), n);
}
