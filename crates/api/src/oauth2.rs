//! The OAuth 2.0 token endpoint (`POST /oauth2/v4/token`, RFC 6749 §6).
//!
//! Clients that only know Google's credential flows (gsutil's `gs_oauth2_refresh_token`,
//! google-auth's `authorized_user` files) fetch their access token from a token URI
//! before every hour of work. Pointing that URI here lets them carry a sealstore token:
//! the sealstore token is the refresh token, and the access token handed back is the same
//! token, so revoking it (`sealstore iam tokens revoke`) cuts the client off at once.
//! Nothing new is minted or stored. Errors use RFC 6749 §5.2's JSON shape.

use super::AppState;
use super::query::Query;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub const TOKEN_PATH: &str = "/oauth2/v4/token";

/// How long clients may cache the access token before asking again (seconds). Short, so a
/// revoked token stops working in clients that cache even without a 401.
const EXPIRES_IN_S: u64 = 3600;

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

pub async fn token(State(app): State<AppState>, body: axum::body::Body) -> Response {
    let body = match super::body::read_limited(body, app.limits.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => {
            let status = match e {
                super::body::BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return oauth_error(status, "invalid_request", &e.to_string());
        }
    };
    // The body is `application/x-www-form-urlencoded`; the refresh token never reaches a
    // log line or an error message.
    let form = match std::str::from_utf8(&body)
        .map_err(|_| "the body is not UTF-8".to_owned())
        .and_then(|s| Query::parse(Some(s)))
    {
        Ok(form) => form,
        Err(e) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("Malformed form body: {e}."),
            );
        }
    };
    let (refresh_token, scope) = (
        form.get("refresh_token").map(str::to_owned),
        form.get("scope").map(str::to_owned),
    );
    match form.get("grant_type") {
        Some("refresh_token") => {}
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: grant_type",
            );
        }
        Some(other) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!(
                    "Unsupported grant type: {}. sealstore exchanges only refresh_token grants, whose refresh token is a sealstore token.",
                    other.chars().take(100).collect::<String>()
                ),
            );
        }
    }
    let Some(token) = refresh_token.filter(|t| !t.is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Missing required parameter: refresh_token",
        );
    };
    match app.tokens.authenticate_fresh(&token).await {
        Ok(Some(principal)) => {
            app.audit(&principal, "POST oauth2/v4/token", "oauth2/token", "", "OK");
            let mut body = json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": EXPIRES_IN_S,
            });
            if let Some(scope) = scope {
                body["scope"] = json!(scope);
            }
            (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
        }
        Ok(None) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "Token has been expired or revoked.",
        ),
        Err(e) => {
            tracing::error!(error = %e, "token lookup failed");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "The token store is not reachable.",
            )
        }
    }
}
