//! Helpers for testing games that use the marketplace (and for this crate's own tests).

use std::time::{Duration, Instant};

use bevy::prelude::*;

use crate::ledger::Ledger;

/// Test helpers on [`App`].
pub trait MarketplaceTestExt {
    /// Updates the app until the ledger has answered everything and a few more frames have run
    /// (prompts close, handlers run, grants commit). Panics after 10 s.
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
            let inbox_empty = self
                .world()
                .get_resource::<crate::session::LedgerInbox>()
                .is_none_or(|i| i.is_empty());
            if self.world().resource::<Ledger>().in_flight() == 0 && inbox_empty {
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
