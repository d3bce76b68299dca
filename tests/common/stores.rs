//! The three ledger stores a game can run on, behind one face, so a behaviour is proven on each:
//! write its test once as `fn name(store: &TestStore)` and list it in [`on_every_store!`].
#![allow(dead_code)]

#[cfg(feature = "postgres")]
#[path = "pg.rs"]
pub mod pg;

use bevy_marketplace::MarketplacePlugin;
use bevy_marketplace::ledger::{
    InMemoryLedger, LedgerAudit, LedgerReply, LedgerRequest, LedgerStore,
};

use super::GameServer;

/// A fresh, empty ledger of one kind.
pub enum TestStore {
    /// The in-memory store (shared by every game made from it).
    Memory(InMemoryLedger),
    /// An SQLite file in a temp dir.
    #[cfg(feature = "sqlite")]
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    /// A database of its own on the test process's PostgreSQL cluster.
    #[cfg(feature = "postgres")]
    Postgres { url: String },
}

impl TestStore {
    pub fn memory() -> Self {
        Self::Memory(InMemoryLedger::default())
    }

    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let path = dir.path().join("ledger.sqlite3");
        Self::Sqlite { _dir: dir, path }
    }

    #[cfg(feature = "postgres")]
    pub fn postgres(name: &str) -> Self {
        Self::Postgres {
            url: pg::PgCluster::shared().create_database(name),
        }
    }

    /// A game server named `server` on this ledger (see [`GameServer::new`]).
    pub fn game(
        &self,
        server: &str,
        configure: impl FnOnce(MarketplacePlugin) -> MarketplacePlugin,
    ) -> GameServer {
        match self {
            Self::Memory(ledger) => {
                let ledger = ledger.clone();
                GameServer::new(move || Ok(ledger.clone()), server, configure)
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite { path, .. } => {
                let path = path.clone();
                GameServer::new(
                    move || bevy_marketplace::ledger::SqliteLedger::open(&path),
                    server,
                    configure,
                )
            }
            #[cfg(feature = "postgres")]
            Self::Postgres { url } => {
                let url = url.clone();
                GameServer::new(
                    move || bevy_marketplace::ledger::PostgresLedger::connect(url.as_str()),
                    server,
                    configure,
                )
            }
        }
    }

    /// Everything committed, read as the admin tool would (its own connection).
    pub fn audit(&self) -> LedgerAudit {
        match self {
            Self::Memory(ledger) => ledger.audit(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite { path, .. } => bevy_marketplace::ledger::SqliteLedger::open(path)
                .and_then(|store| store.audit())
                .expect("audit the SQLite ledger"),
            #[cfg(feature = "postgres")]
            Self::Postgres { url } => {
                bevy_marketplace::ledger::PostgresLedger::connect(url.as_str())
                    .and_then(|mut store| store.audit())
                    .expect("audit the PostgreSQL ledger")
            }
        }
    }

    /// Applies `call` in a transaction of its own, outside any game (the admin tool, a store's web
    /// hook, another server), and returns its typed reply.
    pub fn call_outside<C: bevy_marketplace::ledger::LedgerCall>(&self, call: C) -> C::Reply {
        use bevy_marketplace::ledger::call as apply;
        match self {
            Self::Memory(ledger) => apply(&mut ledger.clone(), call),
            #[cfg(feature = "sqlite")]
            Self::Sqlite { path, .. } => apply(
                &mut bevy_marketplace::ledger::SqliteLedger::open(path).unwrap(),
                call,
            ),
            #[cfg(feature = "postgres")]
            Self::Postgres { url } => apply(
                &mut bevy_marketplace::ledger::PostgresLedger::connect(url.as_str()).unwrap(),
                call,
            ),
        }
        .expect("the ledger answers")
    }

    /// Applies `request` in a transaction of its own, outside any game (the admin tool, a store's
    /// web hook, another server).
    pub fn apply_outside(&self, request: LedgerRequest) -> LedgerReply {
        fn once(store: &mut dyn LedgerStore, request: &LedgerRequest) -> LedgerReply {
            store.begin().unwrap();
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let reply = store.apply(request, now_ms).unwrap();
            store.commit().unwrap();
            reply
        }
        match self {
            Self::Memory(ledger) => once(&mut ledger.clone(), &request),
            #[cfg(feature = "sqlite")]
            Self::Sqlite { path, .. } => once(
                &mut bevy_marketplace::ledger::SqliteLedger::open(path).unwrap(),
                &request,
            ),
            #[cfg(feature = "postgres")]
            Self::Postgres { url } => once(
                &mut bevy_marketplace::ledger::PostgresLedger::connect(url.as_str()).unwrap(),
                &request,
            ),
        }
    }
}

/// A `#[test]` per store for each named `fn(&TestStore)`: `memory::NAME`, `sqlite::NAME`,
/// `postgres::NAME` (the last two with their features).
#[macro_export]
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[test]
            fn $name() {
                super::$name(&super::stores::TestStore::memory())
            })*
        }
        #[cfg(feature = "sqlite")]
        mod sqlite {
            $(#[test]
            fn $name() {
                super::$name(&super::stores::TestStore::sqlite())
            })*
        }
        #[cfg(feature = "postgres")]
        mod postgres {
            $(#[test]
            fn $name() {
                super::$name(&super::stores::TestStore::postgres("every_store"))
            })*
        }
    };
}
