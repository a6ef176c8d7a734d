//! The import wire format (Cloud KMS `ImportCryptoKeyVersionRequest.wrapped_key`):
//! RSA-AES methods are RSA-OAEP(ephemeral AES-256 key) ‖ AES-KWP(target), as PKCS#11
//! `CKM_RSA_AES_KEY_WRAP`; direct methods are RSA-OAEP-SHA256(target) alone. OAEP's
//! MGF1 hash always equals its hash, and the label is empty.

use super::types::{Hash, ImportMethod};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrapPadded};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm, OaepPrivateDecryptingKey,
    OaepPublicEncryptingKey, PrivateDecryptingKey, PublicEncryptingKey,
};
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use zeroize::Zeroizing;

/// Gcloud's client-side limit, and the API's.
pub const MAX_WRAPPED_KEY: usize = 65_536;

/// Why a wrapped key could not be unwrapped. The texts are Cloud KMS's
/// `importFailureReason` strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnwrapError {
    #[error("Wrapped key is too short")]
    TooShort,
    #[error("Wrapped key does not consist of 64-bit blocks")]
    NotBlocks,
    #[error("Wrapped key has invalid length")]
    InvalidLength,
    #[error("The key material in the import request couldn't be unwrapped or wasn't formatted correctly")]
    Unwrap,
}

fn oaep(hash: Hash) -> &'static OaepAlgorithm {
    if hash == Hash::Sha1 {
        &OAEP_SHA1_MGF1SHA1
    } else {
        &OAEP_SHA256_MGF1SHA256
    }
}

/// An import job's RSA wrapping key. Never printed.
pub struct WrappingKey {
    bits: usize,
    pkcs8: Zeroizing<Vec<u8>>,
    public_der: Vec<u8>,
    key: OaepPrivateDecryptingKey,
}

impl std::fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappingKey")
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid wrapping key")]
pub struct BadWrappingKey;

impl WrappingKey {
    /// Slow (0.1 s to several seconds): never call on a request path.
    pub fn generate(bits: usize) -> Result<Self, BadWrappingKey> {
        let size = if bits == 4096 {
            KeySize::Rsa4096
        } else {
            KeySize::Rsa3072
        };
        let k = PrivateDecryptingKey::generate(size).map_err(|_| BadWrappingKey)?;
        let der: Pkcs8V1Der = k.as_der().map_err(|_| BadWrappingKey)?;
        Self::from_pkcs8(der.as_ref())
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, BadWrappingKey> {
        let k = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| BadWrappingKey)?;
        let bits = k.key_size_bits();
        let spki: PublicKeyX509Der = k.public_key().as_der().map_err(|_| BadWrappingKey)?;
        Ok(Self {
            bits,
            pkcs8: Zeroizing::new(der.to_vec()),
            public_der: spki.as_ref().to_vec(),
            key: OaepPrivateDecryptingKey::new(k).map_err(|_| BadWrappingKey)?,
        })
    }

    pub fn bits(&self) -> usize {
        self.bits
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key_der(&self) -> &[u8] {
        &self.public_der
    }

    /// Unwraps `wrapped` per `method`, returning the formatted target key.
    pub fn unwrap(&self, method: ImportMethod, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
        let k = self.key.key_size_bytes();
        let alg = oaep(method.oaep_hash());
        let rsa_open = |ct: &[u8]| -> Result<Zeroizing<Vec<u8>>, UnwrapError> {
            let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
            let n = self
                .key
                .decrypt(alg, ct, &mut out, None)
                .map_err(|_| UnwrapError::Unwrap)?
                .len();
            out.truncate(n);
            Ok(out)
        };
        if !method.uses_aes_kwp() {
            if wrapped.len() != k {
                return Err(if wrapped.len() < k {
                    UnwrapError::TooShort
                } else {
                    UnwrapError::InvalidLength
                });
            }
            return rsa_open(wrapped);
        }
        if wrapped.len() < k + 16 {
            return Err(UnwrapError::TooShort);
        }
        let kwp = &wrapped[k..];
        if !kwp.len().is_multiple_of(8) {
            return Err(UnwrapError::NotBlocks);
        }
        let ephemeral = rsa_open(&wrapped[..k])?;
        if ephemeral.len() != 32 {
            return Err(UnwrapError::Unwrap);
        }
        let kek = AesKek::new(&AES_256, &ephemeral).map_err(|_| UnwrapError::Unwrap)?;
        let mut out = Zeroizing::new(vec![0u8; kwp.len()]);
        let n = kek
            .unwrap_with_padding(kwp, &mut out)
            .map_err(|_| UnwrapError::Unwrap)?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WrapError {
    #[error("the import job's public key is not an RSA SubjectPublicKeyInfo")]
    BadPublicKey,
    #[error("the target key is {0} bytes, more than this method can wrap ({1} bytes at most)")]
    TooLong(usize, usize),
    #[error("wrapping failed")]
    Failed,
}

/// The client side of import: wraps `target` for an import job's public key, as
/// gcloud's automatic wrapping does.
pub fn wrap(method: ImportMethod, public_key_der: &[u8], target: &[u8]) -> Result<Vec<u8>, WrapError> {
    let public = PublicEncryptingKey::from_der(public_key_der).map_err(|_| WrapError::BadPublicKey)?;
    let public = OaepPublicEncryptingKey::new(public).map_err(|_| WrapError::BadPublicKey)?;
    let alg = oaep(method.oaep_hash());
    let mut rsa_out = vec![0u8; public.ciphertext_size()];
    if !method.uses_aes_kwp() {
        let max = public.max_plaintext_size(alg);
        if target.len() > max {
            return Err(WrapError::TooLong(target.len(), max));
        }
        let n = public
            .encrypt(alg, target, &mut rsa_out, None)
            .map_err(|_| WrapError::Failed)?
            .len();
        rsa_out.truncate(n);
        return Ok(rsa_out);
    }
    let mut ephemeral = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(&mut ephemeral[..])
        .map_err(|_| WrapError::Failed)?;
    let n = public
        .encrypt(alg, &ephemeral[..], &mut rsa_out, None)
        .map_err(|_| WrapError::Failed)?
        .len();
    rsa_out.truncate(n);
    let kek = AesKek::new(&AES_256, &ephemeral[..]).map_err(|_| WrapError::Failed)?;
    let mut kwp = vec![0u8; target.len() + 16];
    let m = kek
        .wrap_with_padding(target, &mut kwp)
        .map_err(|_| WrapError::Failed)?
        .len();
    kwp.truncate(m);
    rsa_out.extend_from_slice(&kwp);
    Ok(rsa_out)
}

/// How many spare wrapping keys to keep per size.
const POOL_TARGET: [(usize, usize); 2] = [(3072, 2), (4096, 1)];

/// Pre-generated wrapping keys, refilled by one background thread.
pub struct WrappingKeyPool {
    keys: Mutex<Vec<(usize, VecDeque<WrappingKey>)>>,
    wake: Condvar,
}

impl WrappingKeyPool {
    pub(super) fn new() -> Self {
        Self {
            keys: Mutex::new(POOL_TARGET.iter().map(|(bits, _)| (*bits, VecDeque::new())).collect()),
            wake: Condvar::new(),
        }
    }

    pub(super) fn take(&self, bits: usize) -> Option<WrappingKey> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let k = keys
            .iter_mut()
            .find(|(b, _)| *b == bits)
            .and_then(|(_, q)| q.pop_front());
        self.wake.notify_all();
        k
    }

    /// Keeps a spare key, up to the target size for its length.
    pub(super) fn put(&self, key: WrappingKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let target = POOL_TARGET
            .iter()
            .find(|(b, _)| *b == key.bits())
            .map_or(0, |(_, t)| *t);
        if let Some((_, q)) = keys.iter_mut().find(|(b, _)| *b == key.bits())
            && q.len() < target
        {
            q.push_back(key);
        }
    }

    /// The size most in need of a key, if any is below target.
    pub(super) fn wanted(&self) -> Option<usize> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        POOL_TARGET
            .iter()
            .find(|(bits, target)| keys.iter().any(|(b, q)| b == bits && q.len() < *target))
            .map(|(b, _)| *b)
    }

    pub(super) fn wait(&self, timeout: Duration) {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.wake.wait_timeout(keys, timeout);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    /// RSA keygen is slow: one key per test binary.
    fn key3072() -> &'static WrappingKey {
        static K: OnceLock<WrappingKey> = OnceLock::new();
        K.get_or_init(|| WrappingKey::generate(3072).unwrap())
    }

    #[test]
    fn rsa_aes_and_direct_round_trips() {
        let k = key3072();
        for m in [
            ImportMethod::RSA_OAEP_3072_SHA1_AES_256,
            ImportMethod::RSA_OAEP_3072_SHA256_AES_256,
        ] {
            for len in [1usize, 8, 32, 138, 1217] {
                let target: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let w = wrap(m, k.public_key_der(), &target).unwrap();
                assert_eq!(w.len(), 384 + 8 + 8 * len.div_ceil(8).max(1));
                assert_eq!(&k.unwrap(m, &w).unwrap()[..], &target[..]);
            }
        }
        let w = wrap(ImportMethod::RSA_OAEP_3072_SHA256, k.public_key_der(), &[5; 32]).unwrap();
        assert_eq!(w.len(), 384);
        assert_eq!(&k.unwrap(ImportMethod::RSA_OAEP_3072_SHA256, &w).unwrap()[..], &[5; 32]);
        assert!(matches!(
            wrap(ImportMethod::RSA_OAEP_3072_SHA256, k.public_key_der(), &[0; 319]),
            Err(WrapError::TooLong(319, 318))
        ));
    }

    #[test]
    fn malformed_blobs_give_the_cloud_kms_reasons() {
        let k = key3072();
        let m = ImportMethod::RSA_OAEP_3072_SHA1_AES_256;
        assert_eq!(k.unwrap(m, &[0; 10]).unwrap_err(), UnwrapError::TooShort);
        assert_eq!(k.unwrap(m, &[0; 384 + 20]).unwrap_err(), UnwrapError::NotBlocks);
        assert_eq!(k.unwrap(m, &[0; 384 + 24]).unwrap_err(), UnwrapError::Unwrap);
        let good = wrap(m, k.public_key_der(), &[1; 32]).unwrap();
        // The right RSA part with the wrong hash fails to decrypt.
        assert_eq!(
            k.unwrap(ImportMethod::RSA_OAEP_3072_SHA256_AES_256, &good).unwrap_err(),
            UnwrapError::Unwrap
        );
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(k.unwrap(m, &tampered).unwrap_err(), UnwrapError::Unwrap);
        assert_eq!(
            k.unwrap(ImportMethod::RSA_OAEP_3072_SHA256, &[0; 385]).unwrap_err(),
            UnwrapError::InvalidLength
        );
        assert_eq!(format!("{k:?}"), "WrappingKey { bits: 3072, .. }");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn unwrap_never_panics(blob in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200), m in 0usize..6) {
            let _ = key3072().unwrap(ImportMethod::ALL[m], &blob);
        }
    }
}
