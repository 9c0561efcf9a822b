//! Loader for the captured exchanges in `tests/fixtures/kms-vectors/*.txt`.
//!
//! File format: `#` comments; frame lines `client->server LABEL: HEX` or
//! `server->client LABEL: HEX` in wire order; `key: value` lines describing each
//! exchange, where `request`/`response` values are JSON objects.

use std::path::{Path, PathBuf};

/// Direction of a captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Sent by the client.
    ToHost,
    /// Sent by the host.
    ToClient,
}

/// One captured PDU.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Who sent it.
    pub dir: Dir,
    /// The label (e.g. `bind (160 bytes)`, `request ctx=7`).
    pub label: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// One capture file.
#[derive(Debug, Clone)]
pub struct Vector {
    /// File stem.
    pub name: String,
    /// Frames in wire order.
    pub frames: Vec<Frame>,
    /// Decoded request JSON objects, one per exchange.
    pub requests: Vec<serde_json::Value>,
    /// Decoded response JSON objects, one per exchange.
    pub responses: Vec<serde_json::Value>,
}

/// The fixtures directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kms-vectors")
}

/// Parses one file's text.
pub fn parse(name: &str, text: &str) -> Vector {
    let mut v = Vector {
        name: name.to_string(),
        frames: Vec::new(),
        requests: Vec::new(),
        responses: Vec::new(),
    };
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let dir = if let Some(rest) = line.strip_prefix("client->server ") {
            Some((Dir::ToHost, rest))
        } else {
            line.strip_prefix("server->client ")
                .map(|rest| (Dir::ToClient, rest))
        };
        if let Some((dir, rest)) = dir {
            let (label, hexs) = rest.rsplit_once(": ").expect("frame line has ': '");
            v.frames.push(Frame {
                dir,
                label: label.to_string(),
                bytes: hex::decode(hexs.trim()).expect("valid hex"),
            });
            continue;
        }
        if let Some(j) = line.strip_prefix("request: ") {
            v.requests
                .push(serde_json::from_str(j).expect("request json"));
        } else if let Some(j) = line.strip_prefix("response: ") {
            v.responses
                .push(serde_json::from_str(j).expect("response json"));
        }
    }
    v
}

/// Loads every vector file, sorted by name.
pub fn load_all() -> Vec<Vector> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(dir())
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).expect("read vector");
        let name = p.file_stem().expect("stem").to_string_lossy().into_owned();
        out.push(parse(&name, &text));
    }
    out
}

/// A JSON number or `0x…` string as u64.
pub fn json_u64(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().expect("u64"),
        serde_json::Value::String(s) => {
            u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex number")
        }
        other => panic!("not a number: {other}"),
    }
}
