//! The game's link to its ledger: the [`Ledger`] resource that queues requests for the storage
//! worker, and the typed queues its answers come back on, one per request type
//! ([`LedgerAnswers`]), each read by the stage that sent that request.

mod answers;

pub(crate) use answers::{AnswerQueues, LedgerAnswers, answers_waiting, init_answer_queues};

use bevy::prelude::*;

use crate::ledger::{
    Completed, LedgerCall, LedgerRequest, LedgerStatus, StoreFactory, Worker, WorkerLoad,
};
use crate::settings::{FrameDeadline, MarketplaceSettings, MarketplaceSystems};

/// The plugin's handle on its storage worker: it queues requests, sends them to the worker once
/// a frame and takes the answers without blocking. Games read its [`status`](Ledger::status)
/// and load; only the plugin sends requests and takes answers, so no game code can grant a
/// receipt or take the plugin's answers from it:
///
/// ```compile_fail
/// # use bevy_marketplace::Ledger;
/// # use bevy_marketplace::ledger::ReadPlayer;
/// # use bevy_marketplace::UserId;
/// fn forge(mut ledger: bevy::prelude::ResMut<Ledger>) {
///     ledger.send(ReadPlayer { user: UserId(1) });
/// }
/// ```
#[derive(Resource)]
pub struct Ledger {
    worker: Worker,
    /// Set by the store's listener when the change feed moved (PostgreSQL's notifications).
    change_notices: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Ledger {
    /// Starts a storage worker thread that opens the store with `open` and applies at most
    /// `max_batch` requests per transaction (1 turns group commit off: one transaction, and one
    /// fsync, per request). With `reader`, reports (history, sales) are answered by a second
    /// thread on a connection it opens with `reader`, once the store has opened.
    pub(crate) fn spawn(
        open: StoreFactory,
        reader: Option<StoreFactory>,
        max_batch: usize,
    ) -> Self {
        Self {
            worker: Worker::spawn(open, reader, max_batch),
            change_notices: None,
        }
    }

    /// The ledger's store tells of new changes by setting `notices`.
    pub(crate) fn with_change_notices(
        mut self,
        notices: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    ) -> Self {
        self.change_notices = notices;
        self
    }

    /// Whether the store said the change feed moved since this was last asked.
    pub(crate) fn take_change_notice(&mut self) -> bool {
        self.change_notices
            .as_ref()
            .is_some_and(|n| n.swap(false, std::sync::atomic::Ordering::Relaxed))
    }

    /// Queues a request; it is sent at the end of the frame, and its answer comes back on
    /// `LedgerAnswers<C>`. Returns the number it is sent under: requests are applied in the
    /// order of their numbers.
    pub(crate) fn send<C: LedgerCall>(&mut self, call: C) -> u64 {
        self.worker.send(call.into())
    }

    /// Queues a request of any type (see [`send`](Self::send)).
    pub(crate) fn send_request(&mut self, request: LedgerRequest) -> u64 {
        self.worker.send(request)
    }

    /// Sends queued requests to the worker (the plugin does this once a frame).
    pub(crate) fn flush(&mut self) {
        self.worker.flush();
    }

    /// Takes every answer that has arrived, without waiting, for
    /// [`next_answers`](Self::next_answers).
    pub(crate) fn poll(&mut self) {
        self.worker.poll();
    }

    /// The oldest answers taken and not yet handed out, a chunk at a time.
    pub(crate) fn next_answers(&mut self) -> Option<Vec<Completed>> {
        self.worker.next_answers()
    }

    /// How busy the storage worker has been since it started (cheap: three atomic loads).
    pub fn worker_load(&self) -> WorkerLoad {
        self.worker.load()
    }

    /// Answers taken from the worker and not yet moved to their queues.
    pub(crate) fn received(&self) -> usize {
        self.worker.received()
    }

    /// Requests sent to the worker and not yet answered, plus those still queued.
    pub fn in_flight(&self) -> usize {
        self.worker.in_flight()
    }

    /// Whether the store is open.
    pub fn status(&self) -> &LedgerStatus {
        self.worker.status()
    }

    /// Transactions the worker has answered so far.
    pub fn transactions(&self) -> u64 {
        self.worker.transactions()
    }

    /// Sends what is queued, then waits for the worker to finish everything and stop. Dropping
    /// the `Ledger` does the same; this only blocks at shutdown.
    pub(crate) fn shutdown(&mut self) {
        self.worker.shutdown();
    }
}

/// The link's systems: answers in first, requests out last.
pub(crate) struct LinkPlugin;

impl Plugin for LinkPlugin {
    fn build(&self, app: &mut App) {
        init_answer_queues(app);
        app.init_resource::<FrameDeadline>().add_systems(
            PreUpdate,
            (
                receive_ledger.in_set(MarketplaceSystems::Receive),
                flush_ledger.in_set(MarketplaceSystems::Send),
            ),
        );
    }
}

/// Answers waiting in the typed queues below which `Receive` moves more there: several frames
/// of work for the stages at the default budget.
const ROUTED_AHEAD: usize = 1024;

/// Answers `Receive` moves each frame however many wait: a backlog in one queue (thousands of
/// players reconnecting) holds an answer to another (a purchase) back for a few frames, not
/// until the backlog is worked off. About 60 µs a frame.
const ROUTED_AT_LEAST: usize = 512;

/// Takes the worker's answers into their typed queues, and starts the frame's work budget.
pub(crate) fn receive_ledger(
    mut ledger: ResMut<Ledger>,
    mut queues: AnswerQueues,
    mut deadline: ResMut<FrameDeadline>,
    settings: Res<MarketplaceSettings>,
) {
    deadline.start(settings.frame_budget);
    ledger.poll();
    // Only about as many answers as the stages can soon work off are moved to their queues:
    // moving a whole transaction's (thousands) took a frame a millisecond.
    let mut routed = 0;
    while (routed < ROUTED_AT_LEAST || queues.waiting() < ROUTED_AHEAD)
        && let Some(chunk) = ledger.next_answers()
    {
        routed += chunk.len();
        chunk.into_iter().for_each(|answer| queues.route(answer));
    }
}

/// Sends this frame's requests to the worker.
pub(crate) fn flush_ledger(mut ledger: ResMut<Ledger>) {
    ledger.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{ANSWER_CHUNK, LedgerBackend, LedgerStatus, ReadChanges};
    use crate::prelude::*;
    use crate::testing::MarketplaceTestExt;

    /// One transaction's thousands of answers reach the stages' queues a part at a time, so no
    /// frame moves (and pays for) them all, and at a steady pace however slowly a stage works
    /// its queue off; every one is still handled.
    #[test]
    fn a_large_transaction_reaches_the_stages_a_part_at_a_time() {
        let catalog = Catalog::from_ron_str(
            "(products: [(id: 1, name: \"Gold\", price: 10)])",
            "products.ron",
        )
        .unwrap();
        let mut app = App::new();
        app.add_plugins((
            MinimalPlugins,
            MarketplacePlugin {
                // The slowest stage there is: one answer a frame.
                frame_budget: std::time::Duration::ZERO,
                ..MarketplacePlugin::default()
                    .with_catalog(catalog)
                    .with_ledger(LedgerBackend::in_memory())
            },
        ));
        app.update_until("the ledger to open", |w| {
            matches!(w.resource::<Ledger>().status(), LedgerStatus::Ready(_))
        });
        let sent: usize = 2_000;
        let mut ledger = app.world_mut().resource_mut::<Ledger>();
        for _ in 0..sent {
            ledger.send(ReadChanges { since: None });
        }
        // Answers leave `in_flight` as they are moved to the queues (nothing new is sent).
        let mut not_routed = sent;
        let (mut most_routed, mut frames) = (0, 0);
        let (mut first_routing, mut last_routing) = (None, 0);
        app.update_until("every answer to be handled", |w| {
            let in_flight = w.resource::<Ledger>().in_flight();
            let routed = not_routed.saturating_sub(in_flight);
            not_routed = in_flight;
            most_routed = most_routed.max(routed);
            frames += 1;
            if routed > 0 {
                first_routing.get_or_insert(frames);
                last_routing = frames;
            }
            in_flight == 0 && answers_waiting(w) == 0
        });
        assert!(
            most_routed <= ROUTED_AHEAD + ANSWER_CHUNK,
            "{most_routed} answers were moved to the queues in one frame"
        );
        // However slowly the stage works them off, the rest keeps coming: an answer behind
        // them waits a few frames, not until they are all handled.
        let frames_to_route = last_routing + 1 - first_routing.unwrap();
        assert!(
            frames_to_route <= sent.div_ceil(ROUTED_AT_LEAST) + 1,
            "the answers took {frames_to_route} frames to reach the queues"
        );
    }
}
