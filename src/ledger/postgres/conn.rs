//! One connection to PostgreSQL on which every round trip has a deadline.
//!
//! The ledger drives `tokio-postgres` on a small runtime of its own and waits for each answer at
//! most [`PostgresOptions::response_timeout`]: a database that stops answering without closing
//! the connection (frozen, or a network path that swallows packets) fails the request instead of
//! blocking the storage worker — and with it the game's exit — for as long as the socket lives.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Row, Statement};

use super::PostgresOptions;

/// What went wrong talking to the database.
#[derive(Debug)]
pub(super) enum PgError {
    /// The database or the connection reported an error.
    Db(tokio_postgres::Error),
    /// No answer within the deadline; the connection is dropped.
    TimedOut(&'static str, Duration),
    /// The runtime could not be made.
    Io(std::io::Error),
    /// A row the ledger cannot read (a value its schema would not let in).
    Corrupt(String),
    /// The connection of the transaction in progress was lost; the transaction is gone.
    Lost,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Db(e) => match e.as_db_error() {
                Some(db) => write!(f, "{} ({})", db.message(), db.code().code()),
                None => write!(f, "{e}"),
            },
            Self::TimedOut(what, after) => write!(
                f,
                "no answer from the database to {what} within {after:?}; the connection was dropped"
            ),
            Self::Io(e) => write!(f, "{e}"),
            Self::Corrupt(what) => write!(f, "unreadable row: {what}"),
            Self::Lost => write!(f, "the connection to the database was lost mid-transaction"),
        }
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// A connection whose every round trip has a deadline.
pub(super) struct Conn {
    // Declared before the runtime, so the client goes first and the connection task (dropped with
    // the runtime) closes the socket.
    client: Client,
    runtime: Runtime,
    response_timeout: Duration,
    /// A round trip timed out or the connection closed: the session's state is unknown.
    broken: bool,
    statements: HashMap<&'static str, Statement>,
}

/// Waits for `work` at most `deadline`.
fn within<T>(
    runtime: &Runtime,
    deadline: Duration,
    what: &'static str,
    work: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PgError> {
    // The timer is made inside the runtime, which it needs.
    match runtime.block_on(async { tokio::time::timeout(deadline, work).await }) {
        Ok(result) => result.map_err(PgError::Db),
        Err(_) => Err(PgError::TimedOut(what, deadline)),
    }
}

impl Conn {
    /// Connects with the options' timeouts, and sets the session's own (`lock_timeout`,
    /// `statement_timeout`, and `idle_in_transaction_session_timeout` unless the connection
    /// string set one).
    pub(super) fn connect(options: &PostgresOptions) -> Result<Self, PgError> {
        let mut config = Config::from_str(&options.url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(options.dead_peer_timeout);
        }
        // Keepalives find a peer that vanished while the connection was idle.
        let probe = (options.dead_peer_timeout / 4).max(Duration::from_secs(1));
        config
            .keepalives(true)
            .keepalives_idle(probe)
            .keepalives_interval(probe)
            .keepalives_retries(3);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(PgError::Io)?;
        // The login itself must not hang either.
        let deadline = options
            .connect_timeout
            .saturating_add(options.response_timeout);
        let (client, connection) = within(&runtime, deadline, "the login", config.connect(NoTls))?;
        runtime.spawn(async move {
            let _ = connection.await;
        });
        let mut conn = Self {
            client,
            runtime,
            response_timeout: options.response_timeout,
            broken: false,
            statements: HashMap::new(),
        };
        let idle: Option<String> = conn
            .query(
                "SELECT current_setting('idle_in_transaction_session_timeout')",
                &[],
            )?
            .first()
            .map(|row| row.try_get(0))
            .transpose()?;
        let mut settings = format!(
            // Plans made for each call's own arguments: a plan cached while a table was small
            // (a sequential scan) would otherwise outlive its growth.
            "SET lock_timeout = {}; SET statement_timeout = {}; SET plan_cache_mode = force_custom_plan;",
            millis(options.lock_timeout),
            millis(options.statement_timeout)
        );
        if idle.as_deref() == Some("0") {
            settings.push_str(&format!(
                " SET idle_in_transaction_session_timeout = {};",
                millis(options.idle_in_transaction_timeout)
            ));
        }
        conn.batch_execute(&settings)?;
        Ok(conn)
    }

    /// Whether the connection can still be used (no timeout, not closed).
    pub(super) fn is_usable(&self) -> bool {
        !self.broken && !self.client.is_closed()
    }

    fn note<T>(&mut self, result: Result<T, PgError>) -> Result<T, PgError> {
        if let Err(PgError::TimedOut(..)) = &result {
            self.broken = true;
        }
        if self.client.is_closed() {
            self.broken = true;
        }
        result
    }

    fn statement(&mut self, sql: &'static str) -> Result<Statement, PgError> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let prepared = within(
            &self.runtime,
            self.response_timeout,
            "a prepare",
            self.client.prepare(sql),
        );
        let prepared = self.note(prepared)?;
        self.statements.insert(sql, prepared.clone());
        Ok(prepared)
    }

    /// Runs a prepared (and cached) statement, returning its rows.
    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, PgError> {
        let statement = self.statement(sql)?;
        let rows = within(
            &self.runtime,
            self.response_timeout,
            "a query",
            self.client.query(&statement, params),
        );
        self.note(rows)
    }

    /// Runs prepared (and cached) statements in one round trip: all are sent before any answer is
    /// read, and the server runs them in order. Returns each one's rows.
    pub(super) fn pipeline(
        &mut self,
        queries: &[(&'static str, &[&(dyn ToSql + Sync)])],
    ) -> Result<Vec<Vec<Row>>, PgError> {
        let statements = queries
            .iter()
            .map(|(sql, _)| self.statement(sql))
            .collect::<Result<Vec<_>, _>>()?;
        let client = &self.client;
        // Polled in order, so sent in order.
        let work = futures_util::future::try_join_all(
            statements
                .iter()
                .zip(queries)
                .map(|(statement, (_, params))| client.query(statement, params)),
        );
        let rows = within(&self.runtime, self.response_timeout, "a pipeline", work);
        self.note(rows)
    }

    /// Runs statements without parameters that may take long (a migration of a large ledger),
    /// waiting up to an hour.
    pub(super) fn batch_execute_long(&mut self, sql: &str) -> Result<(), PgError> {
        let done = within(
            &self.runtime,
            Duration::from_secs(3600),
            "a migration",
            self.client.batch_execute(sql),
        );
        self.note(done)
    }

    /// Runs statements without parameters.
    pub(super) fn batch_execute(&mut self, sql: &str) -> Result<(), PgError> {
        let done = within(
            &self.runtime,
            self.response_timeout,
            "a statement",
            self.client.batch_execute(sql),
        );
        self.note(done)
    }
}

/// A duration as whole milliseconds for a `SET`, at least 1 (0 would mean "no limit").
fn millis(d: Duration) -> u128 {
    d.as_millis().clamp(1, i32::MAX as u128)
}
