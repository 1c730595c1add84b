//! Persistence for the control plane, the usage ledger and document metadata. One implementation over
//! sqlx's `Any` driver serves both backends: an embedded SQLite file (the default) and PostgreSQL (scale
//! out). The SQL is written once in the subset both dialects share (`$n` placeholders, `ON CONFLICT`,
//! `RETURNING`, integer times), migrations included; only generated multi-row statements differ, with `?`
//! placeholders on SQLite (`usage::placeholders`).

mod alerts;
mod audit;
mod backup;
mod changes;
mod checkpoint;
mod credits;
mod documents;
mod erasure;
mod exports;
mod files;
mod gate;
mod group_commit;
mod idempotency;
mod invoices;
mod jobs;
mod keycache;
mod keys;
mod memgate;
mod notifications;
mod overview;
mod ownership;
mod prepaid;
mod quota;
mod sessions;
mod stripe;
mod tenants;
mod usage;
mod webhooks;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor, Row};

pub use audit::{entry_hash, AuditBreak, AuditEntry, AuditPruned, NewAuditEntry, GENESIS_HASH};
pub use backup::{backup_embedded, EMBEDDED_DB_FILE};
pub use changes::{ChangeKind, DocumentChange, DocumentToIndex, IndexedChunk, TenantHead};
pub use credits::WinBack;
pub use documents::{ChunkRow, DocumentRow, Inserted, NewChunk, NewDocument};
pub use erasure::{ErasedRows, ErasureRow, NewErasure};
pub use exports::{ExportRow, ExportStart};
pub use files::PART_BYTES;
pub use idempotency::{Claim, IdempotencyRequest, StoredResponse};
pub use invoices::{CreditLine, InvoiceEffects, InvoiceRow, NewInvoice, NewPendingItem, PendingItemRow};
pub use jobs::{JobRow, JobState, NewJob};
pub use keys::{ApiKeyRow, NewApiKey};
pub use notifications::{NewNotification, NotificationRow, WinBackStats};
pub use overview::OverviewCounts;
pub use prepaid::CreditGrantRow;
pub use quota::{Amounts, Counters, Exceeded, NewReservation, QuotaMeter, Settlement, SpendCap};
pub use sessions::{NewSession, SessionKind, SessionRow};
pub use stripe::{EventSeen, StripeLink};
pub use tenants::{
    ConfigChange, NewTenant, PlanChange, TenantEvent, TenantOrder, TenantRow, TenantSearch, TransitionEffects,
};
pub use usage::{PrunedUsage, UsageBucket, UsageEvent, UsageLine};
pub use webhooks::{AttemptRecord, AttemptRow, DeliveryRow, DueDelivery, NewEvent, WebhookRow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists: {0}")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("the row changed concurrently")]
    Concurrent,
    /// The write belongs to a tenant that was erased meanwhile; nothing of it was written.
    #[error("the tenant was erased")]
    TenantErased,
    /// The key is its tenant's last unrevoked one with the `admin` scope; it was not revoked.
    #[error("the tenant's last admin key")]
    LastAdminKey,
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// From the embedded store's ledger writer, which has a connection of its own (`group_commit`).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer version: it has this migration, unknown here.
    #[error("the database has migration {0}, newer than this version knows")]
    NewerSchema(i64),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    /// Reads (and, on PostgreSQL, writes).
    read: AnyPool,
    /// Writes. On SQLite one connection, so the embedded store's writers queue in-process instead of
    /// failing with `SQLITE_BUSY`; on PostgreSQL the same pool as `read`.
    write: AnyPool,
    backend: Backend,
    /// How quota is admitted, settlements written and key rows read: `Shared` when other processes may
    /// write the database, `SoleOwner` for the embedded store's file (`ownership`).
    ownership: std::sync::Arc<dyn ownership::Ownership>,
    /// Whether settlements queue their ledger events for the analytics store.
    analytics_outbox: bool,
}

/// How long an embedded store's connection waits for SQLite's write lock before failing.
pub(crate) const BUSY_TIMEOUT_MS: u64 = 10_000;

/// Every embedded store connection's settings. WAL lets readers run beside the writers; 1 KiB pages keep each
/// commit's WAL frames small, and checkpoints run off the write path, with SQLite's own only as a backstop
/// (`checkpoint`); secure_delete zeroes freed pages so erased tenants' bytes do not linger in the file. The
/// page size only applies to a new database.
pub(crate) const CONNECTION_PRAGMAS: &str = "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; \
     PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 16384; PRAGMA journal_size_limit = 67108864; \
     PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;";

impl Store {
    /// Opens `url` (`postgres://…`), or the embedded SQLite file under `data_dir` when `url` is empty, and
    /// runs the backend's migrations.
    pub async fn open(url: &str, data_dir: &Path) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let store = if url.is_empty() || url.starts_with("sqlite:") {
            let url = if url.is_empty() {
                format!("sqlite://{}?mode=rwc", data_dir.join(EMBEDDED_DB_FILE).display())
            } else {
                url.to_owned()
            };
            Self::open_sqlite(&url).await?
        } else {
            Self::open_postgres(url).await?
        };
        store.migrate().await?;
        store.started()
    }

    async fn open_sqlite(url: &str) -> Result<Self> {
        let options = AnyConnectOptions::from_str(url)?;
        let path = sqlx::sqlite::SqliteConnectOptions::from_str(url)?.get_filename().to_path_buf();
        // The ledger writer opens the file again on a connection of its own (`group_commit`): an in-memory
        // database would be a different, empty one there.
        if url.contains("mode=memory") || path.to_string_lossy().starts_with("file:sqlx-in-memory") {
            let message = format!("the embedded store needs a database file, not {url:?}");
            return Err(sqlx::Error::Configuration(message.into()).into());
        }
        let pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(30))
                // A connection to a local file has nothing to lose on the way; the test would be one more
                // round trip to its worker thread per use.
                .test_before_acquire(false)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(format!("{CONNECTION_PRAGMAS} PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};").as_str())
                            .await?;
                        Ok(())
                    })
                })
                .connect_with(options.clone())
        };
        let write = pool(1).await?;
        let read = pool(4).await?;
        let checkpoints = checkpoint::Checkpoints::start(pool(1).await?);
        let store = Self {
            read,
            write,
            backend: Backend::Sqlite,
            ownership: std::sync::Arc::new(ownership::SoleOwner::new(checkpoints, path)),
            analytics_outbox: false,
        };
        Ok(store)
    }

    async fn open_postgres(url: &str) -> Result<Self> {
        let pool =
            AnyPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(30)).connect(url).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            backend: Backend::Postgres,
            ownership: std::sync::Arc::new(ownership::Shared::default()),
            analytics_outbox: false,
        })
    }

    async fn migrate(&self) -> Result<()> {
        // One set of migrations in the dialect subset both backends share; split per backend if one ever
        // needs its own SQL.
        match sqlx::migrate!("./migrations").run(&self.write).await {
            Ok(()) => Ok(()),
            Err(sqlx::migrate::MigrateError::VersionMissing(version)) => Err(StoreError::NewerSchema(version)),
            Err(e) => Err(e.into()),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Makes every settlement queue its new ledger events in the analytics outbox (set when an analytics
    /// store is configured; without one nothing would ever drain the outbox).
    pub fn with_analytics_outbox(mut self, on: bool) -> Result<Self> {
        self.analytics_outbox = on;
        self.started()
    }

    pub(crate) fn analytics_outbox(&self) -> bool {
        self.analytics_outbox
    }

    /// (Re)starts the background writers (as configured now) over the migrated database; previous ones end
    /// when their last handle is dropped.
    fn started(mut self) -> Result<Self> {
        self.ownership = self.ownership.started(&self)?;
        Ok(self)
    }

    pub(crate) fn gate(&self) -> &dyn gate::QuotaGate {
        self.ownership.gate()
    }

    #[cfg(test)]
    pub(crate) fn sole_owner(&self) -> Option<&ownership::SoleOwner> {
        self.ownership.sole_owner()
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once (`IMMEDIATE`): the ledger writer
    /// is a second writer (`group_commit`), and a transaction that read first could otherwise find, when it
    /// comes to write, that the other committed since, and fail instead of waiting its turn.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.write.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.write.begin().await,
        }
    }

    /// After a committed UPDATE or DELETE of `tenants` or `api_keys` rows: what the gateway remembered of
    /// them is not served again (`keycache`).
    pub(crate) fn tenants_changed(&self) {
        self.ownership.rows_changed();
    }

    pub(crate) fn ledger_writes(&self) -> quota::LedgerWrites {
        quota::LedgerWrites {
            reservation_rows: self.gate().reservation_rows(),
            analytics_outbox: self.analytics_outbox,
        }
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// The value of an SQLite pragma on the writer connection (diagnostics and tests).
    pub async fn sqlite_pragma(&self, name: &str) -> Result<String> {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Corrupt(format!("not a pragma name: {name:?}")));
        }
        let row = sqlx::query(&format!("PRAGMA {name}")).fetch_one(&self.write).await?;
        let value = row.try_get::<String, _>(0).or_else(|_| row.try_get::<i64, _>(0).map(|v| v.to_string()))?;
        Ok(value)
    }

    /// The embedded store's file as if other processes shared it (`ownership::Shared`): quota admitted in
    /// rows, every settlement in its own transaction and key rows read every time, as on PostgreSQL. For the
    /// conformance suite, which runs the same stories against both ownerships.
    #[doc(hidden)]
    pub async fn open_embedded_as_shared(data_dir: &Path) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}?mode=rwc", data_dir.join(EMBEDDED_DB_FILE).display());
        let mut store = Self::open_sqlite(&url).await?;
        store.ownership.close().await;
        store.ownership = std::sync::Arc::new(ownership::Shared::default());
        store.migrate().await?;
        store.started()
    }

    /// Creates an empty database next to `admin_url`'s and returns its URL (for tests against PostgreSQL).
    #[doc(hidden)]
    pub async fn create_test_database(admin_url: &str) -> Result<String> {
        sqlx::any::install_default_drivers();
        let name =
            format!("tenantry_test_{}", tenantry_domain::TenantId::generate().as_str().trim_start_matches("ten_"));
        let admin = AnyPool::connect(admin_url).await?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
        admin.close().await;
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap_or(admin_url);
        Ok(format!("{base}/{name}"))
    }

    /// Closes the store: the ledger writer writes what it was sent and stops, then the checkpointer and the
    /// pools close. Every handle of the store is closed with it.
    pub async fn close(&self) {
        self.ownership.close().await;
        self.write.close().await;
        self.read.close().await;
    }
}

/// A text column read as the type it names (`parse`: its `parse`); a value no version wrote is `Corrupt`.
pub(crate) fn parsed<T>(row: &sqlx::any::AnyRow, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
    let raw: String = row.try_get(column)?;
    parse(&raw).ok_or_else(|| StoreError::Corrupt(format!("{column} {raw:?}")))
}

/// Maps a unique-constraint violation to `Conflict(what)`.
fn conflict_on_unique(e: sqlx::Error, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(e),
    }
}
