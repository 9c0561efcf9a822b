//! A standalone OTLP/gRPC trace sink for benchmarks: `cargo run --release -p kms-tests
//! --example otlp_sink -- 127.0.0.1:4317` receives spans (the collector stub of
//! `kms_tests::otlp`, on the given loopback port) and prints how many arrived every 5 s.

fn main() {
    let collector = kms_tests::otlp::Collector::start();
    println!("listening on {}", collector.endpoint());
    let mut last = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(5));
        let n = collector.spans().len();
        if n != last {
            println!("{n} spans received");
            last = n;
        }
    }
}
