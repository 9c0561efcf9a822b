//! Every captured exchange in `tests/fixtures/kms-vectors` is decoded, authenticated and
//! replayed through our host: requests re-encode to the captured bytes, responses verify
//! on our client, and our host's answers (given the captured random values) are the
//! captured bytes.

use kms_protocol::client::{read_response, HostReply};
use kms_protocol::host::{Answer, HostConnection, HostOptions, Step};
use kms_protocol::kms::{self, ResponseRandom};
use kms_protocol::rpc::pdu::Body;
use kms_protocol::rpc::syntax::{Syntax, NDR64};
use kms_protocol::rpc::Pdu;
use kms_tests::vectors::{json_u64, load_all, Dir, Vector};
use uuid::Uuid;

/// The host options the capturing host evidently used, read from its first bind_ack.
fn host_options(v: &Vector) -> HostOptions {
    let ack = v
        .frames
        .iter()
        .find(|f| f.dir == Dir::ToClient && f.label.starts_with("bind_ack"))
        .expect("a bind_ack");
    let Body::BindAck(a) = Pdu::decode(&ack.bytes, 65535).unwrap().body else {
        panic!("not a bind_ack");
    };
    let port = std::str::from_utf8(&a.secondary_address[..a.secondary_address.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    HostOptions {
        ndr64: a
            .results
            .iter()
            .any(|r| r.result == 0 && r.syntax.uuid == NDR64.uuid),
        btfn: a.results.iter().any(|r| r.result == 3),
        port,
        max_pdu: 4096,
    }
}

fn request_message(frame: &[u8], ndr: kms_protocol::rpc::stub::Ndr) -> Vec<u8> {
    let Body::Request(r) = Pdu::decode(frame, 65535).unwrap().body else {
        panic!("not a request");
    };
    kms_protocol::rpc::stub::decode_request(ndr, &r.stub)
        .unwrap()
        .to_vec()
}

fn check_request_fields(j: &serde_json::Value, base: &kms::BaseRequest) {
    assert_eq!(
        base.cmid,
        j["clientMachineId"]
            .as_str()
            .unwrap()
            .parse::<Uuid>()
            .unwrap()
    );
    assert_eq!(
        base.kms_counted_id,
        j["kmsCountedId"].as_str().unwrap().parse::<Uuid>().unwrap()
    );
    assert_eq!(
        base.application_id,
        j["applicationId"]
            .as_str()
            .unwrap()
            .parse::<Uuid>()
            .unwrap()
    );
    assert_eq!(
        base.license_status as u64,
        j["licenseStatus"].as_u64().unwrap()
    );
    assert_eq!(
        base.required_client_count as u64,
        j["requiredClientCount"].as_u64().unwrap()
    );
    assert_eq!(base.request_time, json_u64(&j["requestTimeRaw"]));
    assert_eq!(base.machine_name(), j["machineName"].as_str().unwrap());
}

#[test]
fn every_vector_replays_byte_exact() {
    let vectors = load_all();
    assert!(
        vectors.len() >= 12,
        "expected the 12 captures, got {}",
        vectors.len()
    );
    let mut activations = 0;
    let mut refusals = 0;
    for v in &vectors {
        // Every frame decodes; every client frame re-encodes to its exact bytes.
        for f in &v.frames {
            let pdu = Pdu::decode(&f.bytes, 65535)
                .unwrap_or_else(|e| panic!("{}: {} does not decode: {e}", v.name, f.label));
            if f.dir == Dir::ToHost {
                assert_eq!(pdu.encode(), f.bytes, "{}: {} re-encode", v.name, f.label);
            }
        }

        let mut host = HostConnection::new(host_options(v), 1);
        let mut exchange = 0;
        let mut i = 0;
        while i < v.frames.len() {
            let f = &v.frames[i];
            assert_eq!(
                f.dir,
                Dir::ToHost,
                "{}: frame {i} should be the client's",
                v.name
            );
            let expected = &v.frames[i + 1];
            assert_eq!(expected.dir, Dir::ToClient);
            let step = host.handle(&f.bytes);
            match step {
                Step::Send(ours) => {
                    let mut a = Pdu::decode(&ours, 65535).unwrap();
                    let b = Pdu::decode(&expected.bytes, 65535).unwrap();
                    // The association group is host-chosen; everything else must match.
                    match (&mut a.body, &b.body) {
                        (Body::BindAck(x), Body::BindAck(y))
                        | (Body::AlterContextResp(x), Body::AlterContextResp(y)) => {
                            x.assoc_group = y.assoc_group;
                        }
                        _ => panic!("{}: unexpected reply kind", v.name),
                    }
                    assert_eq!(a, b, "{}: {}", v.name, expected.label);
                    assert_eq!(ours.len(), expected.bytes.len());
                }
                Step::Activate(p) => {
                    let msg = request_message(&f.bytes, p.ndr());
                    // Re-encoding the decoded request gives the captured bytes.
                    let (again, creq) = kms::encode_request(&p.request.base, p.request.iv).unwrap();
                    assert_eq!(again, msg[..again.len()], "{}: request re-encode", v.name);
                    if let Some(j) = v.requests.get(exchange) {
                        check_request_fields(j, &p.request.base);
                    }
                    let call_id = u32::from_le_bytes(f.bytes[12..16].try_into().unwrap());
                    match read_response(&expected.bytes, call_id, p.ndr()).unwrap() {
                        HostReply::Message(m) => {
                            let verified = kms::decode_response(&creq, &m)
                                .unwrap_or_else(|e| panic!("{}: response: {e}", v.name));
                            let j = &v.responses[exchange];
                            let epid = j["ePID"].as_str().unwrap().trim_end_matches('\0');
                            assert_eq!(verified.base.epid, epid);
                            assert_eq!(
                                verified.base.current_count as u64,
                                j["currentClientCount"].as_u64().unwrap()
                            );
                            let ours = p.reply(&Answer::Activated {
                                response: verified.base.clone(),
                                random: ResponseRandom {
                                    random: verified.random,
                                    ivs: verified.ivs.unwrap_or_default(),
                                },
                                hwid: verified.hwid.unwrap_or_default(),
                            });
                            assert_eq!(ours, expected.bytes, "{}: host response bytes", v.name);
                            activations += 1;
                        }
                        HostReply::Refused(hr) => {
                            assert_eq!(p.reply(&Answer::Refused(hr)), expected.bytes);
                            assert_eq!(hr, kms_protocol::host::HRESULT_UNSUPPORTED_PRODUCT);
                            refusals += 1;
                        }
                    }
                    exchange += 1;
                }
                Step::Fault(ours, _) => {
                    // vlmcsd sends its own call id 2 and stale bytes; we echo and zero.
                    let a = Pdu::decode(&ours, 65535).unwrap();
                    let b = Pdu::decode(&expected.bytes, 65535).unwrap();
                    let (Body::Fault(fa), Body::Fault(fb)) = (&a.body, &b.body) else {
                        panic!("{}: expected faults", v.name);
                    };
                    assert_eq!(fa.status, fb.status);
                    assert_eq!(a.flags, b.flags);
                    assert_eq!(ours.len(), expected.bytes.len());
                    assert_eq!(
                        a.call_id,
                        u32::from_le_bytes(f.bytes[12..16].try_into().unwrap())
                    );
                    assert_eq!(fa.cancel_count, 0);
                }
                Step::Invalid(ours, _) => {
                    assert_eq!(ours, expected.bytes, "{}: invalid-data reply", v.name);
                }
                Step::Close(issue) => panic!("{}: host closed: {issue}", v.name),
            }
            i += 2;
        }
    }
    assert!(activations >= 10, "activations replayed: {activations}");
    assert!(refusals >= 1);
}

#[test]
fn classify_syntaxes_in_binds() {
    // The default vlmcs bind offers NDR32, NDR64 and BTFN (features 3).
    let v = load_all()
        .into_iter()
        .find(|v| v.name == "v6-win10ent-ndr64-btfn")
        .unwrap();
    let Body::Bind(b) = Pdu::decode(&v.frames[0].bytes, 65535).unwrap().body else {
        panic!()
    };
    let kinds: Vec<_> = b
        .contexts
        .iter()
        .map(|c| Syntax::classify(&c.transfer_syntaxes[0]))
        .collect();
    assert_eq!(kinds, vec![Syntax::Ndr32, Syntax::Ndr64, Syntax::Btfn(3)]);
}
