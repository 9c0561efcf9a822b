//! Baseline for `kmsctl bench`: the cost of the TCP pattern alone on this machine.
//!
//! A trivial server answers each 160-byte "bind" with 108 bytes and each 292-byte
//! "request" with 300 bytes (the sizes of a V6 exchange), with no protocol work and no
//! state; a client opens one connection per exchange at the given concurrency, exactly as
//! `kmsctl bench` does. Server and client run on separate single-thread runtimes, like
//! kmsd and kmsctl. What this reaches is the ceiling for any KMS host on this machine; the
//! p50 of one exchange (connect to close) at concurrency 1 is the floor of `kmsctl bench -c 1`,
//! and the server thread's context switches per exchange the floor of any single-threaded
//! server's (its waits for the connection and for the request after the bind).
//!
//! `cargo run --release -p kmsctl --example tcp_baseline -- 20000 64`

use kmsctl::bench::context_switches;
use std::path::Path;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("addr");
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The thread's own status file, read by the client side before and after the run.
        let _ = tid_tx.send(
            std::fs::read_link("/proc/thread-self")
                .ok()
                .map(|p| Path::new("/proc").join(p).join("status")),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        rt.block_on(async move {
            let l = TcpListener::from_std(std_listener).expect("listener");
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let mut buf = [0u8; 512];
                    for (inp, out) in [(160usize, 108usize), (292, 300)] {
                        if s.read_exact(&mut buf[..inp]).await.is_err() {
                            return;
                        }
                        if s.write_all(&buf[..out]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let server_status = tid_rx.recv().ok().flatten();
    let switches = || server_status.as_deref().and_then(context_switches);
    let switches_before = switches();
    let started = Instant::now();
    let took = std::rc::Rc::new(std::cell::RefCell::new(Vec::with_capacity(count)));
    let took_all = took.clone();
    rt.block_on(async move {
        let next = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async move {
                let mut tasks = Vec::new();
                for _ in 0..concurrency {
                    let next = next.clone();
                    let took = took.clone();
                    tasks.push(tokio::task::spawn_local(async move {
                        let mut buf = [0u8; 512];
                        loop {
                            let i = next.get();
                            if i >= count {
                                break;
                            }
                            next.set(i + 1);
                            let t0 = Instant::now();
                            let mut s = TcpStream::connect(addr).await.expect("connect");
                            let _ = s.set_nodelay(true);
                            for (out, inp) in [(160usize, 108usize), (292, 300)] {
                                s.write_all(&buf[..out]).await.expect("write");
                                s.read_exact(&mut buf[..inp]).await.expect("read");
                            }
                            drop(s);
                            took.borrow_mut().push(t0.elapsed().as_micros() as u64);
                        }
                    }));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
            .await;
    });
    let secs = started.elapsed().as_secs_f64();
    let mut took = took_all.take();
    took.sort_unstable();
    let p50 = kmsctl::bench::percentile(&took, 50.0);
    let server_switches = match (switches_before, switches()) {
        (Some(a), Some(b)) => format!(
            "; server thread {:.2} context switches per exchange",
            b.saturating_sub(a) as f64 / count.max(1) as f64
        ),
        _ => String::new(),
    };
    println!(
        "tcp baseline: {count} exchanges at concurrency {concurrency} in {secs:.3} s = {:.0} exchanges/s; p50 {p50:.3} ms{server_switches}",
        count as f64 / secs
    );
}
