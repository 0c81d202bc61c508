//! Sign-in: `GET /auth/login`, `GET /auth/callback`, `POST /auth/logout`, `GET /api/me`
//! (`crate::users` does the work), and the cookie attributes: `HttpOnly`, `SameSite=Lax`,
//! `Secure` when the request came over TLS.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::reports::{Strictness, same_origin};
use crate::error::{ApiError, Code};
use crate::users::{LOGIN_COOKIE, LOGIN_SECS, SESSION_COOKIE, SignInError, User};

/// The request's `Cookie` header values.
pub(crate) fn cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The signed-in user (or `anonymous` without sign-in); 401 `not_signed_in` otherwise.
pub(crate) fn user(state: &AppState, headers: &HeaderMap) -> Result<User, ApiError> {
    state
        .users
        .user(&cookies(headers))
        .map_err(|e| ApiError::new(Code::NotSignedIn, e.to_string()))
}

/// Whether the browser reached the core over TLS (directly or through a proxy that says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or(HeaderValue::from_static("tessera=; Max-Age=0"))
}

fn failed(e: SignInError) -> ApiError {
    match e {
        SignInError::NotSignedIn(m) => ApiError::new(Code::NotSignedIn, m),
        SignInError::Failed(m) => ApiError::new(Code::LoginFailed, m),
    }
}

fn not_configured() -> ApiError {
    ApiError::new(
        Code::SignInNotConfigured,
        "sign-in is not configured on this core (auth.oidc); the shell is anonymous",
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    #[serde(rename = "return")]
    back: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    if !state.users.signs_in() {
        return Err(not_configured());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if over_tls(&headers) { "https" } else { "http" };
    let (url, sealed) = state
        .users
        .login(
            &format!("{scheme}://{host}"),
            q.back.as_deref().unwrap_or("/"),
        )
        .await
        .map_err(failed)?;
    let location =
        HeaderValue::from_str(&url).map_err(|e| ApiError::new(Code::Internal, e.to_string()))?;
    Ok(redirect(
        StatusCode::FOUND,
        location,
        [set_cookie(
            LOGIN_COOKIE,
            &sealed,
            "/auth",
            LOGIN_SECS,
            over_tls(&headers),
        )],
    ))
}

/// A redirect that sets `cookies` and is never cached.
fn redirect(
    status: StatusCode,
    location: HeaderValue,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    let mut res = status.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, location);
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    if !state.users.signs_in() {
        return Err(not_configured());
    }
    if let Some(error) = q.error {
        return Err(ApiError::new(
            Code::LoginFailed,
            format!(
                "the provider refused the sign-in: {error}{}",
                q.error_description
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ),
        ));
    }
    let (Some(code), Some(st)) = (q.code, q.state) else {
        return Err(ApiError::new(
            Code::LoginFailed,
            "the callback needs code and state from the provider",
        ));
    };
    let (sealed, max_age, back) = state
        .users
        .callback(&cookies(&headers), &st, &code)
        .await
        .map_err(failed)?;
    let tls = over_tls(&headers);
    Ok(redirect(
        StatusCode::SEE_OTHER,
        HeaderValue::from_str(&back).unwrap_or(HeaderValue::from_static("/")),
        [
            set_cookie(SESSION_COOKIE, &sealed, "/", max_age, tls),
            set_cookie(LOGIN_COOKIE, "", "/auth", 0, tls),
        ],
    ))
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !state.users.signs_in() {
        return Err(not_configured());
    }
    // A cross-site form must not sign a user out either.
    same_origin(&headers, Strictness::Required)?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/", 0, over_tls(&headers)),
    );
    Ok(res)
}

async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let mut res = axum::Json(user(&state, &headers)?).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The sign-in endpoints.
pub(super) fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
        .route("/api/me", get(me))
}
