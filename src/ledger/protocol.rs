//! The ledger's protocol: one request type per question the game (or a tool) asks, each with
//! its own reply type ([`LedgerCall::Reply`]), and the two enums a store sees.
//!
//! The game never matches a reply against the request it answers: the storage worker hands each
//! answer back typed ([`Answer<C>`]), to the stage that sent `C`.

use std::fmt::Debug;

use super::{
    ChangeFeed, CreditError, CreditOutcome, CreditRequest, HistoryCursor, HistoryFilter,
    HistoryPage, InvalidText, LeaseFence, LedgerAudit, LedgerError, PlayerSnapshot, ReadChanges,
    RefundError, RefundOutcome, RefundRequest, ReversalOutcome, SalesQuery, SalesRow, ServerId,
};
use crate::ids::{PlaceId, ProductId, PurchaseId, RequestId, UserId};
use crate::receipt::{CurrencyType, ProductPurchaseChannel, ReceiptInfo};

/// A request to the ledger with its own reply type. Every request type of the protocol
/// implements it; [`LedgerRequest`] and [`LedgerReply`] are the sums a store sees.
pub trait LedgerCall: Into<LedgerRequest> + Clone + Debug + Send + Sync + 'static {
    /// What the ledger answers.
    type Reply: Clone + Debug + PartialEq + Send + Sync + 'static;
    /// This call's reply as a store gives it.
    fn wrap(reply: Self::Reply) -> LedgerReply;
    /// This call's reply out of a store's answer; an answer of another kind comes back as `Err`
    /// (a store that broke the protocol).
    fn unwrap(reply: LedgerReply) -> Result<Self::Reply, Box<LedgerReply>>;
}

/// One request and its outcome, typed: the call, returned to its sender, and what the ledger
/// answered (or the storage failure that kept it from answering).
#[derive(Clone, Debug)]
pub(crate) struct Answer<C: LedgerCall> {
    /// The request as it was sent.
    pub(crate) call: C,
    /// The reply, or why there is none.
    pub(crate) result: Result<C::Reply, LedgerError>,
    /// The number the game gave the request when it sent it (requests are applied in that order).
    pub(crate) seq: u64,
}

impl<C: LedgerCall> Answer<C> {
    fn new(call: C, result: Result<LedgerReply, LedgerError>, seq: u64) -> Self {
        let result = result.and_then(|reply| {
            C::unwrap(reply).map_err(|other| {
                LedgerError::Storage(format!(
                    "the store answered {call:?} with a reply to another request: {other:?}"
                ))
            })
        });
        Self { call, result, seq }
    }
}

macro_rules! ledger_calls {
    ($( $(#[$doc:meta])* $variant:ident($call:ty) -> $reply:ty; )*) => {
        /// One request to the ledger, as a store sees it.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum LedgerRequest {
            $( $(#[$doc])* $variant($call), )*
        }

        /// The answer to one request, as a store gives it: the variant of its request.
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub enum LedgerReply {
            $( $(#[$doc])* $variant($reply), )*
        }

        $(
            impl From<$call> for LedgerRequest {
                fn from(call: $call) -> Self {
                    Self::$variant(call)
                }
            }

            impl LedgerCall for $call {
                type Reply = $reply;
                fn wrap(reply: $reply) -> LedgerReply {
                    LedgerReply::$variant(reply)
                }
                fn unwrap(reply: LedgerReply) -> Result<$reply, Box<LedgerReply>> {
                    match reply {
                        LedgerReply::$variant(reply) => Ok(reply),
                        other => Err(Box::new(other)),
                    }
                }
            }
        )*

        /// A request paired with its outcome, typed by the request: what the worker hands back.
        #[derive(Clone, Debug)]
        pub(crate) enum Completed {
            $( $variant(Answer<$call>), )*
        }

        impl Completed {
            /// Pairs `request` (sent as number `seq`) with what the store answered.
            pub(crate) fn new(
                request: LedgerRequest,
                result: Result<LedgerReply, LedgerError>,
                seq: u64,
            ) -> Self {
                match request {
                    $( LedgerRequest::$variant(call) => Self::$variant(Answer::new(call, result, seq)), )*
                }
            }
        }
    };
}

ledger_calls! {
    /// A player joined: take their session lease and load their data.
    OpenSession(OpenSession) -> OpenSessionReply;
    /// Give a session lease back.
    ReleaseSession(ReleaseSession) -> ();
    /// Debit and create a receipt.
    Charge(ChargeRequest) -> ChargeReply;
    /// Persist a player's state and the grants and clawbacks it includes.
    Save(SaveRequest) -> SaveReply;
    /// Credit (or debit) premium currency outside a purchase.
    AdjustBalance(AdjustBalance) -> AdjustReply;
    /// Refund a purchase.
    Refund(RefundRequest) -> Result<RefundOutcome, RefundError>;
    /// Credit premium currency bought through a store.
    Credit(CreditRequest) -> Result<CreditOutcome, CreditError>;
    /// Take a store top-up back.
    ReverseCredit(ReverseCredit) -> Result<ReversalOutcome, CreditError>;
    /// Read a player's balance, pending receipts and pending clawbacks again.
    ReadPlayer(ReadPlayer) -> PlayerReading;
    /// Which players' data changed since a point of the change feed.
    ReadChanges(ReadChanges) -> ChangeFeed;
    /// Read everything.
    Audit(Audit) -> LedgerAudit;
    /// A page of a player's purchase history.
    History(HistoryRequest) -> Result<HistoryPage, InvalidText>;
    /// Sales per product per day or hour.
    Sales(SalesQuery) -> Vec<SalesRow>;
}

impl LedgerRequest {
    /// The user this request is about, if it names one (a refund or a reversal names a receipt
    /// or an order, whose user is known once it is read).
    pub fn user(&self) -> Option<UserId> {
        match self {
            Self::OpenSession(c) => Some(c.user),
            Self::ReleaseSession(c) => Some(c.user),
            Self::Charge(c) => Some(c.user),
            Self::Save(c) => Some(c.user),
            Self::AdjustBalance(c) => Some(c.user),
            Self::Credit(c) => Some(c.user),
            Self::ReadPlayer(c) => Some(c.user),
            Self::History(c) => Some(c.user),
            Self::Refund(_)
            | Self::ReverseCredit(_)
            | Self::Audit(_)
            | Self::Sales(_)
            | Self::ReadChanges(_) => None,
        }
    }

    /// A report for the people who run the game (purchase history, sales): it only reads, may
    /// read much, and is answered by the ledger's reader when the store has one.
    pub(crate) fn is_report(&self) -> bool {
        matches!(self, Self::History(_) | Self::Sales(_))
    }

    /// Whether the request reads the stored ledger as a whole rather than rows a batch can gather
    /// up front (audits, history, sales).
    #[cfg(feature = "postgres")]
    pub(crate) fn reads_ledger(&self) -> bool {
        matches!(
            self,
            Self::Audit(_) | Self::History(_) | Self::Sales(_) | Self::ReadChanges(_)
        )
    }
}

/// A player joined: take their session lease and load their balance, persisted state, pending
/// receipts and pending clawbacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSession {
    /// The player.
    pub user: UserId,
    /// This server.
    pub server: ServerId,
    /// Lease length in milliseconds.
    pub lease_ms: i64,
    /// Balance given to a user the ledger has never seen.
    pub starting_balance: u64,
}

/// The answer to [`OpenSession`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenSessionReply {
    /// The session is ours; here is the player's stored data.
    Opened(OpenedSession),
    /// Another server holds the player's lease.
    Busy {
        /// The holder.
        owner: String,
        /// When its lease ends (ms since the Unix epoch).
        expires_at_ms: i64,
    },
}

/// A player's stored data, loaded with their session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedSession {
    /// Premium balance.
    pub balance: u64,
    /// Persisted components (empty for a new user).
    pub state: PlayerSnapshot,
    /// Receipts not yet granted.
    pub pending: Vec<ReceiptInfo>,
    /// Refunded receipts whose effect is still to be taken back.
    pub clawbacks: Vec<ReceiptInfo>,
    /// Currency owed from reversed top-ups the balance could not cover.
    pub shortfall: u64,
    /// The new lease's token: saves and charges must carry it.
    pub lease_token: i64,
}

/// The player left before their session finished opening, or the server gives their lease back
/// without a save: release the lease if this server holds it. Answered with `()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseSession {
    /// The player.
    pub user: UserId,
    /// This server.
    pub server: ServerId,
    /// The lease's token, when known; `None` releases whichever lease this server holds.
    pub token: Option<i64>,
}

/// Charge a user for a product and create its receipt, atomically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Idempotency key: a second charge with this id returns the first receipt.
    pub request_id: RequestId,
    /// The buyer.
    pub user: UserId,
    /// The product.
    pub product_id: ProductId,
    /// Its name now, kept with the receipt for purchase history.
    pub product_name: String,
    /// Amount to debit (0 for test purchases).
    pub price: u64,
    /// Test purchase: free, flagged on the receipt.
    pub test_purchase: bool,
    /// Place of purchase.
    pub place_id: PlaceId,
    /// How it was bought.
    pub channel: ProductPurchaseChannel,
    /// Balance given to a user the ledger has never seen (before the debit).
    pub starting_balance: u64,
    /// The buyer's session lease, held by the charging game server: a server that lost the lease
    /// is refused ([`ChargeReply::LeaseLost`]) and takes no money. `None` for a purchase made
    /// outside any game server (a store page, a tool, a debug grant for a player who is away):
    /// its receipt is delivered by the player's session.
    pub fence: Option<LeaseFence>,
}

impl ChargeRequest {
    /// The receipt this charge creates.
    pub fn new_receipt(&self) -> ReceiptInfo {
        ReceiptInfo {
            purchase_id: PurchaseId::of_request(self.request_id),
            player_id: self.user,
            product_id: self.product_id,
            place_id_where_purchased: self.place_id,
            currency_spent: self.price,
            currency_type: CurrencyType::Premium,
            product_purchase_channel: self.channel,
            is_test_purchase: self.test_purchase,
        }
    }
}

/// The answer to [`ChargeRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChargeReply {
    /// Charged; the receipt exists.
    Charged {
        /// The receipt.
        receipt: ReceiptInfo,
        /// Balance after the debit.
        balance: u64,
        /// `true` if this request id had already charged (nothing was debited now).
        replayed: bool,
        /// The receipt still waits for its grant (`false` for a replay of a receipt granted or
        /// refunded since: it must not be delivered from this answer).
        pending: bool,
    },
    /// Not enough premium currency; nothing changed.
    InsufficientFunds {
        /// Balance now.
        balance: u64,
        /// Price asked.
        price: u64,
    },
    /// The charging server no longer holds the buyer's lease; nothing was written.
    LeaseLost {
        /// The holder now, if any.
        owner: Option<String>,
    },
    /// The product's name holds text no store can keep; nothing was written.
    InvalidText(InvalidText),
}

/// Save a player's persisted state, marking receipts granted in the same transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveRequest {
    /// Whose state.
    pub user: UserId,
    /// The lease held by the server doing the save.
    pub fence: LeaseFence,
    /// The persisted components now.
    pub state: PlayerSnapshot,
    /// Receipts granted in memory whose effects `state` includes.
    pub granted: Vec<PurchaseId>,
    /// Refunded receipts whose clawback this save settles:
    /// [`Clawback::Done`](super::Clawback::Done) when the refund handler's changes are in
    /// `state`, [`Clawback::Kept`](super::Clawback::Kept) when the product has no refund handler.
    pub settled: Vec<(PurchaseId, super::Clawback)>,
    /// Pending receipts their handlers rejected, with the reason: each is refunded and marked
    /// [`Rejected`](crate::ReceiptState::Rejected) with this save, once. `state` holds none of
    /// their handlers' changes.
    pub rejected: Vec<(PurchaseId, String)>,
    /// Release the session lease (the player left).
    pub release: bool,
    /// New lease length in milliseconds, counted from the save.
    pub lease_ms: i64,
}

/// The answer to [`SaveRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaveReply {
    /// Saved; the listed receipts are granted.
    Saved {
        /// Receipts this save moved from pending to granted.
        newly_granted: Vec<PurchaseId>,
        /// Refunds whose clawback this save settled.
        newly_settled: Vec<PurchaseId>,
        /// Of the receipts the save rejected, those now rejected (by this save, or by an earlier
        /// attempt of it whose answer was lost). One missing was refunded or granted first.
        rejected: Vec<PurchaseId>,
        /// The buyer's balance after the save (with the rejected receipts' currency back).
        balance: u64,
    },
    /// Receipts this save would grant were refunded before any grant of theirs committed: their
    /// currency is back, so they are never granted. Nothing was written; the game undoes their
    /// handlers' changes and saves again without them.
    GrantsRefunded {
        /// The refunded receipts.
        refunded: Vec<PurchaseId>,
    },
    /// The save holds text no store can keep; nothing was written.
    InvalidText(InvalidText),
    /// The saving server no longer holds the player's lease; nothing was written.
    LeaseLost {
        /// The holder now, if any.
        owner: Option<String>,
    },
}

/// Credit (or debit, if negative) premium currency outside a purchase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdjustBalance {
    /// Whose balance.
    pub user: UserId,
    /// Signed amount.
    pub delta: i64,
    /// Why, kept in the balance journal.
    pub reason: String,
    /// Balance given to a user the ledger has never seen (before the adjustment).
    pub starting_balance: u64,
}

/// The answer to [`AdjustBalance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdjustReply {
    /// Balance changed.
    Adjusted {
        /// Balance now.
        balance: u64,
    },
    /// The balance cannot go below zero; nothing changed.
    TooLow {
        /// Balance now.
        balance: u64,
    },
    /// The balance cannot go above [`MAX_BALANCE`](super::MAX_BALANCE); nothing changed.
    TooHigh {
        /// Balance now.
        balance: u64,
    },
    /// The reason holds text no store can keep; nothing changed.
    InvalidText(InvalidText),
}

/// The store refunded a top-up: take its currency back (never below zero; the rest becomes the
/// account's shortfall). Reversing an order twice changes nothing the second time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReverseCredit {
    /// The store.
    pub source: String,
    /// The store's order id.
    pub order_id: String,
}

/// Read a user's pending receipts, pending clawbacks and balance again (after an uncertain
/// charge, and when something may have changed outside this game).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadPlayer {
    /// Whose.
    pub user: UserId,
}

/// The answer to [`ReadPlayer`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlayerReading {
    /// Receipts not yet granted, oldest first.
    pub pending: Vec<ReceiptInfo>,
    /// Refunded receipts whose effect is still to be taken back.
    pub clawbacks: Vec<ReceiptInfo>,
    /// Balance now (0 for a user the ledger has never seen).
    pub balance: u64,
    /// Shortfall now.
    pub shortfall: u64,
}

/// Read everything, for audits, tests and tools. Answered with a [`LedgerAudit`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audit;

impl HistoryRequest {
    /// `Ok` unless the cursor names a purchase id no store can keep.
    pub(crate) fn cursor_keepable(&self) -> Result<(), InvalidText> {
        match &self.after {
            Some(cursor) => super::keepable("history cursor", cursor.purchase_id.as_str()),
            None => Ok(()),
        }
    }
}

/// A page of a player's purchase history, newest first. Answered with a [`HistoryPage`], or
/// refused when the cursor's purchase id holds text no store can keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    /// Whose.
    pub user: UserId,
    /// Which purchases.
    pub filter: HistoryFilter,
    /// Which page, from 0 ([`HISTORY_PAGE_SIZE`](super::HISTORY_PAGE_SIZE) entries each). With
    /// `after` it only numbers the page.
    pub page: u32,
    /// Start right after this purchase (the last of the page before) instead of skipping `page`
    /// pages: a deep page then costs what the first does.
    pub after: Option<HistoryCursor>,
}
