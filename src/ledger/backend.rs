//! Which ledger the plugin uses: in memory, an SQLite file, a PostgreSQL database, or any store.

use std::fmt;
#[cfg(feature = "sqlite")]
use std::path::PathBuf;

#[cfg(feature = "postgres")]
use super::PostgresOptions;
#[cfg(feature = "sqlite")]
use super::SqliteLedger;
use super::store::store_factory;
use super::{InMemoryLedger, LedgerError, LedgerStore, ServerId, StoreFactory};
#[cfg(feature = "postgres")]
use super::{PostgresLedger, postgres};

/// Which ledger the plugin uses.
#[derive(Clone)]
pub enum LedgerBackend {
    /// Kept in memory only: for tests and throwaway demos.
    InMemory(InMemoryLedger),
    /// An embedded SQLite file (WAL, full sync), created if missing, for one game process: the
    /// plugin opens it with [`SqliteLedger::open_exclusive`], which locks `<file>.lock` beside it
    /// for as long as the game runs and refuses a second game process
    /// ([`LedgerError::InUse`]). In return a game restarted after a crash takes its players back
    /// at once instead of waiting for their session leases to expire.
    #[cfg(feature = "sqlite")]
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by many game servers, with per-player session leases: where
    /// it is and how long to wait for it.
    #[cfg(feature = "postgres")]
    Postgres(PostgresOptions),
    /// Any store: the factory runs on the worker thread.
    Custom(StoreFactory),
}

impl LedgerBackend {
    /// An in-memory ledger with a fresh store.
    pub fn in_memory() -> Self {
        Self::InMemory(InMemoryLedger::default())
    }

    /// An SQLite ledger at `path`.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(path: impl Into<PathBuf>) -> Self {
        Self::Sqlite(path.into())
    }

    /// A PostgreSQL ledger at `url`, e.g. `"host=127.0.0.1 port=5432 user=postgres dbname=game"`
    /// or `"postgres://postgres@127.0.0.1/game"` (no TLS).
    #[cfg(feature = "postgres")]
    pub fn postgres(url: impl Into<String>) -> Self {
        Self::Postgres(PostgresOptions::new(url))
    }

    /// A custom store.
    pub fn custom<S: LedgerStore>(
        open: impl Fn() -> Result<S, LedgerError> + Send + Sync + 'static,
    ) -> Self {
        Self::Custom(store_factory(open))
    }

    /// Opens the store on the worker thread; `server` is the game's id, which an SQLite ledger
    /// writes into its lock file.
    pub(crate) fn factory(&self, server: &ServerId) -> StoreFactory {
        #[cfg(not(feature = "sqlite"))]
        let _ = server;
        match self {
            Self::InMemory(store) => {
                let store = store.clone();
                store_factory(move || Ok(store.clone()))
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let (path, server) = (path.clone(), server.clone());
                store_factory(move || SqliteLedger::open_exclusive(&path, &server))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => {
                let options = options.clone();
                store_factory(move || PostgresLedger::connect(options.clone()))
            }
            Self::Custom(f) => f.clone(),
        }
    }

    /// A flag the store sets when its change feed moves, for stores that can tell (PostgreSQL
    /// listens for the notification every batch adding to the feed sends); others are polled.
    pub(crate) fn change_notices(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => Some(postgres::listen(options)),
            _ => None,
        }
    }

    /// Opens a second connection to the same store for reports (history, sales), so that a
    /// report over a large ledger never holds purchases up. Only stores that several connections
    /// can share have one: an SQLite file (WAL lets it read while the game writes; the game
    /// holds the file's lock, so the reader opens it without) and PostgreSQL.
    pub(crate) fn reader_factory(&self) -> Option<StoreFactory> {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(path) => {
                let path = path.clone();
                Some(store_factory(move || SqliteLedger::open(&path)))
            }
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => {
                let options = options.clone();
                Some(store_factory(move || {
                    PostgresLedger::connect(options.clone())
                }))
            }
            _ => None,
        }
    }
}

impl Default for LedgerBackend {
    fn default() -> Self {
        #[cfg(feature = "sqlite")]
        {
            Self::Sqlite(PathBuf::from("marketplace.sqlite3"))
        }
        #[cfg(not(feature = "sqlite"))]
        {
            Self::in_memory()
        }
    }
}

impl fmt::Debug for LedgerBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InMemory(_) => f.write_str("InMemory"),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            #[cfg(feature = "postgres")]
            Self::Postgres(options) => write!(f, "Postgres({})", postgres::redact(&options.url)),
            Self::Custom(_) => f.write_str("Custom"),
        }
    }
}
