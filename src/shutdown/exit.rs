//! The exit save: on `AppExit`, every player is saved, every session lease released, before the
//! process ends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bevy::prelude::*;

use crate::ids::UserId;
use crate::ledger::PlayerSnapshot;
use crate::ledger::SaveRequest;
use crate::ledger::{
    Completed, LedgerError, LedgerRequest, LedgerStatus, ReleaseSession, SaveReply,
};
use crate::link::{Ledger, LedgerAnswers};
use crate::players::{Farewell, PlayerSession, Sessions, Uncommitted, farewell, save_without};
use crate::settings::MarketplaceSettings;

/// The exit save's place: in bevy's [`Main`] schedule, after `Main::run_main` has run every
/// schedule of the frame, so it sees an [`AppExit`] written anywhere in it — a closed window
/// (`Last`), the game's quit button, [`ExitOnSignal`](crate::ExitOnSignal). (A system there costs
/// a frame far less than a schedule of its own.)
#[derive(SystemSet, Clone, Debug, PartialEq, Eq, Hash)]
pub struct MarketplaceExit;

/// Set once the exit save has run, so it runs once.
#[derive(Resource, Default)]
pub(crate) struct ExitSaved(bool);

/// What the exit save did, for the log and for tests.
#[derive(Resource, Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitReport {
    /// Final saves committed (each also released its player's lease).
    pub saved: usize,
    /// Leases of players still loading (or failed) given back.
    pub released: usize,
    /// Requests that had not been answered when the wait ran out, or that failed for good.
    pub unfinished: usize,
    /// How long the exit waited for the ledger.
    pub waited: Duration,
}

/// Adds the exit save after the frame's schedules.
pub(crate) fn install(app: &mut App) {
    app.init_resource::<ExitSaved>().add_systems(
        Main,
        save_on_exit.in_set(MarketplaceExit).after(Main::run_main),
    );
}

/// On `AppExit`: queues a final save (which releases the lease) for every active player, a
/// lease release for every player still loading, sends again the final saves of players who
/// left and whose save is waiting for a retry, then waits — at most
/// [`MarketplacePlugin::exit_timeout`](crate::MarketplacePlugin::exit_timeout) — until the
/// ledger has committed them all. Blocking is fine here: the game is ending, and without the
/// wait a windowed game's process can end before the storage worker commits anything.
pub(crate) fn save_on_exit(world: &mut World) {
    if world.resource::<ExitSaved>().0
        || world
            .get_resource::<Messages<AppExit>>()
            .is_none_or(|m| m.is_empty())
    {
        return;
    }
    world.resource_mut::<ExitSaved>().0 = true;
    let started = Instant::now();
    let settings = world.resource::<MarketplaceSettings>().clone();
    let players: Vec<_> = world
        .resource::<Sessions>()
        .by_user
        .iter()
        .map(|(&user, &entity)| (user, entity))
        .collect();
    let mut requests = Vec::new();
    // What each final save carries, to make it again without a grant the ledger refuses.
    let mut work: HashMap<UserId, (Vec<Uncommitted>, PlayerSnapshot)> = HashMap::new();
    for (user, entity) in players {
        let release = LedgerRequest::ReleaseSession(ReleaseSession {
            user,
            server: settings.server_id.clone(),
            token: world
                .get::<PlayerSession>(entity)
                .and_then(|s| s.lease_token),
        });
        match farewell(world, entity, user) {
            Farewell::Save(save) => {
                if let Some(session) = world.get::<PlayerSession>(entity) {
                    work.insert(user, (session.uncommitted.clone(), session.carried.clone()));
                }
                requests.push(LedgerRequest::Save(save));
            }
            Farewell::Unsaveable { reason, .. } => {
                tracing::error!("exit: user {user} cannot be saved: {reason}");
                requests.push(release);
            }
            Farewell::Release => requests.push(release),
            Farewell::AwaitPreviousSave => {}
        }
    }
    let mut sessions = world.resource_mut::<Sessions>();
    for (&user, gone) in sessions.departed.iter_mut() {
        work.insert(user, (gone.uncommitted.clone(), gone.carried.clone()));
        // Those in flight are answered during the wait below; the others wait for a retry.
        if !gone.in_flight {
            gone.in_flight = true;
            requests.push(LedgerRequest::Save(gone.request.clone()));
        }
    }
    // Answers already in, not handled yet (the frame's budget ran out): a final save among them
    // that failed or was refused is made again below, like one answered during the wait.
    let mut waiting: Vec<Completed> = Vec::new();
    let mut saves = world.resource_mut::<LedgerAnswers<SaveRequest>>();
    while let Some(answer) = saves.pop() {
        waiting.push(Completed::Save(answer));
    }
    let mut releases = world.resource_mut::<LedgerAnswers<ReleaseSession>>();
    while let Some(answer) = releases.pop() {
        waiting.push(Completed::ReleaseSession(answer));
    }
    let timeout = settings.exit_timeout;
    let mut ledger = world.resource_mut::<Ledger>();
    for request in requests {
        ledger.send_request(request);
    }
    ledger.flush();
    let report = wait_for_ledger(&mut ledger, waiting, &work, started, timeout);
    if report.unfinished == 0 {
        // Idle: stop the worker now, closing the store (its connection, its file lock), since a
        // windowed game's process may end without dropping the world.
        ledger.shutdown();
    }
    if report.unfinished == 0 {
        tracing::info!(
            "marketplace: on exit saved {} player(s) and released {} other lease(s) in {:?}",
            report.saved,
            report.released,
            report.waited
        );
    } else {
        tracing::error!(
            "marketplace: on exit {} ledger request(s) did not finish within {timeout:?}; saved {} player(s), released {} lease(s)",
            report.unfinished,
            report.saved,
            report.released
        );
    }
    world.insert_resource(report);
}

/// Polls the ledger until everything sent is answered or the time runs out. Final saves and
/// releases that fail with a storage error are sent again while there is time.
fn wait_for_ledger(
    ledger: &mut Ledger,
    mut answers: Vec<Completed>,
    work: &HashMap<UserId, (Vec<Uncommitted>, PlayerSnapshot)>,
    started: Instant,
    timeout: Duration,
) -> ExitReport {
    let deadline = started.checked_add(timeout);
    let mut report = ExitReport::default();
    loop {
        ledger.poll();
        while let Some(chunk) = ledger.next_answers() {
            answers.extend(chunk);
        }
        for answer in answers.drain(..) {
            // Only the final saves and releases matter now; the game is ending.
            let (request, user, failure) = match answer {
                Completed::Save(answer) if answer.call.release => match answer.result {
                    Ok(SaveReply::Saved { .. }) => {
                        report.saved += 1;
                        continue;
                    }
                    Ok(SaveReply::LeaseLost { owner }) => {
                        tracing::warn!(
                            "exit: user {} is held by {} now; nothing written",
                            answer.call.user,
                            owner.as_deref().unwrap_or("nobody")
                        );
                        continue;
                    }
                    Ok(SaveReply::GrantsRefunded { refunded }) => {
                        let user = answer.call.user;
                        let again = work.get(&user).and_then(|(uncommitted, carried)| {
                            save_without(&answer.call, uncommitted, carried, &refunded)
                        });
                        tracing::warn!(
                            "exit: the final save of user {user} granted {} receipt(s) refunded meanwhile; saving again without them",
                            refunded.len()
                        );
                        match again {
                            Some((save, _)) => ledger.send(save),
                            None => ledger.send(ReleaseSession {
                                user,
                                server: answer.call.fence.server.clone(),
                                token: Some(answer.call.fence.token),
                            }),
                        };
                        ledger.flush();
                        continue;
                    }
                    Ok(SaveReply::InvalidText(invalid)) => {
                        tracing::error!(
                            "exit: user {} could not be saved: {invalid}",
                            answer.call.user
                        );
                        report.unfinished += 1;
                        continue;
                    }
                    Err(e) => (
                        LedgerRequest::Save(answer.call.clone()),
                        answer.call.user,
                        e,
                    ),
                },
                Completed::ReleaseSession(answer) => match answer.result {
                    Ok(()) => {
                        report.released += 1;
                        continue;
                    }
                    Err(e) => (
                        LedgerRequest::ReleaseSession(answer.call.clone()),
                        answer.call.user,
                        e,
                    ),
                },
                _ => continue,
            };
            match failure {
                LedgerError::Storage(e)
                    if deadline.is_none_or(|d| Instant::now() < d)
                        && !matches!(ledger.status(), LedgerStatus::Failed(_)) =>
                {
                    tracing::warn!("exit: a final save failed ({e}); trying again");
                    ledger.send_request(request);
                    ledger.flush();
                }
                e => {
                    tracing::error!("exit: user {user} could not be saved: {e}");
                    report.unfinished += 1;
                }
            }
        }
        let idle = ledger.in_flight() == 0;
        if idle || deadline.is_some_and(|d| Instant::now() >= d) {
            report.unfinished += ledger.in_flight();
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    report.waited = started.elapsed();
    report
}
