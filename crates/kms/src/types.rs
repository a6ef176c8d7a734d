//! Cloud KMS enums, with their proto names and numbers. The API accepts either and
//! renders one or the other; the core only ever sees the Rust variants.

macro_rules! proto_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $num:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[allow(non_camel_case_types)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn name(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }

            pub fn number(self) -> i64 {
                match self { $($name::$variant => $num),+ }
            }

            pub fn from_name(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == s)
            }

            pub fn from_number(n: i64) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.number() == n)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

proto_enum!(
    /// `CryptoKeyPurpose`. Only the purposes sealstore implements are listed; the API
    /// layer reports the others as not supported.
    Purpose { ENCRYPT_DECRYPT = 1, ASYMMETRIC_SIGN = 5, ASYMMETRIC_DECRYPT = 6, MAC = 9 }
);

proto_enum!(ProtectionLevel { SOFTWARE = 1, HSM = 2, EXTERNAL = 3, EXTERNAL_VPC = 4, HSM_SINGLE_TENANT = 5 });

proto_enum!(VersionState {
    ENABLED = 1,
    DISABLED = 2,
    DESTROYED = 3,
    DESTROY_SCHEDULED = 4,
    PENDING_GENERATION = 5,
    PENDING_IMPORT = 6,
    IMPORT_FAILED = 7,
    GENERATION_FAILED = 8,
});

proto_enum!(ImportJobState { PENDING_GENERATION = 1, ACTIVE = 2, EXPIRED = 3 });

proto_enum!(ImportMethod {
    RSA_OAEP_3072_SHA1_AES_256 = 1,
    RSA_OAEP_4096_SHA1_AES_256 = 2,
    RSA_OAEP_3072_SHA256_AES_256 = 3,
    RSA_OAEP_4096_SHA256_AES_256 = 4,
    RSA_OAEP_3072_SHA256 = 5,
    RSA_OAEP_4096_SHA256 = 6,
});

proto_enum!(
    /// `CryptoKeyVersionAlgorithm`: the algorithms sealstore implements.
    Algorithm {
        GOOGLE_SYMMETRIC_ENCRYPTION = 1,
        RSA_SIGN_PSS_2048_SHA256 = 2,
        RSA_SIGN_PSS_3072_SHA256 = 3,
        RSA_SIGN_PSS_4096_SHA256 = 4,
        RSA_SIGN_PKCS1_2048_SHA256 = 5,
        RSA_SIGN_PKCS1_3072_SHA256 = 6,
        RSA_SIGN_PKCS1_4096_SHA256 = 7,
        RSA_DECRYPT_OAEP_2048_SHA256 = 8,
        RSA_DECRYPT_OAEP_3072_SHA256 = 9,
        RSA_DECRYPT_OAEP_4096_SHA256 = 10,
        EC_SIGN_P256_SHA256 = 12,
        EC_SIGN_P384_SHA384 = 13,
        HMAC_SHA256 = 32,
        RSA_DECRYPT_OAEP_2048_SHA1 = 37,
        RSA_DECRYPT_OAEP_3072_SHA1 = 38,
        RSA_DECRYPT_OAEP_4096_SHA1 = 39,
    }
);

/// The hash an algorithm signs or decrypts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
}

impl Hash {
    /// The field name in `AsymmetricSignRequest.digest`.
    pub fn digest_field(self) -> &'static str {
        match self {
            Hash::Sha1 => "sha1",
            Hash::Sha256 => "sha256",
            Hash::Sha384 => "sha384",
        }
    }

    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
        }
    }
}

/// What the material of a version is, derived from its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmKind {
    Symmetric,
    Hmac,
    EcSign { curve_bits: usize },
    RsaSignPss { bits: usize },
    RsaSignPkcs1 { bits: usize },
    RsaDecryptOaep { bits: usize },
}

impl Algorithm {
    pub fn purpose(self) -> Purpose {
        match self.kind() {
            AlgorithmKind::Symmetric => Purpose::ENCRYPT_DECRYPT,
            AlgorithmKind::Hmac => Purpose::MAC,
            AlgorithmKind::EcSign { .. } | AlgorithmKind::RsaSignPss { .. } | AlgorithmKind::RsaSignPkcs1 { .. } => {
                Purpose::ASYMMETRIC_SIGN
            }
            AlgorithmKind::RsaDecryptOaep { .. } => Purpose::ASYMMETRIC_DECRYPT,
        }
    }

    pub fn kind(self) -> AlgorithmKind {
        use Algorithm::*;
        match self {
            GOOGLE_SYMMETRIC_ENCRYPTION => AlgorithmKind::Symmetric,
            HMAC_SHA256 => AlgorithmKind::Hmac,
            EC_SIGN_P256_SHA256 => AlgorithmKind::EcSign { curve_bits: 256 },
            EC_SIGN_P384_SHA384 => AlgorithmKind::EcSign { curve_bits: 384 },
            RSA_SIGN_PSS_2048_SHA256 => AlgorithmKind::RsaSignPss { bits: 2048 },
            RSA_SIGN_PSS_3072_SHA256 => AlgorithmKind::RsaSignPss { bits: 3072 },
            RSA_SIGN_PSS_4096_SHA256 => AlgorithmKind::RsaSignPss { bits: 4096 },
            RSA_SIGN_PKCS1_2048_SHA256 => AlgorithmKind::RsaSignPkcs1 { bits: 2048 },
            RSA_SIGN_PKCS1_3072_SHA256 => AlgorithmKind::RsaSignPkcs1 { bits: 3072 },
            RSA_SIGN_PKCS1_4096_SHA256 => AlgorithmKind::RsaSignPkcs1 { bits: 4096 },
            RSA_DECRYPT_OAEP_2048_SHA256 | RSA_DECRYPT_OAEP_2048_SHA1 => AlgorithmKind::RsaDecryptOaep { bits: 2048 },
            RSA_DECRYPT_OAEP_3072_SHA256 | RSA_DECRYPT_OAEP_3072_SHA1 => AlgorithmKind::RsaDecryptOaep { bits: 3072 },
            RSA_DECRYPT_OAEP_4096_SHA256 | RSA_DECRYPT_OAEP_4096_SHA1 => AlgorithmKind::RsaDecryptOaep { bits: 4096 },
        }
    }

    pub fn hash(self) -> Hash {
        use Algorithm::*;
        match self {
            EC_SIGN_P384_SHA384 => Hash::Sha384,
            RSA_DECRYPT_OAEP_2048_SHA1 | RSA_DECRYPT_OAEP_3072_SHA1 | RSA_DECRYPT_OAEP_4096_SHA1 => Hash::Sha1,
            _ => Hash::Sha256,
        }
    }

    /// Symmetric and MAC material is made on the request path; asymmetric keys go
    /// through PENDING_GENERATION in the background.
    pub fn is_asymmetric(self) -> bool {
        matches!(self.purpose(), Purpose::ASYMMETRIC_SIGN | Purpose::ASYMMETRIC_DECRYPT)
    }
}

impl ImportMethod {
    pub fn rsa_bits(self) -> usize {
        use ImportMethod::*;
        match self {
            RSA_OAEP_3072_SHA1_AES_256 | RSA_OAEP_3072_SHA256_AES_256 | RSA_OAEP_3072_SHA256 => 3072,
            RSA_OAEP_4096_SHA1_AES_256 | RSA_OAEP_4096_SHA256_AES_256 | RSA_OAEP_4096_SHA256 => 4096,
        }
    }

    /// The OAEP hash (and MGF1 hash, which is always the same).
    pub fn oaep_hash(self) -> Hash {
        use ImportMethod::*;
        match self {
            RSA_OAEP_3072_SHA1_AES_256 | RSA_OAEP_4096_SHA1_AES_256 => Hash::Sha1,
            _ => Hash::Sha256,
        }
    }

    /// RSA-AES methods wrap an ephemeral AES key with RSA and the target with AES-KWP;
    /// direct methods wrap the target with RSA-OAEP alone.
    pub fn uses_aes_kwp(self) -> bool {
        !matches!(
            self,
            ImportMethod::RSA_OAEP_3072_SHA256 | ImportMethod::RSA_OAEP_4096_SHA256
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()), Some(*a));
            assert_eq!(Algorithm::from_number(a.number()), Some(*a));
        }
        assert_eq!(Algorithm::from_number(12), Some(Algorithm::EC_SIGN_P256_SHA256));
        assert_eq!(Purpose::from_number(5), Some(Purpose::ASYMMETRIC_SIGN));
        assert_eq!(VersionState::DESTROY_SCHEDULED.number(), 4);
        assert_eq!(Algorithm::from_name("NOPE"), None);
    }

    #[test]
    fn every_algorithm_has_a_purpose_and_hash() {
        assert_eq!(Algorithm::RSA_DECRYPT_OAEP_3072_SHA1.hash(), Hash::Sha1);
        assert_eq!(Algorithm::EC_SIGN_P384_SHA384.purpose(), Purpose::ASYMMETRIC_SIGN);
        assert!(!Algorithm::HMAC_SHA256.is_asymmetric());
        assert!(ImportMethod::RSA_OAEP_4096_SHA1_AES_256.uses_aes_kwp());
        assert!(!ImportMethod::RSA_OAEP_3072_SHA256.uses_aes_kwp());
    }
}
