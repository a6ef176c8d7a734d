//! The `Content-Range` of a resumable-upload chunk PUT: which bytes it carries, of
//! what total, or that it only asks for the session's status.

use super::error::{GcsError, GcsResult};
use sealstore_storage::ChunkRange;

/// `header` is the request's `Content-Range`; without one the body (of `body_len`
/// bytes) is the whole object.
pub fn parse(header: Option<&str>, body_len: Option<u64>) -> GcsResult<ChunkRange> {
    let bad = |h: &str| GcsError::invalid(format!("Invalid Content-Range header: \"{h}\"."));
    let Some(h) = header else {
        // No Content-Range: the whole object in one request.
        return Ok(match body_len {
            Some(0) => ChunkRange::Query { total: Some(0) },
            Some(n) => ChunkRange::Data {
                start: 0,
                end: n - 1,
                total: Some(n),
            },
            None => {
                return Err(GcsError::invalid(
                    "A Content-Range header is required for chunked uploads.",
                ));
            }
        });
    };
    let spec = h.trim().strip_prefix("bytes ").ok_or_else(|| bad(h))?;
    let (range, total) = spec.split_once('/').ok_or_else(|| bad(h))?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad(h))?),
    };
    if range.trim() == "*" {
        return Ok(ChunkRange::Query { total });
    }
    let (s, e) = range.split_once('-').ok_or_else(|| bad(h))?;
    let start: u64 = s.trim().parse().map_err(|_| bad(h))?;
    if e.trim() == "*" {
        if total.is_some_and(|t| start > t) {
            return Err(bad(h));
        }
        return Ok(ChunkRange::Rest { start, total });
    }
    let end: u64 = e.trim().parse().map_err(|_| bad(h))?;
    if end < start || total.is_some_and(|t| end >= t) {
        return Err(bad(h));
    }
    Ok(ChunkRange::Data { start, end, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse(Some("bytes 0-262143/*"), None).unwrap(),
            ChunkRange::Data {
                start: 0,
                end: 262_143,
                total: None
            }
        );
        assert_eq!(
            parse(Some("bytes 5-9/10"), None).unwrap(),
            ChunkRange::Data {
                start: 5,
                end: 9,
                total: Some(10)
            }
        );
        assert_eq!(
            parse(Some("bytes */*"), None).unwrap(),
            ChunkRange::Query { total: None }
        );
        assert_eq!(
            parse(Some("bytes */7"), None).unwrap(),
            ChunkRange::Query { total: Some(7) }
        );
        for bad in ["bytes 9-5/10", "bytes 0-10/10", "0-1/2", "bytes a-b/c", "bytes 0-1"] {
            assert!(parse(Some(bad), None).is_err(), "{bad}");
        }
        assert_eq!(
            parse(None, Some(3)).unwrap(),
            ChunkRange::Data {
                start: 0,
                end: 2,
                total: Some(3)
            }
        );
    }
}
