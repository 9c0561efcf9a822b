//! Fixed protocol keys and the cipher each KMS version uses.
//!
//! V5 is plain AES-128 and uses the RustCrypto `aes` crate; V4 (160-bit key) and V6
//! (altered round keys) need the explicit schedule of [`Rijndael`].

use super::rijndael::Rijndael;
use super::Block128;
use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use std::sync::OnceLock;

/// V4 key (160 bits).
pub const KEY_V4: [u8; 20] = [
    0x05, 0x3D, 0x83, 0x07, 0xF9, 0xE5, 0xF0, 0x88, 0xEB, 0x5E, 0xA6, 0x68, 0x6C, 0xF0, 0x37, 0xC7,
    0xE4, 0xEF, 0xD2, 0xD6,
];
/// V5 key (AES-128).
pub const KEY_V5: [u8; 16] = [
    0xCD, 0x7E, 0x79, 0x6F, 0x2A, 0xB2, 0x5D, 0xCB, 0x55, 0xFF, 0xC8, 0xEF, 0x83, 0x64, 0xC4, 0x70,
];
/// V6 key (AES-128 with altered schedule).
pub const KEY_V6: [u8; 16] = [
    0xA9, 0x4A, 0x41, 0x95, 0xE2, 0x01, 0x43, 0x2D, 0x9B, 0xCB, 0x46, 0x04, 0x05, 0xD8, 0x4A, 0x21,
];

/// Standard AES-128 from the RustCrypto `aes` crate behind [`Block128`].
#[derive(Clone)]
pub struct Aes128Std(aes::Aes128);

impl Aes128Std {
    /// Builds the cipher for a 16-byte key.
    pub fn new(key: &[u8; 16]) -> Self {
        Self(aes::Aes128::new(&(*key).into()))
    }
}

impl Block128 for Aes128Std {
    fn encrypt_block(&self, block: &mut [u8; 16]) {
        let mut b = aes::Block::from(*block);
        self.0.encrypt_block(&mut b);
        *block = b.into();
    }

    fn decrypt_block(&self, block: &mut [u8; 16]) {
        let mut b = aes::Block::from(*block);
        self.0.decrypt_block(&mut b);
        *block = b.into();
    }
}

/// Builds V6's cipher: AES-128 schedule of `key`, then round keys 4, 6 and 8 have their
/// first byte XORed with 0x73, 0x09 and 0xE4.
pub fn v6_cipher_for(key: &[u8; 16]) -> Rijndael {
    let mut r = Rijndael::new(key).expect("16-byte key");
    r.tamper(4, 0, 0x73);
    r.tamper(6, 0, 0x09);
    r.tamper(8, 0, 0xE4);
    r
}

/// The V4 cipher (Rijndael, 160-bit key, 11 rounds).
pub fn v4_cipher() -> &'static Rijndael {
    static C: OnceLock<Rijndael> = OnceLock::new();
    C.get_or_init(|| Rijndael::new(&KEY_V4).expect("20-byte key"))
}

/// The V5 cipher (AES-128).
pub fn v5_cipher() -> &'static Aes128Std {
    static C: OnceLock<Aes128Std> = OnceLock::new();
    C.get_or_init(|| Aes128Std::new(&KEY_V5))
}

/// The V6 cipher (AES-128 with altered round keys).
pub fn v6_cipher() -> &'static Rijndael {
    static C: OnceLock<Rijndael> = OnceLock::new();
    C.get_or_init(|| v6_cipher_for(&KEY_V6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> [u8; 16] {
        let v: Vec<u8> = (0..32)
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    const PT: &str = "00112233445566778899aabbccddeeff";

    #[test]
    fn v4_kat() {
        let mut b = [0u8; 16];
        v4_cipher().encrypt_block(&mut b);
        assert_eq!(b, h("933030f10e2e7782b80915d5778a4957"));
        let mut b = h(PT);
        v4_cipher().encrypt_block(&mut b);
        assert_eq!(b, h("175288485474df1d192d3f4c01e1677b"));
        v4_cipher().decrypt_block(&mut b);
        assert_eq!(b, h(PT));
        assert_eq!(v4_cipher().rounds(), 11);
    }

    #[test]
    fn v5_kat() {
        let mut b = [0u8; 16];
        v5_cipher().encrypt_block(&mut b);
        assert_eq!(b, h("ec7c7e75b1923978eac4b2d2260235d5"));
    }

    #[test]
    fn v6_kat_and_schedule() {
        let c = v6_cipher();
        assert_eq!(c.round_keys()[4], h("0530e12e111e2b4d3f6a5901edca6094"));
        assert_eq!(c.round_keys()[6][0], 0x63);
        assert_eq!(c.round_keys()[8][0], 0xef);
        let mut b = [0u8; 16];
        c.encrypt_block(&mut b);
        assert_eq!(b, h("8ca59de0c483c04aa7026a22d6dd208e"));
        let mut b = h(PT);
        c.encrypt_block(&mut b);
        assert_eq!(b, h("13eaa07470593be35700eb21ff77ad83"));
        c.decrypt_block(&mut b);
        assert_eq!(b, h(PT));
    }

    proptest::proptest! {
        /// Our Rijndael core equals the `aes` crate on standard AES-128, both directions.
        #[test]
        fn core_matches_aes_crate(key in proptest::array::uniform16(0u8..), block in proptest::array::uniform16(0u8..)) {
            let ours = Rijndael::new(&key).unwrap();
            let theirs = Aes128Std::new(&key);
            let (mut a, mut b) = (block, block);
            ours.encrypt_block(&mut a);
            theirs.encrypt_block(&mut b);
            proptest::prop_assert_eq!(a, b);
            ours.decrypt_block(&mut a);
            theirs.decrypt_block(&mut b);
            proptest::prop_assert_eq!(a, block);
            proptest::prop_assert_eq!(b, block);
        }
    }
}
