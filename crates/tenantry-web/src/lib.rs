//! Tenantry's HTTP surface: the public API of API.md, its OpenAPI description, the web pages, and the
//! application that binds a listener and serves them. Handlers are thin; the service layer decides.

mod account;
mod analytics;
mod api;
mod body;
mod caller;
mod chat;
mod extract;
mod idempotency;
mod integrations;
mod metrics;
mod openapi_problems;
mod operator;
mod pages;
mod plans;
pub mod problem;
mod responses;
mod serve;
mod session;
mod usage;
mod whole;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
pub use metrics::MetricsSource;
use tenantry_domain::Config;
use tenantry_service::{Services, StartError};
use tokio::net::TcpListener;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "Tenantry", description = "Multi-tenant retrieval-augmented generation: documents, questions, usage."),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem)),
    tags(
        (name = "public", description = "No authentication"),
        (name = "tenant", description = "The calling tenant (Bearer tk_…)"),
        (name = "documents", description = "The tenant's documents"),
        (name = "query", description = "Questions over the tenant's documents"),
        (name = "usage", description = "Metered usage and quotas"),
        (name = "keys", description = "The tenant's API keys"),
        (name = "integrations", description = "Webhooks, usage alerts and prepaid credit"),
        (name = "operator", description = "The operator (Bearer operator token)"),
        (name = "session", description = "Signing in to the portal and the console (session cookies)"),
        (name = "operations", description = "Health and metadata"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "operator",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for (name, cookie) in [("portal_session", session::PORTAL_COOKIE), ("console_session", session::CONSOLE_COOKIE)]
        {
            components.add_security_scheme(name, SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(cookie))));
        }
    }
}

/// Every API route with its OpenAPI operation, from one list so neither can miss a route.
fn api_routes() -> OpenApiRouter<Services> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::signup))
        .routes(routes!(session::sign_in, session::get_session, session::sign_out))
        .routes(routes!(session::send_link))
        .routes(routes!(session::set_password))
        .routes(routes!(session::operator_sign_in, session::get_operator_session, session::operator_sign_out))
        .routes(routes!(api::get_tenant, api::delete_tenant))
        .routes(routes!(api::start_export))
        .routes(routes!(api::get_export))
        .routes(routes!(api::patch_config))
        .routes(routes!(api::change_plan))
        .routes(routes!(plans::preview_plan))
        .routes(routes!(plans::list_plans))
        .routes(routes!(api::upload_document, api::list_documents))
        .routes(routes!(api::get_document, api::delete_document))
        .routes(routes!(api::query))
        .routes(routes!(chat::chat_completions))
        .routes(routes!(chat::list_models))
        .routes(routes!(chat::get_model))
        .routes(routes!(chat::embeddings))
        .routes(routes!(responses::create_response))
        .routes(routes!(api::usage))
        .routes(routes!(usage::timeseries))
        .routes(routes!(usage::admin_timeseries))
        .routes(routes!(api::quotas))
        .routes(routes!(api::list_keys, api::create_key, api::revoke_named_key))
        .routes(routes!(api::revoke_key))
        .routes(routes!(integrations::create_webhook, integrations::list_webhooks))
        .routes(routes!(integrations::delete_webhook))
        .routes(routes!(integrations::list_deliveries))
        .routes(routes!(integrations::resend_delivery))
        .routes(routes!(integrations::get_alerts, integrations::put_alerts))
        .routes(routes!(integrations::get_credits))
        .routes(routes!(integrations::grant_credit))
        .routes(routes!(api::admin_tenants))
        .routes(routes!(api::admin_tenant))
        .routes(routes!(api::admin_suspend))
        .routes(routes!(api::admin_reactivate))
        .routes(routes!(api::admin_extend_trial))
        .routes(routes!(api::admin_audit))
        .routes(routes!(api::admin_erasure))
        .routes(routes!(api::invoices))
        .routes(routes!(api::upcoming_invoice))
        .routes(routes!(api::admin_close_period))
        .routes(routes!(api::admin_payment))
        .routes(routes!(api::admin_void_invoice))
        .routes(routes!(api::admin_mark_uncollectible))
        .routes(routes!(operator::overview))
        .routes(routes!(operator::revenue))
        .routes(routes!(operator::advance_clock))
        .routes(routes!(operator::list_jobs))
        .routes(routes!(operator::requeue_job))
        .routes(routes!(operator::stripe_webhook))
        .routes(routes!(account::cancel))
        .routes(routes!(account::reactivate))
        .routes(routes!(account::admin_cancel))
        .routes(routes!(account::win_back_report))
        .routes(routes!(analytics::reconcile))
        .routes(routes!(metrics::scrape))
        .routes(routes!(api::healthz))
        .routes(routes!(api::readyz))
        .routes(routes!(pages::index))
        .routes(routes!(pages::portal))
        .routes(routes!(pages::portal_section))
        .routes(routes!(pages::console))
        .routes(routes!(pages::asset))
}

/// The OpenAPI document served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut spec) = api_routes().split_for_parts();
    spec.paths.paths.insert(
        "/openapi.json".into(),
        utoipa::openapi::path::PathItem::new(
            utoipa::openapi::HttpMethod::Get,
            utoipa::openapi::path::OperationBuilder::new()
                .summary(Some("This OpenAPI document"))
                .tag("operations")
                .response("200", utoipa::openapi::ResponseBuilder::new().description("OpenAPI 3.1 JSON")),
        ),
    );
    openapi_problems::document_layer_problems(&mut spec);
    spec
}

pub fn router(services: Services) -> Router {
    router_with(services, Default::default())
}

/// The router, its requests counted and timed in `metrics`.
fn router_with(services: Services, metrics: std::sync::Arc<metrics::Metrics>) -> Router {
    let max_body = services.config().server.max_body_bytes;
    let body_timeout = services.config().server.body_timeout_secs.max(1);
    let limits = &services.config().limits;
    let budget = body::BodyBudget::new(
        limits.inflight_body_bytes,
        std::time::Duration::from_secs(limits.inflight_wait_secs),
        limits.bulk_body_bytes_per_second,
    );
    let (router, _) = api_routes().split_for_parts();
    let spec = openapi();
    let keyed = idempotency::KeyedOperations::of(&spec);
    let cors = cors(&services.config().gateway.cors_origins);
    let router = router
        .route("/openapi.json", get(move || async move { axum::Json(spec) }))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state((services.clone(), keyed), idempotency::idempotent))
        .layer(axum::middleware::from_fn_with_state(services.clone(), extract::tenant_response))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(body_timeout)))
        .layer(axum::middleware::from_fn_with_state((services.clone(), budget), body::guard))
        .layer(axum::middleware::from_fn_with_state(metrics.clone(), metrics::track))
        .layer(axum::Extension(metrics))
        .layer(axum::middleware::from_fn(body::head_limits))
        .layer(axum::middleware::from_fn(extract::request_context))
        .with_state(services);
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for the configured origins (`gateway.cors_origins`; `*` for any), outermost so that a preflight is
/// answered before authentication; none configured, none sent. Credentials are never allowed: the API is
/// called with a bearer key; the web pages' session cookies work from this origin only (`SameSite=Strict`).
fn cors(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer, ExposeHeaders};
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| axum::http::HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::PATCH,
                axum::http::Method::DELETE,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(ExposeHeaders::any())
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A built application: services started, listener bound (port 0 picks a free port).
pub struct Application {
    listener: TcpListener,
    services: Services,
    metrics: std::sync::Arc<metrics::Metrics>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, AppError> {
        let addr = config.server.bind.clone();
        let services = Services::start(config).await?;
        let listener = TcpListener::bind(&addr).await.map_err(|source| AppError::Bind { addr, source })?;
        Ok(Self { listener, services, metrics: Default::default() })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The metrics `GET /metrics` serves, for an exporter that pushes them.
    pub fn metrics(&self) -> MetricsSource {
        MetricsSource::new(self.metrics.clone(), self.services.clone())
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and closes the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let app = router_with(self.services.clone(), self.metrics.clone());
        let (stop_background, stopped) = tokio::sync::watch::channel(false);
        let background = {
            let services = self.services.clone();
            tokio::spawn(async move { services.run_background(stopped).await })
        };
        let header_timeout = std::time::Duration::from_secs(self.services.config().server.header_timeout_secs.max(1));
        serve::serve(self.listener, app, header_timeout, shutdown).await;
        let _ = stop_background.send(true);
        let _ = background.await;
        self.services.shutdown().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A path parameter is one the path's template names; everything else a handler reads from the URL is
    /// a query parameter (OpenAPI 3.1 requires it, and generated clients put it where the document says).
    #[test]
    fn parameters_are_in_the_path_only_when_the_template_names_them() {
        let spec = serde_json::to_value(super::openapi()).expect("serialises");
        let mut checked = 0;
        for (path, item) in spec["paths"].as_object().expect("paths") {
            for (method, operation) in item.as_object().expect("path item") {
                for param in operation["parameters"].as_array().into_iter().flatten() {
                    let (name, place) = (param["name"].as_str().expect("name"), param["in"].as_str().expect("in"));
                    let templated = path.contains(&format!("{{{name}}}"));
                    assert_eq!(place == "path", templated, "{method} {path}: parameter {name} is in {place}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} parameters seen");
    }

    /// Every `$ref` names a schema the document defines (a type used only as a parameter is not collected
    /// into the components unless inlined, and a dangling reference breaks every client generator).
    #[test]
    fn every_schema_reference_resolves() {
        fn refs<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
            match value {
                serde_json::Value::Object(map) => {
                    if let Some(target) = map.get("$ref").and_then(|r| r.as_str()) {
                        found.push(target);
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let spec = serde_json::to_value(super::openapi()).expect("serialises");
        let mut found = Vec::new();
        refs(&spec, &mut found);
        assert!(found.len() > 50, "only {} references seen", found.len());
        for target in found {
            let name = target.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{target}"));
            assert!(spec["components"]["schemas"][name].is_object(), "{target} is not defined");
        }
    }
}
