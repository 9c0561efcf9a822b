//! Times one full V6 exchange through the codec (client encode, host decode, host
//! encode, client verify), without I/O: `cargo run --release -p kms-protocol --example
//! codec_speed`.

use kms_protocol::kms::{self, BaseRequest, BaseResponse, ResponseRandom};
use std::time::Instant;
use uuid::Uuid;

fn main() {
    let mut base = BaseRequest {
        minor: 0,
        major: 6,
        is_client_vm: 0,
        license_status: 2,
        grace_time: 43200,
        application_id: Uuid::from_u128(1),
        sku_id: Uuid::from_u128(2),
        kms_counted_id: Uuid::from_u128(3),
        cmid: Uuid::from_u128(4),
        required_client_count: 25,
        request_time: 134_399_591_520_000_000,
        previous_cmid: Uuid::nil(),
        machine_name_raw: [0; 128],
    };
    base.set_machine_name("LAB-PC-001.campus.example");
    let n = 20_000;
    for major in [4u16, 5, 6] {
        base.major = major;
        let t = Instant::now();
        for i in 0..n {
            let (msg, creq) = kms::encode_request(&base, [i as u8; 16]).expect("encode");
            let req = kms::decode_request(&msg).expect("decode");
            let resp = BaseResponse {
                minor: 0,
                major,
                epid: "03612-00206-556-123456-03-1033-17763.0000-0452019".into(),
                cmid: base.cmid,
                response_time: base.request_time,
                current_count: 50,
                activation_interval: 120,
                renewal_interval: 10080,
            };
            let wire = kms::encode_response(
                &req,
                &resp,
                &ResponseRandom {
                    random: [1; 16],
                    ivs: [2; 16],
                },
                [3; 8],
            );
            kms::decode_response(&creq, &wire).expect("verify");
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("V{major}: {per:.1} µs per full exchange (client + host codec work)");
    }
}
