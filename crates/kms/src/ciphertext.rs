//! The `cryptoKeys:encrypt` ciphertext: opaque to clients, tagged with the version so
//! decrypt can pick it. Layout: format byte ‖ version id (BE32) ‖ 12-byte nonce ‖
//! AES-256-GCM(ciphertext ‖ tag). The GCM AAD binds the key name and the caller's AAD,
//! so a ciphertext cannot be replayed under another key.

use aws_lc_rs::aead::{Aad, LessSafeKey, NONCE_LEN, Nonce};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

const FORMAT: u8 = 0x53; // 'S'
const HEADER: usize = 1 + 4 + NONCE_LEN;
pub const OVERHEAD: usize = HEADER + 16;

/// Binds the header (format and version id), the key name and the caller's AAD, so
/// a ciphertext cannot be relabelled to another version or moved to another key.
fn gcm_aad(version: u32, key_name: &str, aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + key_name.len() + 1 + aad.len());
    v.push(FORMAT);
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(key_name.as_bytes());
    v.push(0);
    v.extend_from_slice(aad);
    v
}

pub fn seal(key: &LessSafeKey, key_name: &str, version: u32, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).expect("system RNG");
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(FORMAT);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&nonce);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(gcm_aad(version, key_name, aad)),
        &mut body,
    )
    .expect("AES-GCM seal");
    out.extend_from_slice(&body);
    out
}

/// The version a ciphertext claims, or `None` if it is not a sealstore ciphertext.
pub fn version_of(ciphertext: &[u8]) -> Option<u32> {
    if ciphertext.len() < OVERHEAD || ciphertext[0] != FORMAT {
        return None;
    }
    Some(u32::from_be_bytes(ciphertext[1..5].try_into().ok()?))
}

pub fn open(key: &LessSafeKey, key_name: &str, ciphertext: &[u8], aad: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let version = version_of(ciphertext)?;
    let nonce = Nonce::try_assume_unique_for_key(&ciphertext[5..HEADER]).ok()?;
    let mut buf = zeroize::Zeroizing::new(ciphertext[HEADER..].to_vec());
    let n = key
        .open_in_place(nonce, Aad::from(gcm_aad(version, key_name, aad)), &mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead::{AES_256_GCM, UnboundKey};

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).unwrap());
        let ct = seal(&key, "k", 7, b"data", b"aad");
        assert_eq!(version_of(&ct), Some(7));
        assert_eq!(&open(&key, "k", &ct, b"aad").unwrap()[..], b"data");
        assert!(open(&key, "k", &ct, b"other").is_none());
        assert!(open(&key, "k2", &ct, b"aad").is_none());
        let mut bad = ct.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(open(&key, "k", &bad, b"aad").is_none());
        assert!(version_of(&ct[..10]).is_none());
        let mut relabelled = ct.clone();
        relabelled[4] = 8;
        assert!(
            open(&key, "k", &relabelled, b"aad").is_none(),
            "the version id is authenticated"
        );
    }
}
