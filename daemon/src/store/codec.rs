//! How values are laid out in redb: every value is *sealed*, i.e. framed
//! with a format tag and a CRC-32C, so corruption is reported instead of
//! served.
//!
//! ```text
//!   byte 0      1..5            5..
//!   +-----+----------------+-------------------+
//!   | tag | crc32c (LE u32)| payload           |
//!   +-----+----------------+-------------------+
//!   crc32c covers: salt (u64 BE) ++ tag ++ payload
//! ```
//!
//! The *salt* is the value's key when the key is a number (the log index, the
//! lease address), so a value that ended up under the wrong key fails the
//! check too; other values use salt 0.
//!
//! The payload is JSON (the snapshot data is zstd-compressed JSON).
//! Why JSON: [`crate::model::Command`] is an internally tagged enum
//! (`#[serde(tag = "op")]`), which only self-describing formats can decode;
//! `serde_json` is already a dependency, and a Grant entry is ~250 bytes, so
//! a compact binary format would save little next to the fsync per batch.
//! The tag byte names the frame version and leaves room for another encoding.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StoreError;

/// Frame version 1: the layout above.
const TAG_V1: u8 = 1;
const HEADER: usize = 5;

/// Frames `payload` with the tag and its checksum.
pub(super) fn seal(salt: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.push(TAG_V1);
    out.extend_from_slice(&checksum(salt, TAG_V1, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the frame and returns the payload. `what` names the value in the
/// error (e.g. "log entry 42").
pub(super) fn unseal<'a>(
    salt: u64,
    bytes: &'a [u8],
    what: &dyn Fn() -> String,
) -> Result<&'a [u8], StoreError> {
    if bytes.len() < HEADER {
        return Err(StoreError::Corrupt {
            what: what(),
            detail: format!("{} bytes, shorter than the header", bytes.len()),
        });
    }
    let tag = bytes[0];
    if tag != TAG_V1 {
        return Err(StoreError::Corrupt {
            what: what(),
            detail: format!("unknown encoding tag {tag}"),
        });
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let payload = &bytes[HEADER..];
    let actual = checksum(salt, tag, payload);
    if stored != actual {
        return Err(StoreError::Corrupt {
            what: what(),
            detail: format!("checksum mismatch: stored {stored:08x}, computed {actual:08x}"),
        });
    }
    Ok(payload)
}

/// Serializes and seals.
pub(super) fn encode<T: Serialize + ?Sized>(
    salt: u64,
    value: &T,
    what: &'static str,
) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(value).map_err(|source| StoreError::Encode { what, source })?;
    Ok(seal(salt, &json))
}

/// Unseals and deserializes; a checksum or decoding failure is corruption.
pub(super) fn decode<T: DeserializeOwned>(
    salt: u64,
    bytes: &[u8],
    what: &dyn Fn() -> String,
) -> Result<T, StoreError> {
    let payload = unseal(salt, bytes, what)?;
    serde_json::from_slice(payload).map_err(|e| StoreError::Corrupt {
        what: what(),
        detail: format!("undecodable: {e}"),
    })
}

fn checksum(salt: u64, tag: u8, payload: &[u8]) -> u32 {
    let mut crc = Crc32c::new();
    crc.update(&salt.to_be_bytes());
    crc.update(&[tag]);
    crc.update(payload);
    crc.finish()
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
/// In-house because it is 20 lines and detects every burst error up to 32
/// bits; the bytes under it are also covered by redb's own page checksums,
/// so this one guards against what redb cannot see (our own bugs, a value
/// copied to the wrong key, a flipped bit in a page redb did not re-verify).
struct Crc32c(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32c {
    fn new() -> Self {
        Crc32c(!0)
    }

    fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &b in bytes {
            c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(bytes: &[u8]) -> u32 {
        let mut c = Crc32c::new();
        c.update(bytes);
        c.finish()
    }

    #[test]
    fn crc32c_matches_the_standard_check_values() {
        // RFC 3720 appendix B.4 and the CRC catalogue's "check" value.
        assert_eq!(crc(b"123456789"), 0xE306_9283);
        assert_eq!(crc(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn seal_round_trips_and_detects_every_single_bit_flip() {
        let sealed = seal(7, b"{\"a\":1}");
        assert_eq!(unseal(7, &sealed, &|| "x".into()).unwrap(), b"{\"a\":1}");
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    unseal(7, &bad, &|| "x".into()).is_err(),
                    "flip at {byte}:{bit} went unnoticed"
                );
            }
        }
        // The same bytes under another key are rejected too.
        assert!(unseal(8, &sealed, &|| "x".into()).is_err());
        assert!(unseal(7, &sealed[..3], &|| "x".into()).is_err());
    }
}
