//! Hostile and broken clients against a real `kmsd`: each gets a fault, a refusal or a
//! closed connection within the configured timeouts, the server keeps serving others,
//! and the statistics count only real requests.

use kms_protocol::client::{
    bind_pdu, choose_context, read_response, request_pdu, BindOffer, HostReply,
};
use kms_protocol::kms::{self, BaseRequest};
use kms_protocol::rpc::pdu::{Body, Pdu};
use kms_protocol::rpc::stub::Ndr;
use kms_protocol::rpc::{NCA_PROTO_ERROR, NCA_UNK_IF};
use kms_tests::harness::Kmsd;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use uuid::Uuid;

const READ_TIMEOUT_MS: u64 = 800;
const IDLE_TIMEOUT_MS: u64 = 800;

fn start(dir: &tempfile::TempDir) -> Kmsd {
    Kmsd::start(
        &dir.path().join("d"),
        &[
            "--read-timeout-ms",
            &READ_TIMEOUT_MS.to_string(),
            "--idle-timeout-ms",
            &IDLE_TIMEOUT_MS.to_string(),
        ],
    )
}

fn connect(k: &Kmsd) -> TcpStream {
    let s = TcpStream::connect(k.kms).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one PDU, or None when the server closed the connection.
fn read_pdu(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = [0u8; 16];
    if s.read_exact(&mut head).is_err() {
        return None;
    }
    let len = u16::from_le_bytes([head[8], head[9]]) as usize;
    let mut frame = head.to_vec();
    frame.resize(len, 0);
    s.read_exact(&mut frame[16..]).ok()?;
    Some(frame)
}

/// Waits until the server closes the connection; returns how long that took.
fn wait_closed(s: &mut TcpStream) -> Duration {
    let t = Instant::now();
    let mut b = [0u8; 64];
    loop {
        match s.read(&mut b) {
            Ok(0) | Err(_) => return t.elapsed(),
            Ok(_) => continue,
        }
    }
}

fn windows_request(major: u16) -> BaseRequest {
    let mut b = BaseRequest {
        minor: 0,
        major,
        is_client_vm: 0,
        license_status: 1,
        grace_time: 43200,
        application_id: "55c92734-d682-4d71-983e-d6ec3f16059f".parse().unwrap(),
        sku_id: "73111121-5638-40f6-bc11-f1d7b0d64300".parse().unwrap(),
        kms_counted_id: "58e2134f-8e11-4d17-9cb2-91069c151148".parse().unwrap(),
        cmid: Uuid::new_v4(),
        required_client_count: 25,
        request_time: kms_protocol::time::filetime_from_unix_ms(1_795_485_552_000),
        previous_cmid: Uuid::nil(),
        machine_name_raw: [0; 128],
    };
    b.set_machine_name("raw-client");
    b
}

fn bound(k: &Kmsd) -> (TcpStream, u16, Ndr) {
    let mut s = connect(k);
    s.write_all(&bind_pdu(2, BindOffer::default())).unwrap();
    let ack = read_pdu(&mut s).expect("bind_ack");
    let (ctx, ndr) = choose_context(&ack, BindOffer::default()).unwrap();
    (s, ctx, ndr)
}

#[test]
fn broken_pdus_get_faults_refusals_or_closed_connections() {
    let dir = tempfile::tempdir().unwrap();
    let k = start(&dir);

    // Garbage: closed.
    let mut s = connect(&k);
    s.write_all(&[0x41; 100]).unwrap();
    assert!(wait_closed(&mut s) < Duration::from_secs(2));

    // A frame length above the limit (65535 > 4096): closed before anything is read.
    let mut s = connect(&k);
    let mut big = bind_pdu(2, BindOffer::default());
    big[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
    s.write_all(&big[..16]).unwrap();
    assert!(wait_closed(&mut s) < Duration::from_secs(2));

    // A frame length below the header size: closed.
    let mut s = connect(&k);
    let mut tiny = bind_pdu(2, BindOffer::default());
    tiny[8..10].copy_from_slice(&4u16.to_le_bytes());
    s.write_all(&tiny).unwrap();
    assert!(wait_closed(&mut s) < Duration::from_secs(2));

    // Wrong RPC version: a protocol-error fault, then closed.
    let mut s = connect(&k);
    let mut v4 = bind_pdu(9, BindOffer::default());
    v4[0] = 4;
    s.write_all(&v4).unwrap();
    let f = read_pdu(&mut s).expect("fault");
    let Body::Fault(fault) = Pdu::decode(&f, 65535).unwrap().body else {
        panic!("not a fault")
    };
    assert_eq!(fault.status, NCA_PROTO_ERROR);
    wait_closed(&mut s);

    // Truncated PDU (header promises more than arrives): closed after the read timeout.
    let mut s = connect(&k);
    let bind = bind_pdu(2, BindOffer::default());
    s.write_all(&bind[..40]).unwrap();
    let took = wait_closed(&mut s);
    assert!(
        took >= Duration::from_millis(READ_TIMEOUT_MS - 100),
        "{took:?}"
    );
    assert!(
        took < Duration::from_millis(READ_TIMEOUT_MS + 3000),
        "{took:?}"
    );

    // Bind for an unknown interface: every context rejected (abstract syntax not
    // supported), and a request afterwards gets the unknown-interface fault.
    let mut s = connect(&k);
    let mut foreign = bind_pdu(
        3,
        BindOffer {
            ndr64: false,
            btfn: false,
        },
    );
    foreign[32] ^= 0xff; // first byte of the abstract syntax UUID
    s.write_all(&foreign).unwrap();
    let ack = read_pdu(&mut s).expect("bind_ack");
    let Body::BindAck(a) = Pdu::decode(&ack, 65535).unwrap().body else {
        panic!("not an ack")
    };
    assert_eq!((a.results[0].result, a.results[0].reason), (2, 1));
    let (msg, _) = kms::encode_request(&windows_request(6), [5; 16]).unwrap();
    s.write_all(&request_pdu(4, 0, Ndr::Ndr32, &msg)).unwrap();
    let f = read_pdu(&mut s).expect("fault");
    let p = Pdu::decode(&f, 65535).unwrap();
    assert_eq!(p.call_id, 4);
    let Body::Fault(fault) = p.body else {
        panic!("not a fault")
    };
    assert_eq!(fault.status, NCA_UNK_IF);

    // A 4 GiB request size in the NDR stub: refused with invalid data, connection kept,
    // and a well-formed request on the same connection is then answered.
    let (mut s, ctx, ndr) = bound(&k);
    let mut huge = request_pdu(5, ctx, ndr, &msg);
    huge[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    s.write_all(&huge).unwrap();
    let r = read_pdu(&mut s).expect("response");
    assert_eq!(
        read_response(&r, 5, ndr).unwrap(),
        HostReply::Refused(0x8007_000D)
    );
    // KMS version 7.0: invalid data too.
    let mut v7 = msg.clone();
    v7[2] = 7;
    s.write_all(&request_pdu(6, ctx, ndr, &v7)).unwrap();
    let r = read_pdu(&mut s).expect("response");
    assert_eq!(
        read_response(&r, 6, ndr).unwrap(),
        HostReply::Refused(0x8007_000D)
    );
    // Tampered ciphertext (bad padding after decryption): invalid data.
    let mut bad = msg.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    s.write_all(&request_pdu(7, ctx, ndr, &bad)).unwrap();
    let r = read_pdu(&mut s).expect("response");
    assert_eq!(
        read_response(&r, 7, ndr).unwrap(),
        HostReply::Refused(0x8007_000D)
    );
    // Now a good one on the same connection.
    let base = windows_request(6);
    let (good, creq) = kms::encode_request(&base, [9; 16]).unwrap();
    s.write_all(&request_pdu(8, ctx, ndr, &good)).unwrap();
    let r = read_pdu(&mut s).expect("response");
    let HostReply::Message(m) = read_response(&r, 8, ndr).unwrap() else {
        panic!("refused")
    };
    let v = kms::decode_response(&creq, &m).unwrap();
    assert_eq!(v.base.current_count, 1);

    // Opnum other than 0: fault.
    s.write_all(&{
        let mut p = request_pdu(9, ctx, ndr, &good);
        p[22] = 3;
        p
    })
    .unwrap();
    let f = read_pdu(&mut s).expect("fault");
    let Body::Fault(fault) = Pdu::decode(&f, 65535).unwrap().body else {
        panic!("not a fault")
    };
    assert_eq!(fault.status, kms_protocol::rpc::NCA_OP_RNG_ERROR);

    // Statistics count only the one real request; decode errors were noticed.
    let st = k.status();
    assert_eq!(st["total_requests"], 1);
    assert_eq!(st["failed_requests"], 0);
    assert!(
        st["connections"]["decode_errors"].as_u64().unwrap() >= 7,
        "{st}"
    );
}

#[test]
fn silent_and_slow_clients_time_out_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let k = start(&dir);

    // Several silent clients and one that sends a byte per 300 ms.
    let mut silent: Vec<TcpStream> = (0..20).map(|_| connect(&k)).collect();
    let slow_bind = bind_pdu(2, BindOffer::default());
    let kms = k.kms;
    let slow = std::thread::spawn(move || {
        let mut s = TcpStream::connect(kms).unwrap();
        let t = Instant::now();
        for b in slow_bind {
            if s.write_all(&[b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
            if t.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        // The server must have given up on this client: no bind_ack ever arrives.
        let got = s.read(&mut buf).unwrap_or(0);
        (got, t.elapsed())
    });

    // Meanwhile a legitimate client activates.
    let (v, code) = k.activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(code, 3, "{v}");
    assert_eq!(v["current_count"], 1);

    for s in &mut silent {
        let took = wait_closed(s);
        assert!(
            took < Duration::from_millis(IDLE_TIMEOUT_MS + 3000),
            "{took:?}"
        );
    }
    let (got, took) = slow.join().unwrap();
    assert_eq!(got, 0, "slow writer must not get an answer");
    assert!(took < Duration::from_secs(12));

    // Still serving, statistics intact.
    let (v, _) = k.activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(v["current_count"], 2);
    let st = k.status();
    assert_eq!(st["total_requests"], 2);
    assert!(st["connections"]["idle_timeouts"].as_u64().unwrap() >= 20);
    assert!(st["connections"]["read_timeouts"].as_u64().unwrap() >= 1);
}
