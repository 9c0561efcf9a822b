//! The version-independent request (236 bytes) and response (44 + ePID bytes) bodies.

use crate::KmsError;
use uuid::Uuid;

/// Length of the base request.
pub const BASE_REQUEST_LEN: usize = 236;
/// Longest ePID in bytes including its UTF-16 NUL.
pub const MAX_EPID_BYTES: usize = 128;

/// A client's activation request as it is inside every protocol version.
///
/// The machine name is kept as the raw 128 bytes so re-encoding is byte-exact even
/// when a client leaves garbage after the terminating NUL (vlmcs does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseRequest {
    /// Minor version (0).
    pub minor: u16,
    /// Major version (4, 5, 6).
    pub major: u16,
    /// 0 physical, 1 virtual machine.
    pub is_client_vm: u32,
    /// License state (see [`crate::LicenseState`]).
    pub license_status: u32,
    /// Minutes remaining in the current license state.
    pub grace_time: u32,
    /// Application ID.
    pub application_id: Uuid,
    /// SKU (activation) ID.
    pub sku_id: Uuid,
    /// KMS counted ID: selects the product group and count pool.
    pub kms_counted_id: Uuid,
    /// Client machine ID.
    pub cmid: Uuid,
    /// Minimum count the client needs.
    pub required_client_count: u32,
    /// Client's time (FILETIME); the host echoes it.
    pub request_time: u64,
    /// Previous CMID (zero unless it changed).
    pub previous_cmid: Uuid,
    /// Raw machine-name field: 64 UTF-16LE code units.
    pub machine_name_raw: [u8; 128],
}

fn get_u16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn get_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn get_u64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn get_guid(b: &[u8], o: usize) -> Uuid {
    Uuid::from_bytes_le(b[o..o + 16].try_into().expect("16 bytes"))
}

impl BaseRequest {
    /// Decodes the first 236 bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<Self, KmsError> {
        if b.len() < BASE_REQUEST_LEN {
            return Err(KmsError::TooShort {
                major: if b.len() >= 4 { get_u16(b, 2) } else { 0 },
                need: BASE_REQUEST_LEN,
                have: b.len(),
            });
        }
        let mut machine_name_raw = [0u8; 128];
        machine_name_raw.copy_from_slice(&b[108..236]);
        Ok(Self {
            minor: get_u16(b, 0),
            major: get_u16(b, 2),
            is_client_vm: get_u32(b, 4),
            license_status: get_u32(b, 8),
            grace_time: get_u32(b, 12),
            application_id: get_guid(b, 16),
            sku_id: get_guid(b, 32),
            kms_counted_id: get_guid(b, 48),
            cmid: get_guid(b, 64),
            required_client_count: get_u32(b, 80),
            request_time: get_u64(b, 84),
            previous_cmid: get_guid(b, 92),
            machine_name_raw,
        })
    }

    /// Encodes the 236 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(BASE_REQUEST_LEN + 20);
        o.extend_from_slice(&self.minor.to_le_bytes());
        o.extend_from_slice(&self.major.to_le_bytes());
        o.extend_from_slice(&self.is_client_vm.to_le_bytes());
        o.extend_from_slice(&self.license_status.to_le_bytes());
        o.extend_from_slice(&self.grace_time.to_le_bytes());
        o.extend_from_slice(&self.application_id.to_bytes_le());
        o.extend_from_slice(&self.sku_id.to_bytes_le());
        o.extend_from_slice(&self.kms_counted_id.to_bytes_le());
        o.extend_from_slice(&self.cmid.to_bytes_le());
        o.extend_from_slice(&self.required_client_count.to_le_bytes());
        o.extend_from_slice(&self.request_time.to_le_bytes());
        o.extend_from_slice(&self.previous_cmid.to_bytes_le());
        o.extend_from_slice(&self.machine_name_raw);
        o
    }

    /// The machine name up to the first NUL (lossy for invalid UTF-16).
    pub fn machine_name(&self) -> String {
        let units: Vec<u16> = self
            .machine_name_raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        String::from_utf16_lossy(&units)
    }

    /// Sets the machine name (truncated to 63 UTF-16 units, rest zero).
    pub fn set_machine_name(&mut self, name: &str) {
        self.machine_name_raw = [0; 128];
        for (i, u) in name.encode_utf16().take(63).enumerate() {
            self.machine_name_raw[2 * i..2 * i + 2].copy_from_slice(&u.to_le_bytes());
        }
    }
}

/// The host's answer as it is inside every protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseResponse {
    /// Minor version (echo).
    pub minor: u16,
    /// Major version (echo).
    pub major: u16,
    /// Host ePID (without the NUL).
    pub epid: String,
    /// Client machine ID (echo).
    pub cmid: Uuid,
    /// Request time (echo).
    pub response_time: u64,
    /// Current client count.
    pub current_count: u32,
    /// Activation retry interval in minutes.
    pub activation_interval: u32,
    /// Renewal interval in minutes.
    pub renewal_interval: u32,
}

impl BaseResponse {
    /// Encodes the body (ePID as UTF-16LE with NUL, ePIDSize including it).
    pub fn encode(&self) -> Vec<u8> {
        let units: Vec<u16> = self.epid.encode_utf16().chain(std::iter::once(0)).collect();
        let size = (units.len() * 2) as u32;
        let mut o = Vec::with_capacity(44 + units.len() * 2 + 100);
        o.extend_from_slice(&self.minor.to_le_bytes());
        o.extend_from_slice(&self.major.to_le_bytes());
        o.extend_from_slice(&size.to_le_bytes());
        for u in units {
            o.extend_from_slice(&u.to_le_bytes());
        }
        o.extend_from_slice(&self.cmid.to_bytes_le());
        o.extend_from_slice(&self.response_time.to_le_bytes());
        o.extend_from_slice(&self.current_count.to_le_bytes());
        o.extend_from_slice(&self.activation_interval.to_le_bytes());
        o.extend_from_slice(&self.renewal_interval.to_le_bytes());
        o
    }

    /// Decodes a body from the start of `b`; returns it and the bytes consumed. Applies
    /// the client's ePID checks (size ≤ 128, even, NUL-terminated, no inner NUL).
    pub fn decode(b: &[u8]) -> Result<(Self, usize), KmsError> {
        if b.len() < 8 {
            return Err(KmsError::TooShort {
                major: 0,
                need: 8,
                have: b.len(),
            });
        }
        let size = get_u32(b, 4) as usize;
        if !(2..=MAX_EPID_BYTES).contains(&size) || !size.is_multiple_of(2) {
            return Err(KmsError::Epid("ePIDSize out of range"));
        }
        let need = 8 + size + 36;
        if b.len() < need {
            return Err(KmsError::TooShort {
                major: get_u16(b, 2),
                need,
                have: b.len(),
            });
        }
        let units: Vec<u16> = b[8..8 + size]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let (last, body) = units.split_last().expect("size >= 2");
        if *last != 0 {
            return Err(KmsError::Epid("not NUL-terminated"));
        }
        if body.contains(&0) {
            return Err(KmsError::Epid("embedded NUL"));
        }
        let o = 8 + size;
        Ok((
            Self {
                minor: get_u16(b, 0),
                major: get_u16(b, 2),
                epid: String::from_utf16_lossy(body),
                cmid: get_guid(b, o),
                response_time: get_u64(b, o + 16),
                current_count: get_u32(b, o + 24),
                activation_interval: get_u32(b, o + 28),
                renewal_interval: get_u32(b, o + 32),
            },
            need,
        ))
    }
}
