//! The outer middleware every request passes: its id, its log span and access line
//! (with secrets redacted), the in-flight limit, and its metrics.

use super::AppState;
use super::error::{Code, RpcError};
use axum::body::Body;
use axum::body::HttpBody;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The base URL for the links of this request's response (see `api::links`).
#[derive(Clone, Debug)]
pub struct LinkBase(pub String);

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Query parameters whose values are secrets or capabilities (a session id lets its
/// holder finish the upload): never logged.
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "upload_id",
    "uploadid",
    "rewritetoken",
    "encryptionkey",
    "encryptionkeysha256",
    "key",
    "x-goog-signature",
    "x-goog-credential",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "signature",
    "token",
    "refresh_token",
];

/// The path and query of `uri` with every secret parameter's value replaced.
pub fn redact_uri(uri: &axum::http::Uri) -> String {
    let path = uri.path();
    let Some(q) = uri.query() else {
        return path.to_owned();
    };
    let redacted: Vec<String> = q
        .split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let name = super::query::percent_decode(k, true)
                .unwrap_or_default()
                .to_ascii_lowercase();
            if !v.is_empty()
                && SECRET_PARAMS
                    .iter()
                    .any(|s| name == *s || name.ends_with(&format!("-{s}")))
            {
                format!("{k}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

/// Which API a path belongs to: a metrics label from a fixed set.
pub fn api_of(path: &str) -> &'static str {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    match first {
        "storage" => "gcs_json",
        "upload" | "resumable" => "gcs_upload",
        "download" => "gcs_download",
        "v1" => "kms",
        "sealstore" => "ops",
        "oauth2" => "oauth2",
        "healthz" | "readyz" | "metrics" => "health",
        _ => "xml",
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// An error in the format of the API `path` belongs to.
pub fn error_for_path(path: &str, status: StatusCode, reason: &'static str, code: Code, message: &str) -> Response {
    match api_of(path) {
        "gcs_json" | "gcs_upload" | "gcs_download" => {
            super::gcs::error::GcsError::new(status, reason, message).into_response()
        }
        "xml" => {
            let code = match status.as_u16() {
                401 | 403 => "AccessDenied",
                408 => "RequestTimeout",
                413 => "EntityTooLarge",
                503 => "SlowDown",
                s if s >= 500 => "InternalError",
                _ => "InvalidRequest",
            };
            // S3 answers an anonymous request it cannot serve with 403, never 401.
            let status = if status.as_u16() == 401 { 403 } else { status.as_u16() };
            super::xml::error::S3Error::new(status, code, message).into_response()
        }
        _ => RpcError::new(code, message).into_response(),
    }
}

pub async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id =
        sealstore_core::request_id::accept_or_new(req.headers().get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()));
    let path = req.uri().path().to_owned();
    let api = api_of(&path);
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), uri = %redact_uri(req.uri()));
    let Ok(_slot) = app.in_flight.clone().try_acquire_owned() else {
        metrics::counter!("sealstore_http_requests_rejected_total", "api" => api, "reason" => "in_flight").increment(1);
        let mut resp = error_for_path(
            &path,
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            Code::Unavailable,
            "The server is handling too many requests; retry with backoff.",
        );
        set_id(&mut resp, &id);
        return resp;
    };
    // Bytes in and out are counted as the bodies stream, whatever their length.
    let (mut parts, body) = req.into_parts();
    let local = parts.extensions.get::<crate::http_server::LocalAddr>().map(|l| l.0);
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    let base = app.links.base(app.scheme, host, local);
    parts.extensions.insert(LinkBase(base));
    // `Expect: 100-continue` on an empty body: hyper never sends the 100 (nothing is
    // read), and botocore, which sends that for every file upload, empty files included,
    // then misreads the next response on the same connection (boto/botocore#3755).
    // Closing the connection after the answer keeps such a client correct.
    let empty_expect = body.is_end_stream()
        && parts
            .headers
            .get(axum::http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body_done = Arc::new(std::sync::atomic::AtomicBool::new(body.is_end_stream()));
    let body = Body::new(Counted {
        inner: body,
        counter: metrics::counter!("sealstore_http_request_bytes_total", "api" => api),
        done: Some(body_done.clone()),
    });
    let req = Request::from_parts(parts, body);
    let mut resp = sealstore_core::request_id::scope(id.clone(), next.run(req).instrument(span.clone())).await;
    let status = resp.status();
    let elapsed = started.elapsed();
    metrics::counter!("sealstore_http_requests_total", "api" => api, "method" => method, "status" => status.as_str().to_owned())
        .increment(1);
    metrics::histogram!("sealstore_http_request_duration_seconds", "api" => api, "method" => method)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(
                status = status.as_u16(),
                ms = elapsed.as_millis() as u64,
                "request failed"
            );
        } else {
            tracing::debug!(status = status.as_u16(), ms = elapsed.as_millis() as u64, "request");
        }
    });
    set_id(&mut resp, &id);
    if empty_expect || !body_done.load(std::sync::atomic::Ordering::SeqCst) {
        // The handler answered without reading the whole request body (an early
        // refusal). The connection cannot be reused, so say so: a client that reuses
        // it would otherwise find it closed under its next request.
        resp.headers_mut()
            .insert(axum::http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let counter = metrics::counter!("sealstore_http_response_bytes_total", "api" => api);
    resp.map(|inner| {
        Body::new(Counted {
            inner,
            counter,
            done: None,
        })
    })
}

/// A body that counts its data bytes as they stream. It forwards the size hint, so a
/// response keeps its `Content-Length` (and is not re-framed as chunked).
struct Counted {
    inner: Body,
    counter: metrics::Counter,
    /// Set once the body has been read to its end (request bodies only).
    done: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl axum::body::HttpBody for Counted {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    self.counter.increment(d.len() as u64);
                }
                if self.inner.is_end_stream()
                    && let Some(done) = &self.done
                {
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            std::task::Poll::Ready(None) => {
                if let Some(done) = &self.done {
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn set_id(resp: &mut Response, id: &Arc<str>) {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_redacted() {
        let uri: axum::http::Uri = "/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=SECRET1&name=x&access_token=SECRET2&encryptionKey=SECRET3&x-goog-signature=SECRET4&rewriteToken=SECRET5&key=SECRET6"
            .parse()
            .unwrap();
        let s = redact_uri(&uri);
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("uploadType=resumable") && s.contains("name=x") && s.contains("upload_id=REDACTED"));
        let uri: axum::http::Uri = "/storage/v1/b/%61ccess_token?%61ccess_token=S".parse().unwrap();
        assert!(!redact_uri(&uri).contains("=S"));
    }

    #[test]
    fn labels_come_from_fixed_sets() {
        assert_eq!(api_of("/storage/v1/b"), "gcs_json");
        assert_eq!(api_of("/my-bucket/my-object"), "xml");
        assert_eq!(method_label(&axum::http::Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
