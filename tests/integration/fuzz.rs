//! Property-based fuzzing of the parsers of untrusted input that the crate exposes:
//! each gets arbitrary text or bytes and must answer `Ok` or `Err`, never panic, and
//! keep its invariants. `PROPTEST_CASES` raises the case count for longer runs (the
//! README gives the command); the test command runs proptest's default of 256 per
//! property. HTTP-level fuzzing of JSON bodies, KMS ciphertexts and import blobs is in
//! `tests/clients/test_fuzz.py`.

use proptest::prelude::*;
use sealstore::api::gcs::content_range;
use sealstore::storage::ChunkRange;
use sealstore::storage::csek::CustomerKey;
use sealstore::storage::glob::Glob;

/// Text that looks like the grammar under test often enough to reach deep branches.
fn near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet.chars().collect::<Vec<_>>()), 0..max)
        .prop_map(|v| v.into_iter().collect())
}

proptest! {
    #[test]
    fn content_range_parses_or_refuses(h in prop_oneof![
        near("bytes 0123456789-*/", 40),
        Just("bytes 0-18446744073709551615/*".to_owned()),
        any::<String>(),
    ], len in prop::option::of(any::<u64>())) {
        if let Ok(r) = content_range::parse(Some(&h), len) {
            match r {
                ChunkRange::Data { start, end, total } => {
                    prop_assert!(start <= end);
                    if let Some(t) = total { prop_assert!(end < t); }
                }
                ChunkRange::Rest { start, total } => {
                    if let Some(t) = total { prop_assert!(start <= t); }
                }
                ChunkRange::Query { .. } => {}
            }
        }
    }

    #[test]
    fn match_glob_parses_or_refuses(p in prop_oneof![near("ab*?[]{},\\/!-", 60), any::<String>()], name in near("ab/c", 20)) {
        if let Ok(g) = Glob::parse(&p) {
            let _ = g.matches(&name);
        }
    }

    #[test]
    fn csek_headers_parse_or_refuse(
        alg in prop::option::of(prop_oneof![Just("AES256".to_owned()), any::<String>()]),
        key in prop::option::of(prop_oneof![near("ABCabc0123+/=", 60), any::<String>()]),
        sha in prop::option::of(near("ABCabc0123+/=", 60)),
    ) {
        if let Ok(Some(k)) = CustomerKey::from_parts(alg.as_deref(), key.as_deref(), sha.as_deref()) {
            // A key that parsed is one whose hash the client proved it knows.
            prop_assert!(k.matches(&k.sha256_b64()));
        }
    }

    #[test]
    fn rewrite_tokens_never_open_unless_sealed(t in prop_oneof![near("abcXYZ019-_.", 120), any::<String>()]) {
        let tokens = sealstore::api::gcs::rewrite_token::RewriteTokens::new(&sealstore::rootkey::RootKey::generate());
        prop_assert!(tokens.open::<serde_json::Value>(&t).is_none());
    }

    #[test]
    fn sealed_rewrite_tokens_do_not_open_when_altered(v in any::<u64>(), flip in 0usize..64) {
        let tokens = sealstore::api::gcs::rewrite_token::RewriteTokens::new(&sealstore::rootkey::RootKey::generate());
        let t = tokens.seal(&v).unwrap();
        prop_assert_eq!(tokens.open::<u64>(&t), Some(v));
        let mut b = t.into_bytes();
        let i = flip % b.len();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(b).unwrap();
        prop_assert!(tokens.open::<u64>(&altered).is_none() || tokens.open::<u64>(&altered) == Some(v));
    }

    #[test]
    fn kms_list_filters_and_page_tokens_parse_or_refuse(
        filter in prop_oneof![near("name state=!:<>\"ENABLED AND OR NOT()", 60), any::<String>()],
        token in prop::option::of(any::<String>()),
        size in prop::option::of(any::<i64>()),
    ) {
        let _ = sealstore::kms::listing::Filter::parse(&filter, &["name", "state"]);
        let opts = sealstore::kms::listing::ListOptions { page_size: size, page_token: token, filter: None, order_by: None };
        let items: Vec<(String, u32)> = (0..5).map(|i| (format!("k{i}"), i)).collect();
        if let Ok(page) = sealstore::kms::listing::paginate(items, &opts) {
            prop_assert!(page.items.len() <= 5);
        }
    }

    #[test]
    fn kms_durations_parse_or_refuse(s in prop_oneof![near("0123456789.s-", 30), any::<String>()]) {
        if let Some(d) = sealstore::api::kms::json::parse_duration(&s) {
            prop_assert_eq!(sealstore::api::kms::json::parse_duration(&sealstore::api::kms::json::format_duration(d)), Some(d));
        }
    }
}
