//! What the service was asked to do outside a prompt (grants, simulated purchases, retries),
//! carried out once a frame.

use bevy::prelude::*;

use super::MarketplaceService;
use crate::ids::{ProductId, RequestId, UserId};
use crate::ledger::{
    AdjustBalance, ChargeRequest, CreditRequest, HistoryRequest, RefundRequest, ReverseCredit,
    SalesQuery,
};
use crate::link::Ledger;
use crate::players::{DeliveryQueue, PlayerSession, Sessions};
use crate::receipt::ProductPurchaseChannel;
use crate::settings::MarketplaceSettings;

pub(crate) enum ServiceRequest {
    /// A page of purchase history, answered by a message.
    History(HistoryRequest),
    /// A sales report, answered by a message.
    Sales(SalesQuery),
    /// A store's refund of a top-up, answered by a message.
    ReverseCredit(ReverseCredit),
    AdjustBalance(UserId, i64, String),
    Credit {
        user: UserId,
        amount: u64,
        source: String,
        order_id: String,
    },
    Refund(crate::ids::PurchaseId, String),
    SimulatePurchase(UserId, ProductId),
    RetryNow(Entity),
}

pub(crate) fn apply_service_requests(
    mut service: ResMut<MarketplaceService>,
    mut ledger: ResMut<Ledger>,
    mut deliveries: ResMut<DeliveryQueue>,
    settings: Res<MarketplaceSettings>,
    sessions: Res<Sessions>,
    players: Query<&PlayerSession>,
) {
    for request in std::mem::take(&mut service.requests) {
        match request {
            ServiceRequest::AdjustBalance(user, delta, reason) => {
                ledger.send(AdjustBalance {
                    user,
                    delta,
                    reason,
                    starting_balance: settings.starting_balance,
                });
            }
            ServiceRequest::SimulatePurchase(user, product_id) => {
                ledger.send(ChargeRequest {
                    request_id: RequestId::new(),
                    user,
                    product_id,
                    product_name: service
                        .get_product_info(product_id)
                        .map(|p| p.name)
                        .unwrap_or_default(),
                    price: 0,
                    test_purchase: true,
                    place_id: settings.place_id,
                    channel: ProductPurchaseChannel::InExperience,
                    starting_balance: settings.starting_balance,
                    // A player here buys under their lease; one who is away gets the receipt
                    // on their next visit, wherever it is.
                    fence: sessions
                        .by_user
                        .get(&user)
                        .and_then(|&e| players.get(e).ok())
                        .and_then(|s| s.fence(&settings.server_id)),
                });
            }
            ServiceRequest::Credit {
                user,
                amount,
                source,
                order_id,
            } => {
                ledger.send(CreditRequest {
                    user,
                    amount,
                    source,
                    order_id,
                    starting_balance: settings.starting_balance,
                });
            }
            ServiceRequest::Refund(purchase_id, reason) => {
                ledger.send(RefundRequest {
                    purchase_id,
                    reason,
                    place: Some(settings.place_id),
                });
            }
            ServiceRequest::RetryNow(player) => deliveries.now.push(player),
            ServiceRequest::History(request) => {
                ledger.send(request);
            }
            ServiceRequest::Sales(query) => {
                ledger.send(query);
            }
            ServiceRequest::ReverseCredit(request) => {
                ledger.send(request);
            }
        }
    }
}
