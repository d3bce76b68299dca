//! `marketplace`: the admin tool for a bevy_marketplace ledger — purchase history, sales, refunds,
//! store top-ups, pending receipts, integrity checks, catalog checks. It works on a ledger while
//! games run on it (SQLite in WAL mode, PostgreSQL) and never takes a player's session lease:
//! games online notice its refunds and top-ups within their refresh interval.
//!
//! ```sh
//! cargo run --features cli --bin marketplace -- --ledger marketplace.sqlite3 sales --csv
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use bevy_marketplace::ledger::{
    Audit, CreditRequest, HistoryFilter, HistoryRequest, LedgerAudit, LedgerCall, LedgerError,
    LedgerStore, RefundRequest, ReverseCredit, SalesBucket, SalesQuery, SqliteLedger, sales_csv,
};
use bevy_marketplace::{Catalog, ProductId, PurchaseId, ReceiptState, UserId};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "marketplace",
    version,
    about = "Reads, checks and corrects a bevy_marketplace ledger"
)]
struct Cli {
    /// An SQLite ledger file.
    #[arg(long, value_name = "FILE", conflicts_with = "postgres")]
    ledger: Option<PathBuf>,
    /// A PostgreSQL ledger (URL or `key=value` string; needs the `postgres` feature).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A player's purchases, newest first, 50 a page.
    History {
        /// The player's user id.
        user: i64,
        /// Only this product.
        #[arg(long)]
        product: Option<i64>,
        /// Only receipts in this state.
        #[arg(long, value_enum)]
        state: Option<State>,
        /// Which page, from 0.
        #[arg(long, default_value_t = 0)]
        page: u32,
        /// One JSON object a line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Units, premium currency, refunds and test purchases per product per day or hour.
    Sales {
        /// From this UTC date or time (`2026-11-01`, `2026-11-01T12:00:00Z`), inclusive.
        #[arg(long)]
        from: Option<String>,
        /// Up to this UTC date or time, exclusive.
        #[arg(long)]
        to: Option<String>,
        /// Per day or per hour.
        #[arg(long, value_enum, default_value_t = By::Day)]
        by: By,
        /// CSV with a header row instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Refunds a purchase: the buyer gets the premium currency back, and a granted purchase's
    /// effect is taken back by its refund handler on the buyer's server (now if they are online,
    /// when they join if not).
    Refund {
        /// The receipt's purchase id.
        purchase_id: String,
        /// Why (kept with the receipt and in the balance journal).
        #[arg(long)]
        reason: String,
    },
    /// Credits premium currency bought through a store, once per store order.
    Credit {
        /// The player's user id.
        user: i64,
        /// How much premium currency.
        amount: u64,
        /// The store (`steam`, `app_store`, `web`).
        #[arg(long)]
        source: String,
        /// The store's order id: crediting the same order again changes nothing.
        #[arg(long)]
        order_id: String,
        /// The balance a player the ledger has never seen starts with (set it to the game's
        /// `MarketplacePlugin::starting_balance`).
        #[arg(long, default_value_t = 0)]
        starting_balance: u64,
    },
    /// The store refunded a top-up: takes its currency back (never below zero; the rest is
    /// recorded as the player's shortfall).
    ReverseCredit {
        /// The store.
        #[arg(long)]
        source: String,
        /// The store's order id.
        #[arg(long)]
        order_id: String,
    },
    /// Receipts not granted yet (of one player, or of everyone).
    Pending {
        /// The player's user id.
        user: Option<i64>,
    },
    /// Checks that the ledger adds up; exits 1 on any violation.
    Check,
    /// Validates a catalog RON file with the same errors as the game.
    CatalogCheck {
        /// The catalog file.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum State {
    Pending,
    Granted,
    Refunded,
    /// Rejected by its handler and refunded.
    Rejected,
}

#[derive(Clone, Copy, ValueEnum)]
enum By {
    Day,
    Hour,
}

/// An open ledger, read without taking any lease.
enum Store {
    Sqlite(SqliteLedger),
    #[cfg(feature = "postgres")]
    Postgres(Box<bevy_marketplace::ledger::PostgresLedger>),
}

impl Store {
    fn open(cli: &Cli) -> Result<Self, String> {
        match (&cli.ledger, &cli.postgres) {
            (Some(path), None) => {
                if !path.exists() {
                    return Err(format!("{}: no such ledger file", path.display()));
                }
                SqliteLedger::open(path)
                    .map(Store::Sqlite)
                    .map_err(|e| e.to_string())
            }
            #[cfg(feature = "postgres")]
            (None, Some(url)) => bevy_marketplace::ledger::PostgresLedger::connect(url.as_str())
                .map(|store| Store::Postgres(Box::new(store)))
                .map_err(|e| e.to_string()),
            #[cfg(not(feature = "postgres"))]
            (None, Some(_)) => Err(
                "this build has no PostgreSQL support: build with `--features cli,postgres`".into(),
            ),
            _ => Err("say which ledger: --ledger FILE or --postgres URL".into()),
        }
    }

    fn store(&mut self) -> &mut dyn LedgerStore {
        match self {
            Store::Sqlite(store) => store,
            #[cfg(feature = "postgres")]
            Store::Postgres(store) => store.as_mut(),
        }
    }

    /// Asks one read-only question. SQLite answers outside a write transaction, so games on the
    /// same file are never held up; PostgreSQL reads a snapshot.
    fn ask<C: LedgerCall>(&mut self, question: C) -> Result<C::Reply, LedgerError> {
        bevy_marketplace::ledger::read(self.store(), question)
    }

    /// Applies one change in its own transaction (waiting for a game's transaction on SQLite).
    fn change<C: LedgerCall>(&mut self, change: C) -> Result<C::Reply, LedgerError> {
        bevy_marketplace::ledger::call(self.store(), change)
    }

    fn audit(&mut self) -> Result<LedgerAudit, LedgerError> {
        self.ask(Audit)
    }
}

/// A UTC date (`2026-11-01`) or time (RFC 3339) as Unix ms.
fn parse_time(text: &str, flag: &str) -> Result<i64, String> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .map_err(|e| format!("{flag} {text:?}: {e} (expected 2026-11-01 or 2026-11-01T12:00:00Z)"))
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| format!("{flag} {text:?} is before 1970"))
        })
}

fn time_of(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
    .to_string()
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    if let Command::CatalogCheck { file } = &cli.command {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: cannot read it: {e}", file.display()))?;
        let catalog =
            Catalog::from_ron_str(&text, &file.display().to_string()).map_err(|e| e.to_string())?;
        println!(
            "{}: {} products, valid",
            file.display(),
            catalog.products().len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut store = Store::open(&cli)?;
    let fail = |e: LedgerError| e.to_string();
    match cli.command {
        Command::History {
            user,
            product,
            state,
            page,
            json,
        } => {
            let filter = HistoryFilter {
                product: product.map(ProductId),
                state: state.map(|s| match s {
                    State::Pending => ReceiptState::Pending,
                    State::Granted => ReceiptState::Granted,
                    State::Refunded => ReceiptState::Refunded,
                    State::Rejected => ReceiptState::Rejected,
                }),
                ..HistoryFilter::default()
            };
            let history = store
                .ask(HistoryRequest {
                    user: UserId(user),
                    filter,
                    page,
                    after: None,
                })
                .map_err(fail)?
                .map_err(|e| e.to_string())?;
            for entry in &history.entries {
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(entry).map_err(|e| e.to_string())?
                    );
                } else {
                    println!(
                        "{}  {:<32}  {:>10} {:<24} {:>8}  {:?}{}",
                        time_of(entry.purchased_at_ms),
                        entry.receipt.purchase_id,
                        entry.receipt.product_id,
                        entry.product_name,
                        entry.receipt.currency_spent,
                        entry.state,
                        entry
                            .refund
                            .as_ref()
                            .map_or(String::new(), |r| format!(" ({})", r.reason))
                    );
                }
            }
            if !json {
                println!(
                    "page {page}: {} purchase(s){}",
                    history.entries.len(),
                    if history.is_finished {
                        ", the last page"
                    } else {
                        "; more with --page"
                    }
                );
            }
        }
        Command::Sales { from, to, by, csv } => {
            let query = SalesQuery {
                from_ms: from.as_deref().map_or(Ok(0), |t| parse_time(t, "--from"))?,
                to_ms: to
                    .as_deref()
                    .map_or(Ok(i64::MAX), |t| parse_time(t, "--to"))?,
                bucket: match by {
                    By::Day => SalesBucket::Day,
                    By::Hour => SalesBucket::Hour,
                },
            };
            if query.from_ms >= query.to_ms {
                return Err(format!(
                    "--from {} is not before --to {}: the range is empty",
                    from.as_deref().unwrap_or("(the beginning)"),
                    to.as_deref().unwrap_or("(now)")
                ));
            }
            let rows = store.ask(query).map_err(fail)?;
            if csv {
                print!("{}", sales_csv(&rows));
            } else {
                println!(
                    "{:<20} {:>10} {:>7} {:>10} {:>9} {:>10} {:>9} {:>10} {:>10} {:>6}",
                    "from (UTC)",
                    "product",
                    "units",
                    "currency",
                    "refunds",
                    "refunded",
                    "rejects",
                    "rejected",
                    "net",
                    "tests"
                );
                for r in &rows {
                    println!(
                        "{:<20} {:>10} {:>7} {:>10} {:>9} {:>10} {:>9} {:>10} {:>10} {:>6}",
                        time_of(r.bucket_start_ms),
                        r.product_id,
                        r.units,
                        r.currency,
                        r.refunded_units,
                        r.refunded_currency,
                        r.rejected_units,
                        r.rejected_currency,
                        r.net(),
                        r.test_units
                    );
                }
            }
        }
        Command::Refund {
            purchase_id,
            reason,
        } => {
            let request = RefundRequest {
                purchase_id: PurchaseId(purchase_id),
                reason,
                place: None,
            };
            match store.change(request).map_err(fail)? {
                Ok(bevy_marketplace::ledger::RefundOutcome {
                    receipt,
                    balance,
                    clawback,
                }) => println!(
                    "refunded {} to user {} (balance now {balance}); its effect: {}",
                    receipt.currency_spent,
                    receipt.player_id,
                    match clawback {
                        bevy_marketplace::Clawback::Pending =>
                            "to be taken back by the product's refund handler on the player's server",
                        _ => "none (it was never granted)",
                    }
                ),
                Err(e) => return Err(e.to_string()),
            }
        }
        Command::Credit {
            user,
            amount,
            source,
            order_id,
            starting_balance,
        } => {
            let request = CreditRequest {
                user: UserId(user),
                amount,
                source,
                order_id,
                starting_balance,
            };
            match store.change(request).map_err(fail)? {
                Ok(bevy_marketplace::ledger::CreditOutcome {
                    balance,
                    shortfall,
                    already_credited,
                }) => println!(
                    "{} user {user}: balance {balance}, shortfall {shortfall}",
                    if already_credited {
                        "already credited before, nothing changed;"
                    } else {
                        "credited;"
                    }
                ),
                Err(e) => return Err(e.to_string()),
            }
        }
        Command::ReverseCredit { source, order_id } => {
            match store
                .change(ReverseCredit { source, order_id })
                .map_err(fail)?
            {
                Ok(bevy_marketplace::ledger::ReversalOutcome {
                    record,
                    balance,
                    shortfall,
                    already_reversed,
                }) => {
                    let Some(reversal) = record.reversal else {
                        return Err(format!("order {} has no reversal", record.order_id));
                    };
                    println!(
                        "{} user {}: took {} back, {} owed; balance {balance}, shortfall {shortfall}",
                        if already_reversed {
                            "already reversed before, nothing changed;"
                        } else {
                            "reversed;"
                        },
                        record.user,
                        reversal.taken,
                        reversal.shortfall
                    )
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Command::Pending { user } => {
            let audit = store.audit().map_err(fail)?;
            let mut count = 0;
            for r in audit.receipts.iter().filter(|r| {
                r.state == ReceiptState::Pending && user.is_none_or(|u| r.info.player_id.0 == u)
            }) {
                count += 1;
                println!(
                    "{}  {}  user {}  product {} ({})  {}",
                    time_of(r.purchased_at_ms),
                    r.info.purchase_id,
                    r.info.player_id,
                    r.info.product_id,
                    r.product_name,
                    r.info.currency_spent
                );
            }
            println!("{count} pending receipt(s)");
        }
        Command::Check => {
            let report = store.audit().map_err(fail)?.check();
            println!(
                "{} accounts, {} receipts, {} journal entries: {}",
                report.accounts,
                report.receipts,
                report.journal_entries,
                if report.is_sound() {
                    "the ledger adds up".to_owned()
                } else {
                    format!("{} problem(s)", report.problems.len())
                }
            );
            for problem in &report.problems {
                println!("  {problem}");
            }
            if !report.is_sound() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::CatalogCheck { .. } => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("marketplace: {error}");
            ExitCode::from(2)
        }
    }
}
