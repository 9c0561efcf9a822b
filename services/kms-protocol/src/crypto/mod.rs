//! Cryptography of the KMS protocol.
//!
//! - [`rijndael`]: an explicit Rijndael key schedule driving the `aes` crate's single-round
//!   functions, for the two ciphers `aes::Aes128` cannot express: V4's 160-bit-key Rijndael
//!   and V6's AES-128 with three altered round-key bytes.
//! - [`cbc`]: CBC mode and PKCS#7 over any [`Block128`] cipher.
//! - [`keys`]: the fixed protocol keys and the ready-made ciphers per version (V5 uses the
//!   RustCrypto `aes` crate).
//! - [`mac`]: V4's CBC-MAC, V6's time-derived HMAC key and truncated HMAC-SHA256.

pub mod cbc;
pub mod keys;
pub mod mac;
pub mod rijndael;

/// A 128-bit block cipher, the only shape the KMS protocol uses.
pub trait Block128 {
    /// Encrypts one block in place.
    fn encrypt_block(&self, block: &mut [u8; 16]);
    /// Decrypts one block in place.
    fn decrypt_block(&self, block: &mut [u8; 16]);
}
