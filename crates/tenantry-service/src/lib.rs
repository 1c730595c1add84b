//! The service layer: one transport-neutral function per use case (signup, upload, query, usage…), called
//! by thin HTTP handlers. It owns the gateway's decisions (who is asking, may they, under which terms) and
//! wires the store, search, models and pipelines together.

pub mod admin;
pub mod alerts;
pub mod analytics;
pub mod api_keys;
pub mod audit;
pub mod billing;
pub mod documents;
pub mod embedding;
pub mod erasure;
mod error;
pub mod export;
pub mod gateway;
pub mod idempotency;
mod index_sync;
pub mod jobs;
pub mod keys;
pub mod lifecycle;
pub mod notify;
mod outbound;
pub mod payments;
pub mod plan;
pub mod prepaid;
pub mod query;
pub mod quota;
pub mod ratelimit;
mod retention;
mod retriever;
pub mod revenue;
pub mod sign_in;
pub mod stripe;
pub mod tenants;
pub mod usage;
pub mod webhooks;
mod work;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;
use tenantry_domain::config::ConfigError;
use tenantry_domain::quota::PeriodKind;
use tenantry_domain::{Catalog, Clock, Config, ModelSpec, ProviderKind, SystemClock, TenantId, TestClock};
use tenantry_llm::Providers;
use tenantry_search::SearchIndexes;
use tenantry_store::{Store, TenantRow};

pub use error::{ServiceError, ServiceResult};
pub use keys::KeyHasher;

/// Everything a request may need, built once at start and shared.
#[derive(Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    catalog: Catalog,
    store: Store,
    search: Arc<SearchIndexes>,
    providers: Providers,
    clock: Arc<dyn Clock>,
    keys: KeyHasher,
    rate: ratelimit::Limiter,
    period: PeriodKind,
    data_dir: PathBuf,
    /// Signalled when a job is enqueued, so the worker runs it at once.
    wake_jobs: tokio::sync::Notify,
    /// Notifications over SMTP, when configured.
    smtp: Option<notify::Smtp>,
    /// How invoices are paid (`billing.provider`).
    payments: Box<dyn payments::PaymentProvider>,
    /// The minute of the last audited failed authentication per key (throttles `auth.failed`).
    failed_auth: parking_lot::Mutex<std::collections::HashMap<tenantry_domain::ApiKeyId, i64>>,
    /// Activation milestones known per tenant (loaded once per process).
    milestones:
        parking_lot::Mutex<std::collections::HashMap<tenantry_domain::TenantId, std::collections::HashSet<String>>>,
    /// The analytics store, when `analytics.clickhouse_url` is set.
    analytics: Option<analytics::ClickHouse>,
    /// `advanced`'s fusion weights (`search.fusion_weights`, else the embedder's own).
    fusion: parking_lot::RwLock<tenantry_rag::FusionWeights>,
    /// The upstream embedding model (`search.embedding_model`), whose tokens are metered to tenants.
    embedding_model: Option<Arc<ModelSpec>>,
    /// Uploads in progress per tenant (`limits.uploads_in_flight`).
    uploads: Arc<work::InFlight>,
    /// Documents being parsed at once, over all tenants.
    parsing: work::Parsers,
    /// Catching this node's search indexes up with the database, one task per tenant at a time.
    sync: index_sync::SyncLocks,
    /// Webhook deliveries: the guarded client, the dispatcher's wake-up, and attempts by outcome.
    outbound: reqwest::Client,
    wake_webhooks: tokio::sync::Notify,
    webhook_outcomes: webhooks::Outcomes,
    /// Usage alert thresholds and what has fired, per tenant (`alerts`).
    alerts: alerts::AlertCache,
    /// Failed sign-ins per email, on this node (`sign_in`).
    sign_in_failures: sign_in::FailedAttempts,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("database: {0}")]
    Store(#[from] tenantry_store::StoreError),
    #[error("finishing an interrupted erasure: {0}")]
    Erasure(String),
    #[error("scheduling jobs: {0}")]
    Jobs(String),
    /// This node's configuration disagrees with what the cluster's database records.
    #[error("{0}")]
    Cluster(String),
}

impl Services {
    /// Validates the configuration, prepares the data dir, opens the store (running migrations) and the
    /// search root.
    pub async fn start(mut config: Config) -> Result<Self, StartError> {
        let catalog = config.catalog()?;
        let checked = check_config(&mut config, &catalog)?;
        let data_dir = config.server.data_dir.clone();
        let (store, pepper, analytics) = open_store(&config, &data_dir, checked.clock.as_ref()).await?;
        let retrieval = retrieval(&config, &catalog, &data_dir).await?;
        tenantry_domain::tokens::warm_up();
        let outbound = outbound::client(config.webhooks.allow_private_addresses)
            .map_err(|e| ConfigError::Invalid(format!("the webhook client: {e}")))?;
        let services = Self {
            inner: Arc::new(Inner {
                catalog,
                store,
                search: retrieval.search,
                providers: Providers::default(),
                clock: checked.clock,
                keys: KeyHasher::new(pepper),
                rate: checked.rate,
                period: checked.period,
                data_dir,
                config,
                wake_jobs: tokio::sync::Notify::new(),
                payments: checked.payments,
                smtp: checked.smtp,
                milestones: Default::default(),
                failed_auth: Default::default(),
                fusion: parking_lot::RwLock::new(retrieval.fusion),
                analytics,
                embedding_model: retrieval.embedding_model,
                uploads: Default::default(),
                parsing: work::Parsers::start(),
                sync: Default::default(),
                outbound,
                wake_webhooks: tokio::sync::Notify::new(),
                webhook_outcomes: Default::default(),
                alerts: Default::default(),
                sign_in_failures: Default::default(),
            }),
        };
        services.catch_up().await?;
        Ok(services)
    }

    /// What a start resumes before it serves: originals earlier versions kept on this disk alone, this node's
    /// indexes, erasures a crash interrupted, and the period closes, retention runs and re-embeddings due.
    async fn catch_up(&self) -> Result<(), StartError> {
        self.adopt_local_originals().await.map_err(|e| StartError::Jobs(e.detail))?;
        // Erased tenants' copies leave this node's disk before it serves anything.
        self.follow_indexes().await.map_err(|e| StartError::Jobs(e.detail))?;
        self.resume_erasures().await.map_err(|e| StartError::Erasure(e.detail))?;
        self.schedule_period_closes().await.map_err(|e| StartError::Jobs(e.detail))?;
        self.schedule_retention().await.map_err(|e| StartError::Jobs(e.detail))?;
        self.schedule_reembeds().await.map_err(|e| StartError::Jobs(e.detail))?;
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn clock(&self) -> &dyn Clock {
        self.inner.clock.as_ref()
    }

    /// The tenant's row; 404 when there is none.
    pub(crate) async fn tenant_row(&self, id: &TenantId) -> ServiceResult<TenantRow> {
        self.store().tenant(id).await?.ok_or_else(|| ServiceError::not_found("tenant"))
    }

    /// The row of the tenant an operator names by id; 404 when the id is malformed or names no tenant.
    pub(crate) async fn named_tenant(&self, raw_id: &str) -> ServiceResult<TenantRow> {
        let id = TenantId::parse(raw_id).ok_or_else(|| ServiceError::not_found("tenant"))?;
        self.tenant_row(&id).await
    }

    /// The name of the embedder that indexes every tenant's documents.
    pub fn search_embedder_name(&self) -> String {
        self.search().embedder_name().to_owned()
    }

    /// The length of its vectors.
    pub fn search_embedder_dimensions(&self) -> usize {
        self.search().embedder().dimensions()
    }

    pub(crate) fn search(&self) -> &Arc<SearchIndexes> {
        &self.inner.search
    }

    /// The upstream embedding model when vectors come from one (its tokens are billed to the tenant).
    pub(crate) fn embedding_model(&self) -> Option<&Arc<ModelSpec>> {
        self.inner.embedding_model.as_ref()
    }

    pub(crate) fn providers(&self) -> &Providers {
        &self.inner.providers
    }

    /// Background work until `shutdown` resolves: runs due jobs as soon as they are enqueued (and at least
    /// every second), and reclaims expired reservations.
    pub async fn run_background(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut poll = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut follow = tokio::time::interval(std::time::Duration::from_secs(1));
        let dispatcher = self.clone();
        let dispatch_shutdown = shutdown.clone();
        let dispatching = tokio::spawn(async move { dispatcher.dispatch_webhooks(dispatch_shutdown).await });
        let warm = self.clone();
        let warming = tokio::spawn(async move {
            if let Err(e) = warm.warm_indexes().await {
                tracing::warn!(error = %e.detail, "warming the search indexes failed; questions warm them");
            }
        });
        loop {
            tokio::select! {
                _ = sweep.tick() => {
                    match self.store().expire_reservations(self.clock().now()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(reclaimed = n, "expired reservations released"),
                        Err(e) => tracing::warn!(error = %e, "reservation sweep failed"),
                    }
                    if let Err(e) = self.store().expire_idempotency_keys(self.clock().now()).await {
                        tracing::warn!(error = %e, "idempotency key sweep failed");
                    }
                }
                _ = poll.tick() => {
                    self.work_jobs().await;
                    if let Err(e) = self.ship_analytics().await {
                        tracing::warn!(error = %e.detail, "analytics shipping failed; the outbox keeps the events");
                    }
                }
                _ = follow.tick() => {
                    if let Err(e) = self.follow_indexes().await {
                        tracing::warn!(error = %e.detail, "could not follow the database's document changes");
                    }
                }
                _ = self.jobs_woken() => self.work_jobs().await,
                _ = shutdown.changed() => break,
            }
        }
        warming.abort();
        let _ = dispatching.await;
    }

    async fn work_jobs(&self) {
        loop {
            match self.run_due_jobs().await {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable");
                    break;
                }
            }
        }
    }

    pub(crate) fn keys(&self) -> &KeyHasher {
        &self.inner.keys
    }

    pub(crate) fn period_kind(&self) -> PeriodKind {
        self.inner.period
    }

    /// Stores in the database the originals that earlier versions kept only under this node's data
    /// directory (`tenants/<id>/blobs/<document id>`), so every node can serve them and this disk can go.
    async fn adopt_local_originals(&self) -> ServiceResult<()> {
        let missing = self.store().documents_without_original().await?;
        let mut adopted = 0;
        for (tenant, document) in &missing {
            let path = self.inner.data_dir.join("tenants").join(tenant.as_str()).join("blobs").join(document.as_str());
            match tokio::fs::read(&path).await {
                Ok(bytes) if !bytes.is_empty() => {
                    self.store().put_file(tenant, document.as_str(), &bytes).await?;
                    tokio::fs::remove_file(&path).await.map_err(ServiceError::internal)?;
                    adopted += 1;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ServiceError::internal(e)),
            }
        }
        if adopted > 0 || !missing.is_empty() {
            tracing::info!(adopted, without_original = missing.len() - adopted, "originals moved into the database");
        }
        Ok(())
    }

    /// Readiness: the database answers.
    pub async fn ready(&self) -> bool {
        self.inner.store.ping().await.is_ok()
    }

    pub async fn shutdown(&self) {
        self.inner.store.close().await;
    }
}

/// The payment provider from `[billing]`: `manual` (no client) or `stripe`, whose API key and webhook secret
/// come from the file or, when empty there, from `STRIPE_API_KEY` and `STRIPE_WEBHOOK_SECRET`.
/// The parts of the configuration a start checks before it touches any file, as the values they configure.
struct CheckedConfig {
    rate: ratelimit::Limiter,
    payments: Box<dyn payments::PaymentProvider>,
    smtp: Option<notify::Smtp>,
    period: PeriodKind,
    clock: Arc<dyn Clock>,
}

fn check_config(config: &mut Config, catalog: &Catalog) -> Result<CheckedConfig, StartError> {
    config.retention.validate()?;
    config.search.validate()?;
    if let Some(warning) = config.server.check_operator_token()? {
        tracing::warn!(bind = %config.server.bind, "{warning}");
    }
    for plan in catalog.plans() {
        tenantry_billing::rating::Pricing::from_plan(plan)
            .map_err(|e| ConfigError::Invalid(format!("plan {:?} prices: {e}", plan.name)))?;
    }
    let rate = ratelimit::Limiter::from_config(&config.gateway.rate_limiter).ok_or_else(|| {
        ConfigError::Invalid(format!(
            "gateway.rate_limiter {:?}: use \"local\" or \"shared\"",
            config.gateway.rate_limiter
        ))
    })?;
    let payments = payment_provider(config)?;
    let smtp = notify::smtp_transport(&config.notifications.smtp_url).map_err(ConfigError::Invalid)?;
    let period = PeriodKind::parse(&config.billing.period).ok_or_else(|| {
        ConfigError::Invalid(format!("billing.period {:?}: use \"month\" or \"day\"", config.billing.period))
    })?;
    let clock: Arc<dyn Clock> = match config.server.clock.as_str() {
        "system" => Arc::new(SystemClock),
        "test" => Arc::new(TestClock::starting_at(SystemClock.now())),
        other => return Err(ConfigError::Invalid(format!("server.clock {other:?}: use \"system\" or \"test\"")).into()),
    };
    Ok(CheckedConfig { rate, payments, smtp, period, clock })
}

/// The data directory made, the key pepper loaded (or made), the store opened (migrations run) and checked
/// against the pepper, and, for the embedded store, what a previous run left held released.
async fn open_store(
    config: &Config,
    data_dir: &Path,
    clock: &dyn Clock,
) -> Result<(Store, Vec<u8>, Option<analytics::ClickHouse>), StartError> {
    let dir_err = |source| StartError::DataDir { path: data_dir.to_owned(), source };
    std::fs::create_dir_all(data_dir.join("tenants")).map_err(dir_err)?;
    let pepper = if config.server.key_pepper.is_empty() {
        load_or_create_pepper(data_dir).map_err(dir_err)?
    } else {
        config.server.key_pepper.clone().into_bytes()
    };
    let analytics = match config.analytics.clickhouse_url.as_str() {
        "" => None,
        url => {
            Some(analytics::ClickHouse::new(url, &config.analytics.clickhouse_database).map_err(ConfigError::Invalid)?)
        }
    };
    let store = Store::open(&config.database.url, data_dir)
        .await
        .map_err(schema_mismatch)?
        .with_analytics_outbox(analytics.is_some())?;
    check_pepper(&store, &pepper, config).await?;
    if store.backend() == tenantry_store::Backend::Sqlite {
        // The embedded store belongs to this process alone: any reservation in it was held by a
        // request of a previous run that died, so none can still be in flight.
        let reclaimed = store.release_all_reservations().await?;
        if reclaimed > 0 {
            tracing::info!(reclaimed, "released reservations of a previous run");
        }
        let interrupted = store.release_running_jobs(clock.now()).await?;
        if interrupted > 0 {
            tracing::info!(interrupted, "requeued jobs a previous run was running");
        }
    }
    Ok((store, pepper, analytics))
}

/// How tenants' documents are searched: the indexes with their embedder, `advanced`'s fusion weights, and the
/// upstream embedding model whose tokens are billed, if vectors come from one.
struct Retrieval {
    search: Arc<SearchIndexes>,
    fusion: tenantry_rag::FusionWeights,
    embedding_model: Option<Arc<ModelSpec>>,
}

async fn retrieval(config: &Config, catalog: &Catalog, data_dir: &Path) -> Result<Retrieval, StartError> {
    let fusion = match config.search.fusion_weights.trim() {
        "" if config.search.has_semantic_model() => retriever::SEMANTIC_MODEL_FUSION,
        "" => tenantry_rag::FusionWeights::default(),
        raw => tenantry_rag::FusionWeights::parse(raw).ok_or_else(|| {
            ConfigError::Invalid(format!(
                "search.fusion_weights {raw:?}: expected [rrf:|convex:]LEXICAL:EXPANDED:SEMANTIC, \
                 e.g. \"convex:1:0:0.3\""
            ))
        })?,
    };
    // The upstream embedding model, whose tokens are metered to tenants (a local model bills nothing).
    let embedding_model = match config.search.upstream_embedding_model() {
        None => None,
        Some(name) => {
            Some(catalog.model(name).filter(|m| m.provider == ProviderKind::OpenAi).cloned().ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "search.embedding_model {name:?}: not the name of a [[models]] entry with provider \"openai\""
                ))
            })?)
        }
    };
    let embedder: Arc<dyn tenantry_search::embed::TextEmbedder> = match config.search.embedding_model() {
        None => match &embedding_model {
            Some(model) => Arc::new(embedding::UpstreamEmbedder::new(
                model,
                config.search.embedding_dimensions,
                tokio::runtime::Handle::current(),
            )),
            None => Arc::new(tenantry_search::embed::HashEmbedder::default()),
        },
        Some(dir) => {
            let dir = dir.to_owned();
            let model = tokio::task::spawn_blocking(move || tenantry_search::bert::BertEmbedder::load(&dir))
                .await
                .map_err(|e| ConfigError::Invalid(format!("search.embedding_model_dir: {e}")))?
                .map_err(|e| ConfigError::Invalid(format!("search.embedding_model_dir: {e}")))?;
            Arc::new(model)
        }
    };
    let search =
        Arc::new(SearchIndexes::with_embedder(data_dir.join("tenants"), config.search.open_namespaces, embedder));
    Ok(Retrieval { search, fusion, embedding_model })
}

fn payment_provider(config: &mut Config) -> Result<Box<dyn payments::PaymentProvider>, ConfigError> {
    let stripe = &mut config.billing.stripe;
    for (value, env) in [(&mut stripe.api_key, "STRIPE_API_KEY"), (&mut stripe.webhook_secret, "STRIPE_WEBHOOK_SECRET")]
    {
        if value.is_empty() {
            *value = std::env::var(env).unwrap_or_default();
        }
    }
    match config.billing.provider.as_str() {
        "manual" => Ok(Box::new(payments::Manual)),
        "stripe" => tenantry_billing::stripe::StripeClient::from_config(&config.billing.stripe)
            .map(|client| Box::new(payments::Stripe::new(client)) as Box<dyn payments::PaymentProvider>)
            .map_err(|e| ConfigError::Invalid(format!("billing.stripe: {e}"))),
        other => Err(ConfigError::Invalid(format!("billing.provider {other:?}: use \"manual\" or \"stripe\""))),
    }
}

/// The clear message for a database migrated by a newer version than this binary.
fn schema_mismatch(e: tenantry_store::StoreError) -> StartError {
    match e {
        tenantry_store::StoreError::NewerSchema(version) => StartError::Cluster(format!(
            "the database's schema is newer than this binary: it has migration {version}, which this version of \
             tenantry does not know. Run the same version on every node (upgrade this one)."
        )),
        other => other.into(),
    }
}

/// Every node of a cluster must hash keys with the same pepper, or a key would work through one node and
/// not another: the first node records a fingerprint of its pepper, and a node with another refuses to start.
async fn check_pepper(store: &Store, pepper: &[u8], config: &Config) -> Result<(), StartError> {
    use hmac::Mac;
    let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(pepper)
        .map_err(|e| StartError::Cluster(format!("key pepper: {e}")))?;
    mac.update(b"tenantry key pepper fingerprint v1");
    let fingerprint = hex::encode(mac.finalize().into_bytes());
    let recorded = store.claim_setting("key_pepper_fingerprint", &fingerprint).await?;
    if recorded != fingerprint {
        let source = if !config.server.key_pepper.is_empty() {
            "set by server.key_pepper".to_owned()
        } else if std::env::var("TENANTRY_KEY_PEPPER").is_ok_and(|p| !p.is_empty()) {
            "set by TENANTRY_KEY_PEPPER".to_owned()
        } else {
            format!("generated in {}", config.server.data_dir.join("key-pepper").display())
        };
        return Err(StartError::Cluster(format!(
            "this node's key pepper ({source}) is not the one the database records from its first node: API keys \
             would not verify here. Give every node the same pepper (server.key_pepper or TENANTRY_KEY_PEPPER)."
        )));
    }
    Ok(())
}

/// The key pepper: `TENANTRY_KEY_PEPPER` when set (several nodes must share it), else a random secret kept
/// in the data dir, created on first start.
fn load_or_create_pepper(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Ok(p) = std::env::var("TENANTRY_KEY_PEPPER") {
        if !p.is_empty() {
            return Ok(p.into_bytes());
        }
    }
    let path = data_dir.join("key-pepper");
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 32 => return Ok(bytes),
        Ok(_) => return Err(std::io::Error::other("key-pepper file is too short")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut pepper = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut pepper);
    write_private(&path, &pepper)?;
    Ok(pepper)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
