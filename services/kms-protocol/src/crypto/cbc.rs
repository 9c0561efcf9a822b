//! CBC mode and PKCS#7 padding over a [`Block128`] cipher.

use super::Block128;
use crate::KmsError;

/// Appends PKCS#7 padding (always 1..=16 bytes).
pub fn pkcs7_pad(data: &mut Vec<u8>) {
    let n = 16 - data.len() % 16;
    data.extend(std::iter::repeat_n(n as u8, n));
}

/// Checks and strips PKCS#7 padding, returning the unpadded length.
pub fn pkcs7_unpadded_len(data: &[u8]) -> Result<usize, KmsError> {
    let n = *data.last().ok_or(KmsError::Padding)? as usize;
    if n == 0 || n > 16 || n > data.len() {
        return Err(KmsError::Padding);
    }
    if data[data.len() - n..].iter().any(|&b| b as usize != n) {
        return Err(KmsError::Padding);
    }
    Ok(data.len() - n)
}

/// CBC-encrypts `data` (a multiple of 16 bytes) in place.
pub fn cbc_encrypt<C: Block128 + ?Sized>(
    cipher: &C,
    iv: &[u8; 16],
    data: &mut [u8],
) -> Result<(), KmsError> {
    if !data.len().is_multiple_of(16) {
        return Err(KmsError::BlockLength(data.len()));
    }
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(16) {
        let mut block = [0u8; 16];
        for i in 0..16 {
            block[i] = chunk[i] ^ prev[i];
        }
        cipher.encrypt_block(&mut block);
        chunk.copy_from_slice(&block);
        prev = block;
    }
    Ok(())
}

/// CBC-decrypts `data` (a multiple of 16 bytes) in place.
pub fn cbc_decrypt<C: Block128 + ?Sized>(
    cipher: &C,
    iv: &[u8; 16],
    data: &mut [u8],
) -> Result<(), KmsError> {
    if !data.len().is_multiple_of(16) {
        return Err(KmsError::BlockLength(data.len()));
    }
    let mut prev = *iv;
    for chunk in data.chunks_exact_mut(16) {
        let mut block = [0u8; 16];
        block.copy_from_slice(chunk);
        let ct = block;
        cipher.decrypt_block(&mut block);
        for i in 0..16 {
            chunk[i] = block[i] ^ prev[i];
        }
        prev = ct;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_rules() {
        let mut v = vec![1u8; 16];
        pkcs7_pad(&mut v);
        assert_eq!(v.len(), 32);
        assert_eq!(pkcs7_unpadded_len(&v), Ok(16));
        let mut w = vec![1u8; 236];
        pkcs7_pad(&mut w);
        assert_eq!(&w[236..], &[4, 4, 4, 4]);
        assert_eq!(pkcs7_unpadded_len(&[1, 2, 3, 0]), Err(KmsError::Padding));
        assert_eq!(pkcs7_unpadded_len(&[1, 2, 3, 2]), Err(KmsError::Padding));
        assert_eq!(pkcs7_unpadded_len(&[]), Err(KmsError::Padding));
        assert_eq!(pkcs7_unpadded_len(&[17; 16]), Err(KmsError::Padding));
    }
}
