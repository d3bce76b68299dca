//! How the PostgreSQL ledger connects, and how long it waits for anything.

use std::time::Duration;

/// Where the PostgreSQL ledger connects and how long it waits, at most, for each thing: no
/// operation of the ledger can wait longer than these, so a frozen, partitioned or overloaded
/// database makes requests fail (they are retried, and [`LedgerStatus`](crate::ledger::LedgerStatus)
/// says the ledger is unavailable) instead of freezing the storage worker, and `AppExit` finishes.
///
/// ```
/// # use std::time::Duration;
/// use bevy_marketplace::ledger::{LedgerBackend, PostgresOptions};
/// let backend = LedgerBackend::Postgres(
///     PostgresOptions::new("host=127.0.0.1 user=game dbname=game")
///         .with_lock_timeout(Duration::from_secs(1)),
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// A `postgres://` URL or a `key=value` connection string (no TLS).
    pub url: String,
    /// Opening a connection, including the login. Default 5 s.
    pub connect_timeout: Duration,
    /// Waiting for a row another server has locked (`lock_timeout`). Default 2 s: a batch stuck
    /// behind a frozen server fails and is retried instead of stalling every player here.
    pub lock_timeout: Duration,
    /// Any one statement on the server (`statement_timeout`). Default 5 s.
    pub statement_timeout: Duration,
    /// Any one round trip, measured here: a database that stops answering (frozen, or a network
    /// path that drops packets without closing the connection) fails the request after this, and
    /// the connection is dropped and made anew. Default 8 s, longer than `statement_timeout`.
    pub response_timeout: Duration,
    /// How long unacknowledged data or unanswered keepalives may last before the operating system
    /// declares the connection dead (`tcp_user_timeout`, TCP keepalives). Default 10 s.
    pub dead_peer_timeout: Duration,
    /// How long the database keeps a transaction whose server went quiet in the middle of it
    /// (`idle_in_transaction_session_timeout`), holding its players' row locks. Default 30 s;
    /// a value set in the connection string wins.
    pub idle_in_transaction_timeout: Duration,
    /// Whose clock decides when leases expire. Default [`LeaseClock::Database`].
    pub clock: LeaseClock,
}

/// Whose clock the PostgreSQL ledger reads for lease expiry and timestamps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LeaseClock {
    /// The database's (`now()` at the start of each transaction): every game server sees the same
    /// time, so a server whose clock is off cannot steal or keep a lease wrongly.
    #[default]
    Database,
    /// The game server's wall clock (as the storage worker passes it): for tests that move time.
    GameServer,
}

impl PostgresOptions {
    /// The defaults, for the database at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            connect_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(8),
            dead_peer_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(30),
            clock: LeaseClock::Database,
        }
    }

    /// Sets [`PostgresOptions::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::lock_timeout`].
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::statement_timeout`].
    pub fn with_statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::response_timeout`].
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::dead_peer_timeout`].
    pub fn with_dead_peer_timeout(mut self, timeout: Duration) -> Self {
        self.dead_peer_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::idle_in_transaction_timeout`].
    pub fn with_idle_in_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.idle_in_transaction_timeout = timeout;
        self
    }

    /// Sets [`PostgresOptions::clock`].
    pub fn with_clock(mut self, clock: LeaseClock) -> Self {
        self.clock = clock;
        self
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &super::redact(&self.url))
            .field("connect_timeout", &self.connect_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("dead_peer_timeout", &self.dead_peer_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .field("clock", &self.clock)
            .finish()
    }
}

impl From<&str> for PostgresOptions {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<&String> for PostgresOptions {
    fn from(url: &String) -> Self {
        Self::new(url.clone())
    }
}

impl From<String> for PostgresOptions {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}
