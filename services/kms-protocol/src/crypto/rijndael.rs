//! Rijndael with a 128-bit block and a 128- or 160-bit key, with an explicit round-key
//! schedule that callers may alter (V6 XORs three bytes of it).
//!
//! The key schedule is computed here (the S-box at compile time); the rounds are the `aes`
//! crate's single-round functions (`aes::hazmat`: AES-NI where the CPU has it, its
//! constant-time software rounds elsewhere), so a non-standard schedule or round count costs
//! no more than AES itself. About seventy blocks go through it per activation on each side.

use super::Block128;
use aes::hazmat;

const fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let hi = a & 0x80;
        a <<= 1;
        if hi != 0 {
            a ^= 0x1b;
        }
        b >>= 1;
    }
    p
}

const fn gf_inv(a: u8) -> u8 {
    if a == 0 {
        return 0;
    }
    // a^254 = a^-1 in GF(2^8).
    let mut result = 1u8;
    let mut base = a;
    let mut e = 254u8;
    while e != 0 {
        if e & 1 != 0 {
            result = gf_mul(result, base);
        }
        base = gf_mul(base, base);
        e >>= 1;
    }
    result
}

const fn build_sbox() -> [u8; 256] {
    let mut sbox = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let x = gf_inv(i as u8);
        let s =
            x ^ x.rotate_left(1) ^ x.rotate_left(2) ^ x.rotate_left(3) ^ x.rotate_left(4) ^ 0x63;
        sbox[i] = s;
        i += 1;
    }
    sbox
}

const SBOX: [u8; 256] = build_sbox();
const RCON: [u8; 10] = [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x1b, 0x36];

/// A Rijndael instance: block 128 bits, `Nk` = 4 or 5 key words, `Nr` = Nk + 6 rounds.
#[derive(Clone)]
pub struct Rijndael {
    round_keys: Vec<[u8; 16]>,
    /// The schedule as the rounds take it: encryption keys, round 0 first.
    enc: Vec<aes::Block>,
    /// Decryption keys of the equivalent inverse cipher: InvMixColumns of the middle ones.
    dec: Vec<aes::Block>,
}

impl std::fmt::Debug for Rijndael {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rijndael")
            .field("rounds", &self.rounds())
            .finish_non_exhaustive()
    }
}

impl Rijndael {
    /// Expands a 16-byte (AES-128) or 20-byte (V4) key. Other lengths are not used by
    /// KMS and are rejected with `None`.
    pub fn new(key: &[u8]) -> Option<Self> {
        let nk = match key.len() {
            16 => 4,
            20 => 5,
            _ => return None,
        };
        let nr = nk + 6;
        let total = 4 * (nr + 1);
        let mut w: Vec<[u8; 4]> = Vec::with_capacity(total);
        for chunk in key.chunks_exact(4) {
            w.push([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        for i in nk..total {
            let mut t = w[i - 1];
            if i % nk == 0 {
                t = [t[1], t[2], t[3], t[0]];
                for b in &mut t {
                    *b = SBOX[*b as usize];
                }
                t[0] ^= RCON[i / nk - 1];
            }
            let prev = w[i - nk];
            w.push([
                prev[0] ^ t[0],
                prev[1] ^ t[1],
                prev[2] ^ t[2],
                prev[3] ^ t[3],
            ]);
        }
        let round_keys = w
            .chunks_exact(4)
            .map(|ws| {
                let mut rk = [0u8; 16];
                for (j, word) in ws.iter().enumerate() {
                    rk[4 * j..4 * j + 4].copy_from_slice(word);
                }
                rk
            })
            .collect();
        let mut r = Self {
            round_keys,
            enc: Vec::new(),
            dec: Vec::new(),
        };
        r.prepare();
        Some(r)
    }

    /// Derives the round functions' keys from `round_keys` (after every change to it).
    fn prepare(&mut self) {
        let nr = self.rounds();
        self.enc = self
            .round_keys
            .iter()
            .map(|k| aes::Block::from(*k))
            .collect();
        self.dec = self
            .enc
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut k = *k;
                if i != 0 && i != nr {
                    hazmat::inv_mix_columns(&mut k);
                }
                k
            })
            .collect();
    }

    /// Number of rounds (10 for AES-128, 11 for the 160-bit key).
    pub fn rounds(&self) -> usize {
        self.round_keys.len() - 1
    }

    /// The expanded schedule, round key 0 first.
    pub fn round_keys(&self) -> &[[u8; 16]] {
        &self.round_keys
    }

    /// XORs `value` into byte `byte` of round key `round` (used for V6's altered schedule).
    pub fn tamper(&mut self, round: usize, byte: usize, value: u8) {
        self.round_keys[round][byte] ^= value;
        self.prepare();
    }
}

fn xor(b: &mut aes::Block, k: &aes::Block) {
    for (x, y) in b.iter_mut().zip(k.iter()) {
        *x ^= y;
    }
}

/// The all-zero round key: a full round with it, then the inverse of its (Inv)MixColumns,
/// is the last round, which has no (Inv)MixColumns.
const ZERO: [u8; 16] = [0; 16];

impl Block128 for Rijndael {
    fn encrypt_block(&self, s: &mut [u8; 16]) {
        let nr = self.rounds();
        let mut b = aes::Block::from(*s);
        xor(&mut b, &self.enc[0]);
        for k in &self.enc[1..nr] {
            hazmat::cipher_round(&mut b, k);
        }
        hazmat::cipher_round(&mut b, &aes::Block::from(ZERO));
        hazmat::inv_mix_columns(&mut b);
        xor(&mut b, &self.enc[nr]);
        *s = b.into();
    }

    fn decrypt_block(&self, s: &mut [u8; 16]) {
        let nr = self.rounds();
        let mut b = aes::Block::from(*s);
        xor(&mut b, &self.dec[nr]);
        for k in self.dec[1..nr].iter().rev() {
            hazmat::equiv_inv_cipher_round(&mut b, k);
        }
        hazmat::equiv_inv_cipher_round(&mut b, &aes::Block::from(ZERO));
        hazmat::mix_columns(&mut b);
        xor(&mut b, &self.dec[0]);
        *s = b.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex16(s: &str) -> [u8; 16] {
        let v: Vec<u8> = (0..32)
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    }

    #[test]
    fn sbox_known_values() {
        assert_eq!(SBOX[0x00], 0x63);
        assert_eq!(SBOX[0x53], 0xed);
    }

    /// FIPS-197 Appendix C.1 (AES-128) and Appendix A.1 key expansion.
    #[test]
    fn fips197_aes128() {
        let key = hex16("000102030405060708090a0b0c0d0e0f");
        let c = Rijndael::new(&key).unwrap();
        let mut b = hex16("00112233445566778899aabbccddeeff");
        c.encrypt_block(&mut b);
        assert_eq!(b, hex16("69c4e0d86a7b0430d8cdb78070b4c55a"));
        c.decrypt_block(&mut b);
        assert_eq!(b, hex16("00112233445566778899aabbccddeeff"));

        let k2 = hex16("2b7e151628aed2a6abf7158809cf4f3c");
        let c2 = Rijndael::new(&k2).unwrap();
        assert_eq!(
            c2.round_keys()[10],
            hex16("d014f9a8c9ee2589e13f0cc8b6630ca6")
        );
        let mut b2 = hex16("3243f6a8885a308d313198a2e0370734");
        c2.encrypt_block(&mut b2);
        assert_eq!(b2, hex16("3925841d02dc09fbdc118597196a0b32"));
    }

    #[test]
    fn rejects_other_key_sizes() {
        assert!(Rijndael::new(&[0u8; 24]).is_none());
        assert!(Rijndael::new(&[0u8; 15]).is_none());
    }
}
