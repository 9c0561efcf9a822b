//! KMS request/response bodies and their per-version protection, for both sides.
//!
//! Host side: [`decode_request`] authenticates/decrypts a request, [`encode_response`]
//! builds the protected answer. Client side: [`encode_request`] protects a request and
//! remembers what the answer must match, [`decode_response`] runs every check a client
//! runs (versions, CMID and time echo, ePID shape, MAC / hash / HMAC, IV rules).
//!
//! - V4: no encryption, CBC-MAC under the 160-bit Rijndael.
//! - V5: AES-128-CBC, response carries `R ^ D(IV)` and `SHA-256(R)`.
//! - V6: AES-128 with altered round keys, plus host HwId and a time-keyed HMAC.

pub mod base;

pub use base::{BaseRequest, BaseResponse, BASE_REQUEST_LEN};

use crate::crypto::cbc::{cbc_decrypt, cbc_encrypt, pkcs7_pad, pkcs7_unpadded_len};
use crate::crypto::keys::{v4_cipher, v5_cipher, v6_cipher};
use crate::crypto::mac::{sha256, v4_mac, v6_hmac, v6_hmac_key};
use crate::crypto::Block128;
use crate::KmsError;

/// V4 request length (base + MAC).
pub const V4_REQUEST_LEN: usize = BASE_REQUEST_LEN + 16;
/// V5/V6 request length (version + IV + 240 bytes ciphertext).
pub const V56_REQUEST_LEN: usize = 4 + 16 + 240;

/// KMS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// Vista/7/Server 2008 (R2)/Office 2010.
    V4,
    /// Windows 8/Server 2012/Office 2013.
    V5,
    /// Windows 8.1 and later, Office 2016 and later.
    V6,
}

impl Protocol {
    /// From the major version number.
    pub fn from_major(major: u16) -> Option<Self> {
        match major {
            4 => Some(Self::V4),
            5 => Some(Self::V5),
            6 => Some(Self::V6),
            _ => None,
        }
    }

    /// The major version number.
    pub fn major(self) -> u16 {
        match self {
            Self::V4 => 4,
            Self::V5 => 5,
            Self::V6 => 6,
        }
    }

    fn cipher(self) -> &'static dyn Block128 {
        match self {
            Self::V4 => v4_cipher(),
            Self::V5 => v5_cipher(),
            Self::V6 => v6_cipher(),
        }
    }
}

/// A request the host decoded and authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRequest {
    /// Protocol version it arrived in.
    pub protocol: Protocol,
    /// The request body.
    pub base: BaseRequest,
    /// V5/V6: the client's IV (zero for V4).
    pub iv: [u8; 16],
    /// V5/V6: the raw block decryption of the IV, `D(IV)` (zero for V4).
    pub dc: [u8; 16],
}

/// Reads the (minor, major) version at the start of a KMS message.
pub fn peek_version(msg: &[u8]) -> Result<(u16, u16), KmsError> {
    if msg.len() < 4 {
        return Err(KmsError::TooShort {
            major: 0,
            need: 4,
            have: msg.len(),
        });
    }
    Ok((
        u16::from_le_bytes([msg[0], msg[1]]),
        u16::from_le_bytes([msg[2], msg[3]]),
    ))
}

/// Host side: decodes and authenticates a request. Trailing bytes are tolerated.
pub fn decode_request(msg: &[u8]) -> Result<DecodedRequest, KmsError> {
    let (minor, major) = peek_version(msg)?;
    let protocol = match Protocol::from_major(major) {
        Some(p) if minor == 0 => p,
        _ => return Err(KmsError::Version { major, minor }),
    };
    match protocol {
        Protocol::V4 => {
            if msg.len() < V4_REQUEST_LEN {
                return Err(KmsError::TooShort {
                    major,
                    need: V4_REQUEST_LEN,
                    have: msg.len(),
                });
            }
            let body = &msg[..BASE_REQUEST_LEN];
            if v4_mac(body) != msg[BASE_REQUEST_LEN..V4_REQUEST_LEN] {
                return Err(KmsError::Mac);
            }
            Ok(DecodedRequest {
                protocol,
                base: BaseRequest::decode(body)?,
                iv: [0; 16],
                dc: [0; 16],
            })
        }
        Protocol::V5 | Protocol::V6 => {
            if msg.len() < V56_REQUEST_LEN {
                return Err(KmsError::TooShort {
                    major,
                    need: V56_REQUEST_LEN,
                    have: msg.len(),
                });
            }
            let cipher = protocol.cipher();
            let iv: [u8; 16] = msg[4..20].try_into().expect("16 bytes");
            let mut data = msg[20..V56_REQUEST_LEN].to_vec();
            cbc_decrypt(cipher, &iv, &mut data)?;
            if pkcs7_unpadded_len(&data)? != BASE_REQUEST_LEN {
                return Err(KmsError::Padding);
            }
            let base = BaseRequest::decode(&data)?;
            if base.major != major || base.minor != minor {
                return Err(KmsError::Version {
                    major: base.major,
                    minor: base.minor,
                });
            }
            let mut dc = iv;
            cipher.decrypt_block(&mut dc);
            Ok(DecodedRequest {
                protocol,
                base,
                iv,
                dc,
            })
        }
    }
}

/// Random values the host chooses for one response (the crate draws none itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseRandom {
    /// V5/V6: the secret `R` whose hash the response carries.
    pub random: [u8; 16],
    /// V6: the plaintext first block `IVs` (must differ from `D(IV)`).
    pub ivs: [u8; 16],
}

fn xor16(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    let mut o = [0u8; 16];
    for i in 0..16 {
        o[i] = a[i] ^ b[i];
    }
    o
}

/// Host side: builds the protected response to `req`.
pub fn encode_response(
    req: &DecodedRequest,
    resp: &BaseResponse,
    rnd: &ResponseRandom,
    hwid: [u8; 8],
) -> Vec<u8> {
    let body = resp.encode();
    match req.protocol {
        Protocol::V4 => {
            let mac = v4_mac(&body);
            let mut out = body;
            out.extend_from_slice(&mac);
            out
        }
        Protocol::V5 => {
            let mut p = body;
            p.extend_from_slice(&xor16(&rnd.random, &req.dc));
            p.extend_from_slice(&sha256(&rnd.random));
            pkcs7_pad(&mut p);
            cbc_encrypt(v5_cipher(), &req.iv, &mut p).expect("padded");
            let mut out = Vec::with_capacity(20 + p.len());
            out.extend_from_slice(&req.base.minor.to_le_bytes());
            out.extend_from_slice(&req.base.major.to_le_bytes());
            out.extend_from_slice(&req.iv);
            out.extend_from_slice(&p);
            out
        }
        Protocol::V6 => {
            let mut ivs = rnd.ivs;
            if ivs == req.dc {
                ivs[0] ^= 1;
            }
            let mut p = Vec::with_capacity(16 + body.len() + 88 + 16);
            p.extend_from_slice(&ivs);
            p.extend_from_slice(&body);
            p.extend_from_slice(&xor16(&rnd.random, &req.dc));
            p.extend_from_slice(&sha256(&rnd.random));
            p.extend_from_slice(&hwid);
            p.extend_from_slice(&req.dc);
            let tag = v6_hmac(&v6_hmac_key(resp.response_time), &p);
            p.extend_from_slice(&tag);
            pkcs7_pad(&mut p);
            cbc_encrypt(v6_cipher(), &[0; 16], &mut p).expect("padded");
            let mut out = Vec::with_capacity(4 + p.len());
            out.extend_from_slice(&req.base.minor.to_le_bytes());
            out.extend_from_slice(&req.base.major.to_le_bytes());
            out.extend_from_slice(&p);
            out
        }
    }
}

/// Client side: what a response must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    /// Protocol version.
    pub protocol: Protocol,
    /// The request body sent.
    pub base: BaseRequest,
    /// V5/V6 IV sent.
    pub iv: [u8; 16],
    /// `D(IV)`.
    pub dc: [u8; 16],
}

/// Client side: protects `base` in the version its `major` names, with IV `iv` (V5/V6).
pub fn encode_request(
    base: &BaseRequest,
    iv: [u8; 16],
) -> Result<(Vec<u8>, ClientRequest), KmsError> {
    let protocol = Protocol::from_major(base.major).ok_or(KmsError::Version {
        major: base.major,
        minor: base.minor,
    })?;
    let body = base.encode();
    let (msg, iv, dc) = match protocol {
        Protocol::V4 => {
            let mut out = body.clone();
            out.extend_from_slice(&v4_mac(&body));
            (out, [0; 16], [0; 16])
        }
        Protocol::V5 | Protocol::V6 => {
            let cipher = protocol.cipher();
            let mut p = body;
            pkcs7_pad(&mut p);
            cbc_encrypt(cipher, &iv, &mut p)?;
            let mut out = Vec::with_capacity(V56_REQUEST_LEN);
            out.extend_from_slice(&base.minor.to_le_bytes());
            out.extend_from_slice(&base.major.to_le_bytes());
            out.extend_from_slice(&iv);
            out.extend_from_slice(&p);
            let mut dc = iv;
            cipher.decrypt_block(&mut dc);
            (out, iv, dc)
        }
    };
    Ok((
        msg,
        ClientRequest {
            protocol,
            base: base.clone(),
            iv,
            dc,
        },
    ))
}

/// A response that passed every client check, with the host's random values recovered
/// (so tests can re-encode it byte for byte).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResponse {
    /// The response body.
    pub base: BaseResponse,
    /// V5/V6: the host's `R` (zero for V4).
    pub random: [u8; 16],
    /// V6: the plaintext IV block.
    pub ivs: Option<[u8; 16]>,
    /// V6: the host's hardware id.
    pub hwid: Option<[u8; 8]>,
}

fn check_echo(req: &ClientRequest, resp: &BaseResponse) -> Result<(), KmsError> {
    if resp.major != req.base.major || resp.minor != req.base.minor {
        return Err(KmsError::Mismatch { field: "version" });
    }
    if resp.cmid != req.base.cmid {
        return Err(KmsError::Mismatch {
            field: "client machine id",
        });
    }
    if resp.response_time != req.base.request_time {
        return Err(KmsError::Mismatch { field: "time" });
    }
    Ok(())
}

fn split16(b: &[u8], o: usize) -> [u8; 16] {
    b[o..o + 16].try_into().expect("16 bytes")
}

/// Client side: decrypts and verifies a response to `req`.
pub fn decode_response(req: &ClientRequest, msg: &[u8]) -> Result<VerifiedResponse, KmsError> {
    let (minor, major) = peek_version(msg)?;
    if major != req.base.major || minor != req.base.minor {
        return Err(KmsError::Mismatch { field: "version" });
    }
    let out = match req.protocol {
        Protocol::V4 => {
            let (base, n) = BaseResponse::decode(msg)?;
            let mac = msg.get(n..n + 16).ok_or(KmsError::TooShort {
                major,
                need: n + 16,
                have: msg.len(),
            })?;
            if v4_mac(&msg[..n]) != mac {
                return Err(KmsError::Mac);
            }
            VerifiedResponse {
                base,
                random: [0; 16],
                ivs: None,
                hwid: None,
            }
        }
        Protocol::V5 => {
            if msg.len() < 20 + 16 {
                return Err(KmsError::TooShort {
                    major,
                    need: 36,
                    have: msg.len(),
                });
            }
            if msg[4..20] != req.iv {
                return Err(KmsError::Mismatch { field: "iv" });
            }
            let mut p = msg[20..].to_vec();
            cbc_decrypt(v5_cipher(), &req.iv, &mut p)?;
            let len = pkcs7_unpadded_len(&p)?;
            let (base, n) = BaseResponse::decode(&p[..len])?;
            if len != n + 48 {
                return Err(KmsError::TooShort {
                    major,
                    need: n + 48,
                    have: len,
                });
            }
            let random = xor16(&split16(&p, n), &req.dc);
            if sha256(&random)[..] != p[n + 16..n + 48] {
                return Err(KmsError::Hash);
            }
            VerifiedResponse {
                base,
                random,
                ivs: None,
                hwid: None,
            }
        }
        Protocol::V6 => {
            let mut p = msg[4..].to_vec();
            cbc_decrypt(v6_cipher(), &[0; 16], &mut p)?;
            let len = pkcs7_unpadded_len(&p)?;
            if len < 16 {
                return Err(KmsError::TooShort {
                    major,
                    need: 16,
                    have: len,
                });
            }
            let ivs = split16(&p, 0);
            let (base, n) = BaseResponse::decode(&p[16..len])?;
            let o = 16 + n;
            if len != o + 88 {
                return Err(KmsError::TooShort {
                    major,
                    need: o + 88,
                    have: len,
                });
            }
            let random = xor16(&split16(&p, o), &req.dc);
            if sha256(&random)[..] != p[o + 16..o + 48] {
                return Err(KmsError::Hash);
            }
            let hwid: [u8; 8] = p[o + 48..o + 56].try_into().expect("8 bytes");
            if p[o + 56..o + 72] != req.dc {
                return Err(KmsError::Mismatch { field: "xored IVs" });
            }
            if ivs == req.dc {
                return Err(KmsError::Mismatch {
                    field: "response IV (equals request IV)",
                });
            }
            let tag = v6_hmac(&v6_hmac_key(base.response_time), &p[..o + 72]);
            if tag[..] != p[o + 72..o + 88] {
                return Err(KmsError::Hmac);
            }
            VerifiedResponse {
                base,
                random,
                ivs: Some(ivs),
                hwid: Some(hwid),
            }
        }
    };
    check_echo(req, &out.base)?;
    Ok(out)
}
