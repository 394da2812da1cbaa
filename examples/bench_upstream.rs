//! The HTTPS upstream of the comparison bench (`benches/shared-bench.sh tls-upstream` and
//! `h2-upstream`): the same 98-byte reply as the shared bench's plain `bench-upstream`, over
//! TLS, serving HTTP/2 or HTTP/1.1 as the proxy picks in ALPN.
//!
//!   cargo run --release --example bench_upstream -- 127.0.0.1:18443 CHAIN.pem KEY.pem
//!
//! One worker thread, as the plain upstream runs.

// Bench set-up may panic: it is measurement code, never run on input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../benches/common/upstream.rs"]
mod upstream;

/// The shared bench upstream's reply (a stock lookup), byte for byte.
const BODY: &[u8] =
    br#"{"status":"ok","service":"inventory","items":[{"sku":"A-1001","qty":42},{"sku":"B-2002","qty":7}]}"#;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, chain, key] = args.as_slice() else {
        eprintln!("usage: bench_upstream ADDR CHAIN.pem KEY.pem");
        std::process::exit(2);
    };
    let tls = upstream::acceptor(chain.as_ref(), key.as_ref(), true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let l = tokio::net::TcpListener::bind(addr.as_str())
            .await
            .expect("bind");
        eprintln!("bench_upstream: https on {addr} (h2, http/1.1)");
        upstream::serve(l, Some(tls), BODY).await;
    });
}
