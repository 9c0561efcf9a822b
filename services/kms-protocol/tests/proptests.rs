//! Property tests: encode→decode round trips for every PDU and for v4/v5/v6 bodies on
//! both sides, and decoders that never panic on arbitrary bytes.

use kms_protocol::host::{Answer, HostConnection, HostOptions, Step};
use kms_protocol::kms::{self, BaseRequest, BaseResponse, ResponseRandom};
use kms_protocol::rpc::pdu::Body;
use kms_protocol::rpc::stub::{self, Ndr};
use kms_protocol::rpc::{
    Bind, BindAck, ContextElement, ContextResult, Fault, Pdu, Request, Response, SyntaxId,
};
use proptest::prelude::*;
use uuid::Uuid;

fn syntax() -> impl Strategy<Value = SyntaxId> {
    (any::<[u8; 16]>(), any::<u32>()).prop_map(|(uuid, version)| SyntaxId { uuid, version })
}

fn bind() -> impl Strategy<Value = Bind> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(
            (
                any::<u16>(),
                syntax(),
                prop::collection::vec(syntax(), 0..3),
            )
                .prop_map(|(context_id, abstract_syntax, transfer_syntaxes)| {
                    ContextElement {
                        context_id,
                        abstract_syntax,
                        transfer_syntaxes,
                    }
                }),
            0..4,
        ),
    )
        .prop_map(
            |(max_xmit_frag, max_recv_frag, assoc_group, contexts)| Bind {
                max_xmit_frag,
                max_recv_frag,
                assoc_group,
                contexts,
            },
        )
}

fn bind_ack() -> impl Strategy<Value = BindAck> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(
            (any::<u16>(), any::<u16>(), syntax()).prop_map(|(result, reason, syntax)| {
                ContextResult {
                    result,
                    reason,
                    syntax,
                }
            }),
            0..4,
        ),
    )
        .prop_map(|(a, b, g, secondary_address, results)| BindAck {
            max_xmit_frag: a,
            max_recv_frag: b,
            assoc_group: g,
            secondary_address,
            results,
        })
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        bind().prop_map(Body::Bind),
        bind().prop_map(Body::AlterContext),
        bind_ack().prop_map(Body::BindAck),
        bind_ack().prop_map(Body::AlterContextResp),
        any::<u16>().prop_map(Body::BindNak),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(
                |(alloc_hint, context_id, opnum, stub)| Body::Request(Request {
                    alloc_hint,
                    context_id,
                    opnum,
                    object: None,
                    stub
                })
            ),
        (
            any::<u32>(),
            any::<u16>(),
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(
                |(alloc_hint, context_id, cancel_count, stub)| Body::Response(Response {
                    alloc_hint,
                    context_id,
                    cancel_count,
                    stub
                })
            ),
        (any::<u32>(), any::<u16>(), any::<u8>(), any::<u32>()).prop_map(
            |(alloc_hint, context_id, cancel_count, status)| Body::Fault(Fault {
                alloc_hint,
                context_id,
                cancel_count,
                status
            })
        ),
    ]
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn base_request(major: u16) -> impl Strategy<Value = BaseRequest> {
    (
        (any::<u32>(), any::<u32>(), any::<u32>()),
        (uuid(), uuid(), uuid(), uuid(), uuid()),
        (any::<u32>(), any::<u64>()),
        any::<[u8; 32]>(),
    )
        .prop_map(
            move |((vm, ls, gt), (app, sku, kid, cmid, prev), (req, time), name)| {
                let mut raw = [0u8; 128];
                raw[..32].copy_from_slice(&name);
                BaseRequest {
                    minor: 0,
                    major,
                    is_client_vm: vm,
                    license_status: ls,
                    grace_time: gt,
                    application_id: app,
                    sku_id: sku,
                    kms_counted_id: kid,
                    cmid,
                    required_client_count: req,
                    request_time: time,
                    previous_cmid: prev,
                    machine_name_raw: raw,
                }
            },
        )
}

proptest! {
    #[test]
    fn pdu_round_trip(flags in any::<u8>(), call_id in any::<u32>(), body in body()) {
        // Requests/responses must be single-fragment; keep the flags valid for them.
        let flags = match body {
            Body::Request(_) | Body::Response(_) => (flags | 0x03) & !0x80,
            _ => flags,
        };
        let pdu = Pdu { flags, call_id, body };
        let bytes = pdu.encode();
        let back = Pdu::decode(&bytes, 65535).unwrap();
        prop_assert_eq!(back, pdu);
    }

    #[test]
    fn pdu_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = Pdu::decode(&bytes, 4096);
    }

    #[test]
    fn pdu_decoder_never_panics_on_valid_header(mut bytes in prop::collection::vec(any::<u8>(), 16..400), ptype in 0u8..20) {
        bytes[0] = 5; bytes[1] = 0; bytes[2] = ptype; bytes[4] = 0x10; bytes[5] = 0;
        let len = bytes.len() as u16;
        bytes[8..10].copy_from_slice(&len.to_le_bytes());
        bytes[10] = 0; bytes[11] = 0;
        let _ = Pdu::decode(&bytes, 4096);
        // The host state machine must not panic either.
        let mut host = HostConnection::new(HostOptions::default(), 7);
        let _ = host.handle(&bytes);
    }

    #[test]
    fn kms_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400), major in 3u16..8) {
        let mut b = bytes.clone();
        if b.len() >= 4 { b[0] = 0; b[1] = 0; b[2..4].copy_from_slice(&major.to_le_bytes()); }
        let _ = kms::decode_request(&b);
        let _ = BaseResponse::decode(&b);
        for ndr in [Ndr::Ndr32, Ndr::Ndr64] {
            let _ = stub::decode_request(ndr, &bytes);
            let _ = stub::decode_response(ndr, &bytes);
        }
    }

    #[test]
    fn kms_round_trip_all_versions(
        major in 4u16..=6,
        seed in any::<u64>(),
        iv in any::<[u8; 16]>(),
        random in any::<[u8; 16]>(),
        ivs in any::<[u8; 16]>(),
        hwid in any::<[u8; 8]>(),
        count in any::<u32>(),
        epid_len in 1usize..63,
        b in base_request(4),
    ) {
        let mut base = b;
        base.major = major;
        // Client encodes, host decodes to the same body.
        let (msg, creq) = kms::encode_request(&base, iv).unwrap();
        let decoded = kms::decode_request(&msg).unwrap();
        prop_assert_eq!(&decoded.base, &base);
        prop_assert_eq!(decoded.base.encode(), base.encode());
        // Host answers, client verifies and recovers the same body.
        let resp = BaseResponse {
            minor: 0,
            major,
            epid: "5".repeat(epid_len),
            cmid: base.cmid,
            response_time: base.request_time,
            current_count: count,
            activation_interval: 120,
            renewal_interval: 10080,
        };
        let rnd = ResponseRandom { random, ivs };
        let wire = kms::encode_response(&decoded, &resp, &rnd, hwid);
        let verified = kms::decode_response(&creq, &wire).unwrap();
        prop_assert_eq!(&verified.base, &resp);
        if major >= 5 { prop_assert_eq!(verified.random, random); }
        if major == 6 { prop_assert_eq!(verified.hwid, Some(hwid)); }
        // V4 (MAC) and V6 (HMAC) detect any flipped byte; V5 has no MAC over the body.
        if major == 5 { return Ok(()); }
        let mut bad = wire.clone();
        let pos = (seed as usize) % bad.len();
        bad[pos] ^= 0x01;
        prop_assert!(kms::decode_response(&creq, &bad).is_err());
    }

    #[test]
    fn host_full_exchange_round_trip(major in 4u16..=6, ndr64 in any::<bool>(), offer64 in any::<bool>(), btfn in any::<bool>(), b in base_request(4)) {
        let mut base = b;
        base.major = major;
        let offer = kms_protocol::client::BindOffer { ndr64: offer64, btfn };
        let mut host = HostConnection::new(HostOptions { ndr64, ..HostOptions::default() }, 9);
        let Step::Send(ack) = host.handle(&kms_protocol::client::bind_pdu(2, offer)) else { panic!("bind") };
        let (ctx, ndr) = kms_protocol::client::choose_context(&ack, offer).unwrap();
        prop_assert_eq!(ndr == Ndr::Ndr64, ndr64 && offer64);
        let (msg, creq) = kms::encode_request(&base, [7; 16]).unwrap();
        let Step::Activate(p) = host.handle(&kms_protocol::client::request_pdu(3, ctx, ndr, &msg)) else { panic!("request") };
        let resp = BaseResponse { minor: 0, major, epid: "03612-00206-556-123456-03-1033-17763.0000-0452019".into(), cmid: base.cmid, response_time: base.request_time, current_count: 7, activation_interval: 120, renewal_interval: 10080 };
        let reply = p.reply(&Answer::Activated { response: resp.clone(), random: ResponseRandom { random: [1; 16], ivs: [2; 16] }, hwid: [3; 8] });
        let kms_protocol::client::HostReply::Message(m) = kms_protocol::client::read_response(&reply, 3, ndr).unwrap() else { panic!("refused") };
        prop_assert_eq!(kms::decode_response(&creq, &m).unwrap().base, resp);
        let refusal = p.reply(&Answer::Refused(0xC004F042));
        prop_assert_eq!(kms_protocol::client::read_response(&refusal, 3, ndr).unwrap(), kms_protocol::client::HostReply::Refused(0xC004F042));
    }
}
