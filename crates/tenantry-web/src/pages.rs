//! The web pages: the front page (`/`), the tenant portal (`/portal`) and the operator console (`/console`).
//! Static HTML, CSS and vanilla JS embedded in the binary, with no build step; the scripts sign in (`session`:
//! a session in an HttpOnly cookie) and call the JSON API, so the pages themselves need no authentication.
//! Every page response forbids framing and inline script.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tenantry_domain::ErrorCode;

use crate::problem::{ApiError, Problem};

/// Scripts, styles and requests from this origin only; no inline script or style, no plugins, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const PORTAL_HTML: &str = include_str!("../assets/portal.html");
const CONSOLE_HTML: &str = include_str!("../assets/console.html");

/// The assets the pages load, by file name.
const ASSETS: [(&str, &str, &str); 4] = [
    ("app.css", "text/css; charset=utf-8", include_str!("../assets/app.css")),
    ("common.js", "text/javascript; charset=utf-8", include_str!("../assets/common.js")),
    ("portal.js", "text/javascript; charset=utf-8", include_str!("../assets/portal.js")),
    ("console.js", "text/javascript; charset=utf-8", include_str!("../assets/console.js")),
];

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The front page: where the portal, the console, the API description and the health checks are.
#[utoipa::path(get, path = "/", tag = "operations",
    responses((status = 200, description = "Links to the portal, the console and the API description",
        content_type = "text/html", body = String)))]
pub async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX_HTML)
}

/// The tenant portal: plan and state, quotas, usage, invoices, documents, API keys and plan change, signed in
/// with the account's email and password, a sign-in link or an admin API key.
#[utoipa::path(get, path = "/portal", tag = "operations",
    responses((status = 200, description = "The tenant portal", content_type = "text/html", body = String)))]
pub async fn portal() -> Response {
    page("text/html; charset=utf-8", PORTAL_HTML)
}

/// The portal's sections, each at `/portal/{section}` (`/portal` is the overview).
pub const PORTAL_SECTIONS: [&str; 7] = ["ask", "documents", "keys", "billing", "settings", "integrations", "data"];

/// A section of the tenant portal: the same page, opened at that section.
#[utoipa::path(get, path = "/portal/{section}", tag = "operations",
    params(("section" = String, Path, description = "`ask`, `documents`, `keys`, `billing`, `settings`, \
        `integrations` or `data`")),
    responses(
        (status = 200, description = "The tenant portal", content_type = "text/html", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn portal_section(Path(section): Path<String>) -> Result<Response, ApiError> {
    if !PORTAL_SECTIONS.contains(&section.as_str()) {
        return Err(ApiError::new(ErrorCode::NotFound, "no such portal section"));
    }
    Ok(page("text/html; charset=utf-8", PORTAL_HTML))
}

/// The operator console: tenants by state, revenue, activation funnel, dunning, integration health and each
/// tenant's history, signed in with the operator token.
#[utoipa::path(get, path = "/console", tag = "operations",
    responses((status = 200, description = "The operator console", content_type = "text/html", body = String)))]
pub async fn console() -> Response {
    page("text/html; charset=utf-8", CONSOLE_HTML)
}

/// A stylesheet or script of the web pages.
#[utoipa::path(get, path = "/assets/{file}", tag = "operations",
    params(("file" = String, Path, description = "`app.css`, `common.js`, `portal.js` or `console.js`")),
    responses(
        (status = 200, description = "The file", content_type = "text/javascript", body = String),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such asset"))?;
    Ok(page(content_type, body))
}
