//! Presentation-syntax identifiers: the KMS interface and the transfer syntaxes a
//! client may offer (NDR32, NDR64, bind-time feature negotiation).

/// A syntax identifier: UUID bytes as on the wire (mixed-endian) plus version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyntaxId {
    /// UUID in wire layout.
    pub uuid: [u8; 16],
    /// Version (u32; for interfaces major in the low 16 bits, minor in the high).
    pub version: u32,
}

/// The KMS interface `51c82175-844e-4750-b0d8-ec255555bc06` v1.0.
pub const KMS_INTERFACE: SyntaxId = SyntaxId {
    uuid: [
        0x75, 0x21, 0xc8, 0x51, 0x4e, 0x84, 0x50, 0x47, 0xb0, 0xd8, 0xec, 0x25, 0x55, 0x55, 0xbc,
        0x06,
    ],
    version: 1,
};

/// NDR32 `8a885d04-1ceb-11c9-9fe8-08002b104860` v2.
pub const NDR32: SyntaxId = SyntaxId {
    uuid: [
        0x04, 0x5d, 0x88, 0x8a, 0xeb, 0x1c, 0xc9, 0x11, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48,
        0x60,
    ],
    version: 2,
};

/// NDR64 `71710533-beba-4937-8319-b5dbef9ccc36` v1.
pub const NDR64: SyntaxId = SyntaxId {
    uuid: [
        0x33, 0x05, 0x71, 0x71, 0xba, 0xbe, 0x37, 0x49, 0x83, 0x19, 0xb5, 0xdb, 0xef, 0x9c, 0xcc,
        0x36,
    ],
    version: 1,
};

/// Prefix of the bind-time feature negotiation pseudo syntax `6cb71c2c-9812-4540-…`.
pub const BTFN_PREFIX: [u8; 8] = [0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45];

/// Builds the BTFN syntax offering `features` (clients send 3).
pub fn btfn(features: u16) -> SyntaxId {
    let mut uuid = [0u8; 16];
    uuid[..8].copy_from_slice(&BTFN_PREFIX);
    uuid[8..10].copy_from_slice(&features.to_le_bytes());
    SyntaxId { uuid, version: 1 }
}

/// What a transfer syntax is, for negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// NDR 2.0, 32-bit.
    Ndr32,
    /// NDR64.
    Ndr64,
    /// Bind-time feature negotiation with the offered feature bits.
    Btfn(u16),
    /// Anything else.
    Unknown,
}

impl Syntax {
    /// Classifies a transfer syntax (BTFN by its 8-byte prefix only, as hosts do).
    pub fn classify(id: &SyntaxId) -> Syntax {
        if id.uuid == NDR32.uuid {
            Syntax::Ndr32
        } else if id.uuid == NDR64.uuid {
            Syntax::Ndr64
        } else if id.uuid[..8] == BTFN_PREFIX {
            Syntax::Btfn(u16::from_le_bytes([id.uuid[8], id.uuid[9]]))
        } else {
            Syntax::Unknown
        }
    }
}
