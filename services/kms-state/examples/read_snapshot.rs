//! Times reading one snapshot, to profile a restart without starting a node:
//!
//! ```text
//! cargo build --release -p kms-state --examples
//! target/release/examples/read_snapshot DATA_DIR/raft/snapshots/current.snap [ROUNDS]
//! ```
//!
//! Accepts a bare kms-state snapshot or a node's snapshot file (whose state starts at the
//! first `KMSSTATE` magic, after the node's own header and registry frame). Prints the wall and
//! CPU time of each read and the state's size.

use std::time::Instant;

use kms_state::{HostState, SNAPSHOT_MAGIC};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: read_snapshot FILE [ROUNDS]")?;
    let rounds: u32 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1);
    let bytes = std::fs::read(&path)?;
    let start = bytes
        .windows(SNAPSHOT_MAGIC.len())
        .position(|w| w == SNAPSHOT_MAGIC)
        .ok_or("no KMSSTATE magic in the file")?;
    for _ in 0..rounds {
        let t = Instant::now();
        let state = HostState::read_snapshot(&bytes[start..])?;
        println!(
            "read {} MiB in {} ms: {} clients, {} request ids",
            (bytes.len() - start) >> 20,
            t.elapsed().as_millis(),
            state.inventory_len(),
            state.request_count()
        );
    }
    Ok(())
}
