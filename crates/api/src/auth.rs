//! Authentication: who is calling. `--auth dev` (loopback only) makes credential-less
//! requests act as the dev user, owner of everything; `--auth token` requires a bearer
//! token for every request. Tokens are checked by keyed-hash lookup.

use super::AppState;
use super::error::{Code, RpcError};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The authenticated caller, as an IAM member (`user:…`, `serviceAccount:…`).
#[derive(Debug, Clone)]
pub struct Principal(pub String);

pub const DEV_PRINCIPAL: &str = "user:dev@localhost";

/// A bearer token the KMS face resolves itself, inside the one blocking call that does
/// its work: a token lookup of its own would cost a second trip to the blocking pool
/// on every `:encrypt`.
#[derive(Clone)]
pub struct DeferredToken(pub String);

/// The KMS REST face (`/v1/…`), which resolves its own bearer tokens.
fn defers_token(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// The principal of a deferred bearer token, or the 401 to answer (KMS format).
/// Runs on a blocking thread (the KMS face's one), where a SQLite lookup runs inline.
pub fn resolve_deferred(app: &AppState, token: &str) -> Result<String, RpcError> {
    match tokio::runtime::Handle::current().block_on(app.tokens.authenticate(token)) {
        Ok(Some(p)) => Ok(p),
        Ok(None) => Err(RpcError::new(
            Code::Unauthenticated,
            "Request had invalid authentication credentials: the token is unknown or revoked.",
        )),
        Err(e) => Err(e.into()),
    }
}

fn unauthenticated(path: &str, message: &str) -> Response {
    super::observe::error_for_path(
        path,
        axum::http::StatusCode::UNAUTHORIZED,
        "required",
        Code::Unauthenticated,
        message,
    )
}

/// The token of an `Authorization: Bearer <token>` header. The scheme is case-insensitive
/// (RFC 7235 §2.1), and any run of spaces or tabs may separate it from the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, rest) = value.trim_start().split_once([' ', '\t'])?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // The token endpoint authenticates its own body (the refresh token).
    if path == "/healthz" || path == "/readyz" || path == super::oauth2::TOKEN_PATH {
        return next.run(req).await;
    }
    if super::xml::is_xml_path(&path) {
        let sent_path = req
            .extensions()
            .get::<super::xml::OriginalPath>()
            .map_or_else(|| path.clone(), |p| p.0.clone());
        // The request's parts, not the request, are held across the await (the body is
        // not `Sync`), so nothing needs copying.
        let (mut parts, body) = req.into_parts();
        let verified = super::xml::auth::authenticate(&app, &parts.method, &parts.uri, &parts.headers, sent_path).await;
        match verified {
            Err(e) => return e.into_response(),
            Ok(Some((principal, verified, project))) => {
                parts.extensions.insert(Principal(principal));
                parts.extensions.insert(verified);
                parts.extensions.insert(project);
                return next.run(Request::from_parts(parts, body)).await;
            }
            // Unsigned: a bearer token, or the dev user.
            Ok(None) => req = Request::from_parts(parts, body),
        }
    }
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .map(str::to_owned);
    let principal = match bearer {
        Some(token) if defers_token(&path) => {
            req.extensions_mut().insert(DeferredToken(token));
            return next.run(req).await;
        }
        Some(token) => match app.tokens.authenticate(&token).await {
            Ok(Some(p)) => p,
            Ok(None) => {
                return unauthenticated(
                    &path,
                    "Request had invalid authentication credentials: the token is unknown or revoked.",
                );
            }
            Err(e) => return RpcError::from(e).into_response(),
        },
        None if !app.token_auth => DEV_PRINCIPAL.to_owned(),
        None => {
            return unauthenticated(
                &path,
                "Request is missing required authentication credential. Expected an Authorization: Bearer token.",
            );
        }
    };
    req.extensions_mut().insert(Principal(principal));
    next.run(req).await
}

impl AppState {
    /// Whether `principal` holds `permission` on the first resource of `chain`
    /// (checking the policies along the chain). In dev mode the dev user owns everything.
    /// The dev user in dev mode: owner of everything, no policy lookups needed.
    pub fn is_dev_owner(&self, principal: &str) -> bool {
        !self.token_auth && principal == DEV_PRINCIPAL
    }

    pub async fn allowed(&self, principal: &str, permission: &str, chain: &[String]) -> bool {
        self.allowed_where(principal, permission, chain, true).await
    }

    /// `allowed`, from a thread of the blocking pool (the KMS face does its request's
    /// work there; a SQLite lookup runs inline, without a second thread hop).
    pub fn allowed_blocking(&self, principal: &str, permission: &str, chain: &[String]) -> bool {
        sealstore_core::blocking::wait(self.allowed(principal, permission, chain))
    }

    /// As `allowed`; `public_ok = false` ignores grants to allUsers/allAuthenticatedUsers.
    pub async fn allowed_where(&self, principal: &str, permission: &str, chain: &[String], public_ok: bool) -> bool {
        if self.is_dev_owner(principal) {
            return true;
        }
        match sealstore_iam::has_permission_where(&self.policies, principal, chain, permission, public_ok).await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!(error = %e, "policy lookup failed; denying");
                false
            }
        }
    }

    pub fn audit(&self, principal: &str, method: &str, resource: &str, permission: &str, outcome: &str) {
        self.audit
            .record(self.clock.now(), principal, method, resource, permission, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "BeArEr   abc ", "Bearer\tabc"] {
            assert_eq!(bearer_token(v), Some("abc"), "{v:?}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", ""] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
