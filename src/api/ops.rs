//! Health, readiness and the sealstore ops API (`/sealstore/v1/...`).

use super::AppState;
use super::error::{Code, RpcError};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the KMS store answers.
pub async fn readyz(State(app): State<AppState>) -> Response {
    let kms = app.kms.clone();
    match tokio::task::spawn_blocking(move || kms.stored_secret("readyz-probe")).await {
        Ok(Ok(_)) => "ready".into_response(),
        _ => RpcError::new(Code::Unavailable, "The metadata store is not reachable.").into_response(),
    }
}

pub async fn not_found(method: Method, uri: Uri) -> Response {
    RpcError::new(Code::NotFound, format!("No such endpoint: {method} {}.", uri.path())).into_response()
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    RpcError::new(Code::Internal, "Internal error.").into_response()
}

pub async fn handle(
    State(app): State<AppState>,
    axum::Extension(principal): axum::Extension<crate::api::auth::Principal>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    if method == Method::POST && path == "/sealstore/v1/clock:advance" && app.fake_clock {
        return advance(app, &body).await;
    }
    if let Some(rest) = path.strip_prefix("/sealstore/v1/projects/")
        && let Some((project, verb)) = rest.split_once(':')
        && crate::kms::names::valid_project(project)
    {
        let resource = format!("projects/{project}");
        let (permission, set) = match (&method, verb) {
            (&Method::GET | &Method::POST, "getIamPolicy") => ("resourcemanager.projects.getIamPolicy", false),
            (&Method::POST, "setIamPolicy") => ("resourcemanager.projects.setIamPolicy", true),
            _ => return not_found(method, uri).await,
        };
        let chain = vec![resource.clone()];
        if !app.allowed(&principal.0, permission, &chain) {
            app.audit(
                &principal.0,
                &format!("{method} {path}"),
                &resource,
                permission,
                "DENIED",
            );
            return RpcError::new(
                Code::PermissionDenied,
                format!("Permission '{permission}' denied on resource '{resource}' (or it may not exist)."),
            )
            .into_response();
        }
        let result = tokio::task::spawn_blocking(move || -> Result<serde_json::Value, RpcError> {
            if set {
                let body = crate::api::kms::json::parse_body(&body)?;
                let o = crate::api::kms::json::Obj::new(&body);
                let policy = crate::api::kms::handlers::parse_policy(&o.obj("policy")?)?;
                let stored = app.policies.set(&resource, policy)?;
                app.audit(&principal.0, &format!("POST {path}"), &resource, permission, "OK");
                Ok(crate::api::kms::render::policy(&stored))
            } else {
                Ok(crate::api::kms::render::policy(&app.policies.get(&resource)?))
            }
        })
        .await;
        return match result {
            Ok(Ok(v)) => Json(v).into_response(),
            Ok(Err(e)) => e.into_response(),
            Err(_) => RpcError::new(Code::Internal, "Internal error.").into_response(),
        };
    }
    not_found(method, uri).await
}

/// Moves the fake clock and applies every transition that came due before replying,
/// so a client reading right after sees the new states.
async fn advance(app: AppState, body: &[u8]) -> Response {
    let seconds = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| {
        v.get("seconds")
            .and_then(|s| s.as_i64().or_else(|| s.as_str().and_then(|s| s.parse().ok())))
    });
    let Some(seconds) = seconds.filter(|s| (0..=100 * 365 * 86_400).contains(s)) else {
        return RpcError::invalid("Body must be {\"seconds\": N} with 0 <= N <= 100 years.").into_response();
    };
    let now = match app.clock.advance(chrono::TimeDelta::seconds(seconds)) {
        Ok(now) => now,
        Err(why) => return RpcError::invalid(why).into_response(),
    };
    let kms = app.kms.clone();
    let offset_ms = app.clock.offset().num_milliseconds();
    let settings = app.settings.clone();
    let applied = tokio::task::spawn_blocking(move || {
        settings.set_i64(crate::server::FAKE_CLOCK_OFFSET, offset_ms)?;
        kms.run_due();
        Ok::<_, rusqlite::Error>(())
    })
    .await;
    if !matches!(applied, Ok(Ok(()))) {
        return RpcError::new(Code::Internal, "Applying due transitions failed.").into_response();
    }
    Json(json!({"now": crate::api::kms::json::format_time(now)})).into_response()
}
