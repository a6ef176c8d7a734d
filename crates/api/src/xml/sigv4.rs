//! Signature Version 4 verification, for AWS (`AWS4-HMAC-SHA256`, scope ending
//! `aws4_request`) and GCS (`GOOG4-HMAC-SHA256`, `goog4_request`): the same algorithm
//! under two sets of names, so one implementation serves S3 clients, GCS XML clients and
//! GCS V4 signed URLs. Signatures travel in the `Authorization` header or in a presigned
//! query string. All HMAC and hashing is aws-lc-rs; signatures compare in constant time.

use super::error::S3Error;
use aws_lc_rs::{digest, hmac};
use axum::http::{HeaderMap, Method};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

/// How far a header-signed request's time may be from the server's (as S3: 15 min).
pub const MAX_SKEW: TimeDelta = TimeDelta::minutes(15);
/// The longest a presigned URL may live (7 days), as S3 and GCS allow.
pub const MAX_EXPIRES: i64 = 7 * 24 * 3600;

pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Aws4,
    Goog4,
}

impl Scheme {
    pub fn algorithm(self) -> &'static str {
        match self {
            Scheme::Aws4 => "AWS4-HMAC-SHA256",
            Scheme::Goog4 => "GOOG4-HMAC-SHA256",
        }
    }
    fn key_prefix(self) -> &'static str {
        match self {
            Scheme::Aws4 => "AWS4",
            Scheme::Goog4 => "GOOG4",
        }
    }
    fn terminator(self) -> &'static str {
        match self {
            Scheme::Aws4 => "aws4_request",
            Scheme::Goog4 => "goog4_request",
        }
    }
    /// `x-amz` or `x-goog`: the prefix of this scheme's headers and query parameters.
    fn header_prefix(self) -> &'static str {
        match self {
            Scheme::Aws4 => "x-amz",
            Scheme::Goog4 => "x-goog",
        }
    }
    fn from_algorithm(a: &str) -> Option<Self> {
        match a {
            "AWS4-HMAC-SHA256" => Some(Scheme::Aws4),
            "GOOG4-HMAC-SHA256" => Some(Scheme::Goog4),
            _ => None,
        }
    }
}

/// What the payload hash of a signed request says about its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The body is not covered by the signature.
    Unsigned,
    /// The body's SHA-256 must be this (checked when the body has been read).
    Sha256([u8; 32]),
    /// `aws-chunked`: each chunk carries a signature chained from the seed (`signed`),
    /// or none; `trailer`: trailing headers (checksums) follow the last chunk.
    Streaming { signed: bool, trailer: bool },
}

/// A request's signature, parsed but not yet checked.
#[derive(Debug, Clone)]
pub struct Signed {
    pub scheme: Scheme,
    pub access_id: String,
    /// `YYYYMMDD/region/service/terminator`.
    pub scope: String,
    date: String,
    region: String,
    service: String,
    /// `YYYYMMDDTHHMMSSZ`, as signed.
    pub timestamp: String,
    pub time: DateTime<Utc>,
    signed_headers: Vec<String>,
    signature: Vec<u8>,
    /// Presigned: the lifetime in seconds from `time`.
    pub expires: Option<i64>,
    /// The payload hash as it enters the canonical request.
    payload_hash: String,
    pub payload: Payload,
}

fn malformed(message: impl Into<String>) -> S3Error {
    S3Error::new(400, "AuthorizationHeaderMalformed", message)
}

fn query_error(message: impl Into<String>) -> S3Error {
    S3Error::new(400, "AuthorizationQueryParametersError", message)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

/// Raw `key=value` pairs of a query string, percent-decoded (`+` stays `+`).
fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
    let Some(raw) = raw.filter(|q| !q.is_empty()) else {
        return Ok(vec![]);
    };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let d = |s: &str| {
                crate::query::percent_decode(s, false)
                    .ok_or_else(|| S3Error::new(400, "InvalidArgument", "Malformed query string."))
            };
            Ok((d(k)?, d(v)?))
        })
        .collect()
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters as they are, everything
/// else `%XX` upper-case; `/` kept when encoding a path.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers.get_all(name).iter().peekable();
    values.peek()?;
    let parts: Vec<String> = values
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    Some(parts.join(","))
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// `ACCESSID/DATE/REGION/SERVICE/TERMINATOR`.
fn parse_credential(scheme: Scheme, c: &str, err: fn(String) -> S3Error) -> Result<(String, [String; 3]), S3Error> {
    let parts: Vec<&str> = c.split('/').collect();
    match parts.as_slice() {
        [id, date, region, service, term]
            if !id.is_empty() && date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) =>
        {
            if *term != scheme.terminator() {
                return Err(err(format!(
                    "The credential scope must end with \"{}\", not \"{term}\".",
                    scheme.terminator()
                )));
            }
            Ok((
                id.to_string(),
                [date.to_string(), region.to_string(), service.to_string()],
            ))
        }
        _ => Err(err(format!(
            "The credential \"{}\" is malformed: expected ACCESS_ID/YYYYMMDD/REGION/SERVICE/{}.",
            c.split('/').skip(1).collect::<Vec<_>>().join("/"),
            scheme.terminator()
        ))),
    }
}

fn payload_of(value: &str) -> Result<Payload, S3Error> {
    Ok(match value {
        UNSIGNED_PAYLOAD => Payload::Unsigned,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => Payload::Streaming {
            signed: false,
            trailer: true,
        },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => Payload::Streaming {
            signed: true,
            trailer: false,
        },
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => Payload::Streaming {
            signed: true,
            trailer: true,
        },
        h => {
            let bytes = unhex(h).filter(|b| b.len() == 32).ok_or_else(|| {
                S3Error::new(
                    400,
                    "InvalidArgument",
                    format!(
                        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-* or a SHA-256 in hex, not \"{h}\"."
                    ),
                )
            })?;
            let mut a = [0u8; 32];
            a.copy_from_slice(&bytes);
            Payload::Sha256(a)
        }
    })
}

impl Signed {
    /// The signature of a request, if it carries one (`Ok(None)`: unsigned).
    pub fn parse(headers: &HeaderMap, raw_query: Option<&str>) -> Result<Option<Signed>, S3Error> {
        if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
            let auth = auth
                .to_str()
                .map_err(|_| malformed("The Authorization header is not ASCII."))?;
            let (alg, rest) = auth.trim().split_once(' ').unwrap_or((auth.trim(), ""));
            if let Some(scheme) = Scheme::from_algorithm(alg) {
                return Self::from_header(scheme, rest, headers).map(Some);
            }
            if alg == "AWS" {
                return Err(S3Error::new(
                    400,
                    "InvalidRequest",
                    "Signature Version 2 is not supported: sign requests with AWS4-HMAC-SHA256.",
                ));
            }
            // Bearer tokens are the caller's business (authenticated elsewhere).
            return Ok(None);
        }
        let pairs = query_pairs(raw_query)?;
        let find = |k: &str| {
            pairs
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(k))
                .map(|(_, v)| v.as_str())
        };
        let alg = find("X-Amz-Algorithm").or_else(|| find("X-Goog-Algorithm"));
        let Some(alg) = alg else {
            if find("AWSAccessKeyId").is_some() && find("Signature").is_some() {
                return Err(S3Error::new(
                    400,
                    "InvalidRequest",
                    "Signature Version 2 presigned URLs are not supported: use Signature Version 4.",
                ));
            }
            return Ok(None);
        };
        let scheme = Scheme::from_algorithm(alg).ok_or_else(|| {
            query_error(format!(
                "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\", not \"{alg}\"."
            ))
        })?;
        let p = match scheme {
            Scheme::Aws4 => "X-Amz-",
            Scheme::Goog4 => "X-Goog-",
        };
        let need = |k: &str| {
            find(&format!("{p}{k}")).ok_or_else(|| {
                query_error(format!(
                    "Query-string authentication requires the {p}Algorithm, {p}Credential, {p}Signature, {p}Date, {p}SignedHeaders and {p}Expires parameters; {p}{k} is missing."
                ))
            })
        };
        let (access_id, [date, region, service]) = parse_credential(scheme, need("Credential")?, query_error)?;
        let timestamp = need("Date")?.to_owned();
        let time = parse_time(&timestamp).ok_or_else(|| query_error(format!("Invalid {p}Date \"{timestamp}\".")))?;
        let expires: i64 = need("Expires")?
            .parse()
            .map_err(|_| query_error(format!("{p}Expires must be a number of seconds.")))?;
        if !(1..=MAX_EXPIRES).contains(&expires) {
            return Err(query_error(format!(
                "{p}Expires must be between 1 and {MAX_EXPIRES} seconds (7 days)."
            )));
        }
        let signature = unhex(need("Signature")?).ok_or_else(|| query_error(format!("{p}Signature must be hex.")))?;
        let signed_headers: Vec<String> = need("SignedHeaders")?.split(';').map(str::to_owned).collect();
        let payload_hash = find(&format!("{p}Content-Sha256"))
            .unwrap_or(UNSIGNED_PAYLOAD)
            .to_owned();
        let payload = payload_of(&payload_hash)?;
        Ok(Some(Signed {
            scheme,
            access_id,
            scope: format!("{date}/{region}/{service}/{}", scheme.terminator()),
            date,
            region,
            service,
            timestamp,
            time,
            signed_headers,
            signature,
            expires: Some(expires),
            payload_hash,
            payload,
        }))
    }

    fn from_header(scheme: Scheme, rest: &str, headers: &HeaderMap) -> Result<Signed, S3Error> {
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once('=') {
                Some(("Credential", v)) => credential = Some(v.trim()),
                Some(("SignedHeaders", v)) => signed = Some(v.trim()),
                Some(("Signature", v)) => signature = Some(v.trim()),
                _ => {
                    return Err(malformed(format!(
                        "Unexpected component in the Authorization header: \"{item}\"."
                    )));
                }
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
            return Err(malformed(
                "The Authorization header needs Credential, SignedHeaders and Signature.",
            ));
        };
        let (access_id, [date, region, service]) = parse_credential(scheme, credential, malformed)?;
        let prefix = scheme.header_prefix();
        let timestamp = header_value(headers, &format!("{prefix}-date"))
            .or_else(|| {
                header_value(headers, "date").and_then(|d| {
                    DateTime::parse_from_rfc2822(&d)
                        .ok()
                        .map(|t| t.with_timezone(&Utc).format("%Y%m%dT%H%M%SZ").to_string())
                })
            })
            .ok_or_else(|| {
                S3Error::new(
                    403,
                    "AccessDenied",
                    format!("AWS authentication requires a valid Date or {prefix}-date header."),
                )
            })?;
        let time = parse_time(&timestamp)
            .ok_or_else(|| S3Error::new(403, "AccessDenied", format!("Invalid {prefix}-date \"{timestamp}\".")))?;
        let signature = unhex(signature).ok_or_else(|| malformed("The Signature must be hex."))?;
        let payload_hash = match header_value(headers, &format!("{prefix}-content-sha256")) {
            Some(v) => v,
            // GCS XML requests signed with GOOG4 may leave the payload out.
            None if scheme == Scheme::Goog4 => UNSIGNED_PAYLOAD.to_owned(),
            None => {
                return Err(S3Error::new(
                    400,
                    "InvalidRequest",
                    "Missing required header for this request: x-amz-content-sha256",
                ));
            }
        };
        let payload = payload_of(&payload_hash)?;
        Ok(Signed {
            scheme,
            access_id,
            scope: format!("{date}/{region}/{service}/{}", scheme.terminator()),
            date,
            region,
            service,
            timestamp,
            time,
            signed_headers: signed.split(';').map(str::to_owned).collect(),
            signature,
            expires: None,
            payload_hash,
            payload,
        })
    }

    /// Checks the request's time against `now`: skew for header signatures, validity
    /// window for presigned URLs.
    pub fn check_time(&self, now: DateTime<Utc>) -> Result<(), S3Error> {
        if !self.timestamp.starts_with(&self.date) {
            return Err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                "The credential date does not match the request date.",
            ));
        }
        match self.expires {
            None => {
                if (now - self.time).abs() > MAX_SKEW {
                    return Err(S3Error::new(
                        403,
                        "RequestTimeTooSkewed",
                        "The difference between the request time and the server's time is too large.",
                    ));
                }
            }
            Some(expires) => {
                if self.time - now > MAX_SKEW {
                    return Err(S3Error::new(403, "AccessDenied", "Request is not valid yet"));
                }
                if now > self.time + TimeDelta::seconds(expires) {
                    return Err(S3Error::new(403, "AccessDenied", "Request has expired"));
                }
            }
        }
        Ok(())
    }

    /// The key that signs for `secret` on this request's date and scope.
    pub fn signing_key(&self, secret: &str) -> hmac::Key {
        let mut k = format!("{}{secret}", self.scheme.key_prefix()).into_bytes();
        for part in [
            self.date.as_str(),
            self.region.as_str(),
            self.service.as_str(),
            self.scheme.terminator(),
        ] {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k), part.as_bytes());
            k = tag.as_ref().to_vec();
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
        zeroize::Zeroize::zeroize(&mut k);
        key
    }

    fn canonical_request(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        raw_query: Option<&str>,
    ) -> Result<String, S3Error> {
        let sig_param = format!("{}-signature", self.scheme.header_prefix());
        let mut q: Vec<(String, String)> = query_pairs(raw_query)?
            .into_iter()
            .filter(|(k, _)| self.expires.is_none() || !k.eq_ignore_ascii_case(&sig_param))
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
        q.sort();
        let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut canonical_headers = String::new();
        for name in &self.signed_headers {
            let value = header_value(headers, name).unwrap_or_default();
            canonical_headers.push_str(&format!("{name}:{value}\n"));
        }
        Ok(format!(
            "{method}\n{path}\n{}\n{canonical_headers}\n{}\n{}",
            query.join("&"),
            self.signed_headers.join(";"),
            self.payload_hash
        ))
    }

    fn string_to_sign(&self, canonical_request: &str) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.scheme.algorithm(),
            self.timestamp,
            self.scope,
            sha256_hex(canonical_request.as_bytes())
        )
    }

    /// Verifies the signature with `key` (from `signing_key`). The canonical URI is the
    /// path as the client sent it; a client that signed the path encoded S3's way but
    /// sent it otherwise is accepted too.
    pub fn verify(
        &self,
        key: &hmac::Key,
        method: &Method,
        raw_path: &str,
        headers: &HeaderMap,
        raw_query: Option<&str>,
    ) -> Result<(), S3Error> {
        let mut sorted = self.signed_headers.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != self.signed_headers || !self.signed_headers.iter().any(|h| h == "host") {
            return Err(malformed(
                "SignedHeaders must be lower-case, sorted, without duplicates, and include host.",
            ));
        }
        let mut candidates = vec![raw_path.to_owned()];
        if let Some(decoded) = crate::query::percent_decode(raw_path, false) {
            let reencoded = uri_encode(&decoded, true);
            if reencoded != raw_path {
                candidates.push(reencoded);
            }
        }
        for path in candidates {
            let canonical = self.canonical_request(method, &path, headers, raw_query)?;
            let tag = hmac::sign(key, self.string_to_sign(&canonical).as_bytes());
            if aws_lc_rs::constant_time::verify_slices_are_equal(tag.as_ref(), &self.signature).is_ok() {
                return Ok(());
            }
        }
        Err(S3Error::new(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
        ))
    }

    /// The seed signature that the first chunk of a signed streaming body chains from.
    pub fn seed_signature(&self) -> String {
        hex(&self.signature)
    }
}

/// Verifies the chained signatures of `STREAMING-AWS4-HMAC-SHA256-PAYLOAD` chunks.
pub struct ChunkSigner {
    key: hmac::Key,
    algorithm: &'static str,
    timestamp: String,
    scope: String,
    previous: String,
}

impl ChunkSigner {
    pub fn new(signed: &Signed, key: hmac::Key) -> Self {
        Self {
            key,
            algorithm: match signed.scheme {
                Scheme::Aws4 => "AWS4-HMAC-SHA256",
                Scheme::Goog4 => "GOOG4-HMAC-SHA256",
            },
            timestamp: signed.timestamp.clone(),
            scope: signed.scope.clone(),
            previous: signed.seed_signature(),
        }
    }

    /// Checks one chunk's signature (hex) over its data, and chains it.
    pub fn verify_chunk(&mut self, data: &[u8], signature: &str) -> bool {
        self.verify_chunk_hash(digest::digest(&digest::SHA256, data).as_ref(), signature)
    }

    /// As `verify_chunk`, given the SHA-256 of the chunk's data.
    pub fn verify_chunk_hash(&mut self, data_sha256: &[u8], signature: &str) -> bool {
        let sts = format!(
            "{}-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256}\n{}",
            self.algorithm,
            self.timestamp,
            self.scope,
            self.previous,
            hex(data_sha256)
        );
        self.check(&sts, signature)
    }

    /// Checks the trailer signature over the trailing header lines (`name:value\n`).
    pub fn verify_trailer(&mut self, canonical_trailers: &str, signature: &str) -> bool {
        let sts = format!(
            "{}-TRAILER\n{}\n{}\n{}\n{}",
            self.algorithm,
            self.timestamp,
            self.scope,
            self.previous,
            sha256_hex(canonical_trailers.as_bytes())
        );
        self.check(&sts, signature)
    }

    fn check(&mut self, string_to_sign: &str, signature: &str) -> bool {
        let tag = hmac::sign(&self.key, string_to_sign.as_bytes());
        let ok = unhex(signature)
            .is_some_and(|sig| aws_lc_rs::constant_time::verify_slices_are_equal(tag.as_ref(), &sig).is_ok());
        if ok {
            self.previous = hex(tag.as_ref());
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The GET Object example of the S3 SigV4 documentation ("Examples: Signature
    /// Calculations in AWS Signature Version 4").
    #[test]
    fn aws_documented_get_object() {
        let h = headers(&[
            ("host", "examplebucket.s3.amazonaws.com"),
            ("range", "bytes=0-9"),
            ("x-amz-content-sha256", EMPTY_SHA256),
            ("x-amz-date", "20130524T000000Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
            ),
        ]);
        let s = Signed::parse(&h, None).unwrap().unwrap();
        assert_eq!(s.access_id, "AKIAIOSFODNN7EXAMPLE");
        let key = s.signing_key(SECRET);
        s.verify(&key, &Method::GET, "/test.txt", &h, None).unwrap();
        let err = s
            .verify(&s.signing_key("wrong"), &Method::GET, "/test.txt", &h, None)
            .unwrap_err();
        assert_eq!(err.code, "SignatureDoesNotMatch");
        // Time: the request is 2013; the server is not.
        assert_eq!(s.check_time(Utc::now()).unwrap_err().code, "RequestTimeTooSkewed");
        assert!(s.check_time(s.time + TimeDelta::minutes(14)).is_ok());
    }

    /// The presigned URL example of the same documentation.
    #[test]
    fn aws_documented_presigned_url() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404";
        let h = headers(&[("host", "examplebucket.s3.amazonaws.com")]);
        let s = Signed::parse(&h, Some(q)).unwrap().unwrap();
        assert_eq!(s.payload, Payload::Unsigned);
        s.verify(&s.signing_key(SECRET), &Method::GET, "/test.txt", &h, Some(q))
            .unwrap();
        assert!(s.check_time(s.time + TimeDelta::seconds(86_399)).is_ok());
        assert_eq!(
            s.check_time(s.time + TimeDelta::seconds(86_401)).unwrap_err().message,
            "Request has expired"
        );
    }

    /// The streaming example ("Signature Calculations for the Authorization Header:
    /// Transferring Payload in Multiple Chunks"): seed and first chunk signatures.
    #[test]
    fn aws_documented_chunk_signature() {
        let h = headers(&[
            ("host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"),
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("content-length", "66824"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
            ),
        ]);
        let s = Signed::parse(&h, None).unwrap().unwrap();
        let key = s.signing_key(SECRET);
        s.verify(&key, &Method::PUT, "/examplebucket/chunkObject.txt", &h, None)
            .unwrap();
        let mut chunks = ChunkSigner::new(&s, key);
        assert!(chunks.verify_chunk(
            &[b'a'; 65536],
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"
        ));
        assert!(chunks.verify_chunk(
            &[b'a'; 1024],
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"
        ));
        assert!(!chunks.verify_chunk(b"", "0000"));
    }

    #[test]
    fn malformed_signatures_are_refused() {
        for auth in [
            "AWS4-HMAC-SHA256 Credential=A/2013/us/s3/aws4_request,SignedHeaders=host,Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us/s3/goog4_request,SignedHeaders=host,Signature=00",
            "AWS4-HMAC-SHA256 SignedHeaders=host,Signature=00",
            "AWS4-HMAC-SHA256 Credential=A/20130524/us/s3/aws4_request,SignedHeaders=host,Signature=zz",
        ] {
            let h = headers(&[
                ("authorization", auth),
                ("x-amz-date", "20130524T000000Z"),
                ("x-amz-content-sha256", UNSIGNED_PAYLOAD),
            ]);
            assert_eq!(Signed::parse(&h, None).unwrap_err().status, 400, "{auth}");
        }
        assert!(
            Signed::parse(&headers(&[("authorization", "Bearer x")]), None)
                .unwrap()
                .is_none()
        );
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=A%2F20130524%2Fus%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=604801&X-Amz-SignedHeaders=host&X-Amz-Signature=00";
        assert_eq!(
            Signed::parse(&HeaderMap::new(), Some(q)).unwrap_err().code,
            "AuthorizationQueryParametersError"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use axum::http::HeaderValue;

    proptest::proptest! {
        /// Fuzz: any Authorization header or presigned query parses or is refused with
        /// a 4xx, and a parsed one verifies or is refused, never a panic.
        #[test]
        fn signature_parsing_never_panics(
            auth in proptest::prop_oneof![
                proptest::string::string_regex("(AWS4|GOOG4)-HMAC-SHA256 Credential=[A-Z0-9]{0,8}/[0-9]{0,9}/[a-z0-9-]{0,9}/[a-z0-9]{0,4}/(aws4|goog4)_request, ?SignedHeaders=[a-z;-]{0,30}, ?Signature=[0-9a-f]{0,66}").unwrap(),
                proptest::string::string_regex("[ -~]{0,120}").unwrap(),
            ],
            query in proptest::prop_oneof![
                proptest::string::string_regex("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=[A-Z0-9%/]{0,40}&X-Amz-Date=[0-9TZ]{0,16}&X-Amz-Expires=-?[0-9]{0,8}&X-Amz-SignedHeaders=[a-z;]{0,10}&X-Amz-Signature=[0-9a-f]{0,64}").unwrap(),
                proptest::string::string_regex("[ -~]{0,80}").unwrap(),
            ],
            date in proptest::string::string_regex("[0-9]{8}T[0-9]{6}Z|[ -~]{0,20}").unwrap(),
            sha in proptest::string::string_regex("UNSIGNED-PAYLOAD|STREAMING-[A-Z0-9-]{0,40}|[0-9a-f]{0,64}").unwrap(),
        ) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&auth) {
                h.insert("authorization", v);
            }
            for (k, v) in [("x-amz-date", &date), ("x-amz-content-sha256", &sha)] {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(k, v);
                }
            }
            h.insert("host", HeaderValue::from_static("h"));
            for q in [None, Some(query.as_str())] {
                let hh = if q.is_some() { HeaderMap::new() } else { h.clone() };
                match Signed::parse(&hh, q) {
                    Err(e) => proptest::prop_assert!((400..500).contains(&e.status), "{e:?}"),
                    Ok(None) => {}
                    Ok(Some(s)) => {
                        let _ = s.check_time(Utc::now());
                        let key = s.signing_key("secret");
                        proptest::prop_assert!(s.verify(&key, &Method::GET, "/b/k", &hh, q).is_err());
                    }
                }
            }
        }
    }
}
