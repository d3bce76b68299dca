//! A race of real game-server processes on one PostgreSQL database: each runs the plugin, joins
//! and leaves players on command (stdin), buys non-stop, and reports what it grants and what its
//! handlers reject (stdout).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bevy::app::ScheduleRunnerPlugin;
use bevy::prelude::*;
use bevy_marketplace::Ledger;
use bevy_marketplace::ledger::{LedgerBackend, LedgerStatus, ServerId};
use bevy_marketplace::prelude::*;
use bevy_marketplace::{MarketplaceStats, PlayerSession, RetryPolicy, Sessions};

use crate::common::{GOLD_100, GOLD_1000, Gold};

/// Every race player's starting premium balance.
pub const START_BALANCE: u64 = 10_000_000;

/// Why a race server's Gold handler rejects a receipt.
pub const REJECTION: &str = "out of stock";

/// Whether a race server that rejects one receipt in `one_in` (`RACE_REJECT_ONE_IN`) rejects
/// purchase `id`: a hash of the id (FNV-1a), so that every server, every redelivery and the
/// checker agree.
pub fn rejects(id: &str, one_in: u64) -> bool {
    let hash = id.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    hash.is_multiple_of(one_in)
}

#[derive(Resource)]
struct Race {
    commands: Mutex<mpsc::Receiver<String>>,
    buying: bool,
    quitting: bool,
    rng: u64,
    active: HashSet<UserId>,
}

impl Race {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Grants a Gold pack; a receipt that [`rejects`] picks gets its Gold too (which the rollback of
/// a rejection must undo) and is then rejected.
fn gold_handler(
    receipt: &ReceiptInfo,
    player: &mut EntityWorldMut,
    amount: u64,
    reject_one_in: Option<u64>,
) -> ProductPurchaseDecision {
    let Some(mut gold) = player.get_mut::<Gold>() else {
        return ProductPurchaseDecision::NotProcessedYet;
    };
    gold.0 += amount;
    if reject_one_in.is_some_and(|n| rejects(&receipt.purchase_id.0, n)) {
        return ProductPurchaseDecision::rejected(REJECTION);
    }
    ProductPurchaseDecision::PurchaseGranted
}

/// A refunded Gold pack's Gold goes back (never below zero: the player may have spent it).
fn take_back(player: &mut EntityWorldMut, amount: u64) -> bool {
    let Some(mut gold) = player.get_mut::<Gold>() else {
        return false;
    };
    gold.0 = gold.0.saturating_sub(amount);
    true
}

/// The plugin settings a race server runs with: the defaults unless the parent sets
/// `RACE_LEASE_MS`, `RACE_AUTOSAVE_MS` and `RACE_RETRY_MAX_MS` (a short lease for a race about
/// lease take-over); with `RACE_REJECT_ONE_IN` its Gold handler rejects one receipt in that many
/// (see [`rejects`]), else none.
pub struct ChildSettings {
    lease: Option<Duration>,
    autosave: Option<Duration>,
    retry_max: Option<Duration>,
    reject_one_in: Option<u64>,
}

impl ChildSettings {
    fn from_env() -> Self {
        let ms = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        };
        Self {
            lease: ms("RACE_LEASE_MS"),
            autosave: ms("RACE_AUTOSAVE_MS"),
            retry_max: ms("RACE_RETRY_MAX_MS"),
            reject_one_in: std::env::var("RACE_REJECT_ONE_IN")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0),
        }
    }
}

/// Runs a race server as the parent's environment says (`RACE_URL`, `RACE_SERVER`, `RACE_SEED`
/// and the [`ChildSettings`]); the test binary's ignored `child_process` test calls it.
pub fn run_child_from_env() {
    let url = std::env::var("RACE_URL").expect("run by a race test");
    let server = std::env::var("RACE_SERVER").expect("run by a race test");
    let seed = std::env::var("RACE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    race_child(&url, &server, seed, ChildSettings::from_env());
}

fn race_child(url: &str, server: &str, seed: u64, settings: ChildSettings) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
        // The test that runs us is gone: do not linger.
        std::process::exit(3);
    });
    let mut plugin = MarketplacePlugin {
        server_id: Some(ServerId::new(server).unwrap()),
        starting_balance: START_BALANCE,
        ..MarketplacePlugin::default()
            .with_catalog(crate::common::catalog())
            .with_ledger(LedgerBackend::postgres(url))
    };
    if let Some(lease) = settings.lease {
        plugin.lease_duration = lease;
    }
    if let Some(autosave) = settings.autosave {
        plugin.autosave_interval = autosave;
    }
    if let Some(max) = settings.retry_max {
        plugin.retry = RetryPolicy {
            initial: max / 4,
            multiplier: 2.0,
            max,
        };
    }
    let reject = settings.reject_one_in;
    let mut app = App::new();
    app.add_plugins((
        MinimalPlugins.set(ScheduleRunnerPlugin::run_loop(Duration::from_millis(1))),
        plugin,
    ))
    .persist_component::<Gold>()
    .insert_resource(Race {
        commands: Mutex::new(rx),
        buying: true,
        quitting: false,
        rng: seed | 1,
        active: HashSet::new(),
    })
    .add_product_handler(GOLD_100, move |receipt, mut player| {
        gold_handler(receipt, &mut player, 100, reject)
    })
    .add_product_handler(GOLD_1000, move |receipt, mut player| {
        gold_handler(receipt, &mut player, 1000, reject)
    })
    .add_refund_handler(GOLD_100, |_, mut player| take_back(&mut player, 100))
    .add_refund_handler(GOLD_1000, |_, mut player| take_back(&mut player, 1000))
    .add_systems(Update, (race_commands, race_buy, race_report).chain());
    app.run();
}

#[allow(clippy::too_many_arguments)]
fn race_commands(
    mut race: ResMut<Race>,
    players: Query<(Entity, &Buyer)>,
    sessions: Res<Sessions>,
    ledger: Res<Ledger>,
    stats: Res<MarketplaceStats>,
    mut commands: Commands,
    mut exit: MessageWriter<AppExit>,
    mut said_ready: Local<bool>,
) {
    if !*said_ready && matches!(ledger.status(), LedgerStatus::Ready(_)) {
        *said_ready = true;
        say("READY");
    }
    let lines: Vec<String> = race.commands.get_mut().unwrap().try_iter().collect();
    for line in lines {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("");
        let user = words.next().and_then(|w| w.parse::<i64>().ok());
        match (verb, user) {
            ("JOIN", Some(user)) => {
                if !players.iter().any(|(_, p)| p.user_id.0 == user) {
                    commands.spawn((Buyer::new(UserId(user)), Gold(0)));
                }
            }
            ("LEAVE", Some(user)) => {
                for (e, p) in &players {
                    if p.user_id.0 == user {
                        commands.entity(e).despawn();
                    }
                }
            }
            ("CALM", _) => race.buying = false,
            ("QUIT", _) => {
                race.quitting = true;
                race.buying = false;
                for (e, _) in &players {
                    commands.entity(e).despawn();
                }
            }
            _ => panic!("unknown command {line:?}"),
        }
    }
    if race.quitting && players.is_empty() && ledger.in_flight() == 0 && sessions.departing() == 0 {
        say(&format!(
            "STATS lease_losses={} granted={} rejected={} charges={}",
            stats.lease_losses, stats.granted, stats.rejected, stats.charges
        ));
        exit.write(AppExit::Success);
    }
}

fn race_buy(
    mut race: ResMut<Race>,
    players: Query<(Entity, &PlayerSession, Has<OpenPrompt>)>,
    mut prompts: MessageWriter<PromptProductPurchase>,
) {
    let mut now_active = HashSet::new();
    for (entity, session, has_prompt) in &players {
        if !session.is_active() {
            continue;
        }
        now_active.insert(session.user());
        if !race.active.contains(&session.user()) {
            say(&format!(
                "OPENED {} {}",
                session.user().0,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis()
            ));
        }
        if race.buying && !has_prompt {
            let product = if race.next().is_multiple_of(4) {
                GOLD_1000
            } else {
                GOLD_100
            };
            prompts.write(PromptProductPurchase {
                player: entity,
                product_id: product,
            });
        }
    }
    race.active = now_active;
}

fn race_report(
    mut resolved: MessageReader<ReceiptResolved>,
    mut rejected: MessageReader<ReceiptRejected>,
) {
    for r in resolved.read() {
        say(&format!(
            "GRANTED {} {} {}",
            r.receipt.purchase_id, r.receipt.player_id, r.receipt.product_id
        ));
    }
    // The reason last: it has spaces.
    for r in rejected.read() {
        say(&format!(
            "REJECTED {} {} {} {}",
            r.receipt.purchase_id, r.receipt.player_id, r.receipt.product_id, r.reason
        ));
    }
}

pub enum Event {
    Line(usize, Instant, String),
    Closed(usize),
}

pub struct Server {
    pub child: Child,
    pub stdin: ChildStdin,
    pub pid: u32,
}

/// Sends a signal with the shell's `kill` builtin (no libc, no procps needed).
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("kill -{name} {pid}")])
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for Server {
    /// A failed test must not leave servers behind (one may still be frozen).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = signal(self.pid, "CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    pub fn send(&mut self, line: &str) {
        // A frozen server's pipe buffers the command until it resumes.
        writeln!(self.stdin, "{line}").expect("write to a server");
    }
}

/// Starts race server `index` (server id `server-{index}`) on `url`, with `env` for its settings;
/// its lines go to `events`, its log to `dir`.
pub fn spawn_server(
    index: usize,
    url: &str,
    dir: &std::path::Path,
    events: mpsc::Sender<Event>,
    env: &[(&str, String)],
) -> Server {
    let mut child = crate::common::child::test_child("child_process")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RACE_URL", url)
        .env("RACE_SERVER", format!("server-{index}"))
        .env("RACE_SEED", (0x9E37_79B9 * (index as u64 + 1)).to_string())
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("server-{index}.log"))).unwrap())
        .spawn()
        .expect("start a server process");
    let lines = crate::common::child::stdout_lines(&mut child);
    std::thread::spawn(move || {
        for (at, line) in lines {
            if events.send(Event::Line(index, at, line)).is_err() {
                return;
            }
        }
        let _ = events.send(Event::Closed(index));
    });
    Server {
        stdin: child.stdin.take().unwrap(),
        pid: child.id(),
        child,
    }
}

#[derive(Default)]
pub struct Observed {
    /// purchase id → (user, product, times reported)
    pub granted: HashMap<String, (i64, i64, usize)>,
    /// purchase id → (user, product, times reported, reason) of every `ReceiptRejected`
    pub rejected: HashMap<String, (i64, i64, usize, String)>,
    pub grant_times: Vec<Instant>,
    /// (server, user, wall-clock ms) of every session opened
    pub opened: Vec<(usize, i64, i64)>,
    pub ready: HashSet<usize>,
    pub stats: Vec<String>,
    pub closed: HashSet<usize>,
}

impl Observed {
    /// Markers are searched, not prefixed: the harness prints `test child_process ... ` before
    /// the child's first line.
    pub fn take(&mut self, event: Event) {
        match event {
            Event::Closed(i) => {
                self.closed.insert(i);
            }
            Event::Line(server, at, line) => {
                if let Some(i) = line.find("REJECTED ") {
                    let mut w = line[i + 9..].splitn(4, ' ');
                    let id = w.next().unwrap().to_owned();
                    let user: i64 = w.next().unwrap().parse().unwrap();
                    let product: i64 = w.next().unwrap().parse().unwrap();
                    let reason = w.next().unwrap_or("").to_owned();
                    self.rejected
                        .entry(id)
                        .or_insert((user, product, 0, reason))
                        .2 += 1;
                } else if let Some(i) = line.find("GRANTED ") {
                    let mut w = line[i + 8..].split_whitespace();
                    let id = w.next().unwrap().to_owned();
                    let user: i64 = w.next().unwrap().parse().unwrap();
                    let product: i64 = w.next().unwrap().parse().unwrap();
                    self.granted.entry(id).or_insert((user, product, 0)).2 += 1;
                    self.grant_times.push(at);
                } else if let Some(i) = line.find("OPENED ") {
                    let mut w = line[i + 7..].split_whitespace();
                    let user: i64 = w.next().unwrap().parse().unwrap();
                    let ms: i64 = w.next().unwrap().parse().unwrap();
                    self.opened.push((server, user, ms));
                } else if line.contains("READY") {
                    self.ready.insert(server);
                } else if let Some(i) = line.find("STATS ") {
                    self.stats
                        .push(format!("server-{server}: {}", &line[i + 6..]));
                }
            }
        }
    }

    pub fn pump(&mut self, events: &mpsc::Receiver<Event>, for_at_most: Duration) {
        let deadline = Instant::now() + for_at_most;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(e) => self.take(e),
                Err(_) => break,
            }
        }
    }
}

pub fn pending_users(url: &str) -> Vec<i64> {
    postgres::Client::connect(url, postgres::NoTls)
        .unwrap()
        .query(
            "SELECT DISTINCT user_id FROM receipts WHERE state = 'pending' OR clawback = 'pending' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Pumps `events` until no receipt in the database at `url` is pending (nor a refund's clawback),
/// at most `limit`. Every
/// `nudge_every` it hands the users whose receipts are still pending to `nudge` (which makes them
/// rejoin somewhere: a charge that landed after a session opened is picked up on the next join).
pub fn await_all_granted(
    url: &str,
    seen: &mut Observed,
    events: &mpsc::Receiver<Event>,
    limit: Duration,
    nudge_every: Duration,
    mut nudge: impl FnMut(Vec<i64>),
) {
    let deadline = Instant::now() + limit;
    let mut last_nudge = Instant::now();
    loop {
        seen.pump(events, Duration::from_millis(200));
        let pending = pending_users(url);
        if pending.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "receipts still pending for users {pending:?}"
        );
        if last_nudge.elapsed() > nudge_every {
            nudge(pending);
            last_nudge = Instant::now();
        }
    }
}

/// Tells every server to quit, waits at most `limit` for all of them to close, and checks that
/// each exited cleanly (showing the end of its log in `logs` when one did not).
pub fn quit_all(
    servers: &mut [Server],
    seen: &mut Observed,
    events: &mpsc::Receiver<Event>,
    limit: Duration,
    logs: &std::path::Path,
) {
    for s in servers.iter_mut() {
        s.send("QUIT");
    }
    let deadline = Instant::now() + limit;
    while seen.closed.len() < servers.len() {
        assert!(Instant::now() < deadline, "servers did not quit");
        seen.pump(events, Duration::from_millis(100));
    }
    for (i, s) in servers.iter_mut().enumerate() {
        let status = s.child.wait().unwrap();
        assert!(
            status.success(),
            "server {i} failed: {status:?}; see its log:\n{}",
            std::fs::read_to_string(logs.join(format!("server-{i}.log")))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
