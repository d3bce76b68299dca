//! Helpers for testing games that use the marketplace (and for this crate's own tests).

use std::time::{Duration, Instant};

use bevy::prelude::*;

use crate::link::{Ledger, answers_waiting};

/// Test helpers on [`App`]: run a game's app, headless, until the marketplace has done its work.
/// The ledger answers on its own thread, so a purchase takes a few frames: these update the app
/// (sleeping a little between frames while the ledger works) instead of guessing a frame count.
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
/// # let catalog = Catalog::from_ron_str("(products: [(id: 456456, name: \"Pouch of Gold\", price: 80)])", "products.ron").unwrap();
///
/// let mut app = App::new();
/// app.add_plugins((
///     MinimalPlugins,
///     MarketplacePlugin { starting_balance: 100, ..MarketplacePlugin::default()
///         .with_catalog(catalog)
///         .with_ledger(LedgerBackend::in_memory()) },
/// ));
/// let player = app.world_mut().spawn(Buyer::new(UserId(1))).id();
/// // Until a condition holds (panics naming it after 10 s).
/// app.update_until("the session to open", |w| {
///     w.get::<PlayerSession>(player).is_some_and(PlayerSession::is_active)
/// });
/// app.world_mut().write_message(PromptProductPurchase { player, product_id: ProductId(456456) });
/// // Until the ledger is idle: the charge is committed and the receipt delivered.
/// app.settle();
/// assert_eq!(app.world().get::<PremiumBalance>(player).unwrap().0, 20);
/// ```
pub trait MarketplaceTestExt {
    /// Updates the app until the ledger has answered everything, no save waits for its frame, and
    /// a few more frames have run (prompts close, handlers run, grants commit). Panics after 10 s.
    fn settle(&mut self) -> &mut Self;

    /// Updates until `done` holds; panics with `what` after 10 s.
    fn update_until(&mut self, what: &str, done: impl FnMut(&mut World) -> bool) -> &mut Self;
}

impl MarketplaceTestExt for App {
    fn settle(&mut self) -> &mut Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut quiet = 0;
        while quiet < 4 {
            self.update();
            let inbox_empty = answers_waiting(self.world()) == 0;
            // Saves queued for a later frame (a frame's budget ran out) are work to wait for.
            let saves_waiting = self
                .world()
                .resource::<crate::players::DeliveryQueue>()
                .saves_waiting();
            if self.world().resource::<Ledger>().in_flight() == 0
                && inbox_empty
                && saves_waiting == 0
            {
                quiet += 1;
            } else {
                quiet = 0;
                std::thread::sleep(Duration::from_micros(200));
            }
            assert!(
                Instant::now() < deadline,
                "the marketplace did not settle within 10 s"
            );
        }
        self
    }

    fn update_until(&mut self, what: &str, mut done: impl FnMut(&mut World) -> bool) -> &mut Self {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.update();
            if done(self.world_mut()) {
                return self;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// How much work the plugin holds in memory: for soak tests that check it stays bounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueuedWork {
    /// Timed wake-ups scheduled (retries, autosaves, re-opens).
    pub wakes: usize,
    /// Players waiting for a delivery pass.
    pub deliveries: usize,
    /// Receipts granted in memory, waiting for their commit.
    pub awaiting_commit: usize,
    /// Players who left, whose final save has not landed.
    pub departed: usize,
    /// Charges of prompts whose outcome the ledger has not told yet.
    pub charges: usize,
    /// Ledger answers received and not yet handled.
    pub inbox_empty: bool,
}

/// Reads [`QueuedWork`] from a world with the marketplace plugin.
pub fn queued_work(world: &World) -> QueuedWork {
    let sessions = world.resource::<crate::Sessions>();
    QueuedWork {
        wakes: world.resource::<crate::wake::WakeSchedule>().len(),
        deliveries: world.resource::<crate::players::DeliveryQueue>().len(),
        awaiting_commit: sessions.awaiting_commit().count(),
        departed: sessions.departing(),
        charges: world.resource::<crate::purchase::Charges>().len(),
        inbox_empty: answers_waiting(world) == 0 && world.resource::<Ledger>().received() == 0,
    }
}
