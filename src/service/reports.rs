//! Reports asked through the service — purchase history, sales — and their answers.

use bevy::prelude::*;

use crate::ids::UserId;
use crate::ledger::{
    HistoryCursor, HistoryFilter, HistoryPage, HistoryRequest, SalesQuery, SalesRow,
};
use crate::link::LedgerAnswers;
use crate::settings::FrameDeadline;

/// The answer to [`MarketplaceService::request_purchase_history`](crate::MarketplaceService::request_purchase_history).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct PurchaseHistoryReady {
    /// Whose history.
    pub user_id: UserId,
    /// The filter asked with.
    pub filter: HistoryFilter,
    /// The page asked for, from 0.
    pub page: u32,
    /// The cursor asked from, if the page was asked from one.
    pub after: Option<HistoryCursor>,
    /// The page, or why the ledger could not read it.
    pub result: Result<HistoryPage, String>,
}

/// The answer to [`MarketplaceService::request_sales_report`](crate::MarketplaceService::request_sales_report).
#[derive(Message, Clone, Debug, PartialEq, Eq)]
pub struct SalesReportReady {
    /// The question.
    pub query: SalesQuery,
    /// Rows by bucket then product, or why the ledger could not read them.
    pub result: Result<Vec<SalesRow>, String>,
}

/// Tells the game the ledger's answers to history and sales questions.
pub(crate) fn handle_report_answers(
    mut histories: ResMut<LedgerAnswers<HistoryRequest>>,
    mut sales: ResMut<LedgerAnswers<SalesQuery>>,
    mut history_ready: MessageWriter<PurchaseHistoryReady>,
    mut sales_ready: MessageWriter<SalesReportReady>,
    deadline: Res<FrameDeadline>,
) {
    for answer in histories.drain_within(&deadline) {
        let HistoryRequest {
            user,
            filter,
            page,
            after,
        } = answer.call;
        history_ready.write(PurchaseHistoryReady {
            user_id: user,
            filter,
            page,
            after,
            result: match answer.result {
                Ok(Ok(page)) => Ok(page),
                Ok(Err(invalid)) => Err(invalid.to_string()),
                Err(e) => Err(e.to_string()),
            },
        });
    }
    for answer in sales.drain_within(&deadline) {
        sales_ready.write(SalesReportReady {
            query: answer.call,
            result: answer.result.map_err(|e| e.to_string()),
        });
    }
}
