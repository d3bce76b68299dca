//! The server side: prompts asked by clients for the players they own, and what each owning
//! client is told back.

use std::collections::HashMap;
use std::time::Duration;

use bevy::prelude::*;
use bevy_replicon::prelude::*;

use super::protocol::*;
use super::screening::screen_client_messages;
use crate::currency::PremiumBalance;
use crate::players::Sessions;
use crate::players::{ReceiptRejected, ReceiptResolved};
use crate::purchase::{
    ConfirmPolicy, OpenPrompt, PromptAction, PromptAnswer, PromptProductPurchaseFinished,
    PromptRefusal, PromptRefused, PromptState, PurchaseFailed, TopUpRequested,
};
use crate::service::{MarketplaceService, PromptProductPurchase};
use crate::settings::MarketplaceSystems;

/// On the server: the connected client (replicon's `ConnectedClient` entity) that owns this
/// player. Only that client may prompt for the player and answer its prompts, and only it is told
/// about the player's purchases and balance.
#[derive(Component, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BuyerClient(pub Entity);

/// How many prompts a client may ask for, and how many answers it may send: each a burst,
/// refilled at a steady rate. A prompt asked faster is refused with
/// [`PromptRefusal::TooManyRequests`]; an answer sent faster is dropped (logged once a second),
/// since a player presses a few buttons a second at most.
///
/// What a client costs the server, whatever it sends: two token buckets and the answers of one
/// frame; each message over its limit costs a bucket check and nothing else. Every other answer
/// changes at most its own open prompt, and a prompt takes one answer.
#[derive(Resource, Clone, Copy, Debug, PartialEq)]
pub struct NetLimits {
    /// Prompts a client may ask for at once.
    pub prompt_burst: u32,
    /// Prompts a client may ask for per minute, once the burst is spent.
    pub prompts_per_minute: u32,
    /// Answers a client may send at once.
    pub answer_burst: u32,
    /// Answers a client may send per minute, once the burst is spent.
    pub answers_per_minute: u32,
}

impl Default for NetLimits {
    fn default() -> Self {
        Self {
            prompt_burst: 5,
            prompts_per_minute: 30,
            answer_burst: 10,
            answers_per_minute: 240,
        }
    }
}

/// The server half of networked purchases: add it with `MarketplacePlugin` and replicon's
/// server. It sets [`ConfirmPolicy::Manual`]: a remote player's prompt waits for their own
/// answer.
pub struct MarketplaceServerPlugin;

impl Plugin for MarketplaceServerPlugin {
    fn build(&self, app: &mut App) {
        app.add_plugins(MarketplaceProtocolPlugin)
            .init_resource::<NetLimits>()
            .init_resource::<PromptBuckets>()
            .init_resource::<CatalogSent>()
            .init_resource::<PlayerOfClient>()
            .init_resource::<PromptStateDue>()
            .add_observer(index_buyer)
            .add_observer(unindex_buyer)
            .add_observer(send_catalog_on_authorization)
            .add_observer(cancel_prompts_of_departed_client)
            .add_systems(
                PreUpdate,
                screen_client_messages
                    .after(ServerSystems::ReceivePackets)
                    .before(ServerSystems::Receive)
                    .run_if(in_state(ServerState::Running)),
            )
            .add_systems(
                PreUpdate,
                receive_client_requests
                    .after(ServerSystems::Receive)
                    .before(MarketplaceSystems::Prompts)
                    .run_if(in_state(ServerState::Running)),
            )
            .add_systems(
                PostUpdate,
                (send_catalog, send_outcomes, send_prompts_and_balances)
                    .before(ServerSystems::Send)
                    .run_if(in_state(ServerState::Running)),
            );
    }

    fn finish(&self, app: &mut App) {
        app.insert_resource(ConfirmPolicy::Manual);
    }
}

/// Token buckets of prompts and of answers, per connected client.
#[derive(Resource, Default)]
struct PromptBuckets {
    prompts: HashMap<Entity, (f64, Duration)>,
    answers: HashMap<Entity, (f64, Duration)>,
    /// When dropped answers were last logged.
    logged: Duration,
}

impl PromptBuckets {
    /// Takes a token from `bucket` for `client` at `now`; `false` when it has none left.
    fn take(
        bucket: &mut HashMap<Entity, (f64, Duration)>,
        client: Entity,
        now: Duration,
        (burst, per_minute): (u32, u32),
    ) -> bool {
        let burst = f64::from(burst.max(1));
        let (tokens, at) = bucket.entry(client).or_insert((burst, now));
        let refill = now.saturating_sub(*at).as_secs_f64() * f64::from(per_minute) / 60.0;
        *tokens = (*tokens + refill).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Which catalog generation the clients have, and the clients that still need one.
#[derive(Resource, Default)]
struct CatalogSent {
    generation: Option<u64>,
    waiting: Vec<Entity>,
}

/// The player each connected client owns, kept by observers on [`BuyerClient`], so that routing
/// a client's message is a lookup, not a scan of every player.
#[derive(Resource, Default)]
struct PlayerOfClient(HashMap<Entity, Entity>);

impl PlayerOfClient {
    /// The player `client` owns, if any.
    fn get(&self, client: ClientId) -> Option<Entity> {
        self.0.get(&client.entity()?).copied()
    }
}

fn index_buyer(
    insert: On<Insert, BuyerClient>,
    buyers: Query<&BuyerClient>,
    mut index: ResMut<PlayerOfClient>,
    mut due: ResMut<PromptStateDue>,
) {
    let Ok(owner) = buyers.get(insert.entity) else {
        return;
    };
    // The client is told its prompt (or that it has none) as soon as it owns the player.
    due.0.push(insert.entity);
    if let Some(other) = index.0.insert(owner.0, insert.entity)
        && other != insert.entity
    {
        tracing::warn!(
            "client {} now owns player entity {} in place of {other}: a client owns one player",
            owner.0,
            insert.entity
        );
    }
}

/// Runs before a `BuyerClient` is replaced or removed, and when its player is despawned.
fn unindex_buyer(
    replace: On<Discard, BuyerClient>,
    buyers: Query<&BuyerClient>,
    mut index: ResMut<PlayerOfClient>,
) {
    if let Ok(owner) = buyers.get(replace.entity)
        && index.0.get(&owner.0) == Some(&replace.entity)
    {
        index.0.remove(&owner.0);
    }
}

fn receive_client_requests(
    mut requests: MessageReader<FromClient<NetPromptRequest>>,
    mut answers: MessageReader<FromClient<NetPromptAnswer>>,
    owners: Res<PlayerOfClient>,
    limits: Res<NetLimits>,
    mut buckets: ResMut<PromptBuckets>,
    time: Res<Time<Real>>,
    mut prompts: MessageWriter<PromptProductPurchase>,
    mut prompt_answers: MessageWriter<PromptAnswer>,
    mut refusals: MessageWriter<ToClients<NetPromptRefused>>,
) {
    let now = time.elapsed();
    for FromClient { client_id, message } in requests.read() {
        let Some(client) = client_id.entity() else {
            continue;
        };
        let refuse = |reason| ToClients {
            targets: SendTargets::Single(*client_id),
            message: NetPromptRefused {
                prompt: None,
                product_id: Some(message.product_id),
                reason,
            },
        };
        if !PromptBuckets::take(
            &mut buckets.prompts,
            client,
            now,
            (limits.prompt_burst, limits.prompts_per_minute),
        ) {
            tracing::warn!(
                "client {client_id} asks for prompts faster than {} a minute; refused",
                limits.prompts_per_minute
            );
            refusals.write(refuse(PromptRefusal::TooManyRequests));
            continue;
        }
        let Some(player) = owners.get(*client_id) else {
            tracing::warn!(
                "client {client_id} asked for the prompt of product {} but owns no player; refused",
                message.product_id
            );
            refusals.write(refuse(PromptRefusal::NotAPlayer));
            continue;
        };
        prompts.write(PromptProductPurchase {
            player,
            product_id: message.product_id,
        });
    }
    let mut dropped = 0u32;
    for FromClient { client_id, message } in answers.read() {
        let Some(client) = client_id.entity() else {
            continue;
        };
        if !PromptBuckets::take(
            &mut buckets.answers,
            client,
            now,
            (limits.answer_burst, limits.answers_per_minute),
        ) {
            dropped += 1;
            continue;
        }
        match owners.get(*client_id) {
            Some(player) => {
                prompt_answers.write(PromptAnswer {
                    player,
                    prompt: message.prompt,
                    action: message.action,
                });
            }
            None => {
                tracing::warn!("client {client_id} answered a prompt but owns no player; ignored")
            }
        }
    }
    if dropped > 0 && now.saturating_sub(buckets.logged) >= Duration::from_secs(1) {
        buckets.logged = now;
        tracing::warn!(
            "{dropped} prompt answer(s) over the clients' limit of {} a minute dropped",
            limits.answers_per_minute
        );
    }
}

fn send_catalog_on_authorization(add: On<Add, AuthorizedClient>, mut sent: ResMut<CatalogSent>) {
    sent.waiting.push(add.entity);
}

fn send_catalog(
    service: Res<MarketplaceService>,
    mut sent: ResMut<CatalogSent>,
    clients: Query<(), With<AuthorizedClient>>,
    mut catalogs: MessageWriter<ToClients<NetCatalog>>,
) {
    let generation = service.catalog().generation();
    let catalog = || NetCatalog {
        products: service
            .catalog()
            .products()
            .iter()
            .map(crate::catalog::ProductInfo::definition)
            .collect(),
        currency: service.currency().clone(),
    };
    if sent.generation != Some(generation) {
        // A reload: everyone gets the new catalog, so no client shows a price the server would
        // not charge.
        sent.generation = Some(generation);
        sent.waiting.clear();
        catalogs.write(ToClients {
            targets: SendTargets::CLIENTS_ONLY,
            message: catalog(),
        });
        return;
    }
    for client in std::mem::take(&mut sent.waiting) {
        if clients.contains(client) {
            catalogs.write(ToClients {
                targets: SendTargets::Single(ClientId::Client(client)),
                message: catalog(),
            });
        }
    }
}

/// Players whose client is to be sent their whole prompt this frame, besides those whose prompt
/// changed: a client that asked while one was open, a client that just took its player.
#[derive(Resource, Default)]
struct PromptStateDue(Vec<Entity>);

fn send_prompts_and_balances(
    changed: Query<Entity, (Changed<OpenPrompt>, With<BuyerClient>)>,
    mut removed: RemovedComponents<OpenPrompt>,
    mut due: ResMut<PromptStateDue>,
    buyers: Query<(&BuyerClient, Option<&OpenPrompt>)>,
    balances: Query<(&BuyerClient, &PremiumBalance), Changed<PremiumBalance>>,
    mut prompt_states: MessageWriter<ToClients<NetPromptState>>,
    mut balance_updates: MessageWriter<ToClients<NetBalance>>,
) {
    // Each player's final state once, whatever happened to their prompt this frame.
    let mut players: Vec<Entity> = changed.iter().chain(removed.read()).collect();
    players.append(&mut due.0);
    players.sort_unstable();
    players.dedup();
    for player in players {
        let Ok((owner, prompt)) = buyers.get(player) else {
            continue;
        };
        prompt_states.write(ToClients {
            targets: SendTargets::Single(ClientId::Client(owner.0)),
            message: NetPromptState {
                prompt: prompt.map(|prompt| NetPrompt {
                    id: prompt.id,
                    product_id: prompt.product_id,
                    price: prompt.price,
                    balance_before: prompt.balance_before,
                    test_purchase: prompt.test_purchase,
                    state: prompt.state.clone(),
                }),
            },
        });
    }
    for (owner, balance) in &balances {
        balance_updates.write(ToClients {
            targets: SendTargets::Single(ClientId::Client(owner.0)),
            message: NetBalance { balance: balance.0 },
        });
    }
}

/// The client that owns `player`, as a send target.
fn owner_of(buyers: &Query<&BuyerClient>, player: Entity) -> Option<SendTargets> {
    let owner = buyers.get(player).ok()?;
    Some(SendTargets::Single(ClientId::Client(owner.0)))
}

/// Where the server's prompt systems tell the game what happened, read to tell the clients.
#[derive(bevy::ecs::system::SystemParam)]
struct PromptOutcomes<'w, 's> {
    finished: MessageReader<'w, 's, PromptProductPurchaseFinished>,
    failed: MessageReader<'w, 's, PurchaseFailed>,
    refused: MessageReader<'w, 's, PromptRefused>,
    resolved: MessageReader<'w, 's, ReceiptResolved>,
    rejected: MessageReader<'w, 's, ReceiptRejected>,
    top_ups: MessageReader<'w, 's, TopUpRequested>,
}

/// What the owning clients are told.
#[derive(bevy::ecs::system::SystemParam)]
struct ToOwners<'w> {
    finished: MessageWriter<'w, ToClients<NetPromptFinished>>,
    failures: MessageWriter<'w, ToClients<NetPurchaseFailed>>,
    refusals: MessageWriter<'w, ToClients<NetPromptRefused>>,
    receipts: MessageWriter<'w, ToClients<NetReceiptResolved>>,
    rejections: MessageWriter<'w, ToClients<NetReceiptRejected>>,
    top_ups: MessageWriter<'w, ToClients<NetTopUpRequested>>,
}

/// Tells each outcome to the connection of the player it is about — not to whichever player holds
/// the user id: a second connection of one user hears only of its own prompts.
fn send_outcomes(
    sessions: Res<Sessions>,
    mut outcomes: PromptOutcomes,
    buyers: Query<&BuyerClient>,
    mut to: ToOwners,
    mut due: ResMut<PromptStateDue>,
) {
    for f in outcomes.finished.read() {
        if let Some(targets) = owner_of(&buyers, f.player) {
            to.finished.write(ToClients {
                targets,
                message: NetPromptFinished {
                    prompt: f.prompt,
                    product_id: f.product_id,
                    is_purchased: f.is_purchased,
                },
            });
        }
    }
    for f in outcomes.failed.read() {
        if let Some(targets) = owner_of(&buyers, f.player) {
            to.failures.write(ToClients {
                targets,
                message: NetPurchaseFailed {
                    prompt: f.prompt,
                    product_id: f.product_id,
                    error: f.error.clone(),
                },
            });
        }
    }
    for r in outcomes.refused.read() {
        if let Some(targets) = owner_of(&buyers, r.player) {
            to.refusals.write(ToClients {
                targets,
                message: NetPromptRefused {
                    prompt: r.prompt,
                    product_id: r.product_id,
                    reason: r.reason.clone(),
                },
            });
            // Whatever the client thought, this is the prompt it has.
            due.0.push(r.player);
        }
    }
    for r in outcomes.resolved.read() {
        // A grant is the account's: told to the connection whose player holds the session.
        if let Some(targets) = sessions
            .player(r.receipt.player_id)
            .and_then(|player| owner_of(&buyers, player))
        {
            to.receipts.write(ToClients {
                targets,
                message: NetReceiptResolved {
                    receipt: r.receipt.clone(),
                },
            });
        }
    }
    for r in outcomes.rejected.read() {
        if let Some(targets) = sessions
            .player(r.receipt.player_id)
            .and_then(|player| owner_of(&buyers, player))
        {
            to.rejections.write(ToClients {
                targets,
                message: NetReceiptRejected {
                    receipt: r.receipt.clone(),
                    reason: r.reason.clone(),
                },
            });
        }
    }
    for t in outcomes.top_ups.read() {
        if let Some(targets) = owner_of(&buyers, t.player) {
            to.top_ups.write(ToClients {
                targets,
                message: NetTopUpRequested {
                    prompt: t.prompt,
                    product_id: t.product_id,
                    missing: t.missing,
                },
            });
        }
    }
}

/// A client that disconnects with a prompt waiting for its answer is never charged for it: the
/// prompt is cancelled. (One whose charge went through keeps the receipt, granted on its next
/// visit like any other.)
fn cancel_prompts_of_departed_client(
    remove: On<Remove, ConnectedClient>,
    owners: Query<(Entity, &BuyerClient, &OpenPrompt)>,
    mut buckets: ResMut<PromptBuckets>,
    mut answers: MessageWriter<PromptAnswer>,
) {
    buckets.prompts.remove(&remove.entity);
    buckets.answers.remove(&remove.entity);
    for (player, owner, prompt) in &owners {
        if owner.0 == remove.entity && prompt.state == PromptState::AwaitingConfirmation {
            answers.write(PromptAnswer {
                player,
                prompt: prompt.id,
                action: PromptAction::Cancel,
            });
        }
    }
}
