//! The KMS v4/v5/v6 request decoder (version header, AES-CBC/V6 decryption, MAC/hash
//! checks, base request fields) never panics on any message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = kms_protocol::kms::decode_request(data);
});
