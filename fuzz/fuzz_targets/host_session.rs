//! A host connection fed arbitrary frames (the input split at 0xFF 0xFF markers, so one
//! input can be a bind followed by requests) never panics: every frame yields a step.
#![no_main]

use kms_protocol::host::{HostConnection, HostOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut host = HostConnection::new(HostOptions::default(), 0x1000);
    for frame in data.split(|b| *b == 0xFF).filter(|f| !f.is_empty()) {
        let _ = host.handle(frame);
    }
});
