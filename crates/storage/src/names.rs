//! GCS naming rules for buckets and objects.

use super::error::{StorageError, StorageResult};

/// Names the gateway's other APIs use as their first path segment: a bucket of that
/// name could not be addressed path-style by the XML API on the same port.
pub const RESERVED_BUCKET_NAMES: &[&str] = &[
    "storage",
    "upload",
    "download",
    "resumable",
    "batch",
    "v1",
    "sealstore",
    "healthz",
    "readyz",
    "metrics",
    "oauth2",
];

/// Bucket names: 3–63 characters (up to 222 with dots, each dot-separated part ≤ 63),
/// lower-case letters, digits, `-`, `_` and `.`, starting and ending with a letter or
/// digit; not an IP address; not starting with `goog`; not containing `google`.
pub fn check_bucket_name(name: &str) -> StorageResult<()> {
    let bad = |why: &str| StorageError::invalid(format!("Invalid bucket name: '{name}': {why}."));
    if RESERVED_BUCKET_NAMES.contains(&name) {
        return Err(bad(
            "the name is reserved: it is a path the JSON, upload, KMS or ops API uses on the same port",
        ));
    }
    let max = if name.contains('.') { 222 } else { 63 };
    if name.len() < 3 || name.len() > max {
        return Err(bad(&format!("must be 3 to {max} characters long")));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "only lower-case letters, digits, dashes, underscores and dots are allowed",
        ));
    }
    let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !edge_ok(name.as_bytes()[0]) || !edge_ok(name.as_bytes()[name.len() - 1]) {
        return Err(bad("must start and end with a letter or digit"));
    }
    if name.split('.').any(|p| p.is_empty() || p.len() > 63) {
        return Err(bad("each dot-separated component must be 1 to 63 characters"));
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(bad("cannot be an IP address"));
    }
    if name.starts_with("goog") || name.contains("google") || name.contains("g00gle") {
        return Err(bad("cannot begin with \"goog\" or contain \"google\""));
    }
    Ok(())
}

/// Object names: 1–1024 bytes of UTF-8, no CR/LF, not `.` or `..`, not starting with
/// `.well-known/acme-challenge/`. No NUL either: PostgreSQL text cannot hold one, and a name
/// one backend stores and another refuses would make data dirs unportable (reads of a
/// name are not checked, so an older SQLite row holding a NUL stays readable).
pub fn check_object_name(name: &str) -> StorageResult<()> {
    let bad = |why: &str| StorageError::invalid(format!("Invalid object name: {why}."));
    if name.is_empty() || name.len() > 1024 {
        return Err(bad("object names must be 1 to 1024 bytes of UTF-8"));
    }
    if name.contains(['\r', '\n']) {
        return Err(bad("object names cannot contain carriage returns or line feeds"));
    }
    if name.contains('\0') {
        return Err(bad("object names cannot contain NUL characters"));
    }
    if name == "." || name == ".." || name.starts_with(".well-known/acme-challenge/") {
        return Err(bad("this object name is reserved"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_rules() {
        for ok in ["abc", "my-bucket_1", "a.b.c", &"a".repeat(63)] {
            assert!(check_bucket_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Abc",
            "-abc",
            "abc-",
            "a b",
            "goog-x",
            "my-google",
            "192.168.1.1",
            &"a".repeat(64),
            "a..b",
        ] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_rules() {
        assert!(check_object_name("dir/a b/ü.txt").is_ok());
        assert!(check_object_name(&"x".repeat(1024)).is_ok());
        for bad in ["", ".", "..", "a\nb", "a\0b", &"x".repeat(1025)] {
            assert!(check_object_name(bad).is_err());
        }
    }
}
