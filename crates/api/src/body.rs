//! Reading buffered request bodies (KMS, ops, IAM, JSON metadata, the token endpoint)
//! under a size limit. Streaming media routes never come through here.

use axum::body::{Body, Bytes};

/// Why a buffered body could not be read. Each API maps it to its own error format.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("Request payload size exceeds the limit: {0} bytes.")]
    TooLarge(usize),
    #[error("The request body was not received in time.")]
    TimedOut,
    #[error("The request body could not be read: {0}")]
    Unreadable(String),
}

/// Reads `body` whole, failing once it exceeds `limit` bytes (without reading further).
pub async fn read_limited(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| classify(e.into_inner(), limit))
}

/// The body error behind an `axum::Error` from reading a request body.
pub fn classify(e: Box<dyn std::error::Error + Send + Sync>, limit: usize) -> BodyError {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return BodyError::TooLarge(limit);
        }
        if err.is::<tower_http::timeout::TimeoutError>() {
            return BodyError::TimedOut;
        }
        cur = err.source();
    }
    BodyError::Unreadable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limits_and_passes() {
        assert_eq!(read_limited(Body::from("abc"), 3).await.unwrap(), "abc");
        assert!(matches!(
            read_limited(Body::from("abcd"), 3).await,
            Err(BodyError::TooLarge(3))
        ));
    }
}
