//! Soak: a simulated day of play (the clock is advanced, not slept) with a receipt that never
//! grants, flaky handlers, autosaves, joins and leaves — no panic, bounded queues, the stubborn
//! receipt still pending and retried at the capped interval, everything else granted once.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bevy::prelude::*;
use bevy_marketplace::prelude::*;
use bevy_marketplace::testing::queued_work;
use bevy_marketplace::{ReceiptState, RetryPolicy};
use common::*;

/// A small deterministic generator (xorshift), so a failure replays.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, sides: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % sides
    }
}

const USERS: i64 = 4;
const STEP: Duration = Duration::from_secs(30);
const DAY: Duration = Duration::from_secs(24 * 3600);

#[test]
fn a_simulated_day_with_a_receipt_that_never_grants() {
    let started = Instant::now();
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("handler bug") {
            quiet(info);
        }
    }));
    let mut shop = shop_with(|p| MarketplacePlugin {
        starting_balance: 1_000_000,
        ..p
    }); // default settings: 30 s autosave, 1 s doubling to 60 s retries
    assert_eq!(
        shop.world()
            .resource::<bevy_marketplace::MarketplaceSettings>()
            .retry,
        RetryPolicy::default()
    );
    // Arrows never arrive: their handler touches Gold, then declines, forever.
    let stubborn_calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = stubborn_calls.clone();
    shop.app
        .add_product_handler(ARROWS, move |_receipt, mut player| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(mut gold) = player.get_mut::<Gold>() {
                gold.0 += 1;
            }
            false
        });
    let mut players: Vec<Option<Entity>> = (0..USERS).map(|u| Some(shop.join(u))).collect();
    let owner = players[0].unwrap();
    shop.buy(owner, ARROWS);
    let stubborn = shop.collected().failed[0].receipt.purchase_id.clone();

    let mut dice = Dice(0x5eed_cafe);
    let mut elapsed = Duration::ZERO;
    let mut most_wakes = 0;
    let mut hour_calls = Vec::new();
    while elapsed < DAY {
        // User 0 stays all day with the stubborn receipt; the others come and go and buy.
        for (u, slot) in players.iter_mut().enumerate().skip(1) {
            match (*slot, dice.roll(10)) {
                (Some(e), 0) => {
                    shop.app.world_mut().despawn(e);
                    *slot = None;
                }
                (None, 0..=3) => *slot = Some(shop.join(u as i64)),
                (Some(e), 1..=3) => {
                    let mode = match dice.roll(6) {
                        0 => HandlerMode::Decline,
                        1 => HandlerMode::Panic,
                        2 => HandlerMode::Error,
                        _ => HandlerMode::Work,
                    };
                    shop.set_mode(mode);
                    let product = if dice.roll(2) == 0 {
                        GOLD_100
                    } else {
                        FULL_HEAL
                    };
                    shop.buy(e, product);
                }
                _ => {}
            }
        }
        shop.set_mode(HandlerMode::Work);
        shop.advance(STEP);
        elapsed += STEP;
        let work = queued_work(shop.world());
        most_wakes = most_wakes.max(work.wakes);
        if elapsed.as_secs().is_multiple_of(3600) {
            hour_calls.push(stubborn_calls.load(std::sync::atomic::Ordering::Relaxed));
        }
    }

    // Everyone back, handlers healthy: all but the stubborn receipt resolve.
    for (u, slot) in players.iter_mut().enumerate() {
        if slot.is_none() {
            *slot = Some(shop.join(u as i64));
        }
    }
    for _ in 0..3 {
        shop.advance(Duration::from_secs(61));
    }
    let audit = shop.ledger.audit();
    let pending: Vec<_> = audit
        .receipts
        .iter()
        .filter(|r| r.state == ReceiptState::Pending)
        .map(|r| r.info.purchase_id.clone())
        .collect();
    assert_eq!(
        pending,
        vec![stubborn.clone()],
        "only the stubborn receipt waits"
    );
    let granted = shop.log.granted.lock().unwrap().clone();
    let unique: HashSet<_> = granted.iter().collect();
    assert_eq!(unique.len(), granted.len(), "nothing granted twice");
    assert_eq!(granted.len(), audit.count(ReceiptState::Granted));
    // Persisted Gold is exactly the sum of granted purchases: the stubborn handler's +1s were
    // undone every time.
    for u in 0..USERS {
        let expected: u64 = audit
            .receipts
            .iter()
            .filter(|r| {
                r.info.player_id == UserId(u)
                    && r.state == ReceiptState::Granted
                    && r.info.product_id == GOLD_100
            })
            .map(|_| 100)
            .sum();
        let e = players[u as usize].unwrap();
        assert_eq!(shop.gold(e), expected, "Gold of user {u}");
    }
    // Retried at the capped interval: about once a minute once the backoff is spent.
    let per_hour: Vec<usize> = hour_calls.windows(2).map(|w| w[1] - w[0]).collect();
    let last_hours = &per_hour[per_hour.len() - 6..];
    assert!(
        last_hours.iter().all(|&n| (50..=130).contains(&n)),
        "stubborn deliveries per hour: {per_hour:?}"
    );
    let work = queued_work(shop.world());
    assert!(
        most_wakes < 64,
        "wake-ups stay bounded: at most {most_wakes}"
    );
    println!(
        "soak: 24 simulated hours in {:.1?}; {} receipts granted once each, the stubborn one delivered {} times ({:?} per hour at the end), at most {most_wakes} wake-ups queued, now {work:?}",
        started.elapsed(),
        granted.len(),
        stubborn_calls.load(std::sync::atomic::Ordering::Relaxed),
        last_hours,
    );
}
