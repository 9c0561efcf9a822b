//! Writes the fuzz corpus seeds from the captured exchanges (`tests/fixtures/kms-vectors`):
//! `cargo run -p kms-tests --example fuzz_seeds -- fuzz/corpus` creates
//! `<dir>/rpc_pdu/*` (every captured PDU), `<dir>/host_session/*` (each capture's client
//! PDUs joined by 0xFF markers — see the target), `<dir>/kms_request/*` (the KMS messages
//! inside the requests) and `<dir>/grpc_commands/*` (a command batch as stored commands, which
//! is also the layout of a `ForwardRequest`, and as a log entry).

use kms_protocol::rpc::pdu::{Body, Pdu};
use kms_protocol::rpc::stub::{decode_request, Ndr};
use kms_tests::vectors::{load_all, Dir};
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut written = 0;
    let mut write = |target: &str, name: String, bytes: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed");
        written += 1;
    };
    for v in load_all() {
        let mut session = Vec::new();
        for (i, f) in v.frames.iter().enumerate() {
            write("rpc_pdu", format!("{}-{i}", v.name), &f.bytes);
            if f.dir != Dir::ToHost {
                continue;
            }
            session.extend_from_slice(&f.bytes);
            session.push(0xFF);
            if let Ok(Pdu {
                body: Body::Request(r),
                ..
            }) = Pdu::decode(&f.bytes, 65_535)
            {
                for ndr in [Ndr::Ndr32, Ndr::Ndr64] {
                    if let Ok(msg) = decode_request(ndr, &r.stub) {
                        write("kms_request", format!("{}-{i}-{ndr:?}", v.name), msg);
                    }
                }
            }
        }
        write("host_session", v.name.clone(), &session);
    }
    let batch = vec![kms_state::Command::SetEpid {
        count_group: "windows".into(),
        epid: "03612-00206-556-000000-03-1033-17763.0000-0012019".into(),
        time_ms: 1,
    }];
    // `StoredCommands` and `ForwardRequest` share their layout (schema version, commands).
    write(
        "grpc_commands",
        "set-epid".into(),
        &kms_cluster::pb::encode_commands(&batch),
    );
    let entry = kms_cluster::Entry {
        log_id: kms_cluster::LogId {
            index: 1,
            ..Default::default()
        },
        payload: kms_cluster::EntryPayload::Normal(kms_cluster::ClusterRequest::new(batch)),
    };
    write(
        "grpc_commands",
        "set-epid-entry".into(),
        &kms_cluster::pb::encode_entry(&entry),
    );
    println!("{written} seeds in {}", out.display());
}
