//! The cluster's wire decoders: the same bytes as a protobuf `ForwardRequest` (the forwarded
//! batch), as a stored log entry (`pb::decode_entry`) and as stored commands
//! (`pb::decode_commands`) never panic; decoded commands apply to a fresh state without
//! panicking either.
#![no_main]

use kms_cluster::pb::{self, ForwardRequest};
use kms_cluster::EntryPayload;
use kms_state::{Command, HostState};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn apply(cmds: &[Command]) {
    let mut state = HostState::default();
    for cmd in cmds {
        let _ = state.apply(cmd);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(Ok(cmds)) = ForwardRequest::decode(data).map(pb::forward_commands) {
        apply(&cmds);
    }
    if let Ok(entry) = pb::decode_entry(data) {
        if let EntryPayload::Normal(request) = entry.payload {
            apply(&request.commands);
        }
    }
    if let Ok(cmds) = pb::decode_commands(data) {
        apply(&cmds);
    }
});
