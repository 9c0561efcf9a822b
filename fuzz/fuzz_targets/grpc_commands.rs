//! The cluster's gRPC forward decoder: protobuf `ForwardRequest`, then the JSON batch of
//! state commands inside it, never panics; decoded commands apply to a fresh state without
//! panicking either.
#![no_main]

use kms_cluster::pb::ForwardRequest;
use kms_state::{Command, HostState};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let json = match ForwardRequest::decode(data) {
        Ok(req) => req.commands_json,
        Err(_) => data.to_vec(),
    };
    if let Ok(cmds) = serde_json::from_slice::<Vec<Command>>(&json) {
        let mut state = HostState::default();
        for cmd in cmds {
            let _ = state.apply(&cmd);
        }
    }
});
