//! HTTP/2 abuse against the real binary (`portcullis run`), over TLS with ALPN h2 on real
//! sockets: rapid reset (CVE-2023-44487), a CONTINUATION flood (CVE-2024-27316 class),
//! SETTINGS and PING floods, an HPACK header bomb past `max_header_bytes`, a client that
//! keeps its flow-control window at zero, one that reads nothing, and streams past
//! `max_concurrent_streams`. Each attack ends with the offending connection closed (with
//! the GOAWAY code asserted), the gateway's RSS within a bound of what it was before,
//! `portcullis_h2_goaway_total{reason}` counted, and a fresh client served at once.
//!
//! The figures are printed as `h2-abuse: <attack> closed_in_ms=.. rss_before_kib=..
//! rss_peak_kib=.. rss_after_kib=.. goaway=..`; collect them with
//! `cargo test --test h2_abuse -- --nocapture`.

// Test set-up may panic: a failed step fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/ops.rs"]
mod ops;
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ops::Proc;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every attack must be over within this (the slowest, a stalled reader, takes
/// `send_timeout` of 1 s, up to half of it again, and a 1 s grace).
const CLOSE_BOUND: Duration = Duration::from_secs(5);
/// How much the gateway's RSS may grow over an attack (after it; the peak may be twice).
const RSS_BOUND_KIB: u64 = 32 * 1024;
/// 100 streams whose responses the client does not take hold up to ~400 KiB each (h2's
/// send buffer, the upstream connection's read buffer) until `send_timeout`.
const NO_READS_BOUND_KIB: u64 = 48 * 1024;
/// Its responses make progress (and so put the stall off) for as long as they keep
/// arriving from the upstream: seconds when the machine is busy.
const NO_READS_CLOSE_BOUND: Duration = Duration::from_secs(15);

const ENHANCE_YOUR_CALM: u32 = 0xb;
const REFUSED_STREAM: u32 = 0x7;

// === the gateway under attack ===

/// The real binary with `send_timeout = "1s"`: route `/` to an echo upstream, `/big` to a
/// 16 MiB download, `/held` to an upstream that answers only when its gate opens.
struct Target {
    pki: Pki,
    proc: Proc,
    addr: SocketAddr,
    admin: Admin,
    gate: Gate,
    _ups: Vec<Upstream>,
}

impl Target {
    async fn start() -> Target {
        let pki = Pki::generate();
        let echo = Upstream::echo("echo").await;
        let big = Upstream::download(7, 16 << 20).await;
        let (held, gate) = Upstream::gated().await;
        let toml = format!(
            "{}{}{}{}{}[admin]\nbind = \"127.0.0.1:0\"\n",
            server("watch_config = false\nsend_timeout = \"1s\""),
            listener("public", ""),
            route("big", "/big", &[&big.url()], ""),
            route("held", "/held", &[&held.url()], ""),
            route("all", "/", &[&echo.url()], ""),
        );
        let path = write_config(pki.dir(), &toml);
        let mut proc = Proc::spawn(&path, "json");
        let addr = proc.listener_addr("public").await;
        let admin = Admin::new(proc.admin_addr().await);
        let t = Target {
            pki,
            proc,
            addr,
            admin,
            gate,
            _ups: vec![echo, big, held],
        };
        // Warm: the first h2 connection's lazy parts are not an attack's growth.
        t.served_normally().await;
        t
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.proc.pid())
    }

    async fn goaways(&self, reason: &str) -> f64 {
        self.admin
            .metrics()
            .await
            .value("portcullis_h2_goaway_total", &[("reason", reason)])
            .unwrap_or(0.0)
    }

    /// Wait (at most 20 s) until the GOAWAY counter for `reason` passed `before`.
    async fn goaway_counted(&self, reason: &str, before: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.goaways(reason).await;
            if now > before {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "portcullis_h2_goaway_total{{reason={reason:?}}} stayed at {before}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fresh HTTP/2 client gets its echo (200); how long it took.
    async fn served_normally(&self) -> Duration {
        let start = Instant::now();
        let mut h2 = connect_h2(&self.pki, self.addr).await;
        // The name its TLS asked for, as a browser sends it.
        let authority = format!("localhost:{}", self.addr.port());
        let resp = h2
            .call(
                h2_request("GET", &authority, "/fresh")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("a fresh client was not served: {e}"));
        assert_eq!(resp.status, 200, "fresh client: {}", resp.text());
        start.elapsed()
    }

    /// One attack on a new raw HTTP/2 connection that h2 or the guard must end with GOAWAY
    /// ENHANCE_YOUR_CALM, then every check of [`Target::survived`] with the ordinary
    /// bounds. The ending, for the attack's own checks.
    async fn calmed(&self, attack_name: &str, bytes: Vec<u8>) -> Ending {
        let before = self.goaways("enhance_your_calm").await;
        let tls = raw_h2(self).await;
        let rss = Rss::watch(self);
        let ending = attack(tls, bytes).await;
        assert_goaway(attack_name, &ending, ENHANCE_YOUR_CALM);
        self.survived(
            attack_name,
            &ending,
            rss,
            before,
            (CLOSE_BOUND, RSS_BOUND_KIB),
        )
        .await;
        ending
    }

    /// The checks every attack ends with, and its line of figures; the peak RSS.
    async fn survived(
        &self,
        attack: &str,
        ending: &Ending,
        rss: Rss,
        goaway_before: f64,
        (close_bound, bound_kib): (Duration, u64),
    ) -> u64 {
        let closed_in = ending.closed_in;
        assert!(
            closed_in < close_bound,
            "{attack}: the connection was still open after {closed_in:?}"
        );
        let counted = self
            .goaway_counted("enhance_your_calm", goaway_before)
            .await;
        let fresh = self.served_normally().await;
        let after = self.rss_kib();
        let peak = rss.stop().max(after);
        eprintln!(
            "h2-abuse: {attack} closed_in_ms={} rss_before_kib={} rss_peak_kib={peak} rss_after_kib={after} goaway={} debug={:?} goaway_metric={counted} fresh_client_ms={}",
            closed_in.as_millis(),
            rss.before,
            ending.code_name(),
            ending.debug(),
            fresh.as_millis(),
        );
        assert!(
            after < rss.before + bound_kib && peak < rss.before + 2 * bound_kib,
            "{attack}: RSS {} KiB before, peak {peak} KiB, {after} KiB after",
            rss.before
        );
        peak
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The RSS before an attack, and its peak sampled every 10 ms while it runs.
struct Rss {
    before: u64,
    peak: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Rss {
    fn watch(t: &Target) -> Rss {
        let before = t.rss_kib();
        let peak = Arc::new(AtomicU64::new(before));
        let pid = t.proc.pid();
        let p = Arc::clone(&peak);
        let sampler = tokio::spawn(async move {
            loop {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Rss {
            before,
            peak,
            sampler,
        }
    }

    fn stop(&self) -> u64 {
        self.sampler.abort();
        self.peak.load(Ordering::Relaxed)
    }
}

// === HTTP/2 frames by hand ===

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A string literal, no Huffman.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s);
}

/// `GET https://localhost<path>` as an HPACK block: static-table pseudo-headers, the path
/// and authority as literals without indexing.
fn request_block(path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x87]; // :method GET, :scheme https
    b.push(0x04); // :path, literal without indexing (indexed name 4)
    hpack_str(&mut b, path.as_bytes());
    b.push(0x01); // :authority (indexed name 1)
    hpack_str(&mut b, b"localhost");
    b
}

/// A raw HTTP/2 client over TLS (ALPN h2): the preface and an empty SETTINGS are sent.
async fn raw_h2(t: &Target) -> Tls {
    let mut tls = TlsClient::new(&t.pki)
        .h2()
        .connect(t.addr, "localhost")
        .await
        .expect("TLS with ALPN h2");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&hello).await.unwrap();
    tls
}

/// How an attacked connection ended, as the client saw it.
#[derive(Debug, Default)]
struct Ending {
    /// The GOAWAY's error code and debug data.
    goaway: Option<(u32, Vec<u8>)>,
    /// RST_STREAM error codes received.
    resets: Vec<u32>,
    /// From the attack's start to the connection's end (EOF or reset).
    closed_in: Duration,
}

impl Ending {
    fn code(&self) -> Option<u32> {
        self.goaway.as_ref().map(|g| g.0)
    }

    fn code_name(&self) -> &'static str {
        match self.code() {
            Some(ENHANCE_YOUR_CALM) => "ENHANCE_YOUR_CALM",
            Some(0x0) => "NO_ERROR",
            Some(0x1) => "PROTOCOL_ERROR",
            Some(0x9) => "COMPRESSION_ERROR",
            Some(_) => "OTHER",
            None => "none",
        }
    }

    fn debug(&self) -> String {
        self.goaway
            .as_ref()
            .map(|g| String::from_utf8_lossy(&g.1).into_owned())
            .unwrap_or_default()
    }
}

/// Write `attack` while reading what comes back, until the server closes the connection
/// (at most 20 s); the write may fail once it has.
async fn attack(tls: Tls, attack: Vec<u8>) -> Ending {
    let start = Instant::now();
    let (mut rd, mut wr) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        for chunk in attack.chunks(16 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = wr.flush().await;
        // Keep the write half (and the socket) open until the reader is done.
        std::future::pending::<()>().await;
    });
    let ending = tokio::time::timeout(Duration::from_secs(20), read_frames(&mut rd, start))
        .await
        .expect("the gateway did not close the attacking connection within 20 s");
    writer.abort();
    ending
}

/// Read frames until EOF or a reset, noting GOAWAY and RST_STREAM.
async fn read_frames(rd: &mut (impl tokio::io::AsyncRead + Unpin), start: Instant) -> Ending {
    let mut ending = Ending::default();
    let mut head = [0u8; 9];
    loop {
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        match head[3] {
            GOAWAY if len >= 8 => {
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                ending.goaway = Some((code, payload[8..].to_vec()));
            }
            RST_STREAM if len == 4 => {
                ending
                    .resets
                    .push(u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            _ => {}
        }
    }
    ending.closed_in = start.elapsed();
    ending
}

fn assert_goaway(attack: &str, ending: &Ending, code: u32) {
    assert_eq!(
        ending.code(),
        Some(code),
        "{attack}: expected GOAWAY {code:#x}, the connection ended with {ending:?}"
    );
}

// === the attacks ===

/// CVE-2023-44487: open a stream and reset it at once, a thousand times. h2 counts the
/// streams reset before hyper accepted them (`max_pending_accept_reset_streams` = 50).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_is_ended_with_enhance_your_calm() {
    let t = Target::start().await;
    let block = request_block("/");
    let mut flood = Vec::new();
    for i in 0..1000u32 {
        let id = 2 * i + 1;
        flood.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
        flood.extend(frame(RST_STREAM, 0, id, &0x8u32.to_be_bytes())); // CANCEL
    }
    t.calmed("rapid_reset", flood).await;
}

/// CVE-2024-27316 class: a HEADERS frame without END_HEADERS, then CONTINUATION frames
/// that never end. h2 allows a few (enough for `max_header_list_size`), then goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_ended_with_enhance_your_calm() {
    let t = Target::start().await;
    let mut flood = frame(HEADERS, 0, 1, &request_block("/"));
    // Each CONTINUATION carries one small literal header, never END_HEADERS.
    let mut field = vec![0x00];
    hpack_str(&mut field, b"x-flood");
    hpack_str(&mut field, &[b'a'; 64]);
    for _ in 0..100_000 {
        flood.extend(frame(CONTINUATION, 0, 1, &field));
    }
    t.calmed("continuation_flood", flood).await;
}

/// SETTINGS frames, each of which the server must acknowledge, as fast as they can be
/// written: the gateway's guard allows a burst of 1000, then goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_flood_is_ended_with_enhance_your_calm() {
    let t = Target::start().await;
    // SETTINGS_ENABLE_PUSH = 0, again and again.
    let settings = frame(SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 0]);
    let ending = t.calmed("settings_flood", settings.repeat(100_000)).await;
    assert_eq!(ending.debug(), "control_frame_flood");
}

/// PING frames, each of which the server must answer, as fast as they can be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_flood_is_ended_with_enhance_your_calm() {
    let t = Target::start().await;
    let flood = frame(PING, 0, 0, b"floodpin").repeat(100_000);
    let ending = t.calmed("ping_flood", flood).await;
    assert_eq!(ending.debug(), "control_frame_flood");
}

/// An HPACK bomb: one 4000-byte header put in the dynamic table, then referenced 1000
/// times with one byte each: 5 KB on the wire decode to 4 MB, past `max_header_bytes`
/// (16 KiB) and past h2's abuse limit (4 times it), so h2 goes away instead of answering 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_header_bomb_is_ended_with_enhance_your_calm() {
    let t = Target::start().await;
    let mut block = request_block("/");
    block.push(0x40); // literal with incremental indexing, new name: dynamic index 62
    hpack_str(&mut block, b"x-bomb");
    hpack_str(&mut block, &[b'b'; 4000]);
    block.extend(std::iter::repeat_n(0x80 | 62, 1000));
    let bomb = frame(HEADERS, END_HEADERS | END_STREAM, 1, &block);
    t.calmed("hpack_bomb", bomb).await;
}

/// A header list past `max_header_bytes` but under h2's abuse limit is not an attack h2
/// ends the connection for: the stream gets 431 (and is refused), the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_list_past_max_header_bytes_gets_431_and_the_connection_serves_on() {
    let t = Target::start().await;
    let tls = TlsClient::new(&t.pki)
        .h2()
        .connect(t.addr, "localhost")
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let big = http::Request::get(format!("https://localhost:{}/", t.addr.port()))
        .header("x-big", "c".repeat(20 * 1024))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(big, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 431);
    let mut client = client.ready().await.unwrap();
    let small = http::Request::get(format!("https://localhost:{}/", t.addr.port()))
        .body(())
        .unwrap();
    let (resp, _) = client.send_request(small, true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
}

/// A client (the h2 crate) with an initial window of zero asks for 50 large responses and
/// never opens its window: the responses wait with no progress, and after `send_timeout`
/// the gateway goes away (debug data `send_timeout`) and closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_window_reader_is_ended_after_send_timeout() {
    let t = Target::start().await;
    let before = t.goaways("enhance_your_calm").await;
    let rss = Rss::watch(&t);
    let tls = TlsClient::new(&t.pki)
        .h2()
        .connect(t.addr, "localhost")
        .await
        .unwrap();
    let (client, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    let start = Instant::now();
    let conn = tokio::spawn(conn);
    let mut heads = Vec::new();
    let mut client = client;
    for _ in 0..50 {
        client = client.ready().await.unwrap();
        let req = http::Request::get(format!("https://localhost:{}/big", t.addr.port()))
            .body(())
            .unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        heads.push(resp);
    }
    // The heads come (HEADERS are not flow-controlled); the bodies cannot.
    let mut bodies = Vec::new();
    for h in heads {
        let resp = h.await.unwrap();
        assert_eq!(resp.status(), 200);
        bodies.push(resp.into_body());
    }
    let ended = tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the zero-window connection was never closed")
        .unwrap();
    let closed_in = start.elapsed();
    let e = ended.expect_err("the gateway ended the connection");
    assert!(
        e.is_go_away() && e.is_remote(),
        "expected the gateway's GOAWAY, got {e:?}"
    );
    assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e:?}");
    assert!(
        closed_in >= Duration::from_secs(1),
        "closed before send_timeout"
    );
    let ending = Ending {
        goaway: Some((ENHANCE_YOUR_CALM, b"send_timeout".to_vec())),
        resets: Vec::new(),
        closed_in,
    };
    drop(bodies);
    t.survived(
        "zero_window_reader",
        &ending,
        rss,
        before,
        (CLOSE_BOUND, RSS_BOUND_KIB),
    )
    .await;
}

/// A raw client opens the connection window, asks for 100 large responses (every stream
/// it may open), then reads nothing at all: the gateway's writes block, the responses wait,
/// and after `send_timeout` the connection is dropped (its GOAWAY cannot be written to a
/// socket nobody reads). Each held stream costs buffers (h2's, the upstream connection's),
/// so the peak is bounded per stream; the attack runs twice to show they are given back
/// (the second does not add to the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_dropped_after_send_timeout() {
    let t = Target::start().await;
    let mut peaks = Vec::new();
    for round in 0..2 {
        let before = t.goaways("enhance_your_calm").await;
        let mut tls = raw_h2(&t).await;
        let rss = Rss::watch(&t);
        let start = Instant::now();
        let block = request_block("/big");
        // Open the connection window wide, so only the socket holds the bytes back.
        let mut reqs = frame(WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes());
        for i in 0..100u32 {
            reqs.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
        }
        tls.write_all(&reqs).await.unwrap();
        // Read nothing until the gateway has given up (it counts its GOAWAY then).
        t.goaway_counted("enhance_your_calm", before).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1),
            "closed before send_timeout"
        );
        // Then drain: the gateway's side is closed, so the reads reach the end.
        let ending = tokio::time::timeout(Duration::from_secs(20), read_frames(&mut tls, start))
            .await
            .expect("the stalled connection was not closed");
        let ending = Ending {
            closed_in: waited,
            ..ending
        };
        let name = format!("no_reads_100_streams_round_{round}");
        let peak = t
            .survived(
                &name,
                &ending,
                rss,
                before,
                (NO_READS_CLOSE_BOUND, NO_READS_BOUND_KIB),
            )
            .await;
        peaks.push(peak);
    }
    assert!(
        peaks[1] < peaks[0] + 32 * 1024,
        "the second attack added to the first: peaks {peaks:?} KiB"
    );
}

/// 100 streams held open by an upstream that does not answer, then 1,250 more: each one
/// past `max_concurrent_streams` is refused (RST_STREAM REFUSED_STREAM), and past h2's
/// `max_local_error_reset_streams` (1024) the connection goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_are_refused_then_the_connection_is_ended() {
    let t = Target::start().await;
    let before = t.goaways("enhance_your_calm").await;
    let tls = raw_h2(&t).await;
    let rss = Rss::watch(&t);
    let block = request_block("/held");
    let mut streams = Vec::new();
    for i in 0..1350u32 {
        streams.extend(frame(HEADERS, END_HEADERS | END_STREAM, 2 * i + 1, &block));
    }
    let ending = attack(tls, streams).await;
    assert_goaway("streams past the limit", &ending, ENHANCE_YOUR_CALM);
    let refused = ending
        .resets
        .iter()
        .filter(|r| **r == REFUSED_STREAM)
        .count();
    assert!(refused >= 1000, "{refused} streams refused: {ending:?}");
    // Let whatever reached the upstream finish.
    t.gate.open();
    eprintln!("h2-abuse: stream_limit refused_streams={refused}");
    t.survived(
        "stream_limit",
        &ending,
        rss,
        before,
        (CLOSE_BOUND, RSS_BOUND_KIB),
    )
    .await;
}
