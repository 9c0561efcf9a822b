//! Message authentication: V4's CBC-MAC (ISO 9797-1 padding method 2 under the
//! 160-bit Rijndael) and V6's HMAC-SHA256 with a key derived from the response time.

use super::keys::v4_cipher;
use super::Block128;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

/// V4 MAC: CBC-MAC with a zero IV over `data || 0x80 || 0x00…` (padding always added).
pub fn v4_mac(data: &[u8]) -> [u8; 16] {
    let cipher = v4_cipher();
    let mut state = [0u8; 16];
    let mut padded = data.to_vec();
    padded.push(0x80);
    while !padded.len().is_multiple_of(16) {
        padded.push(0);
    }
    for chunk in padded.chunks_exact(16) {
        for i in 0..16 {
            state[i] ^= chunk[i];
        }
        cipher.encrypt_block(&mut state);
    }
    state
}

const SLOT_DIV: u64 = 0x0000_0022_8168_89BD;
const SLOT_MUL: u64 = 0x0000_0020_8CBA_B5ED;
const SLOT_ADD: u64 = 0x3156_CD5A_C628_477A;

/// V6 HMAC key for a response time (FILETIME): the last 16 bytes of SHA-256 of the
/// time slot.
pub fn v6_hmac_key(time: u64) -> [u8; 16] {
    let slot = (time / SLOT_DIV)
        .wrapping_mul(SLOT_MUL)
        .wrapping_add(SLOT_ADD);
    let digest = Sha256::digest(slot.to_le_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[16..32]);
    k
}

/// V6 HMAC: last 16 bytes of HMAC-SHA256(key, data).
pub fn v6_hmac(key: &[u8; 16], data: &[u8]) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("any key length");
    mac.update(data);
    let tag = mac.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&tag[16..32]);
    out
}

/// SHA-256 of a block (the V5/V6 response hash).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mac_kat() {
        let mac = v4_mac(&[0u8; 236]);
        assert_eq!(
            mac,
            [
                0x4c, 0x1b, 0x4d, 0xe4, 0x00, 0x85, 0x08, 0xd6, 0x6d, 0x9e, 0xd2, 0x29, 0x63, 0xae,
                0x52, 0xb2
            ]
        );
    }

    #[test]
    fn v6_key_worked_example() {
        let k = v6_hmac_key(134_399_591_520_000_000);
        assert_eq!(
            k,
            [
                0x0d, 0xe2, 0x2a, 0x38, 0xfe, 0x07, 0xde, 0x1b, 0x31, 0x24, 0xc0, 0xe4, 0xcf, 0x1c,
                0x11, 0xec
            ]
        );
    }
}
