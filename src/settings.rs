//! What every stage reads: the plugin's settings at run time, its counters, the frame's work
//! budget, the system sets.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bevy::prelude::*;

use crate::ids::{PlaceId, ServerId};
use crate::retry::RetryPolicy;

/// The plugin's configuration at run time.
#[derive(Resource, Clone, Debug)]
pub struct MarketplaceSettings {
    /// See [`MarketplacePlugin::place_id`](crate::MarketplacePlugin::place_id).
    pub place_id: PlaceId,
    /// This server's id.
    pub server_id: ServerId,
    /// See [`MarketplacePlugin::retry`](crate::MarketplacePlugin::retry).
    pub retry: RetryPolicy,
    /// See [`MarketplacePlugin::test_purchases`](crate::MarketplacePlugin::test_purchases).
    pub test_purchases: bool,
    /// See [`MarketplacePlugin::starting_balance`](crate::MarketplacePlugin::starting_balance).
    pub starting_balance: u64,
    /// See [`MarketplacePlugin::autosave_interval`](crate::MarketplacePlugin::autosave_interval).
    pub autosave_interval: Duration,
    /// See [`MarketplacePlugin::lease_duration`](crate::MarketplacePlugin::lease_duration).
    pub lease_duration: Duration,
    /// See [`MarketplacePlugin::frame_budget`](crate::MarketplacePlugin::frame_budget).
    pub frame_budget: Duration,
    /// See [`MarketplacePlugin::exit_timeout`](crate::MarketplacePlugin::exit_timeout).
    pub exit_timeout: Duration,
    /// See [`MarketplacePlugin::refresh_interval`](crate::MarketplacePlugin::refresh_interval).
    pub refresh_interval: Duration,
}

impl MarketplaceSettings {
    /// The lease length in milliseconds, capped so that adding it to a clock cannot overflow.
    pub(crate) fn lease_ms(&self) -> i64 {
        const CENTURY_MS: u128 = 100 * 365 * 86_400 * 1000;
        self.lease_duration.as_millis().min(CENTURY_MS) as i64
    }
}

/// Counters since start, for dashboards and the debug panel.
#[derive(Resource, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarketplaceStats {
    /// Charges that created a receipt.
    pub charges: u64,
    /// Receipts granted and committed.
    pub granted: u64,
    /// Deliveries that did not grant.
    pub delivery_failures: u64,
    /// Handlers that panicked.
    pub handler_panics: u64,
    /// Saves committed.
    pub saves: u64,
    /// Saves that failed (and were retried).
    pub save_failures: u64,
    /// Saves refused because another server took the player's lease.
    pub lease_losses: u64,
    /// Refunds this server made.
    pub refunds: u64,
    /// Refund clawbacks settled and committed here (taken back, or kept without a handler).
    pub refunds_settled: u64,
    /// Receipts their handlers rejected, refunded and committed here.
    pub rejected: u64,
}

/// When this frame's backlog work stops: set by the plugin's first system each frame, from
/// [`MarketplaceSettings::frame_budget`], and shared by every system that works off a queue.
#[derive(Resource)]
pub(crate) struct FrameDeadline {
    at: Instant,
    /// Checks made so far (see [`passed`](Self::passed)).
    checks: AtomicU32,
}

impl Default for FrameDeadline {
    fn default() -> Self {
        Self {
            at: Instant::now(),
            checks: AtomicU32::new(0),
        }
    }
}

/// How many checks of the deadline between two [`settle_frees`].
const CHECKS_PER_SETTLE: u32 = 8;

impl FrameDeadline {
    /// Starts this frame's budget (a budget too long to add to the clock never runs out).
    pub(crate) fn start(&mut self, budget: Duration) {
        let now = Instant::now();
        self.at = now
            .checked_add(budget)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
    }

    /// `true` once the frame's budget is spent. Work done so far is settled with the allocator
    /// now and then (see [`settle_frees`]), so that its cost falls within the budget.
    pub(crate) fn passed(&self) -> bool {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(CHECKS_PER_SETTLE)
        {
            settle_frees();
        }
        Instant::now() > self.at
    }
}

/// Makes the allocator do now the bookkeeping it owes for small blocks freed since it last did.
///
/// glibc's `malloc` keeps small freed blocks on fast lists and merges them all at the next
/// request of a kilobyte or more. Each answer handled frees a few dozen small blocks, so the
/// request that came after a frame's work (ours, or any system's) merged thousands of them at
/// once: over a millisecond, after the frame budget was spent. One such request every few
/// answers pays the same cost in small parts, inside the budget. With other allocators this is
/// one short-lived allocation.
fn settle_frees() {
    std::hint::black_box(Vec::<u8>::with_capacity(4096));
}

/// The plugin's systems, all in `PreUpdate`, in this order. Order your systems against them:
/// for example, UI that reads prompts goes after [`MarketplaceSystems::Prompts`].
///
/// One purchase, stage by stage (each line names the file that handles it):
///
/// 1. The game asks for a prompt (`PromptProductPurchase`); `Prompts` opens it
///    (`purchase/prompt.rs`) and, when the player confirms, sends the charge
///    (`purchase/charge.rs`); `Send` hands it to the storage worker (`link/`).
/// 2. The worker charges in one transaction with other requests (`ledger/rules/money.rs`).
/// 3. `Receive` puts the answer on the charge queue; `Prompts` reads it (`purchase/charge.rs`):
///    the prompt shows "Purchased" and the receipt waits for its handler.
/// 4. `Deliver` runs the product handler as a transaction on the buyer's persisted components
///    (`receipts/delivery.rs`) and queues the save that commits the grant (`players/save.rs`).
/// 5. The worker grants and saves in one transaction (`ledger/rules/sessions.rs`).
/// 6. `Sessions` reads the save's answer (`players/save_answers.rs`): the grant is committed,
///    [`ReceiptResolved`](crate::ReceiptResolved) is sent.
/// 7. The player presses OK; `Prompts` closes the prompt and sends
///    [`PromptProductPurchaseFinished`](crate::PromptProductPurchaseFinished).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketplaceSystems {
    /// Takes ledger answers onto their queues, and catalog (re)loads.
    Receive,
    /// Session answers (joins, saves, readings), timed retries, and the service's answers and
    /// requests (refunds, top-ups, reports).
    Sessions,
    /// Charge answers, new prompts, prompt answers.
    Prompts,
    /// Runs product handlers and refund handlers (exclusive).
    Deliver,
    /// Autosaves and save retries (exclusive).
    Persist,
    /// Sends this frame's ledger requests to the storage worker.
    Send,
}
