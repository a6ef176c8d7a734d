//! Sealing of key material under the root key, and keyed fingerprints of imported
//! material. Both keys are derived from the root key with HKDF, one per purpose.

use crate::rootkey::RootKey;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const SEAL_FORMAT: u8 = 1;
const SALT: &[u8] = b"sealstore root key derivation v1";

pub struct Sealer {
    seal_key: LessSafeKey,
    fingerprint_key: hmac::Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn derive(root: &RootKey, info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = Salt::new(HKDF_SHA256, SALT).extract(root.bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(&[info], Len(32))
        .and_then(|okm| okm.fill(&mut out[..]))
        .expect("HKDF expand of 32 bytes");
    out
}

#[derive(Debug, thiserror::Error)]
#[error("sealed material could not be opened: wrong root key or corrupted data")]
pub struct UnsealError;

impl Sealer {
    pub fn new(root: &RootKey) -> Self {
        let seal = derive(root, b"sealstore material seal v1");
        let fp = derive(root, b"sealstore import fingerprint v1");
        Self {
            seal_key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &seal[..]).expect("32-byte AES key")),
            fingerprint_key: hmac::Key::new(hmac::HMAC_SHA256, &fp[..]),
            rng: SystemRandom::new(),
        }
    }

    /// Seals `plaintext`, bound to `context` (the owning resource's name), so a sealed
    /// blob cannot be moved to another resource.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system RNG");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plaintext.len() + 16);
        out.push(SEAL_FORMAT);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(1 + NONCE_LEN);
        self.seal_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut body,
            )
            .expect("AES-GCM seal");
        out.extend_from_slice(&body);
        out
    }

    pub fn unseal(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, UnsealError> {
        if sealed.len() < 1 + NONCE_LEN + 16 || sealed[0] != SEAL_FORMAT {
            return Err(UnsealError);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| UnsealError)?;
        let mut buf = Zeroizing::new(sealed[1 + NONCE_LEN..].to_vec());
        let len = self
            .seal_key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| UnsealError)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// HMAC-SHA256 of `algorithm ‖ material` under a root-derived key: lets re-import
    /// check "same material" after the material itself is erased, without a bare hash
    /// that could be brute-forced for low-entropy keys.
    pub fn fingerprint(&self, algorithm: &str, material: &[u8]) -> Vec<u8> {
        let mut ctx = hmac::Context::with_key(&self.fingerprint_key);
        ctx.update(algorithm.as_bytes());
        ctx.update(&[0]);
        ctx.update(material);
        ctx.sign().as_ref().to_vec()
    }

    /// Constant-time comparison of a fingerprint with fresh material.
    pub fn fingerprint_matches(&self, expected: &[u8], algorithm: &str, material: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(algorithm.len() + 1 + material.len());
        msg.extend_from_slice(algorithm.as_bytes());
        msg.push(0);
        msg.extend_from_slice(material);
        let ok = hmac::verify(&self.fingerprint_key, &msg, expected).is_ok();
        zeroize::Zeroize::zeroize(&mut msg);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_is_bound_to_context_and_key() {
        let root = RootKey::generate();
        let s = Sealer::new(&root);
        let sealed = s.seal("a", b"secret material");
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(&s.unseal("a", &sealed).unwrap()[..], b"secret material");
        assert!(s.unseal("b", &sealed).is_err());
        assert!(Sealer::new(&RootKey::generate()).unseal("a", &sealed).is_err());
        assert!(s.unseal("a", &sealed[..10]).is_err());
    }

    #[test]
    fn fingerprints_match_only_the_same_material_and_algorithm() {
        let s = Sealer::new(&RootKey::generate());
        let fp = s.fingerprint("GOOGLE_SYMMETRIC_ENCRYPTION", &[1; 32]);
        assert!(s.fingerprint_matches(&fp, "GOOGLE_SYMMETRIC_ENCRYPTION", &[1; 32]));
        assert!(!s.fingerprint_matches(&fp, "GOOGLE_SYMMETRIC_ENCRYPTION", &[2; 32]));
        assert!(!s.fingerprint_matches(&fp, "HMAC_SHA256", &[1; 32]));
    }
}
