//! Loading the root key: from `SEALSTORE_ROOT_KEY` (base64), or from a file that is
//! created 0600 on first start. Keeping it beside the data is a development default only.

use anyhow::{Context, bail};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

pub const ROOT_KEY_LEN: usize = 32;

/// The 32-byte root key. Never printed; zeroized on drop.
pub struct RootKey(Zeroizing<[u8; ROOT_KEY_LEN]>);

impl std::fmt::Debug for RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKey").finish_non_exhaustive()
    }
}

impl RootKey {
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<Self> {
        if bytes.len() != ROOT_KEY_LEN {
            bail!("the root key must be exactly {ROOT_KEY_LEN} bytes, got {}", bytes.len());
        }
        let mut key = Zeroizing::new([0u8; ROOT_KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(Self(key))
    }

    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0u8; ROOT_KEY_LEN]);
        SystemRandom::new().fill(&mut key[..]).expect("system RNG");
        Self(key)
    }

    pub fn bytes(&self) -> &[u8; ROOT_KEY_LEN] {
        &self.0
    }

    /// A 32-byte subkey for one purpose (HKDF-SHA256, `info` names the purpose), so no
    /// two uses share a key.
    pub fn derive(&self, info: &[u8]) -> Zeroizing<[u8; 32]> {
        use aws_lc_rs::hkdf::{HKDF_SHA256, KeyType, Salt};
        struct Len;
        impl KeyType for Len {
            fn len(&self) -> usize {
                32
            }
        }
        let prk = Salt::new(HKDF_SHA256, b"sealstore root key derivation v1").extract(&self.0[..]);
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&[info], Len)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("HKDF expand of 32 bytes");
        out
    }

    /// Decodes the `SEALSTORE_ROOT_KEY` value (standard base64 of 32 bytes).
    pub fn from_env_value(value: &str) -> anyhow::Result<Self> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .context("SEALSTORE_ROOT_KEY is not valid base64")?,
        );
        Self::from_bytes(&bytes)
    }

    /// Reads the key file, creating it (mode 0600, 32 random bytes) if it does not exist.
    /// Refuses a file that group or others can read.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    bail!(
                        "root key file {} has mode {:o}: it must not be readable by group or others (chmod 600 it)",
                        path.display(),
                        mode & 0o777
                    );
                }
                let bytes = Zeroizing::new(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
                Self::from_bytes(&bytes).with_context(|| format!("root key file {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                file.write_all(&key.0[..])?;
                file.sync_all()?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_0600_and_reloads_the_same_key() {
        let dir = std::env::temp_dir().join(format!("sealstore-rootkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("root.key");
        let _ = std::fs::remove_file(&path);
        let a = RootKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = RootKey::load_or_create(&path).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = RootKey::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("must not be readable"), "{err}");
        assert_eq!(format!("{a:?}"), "RootKey { .. }");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn env_value_must_be_32_bytes() {
        assert!(RootKey::from_env_value("AAAA").is_err());
        let v = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(RootKey::from_env_value(&v).unwrap().bytes(), &[7u8; 32]);
    }
}
