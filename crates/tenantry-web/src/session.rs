//! Sign-in for the web pages (docs/SECURITY.md "Sign-in"): `POST /v1/session` and `POST /admin/session` open a
//! session and set it in a cookie, `GET` shows it (with the CSRF token the page sends back), `DELETE` signs
//! out; `POST /v1/session/link` mails a one-time sign-in link, `PUT /v1/tenant/password` sets the admin's
//! password. The portal's cookie (`tenantry_portal`) and the console's (`tenantry_console`) are separate, so
//! one browser may hold both and neither ever stands for the other. Both are `HttpOnly; Secure;
//! SameSite=Strict; Path=/`; a request that changes something with a cookie must also carry the session's
//! CSRF token in `X-CSRF-Token`.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use cookie::{Cookie, SameSite};
use serde::{Deserialize, Serialize};
use tenantry_domain::{ErrorCode, RequestId};
use tenantry_service::sign_in::{
    OpenedSession, SessionKind, SessionRow, SessionView, TenantCredentials, SESSION_HOURS,
};
use tenantry_service::{ServiceError, Services};
use utoipa::ToSchema;

use crate::extract::{AdministersAccount, Json, Tenant};
use crate::problem::{ApiError, Problem};

type ApiResult<T> = Result<T, ApiError>;

/// The portal's session cookie.
pub const PORTAL_COOKIE: &str = "tenantry_portal";
/// The console's session cookie.
pub const CONSOLE_COOKIE: &str = "tenantry_console";
/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The cookie of each kind of session.
pub fn cookie_name(kind: SessionKind) -> &'static str {
    match kind {
        SessionKind::Tenant => PORTAL_COOKIE,
        SessionKind::Operator => CONSOLE_COOKIE,
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

/// The live session of `kind` that the request's cookie names, checked for the CSRF token when the request
/// may change something; `None` without such a cookie (the caller then asks for another credential).
pub async fn from_cookie(
    s: &Services,
    headers: &HeaderMap,
    method: &Method,
    kind: SessionKind,
) -> Option<Result<SessionRow, ApiError>> {
    let token = cookie(headers, cookie_name(kind))?;
    Some(check_session(s, token, headers, method, kind).await)
}

async fn check_session(
    s: &Services,
    token: &str,
    headers: &HeaderMap,
    method: &Method,
    kind: SessionKind,
) -> Result<SessionRow, ApiError> {
    let session = s.session(token, kind).await?;
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let presented = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !safe && !Services::csrf_matches(&session, presented) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a request signed in by cookie must carry the session's CSRF token in X-CSRF-Token (GET /v1/session)",
        ));
    }
    Ok(session)
}

fn set_cookie(name: &'static str, token: String, max_age_secs: i64) -> HeaderValue {
    let cookie = Cookie::build((name, token))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Strict)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age_secs))
        .build();
    // A cookie of a fixed name and a base64url value is always a valid header value.
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn opened(kind: SessionKind, session: OpenedSession) -> Response {
    let cookie = set_cookie(cookie_name(kind), session.token, SESSION_HOURS * 3600);
    let mut response = (StatusCode::CREATED, axum::Json(session.view)).into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn signed_out(kind: SessionKind) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::SET_COOKIE, set_cookie(cookie_name(kind), String::new(), 0));
    response
}

/// The session of `kind` the cookie holds, with its CSRF token; never cached.
async fn show(s: &Services, headers: &HeaderMap, kind: SessionKind) -> ApiResult<Response> {
    let session = from_cookie(s, headers, &Method::GET, kind).await.ok_or_else(not_signed_in)??;
    let mut response = axum::Json(s.session_view(&session).await?).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Ends the session of `kind` the cookie holds (the request must carry its CSRF token) and clears the cookie.
async fn end(s: &Services, headers: &HeaderMap, kind: SessionKind) -> ApiResult<Response> {
    from_cookie(s, headers, &Method::DELETE, kind).await.ok_or_else(not_signed_in)??;
    if let Some(token) = cookie(headers, cookie_name(kind)) {
        s.sign_out(token).await?;
    }
    Ok(signed_out(kind))
}

fn not_signed_in() -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, "not signed in, or the session has ended; sign in again")
}

/// One way of signing in: `email` with `password`, or `link_token` (from a sign-in link), or `api_key` (one
/// with the `admin` scope).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInBody {
    #[schema(max_length = 254)]
    pub email: Option<String>,
    #[schema(max_length = 1024)]
    pub password: Option<String>,
    #[schema(max_length = 256)]
    pub link_token: Option<String>,
    #[schema(max_length = 256)]
    pub api_key: Option<String>,
}

impl SignInBody {
    fn credentials(self) -> Result<TenantCredentials, ApiError> {
        let too_long = [(&self.email, 254), (&self.password, 1024), (&self.link_token, 256), (&self.api_key, 256)]
            .iter()
            .any(|(v, max)| v.as_ref().is_some_and(|v| v.len() > *max));
        if too_long {
            return Err(ServiceError::validation("a sign-in field is too long").into());
        }
        match (self.email, self.password, self.link_token, self.api_key) {
            (Some(email), Some(password), None, None) => Ok(TenantCredentials::Password { email, password }),
            (None, None, Some(token), None) => Ok(TenantCredentials::Link(token)),
            (None, None, None, Some(key)) => Ok(TenantCredentials::ApiKey(key)),
            _ => {
                Err(ServiceError::validation("sign in with exactly one of: email and password, link_token, or api_key")
                    .into())
            }
        }
    }
}

/// Sign in to the portal: opens a session of the tenant and sets it in the `tenantry_portal` cookie. Every
/// state but erased may sign in (a locked-out tenant still sees and pays what it owes). Wrong credentials are
/// 401 without saying which part was wrong; too many failures for one email are 429.
#[utoipa::path(post, path = "/v1/session", tag = "session", request_body = SignInBody,
    responses(
        (status = 201, body = SessionView, headers(("set-cookie" = String, description = "tenantry_portal=…; HttpOnly; Secure; SameSite=Strict; Path=/"))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "An API key without the admin scope", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_in(
    State(s): State<Services>,
    Extension(request_id): Extension<RequestId>,
    Json(body): Json<SignInBody>,
) -> ApiResult<Response> {
    let session = s.sign_in_tenant(body.credentials()?, request_id).await?;
    Ok(opened(SessionKind::Tenant, session))
}

/// The portal session the cookie holds, with its CSRF token.
#[utoipa::path(get, path = "/v1/session", tag = "session", security(("portal_session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn get_session(State(s): State<Services>, headers: HeaderMap) -> ApiResult<Response> {
    show(&s, &headers, SessionKind::Tenant).await
}

/// Sign out of the portal: the session ends on the server and the cookie is cleared.
#[utoipa::path(delete, path = "/v1/session", tag = "session", security(("portal_session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No CSRF token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn sign_out(State(s): State<Services>, headers: HeaderMap) -> ApiResult<Response> {
    end(&s, &headers, SessionKind::Tenant).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    #[schema(max_length = 254)]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkSent {
    pub detail: String,
}

/// Mail a one-time sign-in link (valid 15 minutes) to the account with this email, through the notification
/// outbox. The answer is the same whether or not such an account exists.
#[utoipa::path(post, path = "/v1/session/link", tag = "session", request_body = LinkBody,
    responses(
        (status = 202, body = LinkSent),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn send_link(State(s): State<Services>, Json(body): Json<LinkBody>) -> ApiResult<Response> {
    if body.email.len() > 254 {
        return Err(ServiceError::validation("email is too long").into());
    }
    s.send_sign_in_link(&body.email).await?;
    let detail = "if an account has this email, a sign-in link is on its way to it".to_owned();
    Ok((StatusCode::ACCEPTED, axum::Json(LinkSent { detail })).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    /// 10 to 256 characters, none of them a control character.
    #[schema(min_length = 10, max_length = 256, pattern = r"^[^\x00-\x1F\x7F-\x9F]*$")]
    pub password: String,
}

/// Set the admin's password for signing in to the portal with the account's email. Every other session of
/// the tenant ends.
#[utoipa::path(put, path = "/v1/tenant/password", tag = "tenant", security(("bearer" = []), ("portal_session" = [])),
    request_body = PasswordBody,
    responses(
        (status = 204, description = "Set"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn set_password(
    State(s): State<Services>,
    Tenant { ctx, .. }: Tenant<AdministersAccount>,
    Json(body): Json<PasswordBody>,
) -> ApiResult<StatusCode> {
    s.set_password(&ctx, &body.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OperatorSignInBody {
    /// The operator token (`server.operator_token`).
    #[schema(max_length = 1024)]
    pub token: String,
}

/// Sign in to the console with the operator token: opens an operator session in the `tenantry_console`
/// cookie.
#[utoipa::path(post, path = "/admin/session", tag = "session", request_body = OperatorSignInBody,
    responses(
        (status = 201, body = SessionView, headers(("set-cookie" = String, description = "tenantry_console=…; HttpOnly; Secure; SameSite=Strict; Path=/"))),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn operator_sign_in(
    State(s): State<Services>,
    Extension(request_id): Extension<RequestId>,
    Json(body): Json<OperatorSignInBody>,
) -> ApiResult<Response> {
    if body.token.len() > 1024 {
        return Err(ServiceError::validation("token is too long").into());
    }
    let session = s.sign_in_operator(&body.token, request_id).await?;
    Ok(opened(SessionKind::Operator, session))
}

/// The console session the cookie holds, with its CSRF token.
#[utoipa::path(get, path = "/admin/session", tag = "session", security(("console_session" = [])),
    responses((status = 200, body = SessionView), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn get_operator_session(State(s): State<Services>, headers: HeaderMap) -> ApiResult<Response> {
    show(&s, &headers, SessionKind::Operator).await
}

/// Sign out of the console.
#[utoipa::path(delete, path = "/admin/session", tag = "session", security(("console_session" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "No CSRF token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn operator_sign_out(State(s): State<Services>, headers: HeaderMap) -> ApiResult<Response> {
    end(&s, &headers, SessionKind::Operator).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_by_name_among_others_and_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; tenantry_console=op"));
        headers.append(header::COOKIE, HeaderValue::from_static("tenantry_portal=abc_-9 ; z=2"));
        assert_eq!(cookie(&headers, PORTAL_COOKIE), Some("abc_-9"));
        assert_eq!(cookie(&headers, CONSOLE_COOKIE), Some("op"));
        assert_eq!(cookie(&headers, "tenantry"), None, "names match whole");
        headers.insert(header::COOKIE, HeaderValue::from_static("tenantry_portal="));
        assert_eq!(cookie(&headers, PORTAL_COOKIE), None, "an empty value is no cookie");
    }

    #[test]
    fn the_session_cookie_is_http_only_secure_strict_and_site_wide() {
        let value = set_cookie(PORTAL_COOKIE, "t0k".into(), 60);
        let text = value.to_str().expect("ascii");
        for part in ["tenantry_portal=t0k", "HttpOnly", "Secure", "SameSite=Strict", "Path=/", "Max-Age=60"] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }
}
