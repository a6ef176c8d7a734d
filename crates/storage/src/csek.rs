//! Customer-supplied encryption keys. The key wraps the object's DEK; only its SHA-256
//! is stored. It is never printed, logged or persisted, and compared in constant time.

use super::error::{StorageError, StorageResult};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

pub struct CustomerKey {
    key: Zeroizing<[u8; 32]>,
    sha256: [u8; 32],
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerKey")
            .field("sha256", &self.sha256_b64())
            .finish_non_exhaustive()
    }
}

fn bad(reason: &'static str, message: &str) -> StorageError {
    StorageError::BadRequest {
        reason,
        message: message.to_owned(),
    }
}

impl CustomerKey {
    /// Checks a customer-supplied key: its algorithm, base64 key and base64 SHA-256, as
    /// the client sent them (the api layer reads them from its own headers). All
    /// absent: no key.
    pub fn from_parts(algorithm: Option<&str>, key: Option<&str>, sha256: Option<&str>) -> StorageResult<Option<Self>> {
        if algorithm.is_none() && key.is_none() && sha256.is_none() {
            return Ok(None);
        }
        if algorithm.map(str::trim) != Some("AES256") {
            return Err(bad(
                "customerEncryptionAlgorithmIsInvalid",
                "Missing or invalid encryption algorithm: customer-supplied encryption keys must use AES256.",
            ));
        }
        let raw = key
            .and_then(|k| STANDARD.decode(k.trim()).ok())
            .map(Zeroizing::new)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                bad(
                    "customerEncryptionKeyFormatIsInvalid",
                    "Missing an encryption key, or it is not base64 encoded, or it does not meet the required length of the encryption algorithm.",
                )
            })?;
        let mut k = Zeroizing::new([0u8; 32]);
        k.copy_from_slice(&raw);
        let digest: [u8; 32] = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &k[..])
            .as_ref()
            .try_into()
            .map_err(|_| StorageError::internal("SHA-256 length"))?;
        let claimed = sha256.and_then(|s| STANDARD.decode(s.trim()).ok());
        let matches = claimed.is_some_and(|c| aws_lc_rs::constant_time::verify_slices_are_equal(&c, &digest).is_ok());
        if !matches {
            return Err(bad(
                "customerEncryptionKeySha256IsInvalid",
                "Missing a SHA256 hash of the encryption key, or it is not base64 encoded, or it does not match the encryption key.",
            ));
        }
        Ok(Some(Self { key: k, sha256: digest }))
    }

    pub fn sha256_b64(&self) -> String {
        STANDARD.encode(self.sha256)
    }

    /// Constant-time comparison with a stored `keySha256`.
    pub fn matches(&self, stored_b64: &str) -> bool {
        STANDARD
            .decode(stored_b64)
            .is_ok_and(|s| aws_lc_rs::constant_time::verify_slices_are_equal(&s, &self.sha256).is_ok())
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &self.key[..]).expect("32-byte key"))
    }

    /// nonce ‖ AES-256-GCM(dek) under the customer key, bound to `aad`.
    pub fn wrap(&self, dek: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("system RNG");
        let mut body = dek.to_vec();
        self.aead()
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut body)
            .expect("AES-GCM seal");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&body);
        out
    }

    pub fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> StorageResult<Zeroizing<Vec<u8>>> {
        let incorrect = || {
            bad(
                "customerEncryptionKeyIsIncorrect",
                "The provided encryption key is incorrect.",
            )
        };
        if wrapped.len() < NONCE_LEN + 16 {
            return Err(incorrect());
        }
        let nonce = Nonce::try_assume_unique_for_key(&wrapped[..NONCE_LEN]).map_err(|_| incorrect())?;
        let mut buf = Zeroizing::new(wrapped[NONCE_LEN..].to_vec());
        let n = self
            .aead()
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| incorrect())?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(key: &[u8]) -> (String, String) {
        let sha = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
        (STANDARD.encode(key), STANDARD.encode(sha.as_ref()))
    }

    #[test]
    fn parses_and_checks_headers() {
        let (k, s) = headers(&[7; 32]);
        let ck = CustomerKey::from_parts(Some("AES256"), Some(&k), Some(&s))
            .unwrap()
            .unwrap();
        assert!(ck.matches(&s));
        assert!(!format!("{ck:?}").contains(&k));
        assert!(CustomerKey::from_parts(None, None, None).unwrap().is_none());
        let reason = |r: StorageResult<Option<CustomerKey>>| match r {
            Err(StorageError::BadRequest { reason, .. }) => reason,
            _ => "ok",
        };
        assert_eq!(
            reason(CustomerKey::from_parts(Some("AES128"), Some(&k), Some(&s))),
            "customerEncryptionAlgorithmIsInvalid"
        );
        let (k31, s31) = headers(&[7; 31]);
        assert_eq!(
            reason(CustomerKey::from_parts(Some("AES256"), Some(&k31), Some(&s31))),
            "customerEncryptionKeyFormatIsInvalid"
        );
        assert_eq!(
            reason(CustomerKey::from_parts(Some("AES256"), Some("***"), Some(&s))),
            "customerEncryptionKeyFormatIsInvalid"
        );
        let (_, other) = headers(&[8; 32]);
        assert_eq!(
            reason(CustomerKey::from_parts(Some("AES256"), Some(&k), Some(&other))),
            "customerEncryptionKeySha256IsInvalid"
        );
        let w = ck.wrap(&[1; 32], b"aad");
        assert_eq!(&ck.unwrap(&w, b"aad").unwrap()[..], &[1; 32]);
        let (k2, s2) = headers(&[9; 32]);
        let other = CustomerKey::from_parts(Some("AES256"), Some(&k2), Some(&s2))
            .unwrap()
            .unwrap();
        assert!(other.unwrap(&w, b"aad").is_err());
    }
}
