//! A nemesis for the PostgreSQL ledger. Three game-server processes share one database, each
//! through a loopback proxy of its own; players hop between them while buying non-stop. A nemesis
//! SIGKILLs servers (and restarts them under the same server id), SIGSTOPs and resumes them, and
//! stalls or cuts a server's connection to the database. The servers run with the plugin's default
//! settings — five-minute leases, 30 s autosave, 1–60 s retries, 8 s database deadlines. Their
//! Gold handler rejects one receipt in [`REJECT_ONE_IN`] ("out of stock"), picked by a hash of its
//! purchase id so that every server and redelivery agrees, after adding the Gold (which the
//! rejection must roll back).
//!
//! Meanwhile an admin process (the `marketplace` tool, on its own connection) refunds purchases,
//! pending, granted and rejected, and credits, credits again and reverses store top-ups, some
//! orders for two players at once.
//!
//! Afterwards every player rejoins, and the checker reads the database: no receipt granted twice,
//! no debit without its receipt, every balance the starting balance plus its journal, every
//! player's persisted Gold the sum of the products granted to them less those taken back, every
//! receipt granted, rejected, or refunded and settled, every store order credited once to one
//! user. A picked receipt ends rejected (or refunded before its rejection, giving nothing back
//! twice), is never granted nor reported granted, is reported rejected at most once, and has one
//! refund credit; no other receipt is rejected.
//!
//! ```sh
//! cargo test --all-features --test nemesis -- --nocapture   # prints the counts
//! ```

mod common;
#[path = "common/pg.rs"]
mod pg;
#[path = "common/proxy.rs"]
mod proxy;
#[path = "common/race.rs"]
mod race;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{GOLD_100, GOLD_1000};
use pg::PgCluster;
use proxy::Proxy;
use race::{
    Observed, REJECTION, START_BALANCE, Server, await_all_granted, pending_users, quit_all,
    rejects, signal, spawn_server,
};

#[test]
#[ignore = "a server process of the nemesis test; run by it"]
fn child_process() {
    race::run_child_from_env();
}

const SERVERS: usize = 3;
const PLAYERS: i64 = 24;
/// The servers' Gold handler rejects one receipt in this many (see [`race::rejects`]).
const REJECT_ONE_IN: u64 = 8;

/// The environment of every server: rejections on.
fn server_env() -> [(&'static str, String); 1] {
    [("RACE_REJECT_ONE_IN", REJECT_ONE_IN.to_string())]
}

/// What the nemesis did to a server, and until when.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trouble {
    None,
    Stopped(Instant),
    Stalled(Instant),
    Cut(Instant),
}

struct Nemesis {
    rng: u64,
    kills: u32,
    stops: u32,
    stalls: u32,
    cuts: u32,
    hops: u32,
}

impl Nemesis {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn between(&mut self, from_ms: u64, to_ms: u64) -> Duration {
        Duration::from_millis(from_ms + self.next() % (to_ms - from_ms))
    }
}

/// Waits until server `index` says READY.
fn await_ready(seen: &mut Observed, events: &mpsc::Receiver<race::Event>, index: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.ready.contains(&index) {
        assert!(
            Instant::now() < deadline,
            "server-{index} did not open the ledger"
        );
        seen.pump(events, Duration::from_millis(50));
    }
}

fn sql(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// What the admin process did.
#[derive(Debug, Default)]
struct Admin {
    refunded: u32,
    refund_refused: u32,
    credited: u32,
    credit_refused: u32,
    reversed: u32,
    failed: u32,
    /// Refunds asked for a receipt already rejected: each must be refused.
    rejected_refused: u32,
    /// Refunds that went through for a receipt already rejected: must stay 0.
    rejected_refunded: u32,
}

/// Until `until`: the `marketplace` tool refunds random purchases (some of them pending ones
/// that their handler will reject, racing the rejection), credits store orders (few order ids,
/// so some are credited again, some for another player, which must be refused) and reverses
/// some, on its own connection to the database.
fn admin_process(url: &str, until: Instant) -> Admin {
    let mut admin = Admin::default();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let tool = |args: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_marketplace"))
            .arg("--postgres")
            .arg(url)
            .args(args)
            .output()
            .map(|out| out.status.code())
            .ok()
            .flatten()
    };
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(150 + next() % 300));
        // A rejection is final: a receipt read as rejected stays so.
        let mut was_rejected = false;
        let args: Vec<String> = match next() % 5 {
            kind @ (0 | 1) => {
                let ids: Vec<(String, String)> = sql(url)
                    .query("SELECT purchase_id, state FROM receipts", &[])
                    .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
                    .unwrap_or_default();
                // Half the time a pending receipt its handler will reject, when there is one:
                // the refund races the rejection (which then gives nothing back).
                let racing: Vec<&(String, String)> = ids
                    .iter()
                    .filter(|(id, state)| state == "pending" && rejects(id, REJECT_ONE_IN))
                    .collect();
                let (id, state) = if kind == 1 && !racing.is_empty() {
                    racing[next() as usize % racing.len()].clone()
                } else if !ids.is_empty() {
                    ids[next() as usize % ids.len()].clone()
                } else {
                    continue;
                };
                was_rejected = state == "rejected";
                vec!["refund".into(), id, "--reason".into(), "nemesis".into()]
            }
            2 | 3 => {
                let user = next() % PLAYERS as u64 + 1;
                vec![
                    "credit".into(),
                    user.to_string(),
                    "50".into(),
                    "--source".into(),
                    "nemesis".into(),
                    "--order-id".into(),
                    format!("o{}", next() % 12),
                    "--starting-balance".into(),
                    START_BALANCE.to_string(),
                ]
            }
            _ => vec![
                "reverse-credit".into(),
                "--source".into(),
                "nemesis".into(),
                "--order-id".into(),
                format!("o{}", next() % 12),
            ],
        };
        let code = tool(&args);
        match (args[0].as_str(), code) {
            ("refund", Some(0)) if was_rejected => admin.rejected_refunded += 1,
            ("refund", Some(2)) if was_rejected => admin.rejected_refused += 1,
            ("refund", Some(0)) => admin.refunded += 1,
            ("refund", Some(2)) => admin.refund_refused += 1,
            ("credit", Some(0)) => admin.credited += 1,
            ("credit", Some(2)) => admin.credit_refused += 1,
            ("reverse-credit", Some(0 | 2)) => admin.reversed += 1,
            _ => admin.failed += 1,
        }
    }
    admin
}

#[test]
fn three_servers_under_a_nemesis_grant_every_purchase_exactly_once() {
    let started = Instant::now();
    let cluster = PgCluster::shared();
    let url = cluster.create_database("nemesis");
    let dbname = url.rsplit("dbname=").next().unwrap().to_owned();
    let proxies: Vec<Proxy> = (0..SERVERS).map(|_| Proxy::start(cluster.addr())).collect();
    let server_url = |i: usize| proxies[i].url(&format!("user=postgres dbname={dbname}"));
    let logs = tempfile::tempdir().unwrap();
    let (tx, events) = mpsc::channel();
    let mut servers: Vec<Server> = (0..SERVERS)
        .map(|i| spawn_server(i, &server_url(i), logs.path(), tx.clone(), &server_env()))
        .collect();
    let mut seen = Observed::default();
    for i in 0..SERVERS {
        await_ready(&mut seen, &events, i);
    }
    let mut nemesis = Nemesis {
        rng: 0x9E37_79B9_7F4A_7C15,
        kills: 0,
        stops: 0,
        stalls: 0,
        cuts: 0,
        hops: 0,
    };
    let mut on: HashMap<i64, usize> = HashMap::new();
    for user in 1..=PLAYERS {
        let s = user as usize % SERVERS;
        servers[s].send(&format!("JOIN {user}"));
        on.insert(user, s);
    }
    let mut trouble = [Trouble::None; SERVERS];
    let run_until = Instant::now() + Duration::from_secs(30);
    let admin = std::thread::spawn({
        let url = url.clone();
        move || admin_process(&url, run_until)
    });
    let mut next_strike = Instant::now() + Duration::from_secs(2);
    while Instant::now() < run_until {
        let now = Instant::now();
        // End troubles whose time is up.
        for (i, t) in trouble.iter_mut().enumerate() {
            match *t {
                Trouble::Stopped(until) if now >= until => {
                    assert!(signal(servers[i].pid, "CONT"), "SIGCONT server-{i}");
                    *t = Trouble::None;
                }
                Trouble::Stalled(until) | Trouble::Cut(until) if now >= until => {
                    proxies[i].pass();
                    *t = Trouble::None;
                }
                _ => {}
            }
        }
        let healthy: Vec<usize> = (0..SERVERS)
            .filter(|&i| trouble[i] == Trouble::None)
            .collect();
        // Strike a healthy server, keeping at least one healthy.
        if now >= next_strike && healthy.len() > 1 {
            let victim = healthy[nemesis.next() as usize % healthy.len()];
            // Every kind of trouble in turn, on a random server.
            let strikes = nemesis.kills + nemesis.stops + nemesis.stalls + nemesis.cuts;
            match strikes % 4 {
                1 => {
                    // SIGKILL, then the same server id again: it takes its players back at once.
                    let _ = servers[victim].child.kill();
                    let _ = servers[victim].child.wait();
                    seen.ready.remove(&victim);
                    servers[victim] = spawn_server(
                        victim,
                        &server_url(victim),
                        logs.path(),
                        tx.clone(),
                        &server_env(),
                    );
                    await_ready(&mut seen, &events, victim);
                    seen.closed.remove(&victim);
                    for (&user, &s) in &on {
                        if s == victim {
                            servers[victim].send(&format!("JOIN {user}"));
                        }
                    }
                    nemesis.kills += 1;
                }
                2 => {
                    assert!(
                        signal(servers[victim].pid, "STOP"),
                        "SIGSTOP server-{victim}"
                    );
                    trouble[victim] = Trouble::Stopped(now + nemesis.between(500, 3000));
                    nemesis.stops += 1;
                }
                0 => {
                    // Longer than the 8 s response deadline, sometimes.
                    proxies[victim].stall();
                    trouble[victim] = Trouble::Stalled(now + nemesis.between(2000, 11_000));
                    nemesis.stalls += 1;
                }
                _ => {
                    proxies[victim].cut();
                    trouble[victim] = Trouble::Cut(now + nemesis.between(500, 3000));
                    nemesis.cuts += 1;
                }
            }
            next_strike = Instant::now() + nemesis.between(1500, 4000);
        }
        // A player hops between two healthy servers.
        let healthy: Vec<usize> = (0..SERVERS)
            .filter(|&i| trouble[i] == Trouble::None)
            .collect();
        let user = (nemesis.next() % PLAYERS as u64) as i64 + 1;
        let from = on[&user];
        if healthy.len() > 1 && healthy.contains(&from) && nemesis.next().is_multiple_of(3) {
            let others: Vec<usize> = healthy.iter().copied().filter(|&s| s != from).collect();
            let to = others[nemesis.next() as usize % others.len()];
            servers[from].send(&format!("LEAVE {user}"));
            servers[to].send(&format!("JOIN {user}"));
            on.insert(user, to);
            nemesis.hops += 1;
        }
        seen.pump(&events, Duration::from_millis(100));
    }

    let admin = admin.join().unwrap();
    // Recovery: the nemesis stops, nobody buys, every player goes back to the server holding
    // their lease (a killed server's lease outlives it by the lease length unless its server id
    // comes back) and rejoins there.
    for (i, t) in trouble.iter_mut().enumerate() {
        if let Trouble::Stopped(_) = t {
            assert!(signal(servers[i].pid, "CONT"), "SIGCONT server-{i}");
        }
        proxies[i].pass();
        *t = Trouble::None;
    }
    for s in servers.iter_mut() {
        s.send("CALM");
    }
    seen.pump(&events, Duration::from_secs(2));
    let mut send_home = |pending: Vec<i64>| {
        let owners: HashMap<i64, Option<String>> = sql(&url)
            .query("SELECT user_id, lease_owner FROM accounts", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for user in pending {
            let at = on[&user];
            let holder = owners
                .get(&user)
                .cloned()
                .flatten()
                .and_then(|o| o.strip_prefix("server-").and_then(|i| i.parse().ok()))
                .unwrap_or(at);
            servers[at].send(&format!("LEAVE {user}"));
            servers[holder].send(&format!("JOIN {user}"));
            on.insert(user, holder);
        }
    };
    send_home(pending_users(&url));
    await_all_granted(
        &url,
        &mut seen,
        &events,
        Duration::from_secs(150),
        Duration::from_secs(10),
        &mut send_home,
    );
    quit_all(
        &mut servers,
        &mut seen,
        &events,
        Duration::from_secs(60),
        logs.path(),
    );

    // The checker.
    let twice: Vec<_> = seen.granted.iter().filter(|(_, g)| g.2 > 1).collect();
    assert!(twice.is_empty(), "purchases granted twice: {twice:?}");
    let mut db = sql(&url);
    let count = |db: &mut postgres::Client, query: &str| -> i64 {
        db.query_one(query, &[]).unwrap().get(0)
    };
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM balance_journal j WHERE kind = 'purchase'
             AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.purchase_id = j.purchase_id)"
        ),
        0,
        "every debit has its receipt"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM receipts r WHERE currency_spent > 0 AND (SELECT count(*)
             FROM balance_journal j WHERE j.purchase_id = r.purchase_id AND j.kind = 'purchase') <> 1"
        ),
        0,
        "every paid receipt has exactly one debit"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM accounts a WHERE a.balance <> coalesce(
             (SELECT sum(delta) FROM balance_journal j WHERE j.user_id = a.user_id), 0)
             OR (SELECT count(*) FROM balance_journal j WHERE j.user_id = a.user_id
                 AND j.kind = 'starting_balance' AND j.delta = $START) <> 1"
                .replace("$START", &START_BALANCE.to_string())
                .as_str()
        ),
        0,
        "every balance is the starting balance plus its journal"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM receipts r WHERE state = 'rejected' AND currency_spent > 0
             AND (SELECT count(*) FROM balance_journal j
                  WHERE j.purchase_id = r.purchase_id AND j.kind = 'refund') <> 1"
        ),
        0,
        "every paid rejected receipt has exactly one refund credit"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM receipts r WHERE (SELECT count(*) FROM balance_journal j
             WHERE j.purchase_id = r.purchase_id AND j.kind = 'refund') > 1"
        ),
        0,
        "no receipt refunded twice (a rejection and an admin refund)"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM receipts WHERE state = 'rejected'
             AND (clawback IS DISTINCT FROM 'not_needed'
                  OR refund_reason IS DISTINCT FROM '$REASON' OR refunded_ms IS NULL)"
                .replace("$REASON", REJECTION)
                .as_str()
        ),
        0,
        "every rejected receipt has its refund record: the handler's reason, nothing to take back"
    );
    let sales = db
        .query_one(
            "SELECT coalesce(sum(rejected_units), 0)::bigint,
                    coalesce(sum(rejected_currency), 0)::bigint FROM sales_hours",
            &[],
        )
        .unwrap();
    let rejected_sales = db
        .query_one(
            "SELECT count(*), coalesce(sum(currency_spent), 0)::bigint FROM receipts
             WHERE state = 'rejected' AND NOT is_test",
            &[],
        )
        .unwrap();
    assert_eq!(
        (sales.get::<_, i64>(0), sales.get::<_, i64>(1)),
        (
            rejected_sales.get::<_, i64>(0),
            rejected_sales.get::<_, i64>(1)
        ),
        "the sales totals count every rejection, and its currency, once"
    );
    let report = bevy_marketplace::ledger::PostgresLedger::connect(url.as_str())
        .unwrap()
        .audit()
        .unwrap()
        .check();
    assert!(
        report.is_sound(),
        "the ledger's own check: {:?}",
        report.problems
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM receipts WHERE state = 'pending' OR clawback = 'pending'"
        ),
        0,
        "every receipt granted, rejected, or refunded and settled"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT count(*) FROM credits c WHERE (SELECT count(*) FROM balance_journal j
             WHERE j.kind = 'top_up' AND j.reason = c.source || ':' || c.order_id
               AND j.user_id = c.user_id AND j.delta = c.amount) <> 1
             OR (SELECT count(*) FROM balance_journal j WHERE j.kind = 'top_up'
               AND j.reason = c.source || ':' || c.order_id) <> 1"
        ),
        0,
        "every store order credited once, to the one user it names"
    );
    let receipts = db
        .query(
            "SELECT purchase_id, user_id, product_id, state, clawback FROM receipts",
            &[],
        )
        .unwrap();
    let mut gold: BTreeMap<i64, u64> = BTreeMap::new();
    // Granted in the ledger with no report: the server was killed between the commit and the
    // report, or the commit of a final save landed while its answer was stalled (the retry finds
    // the lease released). Granted once all the same: the Gold below counts every grant.
    let mut unreported = 0;
    // Picked receipts: rejected (told or not), or refunded by the admin before the rejection.
    let (mut rejected, mut rejected_unreported, mut refunded_first) = (0, 0, 0);
    let mut rejected_ids = std::collections::HashSet::new();
    for r in &receipts {
        let product: i64 = r.get(2);
        let amount = match product {
            p if p == GOLD_100.0 => 100,
            p if p == GOLD_1000.0 => 1000,
            other => panic!("unexpected product {other}"),
        };
        let state: String = r.get(3);
        let clawback: Option<String> = r.get(4);
        let id: String = r.get(0);
        // Granted and kept, or granted and taken back, or refunded before any grant, or
        // rejected by its handler (its Gold rolled back).
        let (granted, kept) = match (state.as_str(), clawback.as_deref()) {
            ("granted", _) => (true, true),
            ("refunded", Some("done")) => (true, false),
            ("refunded", Some("kept")) => (true, true),
            ("refunded", Some("not_needed")) => (false, false),
            ("rejected", Some("not_needed")) => (false, false),
            other => panic!("receipt {id} ended as {other:?}"),
        };
        let picked = rejects(&id, REJECT_ONE_IN);
        if picked {
            assert!(
                !granted,
                "receipt {id} is rejected by its handler, yet ended as {:?}",
                (&state, &clawback)
            );
            assert!(
                !seen.granted.contains_key(&id),
                "receipt {id} is rejected by its handler, yet a server reported its grant"
            );
        }
        if state == "rejected" {
            assert!(
                picked,
                "receipt {id} was rejected, yet its handler grants it"
            );
            rejected += 1;
            rejected_ids.insert(id.clone());
            match seen.rejected.get(&id) {
                Some((told_user, told_product, times, reason)) => {
                    assert_eq!(*times, 1, "receipt {id} reported rejected {times} times");
                    assert_eq!(
                        (*told_user, *told_product, reason.as_str()),
                        (r.get::<_, i64>(1), product, REJECTION),
                        "receipt {id}: the rejection's report"
                    );
                }
                None => rejected_unreported += 1,
            }
        } else if picked {
            refunded_first += 1;
        }
        if kept {
            *gold.entry(r.get(1)).or_default() += amount;
        }
        if granted != seen.granted.contains_key(&id) && granted {
            unreported += 1;
        }
        if !granted && seen.granted.contains_key(&id) {
            panic!("receipt {id} was refunded before any grant, yet a server reported its grant");
        }
    }
    for id in seen.rejected.keys() {
        assert!(
            rejected_ids.contains(id),
            "receipt {id} was reported rejected, yet it is not rejected in the ledger"
        );
    }
    assert!(
        rejected > 0 && !seen.rejected.is_empty(),
        "the handlers rejected something, and a server reported it: {rejected} rejected"
    );
    assert_eq!(
        admin.rejected_refunded, 0,
        "an admin refund of a rejected receipt went through: {admin:?}"
    );
    for user in 1..=PLAYERS {
        let saved: Option<String> = db
            .query_opt(
                "SELECT value FROM player_components WHERE user_id = $1 AND name = 'Gold'",
                &[&user],
            )
            .unwrap()
            .map(|r| r.get(0));
        let expected = gold.get(&user).copied().unwrap_or(0);
        assert_eq!(
            saved.as_deref(),
            Some(format!("({expected})").as_str()),
            "persisted Gold of user {user} is the sum of their grants"
        );
    }
    assert!(
        admin.refunded > 0,
        "the admin refunded something: {admin:?}"
    );
    assert!(
        admin.credited > 0,
        "the admin credited something: {admin:?}"
    );
    eprintln!(
        "nemesis: {} servers, {PLAYERS} players, {} receipts granted at most once each \
         ({unreported} committed without a report), {rejected} rejected ({rejected_unreported} \
         without a report) and {refunded_first} more picked for rejection but refunded first; \
         admin {admin:?}; {} kills, {} stops, {} stalls, {} cuts, {} hops; {:.0} s in all",
        SERVERS,
        receipts.len(),
        nemesis.kills,
        nemesis.stops,
        nemesis.stalls,
        nemesis.cuts,
        nemesis.hops,
        started.elapsed().as_secs_f64()
    );
}
