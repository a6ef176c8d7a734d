//! Key material of one version: generation, parsing (from sealed storage or from an
//! import), and the operations it supports. Never printed; raw bytes zeroized on drop.

use super::error::{KmsError, KmsResult};
use super::types::{Algorithm, AlgorithmKind, Hash};
use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair,
    RSA_PKCS1_SHA256, RSA_PSS_SHA256, RsaEncoding, RsaKeyPair,
};
use zeroize::Zeroizing;

enum Ops {
    Aes(LessSafeKey),
    Hmac(Box<hmac::Key>),
    Ec(EcdsaKeyPair),
    RsaSign(RsaKeyPair, &'static dyn RsaEncoding),
    RsaDecrypt(OaepPrivateDecryptingKey),
}

/// Why material is not acceptable for an algorithm. The texts follow Cloud KMS's
/// `importFailureReason` wording where one exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaterialError {
    #[error("The key material in the import request couldn't be unwrapped or wasn't formatted correctly: {0}")]
    BadFormat(String),
}

pub struct Material {
    algorithm: Algorithm,
    raw: Zeroizing<Vec<u8>>,
    public_key_der: Option<Vec<u8>>,
    ops: Ops,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

pub enum SignInput<'a> {
    /// A digest computed by the caller, with the hash the caller says it used.
    Digest(Hash, &'a [u8]),
    /// Raw data; the server hashes it.
    Data(&'a [u8]),
}

fn ec_alg(curve_bits: usize) -> &'static EcdsaSigningAlgorithm {
    if curve_bits == 384 {
        &ECDSA_P384_SHA384_ASN1_SIGNING
    } else {
        &ECDSA_P256_SHA256_ASN1_SIGNING
    }
}

fn rsa_size(bits: usize) -> KeySize {
    match bits {
        2048 => KeySize::Rsa2048,
        3072 => KeySize::Rsa3072,
        _ => KeySize::Rsa4096,
    }
}

fn digest_alg(hash: Hash) -> &'static digest::Algorithm {
    match hash {
        Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        Hash::Sha256 => &digest::SHA256,
        Hash::Sha384 => &digest::SHA384,
    }
}

fn internal(what: &str) -> KmsError {
    KmsError::Internal(format!("key generation failed: {what}"))
}

impl Material {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw material as stored (sealed) and imported: 32 bytes for symmetric and
    /// HMAC keys, PKCS#8 DER for asymmetric keys.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// SubjectPublicKeyInfo DER for asymmetric keys.
    pub fn public_key_der(&self) -> Option<&[u8]> {
        self.public_key_der.as_deref()
    }

    /// Makes fresh material. RSA keys take from a tenth of a second to seconds, so
    /// callers keep asymmetric generation off the request path.
    pub fn generate(algorithm: Algorithm) -> KmsResult<Self> {
        let raw: Zeroizing<Vec<u8>> = match algorithm.kind() {
            AlgorithmKind::Symmetric | AlgorithmKind::Hmac => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                SystemRandom::new().fill(&mut k).map_err(|_| internal("rng"))?;
                k
            }
            AlgorithmKind::EcSign { curve_bits } => {
                let kp = EcdsaKeyPair::generate(ec_alg(curve_bits)).map_err(|_| internal("ec"))?;
                Zeroizing::new(kp.to_pkcs8v1().map_err(|_| internal("ec pkcs8"))?.as_ref().to_vec())
            }
            AlgorithmKind::RsaSignPss { bits } | AlgorithmKind::RsaSignPkcs1 { bits } => {
                let kp = RsaKeyPair::generate(rsa_size(bits)).map_err(|_| internal("rsa"))?;
                let der: Pkcs8V1Der = kp.as_der().map_err(|_| internal("rsa pkcs8"))?;
                Zeroizing::new(der.as_ref().to_vec())
            }
            AlgorithmKind::RsaDecryptOaep { bits } => {
                let k = PrivateDecryptingKey::generate(rsa_size(bits)).map_err(|_| internal("rsa"))?;
                let der: Pkcs8V1Der = k.as_der().map_err(|_| internal("rsa pkcs8"))?;
                Zeroizing::new(der.as_ref().to_vec())
            }
        };
        Self::from_raw(algorithm, raw).map_err(|e| KmsError::Internal(e.to_string()))
    }

    /// Parses raw material for `algorithm`, checking its format strictly: the length
    /// for symmetric keys, and for PKCS#8 keys that the curve or modulus matches.
    pub fn from_raw(algorithm: Algorithm, raw: Zeroizing<Vec<u8>>) -> Result<Self, MaterialError> {
        let bad = |m: String| MaterialError::BadFormat(m);
        let (ops, public_key_der) = match algorithm.kind() {
            AlgorithmKind::Symmetric => {
                if raw.len() != 32 {
                    return Err(bad(format!("{algorithm} needs a 32-byte key, got {} bytes", raw.len())));
                }
                let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| bad("invalid AES key".into()))?;
                (Ops::Aes(LessSafeKey::new(key)), None)
            }
            AlgorithmKind::Hmac => {
                if raw.len() != 32 {
                    return Err(bad(format!("{algorithm} needs a 32-byte key, got {} bytes", raw.len())));
                }
                (Ops::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA256, &raw))), None)
            }
            AlgorithmKind::EcSign { curve_bits } => {
                let kp = EcdsaKeyPair::from_pkcs8(ec_alg(curve_bits), &raw).map_err(|_| {
                    bad(format!(
                        "{algorithm} needs a PKCS#8 DER private key on the P-{curve_bits} curve"
                    ))
                })?;
                let spki: PublicKeyX509Der = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| bad("public key could not be encoded".into()))?;
                let spki = spki.as_ref().to_vec();
                (Ops::Ec(kp), Some(spki))
            }
            AlgorithmKind::RsaSignPss { bits } | AlgorithmKind::RsaSignPkcs1 { bits } => {
                let kp = RsaKeyPair::from_pkcs8(&raw)
                    .map_err(|_| bad(format!("{algorithm} needs a PKCS#8 DER RSA private key")))?;
                if kp.public_modulus_len() * 8 != bits {
                    return Err(bad(format!(
                        "{algorithm} needs a {bits}-bit RSA key, got {} bits",
                        kp.public_modulus_len() * 8
                    )));
                }
                let spki: PublicKeyX509Der = kp
                    .public_key()
                    .as_der()
                    .map_err(|_| bad("public key could not be encoded".into()))?;
                let spki = spki.as_ref().to_vec();
                let enc: &'static dyn RsaEncoding = if matches!(algorithm.kind(), AlgorithmKind::RsaSignPss { .. }) {
                    &RSA_PSS_SHA256
                } else {
                    &RSA_PKCS1_SHA256
                };
                (Ops::RsaSign(kp, enc), Some(spki))
            }
            AlgorithmKind::RsaDecryptOaep { bits } => {
                let k = PrivateDecryptingKey::from_pkcs8(&raw)
                    .map_err(|_| bad(format!("{algorithm} needs a PKCS#8 DER RSA private key")))?;
                if k.key_size_bits() != bits {
                    return Err(bad(format!(
                        "{algorithm} needs a {bits}-bit RSA key, got {} bits",
                        k.key_size_bits()
                    )));
                }
                let spki: PublicKeyX509Der = k
                    .public_key()
                    .as_der()
                    .map_err(|_| bad("public key could not be encoded".into()))?;
                let spki = spki.as_ref().to_vec();
                let oaep = OaepPrivateDecryptingKey::new(k).map_err(|_| bad("unusable RSA key".into()))?;
                (Ops::RsaDecrypt(oaep), Some(spki))
            }
        };
        Ok(Self {
            algorithm,
            raw,
            public_key_der,
            ops,
        })
    }

    pub fn aes(&self) -> Option<&LessSafeKey> {
        match &self.ops {
            Ops::Aes(k) => Some(k),
            _ => None,
        }
    }

    pub fn mac_sign(&self, data: &[u8]) -> Option<Vec<u8>> {
        match &self.ops {
            Ops::Hmac(k) => Some(hmac::sign(k, data).as_ref().to_vec()),
            _ => None,
        }
    }

    /// Constant-time MAC check.
    pub fn mac_verify(&self, data: &[u8], mac: &[u8]) -> Option<bool> {
        match &self.ops {
            Ops::Hmac(k) => Some(hmac::verify(k, data, mac).is_ok()),
            _ => None,
        }
    }

    /// Signs a digest or data. DER `ECDSA-Sig-Value` for EC; PSS salt = digest length.
    pub fn sign(&self, input: SignInput<'_>) -> KmsResult<Vec<u8>> {
        let hash = self.algorithm.hash();
        let digest = match input {
            SignInput::Digest(given, d) => {
                if given != hash || d.len() != hash.output_len() {
                    return Err(KmsError::InvalidArgument(format!(
                        "The digest must be a {}-byte {} digest for {}.",
                        hash.output_len(),
                        hash.digest_field().to_uppercase(),
                        self.algorithm
                    )));
                }
                digest::Digest::import_less_safe(d, digest_alg(hash))
                    .map_err(|_| KmsError::InvalidArgument("Invalid digest.".into()))?
            }
            SignInput::Data(data) => digest::digest(digest_alg(hash), data),
        };
        let failed = |_| KmsError::Internal("signing failed".into());
        match &self.ops {
            Ops::Ec(kp) => Ok(kp.sign_digest(&digest).map_err(failed)?.as_ref().to_vec()),
            Ops::RsaSign(kp, enc) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign_digest(*enc, &digest, &mut sig).map_err(failed)?;
                Ok(sig)
            }
            _ => Err(KmsError::FailedPrecondition(format!(
                "{} keys cannot sign.",
                self.algorithm
            ))),
        }
    }

    /// RSA-OAEP decryption with the algorithm's hash for both OAEP and MGF1, empty label.
    pub fn asymmetric_decrypt(&self, ciphertext: &[u8]) -> KmsResult<Zeroizing<Vec<u8>>> {
        let Ops::RsaDecrypt(k) = &self.ops else {
            return Err(KmsError::FailedPrecondition(format!(
                "{} keys cannot decrypt.",
                self.algorithm
            )));
        };
        if ciphertext.len() != k.key_size_bytes() {
            return Err(KmsError::InvalidArgument(format!(
                "The ciphertext must be {} bytes for {}.",
                k.key_size_bytes(),
                self.algorithm
            )));
        }
        let alg = if self.algorithm.hash() == Hash::Sha1 {
            &OAEP_SHA1_MGF1SHA1
        } else {
            &OAEP_SHA256_MGF1SHA256
        };
        let mut out = Zeroizing::new(vec![0u8; k.min_output_size()]);
        let n = k
            .decrypt(alg, ciphertext, &mut out, None)
            .map_err(|_| KmsError::DecryptionFailed)?
            .len();
        out.truncate(n);
        Ok(out)
    }
}

/// PEM armour for a SubjectPublicKeyInfo DER (aws-lc-rs emits DER only).
pub fn spki_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

    #[test]
    fn symmetric_material_checks_length() {
        assert!(Material::from_raw(Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION, Zeroizing::new(vec![0; 31])).is_err());
        let m = Material::from_raw(Algorithm::GOOGLE_SYMMETRIC_ENCRYPTION, Zeroizing::new(vec![0; 32])).unwrap();
        assert!(m.aes().is_some());
        assert_eq!(
            format!("{m:?}"),
            "Material { algorithm: GOOGLE_SYMMETRIC_ENCRYPTION, .. }"
        );
    }

    #[test]
    fn ec_sign_verifies_and_rejects_the_wrong_curve() {
        let m = Material::generate(Algorithm::EC_SIGN_P256_SHA256).unwrap();
        let sig = m.sign(SignInput::Data(b"hello")).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ec_point(&m))
            .verify(b"hello", &sig)
            .unwrap();
        let d = digest::digest(&digest::SHA256, b"hello");
        let sig2 = m.sign(SignInput::Digest(Hash::Sha256, d.as_ref())).unwrap();
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, ec_point(&m))
            .verify(b"hello", &sig2)
            .unwrap();
        assert!(m.sign(SignInput::Digest(Hash::Sha384, &[0; 48])).is_err());
        assert!(m.sign(SignInput::Digest(Hash::Sha256, &[0; 31])).is_err());
        let raw = Zeroizing::new(m.raw().to_vec());
        assert!(Material::from_raw(Algorithm::EC_SIGN_P384_SHA384, raw).is_err());
        assert!(spki_pem(m.public_key_der().unwrap()).starts_with("-----BEGIN PUBLIC KEY-----\n"));
    }

    fn ec_point(m: &Material) -> Vec<u8> {
        // The uncompressed point is the last 65 bytes of a P-256 SPKI.
        let der = m.public_key_der().unwrap();
        der[der.len() - 65..].to_vec()
    }

    #[test]
    fn hmac_sign_and_verify() {
        let m = Material::generate(Algorithm::HMAC_SHA256).unwrap();
        let mac = m.mac_sign(b"x").unwrap();
        assert_eq!(m.mac_verify(b"x", &mac), Some(true));
        assert_eq!(m.mac_verify(b"y", &mac), Some(false));
    }
}
