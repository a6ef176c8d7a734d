//! The encrypted blob format. Plaintext is cut into 64 KiB segments; every segment but
//! the last is full, and the last holds the remainder (empty when the size is a multiple
//! of 64 KiB, or the object is empty). Each is sealed with AES-256-GCM under the
//! object's DEK with the STREAM nonce `prefix(7) ‖ BE32(index) ‖ last(1)`; the AAD binds
//! the format version and the blob id, so segments cannot be reordered, truncated,
//! extended or moved between objects.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

pub const SEGMENT: usize = 64 * 1024;
pub const TAG: usize = 16;
pub const PREFIX_LEN: usize = 7;
const FORMAT: &[u8] = b"sealstore-segment-v1\0";
const HASHES_FORMAT: &[u8] = b"sealstore-hashes-v1\0";

/// Segments in an object of `size` bytes (always at least one).
pub fn segment_count(size: u64) -> u64 {
    size / SEGMENT as u64 + 1
}

/// Bytes of ciphertext for `size` bytes of plaintext.
pub fn ciphertext_len(size: u64) -> u64 {
    size + segment_count(size) * TAG as u64
}

/// Plaintext length of segment `index` in an object of `size` bytes.
pub fn segment_plain_len(size: u64, index: u64) -> usize {
    let count = segment_count(size);
    if index + 1 < count {
        SEGMENT
    } else {
        (size - (count - 1) * SEGMENT as u64) as usize
    }
}

/// A fresh 32-byte data key. Never printed; zeroized on drop.
pub struct Dek(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(..)")
    }
}

impl Dek {
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        SystemRandom::new().fill(&mut k[..]).expect("system RNG");
        Self(k)
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let mut k = Zeroizing::new([0u8; 32]);
        if b.len() != 32 {
            return None;
        }
        k.copy_from_slice(b);
        Some(Self(k))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0[..]
    }
}

pub fn random_prefix() -> [u8; PREFIX_LEN] {
    let mut p = [0u8; PREFIX_LEN];
    SystemRandom::new().fill(&mut p).expect("system RNG");
    p
}

#[derive(Debug, thiserror::Error)]
#[error("a segment failed authentication: the data is corrupt or was tampered with")]
pub struct SegmentError;

/// The per-object-generation cipher.
pub struct ObjectCipher {
    key: LessSafeKey,
    prefix: [u8; PREFIX_LEN],
    aad: Vec<u8>,
}

impl std::fmt::Debug for ObjectCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectCipher").finish_non_exhaustive()
    }
}

impl ObjectCipher {
    pub fn new(dek: &Dek, prefix: [u8; PREFIX_LEN], blob_id: &str) -> Self {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, dek.bytes()).expect("32-byte key"));
        let mut aad = FORMAT.to_vec();
        aad.extend_from_slice(blob_id.as_bytes());
        Self { key, prefix, aad }
    }

    fn nonce(&self, index: u32, flag: u8) -> Nonce {
        let mut n = [0u8; NONCE_LEN];
        n[..PREFIX_LEN].copy_from_slice(&self.prefix);
        n[PREFIX_LEN..PREFIX_LEN + 4].copy_from_slice(&index.to_be_bytes());
        n[NONCE_LEN - 1] = flag;
        Nonce::assume_unique_for_key(n)
    }

    /// Seals `buf` (plaintext) in place, appending the tag.
    pub fn seal_segment(&self, index: u32, last: bool, buf: &mut Vec<u8>) {
        self.key
            .seal_in_place_append_tag(self.nonce(index, u8::from(last)), Aad::from(&self.aad[..]), buf)
            .expect("AES-GCM seal");
    }

    /// Opens a sealed segment in place, returning the plaintext length.
    pub fn open_segment(&self, index: u32, last: bool, buf: &mut [u8]) -> Result<usize, SegmentError> {
        self.key
            .open_in_place(self.nonce(index, u8::from(last)), Aad::from(&self.aad[..]), buf)
            .map(|p| p.len())
            .map_err(|_| SegmentError)
    }

    /// Seals the plaintext's CRC32C and MD5 (absent for composites) under the DEK. The
    /// nonce uses flag 2, which no segment uses, so it never collides with one.
    pub fn seal_hashes(&self, crc32c: u32, md5: Option<[u8; 16]>) -> Vec<u8> {
        let mut buf = crc32c.to_be_bytes().to_vec();
        if let Some(m) = md5 {
            buf.extend_from_slice(&m);
        }
        let mut aad = HASHES_FORMAT.to_vec();
        aad.extend_from_slice(&self.aad[FORMAT.len()..]);
        self.key
            .seal_in_place_append_tag(self.nonce(u32::MAX, 2), Aad::from(aad), &mut buf)
            .expect("AES-GCM seal");
        buf
    }

    pub fn open_hashes(&self, sealed: &[u8]) -> Result<(u32, Option<[u8; 16]>), SegmentError> {
        let mut buf = sealed.to_vec();
        let mut aad = HASHES_FORMAT.to_vec();
        aad.extend_from_slice(&self.aad[FORMAT.len()..]);
        let n = self
            .key
            .open_in_place(self.nonce(u32::MAX, 2), Aad::from(aad), &mut buf)
            .map_err(|_| SegmentError)?
            .len();
        match n {
            4 => Ok((u32::from_be_bytes(buf[..4].try_into().map_err(|_| SegmentError)?), None)),
            20 => {
                let crc = u32::from_be_bytes(buf[..4].try_into().map_err(|_| SegmentError)?);
                let md5: [u8; 16] = buf[4..20].try_into().map_err(|_| SegmentError)?;
                Ok((crc, Some(md5)))
            }
            _ => Err(SegmentError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_math() {
        assert_eq!(segment_count(0), 1);
        assert_eq!(segment_count(65_535), 1);
        assert_eq!(segment_count(65_536), 2);
        assert_eq!(segment_plain_len(65_536, 1), 0);
        assert_eq!(segment_plain_len(70_000, 0), SEGMENT);
        assert_eq!(segment_plain_len(70_000, 1), 70_000 - SEGMENT);
        assert_eq!(ciphertext_len(0), 16);
        assert_eq!(ciphertext_len(65_536), 65_536 + 32);
    }

    #[test]
    fn segments_are_bound_to_index_flag_and_blob() {
        let dek = Dek::generate();
        let p = random_prefix();
        let c = ObjectCipher::new(&dek, p, "blob-a");
        let mut buf = b"hello".to_vec();
        c.seal_segment(3, true, &mut buf);
        let sealed = buf.clone();
        assert_eq!(c.open_segment(3, true, &mut buf).unwrap(), 5);
        for (idx, last) in [(2, true), (3, false)] {
            assert!(c.open_segment(idx, last, &mut sealed.clone()).is_err());
        }
        assert!(
            ObjectCipher::new(&dek, p, "blob-b")
                .open_segment(3, true, &mut sealed.clone())
                .is_err()
        );
        let h = c.seal_hashes(7, Some([1; 16]));
        assert_eq!(c.open_hashes(&h).unwrap(), (7, Some([1; 16])));
        assert_eq!(c.open_hashes(&c.seal_hashes(9, None)).unwrap(), (9, None));
        assert!(ObjectCipher::new(&dek, p, "blob-b").open_hashes(&h).is_err());
        assert_eq!(format!("{dek:?}"), "Dek(..)");
    }

    proptest! {
        #[test]
        fn plain_lengths_sum_to_size(size in 0u64..1_000_000) {
            let total: u64 = (0..segment_count(size)).map(|i| segment_plain_len(size, i) as u64).sum();
            prop_assert_eq!(total, size);
        }
    }
}
