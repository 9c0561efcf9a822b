//! The RPC PDU decoder never panics, and what it accepts re-encodes to a PDU it accepts
//! again with the same content.
#![no_main]

use kms_protocol::rpc::pdu::Pdu;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = Pdu::decode(data, 65_535) {
        let again = Pdu::decode(&pdu.encode(), 65_535).expect("re-encoded PDU decodes");
        assert_eq!(again, pdu);
    }
});
